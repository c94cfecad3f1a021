"""EZ-VSL's data side: the loader's data set, the batched on-device transform, and inference.

The authors' loader (docs/methods.md, EZ-VSL section), reproduced:

* audio: the **centre** ``seconds`` (3 s) of each clip at its native rate, as 16-bit PCM over
  32767, clipped to [-1, 1], tiled when shorter; then scipy's ``spectrogram(x, fs, nperseg=512,
  noverlap=274)`` (periodic Tukey(0.25) window, hop 238, per-segment mean removed, one-sided
  PSD density) and ``log(S + 1e-7) / 12``, in float64, cast to float32 (:func:`ezvsl_logspec`,
  batched on the device). The data set cuts the centre (:class:`EZVSLDataset`); the transform
  computes the spectrograms. The front-end (:func:`avssl.data.audio.centre_cut`,
  :func:`avssl.data.audio.scipy_logspec`) and the crop (:func:`avssl.augment.crop.random_crop_flip`)
  are shared with FNAC; their EZ-VSL names are re-exported here.
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

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from avssl.augment.crop import random_crop_flip
from avssl.augment.image import normalize, to_float
from avssl.data.audio import (
    LOGSPEC_EPS,
    SCIPY_NOVERLAP,
    SCIPY_NPERSEG,
    centre_cut,
    scipy_logspec,
    tukey_window,
)
from avssl.data.batch import batch_rate
from avssl.data.datasets import AVFrameAudioDataset, resize_short
from avssl.data.manifest import Record

__all__ = ["EZVSLDataset", "EZVSLBatchTransform", "ezvsl_dataset", "ezvsl_infer", "ezvsl_logspec",
           "centre_cut", "tukey_window", "square_frame", "random_crop_flip"]

NPERSEG, NOVERLAP, LOG_EPS, SPEC_SCALE = SCIPY_NPERSEG, SCIPY_NOVERLAP, LOGSPEC_EPS, 12.0


# ----------------------------------------------------------------------------- audio
# the front-end is the EZ-VSL family's (avssl.data.audio, shared with FNAC); EZ-VSL's names kept
ezvsl_logspec = scipy_logspec


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

