"""Heatmap overlays, boxes and contact sheets (PNG grids) for localisation results.

Pure NumPy + PIL + matplotlib colormaps (``matplotlib.colormaps``; no pyplot, no global
state), so it is safe in worker processes and headless machines.

Conventions:
* Frames are ``uint8`` RGB ``(H, W, 3)``; heatmaps are 2-D float arrays ``(h, w)`` of any
  resolution covering the whole frame. ``NaN`` cells mean "not seen by the model" (e.g. the
  part of a non-square frame outside the centre crop, see :mod:`avssl.infer`): they are left
  uncoloured.
* Boxes are normalised ``(x_min, y_min, x_max, y_max)`` in ``[0, 1]`` of the frame.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from avssl.atomic import atomic_path

__all__ = ["upsample", "normalise", "colourise", "heat_layer", "blend", "overlay", "draw_boxes", "contact_sheet", "grid_png"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike
Item = tuple  # (frame (H,W,3) uint8, heatmap (h,w) float, title str, boxes (K,4) | None)


def _linear_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-pixel-centre linear interpolation (OpenCV INTER_LINEAR): indices i0, i1 and weight of i1."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def upsample(heatmap: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize (half-pixel centres, edge clamped) ``(h, w) -> (height, width)`` float32."""
    m = np.asarray(heatmap, dtype=np.float32)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"heatmap must be a non-empty 2-D array, got shape {m.shape}")
    r0, r1, wr = _linear_weights(m.shape[0], height)
    c0, c1, wc = _linear_weights(m.shape[1], width)
    rows = m[r0] * (1.0 - wr)[:, None] + m[r1] * wr[:, None]  # (height, w)
    return rows[:, c0] * (1.0 - wc)[None, :] + rows[:, c1] * wc[None, :]


def normalise(x: np.ndarray) -> np.ndarray:
    """Min-max normalise to ``[0, 1]`` ignoring NaN; a constant (or all-NaN) map gives zeros."""
    x = np.asarray(x, dtype=np.float32)
    finite = np.isfinite(x)
    if not finite.any():
        return np.zeros_like(x)
    lo, hi = float(x[finite].min()), float(x[finite].max())
    if hi - lo <= 0.0:
        return np.where(finite, 0.0, np.nan).astype(np.float32)
    return (x - lo) / (hi - lo)


