"""SLAVC's data side: the loader's data set, the batched on-device transform, inference and the
optimiser's parameters (docs/methods.md, SLAVC section).

The authors' loader is EZ-VSL's (their ``datasets.py`` is the same code):

* audio: the centre ``seconds`` (3 s; their ``audio_dur=5.`` is stored but never used) at the
  native rate, scipy's spectrogram and ``log(S + 1e-7) / 12`` (:func:`avssl.data.audio.centre_cut`,
  :func:`avssl.data.audio.scipy_logspec`); no audio augmentation;
* frames: evaluation ``Resize((S, S), BICUBIC)`` (both sides) in the loader
  (:class:`avssl.models.mil.MILDataset`); training ``Resize(246 S / 224)`` of the short side in
  the loader, then ``RandomCrop(S)`` and ``RandomHorizontalFlip`` drawn from the step's generator
  on the device (:func:`avssl.augment.crop.random_crop_flip`), then ImageNet normalisation.

Inference follows the test script's options (``slavc.relative_prediction``, ``slavc.mom_eval``;
:meth:`SLAVC.test_maps` gives all four variants' maps, thresholds and confidences).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from avssl.augment.crop import random_crop_flip
from avssl.augment.image import normalize, to_float
from avssl.data.audio import scipy_logspec
from avssl.data.batch import batch_rate
from avssl.data.manifest import Record
from avssl.models.mil import MILDataset, mil_dataset

__all__ = ["SLAVCBatchTransform", "slavc_dataset", "slavc_infer", "slavc_param_groups", "SPEC_SCALE"]

SPEC_SCALE = 12.0


def slavc_dataset(records: Sequence[Record], cfg, train: bool, classes: Sequence[str] | None = None) -> MILDataset:
    """The data set of a run config ``cfg`` (its ``data`` and ``slavc`` parts)."""
    return mil_dataset(records, cfg, "slavc", train, classes)


class SLAVCBatchTransform:
    """Collated batch -> ``{"image": (B, 3, S, S) normalised, "spec": (B, 1, 257, T) float32}`` on ``device``.

    Training: a random crop and horizontal flip of ``full`` (the step's generator, global-batch draws)."""

    def __init__(self, image_size: int = 224, device: torch.device | str = "cpu") -> None:
        self.image_size = image_size
        self.device = torch.device(device)

    @classmethod
    def from_config(cls, cfg, device: torch.device | str) -> SLAVCBatchTransform:
        return cls(cfg.slavc.image_size, device)

    def __call__(self, batch: Mapping, generator: torch.Generator | None = None,
                 train: bool = False, shard: tuple[int, int] = (0, 1)) -> dict[str, Tensor]:
        if train and "full" in batch:
            image = random_crop_flip(batch["full"].to(self.device, non_blocking=True), batch["full_hw"],
                                     self.image_size, generator, shard)
        else:
            image = batch["image"].to(self.device, non_blocking=True)
        image = normalize(to_float(image))
        rate = batch_rate(batch, "a training batch" if train else "an evaluation batch")
        logspec = scipy_logspec(batch["wave"].to(self.device, non_blocking=True), rate)
        spec = (logspec / SPEC_SCALE).float().unsqueeze(1)
        return {"image": image.contiguous(), "spec": spec.contiguous()}


def slavc_infer(model: nn.Module, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Evaluation outputs of a SLAVC model for one batch (:meth:`SLAVC.infer`)."""
    return model.infer(inputs["image"], inputs["spec"])


def slavc_param_groups(model: nn.Module, cfg) -> list[dict]:
    """One group of the online parameters: the momentum copies follow by EMA, not the optimiser."""
    net = getattr(model, "module", model)
    return [{"params": net.online_parameters(), "lr_scale": 1.0}]
