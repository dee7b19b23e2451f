"""`revssl train` under `torchrun --nproc_per_node 2` (gloo, CPU) trains the run of one process, into one set of files.

Each rank takes half of every global batch (`revssl.distributed.rank_rows`); the augmentation is drawn for the whole
global batch from one seeded generator, BatchNorm normalises over the global batch (`GatheredBatchNorm` on the CPU) and
the loss gathers both ranks' embeddings, so each step computes, mathematically, the step of a single process on the
whole batch. The helpers' one-process behaviour is tested in nbs/05b_distributed.ipynb; this file runs two processes.

Bit-for-bit equality with the single-process run is not achievable, so it is not asserted: the gradient is summed over
each rank's half and then all-reduced (instead of one sum over the batch), BatchNorm sums the gathered rows in another
order, and each rank runs its convolutions on half the batch with one thread; float32 results then differ in their
last bits and the difference grows over the steps. (It is rounding, not another computation: over 64 steps of a
larger smoke run the two-process weights differed from the one-process ones by 0.8% of a tensor's largest value, and
so did the one-process run with one thread instead of two.) We keep the run short (2 epochs of 4 steps) and assert:

- the initial weights (epoch 0) are identical;
- every logged loss term (the mean over an epoch's 4 steps, starting with the first step) agrees to a relative 1e-5
  (measured: ~2e-7);
- every weight and buffer after 1 and 2 epochs agrees to 1e-4 of its tensor's largest magnitude (measured: ~2e-6);

and, so that these tolerances could fail, that training moved the weights far more than that from their initial
values.
"""
import os, re, signal, subprocess, sys, time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from revssl.config import apply_overrides, get_preset
from revssl.train import load_checkpoint, train, _read_log

REVSSL = Path(sys.executable).parent / "revssl"  # the console script; torchrun runs a file path with Python
SETS = ["train_subset=128", "batch_size=32", "epochs=2", "analysis_epochs=0,1,2", "width=8", "proj_dim=16"]
TIMEOUT_S = 120
FILES = {"config.json", "train_log.csv", "checkpoints/epoch_0000.pt", "checkpoints/epoch_0001.pt",
         "checkpoints/epoch_0002.pt", "checkpoints/last.pt"}
TERMS = ["total", "invariance", "variance", "covariance", "regularization"]

pytestmark = pytest.mark.skipif(not REVSSL.exists(), reason="the revssl console script is not installed")


def torchrun_cmd(out, *extra, sets=SETS):
    "`revssl train` with two gloo processes on the CPU, and its environment."
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(REVSSL), "train",
           "--preset", "smoke", "--device", "cpu", "--quiet", "--out", str(out),
           *[a for s in sets for a in ("--set", s)], *extra]
    torchrun_vars = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in torchrun_vars}
    env["OMP_NUM_THREADS"] = "1"
    return cmd, env


def torchrun(out, *extra, sets=SETS):
    cmd, env = torchrun_cmd(out, *extra, sets=sets)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)


def one_process(out, **changes):
    "The same config trained in this process (no torchrun environment)."
    assert "WORLD_SIZE" not in os.environ
    cfg = replace(apply_overrides(get_preset("smoke"), SETS), device="cpu", **changes)
    return train(cfg, out, progress=False)


def files(out): return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}


def weights(out, e): return load_checkpoint(out / "checkpoints" / f"epoch_{e:04d}.pt")["model"]


def rel_diff(a, b):
    "Largest difference over all tensors, relative to each tensor's largest magnitude."
    return max(((a[k].double() - b[k].double()).abs().max() / b[k].double().abs().max().clamp_min(1e-12)).item()
               for k in b)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    p = torchrun(root / "ddp")
    assert p.returncode == 0, f"torchrun failed ({p.returncode}):\n{p.stdout}\n{p.stderr[-4000:]}"
    return root / "ddp", one_process(root / "one"), p


