"""The semi-real benchmark: real cut-outs with their real recordings on backgrounds, exact truth.

Each clip shows 1-3 cut-outs (:mod:`avssl.data.cutouts`) of distinct classes on a background (a
random crop of a photograph, or the synthetic benchmark's smooth textures when none is given),
each drifting a little. Exactly one visible cut-out sounds (two in "two-source" clips; in
"off-screen" clips the sound is of a class not shown): its recording starts at a random offset,
is looped to the clip's length, played slightly faster or slower (pitch and tempo together,
``rate``), scaled by a random gain and mixed with white or pink noise at a random SNR. The
other cut-outs are silent.

Ground truth, at the annotation frame (the middle one): the sounding cut-outs' visible pixels
(their alpha channel, minus what a cut-out drawn above covers) as ``masks/<id>.png``, and their
boxes (the masks' bounding boxes) in the two public formats, as the synthetic benchmark writes
them. Splits are by scene; ``holdout`` keeps whole sounding classes out of training.

Clip i is drawn from an RNG of (seed, i) and the source's sorted pairs, so a data set depends
only on the seed, the options and the source files, not on ``workers``.
"""
from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from avssl.atomic import atomic_path, atomic_write_text
from avssl.data.cutouts import Cutout, load_cutouts
from avssl.data.manifest import Record, write_manifest
from avssl.data.resample import resample
from avssl.data.synthetic import clip_id, write_annotations
from avssl.data.synthetic_render import (
    background_noise,
    render_background,
    seeded_rng,
    video_codec,
    write_mp4,
)

log = logging.getLogger(__name__)

__all__ = ["SemiRealConfig", "load_backgrounds", "render_scene", "generate_semireal"]

_PLAN_KEY = 0x5E41  # RNG stream of the per-data-set plan (kinds, splits)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass(frozen=True)
class SemiRealConfig:
    """Every option of the semi-real benchmark.

    Attributes:
        size: frame width = height (even); duration (s), fps, sample_rate (Hz) of the clips.
        objects: (min, max) cut-outs per scene, distinct classes.
        object_size: range of each cut-out's box area as a share of the frame.
        drift: the largest distance a cut-out moves over the clip, as a share of the frame.
        two_source_frac / offscreen_frac: shares of two-source and off-screen clips.
        snr_db: background-noise SNR range (dB), or None for no noise.
        gain_db: gain range of the recording (dB), before the clip is normalised to a peak.
        rate: range of the playback-rate factor (pitch and tempo together).
        split: train/val/test fractions (by scene).
        holdout: classes never shown or heard in the training split (they appear in val/test).
        exclude: folders of the source to leave out (e.g. ``symbols`` of tuxpaint's stamps).
        only: when given, the classes (cut-out names) to keep, all others left out: fewer classes
            with more clips each (e.g. for learning embeddings on a small set).
        workers: worker processes (None = all CPUs); preset: libx264 speed preset.
    """

    size: int = 224
    duration: float = 3.0
    fps: float = 10.0
    sample_rate: int = 16000
    objects: tuple[int, int] = (1, 3)
    object_size: tuple[float, float] = (0.06, 0.20)
    drift: float = 0.04
    two_source_frac: float = 0.0
    offscreen_frac: float = 0.0
    snr_db: tuple[float, float] | None = (5.0, 25.0)
    gain_db: tuple[float, float] = (-6.0, 0.0)
    rate: tuple[float, float] = (0.94, 1.06)
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    holdout: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    workers: int | None = None
    preset: str = "ultrafast"

    def __post_init__(self) -> None:
        if self.size < 32 or self.size % 2:
            raise ValueError(f"size must be an even number >= 32, got {self.size}")
        if self.duration <= 0 or self.fps <= 0 or self.sample_rate < 8000:
            raise ValueError("duration and fps must be > 0 and sample_rate >= 8000")
        if not 1 <= self.objects[0] <= self.objects[1] <= 6:
            raise ValueError(f"objects must satisfy 1 <= min <= max <= 6, got {self.objects}")
        if not 0 < self.object_size[0] <= self.object_size[1] <= 0.5:
            raise ValueError(f"object_size must satisfy 0 < min <= max <= 0.5, got {self.object_size}")
        fr = (self.two_source_frac, self.offscreen_frac)
        if min(fr) < 0 or sum(fr) > 1:
            raise ValueError(f"two_source_frac and offscreen_frac must be >= 0 with sum <= 1, got {fr}")
        if self.two_source_frac > 0 and self.objects[1] < 2:
            raise ValueError("two-source clips need objects max >= 2")
        if not 0 < self.rate[0] <= self.rate[1] < 2:
            raise ValueError(f"rate must satisfy 0 < min <= max < 2, got {self.rate}")
        if len(self.split) != 3 or min(self.split) < 0 or sum(self.split) <= 0:
            raise ValueError(f"split must be three non-negative fractions, got {self.split}")

    @property
    def num_frames(self) -> int:
        return max(1, int(round(self.duration * self.fps)))

    @property
    def annotation_index(self) -> int:
        return self.num_frames // 2

    @property
    def annotation_time(self) -> float:
        return self.annotation_index / self.fps


