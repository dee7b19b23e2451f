"""End-to-end tests of the `revssl` command: the smoke reproduction over two seeds (each seed a complete run; two
independent runs on the same images, one stacked metrics.csv, banded figures, claims decided per seed, the ladder of
every folder), a rerun that trains nothing, each stage alone, clean stops and exact resume, any encoder.

The command's error messages for bad input are tested in process in nbs/16_cli.ipynb."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from revssl.analysis import eval_sets
from revssl.claims import read_claims
from revssl.cli import main
from revssl.config import config_from_dict
from revssl.ladder import read_ladder

REVSSL = [str(Path(sys.executable).parent / "revssl")]  # the console script installed with the package


def with_generators(root) -> dict:
    "This environment with `$REVSSL_GENERATORS` set to `root` (the §5 generators shared by the session's runs)."
    return {**os.environ, "REVSSL_GENERATORS": str(root)}


def run(*args, check=True, **kw):
    p = subprocess.run([*REVSSL, *args], capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"revssl {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def seeds(tmp_path_factory, shared_generators):
    "`revssl reproduce --seeds 2` of the smoke preset, through the installed console script: the seed folder."
    out = tmp_path_factory.mktemp("runs") / "smoke-2seeds"
    run("reproduce", "--preset", "smoke", "--out", str(out), "--quiet", "--seeds", "2",
        env=with_generators(shared_generators))
    return out


@pytest.fixture(scope="module")
def smoke(seeds):
    return seeds / "seed0"      # seed 0 is the run a single-seed `reproduce` makes


def test_smoke_reproduction_writes_every_artifact(smoke):
    out = smoke
    m = pd.read_csv(out / "metrics.csv")
    assert list(m.columns) == ["epoch", "layer", "hierarchy", "target", "metric", "split", "value"]
    assert set(m.hierarchy) >= {"sample", "class", "superclass"}
    assert sorted(m.epoch.unique()) == [0, 1, 2, 4]
    for f in ["fig1_umap", "fig2_clustering", "fig3_losses", "fig5_layers", "fig6_clustering_raw", "fig_spectra",
              "fig4_randomness", "fig12_generators"]:
        assert (out / "figures" / f"{f}.png").stat().st_size > 1000
        assert (out / "figures" / f"{f}.pdf").exists()
    rep = (out / "report.md").read_text()
    assert "## The paper's claims" in rep and "not measured" in rep
    assert "| s4-sample-clusters | §4, Fig. 2 left |" in rep
    claims = pd.read_csv(out / "claims.csv", dtype=str, keep_default_na=False)
    assert list(claims.columns) == ["id", "section", "figure", "claim", "criterion", "paper", "measured", "verdict",
                                    "held_in"]
    assert set(claims.verdict) <= {"reproduced", "not reproduced", "not measured"} and claims.id.is_unique
    assert all(f"| {i} |" in rep for i in claims.id)   # report.md renders every row of claims.csv
    log = pd.read_csv(out / "train_log.csv")
    assert list(log.epoch) == [1, 2, 3, 4]
    # §5 (random targets), the spectra and the BatchNorm control are part of every SSL reproduction
    assert set(m[m.hierarchy == "features"].metric) == {"rankme", "participation_ratio"}
    r = pd.read_csv(out / "randomness.csv")
    assert set(r.generator) == {"resnet18", "vit"} and sorted(r.epoch.unique()) == [0, 1, 2, 4]
    bn = pd.read_csv(out / "bn_compare.csv")
    assert set(bn.eval_bn) == {"running", "recalibrated"} and sorted(bn.epoch.unique()) == [0, 4]
    s5 = ["s5-semantic-over-random", "s5-gap-grows", "s5-layers-random", "s5-distance-drives-cdnv",
          "b5-resnet-over-vit"]
    assert set(s5) <= set(claims.id) and (claims[claims.id.isin(s5)].verdict != "not measured").all()
    assert "## Random targets (§5)" in rep and "## BatchNorm statistics at evaluation" in rep
    assert {"randomness", "bn_compare"} <= set(json.loads((out / "timings.json").read_text()))


def files(run):
    "{relative path: mtime} of every file under `run`."
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in Path(run).rglob("*") if p.is_file()}


def test_reproduce_again_reuses_everything(seeds, shared_generators):
    before, m0 = files(seeds), pd.read_csv(seeds / "seed0" / "metrics.csv")
    kept = {p: (seeds / p).read_bytes() for p in ("seed0/config.json", "seed1/config.json", "claims.csv")}
    run("reproduce", "--preset", "smoke", "--out", str(seeds), "--quiet", "--seeds", "2",
        env=with_generators(shared_generators))
    after = files(seeds)
    assert set(after) == set(before)
    # timings.json and report.md state the accumulated wall time; train rewrites config.json (same bytes); no
    # checkpoint, table or figure is written again
    assert {Path(k).name for k in after if after[k] != before[k]} <= {"timings.json", "report.md", "config.json"}
    assert {p: (seeds / p).read_bytes() for p in kept} == kept
    pd.testing.assert_frame_equal(pd.read_csv(seeds / "seed0" / "metrics.csv"), m0, check_exact=True)


def fails_naming(msg, *args):
    "Run `revssl *args`, expecting exit status 2 and one error line containing `msg`."
    p = run(*args, check=False)
    lines = [l for l in p.stderr.splitlines() if l.startswith("revssl:")]
    assert p.returncode == 2 and len(lines) == 1 and msg in lines[0] and "Traceback" not in p.stderr, p.stderr


def main_fails_naming(capsys, msg, *args):
    "`revssl.cli.main(args)` in this process: exit status 2 and one error line containing `msg`."
    capsys.readouterr()
    assert main(list(args)) == 2
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("revssl:")]
    assert len(lines) == 1 and msg in lines[0], lines


def test_stages_run_alone(tmp_path, capsys):
    """Each stage in a fresh `revssl` process reads only files; its rerun and the next stage run too early are checked
    in this process (`main`, which the console script calls)."""
    out = tmp_path / "run"
    args = ["--preset", "smoke", "--quiet", "--device", "cpu", "--set", "epochs=2", "--set", "analysis_epochs=0,2"]
    epochs = ("0000", "0002")
    figs = ("fig1_umap", "fig2_clustering", "fig3_losses", "fig5_layers", "fig6_clustering_raw", "fig_spectra")
    # (stage, its arguments, its rerun's arguments if others, the files it makes, (the next stage's arguments, the error
    # that stage gives when run before this one))
    stages = [
        ("train", ["--out", str(out), *args], ["--out", str(out), "--resume", *args],
         {"config.json", "train_log.csv", "checkpoints/last.pt"} | {f"checkpoints/epoch_{e}.pt" for e in epochs},
         (["analyze", str(out)], "not a revssl run directory (no config.json)")),
        ("analyze", [str(out), "--quiet"], None,
         {f"{f}{k}" for f in ["metrics.csv", "umap.csv"] + [f"metrics/epoch_{e}.csv" for e in epochs]
          + [f"features/epoch_{e}.pt" for e in epochs] for k in ("", ".key")},
         (["figures", str(out)], "has no metrics.csv: run `revssl analyze")),
        ("figures", [str(out)], None, {f"figures/{f}.{x}" for f in figs for x in ("png", "pdf")} | {"figures/.run.key"},
         (["report", str(out)], "has no figures: run `revssl figures")),
        ("report", [str(out)], None, {"report.md", "claims.csv"}, None),
    ]
    for stage, argv, again, made, too_early in stages:
        if too_early:   # the next stage, run too early, names what is missing
            main_fails_naming(capsys, too_early[1], *too_early[0])
        before = files(out) if out.exists() else {}
        run(stage, *argv)
        after = files(out)
        assert set(after) - set(before) == made, (stage, set(after) - set(before))
        assert {k for k in before if after[k] != before[k]} == set(), stage    # nothing earlier is touched
        assert main([stage, *(again or argv)]) == 0
        rerun = files(out)
        assert set(rerun) == set(after), stage
        changed = {k for k in after if rerun[k] != after[k]}
        assert changed <= ({"config.json"} if stage == "train" else set()), (stage, changed)   # a rerun is a no-op
    assert "RES-2-32" in (out / "report.md").read_text()


def test_sigterm_saves_and_resume_is_exact(tmp_path):
    args = ["--preset", "smoke", "--quiet", "--set", "epochs=10", "--set", "analysis_epochs=0,10", "--device", "cpu"]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run("train", "--out", str(straight), *args)
    p = subprocess.Popen([*REVSSL, "train", "--out", str(stopped), *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
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


def test_probe_any_encoder(tmp_path):
    out = tmp_path / "probe"
    p = run("probe", "--model", "torchvision:resnet18", "--layers", "layer1,layer4", "--dataset", "digits",
            "--out", str(out), "--train", "400", "--test", "200", "--sample", "10,4,2", "--device", "cpu")
    assert f"probe done: {out}" in p.stdout
    m = pd.read_csv(out / "metrics.csv")
    assert list(m.columns) == ["epoch", "layer", "hierarchy", "target", "metric", "split", "value"]
    assert sorted(set(zip(m.layer, m.target))) == [(l, t) for l in ("layer1", "layer4")
                                                   for t in ("class", "sample", "superclass")]
    assert (out / "figures" / "layers.png").stat().st_size > 1000
    assert "grayscale images replicated" in (out / "report.md").read_text()
    fails_naming("unknown layer(s) ['fc9'] of ResNet; its named modules are: conv1,", "probe", "--model",
                 "torchvision:resnet18", "--layers", "fc9", "--dataset", "digits", "--out", str(tmp_path / "bad"))
    assert not (tmp_path / "bad").exists()


def test_two_independent_runs_on_the_same_images(seeds):
    cfgs = [config_from_dict(json.loads((seeds / f"seed{k}" / "config.json").read_text())) for k in (0, 1)]
    assert [(c.seed, c.data_seed) for c in cfgs] == [(0, None), (1, 0)]
    a, b = (eval_sets(c) for c in cfgs)
    for s in a: assert np.array_equal(a[s][0].numpy(), b[s][0].numpy()), s     # same evaluation images
    m0, m1 = (pd.read_csv(seeds / f"seed{k}" / "metrics.csv") for k in (0, 1))
    trained = m0.epoch > 0
    assert not np.allclose(m0.value[trained], m1.value[trained])                  # ... different training


def test_stacked_tables_and_banded_figures(seeds):
    m = pd.read_csv(seeds / "metrics.csv")
    one = pd.read_csv(seeds / "seed1" / "metrics.csv")
    pd.testing.assert_frame_equal(m[m.seed == 1].drop(columns="seed").reset_index(drop=True), one)
    names = sorted(p.name for p in (seeds / "seed0" / "figures").glob("*.png"))
    assert names and sorted(p.name for p in (seeds / "figures").glob("*.png")) == names
    assert (seeds / "figures" / "fig2_clustering.png").read_bytes() != (seeds / "seed0" / "figures" /
                                                                         "fig2_clustering.png").read_bytes()


def test_claims_hold_in_every_seed_or_are_not_reproduced(seeds):
    c = read_claims(seeds / "claims.csv")
    per = [read_claims(seeds / f"seed{k}" / "claims.csv").set_index("id").verdict for k in (0, 1)]
    for r in c.itertuples():
        held = sum(p[r.id] == "reproduced" for p in per)
        measured = sum(p[r.id] != "not measured" for p in per)
        want = "not measured" if not measured else "reproduced" if held == 2 else "not reproduced"
        assert r.verdict == want, r.id
        assert r.held_in == ("" if not measured else f"{held}/2"), r.id
    rep = (seeds / "report.md").read_text()
    assert "| held in |" in rep and "mean ± sd" in rep and "| all |" in rep


def test_a_changed_config_is_refused_before_training(seeds, capsys):
    assert main(["reproduce", "--preset", "smoke", "--out", str(seeds), "--quiet", "--seeds", "2",
                 "--set", "lr=0.5"]) == 2
    assert "seed0 holds a run of another config (lr: 0.05 -> 0.5)" in capsys.readouterr().err


def test_reproduce_writes_the_ladder_of_every_seed(seeds):
    "The claims-by-length ladder of each seed and of the seed folder; each last rung is that folder's report."
    for run in (seeds / "seed0", seeds / "seed1", seeds):
        t = read_ladder(run / "claims_by_epoch.csv")
        assert sorted(t.epochs.unique()) == [0, 1, 2, 4], run
        assert (run / "figures" / "fig_claims_by_epoch.png").exists(), run
        c = read_claims(run / "claims.csv")
        assert list(t[t.epochs == 4].verdict) == list(c.verdict), run   # the folder's: held in every seed
