"""Evaluate a model over a data set: localisation heatmaps + the standard scorer, and retrieval.

    out = run_inference(model, loader, transform, pipeline.infer, device)   # one pass
    scores = localisation_scores(out.heatmaps, load_vggss(path), "vggss")
    scores["retrieval"] = retrieval_scores(out)

Retrieval (docs/methods.md §1.6) uses the method's embeddings (for SSL-TIE: audio = the max-pooled
normalised audio feature, visual = the spatial mean of the normalised visual map):
audio->audio by class (the query itself excluded), audio->visual and visual->audio by class
and by instance (the paired clip), recall@1/5/10. Clips without a label are left out of the
class protocols.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from avssl.atomic import atomic_path
from avssl.eval import localisation, retrieval
from avssl.methods.base import run_batches

logger = logging.getLogger(__name__)

__all__ = ["InferenceOutput", "infer_batch", "run_inference", "localise_dataset", "localisation_scores",
           "retrieval_scores", "evaluate_localisation", "save_heatmaps", "save_frame_sizes", "load_annotations",
           "best_worst_sheet"]


@dataclass
class InferenceOutput:
    """Per-clip outputs in loader order: ``heatmaps`` {id: (h, w) float32}, ``ids``, ``labels`` (N,),
    ``audio`` / ``visual`` embeddings (N, C) (float32, CPU)."""

    heatmaps: dict[str, np.ndarray]
    ids: list[str]
    labels: torch.Tensor
    audio: torch.Tensor
    visual: torch.Tensor
    controls: dict[str, dict[str, np.ndarray]] | None = None  # audio control -> {id: map} (evaluate_localisation)
    sample_rates: torch.Tensor | None = None  # (N,) long: each clip's audio rate as the model heard it
    frame_sizes: dict[str, tuple[int, int]] | None = None  # id -> (width, height) of the frame cropped

    def rate_counts(self) -> dict[int, int]:
        """``{sample rate: clips}`` of the evaluated clips."""
        if self.sample_rates is None:
            return {}
        rates, counts = torch.unique(self.sample_rates, return_counts=True)
        return {int(r): int(n) for r, n in zip(rates.tolist(), counts.tolist(), strict=True)}


_OUTPUTS = ("heatmap", "audio", "visual")


def infer_batch(model: nn.Module, batch, batch_transform: Callable, infer: Callable) -> dict[str, torch.Tensor]:
    """``infer(model, batch_transform(batch, None, train=False))``'s heatmap / audio / visual rows;
    a batch of clips at several sample rates runs as one batch per rate
    (:func:`avssl.data.batch.split_by_rate`), its rows put back in the batch's order, so that
    every clip gets what batch size 1 gives it (evaluation has no cross-clip term)."""
    from avssl.data.batch import split_by_rate

    parts = split_by_rate(batch)
    if parts is None:
        out = infer(model, batch_transform(batch, None, train=False))
        return {k: out[k] for k in _OUTPUTS}
    size = len(batch["id"])
    merged: dict[str, torch.Tensor] = {}
    for rows, sub in parts:
        out = infer(model, batch_transform(sub, None, train=False))
        for k in _OUTPUTS:
            v = out[k]
            if k not in merged:
                merged[k] = v.new_empty((size, *v.shape[1:]))
            merged[k][rows.to(v.device)] = v
    return merged


def run_inference(model: nn.Module, loader, batch_transform: Callable, infer: Callable,
                  device: torch.device | str, progress: bool = False) -> InferenceOutput:
    """Run ``infer(model, batch_transform(batch, None, train=False))`` over ``loader`` (eval mode;
    batches of several sample rates as one batch per rate, :func:`infer_batch`)."""
    def step(batch):
        rate = batch["sample_rate"]
        rates = rate if isinstance(rate, torch.Tensor) else torch.full((len(batch["id"]),), int(rate))
        row = {"id": batch["id"], "label": batch["label"], "sample_rate": rates.long(),
               **infer_batch(model, batch, batch_transform, infer)}
        if "frame_hw" in batch:
            row["frame_hw"] = batch["frame_hw"]
        return row

    rows = run_batches(model, loader, step, progress="eval" if progress else None)
    if not rows:
        raise ValueError("run_inference: the loader yielded no clips")
    ids = list(rows["id"])
    return InferenceOutput({i: m for i, m in zip(ids, rows["heatmap"].numpy(), strict=True)}, ids,
                           rows["label"], rows["audio"], rows["visual"], sample_rates=rows["sample_rate"],
                           frame_sizes={i: (int(w), int(h)) for i, (h, w) in zip(ids, rows["frame_hw"].tolist(),
                                                                                strict=True)}
                           if "frame_hw" in rows else None)


def localise_dataset(model: nn.Module, loader, batch_transform: Callable, device: torch.device | str,
                     infer: Callable | None = None) -> dict[str, np.ndarray]:
    """``{clip id: heatmap (h, w)}``; ``infer`` defaults to ``model.localise(**inputs)``."""
    if infer is None:
        def infer(m, inputs):
            h = m.localise(**inputs)
            z = h.new_zeros(h.shape[0], 1)
            return {"heatmap": h, "audio": z, "visual": z}
    return run_inference(model, loader, batch_transform, infer, device).heatmaps


def load_annotations(path: str | os.PathLike, fmt: str) -> dict[str, np.ndarray]:
    """Boxes by id from a VGG-SS JSON (``fmt="vggss"``) or a Flickr-SoundNet XML folder (``"flickr"``)."""
    from avssl.data.annotations import load_flickr, load_vggss

    if fmt not in ("vggss", "flickr"):
        raise ValueError(f"annotation format must be 'vggss' or 'flickr', got {fmt!r}")
    return load_flickr(path) if fmt == "flickr" else load_vggss(path)


def localisation_scores(heatmaps: Mapping[str, np.ndarray], boxes: Mapping[str, np.ndarray], fmt: str,
                        protocol: localisation.Protocol | None = None) -> dict:
    """The scorer's summary for the clips that have both a heatmap and boxes.

    Annotated clips that were not evaluated (not in this data set) are not reported as missing;
    the count of evaluated clips without boxes is kept as ``unannotated``.
    """
    gt = {k: v for k, v in boxes.items() if k in heatmaps}
    preds = {k: v for k, v in heatmaps.items() if k in gt}
    unannotated = len(heatmaps) - len(preds)
    if not preds:
        raise ValueError("no evaluated clip has a ground-truth box (ids of the annotations and the data differ?)")
    summary = localisation.score(preds, gt, fmt, protocol or localisation.Protocol())
    summary["unannotated"] = unannotated
    return summary


def retrieval_scores(out: InferenceOutput, k: tuple[int, ...] = (1, 5, 10),
                     official_fp16: bool = False) -> dict[str, dict[str, float]]:
    """Recall@K: ``a2a_class`` (query excluded), ``a2v_class``, ``v2a_class``, ``a2v_instance``, ``v2a_instance``.

    ``official_fp16``: the instance similarities in the released EquiAV script's float16 numpy
    arithmetic (:func:`avssl.eval.retrieval.cosine_similarity`), whose ties raise the recalls;
    default fp32. The class recalls are always fp32 (an avssl addition, no released arithmetic)."""
    res: dict[str, dict[str, float]] = {}
    sim = retrieval.cosine_similarity(out.audio, out.visual, official_fp16)  # (N, N) audio query -> visual key
    res["a2v_instance"] = retrieval.recall_at_k(sim, k)
    res["v2a_instance"] = retrieval.recall_at_k(sim.t().contiguous(), k)
    lab = out.labels >= 0
    if int(lab.sum()) >= 2:
        a, v, y = out.audio[lab], out.visual[lab], out.labels[lab]
        res["a2a_class"] = retrieval.class_recall_at_k(retrieval.cosine_similarity(a, a), y, y, k, exclude_self=True)
        s = retrieval.cosine_similarity(a, v)
        res["a2v_class"] = retrieval.class_recall_at_k(s, y, y, k)
        res["v2a_class"] = retrieval.class_recall_at_k(s.t().contiguous(), y, y, k)
        res["chance_R1"] = _chance_r1(y)
    return res


def _chance_r1(labels: torch.Tensor) -> dict[str, float]:
    """The class recall@1 of a random ranking: the mean share of same-class keys per query (a2a
    without the query itself)."""
    same = (labels[:, None] == labels[None, :]).double()
    n = labels.numel()
    a2v = float(same.mean())
    return {"a2v_class": a2v, "v2a_class": a2v, "a2a_class": float((same.sum(1) - 1).mean() / (n - 1))}


def _scores_of(out: InferenceOutput, boxes, fmt: str, with_retrieval: bool, retrieval_fp16: bool) -> dict:
    """The localisation summary (with ``boxes``, already as the scorer gets them) and the retrieval
    recalls of one inference pass."""
    scores: dict = {}
    if boxes is not None:
        scores.update(localisation_scores(out.heatmaps, boxes, fmt))
    if with_retrieval:
        scores["retrieval"] = retrieval_scores(out, official_fp16=retrieval_fp16)
    return scores


def evaluate_localisation(model: nn.Module, records, cfg, annotations: str | os.PathLike | None,
                          fmt: str = "vggss", device: torch.device | str = "cpu",
                          batch_size: int | None = None, with_retrieval: bool = True,
                          classes=None, num_workers: int | None = None, dataset=None,
                          retrieval_fp16: bool = False, audio_controls=(),
                          boxes_mode: str = "crop") -> tuple[dict, InferenceOutput]:
    """Score ``model`` (an instance of ``cfg.method``) on ``records`` with the data settings of the
    :class:`~avssl.train_config.TrainConfig` ``cfg``. Returns ``(scores, outputs)``: ``scores``
    holds the scorer's summary (when ``annotations`` is given) and ``retrieval``. ``dataset``: an
    already built evaluation data set of ``records`` to reuse (e.g. for :func:`best_worst_sheet`).
    ``retrieval_fp16``: :func:`retrieval_scores`'s ``official_fp16``.

    ``audio_controls`` (names of :data:`avssl.data.controls.AUDIO_CONTROLS`): each is a second pass
    with every clip's recording replaced (:class:`avssl.data.controls.AudioControlDataset`), scored
    the same way: ``scores["audio_control"][name]`` holds its scores and what it played,
    ``scores["audio_dependence"][name]`` :func:`avssl.eval.controls.audio_dependence` (map
    correlation own vs control, peaks moved, the drop of every score); the control's maps are in
    ``outputs.controls[name]``.

    ``boxes_mode`` (:data:`avssl.eval.boxes.BOX_MODES`): "crop" (default, the released protocol)
    lays the full-frame-normalised boxes on the centre crop unchanged; "full-frame" maps each into
    the crop (VGG-SS boxes only). Either way ``scores["boxes"]`` counts the clips whose boxes lie
    mostly outside the crop (warned)."""
    from torch.utils.data import DataLoader

    from avssl.data.controls import AudioControlDataset
    from avssl.eval.controls import audio_dependence
    from avssl.registry import pipeline_for

    pipe = pipeline_for(cfg.method)
    ds = dataset if dataset is not None else pipe.dataset(records, cfg, train=False, classes=classes)
    transform = pipe.batch_transform(cfg, device)
    model = model.to(device)

    def infer(d) -> InferenceOutput:
        loader = DataLoader(d, batch_size=batch_size or cfg.train.eval_batch_size, shuffle=False,
                            num_workers=cfg.data.num_workers if num_workers is None else num_workers,
                            collate_fn=pipe.collate)
        return run_inference(model, loader, transform, pipe.infer, device)

    out = infer(ds)
    boxes = load_annotations(annotations, fmt) if annotations is not None else None
    box_report = None
    if boxes is not None:
        boxes, box_report = _boxes_as_scored(boxes, out, fmt, boxes_mode, getattr(ds, "image_size", 224))
    scores: dict = {"n_clips": len(out.ids), "skipped": [list(s) for s in getattr(ds, "skipped", [])],
                    "audio_rates": {str(r): n for r, n in out.rate_counts().items()}}
    scores.update(_scores_of(out, boxes, fmt, with_retrieval, retrieval_fp16))
    if box_report is not None:
        scores["boxes"] = box_report
    if with_retrieval:
        scores["retrieval_arithmetic"] = "fp16 (released EquiAV script)" if retrieval_fp16 else "fp32"
    out.controls = {}
    for name in audio_controls:
        control = AudioControlDataset(ds, name)
        c_out = infer(control)
        c_scores = _scores_of(c_out, boxes, fmt, with_retrieval, retrieval_fp16)
        scores.setdefault("audio_control", {})[name] = {**control.describe(), **c_scores}
        scores.setdefault("audio_dependence", {})[name] = audio_dependence(out.heatmaps, c_out.heatmaps, scores,
                                                                           c_scores)
        out.controls[name] = c_out.heatmaps
    return scores, out


def _boxes_as_scored(boxes, out: InferenceOutput, fmt: str, mode: str, size: int) -> tuple[dict, dict]:
    """The boxes under ``mode`` (:func:`avssl.eval.boxes.boxes_for_scoring` on the evaluated clips)
    and its report; warns when boxes lie mostly outside the centre crop the model saw."""
    from avssl.eval.boxes import boxes_for_scoring, outside_warning

    scored, report = boxes_for_scoring(boxes, out.heatmaps, out.frame_sizes or {}, fmt, mode, size)
    warning = outside_warning(report)
    if warning:
        logger.warning("%s", warning)
    return scored, report


def save_frame_sizes(path: str | os.PathLike, sizes: Mapping[str, tuple[int, int]]) -> Path:
    """Write ``{id: [width, height]}`` of the evaluated frames as JSON, atomically (read by
    ``avssl score --boxes full-frame --frame-sizes``)."""
    import json

    from avssl.atomic import atomic_write_text

    atomic_write_text(path, json.dumps({k: list(v) for k, v in sizes.items()}))
    return Path(path)


def save_heatmaps(path: str | os.PathLike, heatmaps: Mapping[str, np.ndarray]) -> Path:
    """Write ``{id: map}`` as an ``.npz`` (one array per id; read by ``avssl score --pred``), atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: savez adds no suffix
        np.savez_compressed(f, **{str(k): np.asarray(v, np.float32) for k, v in heatmaps.items()})
    return Path(path)


