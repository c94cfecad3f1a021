"""``avssl prepare ... --format shards``: the clips as webdataset tar shards, preparable in slices.

The layout is :mod:`avssl.data.shards`'s. Clip ``k`` of the input list (``L`` clips) goes to
shard ``k mod G`` with ``G = ceil(L / shard_size)``: each shard mixes the whole list, and every
shard's contents follow from the list and ``shard_size`` alone, so ``--shard-of i/N`` (e.g. a
SLURM array task) prepares shards ``i, i + N, ...`` with no coordination, and every slice names
its shards as the single run would: ``shard-{000000..G-1}.tar`` is the brace pattern.

A shard is finished when its sidecar ``shards/shard-XXXXXX.json`` exists: the tar is written to a
temporary file, renamed, then the sidecar written (both atomically), so a killed slice, rerun,
skips its finished shards and redoes the one it was writing. :func:`merge` (``avssl prepare
--merge OUT``; run by the last step of an unsliced run) checks that all ``G`` shards are there,
names the missing ones and the slices that owe them, and writes ``shards.json`` and
``failures.csv``.
"""
from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import time
import zlib
from collections import Counter
from pathlib import Path

from avssl.atomic import atomic_path, atomic_write_text, remove_stale_tmp
from avssl.data.manifest import Record
from avssl.data.prepare import (
    _FATAL_ERRNOS,
    JPEG_QUALITY,
    PrepareError,
    PrepareReport,
    _check_arguments,
    _check_options,
    _collect,
    _extracted_outputs,
    _Options,
    _Result,
    _video_outputs,
    _write_failures,
)
from avssl.data.shard_index import CRC_KEY, FORMAT, INDEX_NAME, sample_key, shard_name
from avssl.data.shards import encode_audio, encode_jpeg

log = logging.getLogger(__name__)

__all__ = ["prepare_shards", "merge", "parse_shard_of"]

_SHARD_KEYS = ("format", "frames", "sample_rate", "size", "short_side", "shard_size", "audio_format", "clips",
               "shards")


def parse_shard_of(text: str) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)`` with ``0 <= i < N``."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError as e:
        raise ValueError(f"--shard-of takes i/N (e.g. 3/16), got {text!r}") from e
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard-of {text}: need 0 <= i < N")
    return i, n


def _encode(task: tuple[Record, int, _Options, str]) -> tuple[int, dict | _Result]:
    """Worker: one clip -> its tar sample (bytes per extension), or the failure."""
    from avssl.data.decode import MediaError

    rec, place, opts, afmt = task
    try:
        if rec.video:
            frames, wave, rate, extra = _video_outputs(rec, opts)
            images = [("jpg", encode_jpeg(f, JPEG_QUALITY)) for f in frames]
            audio = (afmt, encode_audio(wave, rate, afmt))
        else:
            clip, resized, converted, extra = _extracted_outputs(rec, opts)
            if resized is not None:
                images = [("jpg", encode_jpeg(f, JPEG_QUALITY)) for f in resized]
            else:  # the files as they are
                images = [(Path(f).suffix.lstrip(".").lower() or "jpg", Path(f).read_bytes()) for f in rec.frames]
            if converted is None:
                audio, rate = ("wav", Path(rec.audio).read_bytes()), clip.sample_rate
            else:
                rate = converted[1]
                audio = (afmt, encode_audio(*converted, afmt))
            extra["source_audio"] = rec.audio
    except MediaError as e:
        return place, _Result(rec.id, False, e.path, e.reason)
    except OSError as e:  # reading a pre-extracted file
        return place, _Result(rec.id, False, e.filename or rec.id, e.strerror or str(e))
    media = {audio[0]: audio[1], **{f"{k:02d}.{ext}": data for k, (ext, data) in enumerate(images)}}
    meta = {"id": rec.id, "labels": rec.labels, "split": rec.split, "sample_rate": rate, **extra,
            CRC_KEY: {ext: zlib.crc32(data) for ext, data in media.items()}}
    return place, {"__key__": sample_key(place), "json": json.dumps(meta).encode(), **media}


