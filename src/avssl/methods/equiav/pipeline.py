"""EquiAV pre-training's data side: the data set, the batched on-device transform, training and inference.

The loader returns one uint8 frame and a zero-padded waveform at the file's own rate (unless
``data.sample_rate`` sets one) with its true length per clip (:mod:`avssl.data.datasets`,
``audio_pad="zero"``); a batch may mix rates (:func:`~avssl.data.datasets.collate_mixed_rates`),
each clip's fbank is computed at its own rate, as the original does per file. :class:`EquiAVBatchTransform` builds the
model inputs on the training device, batched (docs/methods.md §2.1, 2.3):

* audio: the Kaldi fbank of every clip (:func:`avssl.data.audio.equiav_fbank_batch`, normalised
  with ``cfg.equiav.fbank_stats``), repeated to 3 identical channels: ``a`` (B, 3, T, F);
* frames: Resize (short side, bicubic) + CenterCrop + ImageNet normalisation: ``v`` (B, 3, S, S);
* training adds: a random circular time roll of the clean audio (U{-T .. T-1} frames), the
  augmented views ``a_aug`` / ``v_aug`` made by *applying* freshly sampled parameter vectors
  ``t_a`` (B, 24) / ``t_v`` (B, 18 or 21) (:func:`avssl.augment.apply.apply_audio`,
  :func:`avssl.augment.apply.apply_visual`), and S = ``num_centroid`` further vectors per clip
  for the invariant centroid, ``t_a_list`` (B, S, 24) / ``t_v_list`` (B, S, d_v), never applied.

The audio vectors are drawn for the configured (T, F) with the mask widths scaled from the
released 192 / 48 at 1024 x 128; the visual crop for the loaded frame's size, or, with
``data.train_crop="original"``, on each clip's original frame at its own size (as the released
loader crops the PIL frame; resampled as PIL does, and the centroid's vectors drawn for each
clip's size too). The augmented
audio view starts from the un-rolled fbank (its own recorded shift is a no-op under
``aug_original_bugs``, as released).

Every random draw comes from the step's ``generator``, made for the *global* batch (``world`` x B
rows) and sliced with :func:`avssl.distributed.shard_rows`, so the ranks' inputs
concatenated equal one process's inputs for the concatenated batch.

Deviation kept on purpose: the augmented frame is the *same* decoded frame as the clean one. The
released loader decodes a second, independently random frame for the augmented view (docs/methods.md
§2.8), which mixes a temporal change into what the vector ``t_v`` describes.

:func:`equiav_infer` gives the evaluation outputs in one pass (each encoder run once): the
zero-shot localisation map (= ``EquiAV.localise``) and the retrieval embeddings (=
``EquiAV.embed``) with centroid vectors from a fixed-seed generator.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from avssl.augment.apply import apply_audio, apply_visual
from avssl.augment.audio import time_roll
from avssl.augment.params import sample_audio_params, sample_param_lists, sample_visual_params
from avssl.augment.recipes import EvalTransform
from avssl.data.audio import equiav_fbank_batch
from avssl.data.datasets import AVFrameAudioDataset
from avssl.data.manifest import Record
from avssl.distributed import shard_rows

logger = logging.getLogger(__name__)

__all__ = ["EquiAVBatchTransform", "EquiAVTrainModule", "equiav_dataset", "equiav_infer", "INFER_SEED",
           "LOSS_INPUTS"]

INFER_SEED = 0  # seed of the centroid vectors drawn by equiav_infer
LOSS_INPUTS = ("a", "v", "a_aug", "v_aug", "t_a", "t_v", "t_a_list", "t_v_list")


def equiav_dataset(records: Sequence[Record], cfg, train: bool, classes: Sequence[str] | None = None
                   ) -> AVFrameAudioDataset:
    """The data set of a :class:`avssl.train_config.TrainConfig` ``cfg`` (its ``data`` and ``equiav`` parts).

    Audio at each wav's own rate unless ``data.sample_rate`` sets one (the original computes the
    fbank at the file's rate), at 16 kHz when read straight from a video (the rate the authors'
    extraction writes); zero-padded to ``data.seconds`` (10.255 s gives the 1024 frames of
    the recipe at any rate); frames of side ``data.load_size`` (default
    ``equiav.img_size``). ``keep_seconds`` applies to training sets only.
    """
    return equiav_clip_dataset(records, cfg.data, cfg.equiav.img_size, train, classes,
                               full_frame=train and cfg.data.train_crop == "original")


def equiav_clip_dataset(records: Sequence[Record], d, img_size: int, train: bool,
                        classes: Sequence[str] | None = None, full_frame: bool = False) -> AVFrameAudioDataset:
    """EquiAV's clip reading from a :class:`~avssl.train_config.DataConfig` ``d`` (pre-training and
    fine-tuning alike): a wav's own rate unless ``d.sample_rate`` is set, audio read straight from a
    video at 16 kHz (the authors' extraction), zero-padded audio, frames of ``d.load_size or img_size``
    (plus the original frames with ``full_frame``, for the augmented view's crop)."""
    return AVFrameAudioDataset(
        records, image_size=d.load_size or img_size, seconds=d.seconds,
        sample_rate=d.sample_rate, keep_seconds=d.keep_seconds if train else None,
        frame_time=d.frame_time, frame_index=d.frame_index, classes=classes,
        cache_in_memory=d.cache_in_memory, on_error=d.on_error, workers=max(1, d.num_workers),
        audio_pad="zero", frame_resize=d.frame_resize, full_frame=full_frame,
        random_frames=d.random_frames(train),
        video_sample_rate=16000)


class EquiAVBatchTransform:
    """Collated batch -> EquiAV inputs on ``device`` (module docstring).

    Args:
        cfg: the :class:`avssl.methods.equiav.EquiAVConfig` (sizes, ``num_centroid``, ``centroid``,
            ``aug_original_bugs``, ``visual_extended``, ``fbank_stats``).
        device: where the transform runs (the training device).

    Call ``transform(batch, generator=None, train=False, shard=(0, 1))``. Returns
    ``{"a": (B, 3, T, F), "v": (B, 3, S, S)}`` for evaluation; training adds ``a_aug``, ``v_aug``
    (same shapes), ``t_a`` (B, 24), ``t_v`` (B, d_v) and, with ``cfg.centroid``, ``t_a_list``
    (B, S, 24), ``t_v_list`` (B, S, d_v). All float32 on ``device``.
    """

    def __init__(self, cfg, device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.eval_image = EvalTransform(cfg.img_size)

    @classmethod
    def from_config(cls, cfg, device: torch.device | str) -> EquiAVBatchTransform:
        """From a :class:`avssl.train_config.TrainConfig` (its ``equiav`` part)."""
        return cls(cfg.equiav, device)

    def clean(self, batch: Mapping) -> tuple[Tensor, Tensor]:
        """Deterministic inputs: ``a`` (B, 3, T, F) normalised fbank x3, ``v`` (B, 3, S, S)."""
        c = self.cfg
        wave = batch["wave"].to(self.device, non_blocking=True)
        n = batch.get("num_samples")
        fbank = equiav_fbank_batch(wave, None if n is None else n.to(self.device), batch["sample_rate"],
                                   target_frames=c.audio_length, stats=tuple(c.fbank_stats),
                                   num_mel_bins=c.num_mel_bins)
        a = fbank[:, None].expand(-1, 3, -1, -1).contiguous()
        v = self.eval_image(batch["image"].to(self.device, non_blocking=True))
        return a, v.contiguous()

    def __call__(self, batch: Mapping, generator: torch.Generator | None = None, train: bool = False,
                 shard: tuple[int, int] = (0, 1)) -> dict[str, Tensor]:
        a, v = self.clean(batch)
        if not train:
            return {"a": a, "v": v}

        c = self.cfg
        b, world = a.shape[0], shard[1]
        g = b * world  # every draw is for the global batch, then this rank's rows are kept
        n_t, n_f = a.shape[-2:]
        gdev = generator.device if generator is not None else torch.device("cpu")
        original = "full" in batch
        image = batch["full"] if original else batch["image"]
        h, w = image.shape[-2:]
        sizes = None
        if original:  # each clip's own size; rows of the other ranks are drawn, then dropped
            sizes = batch["full_hw"]
            hw = torch.tensor([h, w]).expand(g, 2).clone()
            hw[shard[0] * b:(shard[0] + 1) * b] = sizes
            h, w = hw[:, 0].to(gdev), hw[:, 1].to(gdev)
        roll = torch.randint(-n_t, n_t, (g,), generator=generator, device=gdev)
        t_a = sample_audio_params(g, generator, n_t, n_f, original_bugs=c.aug_original_bugs)
        t_v = sample_visual_params(g, generator, h, w, extended=c.visual_extended)
        rows = lambda x: shard_rows(x, shard).to(self.device, non_blocking=True)  # noqa: E731
        roll, t_a, t_v = rows(roll), rows(t_a), rows(t_v)
        out = {
            "a": time_roll(a, roll, torch.ones(b, dtype=torch.bool, device=self.device)),
            "v": v,
            "a_aug": apply_audio(a, t_a, c.aug_original_bugs).contiguous(),
            "v_aug": apply_visual(image.to(self.device, non_blocking=True), t_v, out_size=c.img_size,
                                  sizes=sizes, antialias=original).contiguous(),
            "t_a": t_a, "t_v": t_v,
        }
        if c.centroid:
            t_a_list, t_v_list = sample_param_lists(
                g, c.num_centroid, generator, None, h, w, frames=n_t, bins=n_f,
                extended=c.visual_extended, original_bugs=c.aug_original_bugs)
            out["t_a_list"], out["t_v_list"] = rows(t_a_list), rows(t_v_list)
        return out


class EquiAVTrainModule(nn.Module):
    """Wraps an :class:`~avssl.methods.equiav.EquiAV` for the engine: ``forward(inputs)`` -> loss dict.

    The wrapper owns no parameters or buffers of its own (``self.model`` is the only child), so
    the engine saves the bare model's state dict.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: Mapping[str, Tensor], generator: torch.Generator | None = None
                ) -> dict[str, Tensor]:
        """``model.loss`` of the transform's training inputs (``generator`` unused: the batch
        brings every random vector)."""
        missing = [k for k in LOSS_INPUTS[:6] if k not in inputs]
        if missing:
            raise KeyError(f"EquiAV training inputs lack {missing}: call the transform with train=True")
        return self.model.loss(**{k: inputs[k] for k in LOSS_INPUTS if k in inputs})


@torch.no_grad()
def equiav_infer(model: nn.Module, inputs: Mapping[str, Tensor], seed: int = INFER_SEED) -> dict[str, Tensor]:
    """Evaluation outputs of an EquiAV model for one batch of clean inputs (``a``, ``v``).

    The centroid vectors come from ``model.param_sampler`` with a CPU generator seeded ``seed``
    (the same draws as ``model.embed(a, v, generator=...)`` / ``model.localise(...)`` with that
    seed). Each encoder runs once.

    Returns:
        ``heatmap`` (B, gh, gw): cosine of the audio inter embedding (centroid per
        ``cfg.centroid``, else the token mean) with every visual patch token through the visual
        inter head; ``audio``, ``visual`` (B, P): the L2-normalised retrieval embeddings (inter
        heads on the centroids, always).
    """
    return model.infer(inputs["a"], inputs["v"], generator=torch.Generator().manual_seed(seed))
