"""revssl.augment against torchvision, the checks too long for the notebook: every pixel of the batched SimCLRAugment
against the functional kernels, edge cases of the colour and blur kernels, the random parameters' distributions, the
per-image reference pipeline and its DataLoader with workers. Quick exact checks (reproducibility, bad input, the
sample-level set, two-view epochs, AutoAugment) are in nbs/04_augment.ipynb, next to the code."""
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from revssl.datasets import DATASETS, IMAGENET_MEAN, IMAGENET_STD
from revssl.augment import (SimCLRAugment, adjust_contrast_batch, adjust_hue_batch, adjust_saturation_batch,
                            gaussian_blur_batch, simclr_transform, torchvision_two_view_loader)


def reference_view(img, p, aug):
    "One view of one image with torchvision's functional kernels, replaying the parameters `p`."
    y = TF.to_dtype(img, torch.float32, scale=True) if img.dtype == torch.uint8 else img.float()
    y = TF.resized_crop(y, int(p.top), int(p.left), int(p.height), int(p.width), [aug.out_size] * 2,
                        antialias=aug.antialias)
    if p.flip: y = TF.horizontal_flip(y)
    if p.jitter:
        fns = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
        facs = (p.brightness, p.contrast, p.saturation, p.hue)
        for o in p.order.tolist(): y = fns[o](y, float(facs[o]))
    if p.gray: y = TF.rgb_to_grayscale(y, num_output_channels=y.shape[0])
    if p.blur: y = TF.gaussian_blur(y, [aug.blur_kernel] * 2, [float(p.sigma)] * 2)
    if p.solarize: y = TF.solarize(y, aug.solarize_threshold)
    return TF.normalize(y, list(aug.mean), list(aug.std))


@pytest.mark.parametrize("shape,out_size,dtype,antialias", [
    ((3, 32, 32), 32, torch.uint8, True),      # CIFAR: every crop is upsampled (grid_sample path)
    ((3, 64, 64), 32, torch.uint8, True),      # Food-101 at 64 viewed at 32: antialiased downscales (matrix path)
    ((3, 64, 64), 32, torch.float32, False),   # downscales without antialiasing
    ((3, 40, 24), 16, torch.float64, True),    # non-square source, float64 input
    ((1, 28, 28), 28, torch.uint8, True),      # Fashion-MNIST
    ((1, 8, 8), 8, torch.uint8, True),         # digits (blur kernel 7)
])
def test_batched_views_equal_torchvision(shape, out_size, dtype, antialias):
    g = torch.Generator().manual_seed(sum(shape) + out_size)
    n = 300  # > 256: several CPU chunks
    imgs = (torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8) if dtype == torch.uint8
            else torch.rand(n, *shape, generator=g, dtype=dtype))
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if shape[0] == 3 else ((0.3,), (0.35,))
    aug = SimCLRAugment(out_size, mean, std, antialias=antialias)
    p = aug.sample_params(n, *shape[1:], generator=g)
    out = aug.apply(imgs, p)
    assert out.dtype == torch.float32 and out.shape == (n, shape[0], out_size, out_size)
    err = max((out[b] - reference_view(imgs[b], p[b], aug)).abs().max().item() for b in range(n))
    assert err < 1e-4, err
    # every random step actually happened somewhere in this batch
    for k in ("flip", "jitter", "gray", "blur", "solarize"): assert getattr(p, k).any()


def test_hue_edge_cases():
    "Hue shifts of +-0.5 and 0, gray pixels, and ties between the maximal channels."
    x = torch.rand(6, 3, 9, 9, generator=torch.Generator().manual_seed(0))
    x[0] = x[0, :1]                  # gray
    x[1, 1] = x[1, 0]                # r == g
    x[2, 2] = x[2, 1]                # g == b
    x[3, 2] = x[3, 0]                # r == b
    x[4, :, :3] = 0; x[4, :, 3:6] = 1
    f = torch.tensor([0.5, -0.5, 0.0, 0.25, -0.5, 0.1])
    out = adjust_hue_batch(x, f)
    for b in range(6):
        torch.testing.assert_close(out[b], TF.adjust_hue(x[b], float(f[b])), atol=2e-6, rtol=0)
    torch.testing.assert_close(adjust_hue_batch(x, torch.zeros(6)), x, atol=2e-6, rtol=0)  # no shift: identity


def test_colour_ops_extremes():
    x = torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    x[3] = 0.5  # constant image
    f = torch.tensor([0.0, 1.0, 1.4, 0.6])
    for ours, ref in ((adjust_contrast_batch, TF.adjust_contrast), (adjust_saturation_batch, TF.adjust_saturation)):
        out = ours(x, f)
        for b in range(4): torch.testing.assert_close(out[b], ref(x[b], float(f[b])), atol=1e-6, rtol=0)


def test_blur_large_kernel_and_non_square():
    x = torch.rand(5, 3, 12, 20, generator=torch.Generator().manual_seed(2))
    sig = torch.tensor([0.1, 0.5, 1.0, 2.0, 5.0])
    out = gaussian_blur_batch(x, 23, sig)
    for b in range(5):
        torch.testing.assert_close(out[b], TF.gaussian_blur(x[b], [23, 23], [float(sig[b])] * 2), atol=1e-5, rtol=0)


