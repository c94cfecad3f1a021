"""The SSL-TIE equivariance transform: sampling, matrices, warp semantics, inverse, golden parity."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avssl.augment import geometric as G

TAGS = ["scale1.0_hflip0", "scale1.0_hflip1", "scale0.5_hflip0", "scale0.5_hflip1"]


def _rel(ours: torch.Tensor, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref|."""
    return float(np.abs(ours.detach().numpy() - ref).max() / np.abs(ref).max())


def _params(eq: dict, tag: str) -> G.EquivarianceParams:
    return G.EquivarianceParams(torch.from_numpy(eq[f"{tag}_angles_deg"]), float(eq[f"{tag}_scale"]),
                                bool(eq[f"{tag}_hflip"]))


def _dot_image(x: float, y: float, size: int = 224) -> torch.Tensor:
    """(1, 1, size, size) Gaussian blob (sigma 3 px) centred at pixel (x, y)."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32),
                            torch.arange(size, dtype=torch.float32), indexing="ij")
    return torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 18.0)[None, None]


def _centroid(img: torch.Tensor) -> tuple[float, float]:
    h, w = img.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    m = img[0, 0]
    return float((m * xx).sum() / m.sum()), float((m * yy).sum() / m.sum())


@pytest.mark.parametrize("tag", TAGS)
def test_golden_transform(golden, tag):
    """ssltie_tf_equivariance.npz: <tag>_{angles_deg, scale, hflip, tf_matrices, pattern_in, pattern_out,
    heatmap, ts_heatmap, transformed_image_sample0}; ssltie_avenet_io.npz: in_image."""
    eq, io = golden("ssltie_tf_equivariance.npz"), golden("ssltie_avenet_io.npz")
    p = _params(eq, tag)
    assert _rel(G.transform_matrix(p), eq[f"{tag}_tf_matrices"]) < 1e-6
    assert _rel(G.apply(torch.from_numpy(eq[f"{tag}_pattern_in"]), p), eq[f"{tag}_pattern_out"]) < 1e-5
    assert _rel(G.apply(torch.from_numpy(eq[f"{tag}_heatmap"]), p), eq[f"{tag}_ts_heatmap"]) < 1e-5
    # randn image: bilinear sampling of white noise amplifies float32 coordinate rounding (~2e-5)
    image_t = G.apply(torch.from_numpy(io["in_image"]), p)
    assert image_t.shape[-1] == int(224 * p.scale)
    assert _rel(image_t[:1], eq[f"{tag}_transformed_image_sample0"]) < 1e-4


def test_rotation_matrix_matches_opencv_formula():
    angle, scale, cx, cy = 30.0, 0.5, 112.0, 100.0
    m = G.rotation_matrix(torch.tensor([angle], dtype=torch.float64), (cx, cy), scale)[0]
    a, b = scale * math.cos(math.radians(angle)), scale * math.sin(math.radians(angle))
    expected = torch.tensor([[a, b, (1 - a) * cx - b * cy], [-b, a, b * cx + (1 - a) * cy]],
                            dtype=torch.float64)
    torch.testing.assert_close(m, expected)
    # the centre is a fixed point
    torch.testing.assert_close(m @ torch.tensor([cx, cy, 1.0], dtype=torch.float64),
                               torch.tensor([cx, cy], dtype=torch.float64))


def test_positive_angle_is_counter_clockwise_and_scale_about_centre():
    dot = _dot_image(112 + 60, 112)  # right of the centre
    p = G.EquivarianceParams(torch.tensor([90.0]), 1.0, False)
    x, y = _centroid(G.apply(dot, p))
    assert abs(x - 112) < 0.05 and abs(y - (112 - 60)) < 0.05  # moved up: counter-clockwise on screen
    # s = 0.5: the matrix halves the offset, then the output resize halves everything again
    p = G.EquivarianceParams(torch.tensor([0.0]), 0.5, False)
    x, y = _centroid(G.apply(dot, p))
    assert abs(x - ((112 + 30 + 0.5) / 2 - 0.5)) < 0.05 and abs(y - 55.75) < 0.05
    x, y = _centroid(G.apply(dot, p, shrink_once=True))
    assert abs(x - ((112 + 60 + 0.5) / 2 - 0.5)) < 0.05


def test_identity_and_flip():
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    ident = G.EquivarianceParams(torch.zeros(2), 1.0, False)
    torch.testing.assert_close(G.apply(x, ident), x, rtol=0, atol=1e-9)
    flip = G.EquivarianceParams(torch.zeros(2), 1.0, True)
    torch.testing.assert_close(G.apply(x, flip), x.flip(-1), rtol=0, atol=1e-9)
    # float32: the sampling grid is float32, so white noise moves by ~1e-4 (kornia does the same)
    torch.testing.assert_close(G.apply(x.float(), ident), x.float(), rtol=0, atol=1e-3)


def test_output_sizes_and_batch_check():
    p = G.EquivarianceParams(torch.tensor([5.0, -7.0]), 0.5, False)
    assert G.apply(torch.randn(2, 1, 14, 14), p).shape == (2, 1, 7, 7)
    assert G.apply(torch.randn(2, 3, 224, 224), p).shape == (2, 3, 112, 112)
    assert G.apply(torch.randn(2, 3, 64, 64), p).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="batch"):
        G.apply(torch.randn(3, 1, 14, 14), p)


@pytest.mark.parametrize("shrink_once", [False, True])
@pytest.mark.parametrize("scale,hflip", [(1.0, False), (1.0, True), (0.5, False), (0.5, True)])
def test_warp_then_unwarp_is_identity_inside_canvas(scale, hflip, shrink_once):
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 224), torch.linspace(-1, 1, 224), indexing="ij")
    smooth = torch.stack([torch.sin(2.0 * xx + 1.0) * torch.cos(1.5 * yy),
                          torch.exp(-((xx - 0.2) ** 2 + (yy + 0.1) ** 2) * 2.0)])[:, None]
    p = G.EquivarianceParams(torch.tensor([23.0, -30.0]), scale, hflip)
    back = G.invert(G.apply(smooth, p, shrink_once=shrink_once), p, (224, 224), shrink_once=shrink_once)
    inside = (xx ** 2 + yy ** 2) < 0.8 ** 2  # away from the borders the rotation pushes out
    err = (back - smooth).abs()[..., inside].max().item()
    assert err < (1e-3 if scale == 1.0 else 5e-3), err  # a wrong inverse gives ~0.6


def test_sampling_is_deterministic_and_covers_the_distribution():
    a = G.sample_params(8, torch.Generator().manual_seed(3))
    b = G.sample_params(8, torch.Generator().manual_seed(3))
    assert torch.equal(a.angles, b.angles) and (a.scale, a.hflip) == (b.scale, b.hflip)
    gen = torch.Generator().manual_seed(0)
    draws = [G.sample_params(16, gen, max_angle=30) for _ in range(200)]
    angles = torch.cat([d.angles for d in draws])
    assert angles.dtype == torch.float32 and torch.equal(angles, angles.round())
    assert angles.min() == -30 and angles.max() == 30
    assert {d.scale for d in draws} == {1.0, 0.5} and {d.hflip for d in draws} == {True, False}
    assert 0.35 < np.mean([d.scale == 0.5 for d in draws]) < 0.65
    assert 0.35 < np.mean([d.hflip for d in draws]) < 0.65


def test_apply_is_differentiable():
    p = G.EquivarianceParams(torch.tensor([11.0]), 0.5, True)
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: G.apply(t, p), (x,), fast_mode=True)
