"""The standard sound-localisation evaluator (METHODS 1.5), exact and vectorised.

The protocol every SSL-TIE-line paper reports, per test pair: upsample the heatmap to 224 x 224
(OpenCV bilinear, half-pixel centres), min-max normalise it as ``p = 1 - normalize_img(-h)``
(skipped for a constant map), keep the pixels strictly above the value at sorted index
``H*W//2`` (25,088 of 50,176) and compare with the ground truth:
``cIoU = sum(pred*gt) / (sum(gt) + sum(pred*(gt == 0)))``. Reported: cIoU@0.5 (the share of
samples with cIoU >= 0.5) and the AUC of the success-rate curve over thresholds ``0.05*i``.

Variants (:class:`Protocol`, names as in METHODS 1.5):

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

Bilinear upsampling is bit-identical to ``cv2.resize(h, (224, 224), interpolation=INTER_LINEAR)``
of a float32 map as the standard opencv-python wheels run it: through IPP, horizontal pass first,
then vertical, each a fused lerp ``fma(S1 - S0, f, S0)`` with coordinates in double (see
:func:`_bilinear_t`; the FMA is emulated exactly in float64). Measured: equal to cv2 5.1 (IPP on)
on every pixel of ~2,300 random maps (14/7/2 -> 224, 14 -> 120, 10x13, 13x10, 28x16;
ties, small and offset values), and it reproduces all 400 golden cIoUs. OpenCV's own non-IPP
float path (``cv2.ipp.setUseIPP(False)``) differs by an ulp on about half the pixels and misses
2 golden cIoUs per dataset; so did the previous formulation here (vertical pass first, rounded
products; ~58% of pixels off by an ulp vs cv2). Exception: a map with one row or one column
(cv2 then bypasses IPP) is not bit-exact. ``torch.nn.functional.interpolate`` misses a golden
sample too.

Speed (:func:`score_arrays`, the batched core): maps are processed in batches, in threads
(numpy releases the GIL), with reused scratch memory. Each batch is upsampled in (x, y) layout
(the layout of the later passes); the median and the per-sample adaptive rank come from in-place
``np.partition`` calls on one padded copy; the threshold is moved from p back to h exactly
(p is monotone in h, so ``p > c`` is ``h >= t`` for one float32 t, found by a search over float32
bit patterns); and the kept pixels inside each ground-truth cell (box edges cut the grid into
rectangles of constant value) are counted for both thresholds with one float32 matrix product.
No ground-truth map is rasterised and no per-sample Python loop runs. Any map size works. The
exact bilinear pass (float64 TwoSum) costs about 2.5x the previous rounded-product one.
"""
from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from avssl.data.annotations import pad_boxes, pixel_boxes

logger = logging.getLogger(__name__)

__all__ = ["Protocol", "THRESHOLDS", "UPSAMPLERS", "upsample", "minmax", "binarise", "ciou",
           "success_rate_auc", "pointing_hits", "pointing_accuracy", "map_confidence",
           "open_set_metrics", "score_arrays", "evaluate", "score", "LocalisationResult",
           "InvalidHeatmapError"]

THRESHOLDS = ("median", "median_ge", "adaptive", "fixed")
_RULE_CODE = {"median": 0, "median_ge": 1, "adaptive": 1, "fixed": 2}
UPSAMPLERS = ("bilinear", "bicubic")
_F32 = np.float32
_ONE = np.float32(1)


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


