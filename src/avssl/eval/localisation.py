"""The standard sound-localisation evaluator (docs/methods.md §1.5), exact and vectorised.

The protocol every SSL-TIE-line paper reports, per test pair: upsample the heatmap to 224 x 224
(OpenCV bilinear, half-pixel centres), min-max normalise it as ``p = 1 - normalize_img(-h)``
(skipped for a constant map), keep the pixels strictly above the value at sorted index
``H*W//2`` (25,088 of 50,176) and compare with the ground truth:
``cIoU = sum(pred*gt) / (sum(gt) + sum(pred*(gt == 0)))``. Reported: cIoU@0.5 (the share of
samples with cIoU >= 0.5) and the AUC of the success-rate curve over thresholds ``0.05*i``.

Variants (:class:`Protocol`, names as in docs/methods.md §1.5):

* ``threshold``: ``"median"`` (default, ``p > p_(HW//2)``), ``"median_ge"`` (``>=`` instead of
  ``>``), ``"adaptive"`` (the top-k pixels, k = number of ground-truth pixels > 0; ties at the k-th
  value are all kept), ``"fixed"`` (``p >= 0.5`` after min-max);
* ``upsample``: ``"bilinear"`` (default) or ``"bicubic"`` (Keys a = -0.75, edge replicate, float32);
* the "squash Resize((224, 224))" variant concerns the model's image transform, not the scorer:
  ground truth lives in the 224 frame either way, so there is no field for it here.

Quirks reproduced bit-exactly (golden ``ssltie_metrics.npz``): the thresholded map is built with
the original two assignments ``p[p > thr] = 1; p[p < 1] = 0`` and then ``>= 0.5``, so a constant
map (normalisation skipped, ``p = 1 + h``) becomes all ones when ``h >= 0`` and all zeros when
``h < 0``; boxes are truncated with ``int()``; the Flickr ground truth is weighted {0, 0.5, 1}.
:func:`score` always also reports the adaptive-threshold cIoU@0.5 and the pointing accuracy,
which do not have the median rule's cap ``cIoU <= 2 * box area / image area``.

The kernels live beside this module: :mod:`avssl.eval.upsample` (OpenCV-exact upsampling) and
:mod:`avssl.eval.localisation_core` (:func:`score_arrays`, the batched scorer, and
:class:`Protocol`); their names are re-exported here.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from avssl.data.annotations import pad_boxes
from avssl.eval.localisation_core import (
    THRESHOLDS,
    InvalidHeatmapError,
    Protocol,
    score_arrays,
)
from avssl.eval.upsample import _F32, _ONE, UPSAMPLERS, _as_maps, upsample

logger = logging.getLogger(__name__)

__all__ = ["Protocol", "THRESHOLDS", "UPSAMPLERS", "upsample", "minmax", "binarise", "ciou",
           "success_rate_auc", "pointing_hits", "pointing_accuracy", "map_confidence",
           "open_set_metrics", "peak_hits", "score_arrays", "evaluate", "score", "LocalisationResult",
           "InvalidHeatmapError"]


# --------------------------------------------------------------------------- reference metric
def minmax(maps) -> np.ndarray:
    """``1 - normalize_img(-h)`` per map (N, H, W) float32, the released code's op order.

    ``normalize_img(v) = (v - v.min()) / (v.max() - v.min())``, skipped when max == min: a
    constant map therefore gives ``p = 1 + h`` (not 0.5), which thresholds to all ones for
    h >= 0 and all zeros for h < 0.
    """
    v = -_as_maps(maps)
    vmin = v.min(axis=(1, 2), keepdims=True)
    d = v.max(axis=(1, 2), keepdims=True) - vmin
    const = d == 0
    norm = (v - vmin) / np.where(const, _ONE, d)
    return _ONE - np.where(const, v, norm)


def _rule_keep(p: np.ndarray, thr: np.ndarray, rule: str) -> np.ndarray:
    return p > thr if rule == "median" else p >= thr


def binarise(p, rule: str = "median", n_gt=None) -> np.ndarray:
    """The thresholded map handed to cIoU, exactly as the released code builds it (N, H, W) float32.

    ``q = p; q[keep] = 1; q[q < 1] = 0`` where ``keep`` is the rule (``median``: ``p > thr`` with
    thr the value at sorted index H*W//2; ``median_ge``: ``>=``; ``adaptive``: ``p >= `` the
    ``n_gt``-th largest value, ``n_gt`` (N,) the ground-truth pixel counts; ``fixed``: ``p >= 0.5``).
    Values are 0, 1, or ``p >= 1`` left as is (the constant-map quirk: 1.3 for h = 0.3).
    """
    p = _as_maps(p)
    n, hgt, wid = p.shape
    flat = p.reshape(n, -1)
    if rule in ("median", "median_ge"):
        k = hgt * wid // 2
        thr = np.partition(flat, k, axis=1)[:, k]
    elif rule == "adaptive":
        if n_gt is None:
            raise ValueError("the adaptive rule needs n_gt (ground-truth pixel counts)")
        kk = np.asarray(n_gt, np.int64).reshape(n)
        srt = np.sort(flat, axis=1)
        thr = np.where(kk > 0, np.take_along_axis(srt, np.clip(hgt * wid - kk, 0, hgt * wid - 1)[:, None], 1)[:, 0],
                       np.inf).astype(_F32)
    elif rule == "fixed":
        thr = np.full(n, 0.5, _F32)
    else:
        raise ValueError(f"rule must be one of {THRESHOLDS}, got {rule!r}")
    q = np.where(_rule_keep(p, thr[:, None, None], rule), _ONE, p)
    return np.where(q < 1, _F32(0), q)


def ciou(pred, gt) -> np.ndarray:
    """cIoU per sample (N,) float64: ``sum(I*gt) / (sum(gt) + sum(I*(gt == 0)))``, ``I = pred >= 0.5``.

    ``pred`` (N, H, W) is a thresholded map (:func:`binarise`), ``gt`` (N, H, W) a ground-truth map.
    """
    inf = np.asarray(pred) >= 0.5
    g = np.asarray(gt, np.float64)
    inter = np.einsum("nij,nij->n", inf.astype(np.float64), g)
    extra = (inf & (g == 0)).sum(axis=(1, 2))
    return inter / (g.sum(axis=(1, 2)) + extra)


def success_rate_auc(cious) -> tuple[float, float]:
    """``(cIoU@0.5, AUC)``: the share with cIoU >= 0.5, and the trapezoid area of the success rate
    ``mean(ciou >= 0.05*i)`` over i = 0..20 (as ``sklearn.metrics.auc`` on those 21 points)."""
    c = np.asarray(cious, np.float64).reshape(-1)
    if c.size == 0:
        return float("nan"), float("nan")
    x = 0.05 * np.arange(21)
    y = (c[None, :] >= x[:, None]).sum(1) / c.size
    auc = float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))
    return float(np.sum(c >= 0.5) / c.size), auc


def pointing_hits(heatmaps, gt_maps, mode: str = "bilinear") -> np.ndarray:
    """(N,) bool: the first (row-major) maximum of the upsampled map lies where ``gt > 0``."""
    g = np.asarray(gt_maps)
    return peak_hits(upsample(heatmaps, g.shape[-1], mode), g)


def peak_hits(upsampled: np.ndarray, gt_maps: np.ndarray) -> np.ndarray:
    """(N,) bool: the first (row-major) maximum of each already upsampled (N, S, S) map is where ``gt > 0``."""
    n = len(gt_maps)
    return gt_maps.reshape(n, -1)[np.arange(n), upsampled.reshape(n, -1).argmax(1)] > 0


def pointing_accuracy(heatmaps, gt_maps, mode: str = "bilinear") -> float:
    """Share of samples whose upsampled map peaks inside the ground truth (ties: first maximum)."""
    return float(np.mean(pointing_hits(heatmaps, gt_maps, mode)))


def map_confidence(heatmaps) -> np.ndarray:
    """(N,) float64: mean of the top 25% (ceil) raw scores of each map, at its own resolution."""
    maps = _as_maps(heatmaps)
    flat = maps.reshape(len(maps), -1)
    k = max(1, math.ceil(0.25 * flat.shape[1]))
    top = -np.partition(-flat, k - 1, axis=1)[:, :k]
    return top.astype(np.float64).mean(1)


def open_set_metrics(confidence, is_sounding, cious, iou_threshold: float = 0.5) -> dict[str, float]:
    """Average precision and max-F1 over sounding and silent test pairs.

    Definition: rank all pairs by ``confidence`` (descending; tied confidences form one step). A
    pair counts as a true positive when it is sounding **and** its cIoU >= ``iou_threshold``; every
    other retrieved pair (silent, or mislocalised) is a false positive. Recall is over all sounding
    pairs. AP = sum over steps of (recall gain) x precision (no interpolation); max-F1 is the best
    ``2PR/(P+R)`` over the steps. ``cious`` of silent pairs are ignored (may be NaN).
    """
    conf = np.asarray(confidence, np.float64).reshape(-1)
    snd = np.asarray(is_sounding, bool).reshape(-1)
    ci = np.asarray(cious, np.float64).reshape(-1)
    if not (len(conf) == len(snd) == len(ci)):
        raise ValueError("confidence, is_sounding and cious must have the same length")
    n_pos = int(snd.sum())
    if n_pos == 0 or len(conf) == 0:
        return {"ap": float("nan"), "max_f1": float("nan"), "n_sounding": n_pos, "n_silent": int((~snd).sum())}
    order = np.argsort(-conf, kind="stable")
    tp = (snd & (np.nan_to_num(ci, nan=-1.0) >= iou_threshold))[order].astype(np.float64)
    ctp, cnt = np.cumsum(tp), np.arange(1, len(tp) + 1, dtype=np.float64)
    last = np.r_[np.diff(conf[order]) != 0, True]  # end of each tied-confidence step
    prec, rec = ctp[last] / cnt[last], ctp[last] / n_pos
    ap = float(np.sum(np.diff(np.r_[0.0, rec]) * prec))
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-300), 0.0)
    return {"ap": ap, "max_f1": float(f1.max()), "n_sounding": n_pos, "n_silent": int((~snd).sum())}


# --------------------------------------------------------------------------- id-keyed evaluation
@dataclass
class LocalisationResult:
    """What :func:`evaluate` returns: the JSON-able ``summary`` and per-sample arrays (``ids`` order)."""

    summary: dict
    ids: list[str]
    ciou: np.ndarray  # (n,) cIoU under the chosen protocol
    adaptive_ciou: np.ndarray  # (n,) cIoU with the adaptive (top-k) threshold
    pointing_hit: np.ndarray  # (n,) bool, the map's peak lies in the ground truth
    confidence: np.ndarray  # (n,) mean of the top 25% raw scores (map_confidence)

    def rows(self) -> list[dict]:
        """Per-sample records ``{"id", "ciou", "adaptive_ciou", "pointing_hit", "confidence"}``."""
        return [{"id": i, "ciou": float(c), "adaptive_ciou": float(a), "pointing_hit": bool(h),
                 "confidence": float(f)}
                for i, c, a, h, f in zip(self.ids, self.ciou, self.adaptive_ciou, self.pointing_hit,
                                         self.confidence, strict=True)]


def _keyed(x) -> dict[str, object]:
    if isinstance(x, Mapping):
        return {str(k): v for k, v in x.items()}
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return {str(i): v for i, v in enumerate(x)}


def _as_2d(cid: str, m) -> np.ndarray:
    a = np.asarray(m.detach().cpu().numpy() if hasattr(m, "detach") else m)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or 0 in a.shape:
        raise ValueError(f"heatmap {cid!r}: expected a 2-D map (leading singleton axes allowed), got shape {a.shape}")
    return a.astype(_F32, copy=False)


def _nan_to_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def evaluate(heatmaps, gt, box_format: str = "vggss", protocol: Protocol = Protocol(), *,
             strict: bool = False, silent=None, exclude_empty_gt: bool = False, chunk: int = 16,
             workers: int | None = None) -> LocalisationResult:
    """Score heatmaps against box annotations, matched by id.

    Args:
        heatmaps: ``{id: 2-D map}`` (any resolution, several resolutions allowed) or an array
            (N, h, w) / sequence of maps (ids "0".."N-1").
        gt: ``{id: (k, 4) boxes}`` (:func:`~avssl.data.annotations.load_vggss` /
            :func:`~avssl.data.annotations.load_flickr`) or a sequence aligned with the maps.
        box_format: "vggss" (normalised boxes, binary union) or "flickr" (256-pixel frame).
        protocol: the threshold / upsampling variant (default: the released protocol).
        strict: raise :class:`InvalidHeatmapError` on a NaN/inf map instead of excluding it.
        silent: ids of silent (no visible source) pairs among the maps; enables the open-set
            metrics (:func:`open_set_metrics`) in the summary.
        exclude_empty_gt: drop samples without any ground-truth pixel (e.g. a VGG-SS box lying
            outside the image, empty after clipping) from N. Default False, as the released
            ``validate()``: such a sample keeps its place in N with cIoU 0/0 = NaN, which fails
            ``>= 0.5`` and every AUC threshold (it counts as 0 in the mean cIoUs, as a miss in the
            pointing accuracy).
        chunk, workers: batch size and threads (:func:`score_arrays`).

    Returns:
        :class:`LocalisationResult`. Ids not scored are listed in the summary: ``missing_pred``
        (in gt, no map), ``missing_gt`` (map, no gt), ``invalid`` (NaN/inf map); ``empty_gt``
        lists the samples without a ground-truth pixel and ``n_empty_gt`` counts them (scored as
        failures, or excluded with ``exclude_empty_gt``); ``n_scored`` is N.
    """
    if box_format not in ("vggss", "flickr"):
        raise ValueError(f"box_format must be 'vggss' or 'flickr', got {box_format!r}")
    if isinstance(gt, Mapping) != isinstance(heatmaps, Mapping):
        raise ValueError("heatmaps and gt must both be id-keyed mappings or both be aligned sequences")
    pred, boxes = _keyed(heatmaps), _keyed(gt)
    silent_ids = [str(i) for i in silent] if silent is not None else []
    silent_set = set(silent_ids)
    missing_pred = [i for i in boxes if i not in pred and i not in silent_set]
    missing_gt = [i for i in pred if i not in boxes and i not in silent_set]
    for what, ids in (("ground truth without a heatmap", missing_pred), ("heatmaps without ground truth", missing_gt)):
        if ids:
            logger.warning("%d %s (not scored), e.g. %s", len(ids), what, ids[:5])
    maps, invalid = {}, []
    for i in [i for i in boxes if i in pred] + [i for i in silent_ids if i in pred]:
        m = _as_2d(i, pred[i])
        if not np.all(np.isfinite(m)):
            if strict:
                raise InvalidHeatmapError(f"heatmap {i!r} contains NaN/inf values")
            invalid.append(i)
            logger.warning("heatmap %r contains NaN/inf values: excluded", i)
            continue
        maps[i] = m
    ids = [i for i in boxes if i in maps and i not in silent_set]
    n = len(ids)
    ci, ad = np.full(n, np.nan), np.full(n, np.nan)
    hit, ngt = np.zeros(n, bool), np.zeros(n, np.int64)
    fill = np.nan if box_format == "vggss" else -1
    shapes: dict[tuple, list[int]] = {}
    for j, i in enumerate(ids):
        shapes.setdefault(maps[i].shape, []).append(j)
    for js in shapes.values():
        res = score_arrays(np.stack([maps[ids[j]] for j in js]), pad_boxes([boxes[ids[j]] for j in js], fill=fill)[1],
                           box_format, protocol, chunk=chunk, workers=workers)
        ci[js], ad[js], hit[js], ngt[js] = res["ciou"], res["adaptive_ciou"], res["pointing_hit"], res["n_gt"]
    empty = [i for i, k in zip(ids, ngt, strict=True) if k == 0]
    if empty:
        logger.warning("%d samples have no ground-truth pixel (%s), e.g. %s", len(empty),
                       "excluded" if exclude_empty_gt else "scored as failures", empty[:5])
    keep = ngt > 0 if exclude_empty_gt else np.ones(n, bool)
    mci, mad = np.nan_to_num(ci, nan=0.0), np.nan_to_num(ad, nan=0.0)
    scored = [i for i, k in zip(ids, keep, strict=True) if k]
    conf = _confidence([maps[i] for i in scored])
    at05, auc = success_rate_auc(ci[keep])
    ad05, ad_auc = success_rate_auc(ad[keep])
    summary = {
        "protocol": {"threshold": protocol.threshold, "upsample": protocol.upsample, "size": protocol.size},
        "box_format": box_format, "n_pred": len(pred), "n_gt": len(boxes), "n_scored": len(scored),
        "ciou_at_0.5": _nan_to_none(at05), "auc": _nan_to_none(auc),
        "mean_ciou": _nan_to_none(float(mci[keep].mean()) if keep.any() else math.nan),
        "adaptive_ciou_at_0.5": _nan_to_none(ad05), "adaptive_auc": _nan_to_none(ad_auc),
        "adaptive_mean_ciou": _nan_to_none(float(mad[keep].mean()) if keep.any() else math.nan),
        "pointing_accuracy": _nan_to_none(float(hit[keep].mean()) if keep.any() else math.nan),
        "missing_pred": missing_pred, "missing_gt": missing_gt, "invalid": invalid, "empty_gt": empty,
        "n_empty_gt": len(empty), "exclude_empty_gt": bool(exclude_empty_gt),
    }
    if silent is not None:
        sil = [i for i in silent_ids if i in maps]
        conf_all = np.r_[conf, _confidence([maps[i] for i in sil])]
        snd = np.r_[np.ones(len(scored), bool), np.zeros(len(sil), bool)]
        summary["open_set"] = {k: _nan_to_none(v) if isinstance(v, float) else v
                               for k, v in open_set_metrics(conf_all, snd, np.r_[ci[keep], np.full(len(sil), np.nan)]).items()}
    return LocalisationResult(summary, scored, ci[keep], ad[keep], hit[keep], conf)


def _confidence(maps: list[np.ndarray]) -> np.ndarray:
    out = np.empty(len(maps))
    groups: dict[tuple, list[int]] = {}
    for j, m in enumerate(maps):
        groups.setdefault(m.shape, []).append(j)
    for js in groups.values():
        out[js] = map_confidence(np.stack([maps[j] for j in js]))
    return out


def score(heatmaps, gt, box_format: str = "vggss", protocol: Protocol = Protocol(), **kwargs) -> dict:
    """JSON-able summary of :func:`evaluate` (same arguments): cIoU@0.5, AUC, mean cIoU, the
    adaptive-threshold cIoU@0.5, pointing accuracy, and the lists of ids not scored."""
    return evaluate(heatmaps, gt, box_format, protocol, **kwargs).summary
