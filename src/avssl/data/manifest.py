"""Manifests: which clips a data set has, where their media lie, their labels and split.

Four formats are read as they are:

* **avssl JSONL** (``*.jsonl``), ours: one JSON object per line with the fields of
  :class:`Record` (``id`` required; ``video`` a raw media file of any container, or
  ``frames`` + ``audio`` pre-extracted; ``labels`` a list; ``split``; anything else is
  kept in ``extra``). Relative paths are relative to the manifest's folder.
* **CAV-MAE / EquiAV JSON** (``{"data": [{"video_id", "wav", "video_path", "labels"}]}``):
  frames at ``<video_path>/frame_<i>/<video_id>.jpg`` for i in 0..9, labels ``"/m/a,/m/b"``.
* **SSL-TIE / LVS id lists** (a text or CSV file, one id per line, first column): the
  media paths follow one of the :data:`SSLTIE_LAYOUTS` under a data root.
* **avssl shard index** (``shards.json`` of ``avssl prepare --format shards``): the clips in
  its local tar shards, read by byte range (:func:`avssl.data.shard_access.shard_records`).

:func:`validate` checks that every referenced file exists; a broken entry raises
:class:`ManifestError` naming it, or, under ``policy="skip"``, is dropped, counted and
logged.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from avssl.atomic import atomic_path
from avssl.data.record import ManifestError, Record

log = logging.getLogger(__name__)

#: SSL-TIE / LVS folder layouts: id -> (frame path, audio path), relative to the data root.
SSLTIE_LAYOUTS: dict[str, tuple[str, str]] = {
    # VGGSound training: 25 fps frames numbered from 001, frame 125 ~ the 5 s mid-point.
    "vggsound_train": ("total_video_frames/{id}/125.jpg", "total_video_3s_audio/{id}.wav"),
    # Flickr-SoundNet training: a fixed frame and the mp3.
    "flickr_train": ("frames/{id}/00000003.jpg", "mp3/{id}.mp3"),
    # Test sets (Flickr-SoundNet, VGG-SS): one shipped frame and a wav.
    "test": ("frame/{id}.jpg", "audio/{id}.wav"),
    # Test sets for Flickr-trained models, whose audio is the mp3.
    "test_mp3": ("frame/{id}.jpg", "mp3/{id}.mp3"),
}

CAVMAE_NUM_FRAMES = 10
_KNOWN_KEYS = ("id", "video", "audio", "frames", "labels", "split")


def _resolve(path: str | None, base: Path) -> str | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else base / p)


def read_manifest(
    path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    layout: str | None = None,
    split: str | None = None,
) -> list[Record]:
    """Read a manifest of any supported format; paths come back absolute.

    Args:
        path: ``*.jsonl`` (avssl), ``*.json`` (CAV-MAE, or a shard index), or an id list
            (``*.txt``/``*.csv``).
        root: base of relative paths (default: the manifest's folder); for id lists, the
            data root of the SSL-TIE layout.
        layout: for id lists, a key of :data:`SSLTIE_LAYOUTS`.
        split: keep only records of this split (records without a split are kept).
    """
    if "://" in str(path):
        raise ManifestError(f"manifest {path}: a URL, but manifests and shard indexes are read from local files "
                            "(stream shards from URLs with data.train_shards)")
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path}: no such file")
    base = Path(root) if root is not None else path.parent
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        records = _read_jsonl(path, base)
    elif suffix == ".json":
        records = _read_cavmae(path, base)
    else:
        if layout is None:
            raise ManifestError(
                f"manifest {path}: an id list needs a layout (one of {sorted(SSLTIE_LAYOUTS)})"
            )
        records = _read_id_list(path, base, layout)
    _check_unique(records, path)
    if split is not None:
        records = [r for r in records if r.split in (None, split)]
    return records


def _read_jsonl(path: Path, base: Path) -> list[Record]:
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"manifest {path}, line {lineno}: invalid JSON ({e})") from e
            if not isinstance(obj, dict) or not isinstance(obj.get("id"), str) or not obj["id"]:
                raise ManifestError(f"manifest {path}, line {lineno}: an object with an 'id' string is required")
            labels = obj.get("labels", [])
            if isinstance(labels, str):
                labels = [x for x in labels.split(",") if x]
            frames = obj.get("frames")
            if frames is not None and not isinstance(frames, list):
                raise ManifestError(f"manifest {path}, line {lineno}: 'frames' must be a list")
            records.append(Record(
                id=obj["id"],
                video=_resolve(obj.get("video"), base),
                audio=_resolve(obj.get("audio"), base),
                frames=[_resolve(p, base) for p in frames] if frames is not None else None,
                labels=[str(x) for x in labels],
                split=obj.get("split"),
                extra={k: v for k, v in obj.items() if k not in _KNOWN_KEYS},
            ))
    return records


def _read_cavmae(path: Path, base: Path) -> list[Record]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ManifestError(f"manifest {path}: invalid JSON ({e})") from e
    if isinstance(data, dict) and str(data.get("format", "")).startswith("avssl-shards/"):
        from avssl.data.shard_access import shard_records

        return shard_records(path, data)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ManifestError(f"manifest {path}: expected a CAV-MAE manifest {{'data': [...]}}")
    records = []
    for i, item in enumerate(data["data"]):
        missing = [k for k in ("video_id", "wav", "video_path") if k not in item]
        if missing:
            raise ManifestError(f"manifest {path}, entry {i}: missing {missing}")
        vid, frame_dir = str(item["video_id"]), _resolve(item["video_path"], base)
        frames = [str(Path(frame_dir) / f"frame_{k}" / f"{vid}.jpg") for k in range(CAVMAE_NUM_FRAMES)]
        labels = [x for x in str(item.get("labels", "")).split(",") if x]
        extra = {k: v for k, v in item.items() if k not in ("video_id", "wav", "video_path", "labels")}
        records.append(Record(id=vid, audio=_resolve(item["wav"], base), frames=frames,
                              labels=labels, extra=extra))
    return records


def _read_id_list(path: Path, root: Path, layout: str) -> list[Record]:
    if layout not in SSLTIE_LAYOUTS:
        raise ManifestError(f"unknown layout {layout!r}; choose one of {sorted(SSLTIE_LAYOUTS)}")
    frame_tpl, audio_tpl = SSLTIE_LAYOUTS[layout]
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            first = line.strip().split(",")[0].strip()
            if not first or first.lower() in ("id", "file", "filename", "video_id"):
                continue
            vid = Path(first).stem if Path(first).suffix.lower() in (".mp4", ".jpg", ".wav", ".mp3") else first
            records.append(Record(id=vid, frames=[str(root / frame_tpl.format(id=vid))],
                                  audio=str(root / audio_tpl.format(id=vid))))
    return records


def _check_unique(records: Sequence[Record], path: Path) -> None:
    seen: set[str] = set()
    dupes = [r.id for r in records if r.id in seen or seen.add(r.id)]
    if dupes:
        raise ManifestError(f"manifest {path}: duplicate ids {dupes[:5]}{' ...' if len(dupes) > 5 else ''}")


def validate(records: Iterable[Record], policy: str = "error") -> tuple[list[Record], list[tuple[str, str]]]:
    """Check that each record has media and that every file it names exists.

    Args:
        policy: ``"error"`` raises :class:`ManifestError` listing the problems;
            ``"skip"`` drops the broken records, logs each and returns them counted.

    Returns:
        ``(kept records, [(id, reason), ...] for the dropped ones)``.
    """
    if policy not in ("error", "skip"):
        raise ValueError(f"policy must be 'error' or 'skip', not {policy!r}")
    kept, problems = [], []
    for r in records:
        if not r.video and not (r.audio or r.frames):
            reason = "no media: needs 'video', or 'frames'/'audio'"
        else:
            missing = [p for p in r.media_paths() if not Path(p).is_file()]
            reason = f"missing file {missing[0]}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else "") if missing else ""
        if reason:
            problems.append((r.id, reason))
        else:
            kept.append(r)
    if problems and policy == "error":
        listed = "; ".join(f"{i}: {why}" for i, why in problems[:5])
        raise ManifestError(f"{len(problems)} broken manifest entries: {listed}{' ...' if len(problems) > 5 else ''}")
    for i, why in problems:
        log.warning("skipping %s: %s", i, why)
    if problems:
        log.warning("skipped %d of %d manifest entries", len(problems), len(problems) + len(kept))
    return kept, problems


def write_manifest(path: str | os.PathLike, records: Iterable[Record]) -> Path:
    """Write an avssl JSONL manifest atomically; paths under its folder become relative."""
    path = Path(path)
    base = path.parent
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_json(base)) + "\n")
    return path
