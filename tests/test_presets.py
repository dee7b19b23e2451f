"""Every named run of `revssl.config.PRESETS` starts from the `revssl` command line.

Fast part (always): each preset, shrunk by `--set` to a one-step run on tiny fake data written in the dataset's exact
on-disk format, keeping the preset's method, architecture, optimiser, augmentation and dataset. These runs call the
console script's entry function `revssl.cli.main` in this process with the same argv as `revssl train ...`: fifteen
fresh interpreters would spend ~8 s each importing torch/torchvision on this 2-core machine and blow the one-minute
budget (tests/test_cli.py runs the installed console script itself).

Slow part (`@pytest.mark.slow`, only with REVSSL_SLOW=1): each `paper*` preset at its real size for exactly one
optimisation step on the CPU, through the installed console script: the fake training split holds exactly
`batch_size` images so an epoch is one step, and `--until 1` stops after epoch 1 of the unchanged schedule.
"""
import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from revssl import datasets as D
from revssl.cli import main
from revssl.config import PRESETS, config_to_dict
from revssl.datasets import DATASETS
from revssl.testing import make_fake_dataset

REVSSL = str(Path(sys.executable).parent / "revssl")  # the console script installed with the package
FAKE = ("fashion_mnist", "cifar100", "cifar10", "food101")  # written by make_fake_dataset; digits ships with sklearn
N_TRAIN, N_TEST = 24, 8  # fast part: fake split sizes (train_subset=8 and batch_size=8 make one step)
SHRINK = {"depth": 1, "width": 8, "proj_dim": 16, "batch_size": 8, "epochs": 1, "analysis_epochs": [0, 1],
          "train_subset": 8}  # as config.json writes them
TERMS = {"vicreg": {"invariance", "variance", "covariance", "regularization"},
         "simclr": {"invariance", "regularization"},
         "barlow": {"invariance", "regularization"}, "supervised": {"accuracy"}}
PAPER = [k for k in PRESETS if k.startswith("paper")]
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def check_log_terms(log: pd.DataFrame, method: str):
    "train_log.csv holds this method's loss terms (finite) and none that only other methods have."
    cols = set(log.columns)
    assert {"epoch", "lr", "total"} | TERMS[method] <= cols, f"{method}: columns {sorted(cols)}"
    others = set().union(*TERMS.values()) - TERMS[method]
    assert not cols & others, f"{method}: unexpected columns {sorted(cols & others)}"
    assert np.isfinite(log[["total", *TERMS[method]]].to_numpy(float)).all()


def check_predictions(out: Path, epochs, n_train: int, n_test: int, n_classes: int):
    "predictions/epoch_XXXX.pt at each of `epochs` (and no other) hold class ids for the whole train and test split."
    assert sorted(p.name for p in (out / "predictions").iterdir()) == [f"epoch_{e:04d}.pt" for e in epochs]
    for e in epochs:
        p = torch.load(out / "predictions" / f"epoch_{e:04d}.pt", weights_only=True)
        assert set(p) == {"train", "test"}
        for split, n in (("train", n_train), ("test", n_test)):
            assert p[split].shape == (n,) and p[split].dtype == torch.int64, (e, split, p[split].shape)
            assert 0 <= int(p[split].min()) and int(p[split].max()) < n_classes


# ---------------------------------------------------------------------------------------------- fast: every preset
@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    "One folder holding tiny fake copies of every downloaded dataset, in each one's exact on-disk format."
    root = tmp_path_factory.mktemp("data")
    for name in FAKE: make_fake_dataset(name, root, n_train=N_TRAIN, n_test=N_TEST, seed=1)
    return root


