"""Batched spectrogram augmentations (primitives), vectorised over the batch.

* :func:`spec_augment`: SSL-TIE's SpecAugment (one time and one frequency mask, drawn per map,
  torchaudio's ``mask_along_axis`` widths) on a power spectrogram;
* :func:`spec_masks` and :func:`time_roll`: EquiAV's mask and circular time shift as decoded
  from its parameter vectors (applied by :func:`avssl.augment.apply.apply_audio`);
* :func:`random_wave_roll`: a uniform random circular shift of each waveform (an avssl option
  for SSL-TIE, ``ssltie.audio_roll``: no clip is heard from the same start twice).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from avssl.augment.params import AudioSlot

__all__ = ["SpecAugmentParams", "spec_augment", "spec_masks", "time_roll", "random_wave_roll"]


class SpecAugmentParams(NamedTuple):
    """Sampled SpecAugment masks, each of the spectrogram's batch shape ``(...)``.

    Masked time frames are ``[time_start, time_end)``, mel bins ``[freq_start, freq_end)``;
    both ranges are empty where ``applied`` is False.
    """

    applied: torch.Tensor
    time_start: torch.Tensor
    time_end: torch.Tensor
    freq_start: torch.Tensor
    freq_end: torch.Tensor


def _mask_range(u_width: torch.Tensor, u_start: torch.Tensor, max_width: int,
                size: int) -> tuple[torch.Tensor, torch.Tensor]:
    # torchaudio's mask_along_axis: width floor(U*max), start floor(U' * (size - U*max)).
    value = u_width * max_width
    start = (u_start * (size - value)).floor().long()
    return start, start + value.floor().long()


def spec_augment(spec: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.8,
                 max_time_width: int = 180, max_freq_width: int = 35, value: float = 0.0,
                 return_params: bool = False
                 ) -> torch.Tensor | tuple[torch.Tensor, SpecAugmentParams]:
    """SSL-TIE SpecAugment: with probability ``p``, one time mask then one frequency mask.

    Every ``(F, T)`` map of ``spec`` ``(..., F, T)`` draws its own masks (a shared channel axis
    should be folded away by the caller). Widths are ``floor(U * max_width)``. Apply it to the
    power spectrogram so masked entries become -100 dB after :func:`power_to_db`.

    Returns:
        the masked spectrogram (a new tensor, same shape), plus the
        :class:`SpecAugmentParams` when ``return_params``.
    """
    *batch, n_freq, n_time = spec.shape
    rand_device = generator.device if generator is not None else spec.device
    u = torch.rand(*batch, 5, generator=generator, device=rand_device,
                   dtype=torch.float64).to(spec.device)
    applied = u[..., 0] < p
    t0, t1 = _mask_range(u[..., 1], u[..., 2], max_time_width, n_time)
    f0, f1 = _mask_range(u[..., 3], u[..., 4], max_freq_width, n_freq)
    t1, f1 = torch.where(applied, t1, t0), torch.where(applied, f1, f0)
    t = torch.arange(n_time, device=spec.device)
    f = torch.arange(n_freq, device=spec.device)
    time_mask = (t >= t0[..., None]) & (t < t1[..., None])  # (..., T)
    freq_mask = (f >= f0[..., None]) & (f < f1[..., None])  # (..., F)
    mask = time_mask[..., None, :] | freq_mask[..., :, None]
    out = spec.masked_fill(mask, value)
    if return_params:
        return out, SpecAugmentParams(applied, t0, t1, f0, f1)
    return out


def spec_masks(fbank: Tensor, t: Tensor) -> Tensor:
    """Zero frames ``[t1, t2)`` and bins ``[t3, t4)`` where slot 0 is on. (B, C, T, F) -> same."""
    A = AudioSlot
    n_t, n_f = fbank.shape[-2:]
    on = t[:, A.SPECAUG_ON] > 0.5
    fr = torch.arange(n_t, device=fbank.device)
    bi = torch.arange(n_f, device=fbank.device)
    tm = (fr[None] >= t[:, A.TIME_MASK_START, None]) & (fr[None] < t[:, A.TIME_MASK_END, None])
    fm = (bi[None] >= t[:, A.FREQ_MASK_START, None]) & (bi[None] < t[:, A.FREQ_MASK_END, None])
    mask = (tm[:, :, None] | fm[:, None, :]) & on[:, None, None]          # (B, T, F)
    return fbank.masked_fill(mask[:, None], 0.0)


def time_roll(fbank: Tensor, shift: Tensor, enabled: Tensor) -> Tensor:
    """Circular roll along time by ``shift`` (B,) frames (``torch.roll`` sign) where enabled."""
    n_t = fbank.shape[-2]
    fr = torch.arange(n_t, device=fbank.device)
    src = (fr[None] - shift.long().to(fbank.device)[:, None]) % n_t              # (B, T)
    src = torch.where(enabled.to(fbank.device)[:, None], src, fr[None])
    idx = src[:, None, :, None].expand(-1, fbank.shape[1], -1, fbank.shape[-1])
    return fbank.gather(2, idx)


def random_wave_roll(wave: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Roll each waveform of ``wave`` (B, N) circularly by its own uniform random shift in [0, N)."""
    b, n = wave.shape
    rand_device = generator.device if generator is not None else wave.device
    shift = torch.randint(n, (b,), generator=generator, device=rand_device).to(wave.device)
    idx = (torch.arange(n, device=wave.device)[None] + shift[:, None]) % n
    return wave.gather(1, idx)
