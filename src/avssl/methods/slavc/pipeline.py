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

from torch import Tensor, nn

from avssl.data.manifest import Record
from avssl.models.mil_pipeline import SPEC_SCALE, MILBatchTransform, MILDataset, mil_dataset

__all__ = ["SLAVCBatchTransform", "slavc_dataset", "slavc_infer", "slavc_param_groups", "SPEC_SCALE"]



def slavc_dataset(records: Sequence[Record], cfg, train: bool, classes: Sequence[str] | None = None) -> MILDataset:
    """The data set of a run config ``cfg`` (its ``data`` and ``slavc`` parts)."""
    return mil_dataset(records, cfg, "slavc", train, classes)


class SLAVCBatchTransform(MILBatchTransform):
    """SLAVC's batch transform: the family's (:class:`avssl.models.mil.MILBatchTransform`)."""

    section = "slavc"


def slavc_infer(model: nn.Module, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Evaluation outputs of a SLAVC model for one batch (:meth:`SLAVC.infer`)."""
    return model.infer(inputs["image"], inputs["spec"])


def slavc_param_groups(model: nn.Module, cfg) -> list[dict]:
    """One group of the online parameters: the momentum copies follow by EMA, not the optimiser."""
    net = getattr(model, "module", model)
    return [{"params": net.online_parameters(), "lr_scale": 1.0}]
