"""Linear probes: `fast` (batched torch) vs `linearsvc` (scikit-learn) on the same features and targets.

Input: a torch file (loaded with weights_only=True) holding
    {"features": {set: {layer(int): Tensor[N, D]}}, "labels": {set: {hierarchy: LongTensor[N]}}}
with sets "train", "test", "sample_train", "sample_test". The grid of one checkpoint is every layer x every
target set: each hierarchy of "train" (class, superclass, random levels, ...) probed on train -> test, and the
"sample" hierarchy probed on sample_train -> sample_test.

Timing: `linearsvc` fits one target set per call (that is how it works); `fast` solves all target sets that
share a feature matrix in one call, so its per-target time is that call's time divided by the number of target
sets (amortised). Every time is the median of --repeats runs; the speed ratio is measured in this one run.

    python bench/probe.py --synthetic                 # Gaussian-mixture features like the demo preset
    python bench/probe.py --cache runs/demo/features/epoch_0100.pt --device cuda
"""
import argparse, math, os, statistics, sys, tempfile, time
from pathlib import Path

# as in the Makefile: spinning OpenMP threads make small ops many times slower on a shared 2-core machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from revssl.probes import linear_probe  # noqa: E402

SETS = ("train", "test", "sample_train", "sample_test")


def synthetic_cache(path, n_train=10000, n_test=10000, layers=4, dims=(64, 96, 128, 128), classes=10,
                    supers=5, ids=100, views_train=20, views_test=5, latent=32, view_jitter=1.0, seed=0):
    "Write a cache of hierarchical Gaussian-mixture features; deeper layers carry more class signal."
    g = torch.Generator().manual_seed(seed)
    sup_mu = torch.randn(supers, latent, generator=g)
    cls_sup = torch.arange(classes) % supers
    cls_mu = sup_mu[cls_sup] + 0.8 * torch.randn(classes, latent, generator=g)

    def images(n):  # one latent per image: its class mean plus image-specific variation
        y = torch.randint(0, classes, (n,), generator=g)
        return y, torch.randn(n, latent, generator=g)

    y_tr, u_tr = images(n_train)
    y_te, u_te = images(n_test)
    y_id, u_id = images(ids)
    sid_tr = torch.arange(ids).repeat_interleave(views_train)
    sid_te = torch.arange(ids).repeat_interleave(views_test)
    feats = {s: {} for s in SETS}
    dims = [dims[min(i, len(dims) - 1)] for i in range(layers)]
    for layer, d in enumerate(dims):
        a = 0.3 + 0.5 * layer / max(1, layers - 1)           # class signal grows with depth
        proj = torch.randn(latent, d, generator=g) / math.sqrt(latent)
        scale = torch.rand(d, generator=g) * 3 + 0.5           # arbitrary per-feature scales and offsets
        offset = torch.randn(d, generator=g) * 5
        def layer_feats(y, u):  # a view: latent jitter (the augmentation) + feature noise, then scales/offsets
            lat = a * cls_mu[y] + u + view_jitter * torch.randn(len(y), latent, generator=g)
            return ((lat @ proj + 0.7 * torch.randn(len(y), d, generator=g)) * scale + offset).float()
        feats["train"][layer] = layer_feats(y_tr, u_tr)
        feats["test"][layer] = layer_feats(y_te, u_te)
        feats["sample_train"][layer] = layer_feats(y_id[sid_tr], u_id[sid_tr])
        feats["sample_test"][layer] = layer_feats(y_id[sid_te], u_id[sid_te])
    labels = {"train": {"class": y_tr, "superclass": cls_sup[y_tr]},
              "test": {"class": y_te, "superclass": cls_sup[y_te]},
              "sample_train": {"sample": sid_tr}, "sample_test": {"sample": sid_te}}
    torch.save({"features": feats, "labels": labels}, path)


def load_cache(path):
    "Load and check the cache structure; one clear error naming what is missing."
    if not os.path.exists(path): raise FileNotFoundError(f"feature cache {path} not found")
    try: c = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e: raise ValueError(f"{path} is not a readable torch file: {e}") from None
    if not isinstance(c, dict) or not {"features", "labels"} <= set(c):
        raise ValueError(f"{path} must hold a dict with 'features' and 'labels'")
    for key in ("features", "labels"):
        missing = [s for s in SETS if s not in c[key]]
        if missing: raise ValueError(f"{path}: {key} lacks sets {missing}")
    if "sample" not in c["labels"]["sample_train"] or "sample" not in c["labels"]["sample_test"]:
        raise ValueError(f"{path}: sample_train/sample_test labels need the hierarchy 'sample'")
    for s in ("test", "sample_train", "sample_test"):
        if set(c["features"][s]) != set(c["features"]["train"]):
            raise ValueError(f"{path}: layers of {s} {sorted(c['features'][s])} "
                             f"differ from train's {sorted(c['features']['train'])}")
    return c