def _tv_crops(n, h, w, scale=(0.08, 1.0), seed=0):
    torch.manual_seed(seed)
    t, img = v2.RandomResizedCrop(8, scale=scale), torch.zeros(1, h, w)
    r = [t.make_params([img]) for _ in range(n)]
    return {k: np.array([d[k] for d in r]) for k in ("top", "left", "height", "width")}


@pytest.mark.parametrize("h,w", [(32, 32), (28, 40)])
def test_crop_distribution_matches_torchvision(h, w):
    n = 20000
    p = SimCLRAugment(8, IMAGENET_MEAN, IMAGENET_STD).sample_params(n, h, w, torch.Generator().manual_seed(h + w))
    ours = {k: getattr(p, k).numpy() for k in ("top", "left", "height", "width")}
    ref = _tv_crops(n, h, w, seed=h * w)
    derived = lambda d: {"area": d["height"] * d["width"] / (h * w), "log-ratio": np.log(d["width"] / d["height"]),
                         "top": d["top"], "left": d["left"], "centre-y": d["top"] + d["height"] / 2,
                         "centre-x": d["left"] + d["width"] / 2}
    a, b = derived(ours), derived(ref)
    for k in a:
        assert stats.ks_2samp(a[k], b[k]).pvalue > 1e-3, k
        # and the means agree to within 4 standard errors
        se = math.sqrt(a[k].var() / n + b[k].var() / n)
        assert abs(a[k].mean() - b[k].mean()) < 4 * se, k
    assert (ours["height"] <= h).all() and (ours["width"] <= w).all() and (ours["top"] + ours["height"] <= h).all()


def test_crop_fallback_matches_torchvision():
    "No attempt can fit: torchvision's central crop with the ratio clamped, exactly."
    for h, w in ((10, 40), (40, 10), (30, 30)):
        p = SimCLRAugment(8, IMAGENET_MEAN, IMAGENET_STD, scale=(1.5, 2.0)).sample_params(3, h, w)
        ref = _tv_crops(1, h, w, scale=(1.5, 2.0))
        for k in ("top", "left", "height", "width"): assert getattr(p, k).tolist() == [int(ref[k][0])] * 3, (h, w, k)


def test_jitter_blur_and_apply_frequencies():
    n = 40000
    aug = SimCLRAugment(32, IMAGENET_MEAN, IMAGENET_STD)
    p = aug.sample_params(n, 32, 32, torch.Generator().manual_seed(11))
    torch.manual_seed(12)
    img = torch.zeros(3, 32, 32)
    cj = v2.ColorJitter(0.4, 0.4, 0.2, 0.1)
    ref = [cj.make_params([img]) for _ in range(n // 4)]
    for k in ("brightness", "contrast", "saturation", "hue"):
        assert stats.ks_2samp(getattr(p, k).numpy(), [r[f"{k}_factor"] for r in ref]).pvalue > 1e-3, k
    gb = v2.GaussianBlur(23, (0.1, 2.0))
    assert stats.ks_2samp(p.sigma.numpy(), [gb.make_params([img])["sigma"][0] for _ in range(n // 4)]).pvalue > 1e-3
    # random order of the four jitter operations: uniform over the 24 permutations, as torch.randperm(4)
    _, counts = np.unique(p.order.numpy(), axis=0, return_counts=True)
    assert len(counts) == 24 and stats.chisquare(counts).pvalue > 1e-3
    for k, prob in (("flip", .5), ("jitter", .8), ("gray", .2), ("blur", .5), ("solarize", .1)):
        freq = getattr(p, k).double().mean().item()
        assert abs(freq - prob) < 4 * math.sqrt(prob * (1 - prob) / n), (k, freq)
    # the decisions are independent of each other (e.g. blur does not depend on gray)
    table = np.histogram2d(p.gray.numpy(), p.blur.numpy(), bins=2)[0]
    assert stats.chi2_contingency(table).pvalue > 1e-3


def test_simclr_transform_is_the_same_distribution():
    "The per-image torchvision reference and the batched module give views with the same pixel statistics."
    x = torch.randint(0, 256, (1, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    x = x.expand(3000, -1, -1, -1).contiguous()
    ours = SimCLRAugment(32, IMAGENET_MEAN, IMAGENET_STD)(x, torch.Generator().manual_seed(0))
    t = simclr_transform(32, IMAGENET_MEAN, IMAGENET_STD)
    torch.manual_seed(0)
    ref = torch.stack([t(img) for img in x])
    for stat in (lambda v: v.mean((1, 2, 3)), lambda v: v.std((1, 2, 3)), lambda v: v[:, 0, 16, 16]):
        assert stats.ks_2samp(stat(ours).numpy(), stat(ref).numpy()).pvalue > 1e-3


def test_torchvision_loader_reproducible_with_workers():
    x = torch.randint(0, 256, (24, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    info = DATASETS["fashion_mnist"]
    run = lambda seed: [torch.cat(b) for b in torchvision_two_view_loader(x, 8, 28, info.mean, info.std, 2, seed)]
    a, b, c = run(0), run(0), run(1)
    assert len(a) == 3 and a[0].shape == (16, 1, 28, 28)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])