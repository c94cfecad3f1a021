"""Heatmap upsampling for the localisation scorer, as OpenCV's ``cv2.resize`` does it (float32).

Bilinear (:func:`upsample`, ``mode="bilinear"``) is bit-identical to ``cv2.resize(h, (224, 224), interpolation=INTER_LINEAR)``
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

Bicubic (``mode="bicubic"``): Keys a = -0.75, edge replicate, float32, OpenCV's taps.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["UPSAMPLERS", "upsample"]

UPSAMPLERS = ("bilinear", "bicubic")
_F32 = np.float32
_ONE = np.float32(1)


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