def test_two_ranks_finish_and_write_one_run(runs):
    ddp, _, p = runs
    # torchrun exits 0 only when every rank returned normally; the console line is printed by rank 0 alone
    assert p.stdout.count("revssl: train done") == 1, p.stdout
    assert files(ddp) == FILES                                  # no duplicates, no temporary files
    log = (ddp / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,lr,total,") and [r.split(",")[0] for r in log[1:]] == ["1", "2"]
    last = load_checkpoint(ddp / "checkpoints" / "last.pt")
    assert (last["epoch"], last["step"]) == (2, 0)


def test_same_run_as_one_process(runs):
    ddp, one, _ = runs
    a, b = weights(ddp, 0), weights(one, 0)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    la, lb = _read_log(ddp / "train_log.csv"), _read_log(one / "train_log.csv")
    assert [r["epoch"] for r in la] == [r["epoch"] for r in lb] == ["1", "2"]
    for ra, rb in zip(la, lb):
        assert ra["lr"] == rb["lr"]
        for t in TERMS: assert float(ra[t]) == pytest.approx(float(rb[t]), rel=1e-5), (ra["epoch"], t)
    for e in (1, 2): assert rel_diff(weights(ddp, e), weights(one, e)) < 1e-4, e
    assert rel_diff(weights(one, 2), weights(one, 0)) > 1e-2   # the tolerance is far below what training changes


def test_rank0_error_reaches_every_rank(runs):
    "A fresh start over the finished run is refused by rank 0; rank 1 raises the same error instead of hanging."
    ddp, _, _ = runs
    before = {f: (ddp / f).read_bytes() for f in FILES}
    t = time.monotonic()
    p = torchrun(ddp)
    assert p.returncode != 0 and time.monotonic() - t < TIMEOUT_S
    assert p.stderr.count("already holds a run; pass --resume") == 2, p.stderr[-4000:]
    assert {f: (ddp / f).read_bytes() for f in FILES} == before and files(ddp) == FILES


@pytest.mark.slow
def test_sigterm_stops_every_rank_at_one_step_and_resume_is_exact(tmp_path):
    """SIGTERM to torchrun (which forwards it to both workers) in the middle of a run: both ranks stop after the same
    step and rank 0 saves it; resuming under torchrun gives the uninterrupted two-process run bit for bit (with two
    ranks every reduction is a sum of two numbers, which does not depend on the order)."""
    sets = ["train_subset=512", "batch_size=32", "epochs=20", "analysis_epochs=0,20", "width=8", "proj_dim=16"]
    stopped, straight = tmp_path / "stopped", tmp_path / "straight"
    cmd, env = torchrun_cmd(stopped, sets=sets)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    t0 = time.monotonic()
    while not (stopped / "train_log.csv").exists() and time.monotonic() - t0 < TIMEOUT_S and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=TIMEOUT_S)
    stops = re.findall(r"stopped by signal SIGTERM at epoch (\d+), step (\d+)/16", err)
    assert p.returncode != 0 and len(stops) == 2 and stops[0] == stops[1], err[-4000:]
    last = load_checkpoint(stopped / "checkpoints" / "last.pt")
    assert (last["epoch"] + 1, last["step"]) == tuple(map(int, stops[0])) and last["epoch"] < 20
    assert not list(stopped.rglob("*.tmp"))
    for out, extra in ((stopped, ["--resume"]), (straight, [])):
        q = torchrun(out, *extra, sets=sets)
        assert q.returncode == 0, q.stderr[-4000:]
    a, b = weights(stopped, 20), weights(straight, 20)
    assert all(torch.equal(a[k], b[k]) for k in b)
    la, lb = _read_log(stopped / "train_log.csv"), _read_log(straight / "train_log.csv")
    assert [[r[k] for k in TERMS] for r in la] == [[r[k] for k in TERMS] for r in lb] and len(la) == 20
