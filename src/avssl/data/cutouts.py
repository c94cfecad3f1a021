"""Cut-out pictures with their own recordings: the source material of the semi-real benchmark.

A *source* is a folder, or a Debian package (``.deb``) holding one, in which a picture
``<name>.png`` with an alpha channel (the exact cut-out: its mask) sits beside its recording
``<name>.ogg`` / ``.wav`` / ``.flac``. Debian's ``tuxpaint-stamps-default`` is such a package
(131 pairs in 2022.06.04: animals, instruments, vehicles, tools); any folder of pairs a user
brings works the same way.

A ``.deb`` is an ``ar`` archive whose ``data.tar.{xz,gz,bz2}`` member holds the files; it is read
with the standard library alone (no dpkg), so a user on any OS can point avssl at the file.

:func:`load_cutouts` returns the usable pairs, sorted by path, and what it skipped and why: a
picture without transparency (not a cut-out), an unreadable picture or recording, a silent or
too short recording. Nothing is replaced by a placeholder.
"""
from __future__ import annotations

import io
import logging
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["Cutout", "CutoutSet", "CutoutSourceError", "SOUND_SUFFIXES", "deb_files", "source_files", "load_cutouts"]

SOUND_SUFFIXES = (".ogg", ".wav", ".flac")  # in order of preference when a picture has several
_TAR_MODES = {"data.tar": "r:", "data.tar.gz": "r:gz", "data.tar.xz": "r:xz", "data.tar.bz2": "r:bz2"}


class CutoutSourceError(ValueError):
    """A cut-out source that cannot be read at all (``path`` and ``reason``)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class Cutout:
    """One picture and its recording.

    name: the class (the file stem; ``group/stem`` where two groups share a stem).
    group: the folder, relative to the source's root (e.g. ``animals/mammals/dogs``).
    rgba: (H, W, 4) uint8, cropped to the opaque part's bounding box.
    wave: (N,) float32 mono at ``sample_rate``, as decoded (a lossy file may peak slightly above 1).
    origin: ``<source>:<picture path>`` for messages and manifests.
    """

    name: str
    group: str
    rgba: np.ndarray
    wave: np.ndarray
    sample_rate: int
    origin: str

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool: the cut-out's exact pixels (alpha > 0)."""
        return self.rgba[..., 3] > 0

    @property
    def seconds(self) -> float:
        return self.wave.shape[0] / self.sample_rate


@dataclass
class CutoutSet:
    """What :func:`load_cutouts` found: the usable ``cutouts`` and ``skipped`` (path, reason) pairs."""

    cutouts: list[Cutout]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cutouts]


# ----------------------------------------------------------------------------- Debian packages
def _ar_members(path: Path) -> Iterable[tuple[str, int, int]]:
    """(name, offset, size) of each member of the ``ar`` archive at ``path``."""
    with open(path, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise CutoutSourceError(path, "not a Debian package (no ar archive header)")
        while header := f.read(60):
            if len(header) < 60 or header[58:60] != b"`\n":
                raise CutoutSourceError(path, "damaged ar archive (bad member header)")
            name = header[:16].decode("ascii", "replace").strip().rstrip("/")
            try:
                size = int(header[48:58].decode("ascii").strip())
            except ValueError:
                raise CutoutSourceError(path, "damaged ar archive (bad member size)") from None
            yield name, f.tell(), size
            f.seek(size + (size % 2), os.SEEK_CUR)


def deb_files(path: str | os.PathLike, suffixes: Iterable[str]) -> dict[str, bytes]:
    """The regular files of a ``.deb``'s data archive whose names end with one of ``suffixes``:
    ``{posix path without the leading ./: content}``. Raises :class:`CutoutSourceError`."""
    path = Path(path)
    suffixes = tuple(s.lower() for s in suffixes)
    members = list(_ar_members(path))
    data = [(n, o, s) for n, o, s in members if n.startswith("data.tar")]
    if not data:
        raise CutoutSourceError(path, f"no data.tar member (members: {[n for n, _, _ in members]})")
    name, offset, size = data[0]
    if name not in _TAR_MODES:
        raise CutoutSourceError(path, f"{name}: this Python cannot decompress it; extract the package "
                                      "(e.g. `dpkg-deb -x` or `ar x` + `tar`) and pass the folder")
    with open(path, "rb") as f:
        f.seek(offset)
        blob = f.read(size)
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode=_TAR_MODES[name]) as tar:
            for member in tar:
                if member.isfile() and member.name.lower().endswith(suffixes):
                    handle = tar.extractfile(member)
                    if handle is not None:
                        out[str(PurePosixPath(member.name.removeprefix("./")))] = handle.read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise CutoutSourceError(path, f"{name} is damaged ({e})") from e
    return out


