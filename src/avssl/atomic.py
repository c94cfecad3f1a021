"""Atomic file writes and the clean-up of what a killed one leaves (a leaf module: stdlib only).

Every output avssl writes (checkpoints, configs, manifests, sidecars, wavs, score files, heatmaps)
goes through :func:`atomic_path`: the bytes go to ``.NAME.<random>.tmp`` in the target's folder,
are flushed to disk, and the file is renamed over the target only when complete. A kill or a full
disk therefore never leaves a truncated or 0-byte target, only a temporary file, which
:func:`remove_stale_tmp` deletes on the next run.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from glob import escape as glob_escape
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text", "remove_stale_tmp", "remove_stale_tmp_of", "with_filename",
           "TMP_GLOB"]

log = logging.getLogger(__name__)

#: The names :func:`atomic_path` gives its temporary files (hidden, ``.tmp``).
TMP_GLOB = ".*.tmp"


def with_filename(e: OSError, path: str | os.PathLike) -> OSError:
    """``e`` with ``filename`` set to ``path`` when the OS left it unset (a failed ``write()``)."""
    if e.filename is None:
        new = OSError(e.errno, e.strerror or os.strerror(e.errno or 0), str(path))
        new.__cause__ = e
        return new
    return e


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it is given the permissions
    a plain ``open`` would (``0666`` less the umask: shards and checkpoints others on a cluster
    may read), fsynced and renamed over ``path``; on any failure removed. An OSError without a
    file name is re-raised naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 -> what open() would have given
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:
            raise with_filename(e, path) from e
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once, at import: os.umask() cannot be read without setting it


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def remove_stale_tmp(*folders: str | os.PathLike) -> int:
    """Delete the temporary files that killed :func:`atomic_path` writes left in ``folders``;
    returns how many were removed (logged)."""
    removed = 0
    for folder in folders:
        for p in Path(folder).glob(TMP_GLOB):
            try:
                p.unlink()
                removed += 1
            except OSError as e:  # pragma: no cover - e.g. a read-only folder: harmless
                log.warning("could not remove %s: %s", p, e)
    if removed:
        log.info("removed %d temporary file(s) left by interrupted writes in %s", removed,
                 ", ".join(map(str, folders)))
    return removed


def remove_stale_tmp_of(*targets: str | os.PathLike) -> int:
    """Delete only the temporary files of killed writes of ``targets`` (``.NAME.*.tmp`` beside each),
    for folders that also hold the user's own files (e.g. the current folder); returns the count."""
    removed = 0
    for target in map(Path, targets):
        for p in target.parent.glob(f".{glob_escape(target.name)}.*.tmp"):
            try:
                p.unlink()
                removed += 1
            except OSError as e:  # pragma: no cover
                log.warning("could not remove %s: %s", p, e)
    if removed:
        log.info("removed %d temporary file(s) left by interrupted writes of %s", removed,
                 ", ".join(map(str, targets)))
    return removed