def grid(c):
    "[(layer, train set, test set, {hierarchy: train labels}, {hierarchy: test labels})] for every layer."
    hier = [h for h in c["labels"]["train"] if h != "sample"]
    out = []
    for layer in sorted(c["features"]["train"]):
        out.append((layer, "train", "test", {h: c["labels"]["train"][h] for h in hier},
                    {h: c["labels"]["test"][h] for h in hier}))
        out.append((layer, "sample_train", "sample_test", {"sample": c["labels"]["sample_train"]["sample"]},
                    {"sample": c["labels"]["sample_test"]["sample"]}))
    return out


def timed(fn, repeats, sync):
    "Median wall time of `repeats` calls and the last result."
    ts = []
    for _ in range(repeats):
        sync(); t = time.perf_counter(); r = fn(); sync(); ts.append(time.perf_counter() - t)
    return statistics.median(ts), r


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache", help="feature cache (torch file); with --synthetic, where to write it")
    p.add_argument("--synthetic", action="store_true", help="build a Gaussian-mixture cache first")
    p.add_argument("--device", default="cpu", help="device of the fast probe (cpu, cuda); LinearSVC runs on the CPU")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    p.add_argument("--svc-repeats", type=int, default=None, help="timed runs for LinearSVC (default: --repeats)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--tol", type=float, default=None, help="stopping tolerance of the fast probe (default: its own)")
    p.add_argument("--C", default="1.0", help="C of the fast probe: a number or 'holdout' (LinearSVC keeps C=1)")
    p.add_argument("--solver", default="auto", choices=("auto", "newton", "cg"), help="solver of the fast probe")
    a = p.parse_args(argv)
    if not a.cache and not a.synthetic: p.error("give --cache FILE or --synthetic")
    if a.synthetic:
        path = a.cache or os.path.join(tempfile.mkdtemp(), "synthetic_features.pt")
        synthetic_cache(path)
    else: path = a.cache
    c = load_cache(path)
    if a.threads: torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    C = a.C if a.C == "holdout" else float(a.C)
    fast_kw = dict(C=C, solver=a.solver) if a.tol is None else dict(C=C, solver=a.solver, tol=a.tol)
    svc_rep = a.svc_repeats or a.repeats

    rows, tot_svc, tot_fast = [], 0., 0.
    for layer, s_tr, s_te, y_tr, y_te in grid(c):
        x_tr, x_te = c["features"][s_tr][layer], c["features"][s_te][layer]
        xd_tr, xd_te = x_tr.to(dev), x_te.to(dev)
        yd_tr, yd_te = {k: v.to(dev) for k, v in y_tr.items()}, {k: v.to(dev) for k, v in y_te.items()}
        linear_probe(xd_tr, yd_tr, xd_te, yd_te, method="fast", **fast_kw)  # warm-up (allocations, CUDA context)
        t_fast, acc_fast = timed(lambda: linear_probe(xd_tr, yd_tr, xd_te, yd_te, method="fast", **fast_kw),
                                 a.repeats, sync)
        tot_fast += t_fast
        for h in y_tr:
            t_svc, acc_svc = timed(lambda: linear_probe(x_tr, y_tr[h], x_te, y_te[h], method="linearsvc"),
                                   svc_rep, lambda: None)
            tot_svc += t_svc
            rows.append((layer, s_tr, h, len(torch.unique(y_tr[h])), tuple(x_tr.shape), acc_svc, acc_fast[h],
                         t_svc, t_fast / len(y_tr)))

    print(f"features: {path}")
    print(f"fast on {dev} ({torch.get_num_threads()} CPU threads), LinearSVC on the CPU (single-threaded liblinear); "
          f"median of {a.repeats} (fast) / {svc_rep} (LinearSVC) runs; fast options {fast_kw}\n")
    print("| layer | features | target | classes | train N x D | LinearSVC acc | fast acc | abs diff "
          "| LinearSVC s | fast s (amortised) | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for layer, s, h, k, shape, a_s, a_f, t_s, t_f in rows:
        print(f"| {layer} | {s} | {h} | {k} | {shape[0]} x {shape[1]} | {a_s:.4f} | {a_f:.4f} | {abs(a_s - a_f):.4f} "
              f"| {t_s:.3f} | {t_f:.4f} | {t_s / t_f:.0f}x |")
    worst = max(rows, key=lambda r: abs(r[5] - r[6]))
    print("\n| whole grid | target sets | LinearSVC s | fast s | speed-up | largest abs accuracy diff |")
    print("|---|---|---|---|---|---|")
    print(f"| {len(c['features']['train'])} layers | {len(rows)} | {tot_svc:.2f} | {tot_fast:.3f} | "
          f"{tot_svc / tot_fast:.0f}x | {abs(worst[5] - worst[6]):.4f} (layer {worst[0]}, {worst[2]}) |")


if __name__ == "__main__":
    main()
