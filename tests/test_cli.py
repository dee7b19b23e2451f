"""End-to-end tests of the `revssl` command: the smoke reproduction, idempotence, clean stops and exact resume."""
import os, signal, subprocess, sys, time
from pathlib import Path

import pandas as pd
import pytest
import torch

REVSSL = [str(Path(sys.executable).parent / "revssl")]  # the console script installed with the package


def run(*args, check=True, **kw):
    p = subprocess.run([*REVSSL, *args], capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"revssl {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "smoke"
    t = time.time()
    run("reproduce", "--preset", "smoke", "--out", str(out), "--quiet")
    return out, time.time() - t


def test_smoke_reproduction_writes_every_artifact(smoke):
    out, _ = smoke
    m = pd.read_csv(out / "metrics.csv")
    assert list(m.columns) == ["epoch", "layer", "hierarchy", "target", "metric", "split", "value"]
    assert set(m.hierarchy) >= {"sample", "class", "superclass"}
    assert sorted(m.epoch.unique()) == [0, 1, 2, 4]
    for f in ["fig1_umap", "fig2_clustering", "fig3_losses", "fig5_layers", "fig6_clustering_raw"]:
        assert (out / "figures" / f"{f}.png").stat().st_size > 1000
        assert (out / "figures" / f"{f}.pdf").exists()
    rep = (out / "report.md").read_text()
    assert "## The paper's claims" in rep and "| §4, Fig. 2 |" in rep and "not measured" in rep
    log = pd.read_csv(out / "train_log.csv")
    assert list(log.epoch) == [1, 2, 3, 4]


def test_reproduce_again_reuses_everything(smoke):
    out, first = smoke
    before = {p: p.stat().st_mtime_ns for p in (out / "metrics").iterdir()}
    m0 = pd.read_csv(out / "metrics.csv")
    run("reproduce", "--preset", "smoke", "--out", str(out), "--quiet")
    assert {p: p.stat().st_mtime_ns for p in (out / "metrics").iterdir()} == before
    pd.testing.assert_frame_equal(pd.read_csv(out / "metrics.csv"), m0)


def test_stages_run_alone(smoke, tmp_path):
    out, _ = smoke
    (out / "report.md").unlink()
    run("report", str(out))
    assert (out / "report.md").exists()
    p = run("analyze", str(tmp_path / "missing"), check=False)
    assert p.returncode == 2 and "not a revssl run directory" in p.stderr


def test_sigterm_saves_and_resume_is_exact(tmp_path):
    args = ["--preset", "smoke", "--quiet", "--set", "epochs=10", "--set", "analysis_epochs=0,10", "--device", "cpu"]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run("train", "--out", str(straight), *args)
    p = subprocess.Popen([*REVSSL, "train", "--out", str(stopped), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = stopped / "train_log.csv"
    t0 = time.time()
    while not log.exists() and time.time() - t0 < 120:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "stopped by signal SIGTERM" in err and "--resume" in err
    assert not list(stopped.rglob("*.tmp"))
    run("train", "--out", str(stopped), "--resume", *args)
    a = torch.load(straight / "checkpoints" / "epoch_0010.pt", weights_only=True)["model"]
    b = torch.load(stopped / "checkpoints" / "epoch_0010.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_corrupt_checkpoint_is_named(smoke, tmp_path):
    out, _ = smoke
    bad = tmp_path / "bad"
    (bad / "checkpoints").mkdir(parents=True)
    (bad / "config.json").write_text((out / "config.json").read_text())
    (bad / "checkpoints" / "epoch_0000.pt").write_bytes(b"not a checkpoint")
    p = run("analyze", str(bad), "--quiet", check=False)
    assert p.returncode == 2 and "epoch_0000.pt is corrupt or truncated" in p.stderr


def test_unwritable_output_fails_before_training(tmp_path):
    (tmp_path / "file").write_text("x")
    p = run("train", "--preset", "smoke", "--out", str(tmp_path / "file" / "run"), "--quiet", check=False)
    assert p.returncode == 2 and "cannot be written" in p.stderr
