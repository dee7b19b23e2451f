"""Claims by training length (`revssl.ladder`): the ladder's last rung is the committed demo report, a claim that holds
only late flips on a synthetic table, bad input is refused with one clear error, `revssl reproduce` and `revssl ladder`
write the ladder, the committed demo ladder is what the committed tables give, and the long presets validate."""
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from revssl.claims import read_claims
from revssl.cli import main
from revssl.config import (ConfigError, PRESETS, config_from_dict, config_to_dict, get_preset, log_epochs,
                           validate)
from revssl.ladder import (LADDER_COLUMNS, claims_by_epoch, key_number, ladder_kinds, read_ladder,
                           seeds_claims_by_epoch, write_ladder)
from revssl.studies import flops_per_view

FIG = Path(__file__).resolve().parent.parent / "figures"


@pytest.fixture(scope="module")
def demo_tables():
    return (get_preset("demo"), pd.read_csv(FIG / "demo_metrics.csv"), pd.read_csv(FIG / "demo_train_log.csv"),
            pd.read_csv(FIG / "demo_randomness.csv"))


@pytest.fixture
def demo_run(tmp_path):
    "A run folder holding the demo's committed tables (no checkpoints: nothing can be retrained from it)."
    run = tmp_path / "demo"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config_to_dict(get_preset("demo"))))
    for n in ("metrics", "train_log", "randomness"):
        shutil.copy(FIG / f"demo_{n}.csv", run / f"{n}.csv")
    return run


def late_table(values=((0, .300), (1, .305), (2, .308), (4, .310), (8, .400))):
    "metrics.csv rows of one claim's measure only: class NCC train accuracy at the last layer, per epoch."
    return pd.DataFrame([dict(epoch=e, layer=1, hierarchy="class", target="class", metric="ncc_accuracy",
                              split="train", value=v) for e, v in values])


def test_last_rung_is_the_committed_report(demo_tables):
    t = claims_by_epoch(*demo_tables)
    claims = read_claims(FIG / "claims.csv")
    last = t[t.epochs == t.epochs.max()]
    assert t.epochs.max() == 15 and list(last.id) == list(claims.id)
    assert list(last.verdict) == list(claims.verdict)
    assert list(last.measured) == list(claims.measured)
    assert sorted(t.epochs.unique()) == [0, 1, 2, 4, 8, 15] and len(t) == 6 * len(claims)


def test_committed_demo_ladder_is_what_the_tables_give(demo_tables):
    got = claims_by_epoch(*demo_tables)
    committed = read_ladder(FIG / "demo_claims_by_epoch.csv")
    assert tuple(committed.columns) == LADDER_COLUMNS
    pd.testing.assert_frame_equal(committed, got.astype({"epochs": committed.epochs.dtype}))
    assert (FIG / "fig_claims_by_epoch.png").stat().st_size > 10_000


def test_committed_long_run_is_the_long_preset_and_its_ladder_what_its_tables_give():
    run = FIG / "long"
    cfg = config_from_dict(json.loads((run / "config.json").read_text()))
    assert config_to_dict(cfg) == config_to_dict(get_preset("long"))                # the preset, nothing overridden
    got = claims_by_epoch(cfg, *(pd.read_csv(run / f"{n}.csv") for n in ("metrics", "train_log", "randomness")))
    committed = read_ladder(run / "claims_by_epoch.csv")
    pd.testing.assert_frame_equal(committed, got.astype({"epochs": committed.epochs.dtype}))
    last, claims = committed[committed.epochs == 200], read_claims(run / "claims.csv")
    assert list(last.id) == list(claims.id) and list(last.verdict) == list(claims.verdict)
    assert sorted(committed.epochs.unique()) == list(log_epochs(200))
    wall = json.loads((run / "timings.json").read_text())
    assert set(wall) >= {"train", "analyse", "randomness", "umap", "figures"} and sum(wall.values()) <= 3600
    page = (FIG / "ladder.md").read_text()
    assert f"{sum(wall.values()):,.0f} s" in page                                    # the page states the wall time
    assert (run / "figures" / "fig_claims_by_epoch.png").stat().st_size > 10_000


def test_a_claim_that_holds_only_late():
    # 2 SE of a difference at p ≈ 0.3 on 5,000 images each ≈ 0.018: +0.010 is noise, +0.100 is not
    t = claims_by_epoch(get_preset("demo"), late_table(), pd.DataFrame(columns=["epoch"]))
    v = t[t.id == "s4-class-clusters"].set_index("epochs").verdict.to_dict()
    assert v == {0: "not measured", 1: "not reproduced", 2: "not reproduced", 4: "not reproduced", 8: "reproduced"}
    assert ladder_kinds(t)["s4-class-clusters"] == "becomes reproduced"
    assert key_number("s4-class-clusters", t[(t.id == "s4-class-clusters") & (t.epochs == 8)].measured.item()) == "0.400"
    # the same rise that stops short of the noise never becomes reproduced
    flat = claims_by_epoch(get_preset("demo"), late_table(((0, .300), (1, .305), (2, .310))), pd.DataFrame(columns=["epoch"]))
    assert ladder_kinds(flat)["s4-class-clusters"] == "never reproduced"