def best_worst_sheet(dataset, heatmaps: Mapping[str, np.ndarray], boxes: Mapping[str, np.ndarray], fmt: str,
                     path: str | os.PathLike, n: int = 6) -> Path | None:
    """A PNG contact sheet of the ``n`` best and ``n`` worst clips by cIoU (standard protocol).

    ``dataset`` is the evaluation data set (its samples' ``image`` is the uint8 frame the model
    saw); boxes are drawn in green. Returns None when no clip has both a map and boxes.
    """
    from avssl import viz

    gt = {k: v for k, v in boxes.items() if k in heatmaps}
    if not gt:
        return None
    res = localisation.evaluate({k: heatmaps[k] for k in gt}, gt, fmt)
    order = np.argsort(-res.ciou, kind="stable")
    picks = list(order[:n]) + [i for i in order[::-1][:n] if i not in order[:n]]
    index = {r.id: k for k, r in enumerate(dataset.records)}
    items = []
    for i in picks:
        cid = res.ids[i]
        frame = dataset[index[cid]]["image"].permute(1, 2, 0).numpy()
        b = np.asarray(gt[cid], np.float64).reshape(-1, 4)
        norm = b / 256.0 if fmt == "flickr" else b
        items.append((frame, heatmaps[cid], f"{cid} cIoU {res.ciou[i]:.2f}", norm))
    return viz.contact_sheet(items, cols=n, path=path)
