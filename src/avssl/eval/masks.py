"""Localisation scored against exact masks (the semi-real benchmark's ``masks/<id>.png``).

The same protocol as :mod:`avssl.eval.localisation` with a binary ground truth that is the
sounding object's own pixels instead of its box: upsample to the mask's side (OpenCV-exact
bilinear by default), ``p = 1 - normalize(-h)``, threshold by the median rule (or the
protocol's) and by the adaptive rule (top-k, k = the mask's pixel count), then
``cIoU = sum(pred & gt) / (sum(gt) + sum(pred & ~gt))``; pointing is a hit when the map's first
maximum lies inside the mask. Samples whose mask is empty (off-screen sounds) are left out and
counted in ``n_empty``.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from avssl.eval.localisation import binarise, ciou, minmax, peak_hits, success_rate_auc
from avssl.eval.localisation_core import Protocol
from avssl.eval.upsample import upsample

__all__ = ["mask_scores", "mask_scores_by_id"]

_CHUNK = 256  # maps scored at once (bounds the (chunk, S, S) float32 buffers)


def mask_scores(heatmaps, masks, protocol: Protocol = Protocol()) -> dict:
    """Scores of (N, h, w) heatmaps against (N, S, S) boolean masks.

    Returns ``mask_ciou_at_0.5``, ``mask_auc``, ``mask_mean_ciou`` (median rule, or the
    protocol's threshold), ``mask_adaptive_ciou_at_0.5``, ``mask_adaptive_auc``,
    ``mask_pointing_accuracy``, ``n_scored``, ``n_empty`` and ``per_sample`` (the median-rule
    cIoUs in input order, NaN for empty masks).
    """
    g = np.asarray(masks).astype(bool)
    maps = np.asarray(heatmaps, np.float32)
    if g.ndim != 3 or g.shape[1] != g.shape[2] or len(g) != len(maps):
        raise ValueError(f"masks must be (N, S, S) for N heatmaps, got {g.shape} for {maps.shape}")
    rule = protocol.threshold if protocol.threshold != "adaptive" else "median"
    n, s = len(g), g.shape[-1]
    med, ada, hit = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, bool)
    empty = ~g.reshape(n, -1).any(1)
    for lo in range(0, n, _CHUNK):
        sl = slice(lo, min(n, lo + _CHUNK))
        keep = ~empty[sl]
        if not keep.any():
            continue
        gt, hm = g[sl][keep], maps[sl][keep]
        up = upsample(hm, s, protocol.upsample)
        p = minmax(up)
        idx = np.flatnonzero(keep) + lo
        med[idx] = ciou(binarise(p, rule), gt)
        ada[idx] = ciou(binarise(p, "adaptive", gt.sum(axis=(1, 2))), gt)
        hit[idx] = peak_hits(up, gt)
    scored = ~empty
    c05, auc = success_rate_auc(med[scored])
    a05, aauc = success_rate_auc(ada[scored])
    return {"mask_ciou_at_0.5": c05, "mask_auc": auc,
            "mask_mean_ciou": float(np.mean(med[scored])) if scored.any() else float("nan"),
            "mask_adaptive_ciou_at_0.5": a05, "mask_adaptive_auc": aauc,
            "mask_pointing_accuracy": float(np.mean(hit[scored])) if scored.any() else float("nan"),
            "n_scored": int(scored.sum()), "n_empty": int(empty.sum()), "protocol": protocol.name,
            "per_sample": [None if np.isnan(v) else float(v) for v in med]}


def mask_scores_by_id(heatmaps: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray],
                      protocol: Protocol = Protocol()) -> dict:
    """:func:`mask_scores` over the ids both mappings hold; ``missing_pred`` / ``missing_mask`` list
    the ids only one of them has, and ``per_sample`` becomes ``{id: cIoU}``."""
    ids = sorted(set(heatmaps) & set(masks))
    if not ids:
        raise ValueError("no clip has both a heatmap and a mask")
    out = mask_scores(np.stack([np.asarray(heatmaps[i], np.float32) for i in ids]),
                      np.stack([np.asarray(masks[i], bool) for i in ids]), protocol)
    out["per_sample"] = dict(zip(ids, out["per_sample"], strict=True))
    out["missing_pred"] = sorted(set(masks) - set(heatmaps))
    out["missing_mask"] = sorted(set(heatmaps) - set(masks))
    return out
