"""The two audio front-ends, as batched pure torch functions (no torchaudio).

* EquiAV: a Kaldi-compatible log-mel filterbank (the numbers of
  ``torchaudio.compliance.kaldi.fbank(htk_compat=True, use_energy=False, window_type='hanning',
  num_mel_bins=128, dither=0, frame_shift=10)``), zero-padded/cut to 1024 frames, then
  normalised with dataset statistics: :func:`equiav_fbank`.
* SSL-TIE: the waveform tiled to 10 s, a power mel spectrogram (n_fft 512, hop 239, 257 HTK
  mels), optional SpecAugment, then dB: :func:`ssltie_spectrogram`.
* The EZ-VSL family (EZ-VSL, FNAC): the centre clip (:func:`centre_cut`) and scipy's
  ``spectrogram(nperseg=512, noverlap=274)`` as ``log(PSD + 1e-7)`` (:func:`scipy_logspec`).

Every function takes a waveform of shape ``(..., N)``; all leading dimensions are batch
dimensions and are processed at once. Mel matrices and windows are cached per
(parameters, device, dtype). Quirks of the reference code are reproduced on purpose: at
16 kHz with 128 bins, Kaldi mel filter #3 is empty (its column is the constant ``log(eps)``);
SSL-TIE's 257 mels over 257 FFT bins leave many empty rows (constant -100 dB).

Long file: three front-ends of the reference code bases, each a handful of small functions that
share the windowing and tiling helpers; splitting them would scatter those helpers.
"""
from __future__ import annotations

import functools
import logging
import math
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F

from avssl.augment.audio import spec_augment

logger = logging.getLogger(__name__)

#: Dataset fbank statistics (mean, std) used by EquiAV's ``(x - mean) / std``.
FBANK_STATS: dict[str, tuple[float, float]] = {
    "audioset": (-4.346, 4.332),
    "vggsound": (-4.956, 4.486),
}
_FLOAT32_EPS = torch.finfo(torch.float32).eps  # Kaldi/torchaudio log floor, whatever the dtype


# ----------------------------------------------------------------------------- Kaldi fbank
def subtract_mean(wave: torch.Tensor) -> torch.Tensor:
    """Remove each waveform's mean: ``(..., N) -> (..., N)`` (EquiAV does this before fbank).

    The mean is accumulated in float64, so a batched call equals per-sample calls exactly.
    """
    return wave - wave.mean(dim=-1, keepdim=True, dtype=torch.float64).to(wave.dtype)