# --------------------------------------------------------------------------- upsampling
@lru_cache(maxsize=64)
def _coeffs(src: int, dst: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV resize taps for one axis: indices (dst, T) int64 and float32 weights (dst, T)."""
    scale = 1.0 / (dst / src)  # cv::resize: inv_scale = dst/src, scale = 1/inv_scale (double)
    fx = ((np.arange(dst) + 0.5) * scale - 0.5).astype(_F32)
    sx = np.floor(fx).astype(np.int64)
    fx = fx - sx.astype(_F32)
    if mode == "bilinear":
        lo, hi = sx < 0, sx >= src - 1
        fx[lo | hi] = 0
        sx = np.where(lo, 0, np.where(hi, src - 1, sx))
        return _frozen(np.stack([sx, np.minimum(sx + 1, src - 1)], 1), np.stack([_ONE - fx, fx], 1).astype(_F32))
    a = _F32(-0.75)  # Keys cubic, OpenCV's interpolateCubic in float32
    x1 = fx + _ONE
    c0 = ((a * x1 - 5 * a) * x1 + 8 * a) * x1 - 4 * a
    c1 = ((a + 2) * fx - (a + 3)) * fx * fx + 1
    om = _ONE - fx
    c2 = ((a + 2) * om - (a + 3)) * om * om + 1
    c3 = _ONE - c0 - c1 - c2
    idx = np.clip(sx[:, None] + np.arange(-1, 3)[None, :], 0, src - 1)
    return _frozen(idx, np.stack([c0, c1, c2, c3], 1).astype(_F32))


def _frozen(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Read-only arrays (cached values shared by threads)."""
    for a in arrays:
        a.setflags(write=False)
    return arrays


def _as_maps(heatmaps) -> np.ndarray:
    maps = np.asarray(heatmaps.detach().cpu().numpy() if hasattr(heatmaps, "detach") else heatmaps)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim == 4 and maps.shape[1] == 1:  # (N, 1, h, w) as models emit them
        maps = maps[:, 0]
    if maps.ndim != 3 or 0 in maps.shape:
        raise ValueError(f"expected heatmaps (N, h, w) or (N, 1, h, w), got shape {maps.shape}")
    return maps.astype(_F32, copy=False)


class _Workspace:
    """Reusable scratch arrays for one thread: batches re-use memory instead of re-allocating
    (freshly mapped pages cost more than the arithmetic on them)."""

    def __init__(self) -> None:
        self._bufs: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        buf = self._bufs.get(name)
        if buf is None or buf.nbytes < nbytes:
            buf = self._bufs[name] = np.empty(max(nbytes, 1), np.uint8)
        return buf[:nbytes].view(dtype).reshape(shape)


def _vertical(maps: np.ndarray, size: int, mode: str) -> np.ndarray:
    """(N, h, w) -> (N, size, w): the vertical pass, taps added in order (float32)."""
    idx, w = _coeffs(maps.shape[1], size, mode)
    out = maps[:, idx[:, 0], :] * w[None, :, 0, None]
    for t in range(1, idx.shape[1]):
        out = out + maps[:, idx[:, t], :] * w[None, :, t, None]
    return out


def _upsample_t(maps: np.ndarray, size: int, mode: str, ws: _Workspace | None = None) -> np.ndarray:
    """Upsampled maps in (N, x, y) layout (transposed), float32.

    Bilinear: :func:`_bilinear_t` (== cv2). Bicubic: vertical pass first, then the horizontal
    one, every tap product rounded to float32 before the taps are added in order.
    """
    if mode == "bilinear":
        return _bilinear_t(maps, size, ws)
    n = len(maps)
    vt = np.ascontiguousarray(_vertical(maps, size, mode).transpose(0, 2, 1))  # (n, w, size_y)
    w = vt.shape[1]
    ws = ws or _Workspace()
    out = ws.get("ot", (n, size, size), _F32)
    idx, wt = _coeffs(w, size, mode)
    np.take(vt, idx[:, 0], axis=1, out=out)
    out *= wt[None, :, 0, None]
    tmp = ws.get("tmp", out.shape, _F32)
    for t in range(1, idx.shape[1]):
        np.take(vt, idx[:, t], axis=1, out=tmp)
        tmp *= wt[None, :, t, None]
        out += tmp
    return out


@lru_cache(maxsize=64)
def _lerp_coeffs(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IPP's linear taps for one axis: indices i0, i1 (dst,) int64 (clamped) and the float32
    fraction ``f = float32(x - floor(x))``, ``x = (d + 0.5) * (src / dst) - 0.5`` in double."""
    x = (np.arange(dst) + 0.5) * (src / dst) - 0.5
    sx = np.floor(x)
    f = (x - sx).astype(_F32)
    sx = sx.astype(np.int64)
    return _frozen(np.clip(sx, 0, src - 1), np.clip(sx + 1, 0, src - 1), f)


def _fma32(d: np.ndarray, t: np.ndarray, a: np.ndarray, out: np.ndarray | None = None,
           ws: _Workspace | None = None) -> np.ndarray:
    """Correctly rounded float32 ``d * t + a`` (one rounding, as a hardware FMA), in numpy.

    The float64 product of two float32 values is exact and the float64 sum ``s`` is rounded
    once; casting ``s`` to float32 is then the correctly rounded result unless ``s`` landed
    exactly on a float32 rounding midpoint (double rounding). Those rare entries are redone
    with the TwoSum error term (the odd float64 neighbour towards the exact value).
    """
    ws = ws or _Workspace()
    shape = np.broadcast_shapes(d.shape, np.shape(t), a.shape)
    p, a64, s, bp, e = (ws.get(k, shape, np.float64) for k in ("fma_p", "fma_a", "fma_s", "fma_b", "fma_e"))
    np.copyto(p, d)
    p *= t  # exact
    np.copyto(a64, a)
    np.add(p, a64, out=s)
    np.subtract(s, a64, out=bp)  # TwoSum: e = (p + a) - s exactly
    np.subtract(s, bp, out=e)
    np.subtract(a64, e, out=e)
    np.subtract(p, bp, out=bp)
    e += bp
    bits = s.reshape(-1).view(np.int64)
    fix = np.flatnonzero(((bits & 0x1FFFFFFF) == 0x10000000) & (e.reshape(-1) != 0))
    if fix.size:  # s sits on a float32 midpoint but is not exact: step to the odd neighbour
        sf, ef = s.reshape(-1), e.reshape(-1)
        sf[fix] = np.nextafter(sf[fix], np.where(ef[fix] > 0, np.inf, -np.inf))
    if out is None:
        return s.astype(_F32)
    np.copyto(out, s, casting="same_kind")
    return out


def _bilinear_t(maps: np.ndarray, size: int, ws: _Workspace | None = None) -> np.ndarray:
    """``cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR)`` of float32 maps, bit for
    bit with the default opencv-python build (IPP enabled), in (N, x, y) layout.

    Measured, not documented: with IPP (``cv2.ipp.useIPP()`` true, the wheel default, and what
    produced the golden ``ssltie_metrics.npz``) a 2-D float32 resize runs the horizontal pass
    first, then the vertical one, each as a fused lerp ``fma(S1 - S0, f, S0)`` (one rounding);
    coordinates ``x = (d + 0.5) * (src / dst) - 0.5`` and the fraction ``f = float32(x - floor(x))``
    both in double (not OpenCV's float ``fx``), taps clamped to the border (a clamped tap gives
    ``S0`` exactly). OpenCV's own
    generic path (``cv2.ipp.setUseIPP(False)``: ``S0 * (1 - f) + S1 * f`` products rounded,
    vertical border weights not reset) differs from it by an ulp on about half the pixels;
    it is not what the released evaluator ran.
    """
    n, h, w = maps.shape
    x0, x1, fx = _lerp_coeffs(w, size)
    y0, y1, fy = _lerp_coeffs(h, size)
    a = maps[:, :, x0]
    ws = ws or _Workspace()
    rows = _fma32(maps[:, :, x1] - a, fx, a, ws.get("rows", (n, h, size), _F32), ws)  # horizontal pass
    r0 = np.take(rows, y0, axis=1, out=ws.get("r0", (n, size, size), _F32))
    d = np.take(rows, y1, axis=1, out=ws.get("d", (n, size, size), _F32))
    d -= r0
    res = _fma32(d, fy[:, None], r0, d, ws)  # vertical pass, (n, size_y, size_x)
    out = ws.get("ot", (n, size, size), _F32)
    np.copyto(out, res.transpose(0, 2, 1))
    return out


def upsample(heatmaps, size: int = 224, mode: str = "bilinear") -> np.ndarray:
    """Resize heatmaps (N, h, w) (any h, w; a 2-D map is one sample) to (N, size, size) float32.

    ``bilinear`` is bit-identical to ``cv2.resize(h, (size, size), interpolation=INTER_LINEAR)``
    on float32 maps (default IPP-enabled opencv-python, as used by the released evaluator; not
    for maps with a single row or column; see :func:`_bilinear_t`); ``bicubic`` uses OpenCV's
    cubic taps (not verified bit-exact). A map already ``size x size`` is returned unchanged.
    """
    if mode not in UPSAMPLERS:
        raise ValueError(f"mode must be one of {UPSAMPLERS}, got {mode!r}")
    return np.ascontiguousarray(_upsample_t(_as_maps(heatmaps), size, mode).transpose(0, 2, 1))


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
    up = upsample(heatmaps, g.shape[-1], mode).reshape(len(g), -1)
    return g.reshape(len(g), -1)[np.arange(len(g)), up.argmax(1)] > 0


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


# --------------------------------------------------------------------------- fast batched scorer
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
