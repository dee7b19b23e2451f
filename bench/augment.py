"""Throughput of the batched SimCLR augmentation (`revssl.augment.SimCLRAugment`) against the common per-image
torchvision pipeline (`simclr_transform` in a DataLoader with 2 worker processes), measured in one run.

    python bench/augment.py                   # CPU: 32x32 RGB and 28x28 grayscale, median of 3 epochs each
    python bench/augment.py --device cuda     # adds views/s at 32x32, batch 512, and an epoch's peak GPU memory

Both pipelines produce two views per image for an epoch over the same uint8 images (random pixels for 32x32 RGB;
Fashion-MNIST for 28x28 when it is installed, random otherwise) and are timed after one warm-up epoch each; the
DataLoader keeps its workers alive between epochs, so worker start-up is not counted. The timed epochs alternate
between the pipelines (loader, batched 1 thread, batched N threads, loader, ...) so that changes in the machine's load
hit all of them alike; each rate is the median over the repeats. Prints a markdown table.

OpenMP: unless OMP_WAIT_POLICY is already set, it is set to PASSIVE before torch is imported. On a machine whose cores
are shared with other busy processes, libgomp's default busy-waiting makes every multi-threaded torch op wait for a
descheduled thread (we measured 10-100x slowdowns of small ops on the 2-core development machine); the DataLoader
workers are single-threaded and unaffected either way. The policy in effect is printed with the table.
"""
import os
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede `import torch`

import argparse
import statistics
import time

import torch

from revssl.datasets import DATASETS, IMAGENET_MEAN, IMAGENET_STD, load_dataset
from revssl.augment import SimCLRAugment, two_view_batches, torchvision_two_view_loader


def sync(device):
    if device.type == "cuda": torch.cuda.synchronize(device)


def epoch_rate(batches, device):
    "Views per second of one pass over an iterable of (view1, view2) batches."
    t, n = time.perf_counter(), 0
    for v1, v2 in batches: n += len(v1) + len(v2)
    sync(device)
    return n / (time.perf_counter() - t)


class Batched:
    "Epochs of `two_view_batches` + `SimCLRAugment` on `device` (data already resident there), with `threads`."
    def __init__(self, images, batch, aug, device, threads=None):
        self.x, self.batch, self.aug, self.device, self.threads = images.to(device), batch, aug, device, threads
        self.g = torch.Generator(device=device).manual_seed(0)

    def epoch(self):
        old = torch.get_num_threads()
        if self.threads: torch.set_num_threads(self.threads)
        try: return epoch_rate(two_view_batches(self.x, self.batch, self.aug, self.g), self.device)
        finally: torch.set_num_threads(old)


class Loader:
    "Epochs of the per-image torchvision pipeline in a DataLoader with `workers` persistent processes."
    def __init__(self, images, batch, size, mean, std, workers):
        self.dl = torchvision_two_view_loader(images, batch, size, mean, std, num_workers=workers, seed=0)

    def epoch(self): return epoch_rate(self.dl, torch.device("cpu"))


def interleaved(pipelines, repeats):
    "Median views/s of each pipeline; one warm-up epoch each, then `repeats` rounds alternating between them."
    for p in pipelines: p.epoch()
    rates = [[] for _ in pipelines]
    for _ in range(repeats):
        for p, r in zip(pipelines, rates): r.append(p.epoch())
    return [statistics.median(r) for r in rates]


def cpu_settings(n):
    "(label, images, out_size, mean, std) of the two CPU settings."
    g = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    try:
        gray, label = load_dataset("fashion_mnist", download=False)[0][:n], "28x28x1 (Fashion-MNIST)"
    except FileNotFoundError:
        gray, label = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8), "28x28x1 (random)"
    info = DATASETS["fashion_mnist"]
    return [("32x32x3 (random)", rgb, 32, IMAGENET_MEAN, IMAGENET_STD), (label, gray, 28, info.mean, info.std)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2048, help="images per epoch on the CPU")
    ap.add_argument("--batch", type=int, default=256, help="images per batch (two views each)")
    ap.add_argument("--repeats", type=int, default=3, help="timed epochs per measurement (median reported)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the torchvision pipeline")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda to add the GPU measurements")
    args = ap.parse_args()

    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads {threads}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load average before: {os.getloadavg()[0]:.2f}")
    print(f"{args.images} images x 2 views per epoch, batch {args.batch}, "
          f"median of {args.repeats} interleaved epochs\n")
    rows = []
    cpu = torch.device("cpu")
    for label, images, size, mean, std in cpu_settings(args.images):
        aug = SimCLRAugment(size, mean, std)
        counts = sorted({1, threads})
        ref, *rates = interleaved([Loader(images, args.batch, size, mean, std, args.workers)]
                                  + [Batched(images, args.batch, aug, cpu, t) for t in counts], args.repeats)
        for t, rate in zip(counts, rates):
            rows.append((label, f"CPU, {t} thread{'s' * (t > 1)}", rate, ref, rate / ref))
    print("| images | batched SimCLRAugment on | batched views/s | torchvision DataLoader "
          f"({args.workers} workers) views/s | ratio |")
    print("|---|---|---:|---:|---:|")
    for label, where, rate, ref, ratio in rows:
        print(f"| {label} | {where} | {rate:,.0f} | {ref:,.0f} | {ratio:.1f}x |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")

    if args.device.startswith("cuda"):
        dev = torch.device(args.device)
        x = torch.randint(0, 256, (50000, 3, 32, 32), dtype=torch.uint8, device=dev)
        aug = SimCLRAugment(32, IMAGENET_MEAN, IMAGENET_STD)
        rate, = interleaved([Batched(x, 512, aug, dev)], args.repeats)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        epoch_rate(two_view_batches(x, 512, aug, torch.Generator(device=dev).manual_seed(1)), dev)
        peak = torch.cuda.max_memory_allocated(dev)
        print(f"\n{torch.cuda.get_device_name(dev)}: 32x32x3, batch 512 (1024 views per call): {rate:,.0f} views/s; "
              f"an epoch over 50000x3x32x32 uint8 on the device: peak {peak / 2**20:,.0f} MiB allocated "
              f"({base / 2**20:,.0f} MiB of it the resident images)")


if __name__ == "__main__":
    main()
