"""Boxes and the centre crop the model sees (pure functions).

The evaluation frame is the original frame with its short side resized to ``size`` and the
centre ``size x size`` square cut out (:func:`avssl.data.datasets.resize_crop`). VGG-SS boxes are
normalised to the FULL frame, and the released protocol lays them on that crop unchanged (the
authors' behaviour and avssl's default, ``boxes="crop"``): on a wide frame a box near the sides is
scored where the crop shows something else. ``boxes="full-frame"`` maps each box into the crop
(:func:`boxes_to_crop`), clipped to it, and counts what fell outside.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["BOX_MODES", "crop_window", "boxes_to_crop", "outside_share", "map_boxes", "boxes_for_scoring",
           "outside_warning"]

BOX_MODES = ("crop", "full-frame")


def crop_window(width: int, height: int, size: int = 224) -> tuple[float, float, float, float]:
    """The centre crop of a ``width x height`` frame in that frame's normalised coordinates,
    ``(x0, y0, x1, y1)``, with the loader's geometry (PIL resize of the short side to ``size``, the
    long side to ``int(size * long / short)``, crop offset ``int(round((long - size) / 2))``)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    if width == height:
        return 0.0, 0.0, 1.0, 1.0
    short, long_ = min(width, height), max(width, height)
    resized = int(size * long_ / short) if short != size else long_
    offset = int(round((resized - size) / 2.0))
    a, b = offset / resized, (offset + size) / resized
    return (a, 0.0, b, 1.0) if width > height else (0.0, a, 1.0, b)


def outside_share(boxes: np.ndarray, window: tuple[float, float, float, float]) -> float:
    """The share of the boxes' total area (full-frame normalised ``(k, 4)`` x1 y1 x2 y2) outside ``window``."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    x0, y0, x1, y1 = window
    iw = np.clip(np.minimum(b[:, 2], x1) - np.maximum(b[:, 0], x0), 0, None)
    ih = np.clip(np.minimum(b[:, 3], y1) - np.maximum(b[:, 1], y0), 0, None)
    total = float(area.sum())
    return 0.0 if total <= 0 else float(1.0 - (iw * ih).sum() / total)


def boxes_to_crop(boxes: np.ndarray, width: int, height: int, size: int = 224) -> np.ndarray:
    """Full-frame normalised boxes ``(k, 4)`` -> the same boxes in the centre crop's normalised
    coordinates, clipped to ``[0, 1]`` (a box wholly outside becomes empty: zero width or height)."""
    x0, y0, x1, y1 = crop_window(width, height, size)
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    out = np.empty_like(b)
    out[:, [0, 2]] = (b[:, [0, 2]] - x0) / (x1 - x0)
    out[:, [1, 3]] = (b[:, [1, 3]] - y0) / (y1 - y0)
    return np.clip(out, 0.0, 1.0)


def map_boxes(boxes: Mapping[str, np.ndarray], sizes: Mapping[str, tuple[int, int]], mode: str = "crop",
              size: int = 224, mostly: float = 0.5) -> tuple[dict[str, np.ndarray], dict]:
    """Boxes by id as the scorer gets them under ``mode`` (:data:`BOX_MODES`), and a report:
    ``mode``, ``n_sized`` (ids with a frame size, ``sizes[id] = (width, height)``),
    ``mostly_outside`` (how many of them have more than ``mostly`` of their box area outside the
    crop), ``outside_share`` (the mean share outside over them) and ``unsized`` (ids without a size,
    left as they are: "full-frame" needs every size)."""
    if mode not in BOX_MODES:
        raise ValueError(f"boxes must be one of {BOX_MODES}, got {mode!r}")
    shares = {k: outside_share(v, crop_window(*sizes[k], size)) for k, v in boxes.items() if k in sizes}
    unsized = sorted(k for k in boxes if k not in sizes)
    if mode == "full-frame" and unsized:
        raise ValueError(f"--boxes full-frame needs each clip's frame size; none for {len(unsized)} clips "
                         f"(e.g. {unsized[0]!r})")
    out = dict(boxes) if mode == "crop" else {k: boxes_to_crop(v, *sizes[k], size) for k, v in boxes.items()}
    report = {"mode": mode, "n_sized": len(shares),
              "mostly_outside": int(sum(s > mostly for s in shares.values())),
              "outside_share": float(np.mean(list(shares.values()))) if shares else 0.0,
              "unsized": len(unsized)}
    return out, report


def boxes_for_scoring(boxes: Mapping[str, np.ndarray], ids, sizes: Mapping[str, tuple[int, int]], fmt: str,
                      mode: str = "crop", size: int = 224) -> tuple[dict[str, np.ndarray], dict]:
    """All ``boxes`` as the scorer gets them under ``mode``: :func:`map_boxes` on the ``ids`` that
    were evaluated (the others unchanged; they are reported missing as they are) and its report.
    VGG-SS boxes only (``fmt="vggss"``): Flickr-SoundNet boxes are pixels of the shipped 256x256
    frame, scored as they are under "crop" (report ``{"mode": "crop"}``); "full-frame" refuses them."""
    if mode not in BOX_MODES:
        raise ValueError(f"boxes must be one of {BOX_MODES}, got {mode!r}")
    if fmt != "vggss":
        if mode != "crop":
            raise ValueError("--boxes full-frame maps VGG-SS boxes (normalised to the full frame); Flickr-SoundNet "
                             "boxes are pixels of the shipped 256x256 frame and are scored as they are")
        return dict(boxes), {"mode": mode}
    ids = set(ids)
    mapped, report = map_boxes({k: v for k, v in boxes.items() if k in ids}, sizes, mode, size=size)
    return {**boxes, **mapped}, report


def outside_warning(report: Mapping) -> str | None:
    """The warning for a :func:`map_boxes` report whose boxes lie mostly outside the crop, or None."""
    if not report.get("mostly_outside"):
        return None
    then = (": the protocol lays them on the crop unchanged; --boxes full-frame maps them into it"
            if report["mode"] == "crop" else ": they were clipped to the crop")
    return (f"{report['mostly_outside']} of {report['n_sized']} clips have boxes mostly outside the centre crop "
            f"the model sees (wide or tall frames; mean share outside {report['outside_share']:.2f}){then}")