def source_files(source: str | os.PathLike, suffixes: Iterable[str]) -> dict[str, bytes]:
    """The files of a folder or a ``.deb`` (:func:`deb_files`) whose names end with one of
    ``suffixes``: ``{posix path relative to the root: content}``. Raises :class:`CutoutSourceError`."""
    path = Path(source)
    suffixes = tuple(s.lower() for s in suffixes)
    if path.is_dir():
        return {p.relative_to(path).as_posix(): p.read_bytes()
                for p in sorted(path.rglob("*")) if p.is_file() and p.name.lower().endswith(suffixes)}
    if path.is_file():
        return deb_files(path, suffixes)
    raise CutoutSourceError(path, "no such file or folder")


# ----------------------------------------------------------------------------- decoding
def _decode_picture(data: bytes) -> np.ndarray:
    """(H, W, 4) uint8 cropped to the non-transparent bounding box; ValueError if not a cut-out."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
        if not has_alpha:
            raise ValueError(f"no alpha channel ({im.mode}): not a cut-out")
        rgba = np.asarray(im.convert("RGBA"))
    alpha = rgba[..., 3] > 0
    if alpha.all():
        raise ValueError("fully opaque: not a cut-out")
    if not alpha.any():
        raise ValueError("fully transparent")
    rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
    return np.ascontiguousarray(rgba[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])


def _decode_sound(data: bytes, min_seconds: float) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        wave, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as e:
        raise ValueError(f"unreadable recording ({e})") from None
    wave = wave.mean(axis=1) if wave.shape[1] > 1 else wave[:, 0]
    if wave.shape[0] < min_seconds * sr:
        raise ValueError(f"recording is {wave.shape[0] / sr:.3f} s, shorter than {min_seconds} s")
    if not np.abs(wave).max() > 1e-4:
        raise ValueError("silent recording")
    return np.ascontiguousarray(wave, np.float32), int(sr)


def load_cutouts(source: str | os.PathLike, min_seconds: float = 0.2, exclude: Iterable[str] = ()) -> CutoutSet:
    """Every usable (picture, recording) pair of a folder or a ``.deb`` (see the module docstring).

    A pair is ``<dir>/<stem>.png`` and ``<dir>/<stem>.<ogg|wav|flac>`` (the first suffix found in
    that order). Pairs are sorted by path; names are file stems, prefixed by their folder where a
    stem occurs in several. Skipped pairs are logged and returned with their reasons. ``exclude``:
    folders to leave out, matched as whole path components (``"symbols"``, ``"symbols/math"``).
    Raises :class:`CutoutSourceError` for a missing or unreadable source, or one without pairs.
    """
    path = Path(source)
    files = source_files(path, (".png", *SOUND_SUFFIXES))
    lower = {name.lower(): name for name in files}
    pairs = []
    for name in sorted(files):
        if not name.lower().endswith(".png"):
            continue
        stem = name[:-4]
        sound = next((lower[k] for k in (stem.lower() + s for s in SOUND_SUFFIXES) if k in lower), None)
        if sound is not None and not any(f"/{frag.strip('/')}/" in f"/{name}" for frag in exclude):
            pairs.append((name, sound))
    if not pairs:
        raise CutoutSourceError(path, "no <name>.png with a <name>.ogg/.wav/.flac beside it")
    stems = [PurePosixPath(p).stem for p, _ in pairs]
    repeated = {s for s in stems if stems.count(s) > 1}
    out, skipped = [], []
    for (picture, sound), stem in zip(pairs, stems, strict=True):
        group = str(PurePosixPath(picture).parent)
        try:
            rgba = _decode_picture(files[picture])
            wave, sr = _decode_sound(files[sound], min_seconds)
        except (ValueError, OSError) as e:  # PIL raises OSError subclasses for damaged files
            skipped.append((picture, str(e)))
            logger.info("cut-outs: skipped %s: %s", picture, e)
            continue
        name = f"{PurePosixPath(group).name}/{stem}" if stem in repeated else stem
        out.append(Cutout(name, group, rgba, wave, sr, f"{path}:{picture}"))
    names = [c.name for c in out]
    if len(set(names)) < len(names):  # the same folder name in two places: the whole path names it
        out = [replace(c, name=f"{c.group}/{c.name.rpartition('/')[2]}") if names.count(c.name) > 1 else c
               for c in out]
    if not out:
        raise CutoutSourceError(path, f"none of its {len(pairs)} pairs is usable, e.g. {skipped[0][0]}: "
                                      f"{skipped[0][1]}")
    logger.info("cut-outs: %d pairs from %s (%d skipped)", len(out), path, len(skipped))
    return CutoutSet(out, skipped)
