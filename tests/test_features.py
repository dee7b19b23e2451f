"""Cross-checks of the any-encoder path (revssl.features + revssl.analysis.measure) against code written apart:
hooks against a hand-written forward pass, the pooling rules, `analyze`'s rows against a reference written as
revssl computed them before `measure` (the model's own `features` method and the metric functions), bad input."""
from dataclasses import replace

import pandas as pd
import pytest
import torch
import torch.nn as nn
import torchvision

from revssl.analysis import analyze, eval_sets, measure
from revssl.augment import normalize
from revssl.config import get_preset
from revssl.datasets import dataset_info, load_dataset
from revssl.features import layer_features, load_encoder, load_weights, pool_output, revssl_layers
from revssl.metrics import cdnv, class_mean_distance, class_variance, ncc_accuracy
from revssl.probes import linear_probe
from revssl.train import load_checkpoint, train
from revssl.models import build_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    x, y = load_dataset("digits", "test")
    return x[:64], y


def test_hooks_equal_a_hand_written_forward(digits):
    x, _ = digits
    m = torchvision.models.resnet18().eval()
    f = layer_features(m, x, ["relu", "layer2", "layer4"], norm=((.3,), (.4,)), batch=20)
    with torch.no_grad():
        h = m.relu(m.bn1(m.conv1(((x.float() / 255 - .3) / .4).expand(-1, 3, -1, -1))))
        l2 = m.layer2(m.layer1(m.maxpool(h)))
        l4 = m.layer4(m.layer3(l2))
    for name, want in (("relu", h), ("layer2", l2), ("layer4", l4)):
        torch.testing.assert_close(f[name], want.mean((2, 3)), rtol=1e-5, atol=1e-5)


def test_pooling_rules():
    t = torch.randn(3, 5, 7)
    assert torch.equal(pool_output(t), t.mean(1)) and torch.equal(pool_output(t, cls_token=True), t[:, 0])
    c = torch.randn(3, 4, 2, 6)
    assert torch.equal(pool_output(c), c.mean((2, 3))) and torch.equal(pool_output(c, "flatten"), c.reshape(3, 48))
    seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    x = torch.randint(0, 255, (4, 1, 8, 8), dtype=torch.uint8)
    f = layer_features(seq, x, ["0"], pool={"0": "flatten"})["0"]
    with torch.no_grad(): torch.testing.assert_close(f, seq(x.float() / 255))


def reference_rows(run, cfg):
    "metrics.csv rows as revssl computed them before `measure`: `features()`, then the metric functions."
    info, sets, out = dataset_info(cfg.dataset), eval_sets(cfg), []
    for ck in sorted((run / "checkpoints").glob("epoch_*.pt")):
        net = build_model(cfg, info.channels, info.hierarchies["class"], info.size)
        net.load_state_dict(load_checkpoint(ck)["model"]); net.eval()
        with torch.no_grad():
            f = {s: net.features(normalize(x, info.mean, info.std) if x.dtype == torch.uint8 else x)
                 for s, (x, _) in sets.items()}
        for layer in range(cfg.depth + 1):
            for tr, te in (("train", "test"), ("sample_train", "sample_test")):
                xtr, xte, ytr, yte = f[tr][layer], f[te][layer], sets[tr][1], sets[te][1]
                lin = linear_probe(xtr, dict(ytr), xte, dict(yte), method=cfg.probe)
                for h, y in ytr.items():
                    vals = [("ncc_accuracy", "train", ncc_accuracy(xtr, y, xtr, y)),
                            ("ncc_accuracy", "test", ncc_accuracy(xtr, y, xte, yte[h])),
                            ("linear_accuracy", "test", float(lin[h])), ("cdnv", "train", cdnv(xtr, y)),
                            ("class_variance", "train", class_variance(xtr, y)),
                            ("class_mean_distance", "train", class_mean_distance(xtr, y))]
                    out += [dict(epoch=int(ck.stem[-4:]), layer=layer, hierarchy=h, target=h, metric=m, split=s,
                                 value=v) for m, s, v in vals]
        for layer in range(cfg.depth + 1):   # the spectra of the train features, from their definitions
            for m, v in (("rankme", rankme(f["train"][layer])), ("participation_ratio", pr(f["train"][layer]))):
                out.append(dict(epoch=int(ck.stem[-4:]), layer=layer, hierarchy="features", target="features", metric=m,
                                split="train", value=v))
    return pd.DataFrame(out)


def rankme(z, eps=1e-7):
    "RankMe (Garrido et al.): exp of the entropy of the normalised singular values (+eps), features not centred."
    s = torch.linalg.svdvals(z.double()); p = s / s.sum() + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))


def pr(z):
    "Participation ratio (Σλ)² / Σλ² of the covariance eigenvalues of the centred features."
    lam = torch.linalg.eigvalsh(torch.cov(z.double().T))
    return float(lam.sum() ** 2 / (lam ** 2).sum())


def test_analyze_rows_equal_the_reference(tmp_path):
    cfg = replace(get_preset("smoke"), device="cpu", epochs=1, analysis_epochs=(0, 1))
    run = tmp_path / "smoke"
    train(cfg, run, progress=False)
    got = analyze(run, progress=False)
    want = reference_rows(run, cfg)
    pd.testing.assert_frame_equal(pd.read_csv(run / "metrics.csv"), got, check_exact=True)
    got, spec = got.reset_index(drop=True), got.hierarchy.eq("features").to_numpy()
    pd.testing.assert_frame_equal(got[~spec].reset_index(drop=True), want[~spec].reset_index(drop=True),
                                  check_exact=True, check_dtype=False)   # the same arithmetic: exactly equal
    pd.testing.assert_frame_equal(got[spec].reset_index(drop=True), want[spec].reset_index(drop=True),
                                  check_exact=False, rtol=1e-4, check_dtype=False)   # float32 vs a float64 reference


def test_revssl_layers_are_the_features_method(digits):
    x, _ = digits
    info = dataset_info("digits")
    for arch in ("res", "resnet18-mini", "vit-mini"):
        net = build_model(replace(get_preset("smoke"), arch=arch), 1, 10, 8).eval()
        got = layer_features(net, x, revssl_layers(net), norm=(info.mean, info.std), batch=25)
        with torch.no_grad(): want = net.features(normalize(x, info.mean, info.std))
        assert all(torch.equal(g, w) for g, w in zip(got.values(), want)), arch


def test_bad_input_is_named(digits, tmp_path):
    x, y = digits
    m = torchvision.models.resnet18()
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \['layer5'\] of ResNet; its named modules are: conv1"):
        layer_features(m, x, ["layer5"])
    lstm = nn.Sequential(nn.Flatten(2), nn.LSTM(64, 4, batch_first=True))
    with pytest.raises(TypeError, match="layer '1' returns a tuple, not a tensor"):
        layer_features(lstm, x, ["1"])
    f = torch.randn(len(x), 3)
    with pytest.raises(ValueError, match=r"train labels must have one entry per image \(64\)"):
        measure(f, {"class": y["class"]}, f, {"class": y["class"][:64]})
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pt")
    with pytest.raises(ValueError, match=r"does not fit torchvision:squeezenet1_0: missing keys \['classifier.1.bias'"):
        load_encoder("torchvision:squeezenet1_0", tmp_path / "r18.pt")
    with pytest.raises(ValueError, match=r"unexpected keys \['bn1.bias', "):
        load_weights(nn.Sequential(nn.Linear(2, 2)), tmp_path / "r18.pt")