@functools.lru_cache(maxsize=32)
def _kaldi_mel_banks(num_bins: int, n_fft: int, sample_rate: float, low_freq: float,
                     high_freq: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Kaldi triangular mel filters, ``(num_bins, n_fft // 2 + 1)``; the Nyquist column is 0.

    Mel is ``1127 ln(1 + f / 700)``; each filter is a triangle in the mel domain evaluated at
    the FFT bin centres. Built in float32 with scalar edges in double, like the reference, so
    the weights are bit-identical to what produced the published numbers (a float64 build
    differs by up to 0.2 % relative at the triangles' feet, visible at 1e-4 parity).
    """
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (0.0 <= low_freq < nyquist and 0.0 < high_freq <= nyquist and low_freq < high_freq):
        raise ValueError(f"bad fbank frequency range low_freq={low_freq}, high_freq={high_freq} "
                         f"for sample_rate={sample_rate}")
    if num_bins <= 3:
        raise ValueError(f"num_mel_bins must be > 3, got {num_bins}")
    mel_low = 1127.0 * math.log(1.0 + low_freq / 700.0)
    mel_high = 1127.0 * math.log(1.0 + high_freq / 700.0)
    delta = (mel_high - mel_low) / (num_bins + 1)
    idx = torch.arange(num_bins)[:, None]  # int64; promoted to float32 by the float scalars
    left, centre, right = (mel_low + (idx + k) * delta for k in (0.0, 1.0, 2.0))
    bin_freq = (sample_rate / n_fft) * torch.arange(n_fft // 2, dtype=torch.float32)
    bin_mel = (1127.0 * (1.0 + bin_freq / 700.0).log())[None]
    up = (bin_mel - left) / (centre - left)
    down = (right - bin_mel) / (right - centre)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    empty = (banks.sum(1) == 0).nonzero().flatten().tolist()
    if empty:
        logger.debug("Kaldi fbank: mel filters %s contain no FFT bin (constant log eps)", empty)
    banks = F.pad(banks, (0, 1))  # the Nyquist bin gets zero weight
    return banks.to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=32)
def _kaldi_window(window_type: str, size: int, device: torch.device,
                  dtype: torch.dtype) -> torch.Tensor:
    """Kaldi's symmetric frame windows, ``(size,)``; "hanning" is ``0.5 - 0.5 cos(2 pi n/(N-1))``."""
    kw = {"periodic": False, "device": device, "dtype": dtype}
    if window_type == "hanning":
        return torch.hann_window(size, **kw)
    if window_type == "hamming":
        return torch.hamming_window(size, alpha=0.54, beta=0.46, **kw)
    if window_type == "povey":
        return torch.hann_window(size, **kw).pow(0.85)
    if window_type == "rectangular":
        return torch.ones(size, device=device, dtype=dtype)
    if window_type == "blackman":
        a = 2.0 * math.pi / (size - 1)
        n = torch.arange(size, device=device, dtype=dtype)
        return 0.42 - 0.5 * torch.cos(a * n) + 0.08 * torch.cos(2.0 * a * n)
    raise ValueError(f"unknown window_type {window_type!r}; expected hanning, hamming, povey, "
                     "rectangular or blackman")


def _kaldi_frames(wave: torch.Tensor, size: int, shift: int, snip_edges: bool) -> torch.Tensor:
    """Cut ``(..., N)`` into ``(..., T, size)`` frames the way Kaldi does."""
    n = wave.shape[-1]
    if snip_edges:
        if n < size:
            return wave.new_zeros(*wave.shape[:-1], 0, size)
        return wave.unfold(-1, size, shift)
    num_frames = (n + shift // 2) // shift
    if num_frames == 0:
        return wave.new_zeros(*wave.shape[:-1], 0, size)
    pad_left = (size - shift) // 2
    pad_right = max((num_frames - 1) * shift + size - n - pad_left, 0)
    # Kaldi's edge padding mirrors the samples including the edge one ("symmetric").
    parts = [wave[..., :pad_left].flip(-1), wave, wave[..., n - pad_right:].flip(-1)]
    padded = torch.cat(parts, dim=-1)
    return padded.unfold(-1, size, shift)[..., :num_frames, :]


def kaldi_fbank(wave: torch.Tensor, sample_rate: float = 16000.0, *, num_mel_bins: int = 128,
                frame_length: float = 25.0, frame_shift: float = 10.0,
                window_type: str = "hanning", preemphasis: float = 0.97,
                remove_dc_offset: bool = True, round_to_power_of_two: bool = True,
                snip_edges: bool = True, low_freq: float = 20.0, high_freq: float = 0.0,
                use_power: bool = True, use_log: bool = True) -> torch.Tensor:
    """Kaldi-compatible mel filterbank (dither 0, no energy, no VTLN), batched.

    Defaults are EquiAV's call (Kaldi's own defaults differ: 23 bins, "povey" window); apply
    it to a mean-removed waveform (see :func:`equiav_fbank`). ``high_freq <= 0`` means Nyquist
    plus it. Windows: "hanning" (symmetric), "hamming", "povey", "rectangular", "blackman".
    A feature extractor, not differentiable (it writes into a preallocated FFT buffer).

    Args:
        wave: ``(..., N)`` waveform (float).
        sample_rate: samples per second.
    Returns:
        ``(..., T, num_mel_bins)`` with ``T = 1 + (N - W) // S`` (snip_edges) where
        ``W = int(sample_rate * frame_length / 1000)``, ``S = int(sample_rate * frame_shift /
        1000)``; log energies floored at float32 eps when ``use_log``.
    """
    if not wave.is_floating_point():
        raise TypeError(f"kaldi_fbank needs a floating waveform, got {wave.dtype}")
    size = int(sample_rate * frame_length * 0.001)
    shift = int(sample_rate * frame_shift * 0.001)
    if size < 2 or shift < 1:
        raise ValueError(f"frame_length/frame_shift too small: {size} / {shift} samples")
    n_fft = 1 << (size - 1).bit_length() if round_to_power_of_two else size
    if n_fft % 2:
        raise ValueError(f"the FFT length must be even, got {n_fft} samples; use "
                         "round_to_power_of_two=True or change frame_length")
    frames = _kaldi_frames(wave, size, shift, snip_edges)  # (..., T, size), maybe a view
    if frames.shape[-2] == 0:
        logger.debug("kaldi_fbank: %d samples give no %d-sample frame", wave.shape[-1], size)
        return wave.new_zeros(*frames.shape[:-1], num_mel_bins)
    if remove_dc_offset:
        frames = frames - frames.mean(dim=-1, keepdim=True)
    # Pre-emphasis and window are written straight into a zero-tailed (..., T, n_fft) buffer,
    # so the FFT needs no padding copy (same arithmetic as the reference, op for op).
    buf = frames.new_empty(*frames.shape[:-1], n_fft)
    buf[..., size:] = 0.0
    body = buf[..., :size]
    if preemphasis != 0.0:  # y[j] = x[j] - c x[j-1], with x[-1] = x[0]
        torch.mul(frames[..., :-1], preemphasis, out=body[..., 1:])
        torch.sub(frames[..., 1:], body[..., 1:], out=body[..., 1:])
        body[..., 0] = frames[..., 0] - preemphasis * frames[..., 0]
    else:
        body.copy_(frames)
    body.mul_(_kaldi_window(window_type, size, wave.device, wave.dtype))
    spec = torch.fft.rfft(buf, dim=-1)  # (..., T, n_fft // 2 + 1)
    spec = spec.real.square().add_(spec.imag.square())
    if not use_power:
        spec = spec.sqrt()
    banks = _kaldi_mel_banks(num_mel_bins, n_fft, float(sample_rate), float(low_freq),
                             float(high_freq), wave.device, wave.dtype)
    mel = torch.matmul(spec, banks.T)
    if use_log:
        mel = mel.clamp_(min=_FLOAT32_EPS).log_()
    return mel


def pad_or_cut(fbank: torch.Tensor, target_frames: int = 1024) -> torch.Tensor:
    """Zero-pad at the end or cut along time: ``(..., T, F) -> (..., target_frames, F)``.

    The result is contiguous (it may share memory with ``fbank`` when only cut).
    """
    t = fbank.shape[-2]
    if t >= target_frames:
        return fbank[..., :target_frames, :].contiguous()
    return F.pad(fbank, (0, 0, 0, target_frames - t))


def normalise_fbank(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """``(x - mean) / std`` (EquiAV's normalisation; not ``2 * std``). Any shape."""
    return (x - mean) / std


def _resolve_stats(stats: str | tuple[float, float] | None) -> tuple[float, float] | None:
    if stats is None or isinstance(stats, tuple | list):
        return None if stats is None else (float(stats[0]), float(stats[1]))
    try:
        return FBANK_STATS[stats.lower()]
    except KeyError:
        raise ValueError(f"unknown fbank stats {stats!r}; known: {sorted(FBANK_STATS)}") from None


def equiav_fbank(wave: torch.Tensor, sample_rate: float, target_frames: int = 1024,
                 stats: str | tuple[float, float] | None = "audioset",
                 num_mel_bins: int = 128) -> torch.Tensor:
    """EquiAV audio input: mean removal, Kaldi fbank, pad/cut, normalise (in that order).

    Args:
        wave: ``(..., N)`` waveform at its own ``sample_rate`` (no resampling).
        stats: a :data:`FBANK_STATS` key, an explicit ``(mean, std)``, or None (no normalising).
    Returns:
        ``(..., target_frames, num_mel_bins)``; padded frames hold ``(0 - mean) / std``.
    """
    fbank = kaldi_fbank(subtract_mean(wave), sample_rate, num_mel_bins=num_mel_bins)
    fbank = pad_or_cut(fbank, target_frames)
    resolved = _resolve_stats(stats)
    if resolved is None:
        return fbank
    mean, std = resolved
    return fbank.sub_(mean).div_(std)  # == normalise_fbank, in place on our own fresh tensor


def subtract_valid_mean(wave: torch.Tensor, num_samples: torch.Tensor) -> torch.Tensor:
    """(B, N) zero-padded waveforms minus each clip's mean over its first ``num_samples`` (B,)
    samples; the padding stays 0."""
    n = num_samples.to(wave.device).long()
    valid = torch.arange(wave.shape[-1], device=wave.device)[None] < n[:, None]
    mean = (wave * valid).sum(-1, keepdim=True) / n[:, None].to(wave.dtype)
    return torch.where(valid, wave - mean, 0.0)


def equiav_fbank_batch(wave: torch.Tensor, num_samples: torch.Tensor | None, sample_rate: float | torch.Tensor,
                       target_frames: int = 1024, stats: str | tuple[float, float] | None = "audioset",
                       num_mel_bins: int = 128) -> torch.Tensor:
    """:func:`equiav_fbank` of a zero-padded batch, clip by clip identical to the unpadded call.

    Args:
        wave: (B, N) waveforms, clip ``i`` valid in ``wave[i, :num_samples[i]]`` and zero after.
        num_samples: (B,) true lengths (None: all N).
        sample_rate: one rate, or (B,) per-clip rates (:func:`avssl.data.datasets.collate_mixed_rates`):
            each clip's fbank is then computed at its own rate, as the original computes it per
            file (one batched call per distinct rate).
    Returns:
        (B, target_frames, num_mel_bins): the mean is removed over the true samples only, the
        frames that reach past a clip's end are dropped (set to the pad value 0 before
        normalising, as :func:`pad_or_cut` pads), so each row equals ``equiav_fbank(wave[i, :n_i])``.
    """
    if wave.ndim != 2:
        raise ValueError(f"wave must be (B, N), got {tuple(wave.shape)}")
    n_total = wave.shape[-1]
    if num_samples is None:
        num_samples = torch.full((wave.shape[0],), n_total, dtype=torch.long)
    n = num_samples.to(wave.device).long()
    if isinstance(sample_rate, torch.Tensor):
        rates = sample_rate.to(wave.device).long()
        distinct = torch.unique(rates).tolist()
        if len(distinct) > 1:
            out = wave.new_empty((wave.shape[0], target_frames, num_mel_bins))
            for r in distinct:  # a loop over the batch's distinct rates, not over its clips
                rows = (rates == r).nonzero().squeeze(1)
                out[rows] = equiav_fbank_batch(wave[rows], n[rows], float(r), target_frames, stats, num_mel_bins)
            return out
        sample_rate = float(distinct[0])
    if bool((n < 1).any()) or bool((n > n_total).any()):
        raise ValueError(f"num_samples must lie in [1, {n_total}], got {n.tolist()}")
    centred = subtract_valid_mean(wave, n)
    fbank = pad_or_cut(kaldi_fbank(centred, sample_rate, num_mel_bins=num_mel_bins), target_frames)
    size, shift = int(sample_rate * 0.025), int(sample_rate * 0.010)
    frames_ok = torch.div(n - size, shift, rounding_mode="floor") + 1  # snip_edges frame count
    keep = torch.arange(target_frames, device=wave.device)[None] < frames_ok[:, None]
    fbank = torch.where(keep[..., None], fbank, 0.0)
    resolved = _resolve_stats(stats)
    if resolved is None:
        return fbank
    return (fbank - resolved[0]) / resolved[1]


# ----------------------------------------------------------------------------- SSL-TIE
def tile_to_duration(wave: torch.Tensor, sample_rate: int, seconds: float = 10.0,
                     keep_seconds: float | None = None) -> torch.Tensor:
    """SSL-TIE length handling: ``(..., N) -> (..., int(seconds * sample_rate))``.

    First keeps only ``wave[..., :int(sample_rate * keep_seconds)]`` when given (Flickr training
    uses 4 s). A waveform shorter than the target is tiled ``int(target / N) + 1`` times; the
    result is cut to exactly the target length (so a longer one is just cut).
    """
    if keep_seconds is not None:
        wave = wave[..., : int(sample_rate * keep_seconds)]
    n = wave.shape[-1]
    if n == 0:
        raise ValueError("tile_to_duration got an empty waveform")
    target = int(seconds * sample_rate)
    if n >= target:
        return wave[..., :target]
    index = torch.arange(target, device=wave.device) % n  # == tile(int(target/n)+1) then cut
    return wave[..., index]


@functools.lru_cache(maxsize=32)
def _htk_mel_filters(n_freqs: int, n_mels: int, sample_rate: int, f_min: float, f_max: float,
                     device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """HTK-scale triangular filters without normalisation, ``(n_mels, n_freqs)``.

    Mel is ``2595 log10(1 + f / 700)``; ``n_mels + 2`` edges evenly spaced in mel; FFT bins at
    ``linspace(0, sample_rate // 2, n_freqs)`` (integer Nyquist, as the reference). Built in
    float32 in the reference's order so the weights match it bit for bit.
    """
    bin_freqs = torch.linspace(0.0, float(sample_rate // 2), n_freqs, dtype=torch.float32)
    m_lo = 2595.0 * math.log10(1.0 + f_min / 700.0)
    m_hi = 2595.0 * math.log10(1.0 + f_max / 700.0)
    edges_mel = torch.linspace(m_lo, m_hi, n_mels + 2, dtype=torch.float32)
    edges = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)  # (n_mels + 2,)
    width = edges[1:] - edges[:-1]  # (n_mels + 1,)
    offset = edges[None, :] - bin_freqs[:, None]  # (n_freqs, n_mels + 2)
    rising = (-1.0 * offset[:, :-2]) / width[:-1]
    falling = offset[:, 2:] / width[1:]
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0).T.contiguous()
    logger.debug("HTK mel: %d of %d filters empty", int((filters.sum(1) == 0).sum()), n_mels)
    return filters.to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=16)
def _periodic_hann(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.hann_window(size, periodic=True, device=device, dtype=dtype)


def mel_spectrogram(wave: torch.Tensor, sample_rate: int, n_fft: int = 512,
                    hop_length: int = 239, n_mels: int = 257, f_min: float = 0.0,
                    f_max: float | None = None, normalized: bool = True, power: float = 2.0,
                    center: bool = True, pad_mode: str = "reflect") -> torch.Tensor:
    """Power mel spectrogram (periodic Hann of ``n_fft``, HTK mels, no filter norm).

    ``normalized`` divides the STFT by ``sqrt(sum(window**2))``; ``f_max`` None means
    ``sample_rate // 2``.

    Args:
        wave: ``(..., N)`` waveform.
    Returns:
        ``(..., n_mels, T)`` with ``T = 1 + N // hop_length`` when ``center``.
    """
    window = _periodic_hann(n_fft, wave.device, wave.dtype)
    flat = wave.reshape(-1, wave.shape[-1])
    stft = torch.stft(flat, n_fft=n_fft, hop_length=hop_length, win_length=n_fft, window=window,
                      center=center, pad_mode=pad_mode, normalized=False, onesided=True,
                      return_complex=True)  # (B, n_fft // 2 + 1, T)
    spec = stft.real.square() + stft.imag.square()
    if normalized:
        spec = spec / window.square().sum()
    if power != 2.0:
        spec = spec.pow(power / 2.0)
    f_max = float(sample_rate // 2) if f_max is None else float(f_max)
    filters = _htk_mel_filters(n_fft // 2 + 1, n_mels, int(sample_rate), float(f_min), f_max,
                               wave.device, wave.dtype)
    mel = torch.matmul(filters, spec)
    return mel.reshape(*wave.shape[:-1], n_mels, mel.shape[-1])


def power_to_db(x: torch.Tensor, amin: float = 1e-10) -> torch.Tensor:
    """``10 * log10(max(x, amin))``, no top_db clipping. Any shape."""
    return 10.0 * torch.log10(torch.clamp(x, min=amin))


def ssltie_spectrogram(wave: torch.Tensor, sample_rate: int, seconds: float = 10.0,
                       train: bool = False, generator: torch.Generator | None = None,
                       keep_seconds: float | None = None, spec_augment_p: float = 0.8
                       ) -> torch.Tensor:
    """SSL-TIE audio input: tile/cut to ``seconds``, mel power spectrogram, SpecAugment when
    ``train``, dB. No resampling, no normalisation.

    Args:
        wave: ``(..., N)`` waveform at its own ``sample_rate``.
        keep_seconds: keep only the first seconds before tiling (Flickr training: 4).
    Returns:
        ``(..., 1, 257, T)``, ``T = 1 + int(seconds * sample_rate) // 239``.
    """
    wave = tile_to_duration(wave, sample_rate, seconds, keep_seconds)
    spec = mel_spectrogram(wave, sample_rate)
    if train:
        spec = spec_augment(spec, generator, p=spec_augment_p)
    return power_to_db(spec).unsqueeze(-3)


# ----------------------------------------------------------------------------- EZ-VSL family
SCIPY_NPERSEG, SCIPY_NOVERLAP, LOGSPEC_EPS = 512, 274, 1e-7


def centre_cut(wave: torch.Tensor, sample_rate: int, seconds: float = 3.0) -> torch.Tensor:
    """``(N,)`` -> ``(int(seconds * sr),)``: the EZ-VSL family's centre clip. Start
    ``t0 = max(D/2 - seconds/2, 0)`` (``D = N / sr``), ``floor(t0 * sr)`` samples in, in exact
    rational arithmetic (float arithmetic would give 2399 for a 3.3 s clip at 16 kHz; the authors'
    run starts at sample 2400); then tiled ``int(target / n) + 1`` times when shorter and cut to
    the target."""
    n = wave.shape[-1]
    if n == 0:
        raise ValueError("centre_cut got an empty waveform")
    start = math.floor(max(Fraction(n, 2) - Fraction(seconds) * sample_rate / 2, Fraction(0)))
    wave = wave[..., start:start + int(seconds * sample_rate)]
    return tile_to_duration(wave, sample_rate, seconds)


@functools.lru_cache(maxsize=8)
def _tukey_cpu(size: int, alpha: float) -> torch.Tensor:
    m = size + 1  # periodic: the symmetric window of size + 1, last point dropped
    n = np.arange(m, dtype=np.float64)
    width = int(np.floor(alpha * (m - 1) / 2.0))
    w = np.ones(m, dtype=np.float64)
    lo, hi = n[: width + 1], n[m - width - 1:]
    w[: width + 1] = 0.5 * (1 + np.cos(np.pi * (-1 + 2.0 * lo / alpha / (m - 1))))
    w[m - width - 1:] = 0.5 * (1 + np.cos(np.pi * (-2.0 / alpha + 1 + 2.0 * hi / alpha / (m - 1))))
    return torch.from_numpy(w[:-1].copy())


def tukey_window(size: int = SCIPY_NPERSEG, alpha: float = 0.25, device: torch.device | str = "cpu") -> torch.Tensor:
    """scipy's periodic ``tukey(size, alpha, sym=False)`` in float64."""
    return _tukey_cpu(size, alpha).to(device)


def scipy_logspec(wave: torch.Tensor, sample_rate: int, quantise: bool = True) -> torch.Tensor:
    """The EZ-VSL family's log spectrogram, batched: ``(B, N)`` -> ``(B, 257, T)`` float64
    ``log(PSD + 1e-7)`` of scipy's ``spectrogram(x, fs, nperseg=512, noverlap=274)`` (periodic
    Tukey(0.25) window, hop 238, per-segment mean removed, one-sided density).

    ``T = (N - 512) // 238 + 1`` (200 for 3 s at 16 kHz). ``quantise``: ``wave`` is float
    ``int16 / 32768`` (what the loader reads) and is put back on the 16-bit grid, halves rounded
    up (a stereo mean ``(L + R) / 2`` then equals libswresample's ``s16p`` mono downmix, checked
    on the golden stereo clip), then divided by 32767; off: ``wave`` is already the authors'
    float signal (clipped to [-1, 1] only).
    """
    x = wave.to(torch.float64)
    if quantise:
        x = torch.floor(x * 32768.0 + 0.5).clamp_(-32768, 32767) / 32767.0
    x = x.clamp(-1.0, 1.0)
    frames = x.unfold(-1, SCIPY_NPERSEG, SCIPY_NPERSEG - SCIPY_NOVERLAP)  # (B, T, 512)
    frames = frames - frames.mean(dim=-1, keepdim=True)  # detrend="constant"
    window = tukey_window(SCIPY_NPERSEG, 0.25, x.device)
    spec = torch.fft.rfft(frames * window, n=SCIPY_NPERSEG, dim=-1)
    power = (spec.real.square() + spec.imag.square()) / (sample_rate * window.square().sum())
    power[..., 1:-1] *= 2.0  # one-sided density: every bin but DC and Nyquist doubled
    return torch.log(power + LOGSPEC_EPS).transpose(-1, -2)
