"""Localisation ground truth: VGG-SS JSON and Flickr-SoundNet XML boxes -> ground-truth maps.

Two public formats (docs/methods.md §1.5):

* **VGG-SS** ``vggss.json``: a list of ``{"file": id, "class": str, "bbox": [[x1, y1, x2, y2],
  ...]}`` with coordinates normalised to [0, 1]. :func:`load_vggss` -> ``{id: (k, 4) float64}``.
  Garbage coordinates (outside [0, 1]) are clipped and logged one warning line per box; a box that
  is NaN/inf or degenerate after clipping (``x2 <= x1`` or ``y2 <= y1``) is dropped and logged; an
  entry left without boxes stays in the result with a (0, 4) array and is reported.
* **Flickr-SoundNet** one ``<id>.xml`` per clip, ``<annotation><object><bbox><annotator>j
  </annotator><xmin/><ymin/><xmax/><ymax/></bbox></object>...</annotation>`` in the 256-pixel
  frame. :func:`load_flickr` -> ``{id: (k, 4) int64}``; boxes outside [0, 256] are clipped,
  degenerate ones dropped, both logged.

Ground-truth maps (vectorised over samples, built from a padded ``(N, kmax, 4)`` box array):

* :func:`vggss_gt_maps`: union of the boxes scaled with ``int(v * size)``, max edge excluded, binary.
* :func:`flickr_gt_maps`: each box scaled with ``int(size * v / 256)``; the box masks are summed,
  divided by 2 and capped at 1 (a pixel marked by one annotator counts 0.5).

Padding rows are NaN (VGG-SS, :func:`pad_boxes` default) or any negative coordinate (Flickr ``-1``).
"""
from __future__ import annotations

import json
import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["AnnotationError", "AnnotationStats", "load_vggss", "write_vggss", "load_flickr",
           "write_flickr_xml", "pad_boxes", "pixel_boxes", "box_counts", "vggss_gt_maps",
           "flickr_gt_maps", "FLICKR_FRAME"]

FLICKR_FRAME = 256  # Flickr-SoundNet boxes live in a 256 x 256 pixel frame
PathLike = str | os.PathLike


class AnnotationError(ValueError):
    """An annotation file is unreadable or does not follow its format (names file and entry)."""


@dataclass
class AnnotationStats:
    """What a loader saw: counts of entries/boxes and of the boxes it had to repair or drop."""

    entries: int = 0
    boxes: int = 0
    clipped: int = 0
    dropped: int = 0
    empty: list[str] = field(default_factory=list)  # ids left without any box


def _clean_boxes(raw: np.ndarray, hi: float, where: str, stats: AnnotationStats) -> np.ndarray:
    """Clip (k, 4) ``[x1, y1, x2, y2]`` boxes to [0, hi]; drop non-finite/degenerate ones (logged)."""
    keep = []
    for box in raw:
        stats.boxes += 1
        if not np.all(np.isfinite(box)):
            stats.dropped += 1
            logger.warning("%s: box %s is not finite: dropped", where, box.tolist())
            continue
        clipped = np.clip(box, 0.0, hi)
        if not np.array_equal(clipped, box):
            stats.clipped += 1
            logger.warning("%s: box %s outside [0, %g]: clipped to %s", where, box.tolist(), hi,
                           clipped.tolist())
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            stats.dropped += 1
            logger.warning("%s: box %s is degenerate (x2 <= x1 or y2 <= y1): dropped", where,
                           clipped.tolist())
            continue
        keep.append(clipped)
    return np.asarray(keep, dtype=raw.dtype).reshape(-1, 4)


# --------------------------------------------------------------------------- VGG-SS JSON
def load_vggss(path: PathLike, stats: AnnotationStats | None = None) -> dict[str, np.ndarray]:
    """Read a VGG-SS ``vggss.json``: ``{id: (k, 4) float64 [x1, y1, x2, y2] in [0, 1]}``.

    Entries keep the file's order. A repeated id has its boxes appended (warned). ``stats``, if
    given, receives the counts. Raises :class:`AnnotationError` (naming the file and the entry)
    on unreadable/malformed JSON or an entry that does not follow the schema.
    """
    stats = stats if stats is not None else AnnotationStats()
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AnnotationError(f"{path}: cannot read VGG-SS annotations: {e}") from e
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a JSON list of entries, got {type(data).__name__}")
    out: dict[str, np.ndarray] = {}
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise AnnotationError(f"{path}: entry {i} is not an object with a string 'file': {entry!r:.200}")
        cid, bbox = entry["file"], entry.get("bbox")
        if "class" in entry and not isinstance(entry["class"], str):
            raise AnnotationError(f"{path}: entry {i} ({cid!r}): 'class' is not a string")
        ok = isinstance(bbox, list) and all(
            isinstance(b, list) and len(b) == 4
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in b) for b in bbox)
        if not ok:
            raise AnnotationError(f"{path}: entry {i} ({cid!r}): 'bbox' must be a list of "
                                  f"[x1, y1, x2, y2] number lists, got {bbox!r:.200}")
        stats.entries += 1
        boxes = _clean_boxes(np.asarray(bbox, np.float64).reshape(-1, 4), 1.0, f"{path.name}: {cid!r}", stats)
        if cid in out:
            logger.warning("%s: id %r appears more than once: boxes merged", path.name, cid)
            boxes = np.concatenate([out[cid], boxes])
        out[cid] = boxes
    _report_empty(out, stats, path)
    return out


