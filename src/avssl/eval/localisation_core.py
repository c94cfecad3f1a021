"""The localisation scorer's batched core: :class:`Protocol` and :func:`score_arrays`.

Speed (:func:`score_arrays`, the batched core): maps are processed in batches, in threads
(numpy releases the GIL), with reused scratch memory. Each batch is upsampled in (x, y) layout
(the layout of the later passes); the median and the per-sample adaptive rank come from in-place
``np.partition`` calls on one padded copy; the threshold is moved from p back to h exactly
(p is monotone in h, so ``p > c`` is ``h >= t`` for one float32 t, found by a search over float32
bit patterns); and the kept pixels inside each ground-truth cell (box edges cut the grid into
rectangles of constant value) are counted for both thresholds with one float32 matrix product.
No ground-truth map is rasterised and no per-sample Python loop runs. Any map size works. The
exact bilinear pass (float64 TwoSum) costs about 2.5x the previous rounded-product one.

The protocol itself (thresholds, cIoU, AUC, the quirks reproduced) is described in
:mod:`avssl.eval.localisation`, which holds the per-sample reference implementation this core
is tested against and the id-keyed API.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from avssl.data.annotations import pad_boxes, pixel_boxes
from avssl.eval.upsample import _F32, _ONE, UPSAMPLERS, _as_maps, _upsample_t, _Workspace

__all__ = ["Protocol", "THRESHOLDS", "InvalidHeatmapError", "score_arrays"]

THRESHOLDS = ("median", "median_ge", "adaptive", "fixed")
_RULE_CODE = {"median": 0, "median_ge": 1, "adaptive": 1, "fixed": 2}


class InvalidHeatmapError(ValueError):
    """A heatmap holds NaN/inf (:func:`evaluate` raises it in strict mode, else excludes the map)."""


@dataclass(frozen=True)
class Protocol:
    """How a heatmap becomes a binary prediction (see module docstring for each option).

    Attributes:
        threshold: "median" (default, the released protocol), "median_ge", "adaptive", "fixed".
        upsample: "bilinear" (OpenCV INTER_LINEAR, default) or "bicubic".
        size: evaluation resolution (224); ground truth is rasterised on this grid.
    """

    threshold: str = "median"
    upsample: str = "bilinear"
    size: int = 224

    def __post_init__(self) -> None:
        if self.threshold not in THRESHOLDS:
            raise ValueError(f"threshold must be one of {THRESHOLDS}, got {self.threshold!r}")
        if self.upsample not in UPSAMPLERS:
            raise ValueError(f"upsample must be one of {UPSAMPLERS}, got {self.upsample!r}")
        if self.size < 2:
            raise ValueError(f"size must be >= 2, got {self.size}")

    @property
    def name(self) -> str:
        return f"{self.threshold}/{self.upsample}/{self.size}"


# Ground truth as "cells": the box edges cut the grid into (2K+1) x (2K+1) rectangles of
# constant box count, so every sum the cIoU needs is a sum over cells of (predicted pixels in
# the cell) x (cell value); no ground-truth map is rasterised.
@dataclass
class _Cells:
    xb: np.ndarray  # (N, M+1) int64 sorted column breakpoints (0, box edges, size)
    yb: np.ndarray  # (N, M+1) int64 row breakpoints
    g: np.ndarray  # (N, M, M) float64 ground-truth value per cell
    supp: np.ndarray  # (N, M, M) bool, cell inside at least one box
    gt_sum: np.ndarray  # (N,) float64 sum of the ground-truth map
    n_gt: np.ndarray  # (N,) int64 pixels with gt > 0

    def take(self, idx: np.ndarray) -> _Cells:
        return _Cells(*(a[idx] for a in (self.xb, self.yb, self.g, self.supp, self.gt_sum, self.n_gt)))


def _make_cells(px: np.ndarray, size: int, box_format: str) -> _Cells:
    n = len(px)
    edge = np.array([0, size], np.int64)
    xb = np.sort(np.concatenate([np.broadcast_to(edge, (n, 2)), px[..., 0], px[..., 2]], 1), 1)
    yb = np.sort(np.concatenate([np.broadcast_to(edge, (n, 2)), px[..., 1], px[..., 3]], 1), 1)
    colcov = (px[..., 0, None] <= xb[:, None, :-1]) & (xb[:, None, 1:] <= px[..., 2, None])  # (N,K,M)
    rowcov = (px[..., 1, None] <= yb[:, None, :-1]) & (yb[:, None, 1:] <= px[..., 3, None])
    counts = np.matmul(rowcov.transpose(0, 2, 1).astype(np.float64), colcov.astype(np.float64))
    area = np.diff(yb, axis=1)[:, :, None] * np.diff(xb, axis=1)[:, None, :]
    g = (counts >= 1).astype(np.float64) if box_format == "vggss" else np.minimum(counts, 2.0) / 2.0
    supp = counts >= 1
    return _Cells(xb, yb, g, supp, (area * g).sum((1, 2)), (area * supp).sum((1, 2)).astype(np.int64))


def _interval_index(breaks: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Index of the (last non-empty) interval [b_i, b_{i+1}) holding v; breaks (c, M+1), v (c, ...)."""
    inner = breaks[:, 1:-1].reshape(len(breaks), *([1] * (v.ndim - 1)), -1)
    return (inner <= v[..., None]).sum(-1)


