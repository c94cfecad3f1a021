"""Batched image augmentations: torchvision semantics, identities, batch == per-sample, MoCo-v2 recipe."""
from __future__ import annotations

import time

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import RandomResizedCrop

from avssl.augment import apply as AP
from avssl.augment import image as I
from avssl.augment import recipes as R


def _images(b: int = 5, h: int = 20, w: int = 28, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


FACTORS = torch.tensor([0.6, 1.3, 0.9, 1.4, 1.0])
HUES = torch.tensor([-0.1, 0.05, 0.0, 0.3, -0.45])


@pytest.mark.parametrize("ours,ref,fac", [
    (I.adjust_brightness, TF.adjust_brightness, FACTORS),
    (I.adjust_contrast, TF.adjust_contrast, FACTORS),
    (I.adjust_saturation, TF.adjust_saturation, FACTORS),
    (I.adjust_hue, TF.adjust_hue, HUES),
])
def test_colour_ops_match_torchvision_per_sample(ours, ref, fac):
    x = _images()
    expected = torch.stack([ref(x[i], float(fac[i])) for i in range(len(fac))])
    torch.testing.assert_close(ours(x, fac), expected, atol=1e-5, rtol=0)


def test_hue_out_of_range_keeps_torchvision_quirk():
    """Gray out-of-range input (EquiAV's normalised fbank): the V channel is not clamped, the others are."""
    x = torch.randn(4, 1, 8, 10, generator=torch.Generator().manual_seed(1)).mul(2).expand(4, 3, 8, 10)
    hue = torch.tensor([0.05, -0.05, 0.1, -0.1])
    expected = torch.stack([TF.adjust_hue(x[i], float(hue[i])) for i in range(4)])
    torch.testing.assert_close(I.adjust_hue(x, hue), expected, atol=1e-6, rtol=0)
    assert expected.max() > 1.0  # the quirk really is exercised


def test_rgb_hsv_roundtrip():
    x = _images()
    torch.testing.assert_close(I.hsv_to_rgb(I.rgb_to_hsv(x)), x, atol=1e-5, rtol=0)


def test_colour_jitter_identity_factors():
    x = _images()
    factors = torch.tensor([[1.0, 1.0, 1.0, 0.0]]).repeat(5, 1)
    order = torch.rand(5, 4, generator=torch.Generator().manual_seed(2)).argsort(1)
    torch.testing.assert_close(I.color_jitter(x, factors, order, torch.ones(5, dtype=torch.bool)), x,
                               atol=1e-5, rtol=0)


def test_colour_jitter_follows_each_samples_order_and_enabled():
    x = _images()
    g = torch.Generator().manual_seed(3)
    factors, order = R.sample_jitter(5, g)
    enabled = torch.tensor([True, True, False, True, True])
    out = I.color_jitter(x, factors, order, enabled)
    refs = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for i in range(5):
        y = x[i]
        if enabled[i]:
            for op in order[i].tolist():
                y = refs[op](y, float(factors[i, op]))
        torch.testing.assert_close(out[i], y, atol=1e-5, rtol=0)
    # a different order gives a different result (ops do not commute)
    flipped = I.color_jitter(x, factors, order.flip(1), enabled)
    assert (flipped[enabled] - out[enabled]).abs().max() > 1e-3


def test_resized_crop_matches_crop_then_interpolate():
    x = _images()
    boxes = torch.tensor([[2.0, 3, 10, 15], [0, 0, 20, 28], [5, 1, 7, 27], [0, 0, 3, 3], [10, 10, 10, 18]])
    out = I.resized_crop(x, boxes, (16, 12))
    expected = torch.stack([TF.resized_crop(x[i], *[int(v) for v in boxes[i]], [16, 12], antialias=False)
                            for i in range(5)])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_resized_crop_full_box_is_identity():
    x = _images()
    boxes = torch.tensor([[0.0, 0.0, 20.0, 28.0]]).repeat(5, 1)
    torch.testing.assert_close(I.resized_crop(x, boxes, (20, 28)), x, atol=1e-5, rtol=0)


def test_sample_resized_crop_valid_and_distribution():
    g = torch.Generator().manual_seed(4)
    b = I.sample_resized_crop(20000, 60, 80, g, scale=(0.3, 1.0))
    top, left, h, w = b.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 60).all() and (left + w <= 80).all()
    assert torch.equal(b, b.round())
    area = h * w / (60 * 80)
    # rounding can push the area slightly past the range; the bulk lies inside it
    assert area.min() > 0.27 and area.max() <= 1.0
    # same distribution as torchvision's sampler (moments of 4000 of its draws)
    torch.manual_seed(0)
    ref = torch.tensor([RandomResizedCrop.get_params(torch.zeros(1, 60, 80), [0.3, 1.0], [3 / 4, 4 / 3])
                        for _ in range(4000)], dtype=torch.float32)
    for k, tol in [(0, 1.0), (1, 1.0), (2, 1.0), (3, 1.0)]:
        assert abs(b[:, k].mean() - ref[:, k].mean()) < tol, k
    assert abs(area.mean() - (ref[:, 2] * ref[:, 3] / 4800).mean()) < 0.015
    r = w / h
    assert r.min() > 0.7 and r.max() < 1.4


