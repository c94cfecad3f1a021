"""EZ-VSL's data side: the loader's data set, the batched on-device transform, and inference.

The authors' loader (docs/methods.md, EZ-VSL section), reproduced:

* audio: the **centre** ``seconds`` (3 s) of each clip at its native rate, as 16-bit PCM over
  32767, clipped to [-1, 1], tiled when shorter; then scipy's ``spectrogram(x, fs, nperseg=512,
  noverlap=274)`` (periodic Tukey(0.25) window, hop 238, per-segment mean removed, one-sided
  PSD density) and ``log(S + 1e-7) / 12``, in float64, cast to float32 (:func:`ezvsl_logspec`,
  batched on the device). The data set cuts the centre (:class:`EZVSLDataset`); the transform
  computes the spectrograms.
* frames: evaluation ``Resize((S, S), BICUBIC)`` of the original frame (both sides: the aspect
  ratio is not kept) in the loader, PIL-exact; training ``Resize(R, BICUBIC)`` of the short side
  (R = 246 for S = 224) in the loader, then ``RandomCrop(S)`` and ``RandomHorizontalFlip`` drawn
  from the step's generator and applied batched on the device, then ImageNet normalisation.

The waveform the loader gives is float32 ``int16 / 32768`` (soundfile's reading of 16-bit PCM);
the front-end rounds it back to the 16-bit grid (exact for 16-bit files; a stereo downmix is
rounded as libswresample's ``s16p`` mono conversion does, to within its 0.5 LSB) and divides by
32767 as the authors' ``np.iinfo(int16).max`` does.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from avssl.augment.image import normalize, to_float
from avssl.data.audio import tile_to_duration
from avssl.data.batch import batch_rate
from avssl.data.datasets import AVFrameAudioDataset, resize_short
from avssl.data.manifest import Record
from avssl.distributed import shard_rows

__all__ = ["EZVSLDataset", "EZVSLBatchTransform", "ezvsl_dataset", "ezvsl_infer", "ezvsl_logspec",
           "centre_cut", "tukey_window", "square_frame", "random_crop_flip"]

NPERSEG, NOVERLAP, LOG_EPS, SPEC_SCALE = 512, 274, 1e-7, 12.0


# ----------------------------------------------------------------------------- audio
def centre_cut(wave: Tensor, sample_rate: int, seconds: float = 3.0) -> Tensor:
    """``(N,)`` -> ``(int(seconds * sr),)``: the authors' centre clip. Start ``t0 = max(D/2 - seconds/2, 0)``
    (``D = N / sr``), ``floor(t0 * sr)`` samples in, in exact rational arithmetic (float arithmetic
    would give 2399 for a 3.3 s clip at 16 kHz; the authors' run starts at sample 2400); then
    tiled ``int(target / n) + 1`` times when shorter and cut to the target."""
    n = wave.shape[-1]
    if n == 0:
        raise ValueError("centre_cut got an empty waveform")
    start = math.floor(max(Fraction(n, 2) - Fraction(seconds) * sample_rate / 2, Fraction(0)))
    wave = wave[..., start:start + int(seconds * sample_rate)]
    return tile_to_duration(wave, sample_rate, seconds)


@functools.lru_cache(maxsize=8)
def _tukey_cpu(size: int, alpha: float) -> Tensor:
    m = size + 1  # periodic: the symmetric window of size + 1, last point dropped
    n = np.arange(m, dtype=np.float64)
    width = int(np.floor(alpha * (m - 1) / 2.0))
    w = np.ones(m, dtype=np.float64)
    lo, hi = n[: width + 1], n[m - width - 1:]
    w[: width + 1] = 0.5 * (1 + np.cos(np.pi * (-1 + 2.0 * lo / alpha / (m - 1))))
    w[m - width - 1:] = 0.5 * (1 + np.cos(np.pi * (-2.0 / alpha + 1 + 2.0 * hi / alpha / (m - 1))))
    return torch.from_numpy(w[:-1].copy())


def tukey_window(size: int = NPERSEG, alpha: float = 0.25, device: torch.device | str = "cpu") -> Tensor:
    """scipy's periodic ``tukey(size, alpha, sym=False)`` in float64."""
    return _tukey_cpu(size, alpha).to(device)


def ezvsl_logspec(wave: Tensor, sample_rate: int, quantise: bool = True) -> Tensor:
    """The authors' log spectrogram, batched: ``(B, N)`` -> ``(B, 257, T)`` float64 ``log(PSD + 1e-7)``.

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
    frames = x.unfold(-1, NPERSEG, NPERSEG - NOVERLAP)  # (B, T, 512)
    frames = frames - frames.mean(dim=-1, keepdim=True)  # detrend="constant"
    window = tukey_window(NPERSEG, 0.25, x.device)
    spec = torch.fft.rfft(frames * window, n=NPERSEG, dim=-1)
    power = (spec.real.square() + spec.imag.square()) / (sample_rate * window.square().sum())
    power[..., 1:-1] *= 2.0  # one-sided density: every bin but DC and Nyquist doubled
    return torch.log(power + LOG_EPS).transpose(-1, -2)


# ----------------------------------------------------------------------------- data set
def square_frame(frame: np.ndarray, size: int) -> Tensor:
    """uint8 ``(H, W, 3)`` -> uint8 ``(3, size, size)``: the test transform's ``Resize((size, size),
    BICUBIC)`` (PIL, antialiased, aspect ratio not kept); ToTensor + ImageNet normalisation
    (:class:`EZVSLBatchTransform`) then give the authors' tensor."""
    frame = np.ascontiguousarray(frame)
    if frame.shape[:2] != (size, size):
        frame = np.asarray(Image.fromarray(frame).resize((size, size), Image.BICUBIC))
    return torch.from_numpy(np.array(frame, dtype=np.uint8)).permute(2, 0, 1).contiguous()


