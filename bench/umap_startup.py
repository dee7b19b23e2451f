"""Where Fig. 1's UMAP time goes on a fresh machine: numba's JIT compilation or the fits themselves.

    python bench/umap_startup.py                 # the demo's shapes, numba's cache in a fresh temporary folder
    python bench/umap_startup.py --points 100,2500,5000 --dim 64 --fits 2
    python bench/umap_startup.py --together 2   # also: 2 processes at once on an empty cache, with and without a lock

Each measurement runs in a fresh Python process (nothing compiled yet in memory): the time of `import umap`, then the
panels of Fig. 1 fitted once (the first fits pay every compilation), then the same panels again in the same process
(compiled: the fits alone). The whole sequence runs twice with the same NUMBA_CACHE_DIR, so the second round shows
what numba's on-disk cache saves a second process (umap-learn caches few of its own functions; pynndescent caches
most of its). The sequence runs once with a plain `import umap` and once through `revssl.analysis.import_umap`, which
switches the on-disk cache on for every umap-learn function. Sizes are the `demo` preset's panels: 5 sample-level images x 20 views, 5 of 10 classes and all of 5
superclasses of 5,000 evaluation images, 64 features of the last layer; two epochs (the first and last analysed).
Prints one markdown table. With `--together N`, a second table: N such processes (through `import_umap`) started at
the same moment on one empty cache, first each on its own, then taking turns under one lock as `revssl.analysis.
umap_rows` does (`UMAP_LOCK`): the wall time until the last one ends and the CPU time of all of them.
"""
import argparse, json, os, resource, subprocess, sys, tempfile, time

CHILD = r"""
import json, sys, time
import numpy as np
import contextlib
points, dim, fits, via_revssl, lock = json.loads(sys.argv[1])
if via_revssl:
    from revssl.analysis import import_umap     # torch and revssl imported outside the timer
if lock:
    from revssl.files import file_lock
held = file_lock(lock) if lock else contextlib.nullcontext()
held.__enter__()                                # until the process ends: the import and every fit, as umap_rows
t0 = time.perf_counter()
if via_revssl: umap = import_umap()             # umap-learn's numba functions cached on disk
else: import umap
t_import = time.perf_counter() - t0
rng = np.random.default_rng(0)
data = [rng.normal(size=(n, dim)).astype(np.float32) + np.repeat(rng.normal(size=(5, dim)) * 3, -(-n // 5), 0)[:n]
        for n in points]
def panels():
    t = time.perf_counter()
    for x in data:
        for _ in range(fits):
            umap.UMAP(n_neighbors=min(15, len(x) - 1), random_state=0, n_jobs=1).fit_transform(x)
    return time.perf_counter() - t
first = panels()
second = panels()
print(json.dumps(dict(import_s=t_import, first_s=first, second_s=second)))
"""


def child_command(points, dim, fits, via_revssl, lock=None):
    return [sys.executable, "-c", CHILD, json.dumps([points, dim, fits, via_revssl, lock])]


def child(points, dim, fits, cache_dir, via_revssl):
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    p = subprocess.run(child_command(points, dim, fits, via_revssl), capture_output=True, text=True, env=env, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def children_cpu()->float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def together(n, points, dim, fits, locked)->tuple:
    "n processes started at once on one empty cache (each alone, or under one lock): (wall s, CPU s of all of them)."
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
        env, lock = {**os.environ, "NUMBA_CACHE_DIR": cache}, os.path.join(cache, "umap.lock") if locked else None
        t, cpu = time.perf_counter(), children_cpu()
        procs = [subprocess.Popen(child_command(points, dim, fits, True, lock), env=env, stdout=subprocess.DEVNULL)
                 for _ in range(n)]
        if any(p.wait() for p in procs): raise RuntimeError("a UMAP process failed")
        return time.perf_counter() - t, children_cpu() - cpu


def main(argv=None):
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--points", default="100,2500,5000", help="points of each panel (the demo's sample, class, "
                   "superclass panels)")
    a.add_argument("--dim", type=int, default=64, help="features of the last layer (the demo's width)")
    a.add_argument("--fits", type=int, default=2, help="fits per panel (epochs: the first and the last)")
    a.add_argument("--together", type=int, default=0, help="also start this many processes at once on an empty "
                   "cache, without and with a lock (0: skip)")
    args = a.parse_args(argv)
    points = [int(n) for n in args.points.split(",")]
    import numba, umap, pynndescent  # noqa: F401  (versions for the table)
    rows = []
    for via_revssl, how in ((False, "`import umap`"), (True, "`revssl.analysis.import_umap()`")):
        with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
            for what in ("fresh cache", "cache from the process before"):
                t = time.perf_counter()
                r = child(points, args.dim, args.fits, cache, via_revssl)
                rows.append((f"{how}, {what}", r["import_s"], r["first_s"], r["second_s"], time.perf_counter() - t))
    print(f"umap-learn {umap.__version__}, pynndescent {pynndescent.__version__}, numba {numba.__version__}; "
          f"panels of {points} points x {args.dim} features, {args.fits} fits each, n_jobs=1")
    print("\n| process | import umap | first fits (compile + fit) | same fits again (fit) | compile share | process |")
    print("|---|---:|---:|---:|---:|---:|")
    for what, imp, first, second, total in rows:
        print(f"| {what} | {imp:.1f} s | {first:.1f} s | {second:.1f} s | "
              f"{(imp + first - second) / (imp + first):.0%} | {total:.1f} s |")
    if args.together > 1:
        runs = {locked: together(args.together, points, args.dim, args.fits, locked) for locked in (False, True)}
        print(f"\n| {args.together} processes at once, empty cache | wall until the last ends | CPU of all |")
        print("|---|---:|---:|")
        for locked, how in ((False, "each compiles"), (True, "one lock: the first compiles, the rest read the cache")):
            print(f"| {how} | {runs[locked][0]:.1f} s | {runs[locked][1]:.1f} s |")
        print(f"| ratio (without / with the lock) | {runs[False][0] / runs[True][0]:.2f} | "
              f"{runs[False][1] / runs[True][1]:.2f} |")


if __name__ == "__main__":
    main()
