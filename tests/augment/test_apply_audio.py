"""apply_audio: exact application of EquiAV audio vectors, the released-code quirks and their fixes."""
from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as TF

from avssl.augment import apply as AU
from avssl.augment import params as P

A = P.AudioSlot
T, F_ = 64, 16          # small fbanks; the sampler is told the same sizes
KW = dict(frames=T, bins=F_, time_mask=12, freq_mask=6)


def _fbank(b: int = 4, seed: int = 0) -> torch.Tensor:
    x = torch.randn(b, 1, T, F_, generator=torch.Generator().manual_seed(seed))
    return x.expand(b, 3, T, F_).contiguous()


def _ident(b: int = 4) -> torch.Tensor:
    return P.identity_audio_params(b)


@pytest.mark.parametrize("bugs", [True, False])
def test_identity_vector_leaves_input_unchanged(bugs):
    x = _fbank()
    assert torch.equal(AU.apply_audio(x, _ident(), original_bugs=bugs), x)


def test_flip_reverses_frequency_and_twice_is_identity():
    x = _fbank()
    t = _ident()
    t[:, A.FLIP] = torch.tensor([1.0, 0, 1, 0])
    y = AU.apply_audio(x, t)
    assert torch.equal(y[0], x[0].flip(-1)) and torch.equal(y[1], x[1])
    assert torch.equal(AU.apply_audio(y, t), x)


def test_masks_cover_exactly_the_encoded_ranges():
    x = torch.ones(2, 3, T, F_)
    t = _ident(2)
    t[:, A.SPECAUG_ON] = torch.tensor([1.0, 0.0])
    t[:, A.TIME_MASK_START], t[:, A.TIME_MASK_END] = 10, 17
    t[:, A.FREQ_MASK_START], t[:, A.FREQ_MASK_END] = 3, 5
    y = AU.apply_audio(x, t)
    expected = torch.ones(T, F_)
    expected[10:17, :] = 0
    expected[:, 3:5] = 0
    assert torch.equal(y[0], expected.expand(3, T, F_))
    assert torch.equal(y[1], x[1])           # SpecAugment off: masks ignored


def test_time_shift_is_a_noop_by_default_and_a_roll_when_fixed():
    x = _fbank()
    t = _ident()
    t[:, A.SHIFT_ON] = 1
    t[:, A.SHIFT] = torch.tensor([5.0, -3.0, 0.0, 63.0]) / T
    assert torch.equal(AU.apply_audio(x, t), x)
    y = AU.apply_audio(x, t, original_bugs=False)
    for i, s in enumerate([5, -3, 0, 63]):
        assert torch.equal(y[i], torch.roll(x[i], s, dims=1))
    assert torch.equal(AU.apply_audio(x, t, shift_noop=True, original_bugs=False), x)


@pytest.mark.parametrize("bugs", [True, False])
def test_crop_full_plane_is_identity_and_crop_matches_torchvision(bugs):
    x = _fbank()
    t = _ident()
    t[:, A.CROP_ON] = 1
    den = (F_, T) if bugs else (T, F_)
    t[:, P.AUDIO_LAYOUT.crop] = torch.tensor([0.0, 0.0, T / den[0], F_ / den[1]])
    torch.testing.assert_close(AU.apply_audio(x, t, original_bugs=bugs), x, atol=1e-5, rtol=0)
    boxes = torch.tensor([[3.0, 2, 40, 10], [0, 0, 64, 16], [20, 5, 9, 3], [10, 0, 50, 16]])
    t[:, P.AUDIO_LAYOUT.crop] = boxes / torch.tensor([den[0], den[1], den[0], den[1]])
    y = AU.apply_audio(x, t, original_bugs=bugs)
    for i in range(4):
        ref = TF.resized_crop(x[i], *[int(v) for v in boxes[i]], [T, F_])
        torch.testing.assert_close(y[i], ref, atol=1e-5, rtol=0)


def test_wrong_crop_encoding_is_rejected():
    t = P.sample_audio_params(4, torch.Generator().manual_seed(0), **KW, original_bugs=True)
    with pytest.raises(ValueError, match="outside"):
        AU.apply_audio(_fbank(), t, crop_axes_swapped=False)


def test_jitter_clamp_quirk_and_fix():
    x = _fbank() * 2
    t = _ident()
    t[:, A.JITTER_ON] = 1                    # all factors 1, hue 0: identity apart from clamps
    t[1:3, P.AUDIO_LAYOUT.order] = torch.tensor([3.0, 0, 1, 2])      # hue first for two samples
    y = AU.apply_audio(x, t)
    assert torch.equal(y, x.clamp(0, 1))       # the normalised spectrogram is clamped to [0, 1]
    assert (x < 0).float().mean() > 0.3
    torch.testing.assert_close(AU.apply_audio(x, t, original_bugs=False), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(AU.apply_audio(x, t, jitter_clamp=False), x, atol=1e-5, rtol=0)


def _reference(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per-sample torchvision pipeline of the released code (original bugs) for one (3, T, F) fbank."""
    y = x.clone()
    if t[A.SPECAUG_ON]:
        y[:, int(t[1]):int(t[2]), :] = 0
        y[:, :, int(t[3]):int(t[4])] = 0
    y = torch.roll(y, int(round(float(t[A.SHIFT]) * T)), 0)      # the no-op of the released code
    top, left, h, w = (round(float(t[8]) * F_), round(float(t[9]) * T),
                       round(float(t[10]) * F_), round(float(t[11]) * T))
    y = TF.resized_crop(y, top, left, h, w, [T, F_])
    if t[A.JITTER_ON]:
        ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
        for op in t[13:17].long().tolist():
            y = ops[op](y, float(t[17 + op]) + (1.0 if op < 3 else 0.0))
    if t[A.BLUR_ON]:
        s = float(t[A.SIGMA])
        k = 2 * int(torch.ceil(torch.tensor(s))) + 1
        y = TF.gaussian_blur(y, [k, k], [s, s])
    if t[A.FLIP]:
        y = y.flip(-1)
    return y


def test_sampled_vectors_match_per_sample_reference_and_batch():
    x = _fbank(8, seed=1)
    t = P.sample_audio_params(8, torch.Generator().manual_seed(6), **KW)
    y = AU.apply_audio(x, t)
    for i in range(8):
        torch.testing.assert_close(y[i], _reference(x[i], t[i]), atol=1e-4, rtol=0)
        torch.testing.assert_close(y[i:i + 1], AU.apply_audio(x[i:i + 1], t[i:i + 1]), atol=1e-6, rtol=0)


def test_fixed_generator_reproduces_outputs():
    x = _fbank()
    outs = [AU.apply_audio(x, P.sample_audio_params(4, torch.Generator().manual_seed(s), **KW))
            for s in (9, 9, 10)]
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


def test_full_size_runs():
    x = torch.randn(2, 1, 1024, 128).expand(2, 3, 1024, 128)
    t = P.sample_audio_params(2, torch.Generator().manual_seed(0))
    y = AU.apply_audio(x, t)
    assert y.shape == (2, 3, 1024, 128) and torch.isfinite(y).all()
