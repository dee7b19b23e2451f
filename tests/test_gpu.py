"""CUDA checks any machine with a CUDA GPU can run in minutes: plain pytest, no nbdev, skipped without CUDA.

    PYTHONPATH=. python -m pytest -q -m gpu tests/test_gpu.py

Every check compares the GPU with the CPU (or the graphed step with the eager one) on the same inputs: the losses,
the augmentation, the metrics, the fast probe, 20 graphed training steps against 20 eager ones, and resume on CUDA.
Needs torch, torchvision, numpy, pandas, scikit-learn, matplotlib and tqdm (revssl's training loop shows a bar).
"""
import csv
import warnings
from dataclasses import fields, replace

import pytest
import torch

from revssl.augment import AugParams, SimCLRAugment, as_draws, draw_uniforms
from revssl.config import get_preset
from revssl.datasets import IMAGENET_MEAN, IMAGENET_STD
from revssl.distributed import setup_distributed
from revssl.losses import ssl_loss
from revssl.metrics import cdnv, class_mean_distance, class_variance, ncc_accuracy
from revssl.probes import linear_probe
from revssl.train import build_run, load_checkpoint, train, train_step

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda")
BF16_RTOL = 2e-2      # bf16 keeps 8 bits of mantissa (relative step 2**-8 = 0.004); 20 steps of training compound it


def tensors(seed, *shapes):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g) for s in shapes]


@pytest.mark.parametrize("method", ["vicreg", "simclr", "barlow"])
def test_losses_cuda_equal_cpu(method):
    z1, z2 = tensors(0, (64, 32), (64, 32))
    cpu, gpu = ssl_loss(method, z1, z2), ssl_loss(method, z1.to(CUDA), z2.to(CUDA))
    assert gpu._fields == cpu._fields
    for name, a, b in zip(cpu._fields, cpu, gpu):
        assert b.device.type == "cuda"
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("channels, size", [(3, 32), (1, 28), (3, 64)])
def test_augment_same_params_same_views(channels, size):
    "One set of parameters gives the same views on CUDA as on the CPU, eager or sync-free (the graphed step's path)."
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.3,), (0.3,))
    aug = SimCLRAugment(32, mean, std)
    x = torch.randint(0, 256, (96, channels, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    p = aug.sample_params(96, size, size, torch.Generator().manual_seed(2))
    ref = aug.apply(x, p)
    for sync_free in (False, True):
        torch.testing.assert_close(aug.apply(x.to(CUDA), p.to(CUDA), sync_free=sync_free).cpu(), ref,
                                   rtol=0, atol=1e-4)


def test_augment_draws_on_the_cuda_generator():
    "Parameters drawn on a CUDA generator are decided on the GPU as on the CPU; a reused buffer equals a fresh draw."
    aug = SimCLRAugment(32, IMAGENET_MEAN, IMAGENET_STD)
    g1, g2 = torch.Generator(CUDA).manual_seed(3), torch.Generator(CUDA).manual_seed(3)
    buf = draw_uniforms(None, 500, CUDA)
    d = draw_uniforms(g1, 500, out=buf)
    torch.testing.assert_close(d.table, draw_uniforms(g2, 500).table, rtol=0, atol=0)
    on_gpu, on_cpu = aug.params_of(d, 32, 32), aug.params_of(as_draws(d.table.cpu()), 32, 32)
    for f in fields(AugParams):
        a, b = getattr(on_gpu, f.name).cpu(), getattr(on_cpu, f.name)
        if a.is_floating_point(): torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=f.name)
        else: assert torch.equal(a, b), f.name
    x = torch.randint(0, 256, (500, 3, 32, 32), dtype=torch.uint8, device=CUDA)
    v = aug.apply(x, on_gpu, sync_free=True)
    assert v.shape == (500, 3, 32, 32) and torch.isfinite(v).all()


def test_metrics_cuda_equal_cpu():
    x, = tensors(4, (600, 20))
    y = torch.arange(600) % 6
    x = x + 2.0 * torch.nn.functional.one_hot(y, 20).float()
    for fn in (cdnv, class_variance, class_mean_distance):
        assert fn(x.to(CUDA), y.to(CUDA)) == pytest.approx(fn(x, y), rel=1e-5), fn.__name__
    assert ncc_accuracy(x[:400].to(CUDA), y[:400].to(CUDA), x[400:].to(CUDA), y[400:].to(CUDA)) == pytest.approx(
        ncc_accuracy(x[:400], y[:400], x[400:], y[400:]), abs=1 / 200)


def test_fast_probe_cuda_equal_cpu():
    x, = tensors(5, (900, 16))
    ys = {"class": torch.arange(900) % 5, "parity": torch.arange(900) % 2}
    x = x + 1.5 * torch.nn.functional.one_hot(ys["class"], 16).float()
    tr, te = slice(0, 600), slice(600, 900)
    cpu = linear_probe(x[tr], {k: v[tr] for k, v in ys.items()}, x[te], {k: v[te] for k, v in ys.items()}, "fast")
    gpu = linear_probe(x[tr].to(CUDA), {k: v[tr].to(CUDA) for k, v in ys.items()}, x[te].to(CUDA),
                       {k: v[te].to(CUDA) for k, v in ys.items()}, "fast")
    assert set(gpu) == set(cpu)
    for k in cpu: assert abs(gpu[k] - cpu[k]) <= 2 / 300, (k, gpu[k], cpu[k])


def smoke(method="vicreg", **kw):
    "The smoke preset on CUDA (digits, RES-2-32); supervised runs without augmentation."
    extra = dict(augment="none") if method == "supervised" else {}
    return replace(get_preset("smoke"), device="cuda", method=method, **extra, **kw)


def steps(cfg, out, n):
    "The loss terms of the first `n` optimiser steps of a fresh run of `cfg` (and the run)."
    d = setup_distributed(cfg)[0]
    r = build_run(cfg, out, False, d, CUDA)
    terms = []
    while len(terms) < n:
        if r.perm is None: r.perm = torch.randperm(len(r.images), generator=r.gen, device=r.device)
        for s in range(r.steps):
            if len(terms) == n: break
            t = train_step(r, r.perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]); r.sched.step()
            terms.append({k: float(v) for k, v in t.items()})
        r.perm = None
    return terms, r


