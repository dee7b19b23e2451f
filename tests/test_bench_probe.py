"""bench/probe.py --paper-size, its pure helpers on tiny inputs: LinearSVC's one-vs-rest column c is the binary fit of
c against the rest (so a class subset is compared exactly), the fast scores reproduce `linear_probe(method='fast')`,
the subset accuracy and the timed class subset give exact values, and bad options fail before any work."""
import argparse, importlib.util, sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.svm import LinearSVC

from revssl.probes import linear_probe, _standardise

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_probe", ROOT / "bench" / "probe.py")
bp = importlib.util.module_from_spec(_spec)
sys.modules["bench_probe"] = bp
_spec.loader.exec_module(bp)


def tiny(seed=0, d=6, classes=10):
    "Tiny paper-shaped features: 10 classes in superclasses of 5, 12 sample-level images."
    return bp.paper_size_features(d=d, classes=classes, group=5, n_train=400, n_test=200, ids=12, views_train=10,
                                  views_test=4, latent=4, seed=seed)


def test_features_shapes_and_labels():
    f = tiny()
    x_tr, ys_tr, x_te, ys_te = f["images"]
    assert x_tr.shape == (400, 6) and x_te.shape == (200, 6) and x_tr.dtype == torch.float32
    assert torch.equal(ys_tr["superclass"], ys_tr["class"] // 5) and torch.equal(torch.bincount(ys_tr["class"]),
                                                                                 torch.full((10,), 40))
    xs_tr, ss_tr, xs_te, ss_te = f["sample"]
    assert xs_tr.shape == (120, 6) and xs_te.shape == (48, 6)
    assert torch.equal(torch.bincount(ss_tr["sample"]), torch.full((12,), 10))
    assert torch.equal(torch.bincount(ss_te["sample"]), torch.full((12,), 4))
    assert torch.equal(tiny()["images"][0], x_tr) and not torch.equal(tiny(seed=1)["images"][0], x_tr)


def test_svc_column_is_the_binary_fit():
    x_tr, ys_tr, x_te, ys_te = tiny()["images"]
    a, b = (z.numpy() for z in _standardise(x_tr, x_te))
    y = ys_tr["class"].numpy()
    full = LinearSVC(C=1.0, dual="auto", random_state=0).fit(a, y).decision_function(b)
    S, secs = bp.svc_scores(a, b, y, [7, 2])
    assert S.shape == (200, 2) and len(secs) == 2 and min(secs) > 0
    np.testing.assert_allclose(S.numpy(), full[:, [7, 2]], rtol=0, atol=1e-9)
    S_all, _ = bp.svc_scores(a, b, y, list(range(10)))
    acc = bp.subset_accuracy(S_all, ys_te["class"], torch.arange(10))[0]
    assert acc == linear_probe(x_tr, ys_tr["class"], x_te, ys_te["class"], method="linearsvc")


def test_fast_scores_reproduce_linear_probe():
    x_tr, ys_tr, x_te, ys_te = tiny()["images"]
    S, spans = bp.fast_scores(x_tr, ys_tr, x_te)
    assert S.shape == (200, 12) and [(n, j0, j1) for n, j0, j1, _ in spans] == [("class", 0, 10),
                                                                                  ("superclass", 10, 12)]
    ref = linear_probe(x_tr, ys_tr, x_te, ys_te, method="fast")
    for n, j0, j1, _ in spans:
        assert bp.subset_accuracy(S[:, j0:j1], ys_te[n], torch.arange(j1 - j0))[0] == ref[n]


def test_subset_accuracy_exact():
    scores = torch.tensor([[1., 0.], [0., 1.], [2., 3.], [5., 4.], [9., 9.5]])   # columns of classes 3 and 1
    y = torch.tensor([3, 3, 1, 0, 1])                                             # row 3 (class 0) is left out
    acc, pred = bp.subset_accuracy(scores, y, torch.tensor([3, 1]))
    assert torch.equal(pred, torch.tensor([3, 1, 1, 1])) and acc == 0.75
    with pytest.raises(ValueError, match="no test row has a label among the 2 chosen classes"):
        bp.subset_accuracy(scores, torch.tensor([0, 0, 2, 2, 4]), torch.tensor([3, 1]))


def test_class_order_and_subset():
    order = bp.class_order(100, seed=3)
    assert sorted(order.tolist()) == list(range(100)) and not torch.equal(bp.class_order(100, seed=4), order)
    assert torch.equal(bp.svc_subset(order, 1.0, 1000.), order)              # budget for all: every class
    assert torch.equal(bp.svc_subset(order, 2.0, 25.), order[:12])           # 25 s / 2 s: 12 columns, pilot first
    assert torch.equal(bp.svc_subset(order, 50., 1.), order[:2])             # never fewer than 2


def test_rows_full_and_subsampled():
    x_tr, ys_tr, x_te, ys_te = tiny()["images"]
    opts = lambda budget: argparse.Namespace(solver="auto", tol=None, svc_budget=budget, seed=0)
    full = bp.paper_size_rows("tiny", x_tr, ys_tr, x_te, ys_te, opts(1e6), torch.device("cpu"), lambda: None)
    fast = linear_probe(x_tr, ys_tr, x_te, ys_te, method="fast")
    for r in full:
        assert r["k"] == r["K"] and r["M"] == 200 and r["solver"] == "newton"
        assert r["acc_s"] == linear_probe(x_tr, ys_tr[r["target"]], x_te, ys_te[r["target"]], method="linearsvc")
        assert r["acc_f"] == r["acc_all"] == fast[r["target"]]
    sub = bp.paper_size_rows("tiny", x_tr, ys_tr, x_te, ys_te, opts(1e-9), torch.device("cpu"), lambda: None)
    assert [(r["k"], r["M"]) for r in sub] == [(2, 40), (2, 200)]               # 2 of 10 classes: 40 test rows


@pytest.mark.parametrize("argv, msg", [(["--paper-size", "--synthetic"], "drop --cache/--synthetic"),
                                       (["--paper-size", "--C", "holdout"], "drop --C"),
                                       (["--paper-size", "--svc-budget", "0"], "--svc-budget must be positive"),
                                       ([], "give --cache FILE, --synthetic or --paper-size")])
def test_bad_options(argv, msg, capsys):
    with pytest.raises(SystemExit):
        bp.main(argv)
    assert msg in capsys.readouterr().err
