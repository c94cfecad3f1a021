"""Decoding real media: video frames at given times, audio tracks, pre-extracted frames and wavs.

Everything goes through PyAV (FFmpeg), so any container/codec FFmpeg reads works; wav/flac/ogg
files that users extracted beforehand are read with soundfile, and JPEG frames with PIL
(docs/methods.md §3). Failures raise a :class:`MediaError` subclass naming the file and the
cause; nothing here ever returns partial or placeholder data.

Conventions:
* Times are seconds from the start of the video stream (its first timestamp is 0), so the clip
  spans ``[0, duration]``; audio is placed on the same clock (a late audio stream is preceded by
  silence, an early one loses its lead), so sound and frames stay in sync.
* Packets a decoder rejects (damaged Ogg/Theora/Vorbis files, ...) are skipped and counted, as
  FFmpeg's players do; a stream that stops decoding before its declared end is reported as
  truncated, naming how far it got. The frame "at" time ``t`` is the one displayed then: the last frame whose
  presentation time is ``<= t``; ``t`` is clamped into the clip.
* Frames are ``uint8`` RGB ``(N, H, W, 3)``; audio is ``float32`` in ``[-1, 1]``, shape ``(N,)``
  (mono, the average of all channels) or ``(C, N)`` with ``mono=False``.

Long file: one job, reading a clip's frames and audio on one clock. The container layer
(:mod:`avssl.data.container`) and the resampler (:mod:`avssl.data.resample`) are split out; what
remains (the frame seeker, the audio aligner, packet skipping) shares the conventions above.
"""
from __future__ import annotations

import io
import logging
import math
import os
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from avssl.data.container import (
    CorruptMediaError,
    EmptyAudioError,
    MediaError,
    MediaNotFoundError,
    NoAudioStreamError,
    NoVideoStreamError,
    SampleRateError,
    audio_stream,
    check_path,
    open_media,
    stream_duration,
    stream_start,
    video_stream,
)
from avssl.data.resample import resample

_resample = resample  # read_wav's argument ``resample`` shadows the function name