class EZVSLDataset(AVFrameAudioDataset):
    """:class:`~avssl.data.datasets.AVFrameAudioDataset` with EZ-VSL's frames and audio.

    ``image``: the original frame resized to ``(S, S)`` (PIL bicubic, both sides) - the test
    transform. With ``train_resize`` (training sets) also ``full``: the frame with its short side
    resized to ``train_resize`` (PIL bicubic), where the transform draws the random crop.
    ``wave``: the centre ``seconds`` of the recording (:func:`centre_cut`).
    """

    def __init__(self, records: Sequence[Record], *args, train_resize: int | None = None, **kwargs) -> None:
        self.train_resize = train_resize
        super().__init__(records, *args, **kwargs)

    def sample(self, r: Record, frame: np.ndarray, wave: np.ndarray, sr: int) -> dict:
        out = {"id": r.id, "image": square_frame(frame, self.image_size),
               **self.audio_fields(wave, sr), "label": self.label_of(r), "target": self.target_of(r),
               "frame_hw": (int(frame.shape[0]), int(frame.shape[1]))}
        if self.train_resize is not None:
            out["full"] = resize_short(frame, self.train_resize, "pil_bicubic")
        return out

    def audio_fields(self, wave: np.ndarray, sr: int) -> dict:
        w = centre_cut(torch.from_numpy(np.asarray(wave, dtype=np.float32)), sr, self.seconds)
        return {"wave": w.contiguous(), "num_samples": int(w.shape[-1]), "sample_rate": int(sr)}


def _train_resize(cfg) -> int:
    c = cfg.ezvsl
    return int(c.train_resize * c.image_size / 224)


def ezvsl_dataset(records: Sequence[Record], cfg, train: bool, classes: Sequence[str] | None = None) -> EZVSLDataset:
    """The data set of a :class:`avssl.train_config.TrainConfig` ``cfg`` (its ``data`` and ``ezvsl`` parts).

    The audio length is ``data.seconds`` (3 s: the authors'); frames are ``ezvsl.image_size`` squares (and the
    short-side ``train_resize`` frame for training sets)."""
    d, c = cfg.data, cfg.ezvsl
    return EZVSLDataset(
        records, image_size=c.image_size, seconds=d.seconds, sample_rate=d.sample_rate,
        frame_time=d.frame_time, frame_index=d.frame_index, classes=classes,
        cache_in_memory=d.cache_in_memory, on_error=d.on_error, workers=max(1, d.num_workers),
        random_frames=d.random_frames(train), train_resize=_train_resize(cfg) if train else None)


# ----------------------------------------------------------------------------- transform
def random_crop_flip(full: Tensor, hw: Tensor, size: int, generator: torch.Generator | None = None,
                     shard: tuple[int, int] = (0, 1)) -> Tensor:
    """torchvision ``RandomCrop(size)`` + ``RandomHorizontalFlip()`` of each frame, batched.

    Args:
        full: (B, 3, H, W) frames, each at the top left of a zero canvas; hw: (B, 2) their sizes.
        generator: CPU generator the offsets and flips are drawn from (for the global batch of
            ``world * B`` frames; this rank keeps its rows).
    Returns:
        (B, 3, size, size), same dtype as ``full``.
    """
    b, device = full.shape[0], full.device
    n = b * shard[1]
    u = shard_rows(torch.rand(n, 3, generator=generator, dtype=torch.float64), shard).to(device)
    hw = hw.to(device)
    if bool((hw < size).any()):
        raise ValueError(f"a frame is smaller than the {size} px crop: sizes {hw.tolist()}")
    top = (u[:, 0] * (hw[:, 0] - size + 1)).long()
    left = (u[:, 1] * (hw[:, 1] - size + 1)).long()
    flip = u[:, 2] < 0.5
    ar = torch.arange(size, device=device)
    rows = top[:, None] + ar
    cols = left[:, None] + torch.where(flip[:, None], size - 1 - ar, ar)
    bidx = torch.arange(b, device=device)[:, None, None]
    return full.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


class EZVSLBatchTransform:
    """Collated batch -> ``{"image": (B, 3, S, S) normalised, "spec": (B, 1, 257, T) float32}`` on ``device``."""

    def __init__(self, image_size: int = 224, device: torch.device | str = "cpu") -> None:
        self.image_size = image_size
        self.device = torch.device(device)

    @classmethod
    def from_config(cls, cfg, device: torch.device | str) -> EZVSLBatchTransform:
        return cls(cfg.ezvsl.image_size, device)

    def __call__(self, batch: Mapping, generator: torch.Generator | None = None,
                 train: bool = False, shard: tuple[int, int] = (0, 1)) -> dict[str, Tensor]:
        if train and "full" in batch:
            image = random_crop_flip(batch["full"].to(self.device, non_blocking=True), batch["full_hw"],
                                     self.image_size, generator, shard)
        else:
            image = batch["image"].to(self.device, non_blocking=True)
        image = normalize(to_float(image))
        rate = batch_rate(batch, "a training batch" if train else "an evaluation batch")
        wave = batch["wave"].to(self.device, non_blocking=True)
        spec = (ezvsl_logspec(wave, rate) / SPEC_SCALE).float().unsqueeze(1)
        return {"image": image.contiguous(), "spec": spec.contiguous()}


def ezvsl_infer(model: nn.Module, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Evaluation outputs of an EZ-VSL model for one batch (:meth:`EZVSL.infer`)."""
    return model.infer(inputs["image"], inputs["spec"])

