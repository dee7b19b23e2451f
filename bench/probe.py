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
    python bench/probe.py --paper-size --threads 2   # the paper's shapes; LinearSVC on a timed class subset

--paper-size: synthetic features of the paper's shapes (N = 50,000 train x D = 250: 100 classes, 20 superclasses
of 5 classes; the 500-image sample-level set, 500 x 100 train and 500 x 20 test views; and D = 1,000, which takes
the CG solver). LinearSVC is one-vs-rest, so its column for class c is the binary fit of c against all N rows
(checked in tests/test_bench_probe.py). Where fitting all K columns would exceed --svc-budget seconds (timed on a
pilot column), LinearSVC fits only k of the K columns (a seeded random subset, the pilot first), still on all N
train rows; both probes are then scored on the test rows of those k classes, by argmax over those k columns. With
k = K this is the ordinary accuracy. The fast probe always solves every column of every target set in one call.
"""
import argparse, math, os, statistics, sys, tempfile, time
from pathlib import Path

# as in the Makefile: spinning OpenMP threads make small ops many times slower on a shared 2-core machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch
from sklearn.svm import LinearSVC

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from revssl.probes import linear_probe, _ovr_targets, _squared_hinge_ovr, _standardise  # noqa: E402

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


# --- --paper-size: the fast probe against LinearSVC at the paper's shapes -------------------------------------

def paper_size_features(d=250, # feature dimension
                        classes=100, # image classes
                        group=5, # classes per superclass
                        n_train=50000, n_test=10000, # images
                        ids=500, views_train=100, views_test=20, # sample-level set: source images and their views
                        latent=24, # dimension of the subspace holding the class means
                        spread=1.0, # scale of the class means against the unit image variation
                        jitter=0.6, # view-to-view variation (latent std) of the sample-level set
                        noise=1.0, # isotropic feature noise outside the signal
                        seed=0):
    "{'images': (x_tr, ys_tr, x_te, ys_te), 'sample': (...)}: learnable but overlapping Gaussian-mixture features."
    g = torch.Generator().manual_seed(seed)
    sup_mu = spread * torch.randn(classes // group, latent, generator=g)
    cls_mu = sup_mu[torch.arange(classes) // group] + 0.7 * spread * torch.randn(classes, latent, generator=g)
    proj = torch.randn(latent, d, generator=g) / math.sqrt(latent)
    scale, offset = torch.rand(d, generator=g) * 3 + 0.5, torch.randn(d, generator=g) * 5
    feats = lambda lat: ((lat @ proj + noise * torch.randn(len(lat), d, generator=g)) * scale + offset).float()
    image = lambda y: cls_mu[y] + torch.randn(len(y), latent, generator=g)   # an image: its class mean + variation
    y_tr = torch.arange(n_train) % classes                                  # balanced, every class present
    y_te = torch.arange(n_test) % classes
    z = image(torch.randint(0, classes, (ids,), generator=g))               # the sample-level source images
    s_tr, s_te = torch.arange(ids).repeat_interleave(views_train), torch.arange(ids).repeat_interleave(views_test)
    view = lambda s: z[s] + jitter * torch.randn(len(s), latent, generator=g)
    hier = lambda y: {"class": y, "superclass": y // group}
    return {"images": (feats(image(y_tr)), hier(y_tr), feats(image(y_te)), hier(y_te)),
            "sample": (feats(view(s_tr)), {"sample": s_tr}, feats(view(s_te)), {"sample": s_te})}


def fast_scores(x_tr, # train features [N, D]
                ys_tr:dict, # name -> train labels [N]
                x_te, # test features [M, D]
                solver="auto", tol=1e-4, # options of the fast probe (C = 1, as LinearSVC)
               ):
    "Test decision values [M, all columns] and column spans of the fast probe, as `linear_probe(method='fast')`."
    xtr, xte = _standardise(x_tr, x_te, dtype=torch.float32, bias=True)
    Y, spans = _ovr_targets(ys_tr)
    W = _squared_hinge_ovr(xtr, Y, torch.ones(Y.shape[1], device=xtr.device), solver, None, tol)
    return xte @ W, spans


def svc_scores(a, # standardised train features [N, D] (numpy float64)
               b, # standardised test features [M, D] (numpy float64)
               y, # train labels [N] (numpy)
               classes:list, # the classes whose one-vs-rest columns are fitted
              ):
    "Test decision values [M, len(classes)] of LinearSVC's one-vs-rest columns (a binary fit each), seconds each."
    cols, secs = [], []
    for c in classes:
        t = time.perf_counter()
        clf = LinearSVC(C=1.0, max_iter=1000, dual="auto", tol=1e-4, random_state=0).fit(a, y == c)
        secs.append(time.perf_counter() - t)
        cols.append(torch.from_numpy(clf.decision_function(b)))
    return torch.stack(cols, 1), secs


def subset_accuracy(scores, # decision values [M, k] of the columns of `classes`, in that order
                    y, # test labels [M]
                    classes, # the k classes (LongTensor)
                   ):
    "Accuracy by argmax over the k columns on the test rows whose label is one of `classes`, and those predictions."
    keep = torch.isin(y, classes)
    if not keep.any(): raise ValueError(f"no test row has a label among the {len(classes)} chosen classes")
    pred = classes[scores[keep].argmax(1)]
    return (pred == y[keep]).double().mean().item(), pred


def class_order(K:int, # classes of the target set
                seed:int=0, # seed of the order
               ):
    "A seeded random order of the K classes: the pilot column is the first, a subset of k is the first k."
    return torch.randperm(K, generator=torch.Generator().manual_seed(seed))


def svc_subset(order, # the classes in their random order, from `class_order`
               pilot_s:float, # seconds LinearSVC took for one column
               budget_s:float, # seconds of LinearSVC allowed for this target set
              ):
    "The classes LinearSVC fits: all K when K columns fit the budget, else the first k of the order (at least 2)."
    return order[:max(2, int(budget_s / max(pilot_s, 1e-9)))]


def paper_size_rows(fam, # features name, e.g. "D=250 images"
                    x_tr, ys_tr, x_te, ys_te, # features and {name: labels} (labels 0..K-1, all present in train)
                    a, # the parsed options
                    dev, sync):
    "One row per target set: the fast probe (all columns, one call) against LinearSVC on all or a timed k of K."
    sync(); t = time.perf_counter()
    S, spans = fast_scores(x_tr.to(dev), {h: v.to(dev) for h, v in ys_tr.items()}, x_te.to(dev), a.solver,
                       1e-4 if a.tol is None else a.tol)
    sync(); t_fast = time.perf_counter() - t
    S = S.double().cpu()
    xa, xb = (z.numpy() for z in _standardise(x_tr, x_te))
    rows = []
    for h, j0, j1, cl in spans:
        K, y_tr, y_te = j1 - j0, ys_tr[h].numpy(), ys_te[h]
        if not torch.equal(cl.cpu(), torch.arange(K)): raise ValueError(f"{fam} {h}: labels must be 0..K-1")
        order = class_order(K, a.seed)
        P, (pilot,) = svc_scores(xa, xb, y_tr, order[:1].tolist())          # the pilot column
        chosen = svc_subset(order, pilot, a.svc_budget)
        R, secs = svc_scores(xa, xb, y_tr, chosen[1:].tolist())
        acc_s, p_s = subset_accuracy(torch.cat([P, R], 1), y_te, chosen)
        acc_f, p_f = subset_accuracy(S[:, j0:j1][:, chosen], y_te, chosen)
        acc_all = subset_accuracy(S[:, j0:j1], y_te, torch.arange(K))[0]
        rows.append(dict(fam=fam, target=h, N=len(x_tr), D=x_tr.shape[1], K=K, k=len(chosen), M=len(p_s),
                         solver=a.solver if a.solver != "auto" else ("newton" if x_tr.shape[1] + 1 <= 513 else "cg"),
                         t_fast=t_fast, t_svc=pilot + sum(secs), pilot=pilot, acc_f=acc_f, acc_s=acc_s,
                         acc_all=acc_all, agree=(p_s == p_f).double().mean().item()))
        print(f"  {fam} {h}: pilot column {pilot:.2f} s -> LinearSVC on {len(chosen)} of {K} columns", flush=True)
    return rows


def print_paper_size(rows, threshold):
    "The markdown table of the --paper-size rows and the verdict at `threshold`."
    print("\n| features | target | train N x D | classes | fast solver | fast s (one call, all targets) "
          "| LinearSVC s | LinearSVC columns | test rows | fast acc | LinearSVC acc | abs diff | same prediction "
          "| fast acc, all K |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        sub = (f"all {r['K']}" if r["k"] == r["K"] else f"subsampled: {r['k']} of {r['K']} classes, one-vs-rest "
               f"columns restricted to those classes (est. all {r['K']}: {r['t_svc'] / r['k'] * r['K']:.0f} s)")
        print(f"| {r['fam']} | {r['target']} | {r['N']} x {r['D']} | {r['K']} | {r['solver']} | {r['t_fast']:.1f} "
              f"| {r['t_svc']:.1f} | {sub} | {r['M']} | {r['acc_f']:.4f} | {r['acc_s']:.4f} "
              f"| {abs(r['acc_f'] - r['acc_s']):.4f} | {r['agree']:.4f} | {r['acc_all']:.4f} |")
    w = max(rows, key=lambda r: abs(r["acc_f"] - r["acc_s"]))
    d = abs(w["acc_f"] - w["acc_s"])
    print(f"\nlargest abs accuracy difference: {d:.4f} ({w['fam']}, {w['target']}); threshold {threshold}: "
          f"agreement {'HOLDS' if d <= threshold else 'DOES NOT HOLD'}")


def paper_size(a, dev, sync):
    "Build the paper-size features, probe them with both methods, print the table and the verdict."
    print(f"--paper-size: threshold on |fast acc - LinearSVC acc| fixed before running: {a.threshold}; "
          f"fast on {dev} ({torch.get_num_threads()} CPU threads), LinearSVC single-threaded liblinear, "
          f"LinearSVC budget {a.svc_budget:.0f} s per target set, seed {a.seed}, one timed run each", flush=True)
    rows = []
    for d in (250, 1000):
        t = time.perf_counter()
        f = paper_size_features(d=d, seed=a.seed)
        print(f"  D={d}: features built in {time.perf_counter() - t:.1f} s", flush=True)
        rows += paper_size_rows(f"D={d} images", *f["images"], a, dev, sync)
        if d == 250: rows += paper_size_rows(f"D={d} sample-level", *f["sample"], a, dev, sync)
    print_paper_size(rows, a.threshold)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache", help="feature cache (torch file); with --synthetic, where to write it")
    p.add_argument("--synthetic", action="store_true", help="build a Gaussian-mixture cache first")
    p.add_argument("--paper-size", action="store_true", help="features of the paper's shapes (see the top)")
    p.add_argument("--svc-budget", type=float, default=120., help="--paper-size: LinearSVC seconds per target set")
    p.add_argument("--threshold", type=float, default=0.005, help="--paper-size: largest allowed accuracy diff")
    p.add_argument("--seed", type=int, default=0, help="--paper-size: seed of the features and the class subset")
    p.add_argument("--device", default="cpu", help="device of the fast probe (cpu, cuda); LinearSVC runs on the CPU")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    p.add_argument("--svc-repeats", type=int, default=None, help="timed runs for LinearSVC (default: --repeats)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--tol", type=float, default=None, help="stopping tolerance of the fast probe (default: its own)")
    p.add_argument("--C", default="1.0", help="C of the fast probe: a number or 'holdout' (LinearSVC keeps C=1)")
    p.add_argument("--solver", default="auto", choices=("auto", "newton", "cg"), help="solver of the fast probe")
    a = p.parse_args(argv)
    if not a.cache and not a.synthetic and not a.paper_size: p.error("give --cache FILE, --synthetic or --paper-size")
    if a.paper_size and (a.cache or a.synthetic):
        p.error("--paper-size builds its own features: drop --cache/--synthetic")
    if a.paper_size and a.C != "1.0": p.error("--paper-size compares at C=1 (LinearSVC's default): drop --C")
    if a.svc_budget <= 0: p.error(f"--svc-budget must be positive, got {a.svc_budget}")
    if a.paper_size:
        if a.threads: torch.set_num_threads(a.threads)
        dev = torch.device(a.device)
        return paper_size(a, dev, (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None))
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
