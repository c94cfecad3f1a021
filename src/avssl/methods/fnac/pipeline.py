"""FNAC's data side: the loader's data set, the batched on-device transform, inference and the
per-epoch hook (docs/methods.md, FNAC section).

The authors' loader is EZ-VSL's with two training changes:

* audio: the centre ``seconds`` (3 s) at the native rate, scipy's spectrogram and ``log(S + 1e-7)``
  (:func:`avssl.data.audio.centre_cut` / :func:`avssl.data.audio.scipy_logspec`, shared with
  EZ-VSL), then for training a frequency mask and a time mask (zero fill, on the log
  spectrogram before the ``/ 12``) with the authors' quirks, batched (:func:`spec_masks_fnac`);
* frames: evaluation ``Resize((S, S), BICUBIC)`` (both sides) in the loader; training
  ``Resize(246 S / 224)`` of the short side in the loader, then ``RandomCrop(S)`` on the device
  **without** the horizontal flip (commented out in the authors' code).
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
from avssl.distributed import shard_rows
from avssl.models.mil_pipeline import SPEC_SCALE, MILDataset, mil_dataset

__all__ = ["FNACDataset", "FNACBatchTransform", "fnac_dataset", "fnac_infer", "fnac_on_epoch_end",
           "spec_masks_fnac", "SPEC_SCALE"]


# ----------------------------------------------------------------------------- data set
FNACDataset = MILDataset  # the EZ-VSL family's data set (avssl.models.mil)


def fnac_dataset(records: Sequence[Record], cfg, train: bool, classes: Sequence[str] | None = None) -> MILDataset:
    """The data set of a run config ``cfg`` (its ``data`` and ``fnac`` parts)."""
    return mil_dataset(records, cfg, "fnac", train, classes)


# ----------------------------------------------------------------------------- transform
def spec_masks_fnac(logspec: Tensor, freq_width: int = 10, time_width: int = 10,
                    generator: torch.Generator | None = None, shard: tuple[int, int] = (0, 1)) -> Tensor:
    """The authors' ``FrequencyMask`` then ``TimeMask`` (zero fill) of (B, F, T) log spectrograms, batched.

    Each mask has width ``randrange(1, max_width)`` and a start drawn from the *other* axis'
    length, as in the authors' code: the frequency mask's start is uniform over ``range(T)``
    and zeroes rows ``[start, start + w)`` (empty when ``start >= F``), the time mask's start
    is uniform over ``range(F)`` and zeroes columns ``[start, start + w)`` (nothing when
    ``start >= T``). A width below 2 turns its mask off. Draws are for the global batch.
    """
    b, n_f, n_t = logspec.shape
    u = shard_rows(torch.rand(b * shard[1], 4, generator=generator, dtype=torch.float64), shard).to(logspec.device)
    f_w = (1 + (u[:, 0] * max(freq_width - 1, 0)).long()) * (freq_width > 1)
    f_0 = (u[:, 1] * n_t).long()
    t_w = (1 + (u[:, 2] * max(time_width - 1, 0)).long()) * (time_width > 1)
    t_0 = (u[:, 3] * n_f).long()
    rows = torch.arange(n_f, device=logspec.device)[None]
    cols = torch.arange(n_t, device=logspec.device)[None]
    fm = (rows >= f_0[:, None]) & (rows < (f_0 + f_w)[:, None])
    tm = (cols >= t_0[:, None]) & (cols < (t_0 + t_w)[:, None])
    return logspec.masked_fill(fm[:, :, None] | tm[:, None, :], 0.0)


class FNACBatchTransform:
    """Collated batch -> ``{"image": (B, 3, S, S) normalised, "spec": (B, 1, 257, T) float32}`` on ``device``.

    Training: random crop (no flip) of ``full`` and the spectrogram masks (widths 0 or 1: off)."""

    def __init__(self, image_size: int = 224, device: torch.device | str = "cpu", freq_mask_width: int = 10,
                 time_mask_width: int = 10) -> None:
        self.image_size = image_size
        self.device = torch.device(device)
        self.freq_mask_width, self.time_mask_width = freq_mask_width, time_mask_width

    @classmethod
    def from_config(cls, cfg, device: torch.device | str) -> FNACBatchTransform:
        c = cfg.fnac
        return cls(c.image_size, device, c.freq_mask_width, c.time_mask_width)

    def __call__(self, batch: Mapping, generator: torch.Generator | None = None,
                 train: bool = False, shard: tuple[int, int] = (0, 1)) -> dict[str, Tensor]:
        if train and "full" in batch:
            image = random_crop_flip(batch["full"].to(self.device, non_blocking=True), batch["full_hw"],
                                     self.image_size, generator, shard, flip=False)
        else:
            image = batch["image"].to(self.device, non_blocking=True)
        image = normalize(to_float(image))
        rate = batch_rate(batch, "a training batch" if train else "an evaluation batch")
        logspec = scipy_logspec(batch["wave"].to(self.device, non_blocking=True), rate)
        if train and (self.freq_mask_width > 1 or self.time_mask_width > 1):
            logspec = spec_masks_fnac(logspec, self.freq_mask_width, self.time_mask_width, generator, shard)
        spec = (logspec / SPEC_SCALE).float().unsqueeze(1)
        return {"image": image.contiguous(), "spec": spec.contiguous()}


def fnac_infer(model: nn.Module, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Evaluation outputs of an FNAC model for one batch (:meth:`FNAC.infer`)."""
    return model.infer(inputs["image"], inputs["spec"])


def fnac_on_epoch_end(model: nn.Module, dataset, transform, cfg, epoch: int, device) -> dict:
    """After 0-based ``epoch``: the next epoch is ``epoch + 1`` (the warmup counter; also rebuilt on resume)."""
    net = getattr(model, "module", model)
    net.epoch = epoch + 1
    return {"fnac_warm": float(net.warm)}