def _report_empty(out: Mapping[str, np.ndarray], stats: AnnotationStats, path: Path) -> None:
    stats.empty = [cid for cid, b in out.items() if len(b) == 0]
    for cid in stats.empty:
        logger.warning("%s: %r has no usable box", path.name, cid)
    logger.info("%s: %d entries, %d boxes (%d clipped, %d dropped), %d entries without boxes",
                path, stats.entries, stats.boxes, stats.clipped, stats.dropped, len(stats.empty))


def write_vggss(path: PathLike, entries: Mapping[str, np.ndarray] | Sequence[Mapping],
                classes: Mapping[str, str] | Sequence[str] | None = None) -> Path:
    """Write a VGG-SS ``vggss.json``.

    Args:
        entries: ``{id: (k, 4) normalised boxes}``, or a sequence of ready entry dicts
            ``{"file", "bbox"[, "class"]}``.
        classes: ``{id: class}`` (written as each entry's "class"), or a class vocabulary
            (sequence) that entry classes are checked against. Floats are written by ``repr``,
            so :func:`load_vggss` reads back identical values.
    """
    per_id = classes if isinstance(classes, Mapping) else {}
    vocab = None if classes is None or isinstance(classes, Mapping) else set(classes)
    items = entries.items() if isinstance(entries, Mapping) else (
        (e["file"], e["bbox"]) for e in entries)
    given = {} if isinstance(entries, Mapping) else {e["file"]: e.get("class") for e in entries}
    rows = []
    for cid, boxes in items:
        row: dict = {"file": str(cid)}
        cls = per_id.get(cid, given.get(cid))
        if cls is not None:
            if vocab is not None and cls not in vocab:
                logger.warning("write_vggss: class %r of %r is not in the class list", cls, cid)
            row["class"] = str(cls)
        row["bbox"] = [[float(v) for v in b] for b in np.asarray(boxes, np.float64).reshape(-1, 4)]
        rows.append(row)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))
    return path


# --------------------------------------------------------------------------- Flickr XML
def _parse_flickr(path: Path, stats: AnnotationStats) -> np.ndarray:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise AnnotationError(f"{path}: cannot parse Flickr-SoundNet XML: {e}") from e
    boxes = []
    for bbox in root.iter("bbox"):
        vals = []
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            node = bbox.find(tag)
            text = (node.text or "").strip() if node is not None else ""
            try:
                v = float(text)
            except ValueError:
                raise AnnotationError(f"{path}: bbox {len(boxes)}: <{tag}> is {text!r}, not a number") from None
            if math.isfinite(v) and v != int(v):
                logger.warning("%s: bbox %d: <%s> %s is not an integer: truncated", path, len(boxes), tag, text)
            vals.append(v)
        boxes.append(vals)
    raw = np.asarray(boxes, np.float64).reshape(-1, 4)
    stats.entries += 1
    kept = _clean_boxes(raw, float(FLICKR_FRAME), f"{path.name}", stats)
    return np.trunc(kept).astype(np.int64)


def load_flickr(source: PathLike | Iterable[PathLike],
                stats: AnnotationStats | None = None) -> dict[str, np.ndarray]:
    """Read Flickr-SoundNet XML files: ``{id (file stem): (k, 4) int64 boxes, 256-pixel frame}``.

    ``source`` is a folder (every ``*.xml`` in it, sorted) or an iterable of XML paths. Raises
    :class:`AnnotationError` naming the file on broken XML or non-numeric coordinates.
    """
    stats = stats if stats is not None else AnnotationStats()
    if isinstance(source, str | os.PathLike):
        folder = Path(source)
        if not folder.is_dir():
            raise AnnotationError(f"{folder}: not a folder of Flickr-SoundNet XML files")
        files = sorted(folder.glob("*.xml"))
        if not files:
            raise AnnotationError(f"{folder}: no *.xml annotation files")
        where = folder
    else:
        files = [Path(f) for f in source]
        where = Path(files[0]).parent if files else Path(".")
    out = {f.stem: _parse_flickr(f, stats) for f in files}
    _report_empty(out, stats, where)
    return out


