"""The EZ-VSL family's data side, shared by EZ-VSL, FNAC and SLAVC: :class:`MILDataset` (the
test frame as a PIL-bicubic square, the training frame's short side resized for the crop, the
centre-cut audio) and :class:`MILBatchTransform` (the batched crop + flip and the scipy
log-spectrogram on the device). The networks and losses are in :mod:`avssl.models.mil`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from avssl.augment.crop import random_crop_flip
from avssl.augment.image import normalize, to_float
from avssl.data.audio import centre_cut, scipy_logspec
from avssl.data.batch import batch_rate
from avssl.data.datasets import AVFrameAudioDataset, resize_short

__all__ = ["square_frame", "MILDataset", "mil_dataset", "SPEC_SCALE", "MILBatchTransform"]


def square_frame(frame: np.ndarray, size: int) -> Tensor:
    """uint8 ``(H, W, 3)`` -> uint8 ``(3, size, size)``: the test transform's ``Resize((size, size),
    BICUBIC)`` (PIL, antialiased, aspect ratio not kept); ToTensor + ImageNet normalisation
    (the family's batch transforms) then give the authors' tensor."""
    frame = np.ascontiguousarray(frame)
    if frame.shape[:2] != (size, size):
        frame = np.asarray(Image.fromarray(frame).resize((size, size), Image.BICUBIC))
    return torch.from_numpy(np.array(frame, dtype=np.uint8)).permute(2, 0, 1).contiguous()


class MILDataset(AVFrameAudioDataset):
    """:class:`~avssl.data.datasets.AVFrameAudioDataset` with the EZ-VSL family's frames and audio.

    ``image``: the original frame resized to ``(S, S)`` (PIL bicubic, both sides: the test
    transform); with ``train_resize`` also ``full``, the short side resized to ``train_resize``
    (PIL bicubic), where the batch transform draws the crop. ``wave``: the centre ``seconds``
    (:func:`avssl.data.audio.centre_cut`).
    """

    def __init__(self, records: Sequence, *args, train_resize: int | None = None, **kwargs) -> None:
        self.train_resize = train_resize
        super().__init__(records, *args, **kwargs)

    def sample(self, r, frame: np.ndarray, wave: np.ndarray, sr: int) -> dict:
        out = {"id": r.id, "image": square_frame(frame, self.image_size),
               **self.audio_fields(wave, sr), "label": self.label_of(r), "target": self.target_of(r),
               "frame_hw": (int(frame.shape[0]), int(frame.shape[1]))}
        if self.train_resize is not None:
            out["full"] = resize_short(frame, self.train_resize, "pil_bicubic")
        return out

    def audio_fields(self, wave: np.ndarray, sr: int) -> dict:
        w = centre_cut(torch.from_numpy(np.asarray(wave, dtype=np.float32)), sr, self.seconds)
        return {"wave": w.contiguous(), "num_samples": int(w.shape[-1]), "sample_rate": int(sr)}


def mil_dataset(records: Sequence, cfg, section: str, train: bool, classes: Sequence[str] | None = None
                ) -> MILDataset:
    """The :class:`MILDataset` of a run config ``cfg`` (its ``data`` part and method section
    ``section``, which has ``image_size`` and ``train_resize``)."""
    d, c = cfg.data, getattr(cfg, section)
    return MILDataset(
        records, image_size=c.image_size, seconds=d.seconds, sample_rate=d.sample_rate,
        frame_time=d.frame_time, frame_index=d.frame_index, classes=classes,
        cache_in_memory=d.cache_in_memory, on_error=d.on_error, workers=max(1, d.num_workers),
        random_frames=d.random_frames(train),
        train_resize=int(c.train_resize * c.image_size / 224) if train else None)


#: The EZ-VSL family's spectrogram scale: the model sees ``log(PSD + 1e-7) / 12``.
SPEC_SCALE = 12.0


class MILBatchTransform:
    """Collated batch -> ``{"image": (B, 3, S, S) normalised, "spec": (B, 1, 257, T) float32}`` on
    ``device``, the EZ-VSL family's (subclasses name their config ``section``): training frames
    are a random crop + horizontal flip of ``full`` (:func:`avssl.augment.crop.random_crop_flip`,
    drawn for the global batch from the step's generator), evaluation frames the ``image`` square;
    audio :func:`avssl.data.audio.scipy_logspec` at the batch's one rate, divided by :data:`SPEC_SCALE`."""

    section = "ezvsl"

    def __init__(self, image_size: int = 224, device: torch.device | str = "cpu") -> None:
        self.image_size = image_size
        self.device = torch.device(device)

    @classmethod
    def from_config(cls, cfg, device: torch.device | str):
        return cls(getattr(cfg, cls.section).image_size, device)

    def frames(self, batch: Mapping, generator: torch.Generator | None, train: bool,
               shard: tuple[int, int]) -> Tensor:
        """The batch's uint8 frames as the model sees them (before normalisation)."""
        if train and "full" in batch:
            return random_crop_flip(batch["full"].to(self.device, non_blocking=True), batch["full_hw"],
                                    self.image_size, generator, shard)
        return batch["image"].to(self.device, non_blocking=True)

    def spectrogram(self, batch: Mapping, generator: torch.Generator | None, train: bool) -> Tensor:
        rate = batch_rate(batch, "a training batch" if train else "an evaluation batch")
        logspec = scipy_logspec(batch["wave"].to(self.device, non_blocking=True), rate)
        return (logspec / SPEC_SCALE).float().unsqueeze(1)

    def __call__(self, batch: Mapping, generator: torch.Generator | None = None,
                 train: bool = False, shard: tuple[int, int] = (0, 1)) -> dict[str, Tensor]:
        image = normalize(to_float(self.frames(batch, generator, train, shard)))
        return {"image": image.contiguous(), "spec": self.spectrogram(batch, generator, train).contiguous()}
