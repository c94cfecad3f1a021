"""``avssl prepare``: turn a raw or pre-extracted data set into the layout the trainers read fastest.

Output under ``OUT``:

* ``frames/<id>/<k>.jpg`` -- ``frames`` frames evenly spread over each raw video (JPEG quality 95),
  optionally resized (``short_side``) or resized and centre-cropped (``size``, as CAV-MAE);
* ``audio/<id>.wav`` -- mono 16-bit PCM at ``sample_rate`` (None: each file's own rate);
* ``done/<id>.json`` -- the clip's :class:`~avssl.data.manifest.Record`, written atomically and
  last: a clip is finished exactly when its sidecar exists, so a rerun skips it;
* ``failures.csv`` (id, path, reason) -- clips that could not be used, never replaced by anything;
  a clip whose audio is digital silence (every sample zero) is one, reason ``silent audio``,
  unless ``keep_silent``;
* ``warnings.csv`` (id, path, reason) -- finished clips kept with a warning: those with silent
  audio kept by ``keep_silent`` (their records carry ``"silent_audio": true``); only when there
  are any;
* ``manifest.jsonl`` -- every finished clip, sorted by id (paths relative to ``OUT``);
* ``prepare.json`` -- the options the folder was prepared with (a rerun must use the same ones).

Inputs: a directory of videos (searched recursively), a text file of video paths, an avssl JSONL
manifest, a CAV-MAE JSON manifest, or an SSL-TIE id list (with ``layout`` and ``root``).
Pre-extracted clips (frames + audio) are checked (every frame and the audio decode, audio
non-empty and not silent); their frames stay where they are unless a resize is asked for, and their audio is
converted into ``OUT/audio`` unless it already is a mono wav (at ``sample_rate`` when given).

Long file: one command's pipeline (find and probe the inputs, decode, write, report), kept in
one place so that resuming, the failure reports and the atomic sidecars read together.
"""
from __future__ import annotations

import csv
import errno
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from avssl.atomic import atomic_path, atomic_write_text, remove_stale_tmp
from avssl.data.manifest import Record, read_manifest, write_manifest
from avssl.data.shard_access import SHARD_MEMBERS

if TYPE_CHECKING:
    from avssl.data.decode import Clip

log = logging.getLogger(__name__)

#: Extensions (lower case) of the media files a directory input is searched for.
MEDIA_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".mpg")
JPEG_QUALITY = 95
_OPTION_KEYS = ("frames", "sample_rate", "size", "short_side")
#: The reason (failures.csv / warnings.csv) of a clip whose audio is digital silence.
SILENT_AUDIO = "silent audio"
#: Audio whose every sample is below half a 16-bit step (so its 16-bit wav holds only zeros) is silent.
SILENCE_LEVEL = 2.0 ** -16


class PrepareError(RuntimeError):
    """An input that cannot be prepared, or a failed clip under ``on_error="stop"``."""


@dataclass
class PrepareReport:
    """What one :func:`prepare` call did. ``done`` counts clips finished by this call."""

    done: int
    skipped: int
    failed: int
    total: int
    seconds: float
    out_dir: Path
    manifest: Path
    failures: Path
    failed_ids: list[str] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): not videos
    #: clips of this call whose audio is digital silence (failed, or kept with ``keep_silent``)
    silent: int = 0
    silent_kept: int = 0  # of them, kept (``keep_silent``)
    #: (id, path, reason) of every finished clip kept with a warning (OUT/warnings.csv)
    warnings: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def clips_per_second(self) -> float:
        """Clips processed (done or failed) per wall-clock second of this call."""
        return (self.done + self.failed) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        ignored = (f"; {len(self.ignored)} files ignored as not videos (see {self.out_dir / 'ignored.csv'})"
                   if self.ignored else "")
        silent = self.silent - self.silent_kept
        failed = f" ({silent} silent audio: --keep-silent keeps such clips)" if silent > 0 else ""
        warned = (f"; {len(self.warnings)} finished clips kept with {SILENT_AUDIO} (see "
                  f"{self.out_dir / 'warnings.csv'})" if self.warnings else "")
        return (f"prepare: {self.done} done, {self.skipped} skipped as already done, "
                f"{self.failed} failed{failed}, of {self.total} clips in {self.seconds:.1f} s "
                f"({self.clips_per_second:.2f} clips/s); manifest {self.manifest}{ignored}{warned}")