def write_flickr_xml(path: PathLike, boxes_256: np.ndarray | Sequence[Sequence[int]]) -> Path:
    """Write one Flickr-SoundNet XML file; ``boxes_256`` (k, 4) integer ``[xmin, ymin, xmax, ymax]``.

    Each box becomes ``<object><bbox><annotator>i</annotator><xmin/>...</bbox></object>``.
    """
    arr = np.asarray(boxes_256).reshape(-1, 4)
    if not np.all(np.isfinite(arr)) or np.any(arr != np.trunc(arr)):
        raise ValueError(f"{path}: Flickr boxes must be integers in the 256-pixel frame, got {arr.tolist()}")
    root = ET.Element("annotation")
    for i, box in enumerate(arr.astype(np.int64)):
        bb = ET.SubElement(ET.SubElement(root, "object"), "bbox")
        ET.SubElement(bb, "annotator").text = str(i)
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True):
            ET.SubElement(bb, tag).text = str(int(v))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="unicode")
    return path


# --------------------------------------------------------------------------- ground-truth maps
def pad_boxes(boxes: Mapping[str, np.ndarray] | Sequence[np.ndarray], ids: Sequence[str] | None = None,
              fill: float = np.nan) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Stack per-sample box arrays into ``(ids, padded (N, kmax, 4) float64, mask (N, kmax) bool)``.

    ``boxes`` is ``{id: (k, 4)}`` (``ids`` selects/orders them; default: mapping order) or a
    sequence aligned with ``ids`` (default ``"0", "1", ...``). Padding rows hold ``fill``.
    """
    if isinstance(boxes, Mapping):
        ids = list(boxes) if ids is None else list(ids)
        seq = [np.asarray(boxes[i], np.float64).reshape(-1, 4) for i in ids]
    else:
        seq = [np.asarray(b, np.float64).reshape(-1, 4) for b in boxes]
        ids = [str(i) for i in range(len(seq))] if ids is None else list(ids)
    kmax = max([len(b) for b in seq], default=0)
    padded = np.full((len(seq), max(kmax, 1), 4), fill, np.float64)
    counts = np.array([len(b) for b in seq], np.int64)
    mask = np.arange(padded.shape[1])[None, :] < counts[:, None]
    if seq and kmax:
        padded[mask] = np.concatenate(seq)
    return ids, padded, mask


def pixel_boxes(boxes_padded: np.ndarray, box_format: str = "vggss", size: int = 224,
                mask: np.ndarray | None = None) -> np.ndarray:
    """Scale padded boxes to integer pixel boxes (N, K, 4) int64 on a ``size`` grid, as the original.

    ``vggss``: ``int(v * size)`` of normalised coordinates; ``flickr``: ``int(size * v / 256)`` of
    256-pixel coordinates. Padding rows (NaN, or any negative value for Flickr, or ``~mask``)
    become empty boxes ``(0, 0, 0, 0)``. Coordinates are clipped to [0, size].
    """
    b = np.asarray(boxes_padded, np.float64)
    if b.ndim != 3 or b.shape[-1] != 4:
        raise ValueError(f"expected padded boxes (N, K, 4), got shape {b.shape}")
    if box_format == "vggss":
        valid = np.all(np.isfinite(b), axis=-1)
        scaled = b * size
    elif box_format == "flickr":
        valid = np.all(np.isfinite(b) & (b >= 0), axis=-1)
        scaled = size * b / FLICKR_FRAME
    else:
        raise ValueError(f"box_format must be 'vggss' or 'flickr', got {box_format!r}")
    if mask is not None:
        valid &= mask
    px = np.clip(np.trunc(np.where(valid[..., None], scaled, 0.0)), 0, size).astype(np.int64)
    return px


def box_counts(px_boxes: np.ndarray, size: int = 224) -> np.ndarray:
    """Number of boxes covering each pixel: (N, K, 4) int pixel boxes -> (N, size, size) float32.

    Box k covers rows ``y1 <= y < y2`` and columns ``x1 <= x < x2``; one batched matrix product
    of the row and column indicators, no per-sample loop.
    """
    px = np.asarray(px_boxes)
    grid = np.arange(size)
    rows = ((px[..., 1, None] <= grid) & (grid < px[..., 3, None])).astype(np.float32)  # (N,K,S)
    cols = ((px[..., 0, None] <= grid) & (grid < px[..., 2, None])).astype(np.float32)
    return np.matmul(rows.transpose(0, 2, 1), cols)


def vggss_gt_maps(boxes_padded: np.ndarray, size: int = 224, mask: np.ndarray | None = None) -> np.ndarray:
    """VGG-SS ground truth (N, size, size) float32 in {0, 1}: union of ``int(v*size)`` boxes."""
    counts = box_counts(pixel_boxes(boxes_padded, "vggss", size, mask), size)
    return (counts > 0).astype(np.float32)


def flickr_gt_maps(boxes_padded_256: np.ndarray, size: int = 224, mask: np.ndarray | None = None) -> np.ndarray:
    """Flickr-SoundNet ground truth (N, size, size) float32 in {0, 0.5, 1}: box masks summed, /2, capped."""
    counts = box_counts(pixel_boxes(boxes_padded_256, "flickr", size, mask), size)
    return np.minimum(counts, 2.0).astype(np.float32) / np.float32(2)
