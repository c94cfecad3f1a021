"""Per-method data pipelines, by method name: the one place the engine looks a method up.

A :class:`Pipeline` says how a method's clips are read (``dataset``), turned into model inputs
on the device (``batch_transform``) and evaluated (``infer``: heatmaps and embeddings). The
training loop and the evaluator call these through the table and never branch on the method.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from avssl.data.datasets import collate
from avssl.methods import ssltie_data

__all__ = ["Pipeline", "PIPELINES", "pipeline_for"]


@dataclass(frozen=True)
class Pipeline:
    """dataset(records, cfg, train, classes) -> Dataset; batch_transform(cfg, device) ->
    callable(batch, generator, train) -> model inputs; infer(model, inputs) -> {"heatmap",
    "audio", "visual"}; collate(samples) -> batch."""

    dataset: Callable
    batch_transform: Callable
    infer: Callable
    collate: Callable = collate


PIPELINES: dict[str, Pipeline] = {
    "ssltie": Pipeline(ssltie_data.ssltie_dataset, ssltie_data.SSLTIEBatchTransform.from_config,
                       ssltie_data.ssltie_infer),
}


def pipeline_for(method: str) -> Pipeline:
    try:
        return PIPELINES[method]
    except KeyError:
        raise ValueError(f"no training data pipeline for method {method!r}; available: {sorted(PIPELINES)}") from None
