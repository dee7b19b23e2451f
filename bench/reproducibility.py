"""What is bit-exact and what is not: the same training run repeated with the same thread count, and with another.

    python bench/reproducibility.py                 # demo preset, 5000 images, 1 epoch; threads 2, 2 again, 1
    python bench/reproducibility.py --threads 2,2,1 --images 5000 --epochs 1

Each run is a fresh process (`torch.set_num_threads(t)` before anything runs) training into its own folder. Prints a
markdown table: per run, the epoch's mean loss (train_log.csv), the sha256 of the final weights, and the largest
absolute weight difference from the first run. Same threads → the same bytes; other threads → the float sums inside
the CPU kernels are split differently, the weights differ in the last bits after the first step, and training
amplifies that.
"""
import os
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import argparse, hashlib, json, subprocess, sys, tempfile
from pathlib import Path

CHILD = """
import json, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from dataclasses import replace
from pathlib import Path
import pandas as pd
from revssl.config import get_preset
from revssl.train import train
cfg = replace(get_preset("demo"), train_subset=int(sys.argv[3]), epochs=int(sys.argv[4]),
              analysis_epochs=(0, int(sys.argv[4])), device="cpu")
train(cfg, Path(sys.argv[2]), progress=False)
log = pd.read_csv(Path(sys.argv[2])/"train_log.csv")
print(json.dumps({"loss": [float(v) for v in log.total], "threads": torch.get_num_threads()}))
"""

def weights(run: Path) -> dict:
    import torch
    ck = sorted((run/"checkpoints").glob("epoch_*.pt"))[-1]
    sd = torch.load(ck, map_location="cpu", weights_only=False)
    sd = sd.get("model", sd)
    return {k: v.float() for k, v in sd.items() if hasattr(v, "float")}

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", default="2,2,1")
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=1)
    a = p.parse_args()
    rows, first = [], None
    with tempfile.TemporaryDirectory() as d:
        for i, t in enumerate(a.threads.split(",")):
            run = Path(d)/f"run{i}"
            out = subprocess.run([sys.executable, "-c", CHILD, t, str(run), str(a.images), str(a.epochs)],
                                 check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            w = weights(run)
            h = hashlib.sha256(b"".join(w[k].numpy().tobytes() for k in sorted(w))).hexdigest()[:16]
            first = first or w
            diff = max(float((w[k] - first[k]).abs().max()) for k in w)
            rows.append((i, r["threads"], r["loss"][-1], h, diff))
    print(f"demo preset, {a.images} images, {a.epochs} epoch(s), CPU, torch {__import__('torch').__version__}\n")
    print("| run | threads | last epoch's mean loss | weights sha256 | max abs weight diff vs run 0 |")
    print("|---|---|---|---|---|")
    for i, t, loss, h, diff in rows: print(f"| {i} | {t} | {loss:.6f} | `{h}` | {diff:.3g} |")

if __name__ == "__main__":
    main()