@pytest.fixture
def only_fake(fake_root, tmp_path, monkeypatch):
    "Nothing outside `fake_root` can be found or downloaded into: no $REVSSL_DATA, no system folder, an empty cache."
    monkeypatch.delenv("REVSSL_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(D, "SYSTEM_DATA_DIRS", [])
    return fake_root


def cli(*argv) -> int:
    "`revssl *argv` through the console script's entry function; its exit status."
    return main([str(a) for a in argv])


def sets(d: dict) -> list:
    "`--set key=value` arguments for the fields of `d` (lists as comma-separated values)."
    return [a for k, v in d.items() for a in ("--set", f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}")]


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_trains_one_step_from_cli(name, only_fake, tmp_path, capsys):
    preset, out = PRESETS[name], tmp_path / name
    assert cli("train", "--preset", name, "--data-root", only_fake, "--out", out, "--quiet", *sets(SHRINK)) == 0, \
        capsys.readouterr().err
    assert f"train done: {out}" in capsys.readouterr().out
    # the run is the preset except for the shrinking overrides (and the data folder)
    assert json.loads((out / "config.json").read_text()) == {**config_to_dict(preset), **SHRINK,
                                                              "data_root": str(only_fake)}
    for f in ("epoch_0000.pt", "epoch_0001.pt", "last.pt"):
        assert (out / "checkpoints" / f).is_file(), f
    last = ckpt(out / "checkpoints" / "last.pt")
    assert last["epoch"] == 1 and last["step"] == 0
    log = pd.read_csv(out / "train_log.csv")
    assert list(log.epoch) == [1]
    check_log_terms(log, preset.method)
    if preset.method == "supervised":
        n_train = N_TRAIN if preset.dataset in FAKE else len(D.load_dataset(preset.dataset, "train")[0])
        check_predictions(out, (0, 1), n_train, N_TEST, DATASETS[preset.dataset].hierarchies["class"])
    else:
        assert not (out / "predictions").exists()


def test_supervised_run_stopped_by_until_then_resumed(only_fake, tmp_path, capsys):
    "`--until` stops a supervised run early: predictions exist for the epochs reached, the rest follow on --resume."
    out = tmp_path / "run"
    args = ["train", "--preset", "paper-supervised", "--data-root", only_fake, "--out", out, "--quiet",
            *sets({**SHRINK, "epochs": 2, "analysis_epochs": [0, 1, 2]})]
    assert cli(*args, "--until", "1") == 0, capsys.readouterr().err
    assert ckpt(out / "checkpoints" / "last.pt")["epoch"] == 1
    check_predictions(out, (0, 1), N_TRAIN, N_TEST, 100)
    assert cli(*args, "--resume") == 0, capsys.readouterr().err
    check_predictions(out, (0, 1, 2), N_TRAIN, N_TEST, 100)
    assert list(pd.read_csv(out / "train_log.csv").epoch) == [1, 2]


# ------------------------------------------------------------------------------- slow: paper presets at full size
def res_params(depth: int, width: int, in_ch: int) -> int:
    "RES-L-H (A.2): two bias-free 2x2 stride-2 stem convs with BN, then L blocks of two bias-free 3x3 convs with BN."
    stem = in_ch * width * 4 + 2 * width + width * width * 4 + 2 * width
    return stem + depth * (2 * 9 * width * width + 2 * 2 * width)


def resnet18_params(in_ch: int) -> int:
    "torchvision's ResNet-18 (11,689,512 parameters with its 1000-class head) with a 3x3 stem and no head."
    return 11_689_512 - 64 * in_ch * (7 * 7 - 3 * 3) - (512 * 1000 + 1000)


def vit_params(size: int, in_ch: int, patch: int = 4, layers: int = 10, hidden: int = 384) -> int:
    "ViT of A.2 without head: patch conv, class token, positional embedding, pre-norm encoder layers, final norm."
    tokens, mlp = (size // patch) ** 2 + 1, 4 * hidden
    layer = (2 * hidden + 3 * hidden * hidden + 3 * hidden + hidden * hidden + hidden + 2 * hidden
             + hidden * mlp + mlp + mlp * hidden + hidden)
    return in_ch * hidden * patch * patch + hidden + hidden + tokens * hidden + layers * layer + 2 * hidden


def expected_params(cfg) -> tuple[int, int]:
    "(backbone, head) parameter counts of the model `cfg` describes, computed from A.2's architecture by hand."
    info = DATASETS[cfg.dataset]
    bb, out = {"res": (lambda: (res_params(cfg.depth, cfg.width, info.channels), cfg.width)),
               "resnet18": (lambda: (resnet18_params(info.channels), 512)),
               "vit": (lambda: (vit_params(info.size, info.channels), 384))}[cfg.arch]()
    if cfg.method == "supervised": head = out * info.hierarchies["class"] + info.hierarchies["class"]
    else:  # projector Linear-BN-ReLU-Linear
        head = out * cfg.proj_dim + 2 * cfg.proj_dim + cfg.proj_dim * cfg.proj_dim + cfg.proj_dim
    return bb, head


def test_expected_params_match_known_sizes():
    "The hand counts against published/independent sizes: ResNet-18 CIFAR ~11.2M, RES-10-250 by a direct sum."
    assert resnet18_params(3) == 11_168_832
    direct = (3 * 250 * 4 + 250 * 250 * 4 + 4 * 250) + 10 * (2 * 250 * 250 * 9 + 4 * 250)
    assert res_params(10, 250, 3) == direct == 11_514_000
    bb, head = expected_params(PRESETS["paper"])
    assert (bb, head) == (11_514_000, 250 * 1000 + 2000 + 1000 * 1000 + 1000)


@pytest.fixture(scope="module")
def paper_root(tmp_path_factory):
    "Fake datasets whose training split holds exactly `batch_size` images (one step per epoch), written on demand."
    root, done = tmp_path_factory.mktemp("paper-data"), set()
    def make(name: str, n_train: int) -> Path:
        if (name, n_train) not in done:
            make_fake_dataset(name, root, n_train=n_train, n_test=16, seed=2)
            if name == "cifar100":  # every class present, so the classifier head's size does not depend on the draw
                p = root / "cifar-100-python" / "train"
                d = pickle.loads(p.read_bytes())
                d["fine_labels"] = [i % 100 for i in range(n_train)]
                d["coarse_labels"] = [DATASETS["cifar100"].superclass_of[c] for c in d["fine_labels"]]
                p.write_bytes(pickle.dumps(d, protocol=2))
            done.add((name, n_train))
        return root
    return make


@pytest.mark.slow
@pytest.mark.parametrize("name", PAPER)
def test_slow_paper_preset_one_step_at_full_size(name, paper_root, tmp_path, monkeypatch):
    preset, out = PRESETS[name], tmp_path / name
    root = paper_root(preset.dataset, preset.batch_size)
    monkeypatch.delenv("REVSSL_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    p = subprocess.run([REVSSL, "train", "--preset", name, "--data-root", str(root), "--out", str(out), "--quiet",
                        "--device", "cpu", "--until", "1"], capture_output=True, text=True)
    assert p.returncode == 0, f"revssl train --preset {name} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    # one step of the full schedule: cosine over epochs * 1 steps, stopped after epoch 1
    last = ckpt(out / "checkpoints" / "last.pt")
    assert last["epoch"] == 1 and last["scheduler"]["T_max"] == preset.epochs
    log = pd.read_csv(out / "train_log.csv")
    assert list(log.epoch) == [1]
    assert log.lr[0] == pytest.approx(preset.lr * (1 + math.cos(math.pi / preset.epochs)) / 2, rel=1e-9)
    check_log_terms(log, preset.method)
    assert sorted(f.name for f in (out / "checkpoints").iterdir()) == ["epoch_0000.pt", "epoch_0001.pt", "last.pt"]
    # the saved model is the preset's architecture at full size
    w0, w1 = (ckpt(out / "checkpoints" / f"epoch_{e:04d}.pt")["model"] for e in (0, 1))
    params = {k: v for k, v in w1.items() if not k.endswith(BN_BUFFERS)}
    count = lambda prefix: sum(v.numel() for k, v in params.items() if k.startswith(prefix))
    assert (count("backbone."), count("head.")) == expected_params(preset)
    assert sum(v.numel() for v in params.values()) == sum(expected_params(preset))
    assert any(not torch.equal(w0[k], w1[k]) for k in params), "one optimisation step changed no parameter"
    if preset.method == "supervised":
        check_predictions(out, (0, 1), preset.batch_size, 16, DATASETS[preset.dataset].hierarchies["class"])


# ------------------------------------------------------------------------------------------ stepwise presets (§13)
STEPWISE = [k for k in PRESETS if k.startswith("stepwise-res-")]


def test_stepwise_presets_are_small_init_with_spectrum():
    "The three deep stepwise presets: one per loss, small init, spectrum logged, otherwise alike."
    assert sorted(PRESETS[k].method for k in STEPWISE) == ["barlow", "simclr", "vicreg"]
    for k in STEPWISE:
        p = PRESETS[k]
        assert 0 < p.init_scale < 1 and p.spectrum_every > 0, k
    shared = [{f: v for f, v in config_to_dict(PRESETS[k]).items() if f not in ("name", "method")} for k in STEPWISE]
    assert all(s == shared[0] for s in shared)


@pytest.mark.parametrize("name", STEPWISE)
def test_stepwise_preset_writes_spectrum(name, only_fake, tmp_path, capsys):
    "One step from the command line writes spectrum.csv: the initialisation's proj_dim eigenvalues, largest first."
    out = tmp_path / name
    assert cli("train", "--preset", name, "--out", out, "--quiet", *sets(SHRINK)) == 0, capsys.readouterr().err
    sp = pd.read_csv(out / "spectrum.csv")
    assert list(sp.columns) == ["epoch", "step", "t", "index", "eigenvalue"]
    assert list(sp.step.unique()) == [0] and list(sp["index"]) == list(range(SHRINK["proj_dim"]))
    assert (sp.eigenvalue.diff().dropna() <= 0).all() and (sp.eigenvalue >= 0).all() and (sp.t == 0).all()
