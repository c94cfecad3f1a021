"""SSL-TIE's data side: the loader's data set, the batched on-device transform, and inference.

The loader returns uint8 frames and fixed-length waveforms (:mod:`avssl.data.datasets`); the
:class:`SSLTIEBatchTransform` turns a collated batch into the model's inputs on the training
device, batched (docs/methods.md §1.1):

* frames: training with invariance -> MoCo-v2 augmentation (:class:`avssl.augment.recipes.MoCoV2Transform`;
  its crop drawn on the batch's original frames, resampled as PIL does, when the loader
  returns them: ``data.train_crop="original"``), else the evaluation transform (Resize +
  CenterCrop + ImageNet normalisation);
* audio: :func:`avssl.data.audio.ssltie_spectrogram` (mel dB, SpecAugment when training), after
  Audmix's waveform mixing when ``ssltie.audmix`` is on (:mod:`avssl.methods.ssltie.audmix`) and
  a random circular shift of each waveform when ``ssltie.audio_roll`` is on (an avssl option).

All random draws come from the ``generator`` argument (CPU), so a step is reproducible from it.

:func:`ssltie_infer` gives the evaluation outputs in one pass: the localisation map (identical to
``SSLTIE.localise``), the audio embedding (the max-pooled L2-normalised audio feature) and the
visual embedding (the spatial mean of the L2-normalised visual map, re-normalised).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from avssl.augment.audio import random_wave_roll
from avssl.data.audio import ssltie_spectrogram
from avssl.data.batch import batch_rate
from avssl.data.datasets import AVFrameAudioDataset
from avssl.data.manifest import Record
from avssl.methods.ssltie.audmix import mix_waves

logger = logging.getLogger(__name__)

__all__ = ["SSLTIEBatchTransform", "ssltie_dataset", "ssltie_infer"]


def ssltie_dataset(records: Sequence[Record], cfg, train: bool, classes: Sequence[str] | None = None
                   ) -> AVFrameAudioDataset:
    """The data set of a :class:`avssl.train_config.TrainConfig` ``cfg`` (its ``data`` and ``ssltie`` parts).

    ``keep_seconds`` applies to training sets only; with ``data.train_crop="original"`` a training
    set also returns the original frames, where the MoCo-v2 crop is then drawn.
    """
    d = cfg.data
    return AVFrameAudioDataset(
        records, image_size=d.load_size or cfg.ssltie.image_size, seconds=d.seconds,
        sample_rate=d.sample_rate, keep_seconds=d.keep_seconds if train else None,
        frame_time=d.frame_time, frame_index=d.frame_index, classes=classes,
        cache_in_memory=d.cache_in_memory, on_error=d.on_error, workers=max(1, d.num_workers),
        frame_resize=d.frame_resize, full_frame=train and d.train_crop == "original",
        random_frames=d.random_frames(train))


class SSLTIEBatchTransform:
    """Collated batch -> ``{"image": (B, 3, S, S) normalised float, "spec": (B, 1, 257, T) dB}`` on ``device``.

    Args:
        image_size: the model's input side ``S``.
        seconds: audio length (the waveforms already have it; tiling again is a no-op).
        invariance: training draws MoCo-v2 frame augmentation and SpecAugment (SSL-TIE's
            "invariance"); off, training uses the evaluation transforms.
        device: where the transform runs (the training device).
    """

    def __init__(self, image_size: int = 224, seconds: float = 10.0, invariance: bool = True,
                 device: torch.device | str = "cpu", audio_roll: bool = False) -> None:
        from avssl.augment.recipes import EvalTransform, MoCoV2Transform

        self.image_size, self.seconds, self.invariance = image_size, seconds, invariance
        self.audio_roll = audio_roll
        self.device = torch.device(device)
        self.train_image = MoCoV2Transform(size=image_size)
        self.train_image_original = MoCoV2Transform(size=image_size, antialias=True)
        self.eval_image = EvalTransform(image_size)
        self.audmix = None  # AudmixState, set by avssl.methods.ssltie.audmix.audmix_on_epoch_end

    @classmethod
    def from_config(cls, cfg, device: torch.device | str) -> SSLTIEBatchTransform:
        return cls(cfg.ssltie.image_size, cfg.data.seconds, cfg.ssltie.invariance, device, cfg.ssltie.audio_roll)

    def __call__(self, batch: Mapping, generator: torch.Generator | None = None,
                 train: bool = False, shard: tuple[int, int] = (0, 1)) -> dict[str, Tensor]:
        """``shard = (rank, world)``: under torchrun each rank draws its own augmentation from the
        step generator re-seeded with its rank (SSL-TIE has no cross-rank loss: the original is a
        one-GPU recipe, and its BatchNorm statistics are per process anyway).

        Training batches are first Audmix-ed when a neighbour table is set (``self.audmix``,
        :mod:`avssl.methods.ssltie.audmix`); the Bernoulli draws then come first from the generator."""
        if generator is not None and shard[1] > 1:
            generator = torch.Generator(generator.device).manual_seed(
                (generator.initial_seed() + 0x9E3779B1 * (shard[0] + 1)) % (1 << 63))
        image = batch["image"].to(self.device, non_blocking=True)
        wave = batch["wave"].to(self.device, non_blocking=True)
        if train and self.audmix is not None:
            wave = mix_waves(wave, batch["id"], self.audmix, generator)
        if train and self.audio_roll:
            wave = random_wave_roll(wave, generator)
        augment = train and self.invariance
        if augment and "full" in batch:
            image = self.train_image_original(batch["full"].to(self.device, non_blocking=True), generator,
                                              sizes=batch["full_hw"].to(self.device))
        elif augment:
            image = self.train_image(image, generator)
        else:
            image = self.eval_image(image)
        rate = batch_rate(batch, "a training batch" if train else "an evaluation batch")  # one spectrogram size
        spec = ssltie_spectrogram(wave, rate, self.seconds, train=augment,
                                  generator=generator)
        return {"image": image.contiguous(), "spec": spec.contiguous()}


def ssltie_infer(model: nn.Module, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Evaluation outputs of an SSL-TIE model for one batch of :class:`SSLTIEBatchTransform`
    inputs: :meth:`SSLTIE.infer` (``heatmap`` (B, h, w) = ``model.localise``, ``audio``, ``visual``)."""
    return model.infer(inputs["image"], inputs["spec"])
