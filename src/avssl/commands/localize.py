"""Localise the sound in a video, or in a picture with a recording, with a trained checkpoint
(SSL-TIE, or EquiAV zero-shot) and write overlays.

For each chosen frame of a VIDEO (--frames N evenly spaced, default 8, or --fps F per second) the
model hears the checkpoint's data.seconds of audio centred on the frame (shifted inside the track
near its ends; a shorter track is tiled, as in training; EquiAV: zero-padded), at the checkpoint's
data.sample_rate (--sample-rate HZ resamples; none: the file's own rate, EquiAV 16 kHz for a video).
With --image PIC --audio REC (a VGG-SS / Flickr test item: a still picture and a recording) the
model hears the recording's first data.seconds, as the test loaders read such an item; the
outputs are the same, without the overlay video.

Frame geometry: by default the centre crop of the frame (Resize + CenterCrop through the loader's
resize, as `avssl eval`: the test protocol); the sides of a wide frame get no map. --full-frame
resizes the frame's short side to the model's image size without cropping and colours the whole
frame (a deviation from the test protocol, which scores the centre crop; SSL-TIE only: EquiAV's
ViT takes only its square input and is refused). A warning says when the audio's rate is not one
the model was trained on (recorded in the checkpoint). Every output is written atomically.
Outputs in --out (default: the current folder), STEM being the video's or the picture's name:

  <stem>_grid.png     contact sheet of the frames with their heatmaps
  <stem>_overlay.mp4  every source frame with the nearest heatmap, original audio (videos only;
                      --no-video: skipped)
  <stem>_maps.npz     times (N,), maps (N, Hm, Wm) on the full frame (NaN outside the crop),
                      crop_maps (N, h, w) raw model maps, crop_box (x0, y0, x1, y1) in pixels
                      (the whole frame with --full-frame)

A JSON summary (paths, crop box, audio rate and length, peak location per frame in pixels and
normalised) is printed.

Examples:
    avssl localize clip.mp4 --checkpoint runs/ssltie/last.pt --frames 8 --out out/
    avssl localize wide.mp4 --checkpoint runs/ssltie/last.pt --full-frame --sample-rate 16000
    avssl localize --image item.jpg --audio item.wav --checkpoint runs/ssltie/last.pt --out out/
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

from avssl.commands import add_sample_rate_option

HELP = ("localise the sound in a video (or a picture with a recording) with an SSL-TIE or EquiAV checkpoint: "
        "heatmap grid PNG, overlay MP4, maps npz")

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="VIDEO", nargs="?", default=None,
                        help="any video file FFmpeg reads, with an audio track (or give --image and --audio)")
    parser.add_argument("--image", default=None, metavar="PIC",
                        help="a still picture (PNG, JPEG, ... anything PIL reads) instead of VIDEO; needs --audio")
    parser.add_argument("--audio", default=None, metavar="REC",
                        help="the recording for --image (wav, flac, mp3, ... anything soundfile or PyAV reads): "
                             "the model hears its first data.seconds (the checkpoint's audio length)")
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="avssl checkpoint (ssltie or equiav)")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--frames", type=int, default=None, help="number of evenly spaced frames (default 8; videos)")
    when.add_argument("--fps", type=float, default=None, help="frames per second to localise instead of --frames")
    parser.add_argument("--out", default=".", metavar="DIR", help="output folder (default: current folder)")
    parser.add_argument("--video", dest="write_video", action=argparse.BooleanOptionalAction, default=True,
                        help="write the overlay MP4 of a VIDEO (default: yes)")
    parser.add_argument("--full-frame", action=argparse.BooleanOptionalAction, default=False,
                        help="the whole frame, short side to the model's image size, instead of the centre crop "
                             "(default: no, the test protocol's centre crop; a deviation from it, for wide frames; "
                             "SSL-TIE only)")
    add_sample_rate_option(parser, "the audio")
    parser.add_argument("--device", default="cpu",
                        help="torch device: cpu (default), cuda, cuda:1, ... or auto (CUDA when available)")
    parser.add_argument("--batch-size", type=int, default=8, help="frames per forward pass (default 8)")


def _input_error(args: argparse.Namespace) -> str | None:
    """The one-line complaint about the input arguments, or None when they make sense."""
    if args.image is not None and args.audio is None:
        return "--image needs --audio (the recording to localise in the picture)"
    if args.audio is not None and args.image is None:
        return "--audio needs --image (for a video, its own audio track is used)"
    if args.input is not None and args.image is not None:
        return "give a VIDEO or --image/--audio, not both"
    if args.input is None and args.image is None:
        return "give a VIDEO or --image PIC --audio REC"
    if args.image is not None and (args.frames is not None or args.fps is not None):
        return "--frames/--fps choose frames of a video; a picture is one frame"
    return None


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from avssl.atomic import atomic_path, remove_stale_tmp_of
    from avssl.checkpoint import CheckpointError
    from avssl.config import ConfigError
    from avssl.data.decode import MediaError
    from avssl.engine.train import resolve_device
    from avssl.infer import localise_image, localise_video, write_overlay_grid, write_overlay_video
    from avssl.registry import load_method
    from avssl.train_config import audio_rate_warning, config_from_checkpoint, trained_audio

    problem = _input_error(args)
    if problem:
        print(f"avssl localize: error: {problem}", file=sys.stderr)
        return 2
    picture = args.image is not None
    source = Path(args.image if picture else args.input)
    out = Path(args.out)
    try:
        # the device first, as train and eval check it (CUDA asked for where there is none: a
        # ConfigError saying so); the checkpoint is read on the CPU, the model moved after
        device = resolve_device(args.device)
        model, ckpt = load_method(args.checkpoint, map_location="cpu")
        cfg = config_from_checkpoint(ckpt, str(args.checkpoint))
        method = cfg.method
        model_audio = trained_audio(ckpt, cfg)
        if args.sample_rate is not None:
            cfg = replace(cfg, data=replace(cfg.data, sample_rate=args.sample_rate))
        if picture:
            result = localise_image(model, source, args.audio, device=device, cfg=cfg, full_frame=args.full_frame)
        else:
            result = localise_video(model, source, num_frames=args.frames if args.frames is not None else 8,
                                    fps=args.fps, device=device, batch_size=args.batch_size, cfg=cfg,
                                    full_frame=args.full_frame)
        warning = audio_rate_warning(model_audio, {result.sample_rate: len(result.times)})
        if warning:
            log.warning("%s: %s", source, warning)
        out.mkdir(parents=True, exist_ok=True)
        stem = source.stem
        remove_stale_tmp_of(*(out / f"{stem}_{k}" for k in ("grid.png", "maps.npz", "overlay.mp4")))
        paths = {"grid": write_overlay_grid(result, out / f"{stem}_grid.png")}
        maps_path = out / f"{stem}_maps.npz"
        with atomic_path(maps_path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, times=result.times, maps=result.maps, crop_maps=result.crop_maps,
                                crop_box=np.asarray(result.crop_box, np.float64))
        paths["maps"] = maps_path
        write = args.write_video and not picture
        paths["video"] = write_overlay_video(result, out / f"{stem}_overlay.mp4", source) if write else None
    except (MediaError, CheckpointError, ConfigError, TypeError, ValueError) as e:
        print(f"avssl localize: error: {e}", file=sys.stderr)
        return 2
    summary = {
        "video": None if picture else str(source), "image": str(source) if picture else None,
        "audio": str(args.audio) if picture else None, "checkpoint": str(args.checkpoint), "method": method,
        "frames": int(len(result.times)), "frame_size": list(result.frames.shape[2:0:-1]),
        "sample_rate": result.sample_rate, "audio_seconds": result.seconds, "model_audio": model_audio,
        "full_frame": result.full_frame, "crop_box": [round(v, 2) for v in result.crop_box],
        "outputs": {k: (str(v) if v is not None else None) for k, v in paths.items()},
        "peaks": result.peaks(),
    }
    print(json.dumps(summary, indent=2))
    return 0
