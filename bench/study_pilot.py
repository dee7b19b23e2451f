"""Pilot for the demo study's one learning rate: the largest of LRS at which every width of the study (B.1, RES-3 at
widths 8, 40, 160) trains with a finite loss through the first EPOCHS epochs of its 6-epoch cosine schedule.

    python bench/study_pilot.py            # prints one markdown row per (lr, width); stops at the first stable lr

The paper trains every width with one lr (A.3: 0.002 for 1000 epochs); the 6-epoch CPU demo needs a larger one, and
the first try (0.05, the single-run demo's) diverged at width 160. Candidates are tried from the largest down.
"""
import os
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import sys, tempfile, time
from pathlib import Path
import pandas as pd
from revssl.studies import DEMO, member_config
from revssl.config import apply_overrides, validate
from revssl.train import train, NonFiniteLoss

LRS, EPOCHS = (0.05, 0.02, 0.01), 2
WIDTHS = ("vicreg-narrow", "vicreg-res5", "vicreg-wide")

def pilot(lr:float, name:str)->dict:
    cfg = validate(apply_overrides(member_config(DEMO.member(name)), [f"lr={lr}", "analysis_epochs=0"]))
    t = time.time()
    with tempfile.TemporaryDirectory() as d:
        try:
            train(cfg, Path(d), until=EPOCHS, progress=False)
            log = pd.read_csv(Path(d)/"train_log.csv")
            return dict(lr=lr, member=name, width=cfg.width, finite=True, loss=round(float(log.total.iloc[-1]), 3),
                        s_per_epoch=round(float(log.time_s.median()), 1))
        except NonFiniteLoss as e:
            return dict(lr=lr, member=name, width=cfg.width, finite=False, loss=str(e).split(";")[0],
                        s_per_epoch=round((time.time() - t) / EPOCHS, 1))

if __name__ == "__main__":
    print("| lr | member | width | finite | loss after epoch 2 | s/epoch |\n|---|---|---|---|---|---|")
    for lr in LRS:
        rows = [pilot(lr, n) for n in WIDTHS]
        for r in rows: print("| " + " | ".join(str(v) for v in r.values()) + " |", flush=True)
        if all(r["finite"] for r in rows):
            print(f"\nchosen: lr={lr} (the largest of {LRS} stable at every width)"); sys.exit(0)
    print(f"\nno lr of {LRS} is stable at every width"); sys.exit(1)
