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

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from avssl.data.datasets import collate

__all__ = ["Pipeline", "MethodSpec", "run_batches"]


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
        called on every rank after each training epoch (e.g. Audmix's nearest-audio search), and
        once more on resume for the epoch before the first resumed one, to rebuild its state.
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
    preset: the packaged preset that trains it on the built-in synthetic data (``avssl synth``).
    demo: whether ``avssl demo`` trains and reports it (from ``preset``).
    tiny: dotted overrides on top of ``preset`` that shrink the model to seconds on a CPU,
        for the tests' tiny synthetic set (3 classes): the contract test
        (``tests/methods/test_contract.py``) builds, trains one step, infers, saves and reloads
        every registered method with them.
    validate: ``validate(train_config)`` raises ValueError for option combinations the method
        cannot run; called when a run's config is built (None: nothing to check).
    """

    name: str
    config: type
    model: type
    pipeline: Pipeline
    title: str
    paper: str
    preset: str
    demo: bool = False
    tiny: tuple[str, ...] = ()
    validate: Callable | None = None


@torch.no_grad()
def run_batches(model: nn.Module, batches: Iterable, step: Callable[[Mapping], Mapping], *,
                to_cpu: bool = True, progress: str | None = None) -> dict[str, torch.Tensor | list]:
    """THE inference loop (evaluation, training validation, Audmix's embeddings, ``avssl localize``).

    Runs ``step(batch) -> {name: (B, ...) tensor or list of B items}`` over ``batches`` with
    ``model`` in eval mode and no grad, restores its train/eval mode, and returns every name's
    rows in order: tensors concatenated (on the CPU, floating ones as float32, when ``to_cpu``;
    else left where ``step`` put them), lists joined. No batch gives ``{}``. ``progress``: a tqdm bar's label.
    """
    was_training = model.training
    model.eval()
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc=progress, leave=False)
    parts: dict[str, list] = {}
    try:
        for batch in batches:
            for name, value in step(batch).items():
                if isinstance(value, torch.Tensor):
                    if to_cpu:
                        value = value.float().cpu() if value.is_floating_point() else value.cpu()
                    parts.setdefault(name, []).append(value)
                else:
                    parts.setdefault(name, []).extend(value)
    finally:
        model.train(was_training)
    return {name: torch.cat(v) if v and isinstance(v[0], torch.Tensor) else v for name, v in parts.items()}