def _fill_nan(m: np.ndarray) -> np.ndarray:
    """Replace NaN cells for interpolation: edge-extend a rectangular valid region, else the min."""
    valid = np.isfinite(m)
    if valid.all() or not valid.any():
        return np.nan_to_num(m, nan=0.0)
    rows, cols = np.flatnonzero(valid.any(1)), np.flatnonzero(valid.any(0))
    inner = m[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    if np.isfinite(inner).all() and valid.sum() == inner.size:
        pad = ((rows[0], m.shape[0] - 1 - rows[-1]), (cols[0], m.shape[1] - 1 - cols[-1]))
        return np.pad(inner, pad, mode="edge")
    return np.where(valid, m, np.nanmin(m))


def colourise(values: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """Values in ``[0, 1]`` (any shape ``S``) -> ``uint8`` RGB ``S + (3,)`` through a 256-entry colormap LUT."""
    import matplotlib

    try:
        cm = matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(f"unknown matplotlib colormap {cmap!r}") from None
    lut = np.round(cm(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.uint8)
    idx = np.round(np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0) * 255.0).astype(np.intp)
    return lut[idx]


def heat_layer(heatmap: np.ndarray, height: int, width: int, alpha: float = 0.5,
               cmap: str = "jet") -> tuple[np.ndarray, np.ndarray]:
    """Colour ``(height, width, 3)`` float32 and blend weight ``(height, width)`` of a heatmap ``(h, w)``.

    The map is upsampled bilinearly to the frame, min-max normalised (over the pixels it covers)
    and coloured with ``cmap``. The weight is ``alpha``, and 0 on pixels that fall in NaN cells
    (interpolated validity < 0.5). Reuse it to blend many frames with one map (:func:`blend`).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    m = np.asarray(heatmap, dtype=np.float32)
    valid = np.isfinite(m)
    values = upsample(_fill_nan(m), height, width)
    weight = np.full((height, width), alpha, np.float32)
    if not valid.all():
        seen = upsample(valid.astype(np.float32), height, width) >= 0.5
        weight *= seen
        values = np.where(seen, values, np.nan)
    return colourise(normalise(values), cmap).astype(np.float32), weight


def blend(frame: np.ndarray, colour: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``(1 - weight) * frame + weight * colour`` rounded to ``uint8`` ``(H, W, 3)``."""
    out = frame.astype(np.float32) * (1.0 - weight[..., None]) + colour * weight[..., None]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def overlay(frame: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend a heatmap over a frame: ``(H, W, 3) uint8`` + ``(h, w)`` float -> ``(H, W, 3) uint8``.

    The map is upsampled bilinearly to the frame, min-max normalised (over its finite cells),
    coloured with ``cmap`` and blended as ``(1 - alpha) * frame + alpha * colour``. Pixels that
    fall in NaN cells keep the frame's colours (see :func:`heat_layer`). Deterministic; no
    matplotlib state is touched.
    """
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
    colour, weight = heat_layer(heatmap, frame.shape[0], frame.shape[1], alpha, cmap)
    return blend(frame, colour, weight)


def draw_boxes(img: np.ndarray, boxes_normalised: np.ndarray | Sequence, colour: tuple[int, int, int] = (0, 255, 0),
               width: int = 2) -> np.ndarray:
    """A copy of ``img`` ``(H, W, 3) uint8`` with rectangle outlines for ``(K, 4)`` normalised boxes."""
    from PIL import Image, ImageDraw

    boxes = np.asarray(boxes_normalised, dtype=np.float64).reshape(-1, 4)
    if boxes.size and (not np.isfinite(boxes).all()):
        raise ValueError(f"boxes must be finite, got {boxes}")
    im = Image.fromarray(np.asarray(img, dtype=np.uint8))
    draw = ImageDraw.Draw(im)
    h, w = im.height, im.width
    for x0, y0, x1, y1 in np.clip(boxes, 0.0, 1.0):
        draw.rectangle([x0 * (w - 1), y0 * (h - 1), x1 * (w - 1), y1 * (h - 1)],
                       outline=tuple(int(c) for c in colour), width=width)
    return np.asarray(im)


def _fit_title(draw, text: str, font, max_width: int) -> str:
    if draw.textlength(text, font=font) <= max_width:
        return text
    while text and draw.textlength(text + "...", font=font) > max_width:
        text = text[:-1]
    return text + "..."


def contact_sheet(items: Sequence[Item], cols: int, path: PathLike, tile: int = 224, alpha: float = 0.5,
                  cmap: str = "jet", pad: int = 4, title_height: int = 16,
                  box_colour: tuple[int, int, int] = (0, 255, 0)) -> Path:
    """Write a PNG grid of overlays with titles; returns the path.

    ``items``: ``(frame, heatmap, title, boxes or None)``; ``heatmap`` None shows the frame alone.
    Each overlay is scaled to height ``tile`` (width capped at ``2 * tile``, aspect kept), boxes
    are drawn in ``box_colour``. Cells have the widest tile's width; the image is
    ``cols * (cell_w + pad) + pad`` by ``rows * (tile + title_height + pad) + pad`` pixels.
    """
    from PIL import Image, ImageDraw, ImageFont

    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    if not items:
        raise ValueError("contact_sheet needs at least one item")
    tiles = []
    for frame, heatmap, _, boxes in items:
        img = overlay(frame, heatmap, alpha, cmap) if heatmap is not None else np.asarray(frame, np.uint8)
        if boxes is not None and len(boxes):
            img = draw_boxes(img, boxes, box_colour)
        im = Image.fromarray(img)
        tw = max(1, min(2 * tile, round(im.width * tile / im.height)))
        tiles.append(im.resize((tw, tile), Image.Resampling.LANCZOS))
    cell_w = max(t.width for t in tiles)
    rows = -(-len(tiles) // cols)
    ncols = min(cols, len(tiles))
    sheet = Image.new("RGB", (ncols * (cell_w + pad) + pad, rows * (tile + title_height + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for k, (im, item) in enumerate(zip(tiles, items, strict=True)):
        r, c = divmod(k, cols)
        x = pad + c * (cell_w + pad)
        y = pad + r * (tile + title_height + pad)
        draw.text((x, y + 1), _fit_title(draw, str(item[2]), font, cell_w), fill="black", font=font)
        sheet.paste(im, (x + (cell_w - im.width) // 2, y + title_height))
    path = Path(path)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    logger.debug("wrote contact sheet %s (%d items, %dx%d)", path, len(tiles), sheet.width, sheet.height)
    return path


def grid_png(frames: np.ndarray, maps: np.ndarray, times: Sequence[float], path: PathLike, cols: int | None = None,
             **kwargs) -> Path:
    """Contact sheet of ``frames`` ``(N, H, W, 3)`` with ``maps`` ``(N, h, w)`` titled ``t = ... s``.

    ``cols`` defaults to ``min(N, 4)``; ``kwargs`` go to :func:`contact_sheet`.
    """
    if not (len(frames) == len(maps) == len(times)):
        raise ValueError(f"frames, maps and times differ in length: {len(frames)}, {len(maps)}, {len(times)}")
    items = [(f, m, f"t = {float(t):.2f} s", None) for f, m, t in zip(frames, maps, times, strict=True)]
    return contact_sheet(items, cols or min(len(items), 4), path, **kwargs)
