"""Localise the sound in a video with a trained SSL-TIE checkpoint and write overlays.

For each chosen frame (--frames N evenly spaced, default 8, or --fps F per second) the model
hears the 10 s of audio centred on the frame (shifted inside the track near its ends; a track
shorter than 10 s is tiled, as in training) and sees the centre crop of the frame (Resize +
CenterCrop through the loader's resize, as `avssl eval`). Every output is written atomically. Outputs in --out (default: the current folder):

  <stem>_grid.png     contact sheet of the frames with their heatmaps
  <stem>_overlay.mp4  every source frame with the nearest heatmap, original audio (--no-video: skipped)
  <stem>_maps.npz     times (N,), maps (N, Hm, Wm) on the full frame (NaN outside the crop),
                      crop_maps (N, h, w) raw model maps, crop_box (x0, y0, x1, y1) in pixels

A JSON summary (paths, crop box, peak location per frame in pixels and normalised) is printed.

Example:
    avssl localize clip.mp4 --checkpoint runs/ssltie/last.pt --frames 8 --out out/
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

HELP = "localise the sound in a video with an SSL-TIE checkpoint: heatmap grid PNG, overlay MP4, maps npz"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="VIDEO", help="any video file FFmpeg reads, with an audio track")
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="avssl checkpoint of an ssltie model")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--frames", type=int, default=None, help="number of evenly spaced frames (default 8)")
    when.add_argument("--fps", type=float, default=None, help="frames per second to localise instead of --frames")
    parser.add_argument("--out", default=".", metavar="DIR", help="output folder (default: current folder)")
    parser.add_argument("--video", dest="write_video", action=argparse.BooleanOptionalAction, default=True,
                        help="write the overlay MP4 (default: yes)")
    parser.add_argument("--device", default="cpu",
                        help="torch device: cpu (default), cuda, cuda:1, ... or auto (CUDA when available)")
    parser.add_argument("--batch-size", type=int, default=8, help="frames per forward pass (default 8)")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from avssl.atomic import atomic_path, remove_stale_tmp_of
    from avssl.checkpoint import CheckpointError
    from avssl.config import from_dict
    from avssl.data.decode import MediaError
    from avssl.engine.train import resolve_device
    from avssl.infer import localise_video, write_overlay_grid, write_overlay_video
    from avssl.registry import load_method
    from avssl.train_config import TrainConfig

    video = Path(args.input)
    out = Path(args.out)
    try:
        # the device first, as train and eval check it (CUDA asked for where there is none: a
        # ConfigError saying so); the checkpoint is read on the CPU, the model moved after
        device = resolve_device(args.device)
        model, ckpt = load_method(args.checkpoint, map_location="cpu")
        method = (ckpt.get("config") or {}).get("method")
        cfg = from_dict(TrainConfig, ckpt["config"])
        result = localise_video(model, video, num_frames=args.frames if args.frames is not None else 8,
                                fps=args.fps, device=device, batch_size=args.batch_size, cfg=cfg)
        out.mkdir(parents=True, exist_ok=True)
        stem = video.stem
        remove_stale_tmp_of(*(out / f"{stem}_{k}" for k in ("grid.png", "maps.npz", "overlay.mp4")))
        paths = {"grid": write_overlay_grid(result, out / f"{stem}_grid.png")}
        maps_path = out / f"{stem}_maps.npz"
        with atomic_path(maps_path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, times=result.times, maps=result.maps, crop_maps=result.crop_maps,
                                crop_box=np.asarray(result.crop_box, np.float64))
        paths["maps"] = maps_path
        paths["video"] = write_overlay_video(result, out / f"{stem}_overlay.mp4", video) if args.write_video else None
    except (MediaError, CheckpointError, TypeError, ValueError) as e:
        print(f"avssl localize: error: {e}", file=sys.stderr)
        return 2
    summary = {
        "video": str(video), "checkpoint": str(args.checkpoint), "method": method,
        "frames": int(len(result.times)), "frame_size": list(result.frames.shape[2:0:-1]),
        "sample_rate": result.sample_rate, "crop_box": [round(v, 2) for v in result.crop_box],
        "outputs": {k: (str(v) if v is not None else None) for k, v in paths.items()},
        "peaks": result.peaks(),
    }
    print(json.dumps(summary, indent=2))
    return 0
