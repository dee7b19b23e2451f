"""Training throughput: revssl's step (device-resident data, batched augmentation, bf16/channels_last/compile on a
GPU) against the common style (fp32, eager, per-image torchvision augmentation in a DataLoader), same model, one run.

    python bench/train.py                      # CPU: RES-10-250, batch 64, a few steps (the GPU figure stays open)
    python bench/train.py --device cuda --batch 256 --steps 50 --compile

Prints views/s (median over repeats) for both and their ratio, as a markdown table.
"""
import os
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no OpenMP spin-waits on shared CPUs (bench/augment)
import argparse, itertools, statistics, time
from dataclasses import replace

import torch

from revssl.config import get_preset
from revssl.augment import simclr_transform
from revssl.models import build_model
from revssl.train import build_augment, make_optimizer, ssl_step
from revssl.datasets import dataset_info


def sync(dev):
    if dev.type == "cuda": torch.cuda.synchronize()


def time_steps(step, n, dev):
    sync(dev); t = time.perf_counter()
    for _ in range(n): step()
    sync(dev)
    return time.perf_counter() - t


class Views(torch.utils.data.Dataset):
    "Per-image two-view dataset in the common style (PIL-free tensors through torchvision.transforms.v2)."
    def __init__(self, images, tf): self.images, self.tf = images, tf
    def __len__(self): return len(self.images)
    def __getitem__(self, i): x = self.images[i]; return self.tf(x), self.tf(x)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--depth", type=int, default=10); p.add_argument("--width", type=int, default=250)
    p.add_argument("--batch", type=int, default=None); p.add_argument("--steps", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3); p.add_argument("--compile", action="store_true")
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    dev = torch.device(a.device)
    cpu = dev.type == "cpu"
    batch, steps = a.batch or (64 if cpu else 256), a.steps or (2 if cpu else 30)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (max(50000 if not cpu else 4096, batch * (steps + 2)), 3, 32, 32), dtype=torch.uint8)
    info = dataset_info("cifar100")
    cfg = replace(get_preset("paper"), depth=a.depth, width=a.width, proj_dim=4 * a.width, batch_size=batch,
                  device=a.device, compile=a.compile)

    # revssl: data on the device, batched augmentation there, bf16 autocast + channels_last (+ compile) on a GPU
    model = build_model(cfg, 3, 100, 32).to(dev)
    if dev.type == "cuda": model = model.to(memory_format=torch.channels_last)
    fwd = torch.compile(model) if a.compile else model
    opt, aug = make_optimizer(cfg, model.parameters()), build_augment(cfg, info, dev)
    gen, xs = torch.Generator(device=dev).manual_seed(0), images.to(dev)
    amp = dev.type == "cuda"
    it = itertools.count()
    def ours():
        k = next(it) % (len(xs) // batch)
        terms = ssl_step(fwd, aug, xs[k * batch:(k + 1) * batch], cfg, gen, amp)
        opt.zero_grad(set_to_none=True); terms["total"].backward(); opt.step()

    # reference: fp32, eager, per-image torchvision transforms in a DataLoader with workers, copied to the device
    ref_model = build_model(cfg, 3, 100, 32).to(dev)
    ref_opt = make_optimizer(cfg, ref_model.parameters())
    dl = torch.utils.data.DataLoader(Views(images, simclr_transform(32, info.mean, info.std)), batch_size=batch,
                                     shuffle=True, num_workers=a.workers, drop_last=True,
                                     persistent_workers=a.workers > 0, pin_memory=dev.type == "cuda")
    batches = (b for _ in itertools.count() for b in dl)   # re-iterate the loader forever (no caching of batches)
    from revssl.losses import vicreg_loss
    def ref():
        v1, v2 = next(batches)
        z1, z2 = ref_model(v1.to(dev, non_blocking=True)), ref_model(v2.to(dev, non_blocking=True))
        loss = vicreg_loss(z1, z2).total
        ref_opt.zero_grad(set_to_none=True); loss.backward(); ref_opt.step()

    rows = []
    for name, step in (("revssl", ours), ("reference (fp32, eager, torchvision per-image, DataLoader)", ref)):
        time_steps(step, 2 if cpu else 10, dev)                       # warm-up (and compilation)
        ts = [time_steps(step, steps, dev) for _ in range(a.repeats)]
        rows.append((name, 2 * batch * steps / statistics.median(ts)))
    print(f"\nRES-{a.depth}-{a.width} VICReg, batch {batch}, {steps} steps x {a.repeats} repeats, device {dev}"
          f"{' (' + torch.cuda.get_device_name() + ')' if dev.type == 'cuda' else ''}, compile={a.compile}\n")
    print("| pipeline | views/s (median) | ratio |\n|---|---|---|")
    for name, v in rows: print(f"| {name} | {v:,.0f} | {v / rows[1][1]:.2f}x |")
    if dev.type == "cuda":
        full = 1000 * 2 * 50000 / rows[0][1]
        print(f"\nprojected `paper` run (1000 epochs x 2 views x 50,000 images): {full / 60:.1f} min")


if __name__ == "__main__":
    main()