def _to_key(x: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(x, _F32).view(np.int32).astype(np.int64)
    return np.where(bits >= 0, bits, -(bits & 0x7FFFFFFF))


def _from_key(key: np.ndarray) -> np.ndarray:
    bits = np.where(key >= 0, key, (-key) | 0x80000000).astype(np.uint32)
    return bits.view(_F32)


def _threshold(v: np.ndarray, hmax: np.ndarray, hmin: np.ndarray, rule: np.ndarray) -> np.ndarray:
    """Smallest float32 t with ``keep(h) <=> h >= t`` for h in [hmin, hmax] (+inf: keep nothing).

    Per row: ``keep(h) = rule(p(h), c) or p(h) >= 1`` with ``p(h) = 1 - (hmax - h) / (hmax - hmin)``
    in float32 (the released code's ``1 - normalize_img(-h)``; ``1 + h`` for a constant map) and
    ``rule`` (codes, (n,) int) 0: ``p > p(v)`` (median), 1: ``p >= p(v)`` (median_ge, adaptive),
    2: ``p >= 0.5`` (fixed). p is monotone in h, so the kept values form an upper set and t is
    found exactly by a 64-ary search over the ordered float32 bit patterns, starting with a
    window around the analytic boundary ``hmax - (hmax - hmin)(1 - c)``.
    """
    const = hmax == hmin
    d = np.where(const, _ONE, hmax - hmin)
    c = np.where(rule == 2, _F32(0.5), np.where(const, _ONE - (-v), _ONE - (hmax - v) / d))
    hm, dd, cc, cst, strict = hmax[:, None], d[:, None], c[:, None], const[:, None], (rule == 0)[:, None]

    def keep(key: np.ndarray, rows: np.ndarray) -> np.ndarray:  # key (m, W) -> (m, W) bool
        x = _from_key(key)
        px = _ONE - (hm[rows] - x) / dd[rows]
        if const.any():
            px = np.where(cst[rows], _ONE - (-x), px)
        return np.where(strict[rows], px > cc[rows], px >= cc[rows]) | (px >= 1)

    kmin, kmax = _to_key(hmin), _to_key(hmax)
    guess = (hmax.astype(np.float64) - d.astype(np.float64) * (1.0 - c.astype(np.float64))).astype(_F32)
    rows = np.arange(len(v))
    lo, hi = kmin - 1, kmax.copy()  # keep(lo) false (below range), keep(hi) true: p(hmax) = 1
    grid = np.clip(_to_key(guess)[:, None] + np.arange(-31, 33)[None, :], kmin[:, None], kmax[:, None])
    while rows.size:
        kg = keep(grid, rows)
        anyk = kg.any(1)
        j = kg.argmax(1)
        ar = np.arange(rows.size)
        hi[rows] = np.where(anyk, grid[ar, j], hi[rows])
        lo[rows] = np.where(anyk & (j > 0), grid[ar, j - 1], np.where(anyk, lo[rows], grid[:, -1]))
        rows = rows[hi[rows] - lo[rows] > 1]  # unresolved: refine on a 64-point grid of the bracket
        step = -(-(hi[rows] - lo[rows]) // 64)
        grid = np.minimum(lo[rows, None] + step[:, None] * np.arange(1, 65)[None, :], hi[rows, None])
    t = _from_key(hi).copy()
    t[~keep(kmax[:, None], np.arange(len(v)))[:, 0]] = np.inf  # a constant map whose p = 1 + h fails
    return t


def _ciou_cells(counts: np.ndarray, cells: _Cells) -> np.ndarray:
    inter = (counts * cells.g).sum((1, 2))
    outside = counts.sum((1, 2)) - (counts * cells.supp).sum((1, 2))
    return inter / (cells.gt_sum + outside)


def _pad_ranks(buf: np.ndarray, r: np.ndarray, use: np.ndarray) -> int:
    """Fill padding columns ``buf`` (n, D) so one kth serves rows with ranks ``r`` (n,).

    Row i gets ``top - r[i]`` entries of -inf (the rest +inf; rows not in ``use`` all +inf), so
    ``sort(region_i + pad_i)[top] == sort(region_i)[r[i]]``. Returns ``top``.
    """
    top = int(r[use].max())
    need = np.where(use, top - r, 0)
    buf[...] = np.where(np.arange(buf.shape[1])[None, :] < need[:, None], -np.inf, np.inf)
    return top


def _order_stats(flat: np.ndarray, k_rule: int | None, k_ad: np.ndarray,
                 ws: _Workspace) -> tuple[np.ndarray | None, np.ndarray]:
    """Exact order statistics per row of (n, R) ``flat``: ``sort(row)[k_rule]`` (or None) and
    ``sort(row)[k_ad[i]]``, with in-place np.partition calls on one padded copy.

    With a median (``k_rule``), the adaptive ranks are then found inside the half below or
    above it. Per-row ranks share one kth through -inf padding (:func:`_pad_ranks`); batches
    are sorted by rank, so the padding is short.
    """
    n, r = flat.shape
    k_ad = np.asarray(k_ad, np.int64)
    if k_rule is None:
        pad = int(k_ad.max() - k_ad.min())
        buf = ws.get("part", (n, r + pad), flat.dtype)
        buf[:, :r] = flat
        top = _pad_ranks(buf[:, r:], k_ad, np.ones(n, bool))
        buf.partition(top, axis=1)
        return None, buf[:, top].copy()
    lo, hi = k_ad < k_rule, k_ad > k_rule
    r_lo, r_hi = k_ad, k_ad - k_rule - 1
    pl = int(r_lo[lo].max() - r_lo[lo].min()) if lo.any() else 0
    ph = int(r_hi[hi].max() - r_hi[hi].min()) if hi.any() else 0
    buf = ws.get("part", (n, pl + r + ph), flat.dtype)  # [left pad | data | right pad]
    data = buf[:, pl:pl + r]
    data[...] = flat
    data.partition(k_rule, axis=1)
    v_rule = data[:, k_rule].copy()
    v_ad = v_rule.copy()
    if lo.any():  # adaptive rank below the median: inside the left part (+ its pad)
        left = buf[:, :pl + k_rule]
        top = _pad_ranks(buf[:, :pl], r_lo, lo)
        left.partition(top, axis=1)
        v_ad[lo] = left[lo, top]
    if hi.any():
        right = buf[:, pl + k_rule + 1:]
        top = _pad_ranks(buf[:, pl + r:], r_hi, hi)
        right.partition(top, axis=1)
        v_ad[hi] = right[hi, top]
    return v_rule, v_ad


def _extremes(ot: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(max, min, row-major flat index y*W + x of the first maximum) of (n, x, y)-layout maps."""
    n, wx, hy = ot.shape
    flat = ot.reshape(n, -1)
    rows = np.arange(n)
    am = flat.argmax(1)
    hmax = flat[rows, am].copy()
    hmin = flat.min(1)
    flat[rows, am] = -np.inf  # is the maximum attained twice?
    multi = np.flatnonzero(flat.max(1) == hmax)
    flat[rows, am] = hmax
    first = (am % hy) * wx + am // hy
    if multi.size:  # ties: the first maximum in row-major order is not the first in (x, y) order
        eq = ot[multi] == hmax[multi, None, None]
        ymin = np.where(eq.any(2), eq.argmax(2), hy)  # (m, x)
        first[multi] = (ymin * wx + np.arange(wx)[None, :]).min(1)
    return hmax, hmin, first


def _cell_counts(ot: np.ndarray, ts: Sequence[np.ndarray], cells: _Cells, ws: _Workspace) -> list[np.ndarray]:
    """Pixels >= t inside each ground-truth cell, for one or two thresholds: [(n, M, M) float64].

    Batched float32 matrix products with the column and row interval indicators (exact: all
    sums are integers below 2**24). Two thresholds share one pass over the map: the uint8 code
    ``[h >= t0] + 225 [h >= t1]`` summed over a column interval (at most 224 + 225 * 224) is
    decoded exactly (225 > 224) before the small row products.
    """
    size = ot.shape[1]
    b0 = np.greater_equal(ot, ts[0][:, None, None], out=ws.get("b0", ot.shape, bool)).view(np.uint8)
    if len(ts) > 1:
        b1 = np.greater_equal(ot, ts[1][:, None, None], out=ws.get("b1", ot.shape, bool)).view(np.uint8)
        code = np.multiply(b1, np.uint8(225), out=ws.get("code", ot.shape, np.uint8))
        b0 = np.add(code, b0, out=code)
    pred = ws.get("pred", ot.shape, _F32)
    np.copyto(pred, b0)
    grid = np.arange(size)
    colind = ((cells.xb[:, :-1, None] <= grid) & (grid < cells.xb[:, 1:, None])).astype(_F32)  # (n, M, x)
    rowind = ((cells.yb[:, None, :-1] <= grid[:, None]) & (grid[:, None] < cells.yb[:, None, 1:])).astype(_F32)
    per_x = np.matmul(colind, pred)  # (n, M, y), exact integers
    if len(ts) > 1:
        pi = per_x.astype(np.int64)
        hi = pi // 225
        per_x = np.concatenate([pi - 225 * hi, hi], 1).astype(_F32)
    counts = np.matmul(per_x, rowind).transpose(0, 2, 1).astype(np.float64)  # (n, M, len(ts) * M)
    m = rowind.shape[2]
    return [counts[:, :, i * m:(i + 1) * m] for i in range(len(ts))]


def _score_chunk(maps: np.ndarray, cells: _Cells, protocol: Protocol, ws: _Workspace) -> dict[str, np.ndarray]:
    """Per-sample cIoU (protocol and adaptive) and pointing hits for one batch of maps."""
    size, rule, n = protocol.size, protocol.threshold, len(maps)
    hw = size * size
    ot = _upsample_t(maps, size, protocol.upsample, ws)
    hmax, hmin, first = _extremes(ot)
    k_ad = hw - cells.n_gt  # adaptive: keep p >= the n_gt-th largest value
    k_rule = hw // 2 if rule in ("median", "median_ge") else None
    v_rule, v_ad = _order_stats(ot.reshape(n, hw), k_rule, k_ad, ws)
    if rule == "adaptive":
        ts = [_threshold(v_ad, hmax, hmin, np.ones(n, np.int64))]
    else:  # both thresholds in one call
        v_rule = hmax if v_rule is None else v_rule  # "fixed" ignores it
        code = np.r_[np.ones(n, np.int64), np.full(n, _RULE_CODE[rule])]
        t2 = _threshold(np.r_[v_ad, v_rule], np.r_[hmax, hmax], np.r_[hmin, hmin], code)
        ts = [t2[:n], t2[n:]]
    counts = _cell_counts(ot, ts, cells, ws)
    iy = _interval_index(cells.yb, (first // size)[:, None])[:, 0]
    ix = _interval_index(cells.xb, (first % size)[:, None])[:, 0]
    return {"adaptive_ciou": _ciou_cells(counts[0], cells), "ciou": _ciou_cells(counts[-1], cells),
            "pointing_hit": cells.supp[np.arange(n), iy, ix]}


def score_arrays(heatmaps, boxes, box_format: str = "vggss", protocol: Protocol = Protocol(),
                 chunk: int = 16, workers: int | None = None) -> dict[str, np.ndarray]:
    """Per-sample metrics for aligned arrays; the batched core of :func:`score`.

    Args:
        heatmaps: (N, h, w) finite maps, any resolution (cast to float32).
        boxes: padded boxes (N, K, 4) (padding rows NaN, or negative for Flickr) or a sequence
            of (k, 4) arrays: normalised for ``"vggss"``, 256-pixel frame for ``"flickr"``.
        box_format: "vggss" (binary union) or "flickr" (annotator-weighted {0, 0.5, 1}).
        chunk: maps per batch (memory: ~1 MB per 224 x 224 map and batch).
        workers: threads over batches (numpy releases the GIL); default min(2, CPUs).

    Returns:
        ``"ciou"``, ``"adaptive_ciou"`` (N,) float64, ``"pointing_hit"`` (N,) bool and ``"n_gt"``
        (N,) ground-truth pixel counts; samples without ground-truth pixels get NaN cIoUs.
    """
    maps = _as_maps(heatmaps)
    bad = np.flatnonzero(~np.isfinite(maps).all((1, 2)))
    if bad.size:
        raise InvalidHeatmapError(f"heatmaps {bad[:10].tolist()} contain NaN/inf values (use evaluate() "
                                  "to exclude them instead)")
    if not isinstance(boxes, np.ndarray):
        boxes = pad_boxes(list(boxes), fill=np.nan if box_format == "vggss" else -1)[1]
    if len(boxes) != len(maps):
        raise ValueError(f"{len(maps)} heatmaps but {len(boxes)} box sets")
    cells = _make_cells(pixel_boxes(boxes, box_format, protocol.size), protocol.size, box_format)
    n = len(maps)
    out = {"ciou": np.full(n, np.nan), "adaptive_ciou": np.full(n, np.nan),
           "pointing_hit": np.zeros(n, bool), "n_gt": cells.n_gt}
    order = np.argsort(cells.n_gt, kind="stable")  # similar adaptive ranks within a batch
    order = order[cells.n_gt[order] > 0]
    batches = [order[i:i + chunk] for i in range(0, len(order), max(1, chunk))]

    local = threading.local()  # one scratch workspace per worker thread, freed with the call

    def run(idx: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if not hasattr(local, "ws"):
            local.ws = _Workspace()
        return idx, _score_chunk(maps[idx], cells.take(idx), protocol, local.ws)

    nw = max(1, min(workers or min(2, os.cpu_count() or 1), len(batches)))
    with ThreadPoolExecutor(nw) if nw > 1 else _Serial() as ex:
        for idx, res in ex.map(run, batches):
            for key, val in res.items():
                out[key][idx] = val
    return out


class _Serial:
    """Stand-in for a one-thread executor (runs in the caller's thread)."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc) -> None:
        return None

    @staticmethod
    def map(fn, items):
        return map(fn, items)
