"""``avssl app``: a local web page that shows where the sound is in a video (Gradio, optional).

The page takes an uploaded video (any format the decoder reads) or one of a few bundled examples
(clips of the synthetic generator, made at start-up), localises the sound at evenly spaced
frames with the checkpoint's method (:func:`avssl.infer.localise_video`: SSL-TIE maps, or
EquiAV's zero-shot maps) and shows the overlay video with the original audio, a time slider
with the heatmap of the frame under it, an opacity control and the peak location.

Full frame by default (``Localiser(full_frame=True)``): the frame's short side is resized to the
model's image size and the whole frame is mapped, so the sides of a wide video are coloured too
(a deviation from the test protocol, which sees only the centre square; ``avssl eval`` and
``avssl localize`` keep the protocol by default). EquiAV's ViT takes only its square input: for
it the page maps the centre square and says so in the status text.

Audio rate (users cannot pass options here): when the checkpoint records exactly one rate the
model was trained on (:func:`avssl.train_config.trained_audio`) and the upload's audio would
reach the model at another, it is resampled to the model's rate; when the model heard several
rates and the upload's is none of them, it is used as it is. Either way the status text says so.

The work is bounded (:class:`Limits`): files above ``max_mb`` or longer than ``max_seconds`` are
refused with one sentence, requests queue one at a time, and every upload and output lives in
one temporary folder that is removed when the server stops. A bad file (no audio, corrupt, too
long) gives one sentence on the page; the server keeps running.

:class:`Localiser` holds the logic without Gradio (tested directly); :func:`build_page` wires it
to a ``gradio.Blocks`` page. Gradio is imported only there (``pip install avssl[app]``).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["Limits", "Localiser", "AppInputError", "AppResult", "build_page", "make_examples"]


class AppInputError(ValueError):
    """A file the page cannot use; the message is one sentence for the user."""


@dataclass(frozen=True)
class Limits:
    """What one request may cost: file size (MB), duration (s), localised frames."""

    max_mb: float = 200.0
    max_seconds: float = 300.0
    frames: int = 16

    def __post_init__(self) -> None:
        if self.max_mb <= 0 or self.max_seconds <= 0 or self.frames < 1:
            raise ValueError(f"limits must be positive, got {self}")


@dataclass
class AppResult:
    """One localised video: the overlay mp4, the frames and maps, their times and peaks."""

    overlay: Path
    times: np.ndarray
    frames: np.ndarray
    maps: np.ndarray
    peaks: list[dict]
    method: str
    duration: float
    sample_rate: int = 0
    full_frame: bool = False
    notes: tuple[str, ...] = ()  # sentences for the status text (resampling, rate, geometry)

    def index_at(self, t: float) -> int:
        """The localised frame nearest to time ``t`` (s)."""
        return int(np.abs(self.times - float(t)).argmin())

    def view(self, t: float, opacity: float) -> tuple[np.ndarray, str]:
        """The frame nearest ``t`` with its heatmap blended at ``opacity``, and the peak in words
        (followed by the :attr:`notes`)."""
        from avssl.viz import overlay

        i = self.index_at(t)
        image = overlay(self.frames[i], self.maps[i], alpha=float(np.clip(opacity, 0.0, 1.0)))
        p = self.peaks[i]
        text = (f"frame at {self.times[i]:.2f} s: the sound peaks at x = {p['x']:.0f}, y = {p['y']:.0f} px "
                f"({p['x_norm']:.2f}, {p['y_norm']:.2f} of the frame)")
        return image, " ".join((text, *self.notes))


class Localiser:
    """The page's work, without Gradio: check a file against the limits, localise it, write the overlay.

    ``full_frame`` (default True, a deviation from the test protocol): map the whole frame where
    the method can (:data:`avssl.infer.FULL_FRAME_METHODS`), else the centre square (said in the
    result's notes).
    """

    def __init__(self, checkpoint: str | os.PathLike, limits: Limits = Limits(), device: str = "cpu",
                 workdir: str | os.PathLike | None = None, full_frame: bool = True) -> None:
        from avssl.registry import load_method
        from avssl.train_config import config_from_checkpoint, trained_audio

        self.model, ckpt = load_method(checkpoint, map_location=device)
        self.cfg = config_from_checkpoint(ckpt, str(checkpoint))
        self.model_audio = trained_audio(ckpt, self.cfg)
        self.method = self.cfg.method
        self.limits, self.device, self.full_frame = limits, device, bool(full_frame)
        self._own = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="avssl_app_")) if workdir is None else Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one model, one request at a time (the page's queue too)
        self._count = 0

    def check(self, path: str | os.PathLike | None):
        """The file's :class:`~avssl.data.decode.MediaInfo`, or AppInputError with one sentence."""
        from avssl.data import decode

        if not path:
            raise AppInputError("Choose a video first (upload one or pick an example).")
        p = Path(path)
        if not p.is_file():
            raise AppInputError(f"{p.name}: the file is not there any more; upload it again.")
        mb = p.stat().st_size / 2**20
        if mb > self.limits.max_mb:
            raise AppInputError(f"{p.name} is {mb:.0f} MB; this page takes files up to {self.limits.max_mb:.0f} MB.")
        try:
            info = decode.probe(p)
        except decode.MediaError as e:
            raise AppInputError(f"{p.name} is not a video this page can read ({e.reason}).") from None
        if not info.has_video:
            raise AppInputError(f"{p.name} has no video stream: there is nothing to look at.")
        if not info.has_audio:
            raise AppInputError(f"{p.name} has no audio track: sound localisation needs the video's sound.")
        if not np.isfinite(info.duration):
            raise AppInputError(f"{p.name} states no duration; re-encode it (e.g. to mp4) and try again.")
        if info.duration > self.limits.max_seconds:
            raise AppInputError(f"{p.name} lasts {info.duration:.0f} s; this page takes videos up to "
                                f"{self.limits.max_seconds:.0f} s.")
        return info

    def _request(self, info) -> tuple[object, bool, list[str]]:
        """``(config, full frame, notes)`` for one upload: the model's one trained rate when the
        upload would reach it at another, the centre square for a method without full frame."""
        from dataclasses import replace

        from avssl.infer import FULL_FRAME_METHODS
        from avssl.registry import pipeline_for

        cfg, notes = self.cfg, []
        full = self.full_frame and self.method in FULL_FRAME_METHODS
        if self.full_frame and not full:
            notes.append(f"The map covers the centre square of the frame only: {self.method}'s network takes "
                         f"only a square frame.")
            log.info("%s: full frame is not available for %s: mapping the centre square", info.path, self.method)
        rates = (self.model_audio or {}).get("sample_rates") or []
        fed = pipeline_for(cfg.method).dataset([], cfg, train=False).video_rate or info.sample_rate
        if rates and fed is not None and int(fed) not in rates:
            if len(rates) == 1:
                cfg = replace(cfg, data=replace(cfg.data, sample_rate=int(rates[0])))
                notes.append(f"The upload's audio is at {fed} Hz; it was resampled to {rates[0]} Hz, the rate "
                             f"the model was trained on.")
            else:
                notes.append(f"The upload's audio is at {fed} Hz, not a rate the model was trained on "
                             f"({'/'.join(str(r) for r in rates)} Hz): its spectrogram has another frequency "
                             f"and time scale than in training, so the map may be less reliable.")
            log.warning("%s: %s", info.path, notes[-1])
        return cfg, full, notes

    def run(self, path: str | os.PathLike | None, progress=None) -> AppResult:
        """Localise ``path`` (after :meth:`check`); ``progress(fraction, text)`` is told each stage."""
        from avssl.data import decode
        from avssl.infer import localise_video, write_overlay_video

        tell = progress or (lambda *_: None)
        info = self.check(path)
        cfg, full, notes = self._request(info)
        tell(0.1, "decoding and localising")
        with self._lock:
            self._count += 1
            out = self.workdir / f"result{self._count}"
            out.mkdir(parents=True, exist_ok=True)
            try:
                result = localise_video(self.model, path, num_frames=self.limits.frames, device=self.device,
                                        cfg=cfg, full_frame=full)
                tell(0.6, "writing the overlay video")
                video = write_overlay_video(result, out / "overlay.mp4", path)
            except decode.MediaError as e:
                shutil.rmtree(out, ignore_errors=True)
                raise AppInputError(f"{Path(path).name} could not be decoded: {e.reason}.") from None
        self._prune(keep=out)
        tell(1.0, "done")
        return AppResult(overlay=video, times=result.times, frames=result.frames, maps=result.maps,
                         peaks=result.peaks(), method=self.method, duration=float(info.duration),
                         sample_rate=result.sample_rate, full_frame=result.full_frame, notes=tuple(notes))

    def _prune(self, keep: Path) -> None:
        """Remove earlier results (the page shows one at a time)."""
        for d in self.workdir.glob("result*"):
            if d != keep and d.is_dir():
                shutil.rmtree(d, ignore_errors=True)

    def close(self) -> None:
        if self._own:
            shutil.rmtree(self.workdir, ignore_errors=True)


def make_examples(folder: str | os.PathLike, n: int = 2, size: int = 128) -> list[Path]:
    """``n`` short clips of the synthetic generator (one sounding object) for the page's examples."""
    from avssl.data.manifest import read_manifest
    from avssl.data.synthetic import SynthConfig, generate

    folder = Path(folder)
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        generate(folder, clips=n, seed=0, config=SynthConfig(size=size, duration=3.0, workers=1))
    return [Path(r.video) for r in read_manifest(manifest)][:n]


def _for_display(image: np.ndarray, side: int = 360) -> np.ndarray:
    """A small frame enlarged by an integer factor (nearest pixel) so that the page shows it at ~``side`` px."""
    k = max(1, side // max(1, min(image.shape[:2])))
    return np.repeat(np.repeat(image, k, axis=0), k, axis=1) if k > 1 else image


def build_page(localiser: Localiser, examples=()):
    """The Gradio page (``gradio.Blocks``) over ``localiser``; raises ImportError without Gradio."""
    import gradio as gr

    from avssl.infer import FULL_FRAME_METHODS

    title = {"ssltie": "SSL-TIE sound localisation", "equiav": "EquiAV zero-shot sound localisation"}
    with gr.Blocks(title="avssl: where is the sound?", delete_cache=(600, 1800)) as page:
        state = gr.State(None)
        gr.Markdown(f"## Where is the sound?\n{title.get(localiser.method, localiser.method)} on your own video. "
                    f"Files up to {localiser.limits.max_mb:.0f} MB and {localiser.limits.max_seconds:.0f} s; "
                    f"{localiser.limits.frames} frames are localised"
                    + (" over the whole frame (the test protocol sees only the centre square)."
                       if localiser.full_frame and localiser.method in FULL_FRAME_METHODS else "."))
        with gr.Row():
            with gr.Column():
                upload = gr.Video(label="video", sources=["upload"], elem_id="upload")
                run = gr.Button("Localise", variant="primary", elem_id="run")
                if examples:
                    gr.Examples([[str(e)] for e in examples], inputs=[upload], label="examples")
            with gr.Column():
                result_video = gr.Video(label="overlay (original audio)", interactive=False, elem_id="overlay")
        with gr.Row():
            time = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="time (s)", elem_id="time")
            opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="heatmap opacity", elem_id="opacity")
        heat = gr.Image(label="heatmap of the frame under the slider", type="numpy", interactive=False, height=360,
                        elem_id="heatmap")
        status = gr.Markdown("", elem_id="status")

        def localise(path, progress=gr.Progress()):  # noqa: B008 - how Gradio injects its progress bar
            try:
                res = localiser.run(path, progress=lambda f, d: progress(f, desc=d))
            except AppInputError as e:
                raise gr.Error(str(e), print_exception=False) from None
            image, text = res.view(res.times[0], 0.5)
            return (res, str(res.overlay), gr.Slider(0.0, round(res.duration, 2), value=round(float(res.times[0]), 2)),
                    _for_display(image), text)

        def redraw(res, t, alpha):
            if res is None:
                return None, ""
            image, text = res.view(t, alpha)
            return _for_display(image), text

        run.click(localise, inputs=[upload], outputs=[state, result_video, time, heat, status],
                  concurrency_limit=1)
        time.change(redraw, inputs=[state, time, opacity], outputs=[heat, status])
        opacity.change(redraw, inputs=[state, time, opacity], outputs=[heat, status])
    page.queue(default_concurrency_limit=1, max_size=16)
    return page
