"""Localise the sound in a user's video, or a picture and a recording, with a trained model
(SSL-TIE, or EquiAV zero-shot), and write overlays.

With ``cfg`` (the checkpoint's :class:`~avssl.train_config.TrainConfig`), the method's own
pipeline prepares the inputs exactly as its evaluation does: its data set's audio settings
(sample rate, window length ``data.seconds``, tiling or zero padding), its eval batch transform
and its ``infer`` heatmap — the same code path as ``avssl eval``. Without ``cfg`` the model must
be an SSL-TIE model (``localise(image, spec)``) and SSL-TIE's pipeline prepares its inputs.

:func:`localise_video` decodes frames at chosen times and the whole audio track, builds one
(frame, audio window) pair per time exactly as the test pipeline does (docs/methods.md §1.1), runs
the model in batches (:func:`avssl.methods.base.run_batches`) and maps the heatmaps back onto the full frames.
:func:`localise_image` does the same for one picture and one recording (the VGG-SS / Flickr test
items): the model hears the recording's first ``data.seconds`` s (tiled or zero-padded when
shorter), as the test loaders read a picture + recording record, at ``data.sample_rate`` (None:
the file's own rate).

Audio windowing (video; ``seconds`` = the config's ``data.seconds``, ``audio_seconds`` without a
config; at the rate of the method's data set, None: the track's native rate): the window of a
frame at time ``t`` is the ``seconds`` of audio centred on ``t``, shifted to lie inside the track
when ``t`` is within ``seconds / 2`` of an end. A track shorter than the window is tiled to it as in
training (:func:`avssl.data.audio.tile_to_duration`; EquiAV: zero-padded), so every frame of such
a clip hears the same audio.

Frame geometry (default, the test protocol): each frame goes through the loader's resize, as
``avssl eval`` does (:func:`avssl.data.datasets.resize_crop`, ``data.frame_resize`` of the
checkpoint's config; the authors' PIL bicubic ``Resize(image_size)`` + ``CenterCrop`` by
default), so for a non-square frame the model sees only the centre crop. The raw maps
``crop_maps`` ``(N, h, w)`` cover that crop, whose position in frame pixels is ``crop_box``
``(x0, y0, x1, y1)``. ``maps`` ``(N, Hm, Wm)`` is the full frame at about the model's map
resolution: ``Hm = h + 2 * ceil(margin / cell)`` (the wider of the two margins, in crop cells;
same for ``W``), evenly spread over the frame; each cell's centre is looked up in the crop map
(bilinear, half-pixel centres) and cells whose centre lies outside the crop are NaN (never seen).
For a square frame, or one whose margins are whole cells, ``maps`` holds the raw values exactly
(e.g. 96x64 at image_size 64: ``maps[:, :, 1:5] == crop_maps``, columns 0 and 5 NaN).

Full-frame mode (``full_frame=True``; a deviation from the test protocol, which scores the
centre crop): the frame's short side is resized to the model's image size with the same resize
(:func:`avssl.data.datasets.resize_short`: ``resize_crop``'s geometry without the crop) and the whole frame goes
through the model, so the map ``(N, h, w)`` has about the frame's aspect ratio (stride 16) and
is spread evenly over the whole frame: ``crop_box`` is ``(0, 0, W, H)`` and ``maps == crop_maps``
(a resized side that is not a multiple of 16, e.g. 85 px, gives ``ceil(85 / 16)`` cells whose last
one also covers the network's padding, so the cells near that side are shown up to about one cell
off). Only methods
whose network takes a non-square input (:data:`FULL_FRAME_METHODS`: SSL-TIE's ResNet) allow it;
EquiAV's ViT has position embeddings for one square input size, so full frame with it raises
:class:`FullFrameUnsupportedError` (``avssl localize`` prints it; the web page falls back to the
centre crop and says so).

Long file: one job, a user's media to heatmaps on its frames — the two input kinds (video;
picture + recording), the two frame geometries (centre crop; full frame) and the overlay
writers, which all read the same :class:`LocalisationOutput` geometry.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import nn

from avssl.atomic import atomic_path
from avssl.data import container, decode
from avssl.data.audio import tile_to_duration
from avssl.data.datasets import resize_crop, resize_short

__all__ = ["LocalisationOutput", "localise_video", "localise_image", "audio_windows", "crop_geometry",
           "crop_to_frame", "FULL_FRAME_METHODS", "FullFrameUnsupportedError", "check_full_frame",
           "write_overlay_video", "write_overlay_grid"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)

#: Methods whose network takes a non-square frame (full-frame mode): SSL-TIE's ResNet is fully
#: convolutional; EquiAV's ViT has fixed position embeddings for its square ``img_size``.
FULL_FRAME_METHODS = ("ssltie",)


class FullFrameUnsupportedError(ValueError):
    """Full-frame mode asked of a method whose network takes only its square input."""


def check_full_frame(method: str) -> None:
    """Raise :class:`FullFrameUnsupportedError` (one sentence) unless ``method`` can see a whole non-square frame."""
    if method not in FULL_FRAME_METHODS:
        raise FullFrameUnsupportedError(
            f"full frame is not available for method {method!r}: its ViT has position embeddings for one square "
            f"input size, so it sees only the centre square (drop --full-frame)")


@dataclass
class LocalisationOutput:
    """Result of :func:`localise_video` / :func:`localise_image` (see the module docstring for the geometry).

    times (N,) s; frames (N, H, W, 3) uint8; maps (N, Hm, Wm) float32 on the full frame (NaN
    outside the crop); crop_maps (N, h, w) float32 raw model maps; crop_box (x0, y0, x1, y1)
    frame pixels (the whole frame in full-frame mode); sample_rate of the audio fed to the model;
    source the video (or picture) path; seconds the audio window the model heard; full_frame the mode.
    """

    times: np.ndarray
    frames: np.ndarray
    maps: np.ndarray
    sample_rate: int
    crop_maps: np.ndarray = field(repr=False)
    crop_box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    source: str = ""
    seconds: float = 0.0
    full_frame: bool = False

    def peaks(self) -> list[dict]:
        """Per frame: the peak cell of the raw map, as frame pixels and normalised ``[0, 1]`` coordinates."""
        n, h, w = self.crop_maps.shape
        flat = self.crop_maps.reshape(n, -1).argmax(1)
        r, c = np.divmod(flat, w)
        x0, y0, x1, y1 = self.crop_box
        px = x0 + (c + 0.5) / w * (x1 - x0)
        py = y0 + (r + 0.5) / h * (y1 - y0)
        fh, fw = self.frames.shape[1:3]
        vals = self.crop_maps.reshape(n, -1)[np.arange(n), flat]
        return [{"time": float(t), "x": float(x), "y": float(y), "x_norm": float(x / fw), "y_norm": float(y / fh),
                 "score": float(v)} for t, x, y, v in zip(self.times, px, py, vals, strict=True)]


def crop_geometry(height: int, width: int, size: int, method: str = "pil_bicubic") -> tuple[float, float, float, float]:
    """Frame-pixel box ``(x0, y0, x1, y1)`` that Resize(short side = size) + CenterCrop(size) keeps.

    Same size/offset rule as :func:`avssl.data.datasets.resize_crop` with ``method`` (the
    default is torchvision's, as :class:`avssl.augment.recipes.EvalTransform`).
    """
    if method == "torch_bilinear":
        scale = size / min(height, width)
        nh, nw = max(size, round(height * scale)), max(size, round(width * scale))
        top, left = (nh - size) // 2, (nw - size) // 2
    elif height <= width:
        nh, nw = size, int(size * width / height)
    else:
        nh, nw = int(size * height / width), size
    if method != "torch_bilinear":
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    sx, sy = width / nw, height / nh
    return left * sx, top * sy, (left + size) * sx, (top + size) * sy


def crop_to_frame(crop_maps: np.ndarray, crop_box: Sequence[float], height: int, width: int) -> np.ndarray:
    """Place ``(N, h, w)`` crop maps on the full ``height x width`` frame at map resolution -> ``(N, Hm, Wm)``.

    ``Hm = h + 2 * ceil(widest margin / crop cell)`` (same for ``Wm``); cells whose centre falls
    outside ``crop_box`` are NaN; the others sample the crop map bilinearly (half-pixel centres,
    edges clamped).
    """
    n, h, w = crop_maps.shape
    x0, y0, x1, y1 = (float(v) for v in crop_box)

    def cells(n: int, lo: float, hi: float, extent: int) -> int:  # n + 2 * (widest margin in whole cells)
        stride = (hi - lo) / n
        return n + 2 * max(0, math.ceil(max(lo, extent - hi) / stride - 1e-6))

    hm, wm = cells(h, y0, y1, height), cells(w, x0, x1, width)

    def axis(n_out: int, extent: int, lo: float, hi: float, n_in: int):
        centre = (np.arange(n_out) + 0.5) * extent / n_out
        inside = (centre >= lo) & (centre < hi)
        src = np.clip((centre - lo) / (hi - lo) * n_in - 0.5, 0.0, n_in - 1)
        i0 = np.floor(src).astype(np.intp)
        return i0, np.minimum(i0 + 1, n_in - 1), (src - i0).astype(np.float32), inside

    r0, r1, wr, rin = axis(hm, height, y0, y1, h)
    c0, c1, wc, cin = axis(wm, width, x0, x1, w)
    m = crop_maps.astype(np.float32)
    rows = m[:, r0] * (1 - wr)[None, :, None] + m[:, r1] * wr[None, :, None]  # (N, Hm, w)
    out = rows[:, :, c0] * (1 - wc) + rows[:, :, c1] * wc  # (N, Hm, Wm)
    out[:, ~rin] = np.nan
    out[:, :, ~cin] = np.nan
    return out


def _frame_times(duration: float, times: Sequence[float] | None, num_frames: int | None,
                 fps: float | None) -> list[float]:
    if times is not None:
        return [float(t) for t in times]
    if fps is not None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        return decode.evenly_spaced_times(duration, max(1, int(round(duration * fps))))
    n = 8 if num_frames is None else int(num_frames)
    if n < 1:
        raise ValueError(f"num_frames must be >= 1, got {n}")
    return decode.evenly_spaced_times(duration, n)


def audio_windows(wave: torch.Tensor, sample_rate: int, times: torch.Tensor, seconds: float) -> torch.Tensor:
    """``(L,)`` track -> ``(N, int(seconds * sr))`` windows centred on ``times`` (N,) s, kept inside the track.

    A track shorter than the window is tiled to it (identical rows)."""
    size = int(seconds * sample_rate)
    n = wave.shape[-1]
    if n < size:
        return tile_to_duration(wave, sample_rate, seconds).expand(times.shape[0], size)
    start = torch.round(times.double() * sample_rate).long() - size // 2
    start = start.clamp(0, n - size)
    return wave[start[:, None] + torch.arange(size, device=wave.device)]


def _video_duration(p: str) -> float:
    """Duration of the video stream (not the container's, which may be the longer audio's)."""
    with container.open_media(p) as (c, _):
        vs = container.video_stream(c)
        d = container.stream_duration(vs, c)[0]
    if d is None or not np.isfinite(d) or d <= 0:
        raise decode.CorruptMediaError(p, "no video duration in the headers; pass explicit times")
    return d


def zero_padded_windows(wave: torch.Tensor, sample_rate: int, times: torch.Tensor, seconds: float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`audio_windows`, but a track shorter than the window is zero-padded (EquiAV)
    instead of tiled: ``((N, size) windows, (N,) true lengths)``."""
    size = int(seconds * sample_rate)
    n = wave.shape[-1]
    if n < size:
        padded = torch.nn.functional.pad(wave, (0, size - n)).expand(times.shape[0], size)
        return padded, torch.full((times.shape[0],), n, dtype=torch.long)
    return audio_windows(wave, sample_rate, times, seconds), torch.full((times.shape[0],), size, dtype=torch.long)


def _squares(frames: np.ndarray, size: int, method: str) -> torch.Tensor:
    """(N, H, W, 3) uint8 frames -> (N, 3, size, size) uint8 through the loader's resize."""
    if len(frames) == 0:
        return torch.empty((0, 3, size, size), dtype=torch.uint8)
    return torch.stack([resize_crop(f, size, method) for f in frames])


def _whole_frames(frames: np.ndarray, size: int, method: str) -> torch.Tensor:
    """(N, H, W, 3) uint8 frames of one size -> (N, 3, h, w) uint8, short side ``size`` (full-frame mode)."""
    if len(frames) == 0:
        return torch.empty((0, 3, size, size), dtype=torch.uint8)
    return torch.stack([resize_short(f, size, method) for f in frames])


def _no_crop(images: torch.Tensor) -> torch.Tensor:
    """The eval transform's frame step without its resize + crop (the frames already have the
    model's short side): float [0, 1] and ImageNet normalisation."""
    from avssl.augment.image import normalize, to_float

    return normalize(to_float(images))


def _pipeline_maps(model: nn.Module, cfg, frames: torch.Tensor, wave: torch.Tensor, sr: int, t: np.ndarray,
                   device: torch.device, batch_size: int, seconds: float, pad: str,
                   infer_fn=None, full_frame: bool = False) -> torch.Tensor | None:
    """(N, h, w) CPU heatmaps through the method's eval transform and ``infer`` (or ``infer_fn``;
    frames (N, 3, S, S) uint8, the loader's squares; with ``full_frame`` (N, 3, h, w) whole frames,
    whose transform then only normalises), in batches of ``batch_size`` frames."""
    from avssl.methods.base import run_batches
    from avssl.registry import pipeline_for

    pipe = pipeline_for(cfg.method)
    infer_fn = infer_fn or pipe.infer
    if infer_fn is None:
        raise TypeError(f"method {cfg.method!r} gives no localisation maps")
    transform = pipe.batch_transform(cfg, device)
    if full_frame:
        check_full_frame(cfg.method)
        if not hasattr(transform, "eval_image"):
            raise FullFrameUnsupportedError(f"full frame is not available for method {cfg.method!r}: its "
                                            f"transform has no separate frame step")
        transform.eval_image = _no_crop  # this call's own transform: the frames keep their shape

    def batches():
        for i in range(0, len(t), batch_size):
            tt = torch.from_numpy(t[i:i + batch_size]).to(device)
            if pad == "tile":
                win = audio_windows(wave, sr, tt, seconds)
                n = torch.full((win.shape[0],), win.shape[-1], dtype=torch.long)
            else:
                win, n = zero_padded_windows(wave, sr, tt, seconds)
            k = win.shape[0]
            yield {"id": [str(x) for x in range(i, i + k)], "image": frames[i:i + k], "wave": win.contiguous(),
                   "num_samples": n, "label": torch.full((k,), -1), "sample_rate": sr}

    rows = run_batches(model, batches(), lambda b: {"heatmap": infer_fn(model, transform(b, None, train=False))
                                                    ["heatmap"]})
    return rows.get("heatmap")


def _ssltie_config(model: nn.Module, image_size: int | None, sample_rate: int | None, seconds: float):
    """The run config :func:`localise_video` uses for a model given without one: SSL-TIE's
    evaluation front-end at the model's ``config.image_size`` (or ``image_size``)."""
    from avssl.methods.ssltie import SSLTIEConfig
    from avssl.train_config import DataConfig, TrainConfig

    if not hasattr(model, "localise"):
        raise TypeError(f"{type(model).__name__} has no localise(image, spec); pass cfg (the checkpoint's config)")
    size = int(image_size or model.config.image_size)
    return TrainConfig(method="ssltie", ssltie=SSLTIEConfig(image_size=size, heatmap_size=max(1, size // 16)),
                       data=DataConfig(sample_rate=sample_rate, seconds=seconds, frame_resize="pil_bicubic"))


def _localise(model: nn.Module, inputs) -> dict[str, torch.Tensor]:
    return {"heatmap": model.localise(inputs["image"], inputs["spec"])}


def _setup(model: nn.Module, cfg, image_size: int | None, sample_rate: int | None, audio_seconds: float,
           batch_size: int, full_frame: bool):
    """``(cfg, infer_fn, eval data set)``: the checkpoint's config (or SSL-TIE's front-end for a
    bare model) and the probe data set that holds the evaluation's image size and audio settings."""
    from avssl.registry import pipeline_for

    infer_fn = None  # the pipeline's
    if cfg is None:
        cfg, infer_fn = _ssltie_config(model, image_size, sample_rate, audio_seconds), _localise
    if full_frame:
        check_full_frame(cfg.method)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return cfg, infer_fn, pipeline_for(cfg.method).dataset([], cfg, train=False)


def _localise_frames(model: nn.Module, cfg, infer_fn, probe_ds, frames: np.ndarray, audio: np.ndarray, sr: int,
                     t: np.ndarray, device: str | torch.device, batch_size: int, full_frame: bool,
                     source: str) -> LocalisationOutput:
    """The maps of ``frames`` (N, H, W, 3) uint8 with the windows of ``audio`` (mono, rate ``sr``) at ``t`` (N,) s."""
    size, seconds = probe_ds.image_size, probe_ds.seconds
    pad, resize = getattr(probe_ds, "audio_pad", "tile"), getattr(probe_ds, "frame_resize", "pil_bicubic")
    height, width = frames.shape[1:3]
    if audio.shape[-1] < int(seconds * sr):
        logger.info("%s: audio is %.2f s, shorter than %.2f s: %s as in training (same window for every frame)",
                    source, audio.shape[-1] / sr, seconds, "tiled" if pad == "tile" else "zero-padded")
    device = torch.device(device)
    wave = torch.from_numpy(np.ascontiguousarray(audio, np.float32)).to(device)
    model = model.to(device).eval()
    images = _whole_frames(frames, size, resize) if full_frame else _squares(frames, size, resize)
    maps = _pipeline_maps(model, cfg, images, wave, sr, t, device, batch_size, seconds, pad, infer_fn, full_frame)
    if maps is not None:
        raw = maps.numpy().astype(np.float32, copy=False)
    else:
        raw = np.empty((0, *(max(1, d // 16) for d in images.shape[-2:])), np.float32)
    if full_frame:  # the map covers the whole frame
        box, on_frame = (0.0, 0.0, float(width), float(height)), raw.copy()
    else:
        box = crop_geometry(height, width, size, resize)
        on_frame = crop_to_frame(raw, box, height, width)
    logger.info("%s: localised %d frames (%dx%d, %s, audio %d Hz, %.2f s windows)", source, len(t), width, height,
                "full frame" if full_frame else f"crop box {tuple(round(v, 1) for v in box)}", sr, seconds)
    return LocalisationOutput(times=t, frames=frames, maps=on_frame, sample_rate=int(sr), crop_maps=raw,
                              crop_box=box, source=source, seconds=float(seconds), full_frame=bool(full_frame))


def localise_video(model: nn.Module, path: PathLike, times: Sequence[float] | None = None,
                   num_frames: int | None = 8, fps: float | None = None, device: str | torch.device = "cpu",
                   batch_size: int = 8, image_size: int | None = None, sample_rate: int | None = None,
                   audio_seconds: float = 10.0, cfg=None, full_frame: bool = False) -> LocalisationOutput:
    """Localise the sound in ``path`` at ``times`` (s), or ``fps`` frames per second, or ``num_frames``
    evenly spaced frames (default 8). See the module docstring for the windowing and geometry.

    With ``cfg`` (a TrainConfig, e.g. the checkpoint's), the method's pipeline prepares the
    inputs and gives the maps, and ``image_size``/``sample_rate``/``audio_seconds`` come from its
    evaluation data set (``data.sample_rate``, ``data.seconds``). Without it, SSL-TIE's pipeline
    prepares the inputs and ``model`` needs ``localise(image (B,3,H,W), spec (B,1,F,T)) -> (B,h,w)``
    (an SSL-TIE model); ``image_size`` defaults to ``model.config.image_size``; ``sample_rate``
    None keeps the track's native rate (as SSL-TIE does). ``full_frame``: the whole frame, short
    side to the image size, instead of the centre crop (FullFrameUnsupportedError for a method
    not in :data:`FULL_FRAME_METHODS`). Raises NoAudioStreamError for a video without sound.
    """
    cfg, infer_fn, probe_ds = _setup(model, cfg, image_size, sample_rate, audio_seconds, batch_size, full_frame)
    p = os.fspath(path)
    info = decode.probe(p)
    if not info.has_video:
        raise decode.NoVideoStreamError(p, "no video stream: nothing to localise in")
    if not info.has_audio:
        raise decode.NoAudioStreamError(p, "no audio stream: sound localisation needs the video's audio track")
    duration = _video_duration(p) if times is None else None
    frame_times = _frame_times(duration, times, num_frames, fps)
    clip = decode.read_clip(p, frame_times=frame_times, sample_rate=probe_ds.video_rate, require_audio=True)
    t = np.asarray(clip.frame_times, np.float64)
    return _localise_frames(model, cfg, infer_fn, probe_ds, clip.frames, clip.audio, clip.sample_rate, t, device,
                            batch_size, full_frame, p)


def localise_image(model: nn.Module, image: PathLike, audio: PathLike, device: str | torch.device = "cpu",
                   image_size: int | None = None, sample_rate: int | None = None, audio_seconds: float = 10.0,
                   cfg=None, full_frame: bool = False) -> LocalisationOutput:
    """Localise the sound of the recording ``audio`` in the picture ``image`` (a VGG-SS / Flickr test item).

    The picture is any image PIL reads (:func:`avssl.data.decode.read_image`), the recording any
    audio file soundfile or PyAV reads (:func:`avssl.data.decode.read_wav`, the loader's reader
    for a picture + recording record). The model hears the recording's first ``data.seconds`` s
    (tiled, or zero-padded for EquiAV, when shorter), at ``data.sample_rate`` (None: the file's
    own rate), as the test loaders read such a record; the output has one frame at time 0.
    ``cfg``, ``image_size``, ``sample_rate``, ``audio_seconds`` and ``full_frame`` as in
    :func:`localise_video`. Errors are MediaError naming the file.
    """
    cfg, infer_fn, probe_ds = _setup(model, cfg, image_size, sample_rate, audio_seconds, 1, full_frame)
    frame = decode.read_image(image)
    wave, sr = decode.read_wav(audio, probe_ds.sample_rate)
    return _localise_frames(model, cfg, infer_fn, probe_ds, frame[None], wave, sr, np.zeros(1), device, 1,
                            full_frame, os.fspath(image))


def write_overlay_grid(output: LocalisationOutput, path_png: PathLike, **kwargs) -> Path:
    """PNG contact sheet of the localised frames with their overlays (:func:`avssl.viz.grid_png`)."""
    from avssl.viz import grid_png

    return grid_png(output.frames, output.maps, output.times, path_png, **kwargs)


def _segment_index(times: np.ndarray, t: float) -> int:
    """Index of the localised time whose display interval (midpoints between times) contains ``t``."""
    mids = (times[1:] + times[:-1]) / 2.0
    return int(np.searchsorted(mids, t, side="right"))


def write_overlay_video(output: LocalisationOutput, path_out_mp4: PathLike, source_video: PathLike | None = None,
                        alpha: float = 0.5, cmap: str = "jet", crf: int = 23) -> Path:
    """MP4 (H.264 yuv420p + AAC) of every decoded frame of ``source_video`` with the overlay of the
    nearest localised time, at the source's frame timing, with the source's audio re-encoded.

    Each localised map is shown from the midpoint before its time to the midpoint after it.
    Odd frame sizes gain a copy of their last row/column (yuv420p needs even sides); any frame
    rate works, variable ones included: frames keep their source times (on a 90 kHz clock, made
    strictly increasing) and the nominal rate is the source's, limited to a denominator of 1001. The audio track is
    decoded and re-encoded as AAC (any source codec works); rates AAC lacks are resampled to 48 kHz.
    """
    src = container.check_path(source_video or output.source)
    dst = Path(path_out_mp4)
    dst.parent.mkdir(parents=True, exist_ok=True)
    times = np.asarray(output.times, np.float64)
    if len(times) == 0:
        raise ValueError("write_overlay_video: the output holds no localised frames")
    order = np.argsort(times)
    times, maps = times[order], output.maps[order]
    audio, sr = decode.read_audio(src, mono=False)
    if audio.shape[0] > 2:
        audio = audio.mean(axis=0, keepdims=True)
    with atomic_path(dst) as tmp:
        w, h, out_sr = _encode_overlay(src, tmp, times, maps, audio, sr, alpha, cmap, crf)
    logger.info("wrote overlay video %s (%dx%d, %d maps, audio %d Hz)", dst, w, h, len(times), out_sr)
    return dst


def _nominal_rate(rate) -> Fraction:
    """A frame rate H.264/MP4 accept: the source's (VFR averages such as 496000/19061 included)
    limited to a denominator of 1001 and to 1-240 fps; 25 when the source states none."""
    try:
        r = Fraction(rate).limit_denominator(1001) if rate else Fraction(25)
    except (TypeError, ValueError, ZeroDivisionError):
        r = Fraction(25)
    return min(max(r, Fraction(1)), Fraction(240)) if r > 0 else Fraction(25)


def _encode_overlay(src: str, tmp: Path, times: np.ndarray, maps: np.ndarray, audio: np.ndarray, sr: int,
                    alpha: float, cmap: str, crf: int) -> tuple[int, int, int]:
    """Write the overlay MP4 to ``tmp``; returns (width, height, audio rate)."""
    import av

    from avssl.viz import blend, heat_layer

    with container.open_media(src) as (cin, p), av.open(str(tmp), mode="w", format="mp4") as cout:
        vin = container.video_stream(cin)
        if vin is None:
            raise decode.NoVideoStreamError(p, "no video stream")
        rate = _nominal_rate(vin.average_rate or vin.guessed_rate)
        sw, sh = vin.codec_context.width, vin.codec_context.height
        w, h = sw + sw % 2, sh + sh % 2
        vout = cout.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": "veryfast"})
        vout.width, vout.height, vout.pix_fmt = w, h, "yuv420p"
        vout.time_base = vout.codec_context.time_base = Fraction(1, 90000)
        out_sr = sr if sr in AAC_RATES else 48000
        aout = cout.add_stream("aac", rate=out_sr, layout="stereo" if audio.shape[0] == 2 else "mono")
        start = container.stream_start(vin)
        cached = (-1, None)
        prev_pts = -1
        for frame in cin.decode(vin):
            ft = (frame.time if frame.time is not None else start) - start
            k = _segment_index(times, ft)
            img = frame.to_ndarray(format="rgb24", width=sw, height=sh)  # a size change mid-stream is rescaled
            if cached[0] != k:
                cached = (k, heat_layer(maps[k], sh, sw, alpha, cmap))
            img = blend(img, *cached[1])
            if (h, w) != (sh, sw):
                img = np.pad(img, ((0, h - sh), (0, w - sw), (0, 0)), mode="edge")
            out = av.VideoFrame.from_ndarray(img, format="rgb24")
            pts = max(int(round(ft * 90000)), prev_pts + 1)
            out.pts, out.time_base, prev_pts = pts, Fraction(1, 90000), pts
            cout.mux(vout.encode(out))
        cout.mux(vout.encode(None))
        aframe = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio, np.float32), format="fltp",
                                            layout="stereo" if audio.shape[0] == 2 else "mono")
        aframe.sample_rate, aframe.pts, aframe.time_base = sr, 0, Fraction(1, sr)
        if out_sr != sr:
            resampler = av.AudioResampler(format="fltp", layout=aframe.layout.name, rate=out_sr)
            aframes = [*resampler.resample(aframe), *resampler.resample(None)]
        else:
            aframes = [aframe]
        for af in aframes:
            cout.mux(aout.encode(af))
        cout.mux(aout.encode(None))
    return w, h, out_sr