def load_backgrounds(source: str | os.PathLike, size: int, limit: int = 64) -> list[np.ndarray]:
    """Up to ``limit`` photographs of a folder or ``.deb`` (sorted by path), each resized so its
    short side is ``round(1.25 * size)``: uint8 (H, W, 3). Unreadable images are skipped."""
    import io

    from PIL import Image

    from avssl.data.cutouts import CutoutSourceError, source_files

    path = Path(source)
    files = source_files(path, _IMAGE_SUFFIXES)
    short = int(round(1.25 * size))
    out = []
    for name in sorted(files)[:2 * limit]:  # at most twice as many tried as kept
        try:
            with Image.open(io.BytesIO(files[name])) as im:
                im = im.convert("RGB")
                scale = short / min(im.size)
                im = im.resize((max(short, round(im.width * scale)), max(short, round(im.height * scale))),
                               Image.Resampling.BILINEAR, reducing_gap=2.0)
                out.append(np.asarray(im))
        except (OSError, ValueError) as e:
            log.info("backgrounds: skipped %s: %s", name, e)
        if len(out) == limit:
            break
    if not out:
        raise CutoutSourceError(path, "no readable photograph (.jpg/.png/.webp)")
    return out


# ----------------------------------------------------------------------------- one scene
@dataclass(frozen=True)
class _Placed:
    cutout: int
    rgba: np.ndarray      # resized sprite (h, w, 4) uint8
    x: float              # top-left corner at the annotation time, pixels
    y: float
    vx: float             # pixels per second
    vy: float
    sounding: bool


def _sprite(cut: Cutout, area: float, size: int) -> np.ndarray:
    from PIL import Image

    h, w = cut.rgba.shape[:2]
    scale = math.sqrt(area * size * size / (h * w))
    nh, nw = max(2, min(size, round(h * scale))), max(2, min(size, round(w * scale)))
    return np.asarray(Image.fromarray(cut.rgba, "RGBA").resize((nw, nh), Image.Resampling.LANCZOS))


def _plan(rng: np.random.Generator, kind: str, allowed: list[int], cutouts: list[Cutout],
          cfg: SemiRealConfig) -> tuple[list[_Placed], list[int]]:
    """The scene's cut-outs (drawing order) and its sounding ones (indices into ``cutouts``), all
    drawn from ``allowed``; the sounding cut-outs are the first ``n_sound`` of a random draw."""
    lo, hi = cfg.objects
    n_sound = 2 if kind == "two" else 1
    n = int(rng.integers(max(lo, n_sound), hi + 1))
    n = min(n, len(allowed) - (1 if kind == "offscreen" else 0))
    draw = [allowed[int(c)] for c in rng.permutation(len(allowed))]
    if kind == "offscreen":  # the sound's class is not among the shown cut-outs
        sounding, shown = draw[:1], draw[1:n + 1]
    else:
        shown = draw[:n]
        sounding = shown[:n_sound]
    s = cfg.size
    placed = []
    for c in shown:
        sprite = _sprite(cutouts[c], rng.uniform(*cfg.object_size), s)
        h, w = sprite.shape[:2]
        x, y = rng.uniform(0, s - w), rng.uniform(0, s - h)
        heading = rng.uniform(0, 2 * np.pi)
        speed = rng.uniform(0.3, 1.0) * cfg.drift * s / cfg.duration
        placed.append(_Placed(c, sprite, x, y, speed * math.cos(heading), speed * math.sin(heading),
                              c in sounding and kind != "offscreen"))
    return [placed[int(i)] for i in rng.permutation(len(placed))], sounding


