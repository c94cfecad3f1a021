"""Benchmark: training-loader throughput from mp4, from the folder layout, from shards.

Makes ``--clips`` 10 s 640x360 25 fps H.264 (libx264 defaults: keyframe every 250 frames, so a
10 s clip has one, B-frames) + AAC 44.1 kHz stereo clips (cached in ``--media``), prepares them
once as frames/ + audio/ (``avssl prepare``) and as shards (``--format shards``), then reads
``--items`` samples through a DataLoader of ``--workers`` processes with both recipes' loaders:

* ssltie: the middle frame, 224 px (PIL bicubic resize + centre crop), 10 s at the native rate;
* equiav: a random one of 10 frames, 224 px, 10.255 s zero-padded, audio from a video at 16 kHz.

Paths: ``mp4`` (avssl's decoder straight from the videos), ``mp4-v1`` (the reference, measured in
the same run: the loader as it was before this benchmark existed, reproduced here: a probe, then
FFmpeg's frame-threaded decode of every frame up to the target, then the audio decoded and
resampled frame by frame through ``to_ndarray``), ``folder`` (JPEG + wav), ``shards`` (the
training stream) and ``shard-index`` (``shards.json`` read as a manifest: evaluation's random
access by byte range).
Prints items/s, items/s per worker (each worker keeps one core busy: the per-core rate) and
the ratio to ``mp4-v1``.

    python benchmarks/bench_loader.py [--clips 6] [--items 96] [--workers 2] [--gop 250]
    python benchmarks/bench_loader.py --clips 2 --items 4 --seconds 1 --size 64x36   # smoke run (CI)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

try:
    import avssl  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def make_clip(path: Path, seed: int, gop: int, seconds: float = 10.0, w: int = 640, h: int = 360,
              fps: int = 25, sr: int = 44100) -> None:
    """A moving textured picture with a tone in noise, encoded like a typical downloaded clip."""
    import av

    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.codec_context.gop_size = gop
        a = c.add_stream("aac", rate=sr, layout="stereo")
        base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
        ramp = (np.arange(w)[None, :, None] // 4).astype(np.int16)
        for i in range(int(seconds * fps)):
            img = np.roll(base, 3 * i, axis=1).astype(np.int16) + (ramp + i) % 64
            img = np.clip(img + rng.integers(-6, 6, img.shape), 0, 255).astype(np.uint8)
            c.mux(v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(v.encode())
        t = np.arange(int(seconds * sr)) / sr
        tone = (0.3 * np.sin(2 * np.pi * (300 + 50 * seed) * t) + 0.05 * rng.standard_normal(t.size))
        stereo = np.stack([tone, 0.8 * tone]).astype(np.float32)
        for k in range(0, stereo.shape[1], 1024):
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(stereo[:, k:k + 1024]), format="fltp", layout="stereo")
            f.sample_rate, f.pts = sr, k
            c.mux(a.encode(f))
        c.mux(a.encode())
    tmp.replace(path)


class V1Dataset:
    """The mp4 loader before the speed-up, as the reference (a mixin over AVFrameAudioDataset)."""

    def _frame(self, r, choice=None):
        from avssl.data import decode
        from avssl.data.container import open_media, video_stream

        duration = decode.probe(r.video).duration
        t = (decode.evenly_spaced_times(duration, self.random_frames)[choice] if choice is not None
             else duration / 2.0)
        with open_media(r.video) as (c, p):
            return decode._decode_frames(c, video_stream(c), p, np.array([t]), None, 1.0,
                                         threads=0, skip_nonref=False)[0]

    def _wave(self, r):
        import av

        rate = self.video_rate
        with av.open(r.video) as c:
            resampler = av.AudioResampler(format="fltp", rate=rate)
            chunks = []
            for frame in c.decode(c.streams.audio[0]):
                chunks += [x.to_ndarray() for x in resampler.resample(frame)]
            chunks += [x.to_ndarray() for x in resampler.resample(None)]
            out_rate = rate or c.streams.audio[0].codec_context.sample_rate
        return np.concatenate(chunks, axis=1).mean(axis=0).astype(np.float32), out_rate


def _dataset(recipe: str, records, v1: bool = False, classes=None):
    from avssl.data.datasets import AVFrameAudioDataset

    cls = AVFrameAudioDataset if not v1 else type("V1", (V1Dataset, AVFrameAudioDataset), {})
    if recipe == "ssltie":
        return cls(records, image_size=224, seconds=10.0, classes=classes)
    return cls(records, image_size=224, seconds=10.255, audio_pad="zero", random_frames=10,
               video_sample_rate=16000, classes=classes)


class Keyed(torch.utils.data.Dataset):
    """Random-frame keys ``(index, draw)`` for the EquiAV recipe, as the training sampler gives."""

    def __init__(self, ds, random: bool) -> None:
        self.ds, self.random = ds, random

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        return self.ds[(i, 1000 + i) if self.random else i]


def _rate(loader) -> float:
    """Items per second over one pass of ``loader``, after its first batch (worker start-up)."""
    it = iter(loader)
    next(it)
    n, t0 = 0, time.perf_counter()
    for batch in it:
        n += len(batch["id"])
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--items", type=int, default=96, help="samples read per path (excluding the first batch)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--gop", type=int, default=250, help="keyframe interval in frames (libx264 default 250)")
    ap.add_argument("--media", default="runs/bench_loader_media")
    ap.add_argument("--recipes", default="ssltie,equiav")
    ap.add_argument("--paths", default="mp4-v1,mp4,folder,shards,shard-index")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length (smoke runs: shorter)")
    ap.add_argument("--size", default="640x360", help="WxH of the clips (smoke runs: smaller)")
    args = ap.parse_args()
    w, h = (int(x) for x in args.size.lower().split("x"))

    from avssl.data.datasets import collate, collate_mixed_rates
    from avssl.data.manifest import Record, read_manifest, write_manifest
    from avssl.data.prepare import prepare
    from avssl.data.prepare_shards import prepare_shards
    from avssl.data.shard_index import ShardIndex, read_index
    from avssl.data.shards import ShardStream

    shape = "" if (w, h, args.seconds) == (640, 360, 10.0) else f"_{w}x{h}_{args.seconds:g}s"
    media = Path(args.media).resolve() / f"gop{args.gop}{shape}"
    media.mkdir(parents=True, exist_ok=True)
    clips = [media / f"clip{i:03d}.mp4" for i in range(args.clips)]
    for i, p in enumerate(clips):
        if not p.is_file():
            print(f"encoding {p} ...", flush=True)
            make_clip(p, i, args.gop, args.seconds, w, h)
    work = Path(tempfile.mkdtemp(prefix="bench_loader_"))
    try:
        src = [Record(id=p.stem, video=str(p), labels=[f"c{i % 3}"]) for i, p in enumerate(clips)]
        write_manifest(work / "videos.jsonl", src)
        t0 = time.perf_counter()
        prepare(work / "videos.jsonl", work / "folder", workers=args.workers)
        prepare_shards(work / "videos.jsonl", work / "shards", shard_size=len(clips), workers=args.workers)
        print(f"prepared {len(clips)} clips as a folder and as shards in {time.perf_counter() - t0:.1f} s")
        reps = math.ceil((args.items + args.batch) / len(clips))
        folder = read_manifest(work / "folder" / "manifest.jsonl")
        index = read_index(work / "shards" / "shards.json")
        in_shards = read_manifest(work / "shards" / "shards.json")
        results = {}
        for recipe in args.recipes.split(","):
            coll = collate if recipe == "ssltie" else collate_mixed_rates
            for path in args.paths.split(","):
                if path in ("mp4", "mp4-v1"):
                    ds = Keyed(_dataset(recipe, src * reps, v1=path == "mp4-v1"), recipe == "equiav")
                elif path == "folder":
                    ds = Keyed(_dataset(recipe, folder * reps), recipe == "equiav")
                elif path == "shard-index":  # the evaluation path: shards.json as a manifest, by byte range
                    ds = Keyed(_dataset(recipe, in_shards * reps), recipe == "equiav")
                else:
                    many = ShardIndex(index.urls * reps, index.clips * reps, index.classes)  # the clips, reps times
                    ds = ShardStream(many, _dataset(recipe, [], classes=index.classes), coll, args.batch,
                                     workers=args.workers, shuffle_buffer=1, random_frames=recipe == "equiav")
                kw = ({"batch_size": None} if isinstance(ds, ShardStream)
                      else {"batch_size": args.batch, "collate_fn": coll, "shuffle": False})
                loader = torch.utils.data.DataLoader(ds, num_workers=args.workers, **kw)
                rate = _rate(loader)
                results[(recipe, path)] = rate
                ref = results.get((recipe, "mp4-v1"))
                ratio = f"{rate / ref:6.2f}x mp4-v1" if ref else ""
                print(f"{recipe:7s} {path:11s} {rate:8.1f} items/s  {rate / args.workers:7.1f} per worker  {ratio}",
                      flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({
                "workers": args.workers, "gop": args.gop, "clips": args.clips, "cpus": os.cpu_count(),
                "items_per_s": {f"{r}/{p}": v for (r, p), v in results.items()}}, indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