@dataclass(frozen=True)
class _Options:
    out_dir: str
    frames: int
    sample_rate: int | None  # None: each file's own rate
    size: int | None
    short_side: int | None
    keep_silent: bool = False  # keep clips whose audio is digital silence (marked), instead of failing them


@dataclass
class _Result:
    id: str
    ok: bool
    path: str = ""
    reason: str = ""  # why it failed; for a finished clip, its warning ("" when none)
    fatal: bool = False  # the output disk is full / read-only: stop the whole run


# ----------------------------------------------------------------------------- inputs
def collect_inputs(input: str | os.PathLike, layout: str | None = None,
                   root: str | os.PathLike | None = None) -> list[Record]:
    """Records of the clips ``input`` names (see the module docstring for the kinds of input).

    Records with ``video`` are raw videos; the others are pre-extracted (``frames`` + ``audio``).
    Raises PrepareError (nothing found, unreadable list) or ManifestError (bad manifest)."""
    return _collect(input, layout, root)[0]


def _collect(input: str | os.PathLike, layout: str | None = None, root: str | os.PathLike | None = None
             ) -> tuple[list[Record], list[tuple[str, str]]]:
    """:func:`collect_inputs` plus the (path, reason) of the files a directory input ignored."""
    src = Path(input).expanduser().absolute()  # records must not hold paths relative to the cwd
    root = Path(root).expanduser().absolute() if root is not None else None
    if src.is_dir():
        paths, ignored = scan_directory(src)
        if not paths:
            why = f"; ignored {len(ignored)} files, e.g. {ignored[0][0]}: {ignored[0][1]}" if ignored else ""
            raise PrepareError(f"no media files (videos FFmpeg reads) under {src}{why}")
        return [Record(id=i, video=str(p)) for i, p in zip(_ids_from_paths(paths, src), paths, strict=True)], ignored
    if not src.is_file():
        raise PrepareError(f"input {src}: no such file or directory")
    suffix = src.suffix.lower()
    if suffix in (".jsonl", ".json"):
        if layout is not None:
            log.warning("--layout %s is ignored for a %s manifest", layout, suffix)
        records = read_manifest(src, root=root)
        if records and SHARD_MEMBERS in records[0].extra:
            raise PrepareError(f"{src} is a shard index: its clips are prepared already (train, validate or "
                               "evaluate from it: data.train_shards, or as a manifest)")
        return records, []
    if layout is not None or suffix == ".csv":
        return read_manifest(src, root=root, layout=layout), []
    base = root if root is not None else src.parent
    with open(src, encoding="utf-8") as f:
        lines = [s for s in (line.strip() for line in f) if s and not s.startswith("#")]
    if not lines:
        raise PrepareError(f"input list {src} names no files")
    paths = [p if p.is_absolute() else base / p for p in (Path(s).expanduser() for s in lines)]
    return [Record(id=i, video=str(p)) for i, p in zip(_ids_from_paths(paths, base), paths, strict=True)], []


def _probe_video(path: Path) -> str | None:
    """None when FFmpeg opens ``path`` as a video (a moving-picture stream, not an image or cover
    art); else why it is not one."""
    import av

    try:
        with av.open(str(path), metadata_errors="replace") as c:
            fmt = c.format.name
            if "image2" in fmt or fmt.endswith("_pipe") or fmt in ("tty", "gif"):
                return f"a still image ({fmt}), not a video"
            if not any(not (int(s.disposition) & int(av.stream.Disposition.attached_pic)) for s in c.streams.video):
                return "no video stream" + (" (audio only)" if c.streams.audio else "")
    except (av.error.FFmpegError, OSError) as e:
        return f"not a media file FFmpeg reads ({getattr(e, 'strerror', None) or e})"
    return None


