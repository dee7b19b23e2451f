"""Any encoder's grid: `layer_features` + `measure` for torchvision's ResNet-18 (random weights) over 4 layers.

The data is Fashion-MNIST (offline, e.g. Debian's dataset-fashion-mnist; digits repeated when it is missing):
--n training images and --n-test test images, grayscale replicated to the model's 3 input channels. The timed
stages are the features of the 4 layers (one forward pass per batch, hooks on layer1..layer4) and `measure` on them
(NCC train/test, linear probe, CDNV, class variance, class-mean distance for class and superclass), once with the
`fast` probe and once with `linearsvc` (scikit-learn's LinearSVC, the paper's probe). Each time is the median of
--repeats runs (LinearSVC: --svc-repeats); the ratio is measured in this one run. Peak memory is the process's
maximum resident set size (ru_maxrss) after each stage: it only grows, so each line includes the stages before.

    python bench/features.py                       # 10,000 + 2,000 images, 1 thread
    python bench/features.py --n 2000 --threads 2 --device cuda
"""
import argparse, os, resource, statistics, sys, time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # as in the Makefile: no spinning OpenMP threads
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from revssl.datasets import load_dataset, dataset_info, DatasetNotFound  # noqa: E402
from revssl.train import subset_indices  # noqa: E402
from revssl.features import load_encoder, layer_features  # noqa: E402
from revssl.analysis import measure  # noqa: E402

LAYERS = ["layer1", "layer2", "layer3", "layer4"]


def data(n, n_test):
    "(train images, labels, test images, labels, normalisation, dataset name): Fashion-MNIST, else digits repeated."
    try: name, (x, y), (xt, yt) = "fashion_mnist", load_dataset("fashion_mnist", "train", download=False), \
        load_dataset("fashion_mnist", "test", download=False)
    except DatasetNotFound:
        name, (x, y), (xt, yt) = "digits", load_dataset("digits", "train"), load_dataset("digits", "test")
        r = -(-n // len(x)); x, y = x.repeat(r, 1, 1, 1), {k: v.repeat(r) for k, v in y.items()}
    i, j = subset_indices(len(x), n, 1), subset_indices(len(xt), n_test, 2)
    info = dataset_info(name)
    return x[i], {k: v[i] for k, v in y.items()}, xt[j], {k: v[j] for k, v in yt.items()}, (info.mean, info.std), name


def peak_mib(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(f, repeats):
    "Median wall time of `repeats` calls of f, and f's last result."
    ts = []
    for _ in range(repeats):
        t = time.perf_counter(); r = f(); ts.append(time.perf_counter() - t)
    return statistics.median(ts), r


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=10000, help="training images")
    p.add_argument("--n-test", type=int, default=2000, help="test images")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3, help="runs of the features and of the fast measure")
    p.add_argument("--svc-repeats", type=int, default=1, help="runs of the LinearSVC measure")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    x, y, xt, yt, norm, name = data(a.n, a.n_test)
    model = load_encoder("torchvision:resnet18").to(a.device)
    print(f"{name}: {len(x)} train + {len(xt)} test images {tuple(x.shape[1:])}, torchvision:resnet18, layers "
          f"{','.join(LAYERS)}, {a.threads} thread(s), device {a.device}; startup peak RSS {peak_mib():.0f} MiB")
    feats = lambda s: layer_features(model, s, LAYERS, norm=norm, batch=a.batch, device=a.device)
    t_f, (f, ft) = timed(lambda: (feats(x), feats(xt)), a.repeats)
    mib = sum(v.numel() * 4 for d in (f, ft) for v in d.values()) / 2**20
    print(f"features: {t_f:.1f} s median of {a.repeats} ({(len(x) + len(xt)) / t_f:.0f} images/s); feature matrices "
          f"{mib:.0f} MiB; peak RSS {peak_mib():.0f} MiB")
    t_fast, m = timed(lambda: measure(f, y, ft, yt, "fast"), a.repeats)
    print(f"measure fast: {t_fast:.1f} s median of {a.repeats} ({len(m)} rows); peak RSS {peak_mib():.0f} MiB")
    t_svc, ms = timed(lambda: measure(f, y, ft, yt, "linearsvc"), a.svc_repeats)
    print(f"measure linearsvc: {t_svc:.1f} s median of {a.svc_repeats}; peak RSS {peak_mib():.0f} MiB")
    lin = lambda d: d[d.metric == "linear_accuracy"].set_index(["layer", "target"]).value
    gap = (lin(m) - lin(ms)).abs().max()
    print(f"whole grid (features + measure): fast {t_f + t_fast:.1f} s, linearsvc {t_f + t_svc:.1f} s: "
          f"ratio {(t_f + t_svc) / (t_f + t_fast):.1f}x; measure alone {t_svc / t_fast:.1f}x; "
          f"largest |linear accuracy fast - linearsvc| {gap:.4f}")


if __name__ == "__main__":
    main()
