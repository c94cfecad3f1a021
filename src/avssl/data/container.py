"""Opening media files with PyAV, and the errors every reader raises.

The container layer under :mod:`avssl.data.decode`: :func:`open_media` (a context manager that
checks the path and names the file in every error), the stream pickers, each stream's start on
the container clock and its declared duration. :class:`MediaError` and its subclasses carry the
file and the cause; the CLI prints them as one line.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import av

__all__ = [
    "MediaError", "MediaNotFoundError", "CorruptMediaError", "NoAudioStreamError", "NoVideoStreamError",
    "EmptyAudioError", "SampleRateError", "check_path", "open_media", "video_stream", "audio_stream",
    "stream_start", "stream_duration",
]

PathLike = str | os.PathLike


# ----------------------------------------------------------------------------- errors
class MediaError(Exception):
    """A media file could not be used. ``path`` names the file, ``reason`` the cause."""

    def __init__(self, path: PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep picklable for multiprocessing pools
        return (type(self), (self.path, self.reason))


class MediaNotFoundError(MediaError, FileNotFoundError):
    """The path does not exist (also a ``FileNotFoundError``)."""


class CorruptMediaError(MediaError):
    """Unreadable, truncated, zero-byte or not a media file at all."""


class NoAudioStreamError(MediaError):
    """Audio was requested from a file without an audio stream."""


class NoVideoStreamError(MediaError):
    """Frames were requested from a file without a video stream."""


class EmptyAudioError(MediaError):
    """The audio stream decodes to zero samples."""


class SampleRateError(MediaError):
    """The file's sample rate differs from the one demanded and resampling was refused."""


# ----------------------------------------------------------------------------- opening
def check_path(path: PathLike) -> str:
    """``path`` as a string, or a :class:`MediaError` if it is missing, a folder or empty."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise MediaNotFoundError(p, "no such file")
    if os.path.isdir(p):
        raise CorruptMediaError(p, "is a directory, not a media file")
    if os.path.getsize(p) == 0:
        raise CorruptMediaError(p, "zero-byte file")
    return p


@contextmanager
def open_media(path: PathLike) -> Iterator[tuple[av.container.InputContainer, str]]:
    """Open ``path`` with PyAV for reading: ``with open_media(p) as (container, p): ...``; errors name the file."""
    p = check_path(path)
    try:
        container = av.open(p, mode="r", metadata_errors="replace")
    except PermissionError as e:
        raise MediaError(p, f"permission denied ({e})") from e
    except av.error.FFmpegError as e:
        raise CorruptMediaError(p, f"not a readable media file ({e.strerror or e})") from e
    try:
        yield container, p
    finally:
        container.close()


def video_stream(c: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The first video stream that is not an attached picture, or None."""
    for s in c.streams.video:  # skip cover art (mp3/m4a attached pictures)
        if not (int(s.disposition) & int(av.stream.Disposition.attached_pic)):
            return s
    return None


def audio_stream(c: av.container.InputContainer) -> av.audio.stream.AudioStream | None:
    """The first audio stream, or None."""
    return c.streams.audio[0] if c.streams.audio else None


def stream_start(stream: av.stream.Stream) -> float:
    """The stream's first timestamp on the container clock, in seconds (0 when unknown)."""
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def _parse_clock(text: str) -> float | None:
    try:
        h, m, s = text.strip().split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    except ValueError:
        return None


def stream_duration(stream: av.stream.Stream, c: av.container.InputContainer) -> tuple[float | None, str]:
    """Declared duration of ``stream`` in seconds and where it came from.

    Sources, most to least precise: the stream header (mp4/mov/avi), the matroska per-stream
    ``DURATION`` tag, the container header (covers all streams; may be estimated)."""
    if stream.duration is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base), "stream"
    for key, value in stream.metadata.items():
        if key.upper() == "DURATION" and (d := _parse_clock(value)) is not None and d > 0:
            return d, "tag"
    if c.duration is not None and c.duration > 0:
        return c.duration / av.time_base, "container"
    return None, "unknown"