def _composite(frame: np.ndarray, sprite: np.ndarray, x: int, y: int, mask: np.ndarray | None = None) -> None:
    """Paste ``sprite`` (alpha-blended) with its top-left at (x, y), clipped; where given, ``mask``
    (H, W) bool is set to the pixels where the sprite's alpha >= 128."""
    s_h, s_w = frame.shape[:2]
    h, w = sprite.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(s_w, x + w), min(s_h, y + h)
    if x0 >= x1 or y0 >= y1:
        return
    part = sprite[y0 - y:y1 - y, x0 - x:x1 - x]
    a = part[..., 3:4].astype(np.float32) / 255.0
    region = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = (region * (1 - a) + part[..., :3] * a + 0.5).astype(np.uint8)
    if mask is not None:
        mask[y0:y1, x0:x1] = part[..., 3] >= 128


def _background(rng: np.random.Generator, photos: list[np.ndarray] | None, size: int) -> np.ndarray:
    if not photos:
        return render_background(rng, size)
    photo = photos[int(rng.integers(len(photos)))]
    h, w = photo.shape[:2]
    top, left = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    crop = photo[top:top + size, left:left + size]
    return crop[:, ::-1].copy() if rng.uniform() < 0.5 else crop.copy()


def _recording(rng: np.random.Generator, cut: Cutout, n: int, cfg: SemiRealConfig) -> tuple[np.ndarray, dict]:
    """The sounding cut-out's recording at a random rate (quantised to 50 Hz steps of the
    intermediate rate), looped from a random offset to ``n`` samples, unit peak."""
    rate = float(rng.uniform(*cfg.rate))
    target = max(50, int(round(cfg.sample_rate / rate / 50.0)) * 50)
    wave = resample(cut.wave, cut.sample_rate, target) if target != cut.sample_rate else cut.wave
    wave = wave / max(float(np.abs(wave).max()), 1e-8)
    offset = int(rng.integers(len(wave)))
    looped = np.take(wave, (offset + np.arange(n)) % len(wave)).astype(np.float32)
    return looped, {"rate": round(cfg.sample_rate / target, 5), "offset_s": round(offset / cfg.sample_rate, 5)}


def render_scene(cutouts: list[Cutout], photos: list[np.ndarray] | None, seed: int, index: int, kind: str,
                 cfg: SemiRealConfig, pool: list[int] | None = None) -> dict:
    """Everything about clip ``index``, in memory: ``frames`` uint8 (T, S, S, 3), ``audio`` float32
    (N,), ``mask`` bool (S, S) (the sounding cut-outs' visible pixels at the annotation frame),
    ``boxes`` (normalised, one per visible sounding cut-out), ``sources`` / ``distractors``
    (cut-out indices) and the audio draw (``rate``, ``offset_s``, ``gain_db``, ``snr_db``).
    ``pool``: the cut-outs the scene may show or sound (default all; a training clip's pool
    leaves the held-out classes out)."""
    rng = seeded_rng(seed, index)
    placed, sounding = _plan(rng, kind, list(pool) if pool is not None else list(range(len(cutouts))), cutouts, cfg)
    s, t = cfg.size, np.arange(cfg.num_frames) / cfg.fps
    frames = np.broadcast_to(_background(rng, photos, s), (len(t), s, s, 3)).copy()
    masks = np.zeros((len(placed), s, s), bool)  # each cut-out's pixels at the annotation frame
    for k, ti in enumerate(t):
        dt = ti - cfg.annotation_time
        for i, p in enumerate(placed):
            _composite(frames[k], p.rgba, int(round(p.x + p.vx * dt)), int(round(p.y + p.vy * dt)),
                       masks[i] if k == cfg.annotation_index else None)
    visible = np.zeros((s, s), bool)
    boxes = []
    for i, p in enumerate(placed):
        if not p.sounding:
            continue
        m = masks[i].copy()
        for later in masks[i + 1:]:
            m &= ~later
        visible |= m
        if m.any():
            rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
            boxes.append([round(cols[0] / s, 5), round(rows[0] / s, 5), round((cols[-1] + 1) / s, 5),
                          round((rows[-1] + 1) / s, 5)])
    n = int(round(cfg.duration * cfg.sample_rate))
    mix = np.zeros(n, np.float32)
    draws: dict = {"gain_db": [], "rate": [], "offset_s": []}
    for c in sounding:
        wave, info = _recording(rng, cutouts[c], n, cfg)
        gain = float(rng.uniform(*cfg.gain_db))
        mix += wave * 10 ** (gain / 20)
        draws["gain_db"].append(round(gain, 3))
        draws["rate"].append(info["rate"])
        draws["offset_s"].append(info["offset_s"])
    draws["snr_db"] = None
    if cfg.snr_db is not None:
        snr = float(rng.uniform(*cfg.snr_db))
        noise = background_noise(rng, n, "pink" if rng.uniform() < 0.5 else "white")
        mix += noise * float(np.sqrt(np.mean(mix ** 2))) * 10 ** (-snr / 20)
        draws["snr_db"] = round(snr, 3)
    audio = (mix * (rng.uniform(0.3, 0.9) / max(float(np.abs(mix).max()), 1e-8))).astype(np.float32)
    return {"frames": frames, "audio": audio, "mask": visible, "boxes": boxes, "sources": sounding,
            "distractors": [p.cutout for p in placed if not p.sounding and p.cutout not in sounding],
            "shown": [p.cutout for p in placed], **draws}


