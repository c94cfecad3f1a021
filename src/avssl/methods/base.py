"""The contract every method meets: its :class:`Pipeline` (how the engine reads, transforms,
trains and evaluates it) and its :class:`MethodSpec` (the registry's row).

A :class:`Pipeline` says how a method's clips are read (``dataset``), turned into model inputs
on the device (``batch_transform``), trained (``train_module``: the module DDP wraps, whose
``forward`` returns the loss dict) and evaluated (``infer`` for heatmaps and embeddings, or a
whole ``evaluate`` function). The training loop, the evaluator, ``avssl localize`` and the demo
call these through :mod:`avssl.registry` and never branch on the method.

Batch transforms are called as ``transform(batch, generator, train=..., shard=(rank, world))``.
Under torchrun a transform that wants DDP to equal one process on the concatenated batch draws
its random parameters for the *global* batch (``world`` x the local batch) from the step's
generator (the same on every rank) and keeps rows ``rank * B : (rank + 1) * B``
(:func:`avssl.distributed.shard_rows`); the engine's sampler gives each rank the matching
contiguous slice of every global batch.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from avssl.data.datasets import collate

__all__ = ["Pipeline", "MethodSpec"]


def _as_is(model: nn.Module, cfg) -> nn.Module:
    return model


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
        the val set and must gather across ranks itself (:mod:`avssl.distributed`).
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


@dataclass(frozen=True)
class MethodSpec:
    """One method as the registry lists it.

    name: the config's ``method`` value and the name of its options section.
    config: the options dataclass (its defaults are the released recipe's).
    model: the ``nn.Module`` class, built as ``model(config)``.
    pipeline: how the engine trains and evaluates it.
    title / paper: for reports and ``--help``.
    demo_preset: the packaged preset ``avssl demo`` trains (None: no demo).
    validate: ``validate(train_config)`` raises ValueError for option combinations the method
        cannot run; called when a run's config is built (None: nothing to check).
    """

    name: str
    config: type
    model: type
    pipeline: Pipeline
    title: str
    paper: str
    demo_preset: str | None = None
    validate: Callable | None = None
