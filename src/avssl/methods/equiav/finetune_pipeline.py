"""EquiAV fine-tuning's data and training side (docs/methods.md §2.7): data set, batched transform, loss
module, whole-set evaluation, optimiser groups and balanced-sampling weights.

The loader returns one uint8 frame and the zero-padded waveform (at the file's own rate unless
``data.sample_rate`` sets one) with its true length
(:class:`avssl.data.datasets.AVFrameAudioDataset`, ``audio_pad="zero"``);
:class:`EquiAVFinetuneTransform` builds the model inputs batched on the training device:

* audio: mean removal, Kaldi fbank, pad/cut to ``audio_length`` frames, normalisation
  (:func:`avssl.data.audio.equiav_fbank_batch`, equal clip by clip to the per-clip front-end);
  training adds the circular time roll U{-T..T-1} after normalising. SpecAugment stays off,
  as it is (silently) in the released fine-tuning (docs/methods.md §2.8).
* frames: Resize (bicubic) + CenterCrop + ImageNet normalisation; no augmentation besides
  mixup, as in the original. The frame is ``data.frame_index`` (default: the middle one, i.e.
  index 5 of 0..9, the original's test frame) in training too: the original's uniformly random
  training frame is not reproduced.
* mixup (training, probability ``mixup_p`` per clip, lambda ~ Beta(alpha, alpha)): as in the
  original, the *waveforms* (each centred first; the partner cut/zero-padded to the clip's
  length), the frames and the targets are mixed with the same lambda. Difference: the partner
  is not a random clip of the data set but the neighbouring row of the (shuffled) batch —
  rows 2k and 2k+1 are each other's partner (each draws its own flag and lambda; an odd last
  row has no partner and is left as is).

All random draws come from the step ``generator`` for the whole global batch of
``world x B`` rows and are sliced with :func:`avssl.distributed.shard_rows`, so the
ranks of a torchrun job together equal one process on the concatenated batch (for even B).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avssl import distributed as dist_utils
from avssl.augment.audio import time_roll
from avssl.augment.recipes import EvalTransform
from avssl.data.audio import equiav_fbank_batch, subtract_valid_mean
from avssl.data.datasets import AVFrameAudioDataset
from avssl.data.labels import read_class_list, read_sample_weights
from avssl.data.manifest import Record
from avssl.distributed import shard_rows
from avssl.eval.classification import classification_summary
from avssl.methods.base import run_batches
from avssl.methods.equiav.pipeline import equiav_clip_dataset
from avssl.precision import amp_settings

logger = logging.getLogger(__name__)

__all__ = [
    "equiav_ft_dataset", "EquiAVFinetuneTransform", "FinetuneLoss", "finetune_train_module",
    "finetune_evaluate", "finetune_param_groups", "finetune_sample_weights", "sample_beta", "check_config",
]


def check_config(cfg) -> None:
    """Option combinations fine-tuning cannot run (the registry's ``validate`` hook)."""
    if cfg.data.train_crop != "load_size":
        raise ValueError("data.train_crop=original does not apply to equiav_ft: fine-tuning draws no "
                         "random crop (its frames are the Resize + CenterCrop square)")


def equiav_ft_dataset(records: Sequence[Record], cfg, train: bool, classes: Sequence[str] | None = None
                      ) -> AVFrameAudioDataset:
    """The data set of a TrainConfig ``cfg`` (``data`` and ``equiav_ft``): audio at each file's own
    rate unless ``data.sample_rate`` sets one, zero-padded audio, classes = every label of ``records``
    (sorted) unless given. Raises ValueError when their number differs from ``ft.num_classes``."""
    d, ft = cfg.data, cfg.equiav_ft
    if classes is None:
        if ft.class_list:
            classes = read_class_list(ft.class_list)
            known = set(classes)
            unknown = sorted({label for r in records for label in r.labels if label not in known})
            if unknown:
                logger.warning("%d labels of the records are not in %s and are ignored, e.g. %s",
                               len(unknown), ft.class_list, unknown[:5])
        else:
            classes = sorted({label for r in records for label in r.labels})
    if len(classes) != ft.ft.num_classes:
        source = ft.class_list or "the training records"
        raise ValueError(f"{source} gives {len(classes)} classes but equiav_ft.ft.num_classes="
                         f"{ft.ft.num_classes}; set equiav_ft.ft.num_classes={len(classes)}"
                         + ("" if ft.class_list else " or equiav_ft.class_list (classes absent from training)"))
    return equiav_clip_dataset(records, d, ft.backbone.img_size, train, classes)


def sample_beta(n: int, alpha: float, generator: torch.Generator | None = None) -> Tensor:
    """(n,) float32 draws of Beta(alpha, alpha) from ``generator`` (X / (X + Y), X, Y ~ Gamma(alpha)).

    Gamma by Marsaglia-Tsang, vectorised: 4 proposals per draw at once (acceptance > 95 % each for
    shape >= 1; a shortfall is redrawn); shape < 1 uses Gamma(a + 1) * U^(1/a).
    """
    g = _gamma(2 * n, alpha, generator)
    x, y = g[:n], g[n:]
    return (x / (x + y)).float()


def _gamma(n: int, shape: float, generator: torch.Generator | None) -> Tensor:
    boost = shape < 1.0
    a = shape + 1.0 if boost else shape
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(n, dtype=torch.float64)
    todo = torch.arange(n)
    while todo.numel():
        k = 4
        z = torch.randn(todo.numel(), k, generator=generator, dtype=torch.float64)
        u = torch.rand(todo.numel(), k, generator=generator, dtype=torch.float64)
        v = (1.0 + c * z) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        any_ok = ok.any(1)
        first = ok.double().argmax(1)
        val = d * v.gather(1, first[:, None])[:, 0]
        out[todo[any_ok]] = val[any_ok]
        todo = todo[~any_ok]
    if boost:
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        out = out * u.pow(1.0 / shape)
    return out


class EquiAVFinetuneTransform:
    """Collated batch -> ``{"a": (B, 3, T, F), "v": (B, 3, S, S), "target": (B, C)}`` on ``device``.

    Args:
        image_size: ``S``; audio_length: ``T`` fbank frames; num_mel_bins: ``F``.
        stats: fbank normalisation statistics; mixup_p, mixup_alpha, time_roll: training
            augmentation (see the module docstring).
    """

    def __init__(self, image_size: int = 224, audio_length: int = 1024, num_mel_bins: int = 128,
                 stats: str = "audioset", mixup_p: float = 0.5, mixup_alpha: float = 10.0,
                 time_roll: bool = True, device: torch.device | str = "cpu") -> None:
        self.image_size, self.audio_length, self.num_mel_bins = image_size, audio_length, num_mel_bins
        self.stats, self.mixup_p, self.mixup_alpha, self.time_roll = stats, mixup_p, mixup_alpha, time_roll
        self.device = torch.device(device)
        self.frames = EvalTransform(image_size)

    @classmethod
    def from_config(cls, cfg, device: torch.device | str) -> EquiAVFinetuneTransform:
        f = cfg.equiav_ft
        return cls(f.backbone.img_size, f.backbone.audio_length, f.backbone.num_mel_bins, f.fbank_stats,
                   f.mixup_p, f.mixup_alpha, f.time_roll, device)

    def draw(self, rows: int, generator: torch.Generator | None) -> dict[str, Tensor]:
        """Training draws for ``rows`` clips (the global batch): mix flag, lambda, roll shift."""
        mix = torch.rand(rows, generator=generator) < self.mixup_p
        lam = sample_beta(rows, self.mixup_alpha, generator)
        t = self.audio_length
        shift = torch.randint(-t, t, (rows,), generator=generator)
        return {"mix": mix, "lam": torch.where(mix, lam, torch.ones_like(lam)), "shift": shift}

    def __call__(self, batch: Mapping, generator: torch.Generator | None = None,
                 train: bool = False, shard: tuple[int, int] = (0, 1)) -> dict[str, Tensor]:

        wave = batch["wave"].to(self.device, non_blocking=True).float()
        n = batch["num_samples"].to(self.device)
        target = batch["target"].to(self.device).float()
        v = self.frames(batch["image"].to(self.device, non_blocking=True))
        b = wave.shape[0]
        lam = shift = None
        if train:
            draws = {k: shard_rows(x, shard).to(self.device) for k, x in self.draw(b * shard[1], generator).items()}
            lam, shift = draws["lam"], draws["shift"]
            if self.mixup_p > 0:
                wave, v, target = self._mixup(wave, n, v, target, lam)
        a = equiav_fbank_batch(wave, n, batch["sample_rate"], self.audio_length, self.stats, self.num_mel_bins)
        a = a[:, None].expand(-1, 3, -1, -1)
        if train and self.time_roll:
            a = time_roll(a, shift, torch.ones_like(shift, dtype=torch.bool))
        a = a.contiguous()
        out = {"a": a, "v": v.contiguous(), "target": target}
        if lam is not None:
            out["lam"] = lam
        return out

    @staticmethod
    def partner(b: int, device: torch.device | None = None) -> Tensor:
        """(b,) partner rows: 2k <-> 2k+1; an odd last row is its own partner."""
        p = torch.arange(b, device=device) ^ 1
        return torch.where(p < b, p, torch.arange(b, device=device))

    def _mixup(self, wave: Tensor, n: Tensor, v: Tensor, target: Tensor, lam: Tensor
               ) -> tuple[Tensor, Tensor, Tensor]:
        p = self.partner(wave.shape[0], wave.device)
        valid = torch.arange(wave.shape[1], device=wave.device)[None] < n[:, None]
        centred = subtract_valid_mean(wave, n)
        l1 = lam[:, None]
        wave = torch.where(valid, l1 * centred + (1 - l1) * centred[p], 0.0)  # partner cut to this clip's length
        v = lam[:, None, None, None] * v + (1 - lam[:, None, None, None]) * v[p]
        target = l1 * target + (1 - l1) * target[p]
        return wave, v, target


class FinetuneLoss(nn.Module):
    """Training module: ``forward(inputs, generator=None) -> {"loss", "acc"}``.

    ``loss`` is BCE-with-logits (mean over clips and classes, the released recipe) or soft-target
    cross-entropy (targets renormalised per row); ``acc`` is the batch's top-1 accuracy against
    the target's argmax (a logged term, no gradient).
    """

    def __init__(self, model: nn.Module, loss: str = "bce") -> None:
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, inputs: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        logits = self.model(inputs["a"], inputs["v"])
        target = inputs["target"].to(logits.dtype)
        if self.loss == "bce":
            loss = F.binary_cross_entropy_with_logits(logits.float(), target.float())
        else:
            soft = target.float() / target.float().sum(1, keepdim=True).clamp_min(1e-12)
            loss = F.cross_entropy(logits.float(), soft)
        acc = (logits.detach().argmax(1) == target.argmax(1)).float().mean()
        return {"loss": loss, "acc": acc}


def finetune_train_module(model: nn.Module, cfg) -> FinetuneLoss:
    return FinetuneLoss(model, cfg.equiav_ft.loss)


@torch.no_grad()
def finetune_evaluate(model: nn.Module, loader, transform, device: torch.device, cfg) -> dict[str, float]:
    """Classification metrics over the whole val/test set: each rank scores its shard, the logits
    are gathered (clips seen twice, e.g. a padded distributed sampler's, counted once).

    Returns ``{"mAP", "mAUC", "d_prime", "accuracy", "loss", "classes_scored",
    "classes_without_positives", "clips"}`` (see :mod:`avssl.eval.classification`).
    """
    use_amp, amp_dtype, _ = amp_settings(cfg.train, device)

    def step(batch):
        inputs = transform(batch, None, train=False)
        with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
            out = model(inputs["a"], inputs["v"])
        return {"logits": out.float(), "target": inputs["target"].float(), "id": batch["id"]}

    rows = run_batches(model, loader, step, to_cpu=False)  # gathered on the device (NCCL)
    if not rows:  # this rank's shard is empty (fewer val clips than ranks)
        c = model.cfg.num_classes
        rows = {"logits": torch.zeros(0, c, device=device), "target": torch.zeros(0, c, device=device), "id": []}
    ids = rows["id"]
    all_logits, all_targets = (dist_utils.all_gather_rows(rows["logits"]),
                                dist_utils.all_gather_rows(rows["target"]))
    if all_logits.shape[0] == 0:
        raise ValueError("the evaluation set is empty")
    all_ids = [i for part in dist_utils.all_gather_object(ids) for i in part]
    first: dict[str, int] = {}
    for i, cid in enumerate(all_ids):
        first.setdefault(cid, i)
    keep = torch.tensor(sorted(first.values()), device=all_logits.device)
    all_logits, all_targets = all_logits[keep], all_targets[keep]
    summary = classification_summary(all_logits, all_targets)
    summary["loss"] = float(F.binary_cross_entropy_with_logits(all_logits, all_targets))
    summary["clips"] = int(all_logits.shape[0])
    return summary


def finetune_param_groups(model: nn.Module, cfg) -> list[dict]:
    """Two groups: the classifier head (lr scale ``equiav_ft.head_lr``: 1 by default, docs/methods.md §2.8)
    and everything else (scale 1)."""
    head = {id(p) for p in model.head_parameters()}
    rest = [p for p in model.parameters() if id(p) not in head and p.requires_grad]
    groups = [{"params": rest, "lr_scale": 1.0, "name": "backbone"}] if rest else []
    groups.append({"params": [p for p in model.head_parameters() if p.requires_grad],
                   "lr_scale": float(cfg.equiav_ft.head_lr), "name": "head"})
    return groups


def finetune_sample_weights(dataset: AVFrameAudioDataset, cfg) -> Tensor | None:
    """``equiav_ft.sample_weights`` read for ``dataset`` (None when unset)."""
    path = cfg.equiav_ft.sample_weights
    if not path:
        return None
    if getattr(dataset, "skipped", None):
        raise ValueError(f"sample weights file {path} follows the manifest order, but {len(dataset.skipped)} "
                         "clips were skipped (data.on_error=skip); remove them from the manifest and the file")
    return read_sample_weights(path, len(dataset))
