"""`revssl reproduce --seeds 2` end to end on a short smoke run: two independent seed runs on the same images, one
stacked metrics.csv, banded figures, claims decided per seed, and a rerun that trains nothing."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from revssl.claims import read_claims
from revssl.cli import main
from revssl.analysis import eval_sets
from revssl.config import config_from_dict
from revssl.ladder import read_ladder

SETS = ["--set", "epochs=2", "--set", "analysis_epochs=0,2"]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    out = tmp_path_factory.mktemp("seeds") / "smoke-2seeds"
    assert main(["reproduce", "--preset", "smoke", "--out", str(out), "--quiet", "--seeds", "2", *SETS]) == 0
    return out


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


def test_rerun_trains_nothing(seeds):
    ck = {p: p.stat().st_mtime_ns for p in seeds.rglob("*.pt")}
    claims = (seeds / "claims.csv").read_bytes()
    assert main(["reproduce", "--preset", "smoke", "--out", str(seeds), "--quiet", "--seeds", "2", *SETS]) == 0
    assert {p: p.stat().st_mtime_ns for p in seeds.rglob("*.pt")} == ck
    assert (seeds / "claims.csv").read_bytes() == claims


def test_a_changed_config_is_refused_before_training(seeds, capsys):
    assert main(["reproduce", "--preset", "smoke", "--out", str(seeds), "--quiet", "--seeds", "2", *SETS,
                 "--set", "lr=0.5"]) == 2
    assert "seed0 holds a run of another config (lr: 0.05 -> 0.5)" in capsys.readouterr().err


def test_reproduce_writes_the_ladder_of_every_seed(seeds):
    "The claims-by-length ladder of each seed and of the seed folder; each last rung is that folder's report."
    for run in (seeds / "seed0", seeds / "seed1", seeds):
        t = read_ladder(run / "claims_by_epoch.csv")
        assert sorted(t.epochs.unique()) == [0, 2], run
        assert (run / "figures" / "fig_claims_by_epoch.png").exists(), run
        c = read_claims(run / "claims.csv")
        assert list(t[t.epochs == 2].verdict) == list(c.verdict), run   # the folder's: held in every seed