def _write_shard(folder: Path, g: int, results: list[tuple[int, dict | _Result]]) -> dict:
    """Write shard ``g`` (tar, then its sidecar) from its clips' results; returns the sidecar."""
    from webdataset import TarWriter

    samples = [r for _, r in results if isinstance(r, dict)]
    failed = [r for _, r in results if not isinstance(r, dict)]
    tar = folder / shard_name(g)
    with atomic_path(tar) as tmp, open(tmp, "wb") as f:
        writer = TarWriter(f, encoder=False, mtime=0)
        try:
            for s in samples:
                writer.write(s)
        except BaseException:
            _abandon(writer)
            raise
        writer.close()
    metas = [json.loads(s["json"]) for s in samples]
    side = {"shard": shard_name(g), "clips": len(samples), "ids": [m["id"] for m in metas],
            "labels": [m.get("labels", []) for m in metas], "splits": [m.get("split") for m in metas],
            "failures": [[r.id, r.path, r.reason] for r in failed]}
    atomic_write_text(tar.with_suffix(".json"), json.dumps(side) + "\n")
    return side


def _abandon(writer) -> None:
    """Close a failed shard's tar writer (its file is about to be deleted) while that file is
    still open: left to the garbage collector, tarfile's stream would flush its buffer into the
    closed file (``Exception ignored in _Stream.__del__ ... write to closed file``) after the
    error was reported. The end of the tar may fail to be written as the rest did (a full disk):
    that adds nothing to the error being raised."""
    try:
        writer.close()
    except (OSError, ValueError):
        pass