def test_sample_resized_crop_fallback_centre_crop():
    # a 10x1000 image cannot hold a 3/4-4/3 box of >= 50% area: every sample takes the fallback
    b = I.sample_resized_crop(8, 10, 1000, torch.Generator().manual_seed(0), scale=(0.5, 1.0))
    assert torch.equal(b, torch.tensor([[0.0, (1000 - 13) // 2, 10, 13]]).repeat(8, 1))


def test_antialiased_crop_is_pils_crop_then_bilinear_resize():
    """torchvision's RandomResizedCrop on a PIL frame is ``crop(box).resize(S, BILINEAR)``; the
    antialiased path reproduces it within PIL's uint8 rounding, the plain one does not on shrinks."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    frame = (rng.random((180, 320, 3)) * 255).astype(np.uint8)
    boxes = I.sample_resized_crop(6, 180, 320, torch.Generator().manual_seed(1), scale=(0.08, 1.0))
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float().div(255).expand(6, -1, -1, -1)
    refs = np.stack([np.asarray(Image.fromarray(frame).crop((x0, y0, x0 + w, y0 + h)).resize((40, 40), Image.BILINEAR))
                     for y0, x0, h, w in boxes.long().tolist()]).astype(np.float64)
    ours = I.resized_crop(x, boxes, 40, antialias=True).permute(0, 2, 3, 1).double().numpy() * 255
    plain = I.resized_crop(x, boxes, 40).permute(0, 2, 3, 1).double().numpy() * 255
    assert np.abs(ours - refs).max() <= 1.0
    assert np.abs(plain - refs).max() > 20


def test_antialiased_crop_reads_nothing_outside_the_box_or_frame():
    # a white frame in the top-left corner of a zero canvas: any crop of it stays white
    canvas = torch.zeros(3, 3, 50, 70)
    sizes = torch.tensor([[50, 70], [30, 44], [17, 60]])
    for i, (h, w) in enumerate(sizes.tolist()):
        canvas[i, :, :h, :w] = 1.0
    boxes = I.sample_resized_crop(3, sizes[:, 0], sizes[:, 1], torch.Generator().manual_seed(3))
    torch.testing.assert_close(I.resized_crop(canvas, boxes, 24, antialias=True), torch.ones(3, 3, 24, 24))
    with pytest.raises(ValueError, match="bilinear"):
        I.resized_crop(canvas, boxes, 24, mode="nearest", antialias=True)


def test_sample_resized_crop_per_sample_sizes():
    """Each row of a mixed-size draw is the draw for that row's own size: the stream does not
    depend on the sizes (so rows drawn for another rank's frames can be dropped)."""
    sizes = torch.tensor([[60, 80], [480, 640], [10, 1000], [299, 299]])
    mixed = I.sample_resized_crop(4, sizes[:, 0], sizes[:, 1], torch.Generator().manual_seed(9))
    for i, (h, w) in enumerate(sizes.tolist()):
        alone = I.sample_resized_crop(4, h, w, torch.Generator().manual_seed(9))
        assert torch.equal(mixed[i], alone[i]), (i, h, w)
    top, left, h, w = mixed.unbind(1)
    assert (top + h <= sizes[:, 0]).all() and (left + w <= sizes[:, 1]).all()


def test_moco_on_original_frames_of_mixed_sizes():
    """With each frame's size, the crop is drawn on that frame alone: over many draws it reaches
    the sides a centre crop would cut, and never the zero padding."""
    t = R.MoCoV2Transform(size=16, jitter_p=0.0, gray_p=0.0, blur_p=0.0, flip_p=0.0, antialias=True)
    canvas = torch.zeros(64, 3, 40, 120, dtype=torch.uint8)
    canvas[:32, :, :40, :120] = 255
    canvas[32:, :, :40, :60] = 255
    sizes = torch.tensor([[40, 120]] * 32 + [[40, 60]] * 32)
    out = t(canvas, torch.Generator().manual_seed(0), sizes=sizes)
    torch.testing.assert_close(out, I.normalize(torch.ones(64, 3, 16, 16)))
    p = t.sample(64, sizes[:, 0], sizes[:, 1], torch.Generator().manual_seed(0))
    top, left, h, w = p.boxes.unbind(1)
    wide = slice(0, 32)
    assert (left[wide] < 40).any() and (left[wide] + w[wide] > 80).any()  # beyond the central 40x40
    assert (left[32:] + w[32:] <= 60).all()


def test_blur_matches_torchvision_and_enabled():
    x = _images()
    sigma = torch.tensor([0.5, 1.0, 2.0, 0.1, 1.5])
    out = I.gaussian_blur(x, sigma, None, "3sigma", "reflect")
    expected = torch.stack([TF.gaussian_blur(x[i], [2 * int(torch.ceil(3 * sigma[i])) + 1] * 2,
                                             [float(sigma[i])] * 2) for i in range(5)])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    enabled = torch.tensor([False, True, False, True, False])
    part = I.gaussian_blur(x, sigma, enabled)
    assert torch.equal(part[~enabled], x[~enabled])
    assert not torch.allclose(part[enabled], x[enabled])
    # 1-sigma rule: kernel 2*ceil(sigma)+1 = 5 taps for sigma 1.5
    one = I.gaussian_blur(x[:1], torch.tensor([1.5]), None, "1sigma", "reflect")
    torch.testing.assert_close(one[0], TF.gaussian_blur(x[0], [5, 5], [1.5, 1.5]), atol=1e-5, rtol=0)


def test_flip_gray_normalize():
    x = _images()
    on = torch.tensor([True, False, True, False, True])
    f = I.hflip(x, on)
    assert torch.equal(f[on], x[on].flip(-1)) and torch.equal(f[~on], x[~on])
    assert torch.equal(I.hflip(f, on), x)
    g = I.to_grayscale(x, on)
    torch.testing.assert_close(g[on], TF.rgb_to_grayscale(x[on], 3), atol=1e-6, rtol=0)
    assert torch.equal(g[~on], x[~on])
    n = I.normalize(x)
    torch.testing.assert_close(n, TF.normalize(x, I.IMAGENET_MEAN, I.IMAGENET_STD), atol=1e-6, rtol=0)


def test_moco_batched_equals_per_sample_and_deterministic():
    t = R.MoCoV2Transform(size=24, blur_p=0.7)
    x = (_images(6, 32, 40) * 255).to(torch.uint8)
    p = t.sample(6, 32, 40, torch.Generator().manual_seed(5))
    batched = t.apply(x, p)
    for i in range(6):
        torch.testing.assert_close(batched[i:i + 1], t.apply(x[i:i + 1], p.select(slice(i, i + 1))),
                                   atol=1e-5, rtol=0)
    a = t(x, torch.Generator().manual_seed(7))
    b = t(x, torch.Generator().manual_seed(7))
    c = t(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_moco_shape_stats_and_speed():
    t = R.MoCoV2Transform()
    x = (torch.rand(32, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    g = torch.Generator().manual_seed(0)
    t(x[:2], g)
    start = time.perf_counter()
    y = t(x, g)
    elapsed = time.perf_counter() - start
    print(f"MoCoV2Transform 32x3x256x256 -> 224: {elapsed * 1000:.0f} ms")
    assert y.shape == (32, 3, 224, 224) and y.dtype == torch.float32
    # de-normalised values lie in [0, 1]
    m = torch.tensor(I.IMAGENET_MEAN).view(1, 3, 1, 1)
    s = torch.tensor(I.IMAGENET_STD).view(1, 3, 1, 1)
    raw = y * s + m
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    # uniform noise has per-channel mean ~0.5 after the recipe (jitter moves it a little)
    assert abs(raw.mean().item() - 0.5) < 0.1
    assert elapsed < 10.0  # loose: shared 2-core CPU; see benchmarks/bench_augment.py


def test_eval_transform_matches_torchvision():
    x = _images(3, 30, 40)
    out = R.EvalTransform(size=16)(x)
    tv = TF.center_crop(TF.resize(x, 16, interpolation=TF.InterpolationMode.BICUBIC, antialias=True), 16)
    expected = TF.normalize(tv.clamp(0, 1), I.IMAGENET_MEAN, I.IMAGENET_STD)
    assert out.shape == (3, 3, 16, 16)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)
    # already the right size: only normalisation
    torch.testing.assert_close(R.EvalTransform(size=30)(x[..., :30, :30]), I.normalize(x[..., :30, :30]))


# ----------------------------------------------------------------------------- EquiAV visual vectors
def _visual_reference(x: torch.Tensor, t: torch.Tensor, out: int) -> torch.Tensor:
    """Per-sample torchvision tensor pipeline for one (3, H, W) frame, blur off (PIL edges differ)."""
    h, w = x.shape[-2:]
    box = [round(float(t[1]) * h), round(float(t[2]) * w), round(float(t[3]) * h), round(float(t[4]) * w)]
    y = TF.resized_crop(x, *box, [out, out], antialias=False)
    if t[5]:
        ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
        for op in t[6:10].long().tolist():
            y = ops[op](y, float(t[10 + op]) + (1.0 if op < 3 else 0.0))
    if t[16]:
        y = y.flip(-1)
    if t[17]:
        y = TF.rgb_to_grayscale(y, 3)
    return TF.normalize(y, I.IMAGENET_MEAN, I.IMAGENET_STD)


def test_apply_visual_matches_reference_and_batch():
    from avssl.augment import params as P

    x = _images(8, 40, 50, seed=3)
    t = P.sample_visual_params(8, torch.Generator().manual_seed(11), 40, 50)
    no_blur = t.clone()
    no_blur[:, P.VisualSlot.BLUR_ON] = 0
    y = AP.apply_visual(x, no_blur, out_size=24)
    for i in range(8):
        torch.testing.assert_close(y[i], _visual_reference(x[i], no_blur[i], 24), atol=1e-4, rtol=0)
    yb = AP.apply_visual(x, t, out_size=24)
    assert not torch.allclose(yb[t[:, P.VisualSlot.BLUR_ON] == 1], y[t[:, P.VisualSlot.BLUR_ON] == 1])
    for i in range(8):
        torch.testing.assert_close(yb[i:i + 1], AP.apply_visual(x[i:i + 1], t[i:i + 1], out_size=24),
                                   atol=1e-5, rtol=0)


def test_apply_visual_identity_flip_and_extended():
    from avssl.augment import params as P

    x = _images(3, 24, 24)
    torch.testing.assert_close(AP.apply_visual(x, P.identity_visual_params(3), out_size=24), I.normalize(x))
    torch.testing.assert_close(AP.apply_visual(x, P.identity_visual_params(3, extended=True), out_size=24),
                               I.normalize(x))
    t = P.identity_visual_params(3, extended=True)
    t[:, P.VisualSlot.HFLIP] = 1
    t[:, P.VisualSlot.VFLIP] = 1
    once = AP.apply_visual(x, t, out_size=24, normalise=False)
    assert torch.equal(once, x.flip(-1).flip(-2))
    assert torch.equal(AP.apply_visual(once, t, out_size=24, normalise=False), x)
    # rotation by +90 degrees moves a dot right of the centre to above it (counter-clockwise on screen)
    dot = torch.zeros(1, 3, 25, 25)
    dot[..., 12, 20] = 1.0
    r = P.identity_visual_params(1, extended=True)
    r[:, P.VisualSlot.ROTATE_ON] = 1
    r[:, P.VisualSlot.ANGLE] = 90
    rot = AP.apply_visual(dot, r, out_size=25, normalise=False)
    assert rot[0, 0].argmax().item() == 4 * 25 + 12


def test_apply_visual_rejects_wrong_width():
    with pytest.raises(ValueError, match="18 or 21"):
        AP.apply_visual(_images(2), torch.zeros(2, 24))
