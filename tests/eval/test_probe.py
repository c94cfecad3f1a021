"""The linear probe separates linearly separable classes and is at chance on noise."""
from __future__ import annotations

import pytest
import torch

from avssl.eval.probe import fit_linear_probe, linear_probe_accuracy


def _blobs(n: int, k: int, dim: int, sep: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g) * sep
    y = torch.arange(n) % k
    return centres[y] + torch.randn(n, dim, generator=g), y


def test_probe_learns_separable_classes_and_ignores_unlabelled():
    x, y = _blobs(300, 4, 8, sep=4.0, seed=0)
    xt, yt = _blobs(200, 4, 8, sep=4.0, seed=0)
    y = y.clone()
    y[:10] = -1
    assert linear_probe_accuracy(x, y, xt, yt) > 0.95


def test_probe_is_near_chance_on_noise_and_deterministic():
    g = torch.Generator().manual_seed(1)
    x, xt = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g)
    y, yt = torch.randint(0, 3, (300,), generator=g), torch.randint(0, 3, (300,), generator=g)
    acc = linear_probe_accuracy(x, y, xt, yt)
    assert acc < 0.45
    assert acc == linear_probe_accuracy(x, y, xt, yt)
    w1 = fit_linear_probe(x, y)[0]
    assert torch.equal(w1, fit_linear_probe(x, y)[0])


def test_probe_rejects_bad_shapes():
    with pytest.raises(ValueError):
        fit_linear_probe(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long))
