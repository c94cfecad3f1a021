"""Per-method data pipelines, by method name: the one place the engine looks a method up.

A :class:`Pipeline` says how a method's clips are read (``dataset``), turned into model inputs
on the device (``batch_transform``), trained (``train_module``) and evaluated (``infer`` for
heatmaps and embeddings, or a whole ``evaluate`` function). The training loop and the evaluator
call these through the table and never branch on the method.

Batch transforms are called as ``transform(batch, generator, train=..., shard=(rank, world))``.
Under torchrun a transform that wants DDP to equal one process on the concatenated batch draws
its random parameters for the *global* batch (``world`` x the local batch) from the step's
generator (the same on every rank) and keeps rows ``rank * B : (rank + 1) * B``
(:func:`shard_rows`); the engine's sampler gives each rank the matching contiguous slice of
every global batch.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from avssl.data.datasets import collate
from avssl.methods import audmix, equiav_data, equiav_ft_data, ssltie_data

__all__ = ["Pipeline", "PIPELINES", "pipeline_for", "shard_rows"]


def _as_is(model: nn.Module, cfg) -> nn.Module:
    return model


def shard_rows(x: torch.Tensor, shard: tuple[int, int]) -> torch.Tensor:
    """Rows ``rank * B : (rank + 1) * B`` of a tensor drawn for the global batch of ``world * B`` rows."""
    rank, world = shard
    if world == 1:
        return x
    if x.shape[0] % world:
        raise ValueError(f"{x.shape[0]} rows do not split over {world} processes")
    b = x.shape[0] // world
    return x[rank * b:(rank + 1) * b]


@dataclass(frozen=True)
class Pipeline:
    """How the engine trains and evaluates one method.

    dataset(records, cfg, train, classes=None) -> Dataset with ``.classes``.
    batch_transform(cfg, device) -> callable(batch, generator=None, train=False, shard=(0, 1)) -> inputs.
    infer(model, inputs) -> {"heatmap" (B, h, w), "audio" (B, C), "visual" (B, C)}: the default
        evaluation (localisation scored against boxes, retrieval recall) is built on it.
    collate(samples) -> batch.
    train_module(model, cfg) -> nn.Module whose ``forward(inputs, generator=None)`` returns the
        loss dict (``"loss"`` plus logged terms); DDP wraps this module. Default: the model itself.
    evaluate(model, loader, transform, device, cfg) -> {metric: float}: replaces the default
        evaluation (e.g. classification mAP). It runs on every rank over that rank's shard of
        the val set and must gather across ranks itself (:mod:`avssl.engine.distributed`).
    param_groups(model, cfg) -> list of optimiser param groups (``{"params": [...], "lr_scale": x}``);
        default: all parameters, scale 1.
    sample_weights(dataset, cfg) -> (N,) float tensor or None: per-clip sampling weights
        (balanced sampling draws with replacement from them); default None (shuffled epochs).
    on_epoch_end(model, dataset, transform, cfg, epoch, device) -> dict of logged values,
        called on every rank after each training epoch (e.g. Audmix's nearest-audio search).
    """

    dataset: Callable
    batch_transform: Callable
    infer: Callable | None = None
    collate: Callable = collate
    train_module: Callable = _as_is
    evaluate: Callable | None = None
    param_groups: Callable | None = None
    sample_weights: Callable | None = None
    on_epoch_end: Callable | None = None


PIPELINES: dict[str, Pipeline] = {
    "ssltie": Pipeline(ssltie_data.ssltie_dataset, ssltie_data.SSLTIEBatchTransform.from_config,
                       ssltie_data.ssltie_infer, on_epoch_end=audmix.audmix_on_epoch_end),
    "equiav": Pipeline(equiav_data.equiav_dataset, equiav_data.EquiAVBatchTransform.from_config,
                       equiav_data.equiav_infer, train_module=lambda model, cfg: equiav_data.EquiAVTrainModule(model)),
    "equiav_ft": Pipeline(equiav_ft_data.equiav_ft_dataset, equiav_ft_data.EquiAVFinetuneTransform.from_config,
                          train_module=equiav_ft_data.finetune_train_module, evaluate=equiav_ft_data.finetune_evaluate,
                          param_groups=equiav_ft_data.finetune_param_groups,
                          sample_weights=equiav_ft_data.finetune_sample_weights),
}


def pipeline_for(method: str) -> Pipeline:
    try:
        return PIPELINES[method]
    except KeyError:
        raise ValueError(f"no training data pipeline for method {method!r}; available: {sorted(PIPELINES)}") from None