__all__ = [
    "MediaError", "MediaNotFoundError", "CorruptMediaError", "NoAudioStreamError",
    "NoVideoStreamError", "EmptyAudioError", "SampleRateError", "MediaInfo", "Clip", "probe",
    "read_frames", "evenly_spaced_times", "read_audio", "read_wav", "read_wav_bytes", "resample", "read_image",
    "read_image_bytes",
    "read_clip", "read_extracted",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike
_EPS = 1e-6  # seconds; slack when comparing a requested time with a frame's timestamp


# ----------------------------------------------------------------------------- records
@dataclass
class MediaInfo:
    """What :func:`probe` learns from the container headers (nothing is decoded)."""

    path: str
    duration: float
    has_video: bool
    has_audio: bool
    width: int | None
    height: int | None
    fps: float | None
    num_frames: int | None
    sample_rate: int | None
    channels: int | None


@dataclass
class Clip:
    """Frames ``(N, H, W, 3)`` uint8 at ``frame_times`` (s) and audio ``(L,)`` float32 (or None)."""

    frames: np.ndarray
    frame_times: list[float]
    audio: np.ndarray | None
    sample_rate: int
    duration: float


def _check_complete(p: str, what: str, decoded: float, declared: float | None, source: str,
                    step: float) -> None:
    """Raise if decoding ended well before the declared duration (a truncated file)."""
    if declared is None:
        return
    tol = max(0.25, 3 * step, 0.02 * declared)
    if source == "container":  # may be the longest stream or a bitrate estimate
        tol = max(tol, 1.0, 0.05 * declared)
    if declared - decoded > tol:
        raise CorruptMediaError(
            p, f"{what} ends at {decoded:.3f} s but the file declares {declared:.3f} s "
               f"({source} header): truncated or corrupt")


def _media_duration(c: av.container.InputContainer) -> float:
    """:attr:`MediaInfo.duration`: the container's, else the longest stream's; NaN when unknown."""
    if c.duration:
        return c.duration / av.time_base
    streams = (video_stream(c), audio_stream(c))
    durs = [d for s in streams if s is not None if (d := stream_duration(s, c)[0]) is not None]
    return max(durs) if durs else math.nan


def probe(path: PathLike) -> MediaInfo:
    """Read the headers of ``path``. ``num_frames`` is the container's count, else
    ``round(duration * fps)``; ``duration`` is NaN only when no header states it."""
    with open_media(path) as (c, p):
        v, a = video_stream(c), audio_stream(c)
        duration = _media_duration(c)
        fps = n = None
        if v is not None:
            rate = v.average_rate or v.guessed_rate
            fps = float(rate) if rate else None
            vd = stream_duration(v, c)[0]
            n = v.frames or (round(vd * fps) if vd and fps else None)
        return MediaInfo(
            path=p, duration=float(duration), has_video=v is not None, has_audio=a is not None,
            width=v.codec_context.width if v else None, height=v.codec_context.height if v else None,
            fps=fps, num_frames=n, sample_rate=a.codec_context.sample_rate if a else None,
            channels=a.codec_context.channels if a else None)


def evenly_spaced_times(duration: float, n: int) -> list[float]:
    """Centres of ``n`` equal segments of ``[0, duration]`` (the "10 frames per clip" rule)."""
    if not (duration > 0 and math.isfinite(duration)):
        raise ValueError(f"duration must be positive and finite, got {duration}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [(i + 0.5) * duration / n for i in range(n)]


# ----------------------------------------------------------------------------- frames
def read_frames(path: PathLike, times: Sequence[float] | Callable[[float], Sequence[float]],
                size: tuple[int, int] | None = None, seek_threshold: float = 1.0,
                threads: int = 0) -> np.ndarray:
    """Frames displayed at ``times`` (s, any order, repeats allowed) -> uint8 ``(N, H, W, 3)`` RGB.

    ``times`` may be a function of the clip's duration (:attr:`MediaInfo.duration`, which it then
    needs: CorruptMediaError when no header states it), e.g. ``lambda d: [d / 2]`` for the
    middle frame, saving a separate :func:`probe`.

    ``size=(width, height)`` rescales (libswscale). Times are sorted and decoded in one
    sequential pass; the decoder seeks forward (to the keyframe before the next time) only when
    the gap exceeds ``seek_threshold`` seconds and the longest keyframe interval seen so far.
    Frames that no other frame references and that are shown well before the next time
    (:data:`SKIP_MARGIN`) are not decoded at all (FFmpeg's ``skip_frame=nonref``): the frames
    returned are the same, bit for bit. ``threads``: 0 lets FFmpeg pick (frame + slice threads
    on every core), 1 decodes in the calling thread (what a data-loader worker wants: its
    siblings already use the other cores)."""
    with open_media(path) as (c, p):
        vs = video_stream(c)
        if vs is None:
            raise NoVideoStreamError(p, "no video stream (frames requested)")
        if callable(times):
            duration = _media_duration(c)
            if not math.isfinite(duration):
                raise CorruptMediaError(p, "no duration in the headers to place the frames by")
            times = times(duration)
        t = np.asarray(times, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(t)):
            raise ValueError(f"times must be finite, got {times}")
        return _decode_frames(c, vs, p, t, size, seek_threshold, threads)


#: PyAV >= 17 scales frames with libswscale's slice threads (``threads=0``: one per CPU) unless told otherwise.
_THREADED_REFORMAT = int(av.__version__.split(".")[0]) >= 17
_SCALERS = threading.local()  # .pid, .reformatter: this thread's frame scaler, made in this process
_INHERITED: list = []  # scalers a forked process inherited: freeing one waits for its missing threads


def _reformatter():
    """This thread's frame scaler, made in this process. PyAV keeps one per thread, and a DataLoader
    worker forked from a process that had scaled frames inherits the parent's, with a libswscale
    context whose slice threads do not exist in the child: scaling then waits for them for ever
    (seen in the test suite), and so does freeing it. A scaler made after the fork cannot be such a
    copy; the inherited one is kept, unused, for the life of the process."""
    if getattr(_SCALERS, "pid", None) != os.getpid():
        from av.video.reformatter import VideoReformatter

        if getattr(_SCALERS, "reformatter", None) is not None:
            _INHERITED.append(_SCALERS.reformatter)
        _SCALERS.pid, _SCALERS.reformatter = os.getpid(), VideoReformatter()
    return _SCALERS.reformatter


#: Seconds (at least; and at least 4 frame intervals) before the next requested time from which
#: every frame is decoded again; earlier non-reference frames are skipped.
SKIP_MARGIN = 0.5


def _decode_frames(c: av.container.InputContainer, vs: av.video.stream.VideoStream, p: str,
                   times: np.ndarray, size: tuple[int, int] | None, seek_threshold: float,
                   threads: int = 0, skip_nonref: bool = True) -> np.ndarray:
    if times.size == 0:
        w, h = size or (vs.codec_context.width, vs.codec_context.height)
        return np.empty((0, h, w, 3), np.uint8)
    start = stream_start(vs)
    duration, source = stream_duration(vs, c)
    rate = vs.average_rate or vs.guessed_rate
    step = 1.0 / float(rate) if rate else 0.04
    uniq, inverse = np.unique(times, return_inverse=True)
    targets = start + np.clip(uniq, 0.0, duration if duration is not None else np.inf)
    if threads == 1:
        vs.thread_count = 1
    else:
        vs.thread_type, vs.thread_count = "AUTO", max(0, threads)
    margin = max(SKIP_MARGIN, 4 * step)
    out: np.ndarray | None = None
    reformat: dict = {"format": "rgb24"} | ({"width": size[0], "height": size[1]} if size else {})
    if threads == 1 and _THREADED_REFORMAT:  # one scaling thread too where the decoder has one (loader workers)
        reformat["threads"] = 1

    def convert(frame: av.VideoFrame) -> np.ndarray:
        nonlocal out
        arr = _reformatter().reformat(frame, **reformat).to_ndarray()  # rgb24 already: no second scaling
        if out is None:  # later frames are scaled to the first one's size should it change
            out = np.empty((len(targets), *arr.shape), np.uint8)
            reformat.update(width=arr.shape[1], height=arr.shape[0])
        return arr

    bad: list[str] = []  # packets the decoder rejected (skipped)

    def decode_from(t_seek: float | None) -> Iterator[av.VideoFrame]:
        if t_seek is not None:
            c.seek(int(t_seek / vs.time_base), stream=vs, backward=True, any_frame=False)
        return _decode_skipping(c, vs, p, bad, (lambda: targets[i] - margin) if skip_nonref else None)

    i, prev, prev_t = 0, None, -math.inf  # next target; last frame shown at or before it
    last_key, gop = None, 0.0  # last keyframe time and longest keyframe interval seen
    can_seek = True  # False once a seek found no data
    seeked = targets[0] - start > seek_threshold
    frames = decode_from(targets[0] if seeked else None)
    while i < len(targets):
        try:
            frame = next(frames, None)
        except av.error.FFmpegError as e:
            at = max(prev_t - start, 0.0)
            raise CorruptMediaError(p, f"file truncated/corrupt after {round(at / step) + (prev is not None)} "
                                       f"frames: video decoding failed after {at:.3f} s: {e}") from e
        if frame is None:  # end of stream: the remaining times show the last frame
            if prev is None:
                if seeked:  # the seek landed past the readable data (a truncated file): go sequentially
                    logger.debug("%s: nothing decodes after a seek to %.3f s; decoding from the start", p, targets[i])
                    frames, seeked, can_seek, prev_t = decode_from(start), False, False, -math.inf
                    continue
                why = f" ({len(bad)} packets rejected, first: {bad[0]})" if bad else ""
                raise CorruptMediaError(p, f"video stream has no decodable frames{why}")
            end = prev_t + step - start
            try:
                _check_complete(p, "video stream", end, duration, source, step)
            except CorruptMediaError as e:
                bad_note = f"; {len(bad)} packets rejected, first: {bad[0]}" if bad else ""
                raise CorruptMediaError(p, f"file truncated/corrupt after {round(end / step)} frames (times up to "
                                           f"{end:.3f} s decode): {e.reason}{bad_note}") from e
            out[i:] = convert(prev)
            break
        ft = frame.time if frame.time is not None else (prev_t + step if prev is not None else start)
        if frame.key_frame:
            if last_key is not None and ft > last_key:
                gop = max(gop, ft - last_key)
            last_key = ft
        if ft > targets[i] + _EPS:  # ``prev`` is the frame displayed at targets[i]
            if prev is None:
                if seeked:  # the seek overshot; decode from the beginning instead
                    logger.debug("%s: seek to %.3f s landed at %.3f s; decoding from start", p, targets[i], ft)
                    frames, seeked = decode_from(start), False
                    continue
                prev = frame  # a time before the first frame: clamp to it
            arr = convert(prev)
            while i < len(targets) and targets[i] + _EPS < ft:
                out[i] = arr
                i += 1
            since_key = ft - last_key if last_key is not None else 0.0
            if can_seek and i < len(targets) and targets[i] - ft > max(seek_threshold, gop, since_key):
                frames, seeked, prev = decode_from(targets[i]), True, None
                prev_t, last_key = ft, None  # keyframe intervals are measured within one run
                continue
        prev, prev_t = frame, ft
    if bad:
        logger.warning("%s: skipped %d video packets the decoder rejected (first: %s)", p, len(bad), bad[0])
    return out[inverse]


# ----------------------------------------------------------------------------- audio
def read_audio(path: PathLike, sample_rate: int | None = None, mono: bool = True,
               align_to_video: bool = True) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of any container -> (float32 wave, rate).

    Shape ``(N,)`` (channel average) or ``(C, N)`` with ``mono=False``. With ``sample_rate`` the
    stream is resampled by libswresample while decoding. Codec padding past the duration the
    stream header declares is trimmed; a stream ending well before it raises CorruptMediaError.

    With ``align_to_video`` (default) and a video stream, sample 0 is the video's start on the
    container timeline (where frame time 0 is): audio that starts later is preceded by silence,
    audio that starts earlier loses its leading part (both logged). Packets the decoder rejects
    are skipped (counted, logged) rather than ending the track."""
    with open_media(path) as (c, p):
        a = audio_stream(c)
        if a is None:
            raise NoAudioStreamError(p, "no audio stream")
        vs = video_stream(c) if align_to_video else None
        declared, source = stream_duration(a, c)
        c_start = c.start_time / av.time_base if c.start_time else 0.0
        v_start = stream_start(vs) if vs is not None else None
        to_fltp: av.AudioResampler | None = None  # for decoders whose output is not planar float
        chunks: list[list[np.ndarray]] = []  # per channel
        n, rate, layout = 0, a.codec_context.sample_rate, None
        first: float | None = None  # container time of the first decoded sample
        bad: list[str] = []

        def take(frame: av.AudioFrame) -> None:
            nonlocal n, rate, layout, to_fltp
            if frame.format.name != "fltp" or (layout is not None and frame.layout.name != layout):
                to_fltp = to_fltp or av.AudioResampler(format="fltp", layout=layout or frame.layout.name)
                for r in to_fltp.resample(frame):
                    take(r)
                return
            # the planes straight into NumPy (``to_ndarray`` costs ~35 us a frame), one list per channel
            planes = frame.planes
            if not chunks:
                chunks.extend([] for _ in planes)
            for ch, pl in zip(chunks, planes, strict=True):
                ch.append(np.frombuffer(pl, np.float32, frame.samples))
            n, rate, layout = n + frame.samples, frame.sample_rate, frame.layout.name

        try:
            for frame in _decode_skipping(c, a, p, bad):
                if first is None:
                    first = float(frame.time) if frame.time is not None else stream_start(a)
                take(frame)
            if to_fltp is not None:
                for r in to_fltp.resample(None):
                    take(r)
        except (av.error.FFmpegError, ValueError) as e:
            at = f" of {declared:.3f} s" if declared else ""
            raise CorruptMediaError(p, f"audio decoding failed after {n / rate:.3f} s{at}: {e}") from e
    if n == 0:
        why = f" ({len(bad)} packets rejected, first: {bad[0]})" if bad else ""
        raise EmptyAudioError(p, f"audio stream decodes to zero samples{why}")
    if bad:
        logger.warning("%s: skipped %d audio packets the decoder rejected (first: %s)", p, len(bad), bad[0])
    wave = np.stack([np.concatenate(ch) for ch in chunks])
    if mono:  # before resampling, which is linear: one channel to filter instead of C
        wave, layout = wave.mean(axis=0, keepdims=True, dtype=np.float32), "mono"
    if sample_rate is not None and sample_rate != rate:
        wave, rate = _swresample(wave, rate, sample_rate, layout, p), sample_rate
    n = wave.shape[1]
    first = stream_start(a) if first is None else first
    # a per-stream "stream" duration counts from the stream's first sample; the matroska tag
    # and the container duration are end times on the container timeline
    origin = 0.0 if source == "stream" else first - c_start
    _check_complete(p, "audio stream", origin + n / rate, declared, source, 0.0)
    if declared is not None and source in ("stream", "tag"):
        wave = wave[:, : max(1, round((declared - origin) * rate))]
    if v_start is not None:
        wave = _align(wave, rate, first - v_start, p)
    wave = wave[0] if mono else wave
    return np.ascontiguousarray(wave, dtype=np.float32), int(rate)


def _swresample(wave: np.ndarray, rate: int, new_rate: int, layout: str, p: str) -> np.ndarray:
    """``(C, N)`` float32 at ``rate`` -> ``new_rate`` with libswresample (FFmpeg's ``-ar``), in one call."""
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave), format="fltp", layout=layout)
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=new_rate)
    try:
        out = [r.to_ndarray() for r in (*resampler.resample(frame), *resampler.resample(None))]
    except (av.error.FFmpegError, ValueError) as e:
        raise CorruptMediaError(p, f"resampling {rate} Hz to {new_rate} Hz failed: {e}") from e
    return np.concatenate(out, axis=1) if len(out) > 1 else out[0]