def test_bad_input_is_named(demo_tables, tmp_path):
    cfg, m, log, r = demo_tables
    with pytest.raises(ValueError, match=r"epochs \[3\] were not analysed: metrics.csv holds epochs \[0, 1, 2, 4, 8, 15\]"):
        claims_by_epoch(cfg, m, log, r, epochs=[3])
    with pytest.raises(ValueError, match="metrics.csv has no rows"):
        claims_by_epoch(cfg, m.iloc[:0], log, r)
    with pytest.raises(ValueError, match="train_log.csv has no 'epoch' column"):
        claims_by_epoch(cfg, m, log.drop(columns="epoch"), r)
    with pytest.raises(FileNotFoundError, match="not a revssl run directory"):
        write_ladder(tmp_path / "missing")


def test_ladder_command_on_an_existing_run(demo_run, tmp_path, capsys):
    assert main(["ladder", str(demo_run)]) == 0
    t = read_ladder(demo_run / "claims_by_epoch.csv")
    assert sorted(t.epochs.unique()) == [0, 1, 2, 4, 8, 15]
    assert (demo_run / "figures" / "fig_claims_by_epoch.png").exists()
    assert (demo_run / "figures" / "fig_claims_by_epoch.pdf").exists()
    assert main(["ladder", str(tmp_path / "nothing")]) == 2
    assert "not a revssl run directory (no config.json)" in capsys.readouterr().err


def test_seed_folder_ladder_needs_every_seed(demo_run, tmp_path):
    other = tmp_path / "seed1"
    shutil.copytree(demo_run, other)
    (other / "config.json").write_text(json.dumps({**config_to_dict(get_preset("demo")), "seed": 1}))
    m = pd.read_csv(other / "metrics.csv")
    # seed 1 loses the class NCC rise: its class NCC train accuracy stays at its initial value
    sel = (m.metric == "ncc_accuracy") & (m.split == "train") & (m.hierarchy == "class")
    m.loc[sel, "value"] = m.loc[sel].groupby("layer").value.transform("first")
    m.to_csv(other / "metrics.csv", index=False)
    one = claims_by_epoch(*[get_preset("demo")] + [pd.read_csv(demo_run / f) for f in ("metrics.csv", "train_log.csv",
                                                                                        "randomness.csv")])
    both = seeds_claims_by_epoch([demo_run, other])
    cc = both[both.id == "s4-class-clusters"]
    assert set(one[one.id == "s4-class-clusters"].verdict) == {"not measured", "reproduced"}
    assert set(cc.verdict) == {"not measured", "not reproduced"}
    assert cc[cc.epochs == 15].measured.item().startswith("held in 1 of 2 seeds")


def test_log_epochs_exact():
    assert log_epochs(1) == (0, 1)
    assert log_epochs(15) == (0, 1, 2, 4, 8, 15) == get_preset("demo").analysis_epochs
    assert log_epochs(16) == (0, 1, 2, 4, 8, 16)
    assert log_epochs(24) == (0, 1, 2, 4, 8, 16, 24)
    assert log_epochs(200) == (0, 1, 2, 4, 8, 16, 32, 64, 128, 200)
    assert log_epochs(1000)[-3:] == (256, 512, 1000) and len(log_epochs(1000)) == 12
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="log_epochs needs the last epoch as an int >= 1"):
            log_epochs(bad)


def test_long_presets_validate_and_meet_their_bounds():
    demo, long, gpu = (validate(PRESETS[k]) for k in ("demo", "long", "gpu-long"))
    assert demo.train_subset * demo.epochs == 450_000
    assert long.train_subset * long.epochs >= 4 * 450_000 and long.epochs >= 150 and long.depth >= 5
    assert long.analysis_epochs == log_epochs(long.epochs) and gpu.analysis_epochs == log_epochs(gpu.epochs)
    assert long.mine and gpu.mine and long.method == gpu.method == "vicreg"
    assert (long.optimizer, long.momentum, long.weight_decay) == ("sgd", .9, 1e-6)     # A.3's optimiser family
    assert (gpu.dataset, gpu.train_subset, gpu.depth, gpu.width) == ("fashion_mnist", 0, 10, 250)
    assert (long.eval_train, long.eval_test, long.sample_n) == (demo.eval_train, demo.eval_test, demo.sample_n)
    with pytest.raises(ConfigError, match="analysis_epochs"):
        validate(replace(long, epochs=100))                                          # its grid reaches 200


def test_gpu_long_flop_ratio_used_to_size_it():
    # the arithmetic in nbs/00b_config.ipynb: 4.43 GFLOP per view at 32x32x3, 3.39 at 28x28x1, ratio 0.766
    paper = get_preset("paper")
    f32, f28 = flops_per_view(paper), flops_per_view(replace(paper, dataset="fashion_mnist"))
    assert round(f32 / 1e9, 2) == 4.43 and round(f28 / 1e9, 2) == 3.39 and round(f28 / f32, 3) == 0.766
    assert flops_per_view(replace(get_preset("gpu-long"))) == f28
