"""Training cost per image-presentation of candidate RES-L-H shapes on Fashion-MNIST-sized images (28×28×1), for
sizing the `long` preset: the same SSL step the run takes (batched augmentation, VICReg, SGD), timed on random uint8
images, shapes interleaved, median over repeats; with each shape's FLOPs per view (forward + backward).

    python bench/epoch_time.py                                   # RES-3-64 (the demo) and the `long` candidates
    python bench/epoch_time.py --shapes 3x64,5x32 --batch 128 --steps 20 --repeats 3

Prints a markdown table: ms per image-presentation (one image, two views), its ratio to the first shape, GFLOP per
view and the FLOP ratio, and the seconds an epoch of --images images would take.
"""
import os
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no OpenMP spin-waits on shared CPUs
import argparse, statistics, time
from dataclasses import replace

import torch

from revssl.config import get_preset
from revssl.datasets import dataset_info
from revssl.models import build_model
from revssl.train import build_augment, make_optimizer, ssl_step
from revssl.studies import flops_per_view


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default="3x64,5x32,5x40,5x48", help="comma-separated LxH; the first is the reference")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--images", type=int, default=12000, help="images per epoch, for the epoch-time column")
    a = p.parse_args()
    info = dataset_info("fashion_mnist")
    torch.manual_seed(0)
    x = torch.randint(0, 256, (a.batch * a.steps, 1, 28, 28), dtype=torch.uint8)
    runs = {}
    for s in a.shapes.split(","):
        L, H = (int(v) for v in s.split("x"))
        cfg = replace(get_preset("demo"), depth=L, width=H, proj_dim=4 * H, batch_size=a.batch, device="cpu")
        model = build_model(cfg, 1, 10, 28)
        opt, aug, gen = make_optimizer(cfg, model.parameters()), build_augment(cfg, info, "cpu"), torch.Generator()
        def step(k, model=model, opt=opt, aug=aug, gen=gen, cfg=cfg):
            t = ssl_step(model, aug, x[k * a.batch:(k + 1) * a.batch], cfg, gen, False)
            opt.zero_grad(set_to_none=True); t["total"].backward(); opt.step()
        step(0)                                                  # warm-up
        runs[s] = (cfg, step, [])
    for _ in range(a.repeats):                                   # interleaved: a load change hits every shape alike
        for s, (cfg, step, ts) in runs.items():
            t = time.perf_counter()
            for k in range(a.steps): step(k)
            ts.append((time.perf_counter() - t) / (a.steps * a.batch) * 1e3)
    ref = statistics.median(runs[next(iter(runs))][2])
    f_ref = flops_per_view(runs[next(iter(runs))][0])
    print(f"\nbatch {a.batch}, {a.steps} steps x {a.repeats} repeats, {torch.get_num_threads()} threads\n")
    print(f"| shape | ms per image-presentation | ratio | GFLOP per view | FLOP ratio | s per epoch of {a.images} |")
    print("|---|---:|---:|---:|---:|---:|")
    for s, (cfg, _, ts) in runs.items():
        ms, f = statistics.median(ts), flops_per_view(cfg)
        print(f"| RES-{cfg.depth}-{cfg.width} | {ms:.3f} | {ms / ref:.2f} | {f / 1e9:.4f} | {f / f_ref:.2f} | "
              f"{ms * a.images / 1e3:.0f} |")


if __name__ == "__main__":
    main()