@pytest.mark.parametrize("method", ["vicreg", "simclr", "supervised"])
def test_graphed_steps_follow_eager_steps(method, tmp_path):
    "20 steps replayed from one CUDA graph log the losses of 20 eager steps from the same start, within bf16 rounding."
    eager, _ = steps(smoke(method), tmp_path / "eager", 20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                            # a failed capture must not pass silently here
        graphed, r = steps(smoke(method, cuda_graph=True), tmp_path / "graphed", 20)
    assert r.graph is not None and r.graph.failed is None and r.graph.replay is not None
    assert r.graph.calls == 20
    for i, (a, b) in enumerate(zip(eager, graphed)):
        assert b.keys() == a.keys()
        for k in a: assert b[k] == pytest.approx(a[k], rel=BF16_RTOL, abs=1e-3), (i, k, a[k], b[k])


def read_log(run):
    with open(run / "train_log.csv") as f: return [{k: v for k, v in r.items() if k not in ("time_s", "views_per_s")}
                                                   for r in csv.DictReader(f)]


@pytest.mark.parametrize("graph", [False, True])
def test_resume_on_cuda(graph, tmp_path):
    "2 epochs + resume + 2 epochs = 4 epochs straight, on CUDA, eager and graphed (up to the GPU's reduction order)."
    cfg = smoke(cuda_graph=graph)
    train(cfg, tmp_path / "straight", progress=False)
    train(cfg, tmp_path / "halves", until=2, progress=False)
    assert load_checkpoint(tmp_path / "halves" / "checkpoints" / "last.pt")["epoch"] == 2
    train(cfg, tmp_path / "halves", resume=True, progress=False)
    a, b = read_log(tmp_path / "straight"), read_log(tmp_path / "halves")
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] == ["1", "2", "3", "4"]
    for x, y in zip(a, b):
        for k in x: assert float(y[k]) == pytest.approx(float(x[k]), rel=1e-3, abs=1e-5), (x["epoch"], k)
    wa, wb = (load_checkpoint(tmp_path / r / "checkpoints" / "epoch_0004.pt")["model"] for r in ("straight", "halves"))
    for k in wa: torch.testing.assert_close(wb[k].float(), wa[k].float(), rtol=1e-2, atol=1e-3, msg=k)
