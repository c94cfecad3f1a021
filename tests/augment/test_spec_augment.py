"""avssl.augment.audio: SSL-TIE's SpecAugment masks exactly the ranges it samples, batched and seeded."""
from __future__ import annotations

import torch

from avssl.augment.audio import spec_augment


def _spec(batch=6, n_freq=257, n_time=670, seed=5):
    return torch.rand(batch, n_freq, n_time, generator=torch.Generator().manual_seed(seed)) + 1


def test_spec_augment_masks_exactly_the_sampled_ranges():
    spec = _spec()
    out, prm = spec_augment(spec, torch.Generator().manual_seed(0), p=0.8,
                                  return_params=True)
    t = torch.arange(spec.shape[-1])
    f = torch.arange(spec.shape[-2])
    for b in range(spec.shape[0]):
        tw = int(prm.time_end[b] - prm.time_start[b])
        fw = int(prm.freq_end[b] - prm.freq_start[b])
        if not prm.applied[b]:
            assert tw == 0 and fw == 0 and torch.equal(out[b], spec[b])
            continue
        assert 0 <= tw < 180 and 0 <= fw < 35
        tm = (t >= prm.time_start[b]) & (t < prm.time_end[b])
        fm = (f >= prm.freq_start[b]) & (f < prm.freq_end[b])
        mask = tm[None, :] | fm[:, None]
        assert torch.all(out[b][mask] == 0.0)
        assert torch.equal(out[b][~mask], spec[b][~mask])
        assert int((out[b] == 0).sum()) == int(mask.sum())


def test_spec_augment_probability_and_reproducibility():
    spec = _spec(batch=64, n_time=200)
    assert torch.equal(spec_augment(spec, torch.Generator().manual_seed(1), p=0.0), spec)
    a, pa = spec_augment(spec, torch.Generator().manual_seed(7), return_params=True)
    b, pb = spec_augment(spec, torch.Generator().manual_seed(7), return_params=True)
    assert torch.equal(a, b) and all(torch.equal(x, y) for x, y in zip(pa, pb, strict=True))
    _, pall = spec_augment(spec, torch.Generator().manual_seed(8), p=1.0,
                                 return_params=True)
    assert bool(pall.applied.all())
    assert len(set(pall.time_start.tolist())) > 10  # masks drawn per sample
    assert 0.55 < pa.applied.float().mean() < 0.98  # p = 0.8 over 64 samples