def _align(wave: np.ndarray, rate: int, offset: float, p: str) -> np.ndarray:
    """Shift ``(C, N)`` audio that starts ``offset`` s after the video onto the video's clock."""
    k = int(round(offset * rate))
    if k > 0:
        logger.info("%s: audio starts %.3f s after the video; padded with %.3f s of silence", p, offset, k / rate)
        return np.concatenate([np.zeros((wave.shape[0], k), wave.dtype), wave], axis=1)
    if k < 0:
        logger.info("%s: audio starts %.3f s before the video; its first %.3f s dropped", p, -offset, -k / rate)
        if -k >= wave.shape[1]:
            raise EmptyAudioError(p, f"audio ends {(-k - wave.shape[1]) / rate:.3f} s before the video starts")
        return wave[:, -k:]
    return wave


def _decode_skipping(c: av.container.InputContainer, stream: av.stream.Stream, p: str,
                     bad: list[str], nonref_until: Callable[[], float] | None = None) -> Iterator:
    """Decoded frames of ``stream``; packets the decoder rejects are skipped and described in
    ``bad`` instead of ending the stream, as FFmpeg's own player and converter do (whatever the
    error code: libavcodec's Theora decoder, e.g., answers a damaged packet with EPERM, others with
    EINVAL / invalid data). Demuxer errors and running out of memory still raise.

    ``nonref_until()``: a packet presented before that time (s, container clock) is decoded with
    ``skip_frame=nonref``: a frame no other frame references is then dropped unseen, which
    leaves every other frame as it was. Packets without a timestamp are always decoded."""
    skipping = False
    base = float(stream.time_base or 0) if nonref_until is not None else 0.0
    for packet in c.demux(stream):
        if nonref_until is not None:
            cc = stream.codec_context
            far = packet.pts is not None and base > 0 and packet.pts * base < nonref_until()
            if far != skipping:
                cc.skip_frame, skipping = ("NONREF" if far else "DEFAULT"), far
        try:
            frames = packet.decode()
        except av.error.MemoryError:
            raise
        except av.error.FFmpegError as e:
            bad.append(f"pts {packet.pts}: {e}")
            logger.debug("%s: skipped a bad %s packet at pts %s: %s", p, stream.type, packet.pts, e)
            continue
        yield from frames


