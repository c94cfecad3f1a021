"""SLAVC's open-set localisation metrics (Mo & Morgado, NeurIPS 2022; docs/methods.md, SLAVC).

The extended test sets mix sounding pairs with silent or mismatched (non-sounding) ones, and a
method must both *say whether* something sounds (a per-pair confidence) and *where* (cIoU). The
authors' ``EvaluatorFull`` scores that as detection; this module computes the same numbers,
batched over thresholds (no per-sample loops). For a confidence threshold ``t``, with a pair
*detected* when ``conf >= t``:

* TP: detected, sounding (``num_boxes > 0``) and ``ciou >= iou_thr``;
* FP: detected and silent, or detected, sounding and ``ciou < iou_thr`` (NaN counts as below);
* FN: sounding and not detected (a mislocalised detection is an FP, not an FN);
* ``P = TP / (TP + FP)``, ``R = TP / (TP + FN)``, each 1 when its denominator is 0.

``AP``: P and R at the thresholds ``sort(conf)[:-1][::-max(1, N // 200)]`` (the top confidence
dropped, walked downward), precision made non-increasing from the right, ``sum_i P_max[i] (R[i+1] -
R[i])``. ``F1``: ``2PR / (P + R)`` (0 when both are 0) at ``sorted(conf)[::max(1, N // 10)]``.

How it differs from :func:`avssl.eval.localisation.open_set_metrics` (avssl's own definition):
that one ranks every pair, has recall over *all* sounding pairs (a mislocalised detection
lowers it), integrates the raw, uninterpolated precision at every distinct confidence and
reports the max F1. Here recall counts mislocalised detections as neither TP nor FN, precision is
interpolated, thresholds are sub-sampled, the top one is dropped, and F1 is read at fixed
thresholds — so the two give different numbers on the same inputs and both are kept.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["SIZE_RANGES", "precision_recall", "slavc_ap", "slavc_open_set_stats", "slavc_epoch_metrics"]

#: gt-area subsets (pixels of the 224 px gt map), [lo, hi), sounding pairs only.
SIZE_RANGES = {"small": (0, 32 ** 2), "medium": (32 ** 2, 96 ** 2), "large": (96 ** 2, 144 ** 2),
               "huge": (144 ** 2, 10000 ** 2)}


def precision_recall(num_boxes, ciou, conf, thresholds, iou_thr: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """P and R (k,) at each of the confidence ``thresholds`` (k,) (definitions: module docstring)."""
    nb, ci, cf = _arrays(num_boxes, ciou, conf)
    t = np.asarray(thresholds, np.float64).reshape(-1)
    det = cf[None, :] >= t[:, None]
    correct = (nb > 0) & (np.nan_to_num(ci, nan=-np.inf) >= iou_thr)
    tp = (det & correct).sum(1)
    fp = (det & ~correct).sum(1)
    fn = (~det & (nb > 0)).sum(1)
    p = np.where(tp + fp == 0, 1.0, tp / np.maximum(tp + fp, 1))
    r = np.where(tp + fn == 0, 1.0, tp / np.maximum(tp + fn, 1))
    return p, r


def slavc_ap(num_boxes, ciou, conf, iou_thr: float = 0.5) -> float:
    """The authors' AP (module docstring); 0 for fewer than two pairs."""
    cf = np.asarray(conf, np.float64).reshape(-1)
    thr = np.sort(cf)[:-1][::-max(1, len(cf) // 200)]
    if len(thr) < 2:
        return 0.0
    p, r = precision_recall(num_boxes, ciou, cf, thr, iou_thr)
    p_max = np.maximum.accumulate(p[::-1])[::-1]
    return float(np.cumsum(p_max[:-1] * np.diff(r))[-1])  # summed in order, as the authors' sum()


def _auc(ciou: np.ndarray) -> float:
    """The area under the success-rate curve ``mean(ciou >= 0.05 i)``, i = 0..20 (trapezoids)."""
    x = np.array([0.05 * i for i in range(21)])
    y = (np.nan_to_num(ciou, nan=-np.inf)[None, :] >= x[:, None]).mean(1)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def _arrays(num_boxes, ciou, conf) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nb = np.asarray(num_boxes).reshape(-1)
    ci = np.asarray(ciou, np.float64).reshape(-1)
    cf = np.asarray(conf, np.float64).reshape(-1)
    if not (len(nb) == len(ci) == len(cf)):
        raise ValueError(f"num_boxes, ciou and conf must have one length, got {len(nb)}, {len(ci)}, {len(cf)}")
    return nb, ci, cf


def slavc_open_set_stats(num_boxes, ciou, conf, area, iou_thrs=(0.5, 0.75)) -> dict[str, float | str]:
    """The authors' ``finalize_stats()``: for each IoU threshold (``@50``, ``@75``) and subset
    (``all``; ``visible``: sounding; ``small`` / ``medium`` / ``large`` / ``huge``: sounding pairs by
    gt ``area``, :data:`SIZE_RANGES`): ``Precision-`` (P with every pair detected), ``AP-``,
    ``AUC-`` (over the subset's sounding pairs) and ``F1-`` (the F1 values x 100, one decimal,
    space-separated). An empty subset gives NaN for all four.

    Args:
        num_boxes: (N,) boxes per pair (0: silent / non-sounding). ciou: (N,) cIoU (NaN allowed).
        conf: (N,) confidences. area: (N,) gt-map areas (sum of the gt map).
    """
    nb, ci, cf = _arrays(num_boxes, ciou, conf)
    ar = np.asarray(area, np.float64).reshape(-1)
    subsets = {"all": nb >= 0, "visible": nb > 0,
               **{k: (ar >= lo) & (ar < hi) & (nb > 0) for k, (lo, hi) in SIZE_RANGES.items()}}
    out: dict[str, float | str] = {}
    for iou_thr in iou_thrs:
        for name, keep in subsets.items():
            key = f"{name}@{int(iou_thr * 100)}"
            if not keep.any():
                for m in ("Precision", "F1", "AP", "AUC"):
                    out[f"{m}-{key}"] = math.nan
                continue
            b, c, f = nb[keep], ci[keep], cf[keep]
            out[f"Precision-{key}"] = float(precision_recall(b, c, f, [-1000.0], iou_thr)[0][0])
            p, r = precision_recall(b, c, f, np.sort(f)[::max(1, len(f) // 10)], iou_thr)
            f1 = np.where(p + r > 0, 2 * r * p / np.where(p + r > 0, p + r, 1.0), 0.0)
            out[f"F1-{key}"] = " ".join(f"{v * 100:.1f}" for v in f1)
            out[f"AP-{key}"] = slavc_ap(b, c, f, iou_thr)
            out[f"AUC-{key}"] = _auc(c[b > 0]) if (b > 0).any() else math.nan
    return out


def slavc_epoch_metrics(num_boxes, ciou, conf, conf_thr: float = 0.5) -> dict[str, float]:
    """The per-epoch numbers: ``precision_at_50`` = mean(ciou **>** 0.5) over sounding pairs,
    ``ap_at_50`` (:func:`slavc_ap`) and ``f1_at_50`` (F1 at confidence ``conf_thr``)."""
    nb, ci, cf = _arrays(num_boxes, ciou, conf)
    vis = nb > 0
    prec = float(np.mean(np.nan_to_num(ci[vis], nan=-np.inf) > 0.5)) if vis.any() else math.nan
    p, r = (float(v[0]) for v in precision_recall(nb, ci, cf, [conf_thr], 0.5))
    return {"precision_at_50": prec, "ap_at_50": slavc_ap(nb, ci, cf, 0.5),
            "f1_at_50": 2 * p * r / (p + r) if p + r > 0 else 0.0}