# ----------------------------------------------------------------------------- the data set
_WORKER: dict = {}


def _init_worker(cutouts, photos, cfg, codec) -> None:
    _WORKER.update(cutouts=cutouts, photos=photos, cfg=cfg, codec=codec)


def _make_clip(task: tuple) -> dict:
    from PIL import Image

    out_dir, seed, index, kind, pool = task
    w = _WORKER
    cfg = w["cfg"]
    clip = render_scene(w["cutouts"], w["photos"], seed, index, kind, cfg, pool)
    cid = clip_id(index)
    path = Path(out_dir) / "clips" / f"{cid}.mp4"
    write_mp4(path, clip["frames"], clip["audio"], cfg.fps, cfg.sample_rate, w["codec"], cfg.preset)
    mask_path = Path(out_dir) / "masks" / f"{cid}.png"
    with atomic_path(mask_path) as tmp:
        Image.fromarray(clip["mask"]).save(tmp, format="PNG")
    keep = ("boxes", "sources", "distractors", "shown", "gain_db", "rate", "offset_s", "snr_db")
    return {k: clip[k] for k in keep} | {"index": index, "path": str(path), "mask": str(mask_path)}


def _plan_dataset(clips: int, seed: int, names: list[str], cfg: SemiRealConfig
                  ) -> tuple[list[str], list[str], list[list[int] | None]]:
    """Kinds, splits and, per clip, the cut-outs allowed to sound (held-out classes only in val/test)."""
    rng = seeded_rng(seed, clips, _PLAN_KEY)
    n_two = int(round(clips * cfg.two_source_frac))
    n_off = min(int(round(clips * cfg.offscreen_frac)), clips - n_two)
    kinds = list(rng.permutation(["two"] * n_two + ["offscreen"] * n_off + ["single"] * (clips - n_two - n_off)))
    frac = np.asarray(cfg.split, np.float64) / sum(cfg.split)
    counts = np.floor(frac * clips).astype(int)
    counts[0] += clips - counts.sum()
    splits = list(rng.permutation(np.repeat(["train", "val", "test"], counts)))
    unknown = sorted(set(cfg.holdout) - set(names))
    if unknown:
        raise ValueError(f"holdout classes {unknown} are not among the cut-outs' names")
    held = [i for i, n in enumerate(names) if n in cfg.holdout]
    seen = [i for i, n in enumerate(names) if n not in cfg.holdout]
    if cfg.holdout and not seen:
        raise ValueError("holdout leaves no class to train on")
    pools = [seen if s == "train" and held else None for s in splits]
    return [str(k) for k in kinds], [str(s) for s in splits], pools