def _check_wav_size(p: str) -> None:
    """Raise if a RIFF/WAVE file's data chunk is shorter than its header declares.

    (libsndfile silently reads a truncated wav.) Unknown sizes (0 or 0xFFFFFFFF, written by
    streaming encoders) are accepted."""
    size = os.path.getsize(p)
    with open(p, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            cid, clen = struct.unpack("<4sI", f.read(8))
            if cid == b"data":
                have = size - pos - 8
                if clen not in (0, 0xFFFFFFFF) and have < clen:
                    raise CorruptMediaError(
                        p, f"truncated wav: data chunk declares {clen} bytes, file holds {have}")
                return
            pos += 8 + clen + (clen & 1)


def read_wav(path: PathLike, sample_rate: int | None = None, resample: bool = True) -> tuple[np.ndarray, int]:
    """Read a pre-extracted audio file (wav/flac/ogg/mp3) -> (mono float32 ``(N,)``, rate).

    soundfile first, PyAV for what libsndfile cannot read. If ``sample_rate`` differs from the
    file's rate: resample with :func:`resample` when ``resample`` is True, else SampleRateError."""
    import soundfile as sf

    do_resample = resample
    p = check_path(path)
    _check_wav_size(p)
    try:
        data, sr = sf.read(p, dtype="float32", always_2d=True)
        wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    except (sf.SoundFileError, RuntimeError) as e:
        logger.debug("%s: soundfile failed (%s); trying PyAV", p, e)
        try:
            wave, sr = read_audio(p)
        except CorruptMediaError as e2:
            raise CorruptMediaError(p, f"soundfile: {e}; PyAV: {e2.reason}") from e2
    return _mono_at(wave, sr, p, sample_rate, do_resample)


def read_wav_bytes(data: bytes, where: str, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """:func:`read_wav` of audio file bytes (wav/flac, e.g. from a shard); errors name ``where``."""
    import soundfile as sf

    try:
        x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as e:
        raise CorruptMediaError(where, f"cannot decode audio: {e}") from e
    return _mono_at(x.mean(axis=1) if x.shape[1] > 1 else x[:, 0], sr, where, sample_rate, True)


def _mono_at(wave: np.ndarray, sr: int, p: str, sample_rate: int | None, do_resample: bool) -> tuple[np.ndarray, int]:
    """A decoded mono wave, checked non-empty, at ``sample_rate`` (resampled, or SampleRateError)."""
    if wave.size == 0:
        raise EmptyAudioError(p, "audio file holds zero samples")
    if sample_rate is not None and sr != sample_rate:
        if not do_resample:
            raise SampleRateError(p, f"sample rate is {sr} Hz, {sample_rate} Hz required (resample=False)")
        wave, sr = _resample(wave, sr, sample_rate), sample_rate
    return np.ascontiguousarray(wave, dtype=np.float32), int(sr)


# ----------------------------------------------------------------------------- images, clips
def read_image(path: PathLike) -> np.ndarray:
    """A JPEG/PNG/... image -> uint8 ``(H, W, 3)`` RGB."""
    p = check_path(path)
    return _image(p, p)


def read_image_bytes(data: bytes, where: str) -> np.ndarray:
    """:func:`read_image` of image file bytes (e.g. from a shard); errors name ``where``."""
    return _image(io.BytesIO(data), where)


def _image(source, p: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise CorruptMediaError(p, f"cannot decode image: {e}") from e


def read_clip(path: PathLike, num_frames: int | None = None, frame_times: Sequence[float] | None = None,
              sample_rate: int | None = 16000, require_audio: bool = True,
              size: tuple[int, int] | None = None) -> Clip:
    """Frames and audio of one video file.

    Frames at ``frame_times`` or at ``num_frames`` evenly spaced times (neither: 10, the CAV-MAE
    convention). Audio at ``sample_rate`` (None: native). Without an audio stream, raises
    NoAudioStreamError unless ``require_audio`` is False, in which case ``Clip.audio`` is None."""
    if num_frames is not None and frame_times is not None:
        raise ValueError("give num_frames or frame_times, not both")
    with open_media(path) as (c, p):
        vs = video_stream(c)
        if vs is None:
            raise NoVideoStreamError(p, "no video stream (frames requested)")
        has_audio = audio_stream(c) is not None
        if not has_audio and require_audio:
            raise NoAudioStreamError(p, "no audio stream (require_audio=True)")
        vdur = stream_duration(vs, c)[0]
        duration = c.duration / av.time_base if c.duration else vdur
        if duration is None:
            raise CorruptMediaError(p, "no duration in the headers; pass frame_times")
        if frame_times is None:
            frame_times = evenly_spaced_times(vdur or duration, 10 if num_frames is None else num_frames)
        times = [min(max(float(t), 0.0), vdur or duration) for t in frame_times]
        frames = _decode_frames(c, vs, p, np.asarray(times, np.float64), size, 1.0)
    audio, sr = read_audio(p, sample_rate) if has_audio else (None, sample_rate or 0)
    return Clip(frames=frames, frame_times=times, audio=audio, sample_rate=sr, duration=float(duration))


def read_extracted(frame_paths: Sequence[PathLike], audio_path: PathLike, sample_rate: int | None = None,
                   frame_times: Sequence[float] | None = None) -> Clip:
    """Pre-extracted layouts (frame images + wav/mp3, docs/methods.md §3) -> :class:`Clip`.

    ``frame_times`` default to evenly spaced over the audio's duration (the CAV-MAE layout);
    all frames must have one size."""
    audio, sr = read_wav(audio_path, sample_rate)
    frames = [read_image(f) for f in frame_paths]
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise MediaError(os.fspath(Path(frame_paths[0]).parent), f"frames differ in size: {sorted(shapes)}")
    duration = len(audio) / sr
    if frame_times is None:
        frame_times = evenly_spaced_times(duration, len(frames))
    stacked = np.stack(frames) if frames else np.empty((0, 0, 0, 3), np.uint8)
    return Clip(frames=stacked, frame_times=list(map(float, frame_times)), audio=audio,
                sample_rate=sr, duration=duration)