def scan_directory(src: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Video files under ``src`` (recursive, sorted by relative path) and the (path, reason)
    of every other file. Files with a :data:`MEDIA_EXTENSIONS` extension are taken as they are
    (a bad one fails later, with its reason, in failures.csv); any other file is probed with
    FFmpeg, so e.g. ``.ogg``/``.ogv``/``.ts`` videos are found whatever their extension."""
    paths: list[Path] = []
    ignored: list[tuple[str, str]] = []
    for p in sorted((p for p in src.rglob("*") if p.is_file()), key=lambda p: p.relative_to(src).as_posix()):
        if p.suffix.lower() in MEDIA_EXTENSIONS:
            paths.append(p)
        elif p.name.startswith("."):
            continue  # hidden files (editor swap files, our own *.tmp) are not inputs
        elif p.stat().st_size == 0:
            ignored.append((str(p), "zero-byte file"))
        elif (why := _probe_video(p)) is None:
            paths.append(p)
        else:
            ignored.append((str(p), why))
    if ignored:
        reasons = Counter(r.split(" (")[0] for _, r in ignored)
        log.warning("ignored %d files under %s that are not videos (%s); see ignored.csv in the output folder",
                    len(ignored), src, ", ".join(f"{n} {r}" for r, n in reasons.most_common()))
    return paths, ignored


def _ids_from_paths(paths: list[Path], base: Path) -> list[str]:
    """File stems; stems that occur more than once become the path relative to ``base`` with
    ``/`` replaced by ``__`` (plus ``_<ext>`` where that still collides). Deterministic."""
    def rel(p: Path) -> Path:
        try:
            return p.relative_to(base)
        except ValueError:
            return Path(*p.parts[1:]) if p.is_absolute() else p

    ids = [p.stem for p in paths]
    stems = Counter(ids)
    dup = {i for i, n in stems.items() if n > 1}
    if dup:
        ids = [rel(p).with_suffix("").as_posix().replace("/", "__") if i in dup else i
               for i, p in zip(ids, paths, strict=True)]
        again = {i for i, n in Counter(ids).items() if n > 1}
        ids = [(i + "_" + p.suffix.lstrip(".").lower()) if i in again else i for i, p in zip(ids, paths, strict=True)]
        log.warning("%d file stems occur more than once (e.g. %r); those clips are named by their "
                    "relative path, e.g. %r", len(dup), sorted(dup)[0],
                    next(i for i, p in zip(ids, paths, strict=True) if p.stem in dup))
    left = [i for i, n in Counter(ids).items() if n > 1]
    if left:
        raise PrepareError(f"cannot give the clips distinct ids: {left[:5]} occur more than once")
    return ids


def _file_name(clip_id: str) -> str:
    """The id as one safe file name (``/`` and ``\\`` become ``__``)."""
    name = clip_id.replace("/", "__").replace("\\", "__")
    if name in ("", ".", "..") or "\0" in name:
        raise PrepareError(f"clip id {clip_id!r} cannot be used as a file name")
    return name


# ----------------------------------------------------------------------------- per clip
def _resize(img: np.ndarray, size: int | None, short_side: int | None) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> short side ``short_side`` (aspect kept), or short side ``size``
    then a centred ``size x size`` crop (torchvision Resize + CenterCrop, bilinear, on PIL)."""
    target = size or short_side
    if not target:
        return img
    from PIL import Image

    h, w = img.shape[:2]
    nw, nh = (target, int(target * h / w)) if w <= h else (int(target * w / h), target)
    if (nw, nh) != (w, h):
        img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
    if size:
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
        img = img[top:top + size, left:left + size]
    return img


def _write_frames(frames: Sequence[np.ndarray], folder: Path) -> list[str]:
    """Write uint8 ``(H, W, 3)`` frames as ``folder/<k>.jpg``, replacing what was there."""
    from PIL import Image

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    paths = []
    for k, frame in enumerate(frames):
        path = folder / f"{k}.jpg"
        Image.fromarray(frame).save(path, quality=JPEG_QUALITY)
        paths.append(str(path))
    return paths


def _write_wav(path: Path, wave: np.ndarray, sample_rate: int) -> str:
    """Mono float ``(N,)`` -> 16-bit PCM wav (values clipped to [-1, 1])."""
    import soundfile as sf

    with atomic_path(path) as tmp:  # a killed write leaves only the temporary file
        sf.write(str(tmp), np.clip(wave, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return str(path)


def _is_silent(wave: np.ndarray) -> bool:
    """Whether ``wave`` is digital silence: every sample below :data:`SILENCE_LEVEL` (its 16-bit wav
    holds only zeros). Reads the samples already decoded once (two reductions, no copy)."""
    return wave.size > 0 and float(wave.max()) < SILENCE_LEVEL and float(wave.min()) > -SILENCE_LEVEL


def _check_silence(wave: np.ndarray, path: str, extra: dict, opts: _Options) -> None:
    """A clip whose audio is digital silence fails (MediaError, reason :data:`SILENT_AUDIO`), or,
    with ``opts.keep_silent``, is kept and marked (``extra["silent_audio"] = True``)."""
    from avssl.data.decode import MediaError

    if not _is_silent(wave):
        return
    if not opts.keep_silent:
        raise MediaError(path, f"{SILENT_AUDIO} (every sample is zero; --keep-silent keeps such clips)")
    extra["silent_audio"] = True


def _video_outputs(rec: Record, opts: _Options) -> tuple[list[np.ndarray], np.ndarray, int, dict]:
    """A raw video's frames (resized as ``opts`` asks), mono audio, its rate and the record's
    extra fields: what the folder layout and the shards store alike."""
    from avssl.data.decode import probe, read_clip

    info = probe(rec.video)
    clip = read_clip(rec.video, num_frames=opts.frames, sample_rate=opts.sample_rate, require_audio=True)
    marks: dict = {}
    _check_silence(clip.audio, rec.video, marks, opts)  # before resizing anything
    frames = [_resize(f, opts.size, opts.short_side) for f in clip.frames]
    extra = {**rec.extra, "source": rec.video, "duration": round(clip.duration, 6),
             "frame_times": [round(t, 6) for t in clip.frame_times], "orig_fps": info.fps,
             "orig_width": info.width, "orig_height": info.height,
             "orig_sample_rate": info.sample_rate, **marks}
    return frames, clip.audio, clip.sample_rate, extra


def _prepare_video(rec: Record, name: str, opts: _Options) -> Record:
    frames, wave, rate, extra = _video_outputs(rec, opts)
    out = Path(opts.out_dir)
    paths = _write_frames(frames, out / "frames" / name)
    audio = _write_wav(out / "audio" / f"{name}.wav", wave, rate)
    return Record(id=rec.id, audio=audio, frames=paths, labels=rec.labels, split=rec.split, extra=extra)


def _extracted_outputs(rec: Record, opts: _Options) -> tuple[Clip, list[np.ndarray] | None,
                                                              tuple[np.ndarray, int] | None, dict]:
    """A pre-extracted clip, every frame and the audio decoded (the check), with what the outputs
    need: the resized frames (None: keep the files), the audio at ``opts.sample_rate`` (None: the
    file is already a plain mono wav at it; keep it) and the record's extra fields."""
    from avssl.data.decode import MediaError, read_extracted, resample

    if not rec.frames or not rec.audio:
        raise MediaError(rec.audio or (rec.frames or [rec.id])[0],
                         "needs a 'video', or both 'frames' and 'audio'")
    clip = read_extracted(rec.frames, rec.audio, sample_rate=None)  # decodes every frame + audio
    marks: dict = {}
    _check_silence(clip.audio, rec.audio, marks, opts)  # before resizing or resampling anything
    resized = None
    if opts.size or opts.short_side:
        resized = [_resize(f, opts.size, opts.short_side) for f in clip.frames]
    audio = None
    if not _is_plain_wav(rec.audio, opts.sample_rate):
        rate = opts.sample_rate or clip.sample_rate
        audio = resample(clip.audio, clip.sample_rate, rate), rate
    h, w = clip.frames.shape[1:3]
    extra = {**rec.extra, "duration": round(clip.duration, 6), "orig_width": int(w),
             "orig_height": int(h), "orig_sample_rate": clip.sample_rate, **marks}
    return clip, resized, audio, extra


def _prepare_extracted(rec: Record, name: str, opts: _Options) -> Record:
    _, resized, converted, extra = _extracted_outputs(rec, opts)
    out = Path(opts.out_dir)
    frames = rec.frames if resized is None else _write_frames(resized, out / "frames" / name)
    audio = rec.audio
    if converted is not None:
        audio = _write_wav(out / "audio" / f"{name}.wav", *converted)
        extra["source_audio"] = rec.audio
    return Record(id=rec.id, audio=audio, frames=frames, labels=rec.labels, split=rec.split, extra=extra)


def _is_plain_wav(path: str, sample_rate: int | None) -> bool:
    """Whether ``path`` is already a mono wav at ``sample_rate`` (None: at any rate); then it is
    used as it is."""
    import soundfile as sf

    try:
        info = sf.info(path)
    except (sf.SoundFileError, RuntimeError):
        return False
    return info.format == "WAV" and sample_rate in (None, info.samplerate) and info.channels == 1


def _process(task: tuple[Record, str, _Options]) -> _Result:
    """Worker: prepare one clip, then write its sidecar atomically. MediaError -> a failure."""
    from avssl.data.decode import MediaError

    rec, name, opts = task
    out = Path(opts.out_dir)
    try:
        done = (_prepare_video if rec.video else _prepare_extracted)(rec, name, opts)
        atomic_write_text(out / "done" / f"{name}.json", json.dumps(done.to_json(out)) + "\n")
    except MediaError as e:
        return _Result(rec.id, False, e.path, e.reason)
    except OSError as e:
        if e.errno not in _FATAL_ERRNOS:
            raise
        return _Result(rec.id, False, e.filename or str(out), e.strerror or os.strerror(e.errno), fatal=True)
    warning = _warning_of(done)
    return _Result(rec.id, True, *warning) if warning else _Result(rec.id, True)


#: The reason warnings.csv gives a clip kept with silent audio.
_SILENT_KEPT = f"{SILENT_AUDIO} (every sample is zero; kept: --keep-silent)"


def _warning_of(rec: Record) -> tuple[str, str] | None:
    """``(path, reason)`` of a finished clip kept with a warning (silent audio), else None."""
    if not rec.extra.get("silent_audio"):
        return None
    return str(rec.extra.get("source") or rec.extra.get("source_audio") or rec.audio), _SILENT_KEPT


#: errors writing the outputs that no other clip can avoid: stop the run (a rerun resumes)
_FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


# ----------------------------------------------------------------------------- driver
def _check_options(out: Path, mine: dict, redo: str) -> None:
    """Record the options ``mine`` in ``OUT/prepare.json``; refuse to mix clips made with other
    ones (``redo``: what the message tells the user to delete instead). A ``prepare.json`` without
    ``format`` is the folder layout's (written before shards existed)."""
    path = out / "prepare.json"
    if path.is_file():
        theirs = json.loads(path.read_text(encoding="utf-8"))
        theirs.setdefault("format", "folder")
        diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
        if diff:
            listed = ", ".join(f"{k}={a} (now {b})" for k, (a, b) in diff.items())
            raise PrepareError(f"{out} was prepared with {listed}: use another output folder, or {redo}")
    atomic_write_text(path, json.dumps(mine) + "\n")


def _load_sidecar(path: Path, out: Path) -> Record:
    d = json.loads(path.read_text(encoding="utf-8"))

    def absolute(p: str) -> str:
        return p if Path(p).is_absolute() else str(out / p)

    rec = Record(id=d.pop("id"), labels=d.pop("labels", []), split=d.pop("split", None))
    rec.audio = absolute(d.pop("audio")) if "audio" in d else None
    rec.video = absolute(d.pop("video")) if "video" in d else None
    rec.frames = [absolute(p) for p in d.pop("frames")] if "frames" in d else None
    rec.extra = d
    return rec


def _write_failures(path: Path, rows: list[_Result]) -> None:
    _write_csv(path, ["id", "path", "reason"], ([r.id, r.path, r.reason] for r in sorted(rows, key=lambda r: r.id)))


def _write_warnings(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """``warnings.csv`` (id, path, reason) when there are warnings; else no such file (a stale one,
    from before its clips were redone, is removed)."""
    if rows:
        _write_csv(path, ["id", "path", "reason"], rows)
    else:
        path.unlink(missing_ok=True)


def _write_ignored(path: Path, rows: list[tuple[str, str]]) -> None:
    _write_csv(path, ["path", "reason"], rows)


def _write_csv(path: Path, header: list[str], rows) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _check_arguments(on_error: str, **counts: int | None) -> None:
    """ValueError for a bad ``on_error``, both ``size`` and ``short_side``, or a count below 1."""
    if on_error not in ("skip", "stop"):
        raise ValueError(f"on_error must be 'skip' or 'stop', not {on_error!r}")
    if counts.get("size") is not None and counts.get("short_side") is not None:
        raise ValueError("give size or short_side, not both")
    for key, v in counts.items():
        if v is not None and v < 1:
            raise ValueError(f"{key} must be >= 1, got {v}")


def prepare(input: str | os.PathLike, out_dir: str | os.PathLike, *, frames: int = 10,
            sample_rate: int | None = None, size: int | None = None, short_side: int | None = None,
            workers: int | None = None, layout: str | None = None,
            root: str | os.PathLike | None = None, on_error: str = "skip",
            limit: int | None = None, keep_silent: bool = False) -> PrepareReport:
    """Prepare the clips ``input`` names into ``out_dir`` (layout: module docstring).

    Args:
        frames: frames per raw video, at the centres of equal segments of the clip.
        sample_rate: rate of the output wavs (Hz); None (default) keeps each file's own rate, as
            both methods read audio (docs/methods.md §3); 16000 gives the CAV-MAE layout.
        size: resize the short side to ``size`` and centre-crop ``size x size`` (CAV-MAE: 224).
        short_side: resize the short side only (exclusive with ``size``).
        workers: worker processes (default: CPU count); 0 or 1 works in this process.
        layout, root: for SSL-TIE id lists (:data:`~avssl.data.manifest.SSLTIE_LAYOUTS`);
            ``root`` is also the base of relative paths in lists and manifests.
        on_error: ``"skip"`` records failed clips in ``failures.csv`` and goes on; ``"stop"``
            raises PrepareError at the first.
        limit: only the first ``limit`` clips of the input.
        keep_silent: keep the clips whose audio is digital silence (every sample zero) in the
            manifest, marked ``"silent_audio": true`` and listed in ``warnings.csv``; by default
            they fail (reason ``silent audio``, in ``failures.csv``). Applies to the clips this
            call prepares: finished clips are kept as they are (delete ``done/<id>.json`` to redo one).

    Workers are started with ``spawn`` (safe whatever threads this process runs), so a script
    that calls this must guard its entry point with ``if __name__ == "__main__":``.
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    t0 = time.perf_counter()
    _check_arguments(on_error, frames=frames, sample_rate=sample_rate, size=size, short_side=short_side,
                     limit=limit)
    out = Path(out_dir).resolve()
    opts = _Options(str(out), frames, sample_rate, size, short_side, keep_silent=bool(keep_silent))
    records, ignored = _collect(input, layout=layout, root=root)
    records = records[:limit]
    names = [_file_name(r.id) for r in records]
    clash = [n for n, c in Counter(names).items() if c > 1]
    if clash:
        raise PrepareError(f"clip ids map to the same file names: {clash[:5]}")
    for sub in ("done", "frames", "audio"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    _check_options(out, {"format": "folder", **{k: getattr(opts, k) for k in _OPTION_KEYS}},
                   f"delete {out / 'done'} to redo every clip")
    remove_stale_tmp(out, out / "done", out / "audio")  # left by a write that was killed (or hit a full disk)
    if ignored:
        _write_ignored(out / "ignored.csv", ignored)
    todo = [(r, n, opts) for r, n in zip(records, names, strict=True)
            if not (out / "done" / f"{n}.json").is_file()]
    skipped = len(records) - len(todo)
    if skipped:
        log.info("skipping %d of %d clips already done in %s", skipped, len(records), out)
    nproc = min((os.cpu_count() or 1) if workers is None else workers, len(todo))
    failures: list[_Result] = []
    fatal: _Result | None = None
    done = silent_kept = 0
    with logging_redirect_tqdm(), tqdm(total=len(todo), unit="clip", desc="prepare",
                                       disable=None, dynamic_ncols=True) as bar:
        pool = multiprocessing.get_context("spawn").Pool(nproc) if nproc > 1 else None
        try:
            chunk = max(1, min(8, len(todo) // (16 * max(nproc, 1))))
            results = pool.imap_unordered(_process, todo, chunk) if pool else map(_process, todo)
            for res in results:
                bar.update()
                if res.ok:
                    done += 1
                    if res.reason:  # finished with a warning: kept, but said
                        silent_kept += 1
                        log.warning("kept %s with %s: %s (listed in %s)", res.id, SILENT_AUDIO, res.path,
                                    out / "warnings.csv")
                    continue
                if res.fatal:
                    fatal = res
                    break
                failures.append(res)
                log.warning("failed %s: %s: %s", res.id, res.path, res.reason)
                if on_error == "stop":
                    _write_failures(out / "failures.csv", failures)
                    raise PrepareError(f"clip {res.id}: {res.path}: {res.reason}")
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    # what the clips finished so far are: each list written on its own (atomically), the manifest
    # first, so that a disk with room for some of them gets those; done/*.json stay in any case
    finished = sorted((_load_sidecar(p, out) for p in (out / "done").glob("*.json")), key=lambda r: r.id)
    warnings = [(r.id, *w) for r in finished if (w := _warning_of(r))]
    manifest = out / "manifest.jsonl"
    lost: list[tuple[str, OSError]] = []
    for name, write in (("manifest.jsonl", lambda: write_manifest(manifest, finished)),
                        ("failures.csv", lambda: _write_failures(out / "failures.csv", failures)),
                        ("warnings.csv", lambda: _write_warnings(out / "warnings.csv", warnings))):
        try:
            write()
        except OSError as e:
            if fatal is None and e.errno not in _FATAL_ERRNOS:
                raise
            lost.append((name, e))
    if lost:
        e = lost[0][1]
        cause = fatal or _Result("", False, e.filename or str(out), e.strerror or str(e))
        names = " and ".join(n for n, _ in lost)
        raise PrepareError(f"cannot write to {cause.path}: {cause.reason}; {done} clips finished in this run "
                           f"({len(finished)} in all; their done/*.json are kept) but {names} could not be "
                           f"written ({e}); free space and rerun to resume") from e
    if fatal is not None:
        raise PrepareError(f"cannot write to {fatal.path}: {fatal.reason}; stopped after {done} clips finished "
                           f"in this run ({len(finished)} in all, listed in {manifest}; failures in "
                           f"{out / 'failures.csv'}); free space and rerun to resume")
    silent = silent_kept + sum(r.reason.startswith(SILENT_AUDIO) for r in failures)
    report = PrepareReport(done=done, skipped=skipped, failed=len(failures), total=len(records),
                           seconds=time.perf_counter() - t0, out_dir=out, manifest=manifest,
                           failures=out / "failures.csv", failed_ids=sorted(r.id for r in failures),
                           ignored=ignored, silent=silent, silent_kept=silent_kept, warnings=warnings)
    log.info("%s", report.summary())
    if failures:
        log.warning("%d clips failed; see %s", len(failures), report.failures)
    if warnings:
        log.warning("%d finished clips have %s (kept with --keep-silent); see %s", len(warnings), SILENT_AUDIO,
                    out / "warnings.csv")
    return report


__all__ = ["MEDIA_EXTENSIONS", "SILENT_AUDIO", "PrepareError", "PrepareReport", "collect_inputs", "prepare", "scan_directory"]