def generate_semireal(out_dir: str | os.PathLike, cutouts_source: str | os.PathLike, clips: int = 100,
                      seed: int = 0, config: SemiRealConfig = SemiRealConfig(),
                      backgrounds: str | os.PathLike | None = None) -> Path:
    """Write the semi-real data set into ``out_dir``; returns the manifest path.

    Writes ``clips/<id>.mp4``, ``masks/<id>.png`` (the sounding cut-outs' visible pixels at the
    annotation frame), ``manifest.jsonl`` (labels = the sounding classes; the draws in
    ``extra``), ``classes.json``, ``annotations/vggss.json`` and ``annotations/flickr/<id>.xml``
    (boxes of the masks), ``skipped_cutouts.csv`` (unusable pairs and why) and
    ``semireal_config.json``.
    """
    if clips < 1 or seed < 0:
        raise ValueError(f"clips must be >= 1 and seed >= 0, got {clips}, {seed}")
    cfg = config
    found = load_cutouts(cutouts_source, exclude=cfg.exclude)
    cutouts = found.cutouts
    if cfg.only:
        unknown = sorted(set(cfg.only) - set(found.names))
        if unknown:
            raise ValueError(f"only: classes {unknown} are not among the cut-outs' names of {cutouts_source}")
        cutouts = [c for c in cutouts if c.name in cfg.only]
    names = [c.name for c in cutouts]
    need = cfg.objects[1] + 1
    if len(cutouts) < max(2, min(need, 3)):
        raise ValueError(f"{cutouts_source}: {len(cutouts)} usable cut-outs; a scene needs at least "
                         f"{max(2, min(need, 3))}")
    photos = load_backgrounds(backgrounds, cfg.size) if backgrounds else None
    kinds, splits, pools = _plan_dataset(clips, seed, names, cfg)
    out = Path(out_dir)
    for sub in ("clips", "masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    codec = video_codec()
    workers = max(1, min(cfg.workers or os.cpu_count() or 1, clips))
    tasks = [(str(out), seed, i, kinds[i], pools[i]) for i in range(clips)]
    log.info("semi-real: %d clips from %d cut-outs (%s backgrounds), %d workers, into %s", clips,
             len(cutouts), f"{len(photos)} photo" if photos else "texture", workers, out)
    t0 = time.perf_counter()
    if workers == 1:
        _init_worker(cutouts, photos, cfg, codec)
        results = [_make_clip(t) for t in tasks]
    else:
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(workers, _init_worker, (cutouts, photos, cfg, codec)) as pool:
            results = list(pool.imap(_make_clip, tasks, chunksize=2))
    elapsed = time.perf_counter() - t0
    log.info("semi-real: %d clips in %.1f s (%.1f clips/s)", clips, elapsed, clips / elapsed)
    records, vggss, flickr = [], [], {}
    for res in sorted(results, key=lambda r: r["index"]):
        i, cid = res["index"], clip_id(res["index"])
        srcs = [names[c] for c in res["sources"]]
        offscreen = kinds[i] == "offscreen"
        records.append(Record(id=cid, video=res["path"], labels=srcs, split=splits[i], extra={
            "annotation_time": cfg.annotation_time, "sources": srcs, "num_sources": len(srcs),
            "offscreen": offscreen, "boxes": res["boxes"], "mask": os.path.relpath(res["mask"], out),
            "distractors": [names[c] for c in res["distractors"]], "gain_db": res["gain_db"],
            "rate": res["rate"], "offset_s": res["offset_s"], "snr_db": res["snr_db"]}))
        if res["boxes"]:
            vggss.append({"file": cid, "class": srcs[0], "bbox": res["boxes"]})
            flickr[cid] = [[int(round(v * 256)) for v in b] for b in res["boxes"]]
    manifest = write_manifest(out / "manifest.jsonl", records)
    atomic_write_text(out / "classes.json", json.dumps(names, indent=2))
    atomic_write_text(out / "skipped_cutouts.csv",
                      "picture,reason\n" + "".join(f"{p},{r.replace(',', ';')}\n" for p, r in found.skipped))
    atomic_write_text(out / "semireal_config.json", json.dumps(
        {"clips": clips, "seed": seed, "codec": codec, "cutouts": str(cutouts_source),
         "backgrounds": None if backgrounds is None else str(backgrounds)} | asdict(cfg), indent=2))
    write_annotations(out, vggss, flickr, names)
    return manifest