def prepare_shards(input: str | os.PathLike, out_dir: str | os.PathLike, *, frames: int = 10,
                   sample_rate: int | None = None, size: int | None = None, short_side: int | None = None,
                   workers: int | None = None, layout: str | None = None, root: str | os.PathLike | None = None,
                   on_error: str = "skip", limit: int | None = None, shard_size: int = 1000,
                   shard_of: tuple[int, int] = (0, 1), audio_format: str = "wav",
                   keep_silent: bool = False) -> PrepareReport:
    """Prepare ``input``'s clips as shards in ``out_dir`` (module docstring); the arguments are
    :func:`avssl.data.prepare.prepare`'s plus ``shard_size``, ``shard_of`` ``(i, N)`` and
    ``audio_format`` (``"wav"``: 16-bit wav, fastest to read; ``"flac"``: the same samples in
    about half the space). An
    unsliced run (``N == 1``) ends with :func:`merge`; a slice leaves that to ``--merge``."""
    t0 = time.perf_counter()
    _check_arguments(on_error, frames=frames, sample_rate=sample_rate, size=size, short_side=short_side,
                     limit=limit, shard_size=shard_size)
    if audio_format not in ("wav", "flac"):
        raise ValueError(f"audio_format must be 'wav' or 'flac', got {audio_format!r}")
    i, n = shard_of
    out = Path(out_dir).resolve()
    opts = _Options(str(out), frames, sample_rate, size, short_side, keep_silent=bool(keep_silent))
    records = _collect(input, layout=layout, root=root)[0][:limit]
    twice = [cid for cid, c in Counter(r.id for r in records).items() if c > 1]
    if twice:
        raise PrepareError(f"clip ids occur more than once in {input}: {twice[:5]}")
    total = len(records)
    count = math.ceil(total / shard_size)
    folder = out / "shards"
    folder.mkdir(parents=True, exist_ok=True)
    _check_options(out, {"format": "shards", "frames": frames, "sample_rate": sample_rate, "size": size,
                         "short_side": short_side, "shard_size": shard_size, "audio_format": audio_format,
                         "clips": total, "shards": count},
                   f"delete {folder} to redo it (every slice must use the same input and options)")
    remove_stale_tmp(folder)
    mine = {g: range(g, total, count) for g in range(i, count, n)}  # this slice's shards -> their clips
    todo = [g for g in mine if not _finished(folder, g)]
    if len(todo) < len(mine):
        log.info("slice %d/%d: %d of its %d shards are already finished", i, n, len(mine) - len(todo), len(mine))
    tasks = [(records[k], k, opts, audio_format) for g in todo for k in mine[g]]
    nproc = min((os.cpu_count() or 1) if workers is None else workers, len(tasks))
    done = failed = 0
    pool = multiprocessing.get_context("spawn").Pool(nproc) if nproc > 1 else None
    try:
        results = pool.imap(_encode, tasks, max(1, min(8, len(tasks) // (16 * nproc)))) if pool else map(_encode, tasks)
        for g in todo:
            got = [next(results) for _ in mine[g]]
            bad = [r for _, r in got if not isinstance(r, dict)]
            for r in bad:
                log.warning("failed %s: %s: %s", r.id, r.path, r.reason)
            if bad and on_error == "stop":
                raise PrepareError(f"clip {bad[0].id}: {bad[0].path}: {bad[0].reason}")
            try:
                side = _write_shard(folder, g, got)
            except OSError as e:
                if e.errno not in _FATAL_ERRNOS:
                    raise
                raise PrepareError(f"cannot write to {e.filename or folder}: {e.strerror}; stopped after {done} clips "
                                   f"in this run; finished shards are kept: free space and rerun to resume") from e
            done, failed = done + side["clips"], failed + len(side["failures"])
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    index = out / INDEX_NAME
    if n == 1:
        merge(out)
    else:
        log.info("slice %d/%d finished; when every slice is, run: avssl prepare --merge %s", i, n, out)
    owned = sum(len(m) for m in mine.values())
    report = PrepareReport(done=done, skipped=owned - len(tasks), failed=failed, total=owned,
                           seconds=time.perf_counter() - t0, out_dir=out, manifest=index,
                           failures=out / "failures.csv")
    log.info("prepare (shards %d/%d): %d clips written, %d failed, %d in shards finished before, "
             "%d shards of %d (%.1f s)", i, n, report.done, report.failed, report.skipped, len(mine), count,
             report.seconds)
    return report


def _finished(folder: Path, g: int) -> bool:
    """Whether shard ``g`` is finished: its tar and (written after it) its sidecar exist."""
    tar = folder / shard_name(g)
    return tar.is_file() and tar.with_suffix(".json").is_file()


def _splits_of(side: dict) -> list[str]:
    """A sidecar's clip splits (``""``: none; sidecars written before splits were kept: all none)."""
    return ["" if x is None else str(x) for x in side.get("splits", [None] * side["clips"])]


def _split_counts(side: dict) -> dict[str, int]:
    return dict(sorted(Counter(_splits_of(side)).items()))


def _labels_by_split(sides: list[dict]) -> dict[str, dict[str, list[str]]]:
    """Per split, the sorted first labels and every label of its clips (what class lists are made of)."""
    sets: dict[str, tuple[set, set]] = {}
    for side in sides:
        for split, labels in zip(_splits_of(side), side["labels"], strict=True):
            firsts, every = sets.setdefault(split, (set(), set()))
            if labels:
                firsts.add(labels[0])
                every.update(labels)
    return {k: {"firsts": sorted(f), "labels": sorted(a)} for k, (f, a) in sorted(sets.items())}


def merge(out_dir: str | os.PathLike) -> Path:
    """Check every shard of ``out_dir`` is finished and write ``shards.json`` + ``failures.csv``.

    Raises PrepareError naming the missing shards (shard ``g`` is slice ``g mod N``'s)."""
    out = Path(out_dir).resolve()
    try:
        opts = json.loads((out / "prepare.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PrepareError(f"{out}: no readable prepare.json ({e}): not a shard folder") from e
    if opts.get("format") != "shards":
        raise PrepareError(f"{out} holds the folder layout, not shards (nothing to merge)")
    folder, count = out / "shards", int(opts["shards"])
    missing = [g for g in range(count) if not _finished(folder, g)]
    if missing:
        shown = ", ".join(shard_name(g) for g in missing[:6]) + (" ..." if len(missing) > 6 else "")
        raise PrepareError(f"{out}: {len(missing)} of {count} shards are not finished ({shown}): shard g belongs "
                           f"to slice g mod N of --shard-of i/N; rerun those slices, then --merge again")
    sides = [json.loads((folder / shard_name(g)).with_suffix(".json").read_text(encoding="utf-8"))
             for g in range(count)]
    labels = _labels_by_split(sides)
    index = {"format": FORMAT, "clips": sum(s["clips"] for s in sides),
             "pattern": f"shards/shard-{{{0:06d}..{count - 1:06d}}}.tar",
             "shards": [{"file": f"shards/{s['shard']}", "clips": s["clips"], "splits": _split_counts(s)}
                        for s in sides],
             "classes": sorted({f for v in labels.values() for f in v["firsts"]}), "labels": labels,
             "options": {k: opts.get(k) for k in _SHARD_KEYS}}
    failures = [_Result(r[0], False, r[1], r[2]) for s in sides for r in s["failures"]]
    _write_failures(out / "failures.csv", failures)
    path = atomic_write_text(out / INDEX_NAME, json.dumps(index, indent=1) + "\n")
    log.info("merged %d shards (%d clips, %d failed) into %s", count, index["clips"], len(failures), path)
    return path
