"""The built-in synthetic audio-visual benchmark: procedural scenes written as real mp4 files.

Each clip shows a textured background and 1-3 objects of distinct classes drifting slightly;
exactly one visible object (two in "two-source" clips, none in "off-screen" clips) is the
sound source, the others are silent distractors. Classes pair a visual signature (shape,
hue, texture) with a sound signature (pitch band, timbre, temporal pattern); see
:mod:`avssl.data.synthetic_render`. Clips are H.264 + AAC mp4 files, so they are read by
the same decoding path as user data.

Output folder::

    clips/<id>.mp4            the clips
    manifest.jsonl            avssl manifest (labels = sounding classes, split, boxes, ...)
    classes.json              class name -> visual and sound signature
    annotations/vggss.json    sounding boxes at the annotation time, VGG-SS format
    annotations/flickr/<id>.xml  the same, Flickr-SoundNet XML (256-pixel coordinates; each
                              sounding box is one <object>, i.e. one "annotator", weight 0.5)
    reference_scores.json     perfect-box / centre-prior / random heatmaps on the test split
    synth_config.json         the options, seed and codec used (:func:`load_config`)

Every clip is generated from its own RNG seeded by ``(seed, clip index)``, so the data set
does not depend on the number of worker processes.
"""
from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from avssl.data.manifest import Record, write_manifest
from avssl.data.synthetic_render import (
    ClassSpec,
    ObjectInstance,
    background_noise,
    draw_objects,
    make_classes,
    object_box,
    render_background,
    seeded_rng,
    shape_extent,
    synth_sound,
    video_codec,
    write_mp4,
)

log = logging.getLogger(__name__)

__all__ = ["SynthConfig", "generate", "render_clip", "plan_dataset", "plan_scene", "synth_audio",
           "write_mp4", "video_codec", "clip_id", "load_config", "write_annotations"]

PLACEMENTS = ("corner", "spread", "centre", "uniform")
KINDS = ("single", "two", "offscreen")
_PLAN_KEY = 0x5EED  # RNG stream for the per-data-set plan (kinds, splits)


@dataclass(frozen=True)
class SynthConfig:
    """Every option of the synthetic benchmark.

    Attributes:
        classes: number of classes K (>= 2).
        duration: clip length, seconds.
        size: frame width = height, pixels (even).
        fps: frame rate.
        sample_rate: audio rate, Hz.
        two_source_frac: fraction of clips with two simultaneous visible sources.
        offscreen_frac: fraction of clips whose sounding class is not visible (no box).
        noise_db: background-noise SNR range (dB) drawn per clip; ``None`` for no noise.
        object_size: range of every object's box area, as a share of the frame (the
            median-rule cap keeps boxes under 25% below cIoU 0.5 for any smooth map).
        placement: where sounding objects go (distractors are uniform): ``corner`` (default:
            both coordinates in the outer 10% of their range), ``spread`` (one coordinate in
            the outer 30%), ``centre`` or ``uniform``.

    The defaults (``corner``, boxes of 15-30% of the frame) are chosen so that few sounding
    boxes cover the frame centre: on the demo set (600 clips, 128 px, seed 0) the centre
    prior's pointing accuracy is 0.49 on the test split (0.51 on all clips) and its adaptive
    cIoU@0.5 is 0. A box covering >= 25% of the frame nearly always covers the centre, hence
    the 30% ceiling. The earlier defaults, ``placement="spread", object_size=(0.10, 0.45)``,
    remain available (centre-prior pointing 0.69, adaptive cIoU@0.5 0.26 on the same set).
        split: train/val/test fractions.
        workers: worker processes (``None`` = ``os.cpu_count()``).
        preset: libx264 speed preset.
    """

    classes: int = 6
    duration: float = 3.0
    size: int = 224
    fps: float = 10.0
    sample_rate: int = 16000
    two_source_frac: float = 0.0
    offscreen_frac: float = 0.0
    noise_db: tuple[float, float] | None = (10.0, 30.0)
    object_size: tuple[float, float] = (0.15, 0.30)
    placement: str = "corner"
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    workers: int | None = None
    preset: str = "ultrafast"

    def __post_init__(self) -> None:
        if self.classes < 2:
            raise ValueError(f"classes must be >= 2, got {self.classes}")
        if self.size < 16 or self.size % 2:
            raise ValueError(f"size must be an even number >= 16, got {self.size}")
        if self.duration <= 0 or self.fps <= 0 or self.sample_rate < 8000:
            raise ValueError("duration and fps must be > 0 and sample_rate >= 8000")
        if not 0 < self.object_size[0] <= self.object_size[1] <= 0.8:
            raise ValueError(f"object_size must satisfy 0 < min <= max <= 0.8, got {self.object_size}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, not {self.placement!r}")
        fr = (self.two_source_frac, self.offscreen_frac)
        if min(fr) < 0 or sum(fr) > 1:
            raise ValueError(f"two_source_frac and offscreen_frac must be >= 0 with sum <= 1, got {fr}")
        if len(self.split) != 3 or min(self.split) < 0 or sum(self.split) <= 0:
            raise ValueError(f"split must be three non-negative fractions, got {self.split}")
        if self.noise_db is not None and self.noise_db[0] > self.noise_db[1]:
            raise ValueError(f"noise_db must be (min, max), got {self.noise_db}")

    @property
    def num_frames(self) -> int:
        return max(1, int(round(self.duration * self.fps)))

    @property
    def annotation_time(self) -> float:
        """Time of the annotated frame: the frame at the middle of the clip."""
        return (self.num_frames // 2) / self.fps


@lru_cache(maxsize=8)
def _classes(k: int, sample_rate: int) -> tuple[ClassSpec, ...]:
    return tuple(make_classes(k, sample_rate))


def clip_id(index: int) -> str:
    return f"clip{index:06d}"


def plan_dataset(num_clips: int, seed: int, cfg: SynthConfig) -> tuple[list[str], list[str]]:
    """Kind (single/two/offscreen) and split of every clip, stratified by kind.

    Counts are exact (``round(frac * N)``), drawn from an RNG of ``(seed, N)``.
    """
    rng = seeded_rng(seed, num_clips, _PLAN_KEY)
    n_two = int(round(num_clips * cfg.two_source_frac))
    n_off = min(int(round(num_clips * cfg.offscreen_frac)), num_clips - n_two)
    kinds = np.array(["two"] * n_two + ["offscreen"] * n_off + ["single"] * (num_clips - n_two - n_off))
    kinds = kinds[rng.permutation(num_clips)]
    frac = np.asarray(cfg.split, dtype=float) / sum(cfg.split)
    splits = np.empty(num_clips, dtype=object)
    for kind in KINDS:
        idx = np.flatnonzero(kinds == kind)
        idx = idx[rng.permutation(len(idx))]
        n_val, n_test = int(round(len(idx) * frac[1])), int(round(len(idx) * frac[2]))
        n_test = min(n_test, len(idx) - n_val)
        splits[idx] = "train"
        splits[idx[len(idx) - n_val - n_test:len(idx) - n_test]] = "val"
        splits[idx[len(idx) - n_test:]] = "test"
    return [str(k) for k in kinds], [str(s) for s in splits]


def _axis_position(rng: np.random.Generator, lo: float, hi: float, how: str) -> float:
    """A coordinate in ``[lo, hi]``: ``uniform``, ``edge`` (outer 30% of the half-range, random
    side), ``rim`` (outer 10%) or ``centre`` (inner 15%)."""
    mid, half = (lo + hi) / 2, max(hi - lo, 0.0) / 2
    if how in ("edge", "rim"):
        inner = 0.7 if how == "edge" else 0.9
        return mid + half * rng.uniform(inner, 1.0) * rng.choice([-1.0, 1.0])
    return mid + half * rng.uniform(-1.0, 1.0) * (0.15 if how == "centre" else 1.0)


def _place(rng: np.random.Generator, extent: tuple[float, float, float, float], radius: float,
           margin: float, placement: str) -> tuple[float, float]:
    """A normalised centre keeping the object's box ``margin`` inside the frame.

    ``corner`` pushes both axes into the outer 10% of their half-ranges (the box sits near a
    corner); ``spread`` pushes one axis (at random) into the outer 30%; ``centre`` keeps both in
    the inner 15%; ``uniform`` draws both uniformly.
    """
    xmin, xmax, ymin, ymax = (radius * e for e in extent)
    how = {"uniform": ("uniform", "uniform"), "centre": ("centre", "centre"),
           "spread": ("edge", "uniform"), "corner": ("rim", "rim")}[placement]
    if rng.uniform() < 0.5:
        how = how[::-1]
    return (_axis_position(rng, margin - xmin, 1 - margin - xmax, how[0]),
            _axis_position(rng, margin - ymin, 1 - margin - ymax, how[1]))


def plan_scene(rng: np.random.Generator, kind: str, cfg: SynthConfig
               ) -> tuple[list[ObjectInstance], list[int], list[int]]:
    """Sample one scene: classes, then sizes and positions without much overlap, then looks.

    Every object's box area (at its drawn angle) is drawn from ``cfg.object_size``; the
    sounding objects are placed by ``cfg.placement``, distractors uniformly.

    Returns:
        ``(objects in drawing order, sounding object positions in that list, source classes)``;
        for off-screen clips the source class has no object.
    """
    k = cfg.classes
    classes = _classes(k, cfg.sample_rate)
    n_src = 2 if kind == "two" else 1
    perm = [int(c) for c in rng.permutation(k)]
    sources, others = perm[:n_src], perm[n_src:]
    n_dis = int(rng.integers(1, 4)) if kind == "offscreen" else int(rng.integers(0, 4 - n_src))
    visible_src = [] if kind == "offscreen" else sources
    lo, hi = cfg.object_size
    placed: list[tuple] = []  # (x, y, radius, drift, cls, angle, sounding), normalised units
    for cls in visible_src + others[:n_dis]:
        sounding = cls in visible_src
        angle = rng.uniform(0, 2 * np.pi)
        extent = shape_extent(classes[cls].shape, angle, 128)
        area = rng.uniform(lo, hi) / ((extent[1] - extent[0]) * (extent[3] - extent[2]))
        for attempt in range(80):  # no room: shrink, and after a while place anywhere
            if attempt and attempt % 10 == 0:
                area *= 0.8
            r, drift = math.sqrt(area), rng.uniform(0.01, 0.03)
            placement = cfg.placement if sounding and attempt < 40 else "uniform"
            x, y = _place(rng, extent, r, drift / 2 + 0.01, placement)
            if all(math.hypot(x - p[0], y - p[1]) >= 0.9 * (r + p[2]) + (drift + p[3]) / 2 for p in placed):
                break
        else:
            if not sounding:  # a distractor that does not fit is left out
                continue
        placed.append((x, y, r, drift, cls, angle, sounding))
    jitter = min(8.0, 0.25 * 360.0 / k)
    s, t_ref = cfg.size, cfg.annotation_time
    objects, sounding_pos = [], []
    for j in rng.permutation(len(placed)):
        x, y, r, drift, cls, angle, sounding = placed[int(j)]
        heading = rng.uniform(0, 2 * np.pi)
        speed = drift * s / cfg.duration
        if sounding:
            sounding_pos.append(len(objects))
        objects.append(ObjectInstance(
            cls=cls, cx=x * s, cy=y * s, vx=speed * math.cos(heading), vy=speed * math.sin(heading),
            radius=r * s, angle=angle, hue=classes[cls].hue + rng.uniform(-jitter, jitter),
            sat=rng.uniform(0.65, 1.0), val=rng.uniform(0.7, 1.0),
            phase=(float(rng.uniform()), float(rng.uniform())), t_ref=t_ref,
        ))
    return objects, sounding_pos, sources


def synth_audio(rng: np.random.Generator, sources: list[int], cfg: SynthConfig) -> np.ndarray:
    """The soundtrack: the sources' sounds at relative gains of -3..0 dB plus background noise.

    Returns float32 (round(duration * sample_rate),) with peak in [0.3, 0.9].
    """
    classes = _classes(cfg.classes, cfg.sample_rate)
    n = int(round(cfg.duration * cfg.sample_rate))
    mix = np.zeros(n, np.float32)
    for c in sources:
        mix += synth_sound(classes[c], rng, n, cfg.sample_rate) * 10 ** (rng.uniform(-3, 0) / 20)
    if cfg.noise_db is not None:
        snr = rng.uniform(*cfg.noise_db)
        noise = background_noise(rng, n, "pink" if rng.uniform() < 0.5 else "white")
        mix += noise * float(np.sqrt(np.mean(mix ** 2))) * 10 ** (-snr / 20)
    return (mix * (rng.uniform(0.3, 0.9) / max(float(np.abs(mix).max()), 1e-8))).astype(np.float32)


def render_clip(seed: int, index: int, kind: str, cfg: SynthConfig) -> dict:
    """Everything about one clip, in memory.

    Returns a dict with ``frames`` uint8 (T, size, size, 3), ``audio`` float32 (N,),
    ``sources``/``distractors`` (class indices) and ``boxes`` (normalised, at the
    annotation time, one per visible source).
    """
    rng = seeded_rng(seed, index)
    classes = _classes(cfg.classes, cfg.sample_rate)
    objects, sounding_pos, sources = plan_scene(rng, kind, cfg)
    times = np.arange(cfg.num_frames) / cfg.fps
    frames = np.broadcast_to(render_background(rng, cfg.size), (len(times), cfg.size, cfg.size, 3)).copy()
    draw_objects(frames, objects, list(classes), times)
    audio = synth_audio(rng, sources, cfg)
    t_ann = cfg.annotation_time
    order = sorted(sounding_pos, key=lambda p: sources.index(objects[p].cls))
    boxes = [[round(v, 5) for v in object_box(objects[p], classes[objects[p].cls], t_ann, cfg.size)]
             for p in order]
    distractors = [o.cls for i, o in enumerate(objects) if i not in sounding_pos]
    return {"frames": frames, "audio": audio, "sources": sources, "distractors": distractors,
            "boxes": boxes, "objects": objects}


def _make_clip(task: tuple) -> dict:
    out_dir, seed, index, kind, cfg, codec = task
    clip = render_clip(seed, index, kind, cfg)
    path = Path(out_dir) / "clips" / f"{clip_id(index)}.mp4"
    write_mp4(path, clip["frames"], clip["audio"], cfg.fps, cfg.sample_rate, codec, cfg.preset)
    return {k: clip[k] for k in ("sources", "distractors", "boxes")} | {"index": index, "path": str(path)}


# ---------------------------------------------------------------- data set
def generate(out_dir: str | os.PathLike, clips: int = 100, seed: int = 0,
             config: SynthConfig = SynthConfig()) -> Path:
    """Write the synthetic data set into ``out_dir``; returns the manifest path.

    Args:
        clips: number of clips.
        seed: data-set seed; clip ``i`` is drawn from an RNG of ``(seed, i)``.
        config: every other option (:class:`SynthConfig`).

    The reference scores beside the set (``reference_scores.json``) are written by
    :func:`avssl.eval.references.reference_scores` (``avssl synth`` and the demo call it).
    """
    if clips < 1:
        raise ValueError(f"clips must be >= 1, got {clips}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    cfg = config
    out = Path(out_dir)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    _remove_stale(out, clips)
    classes = _classes(cfg.classes, cfg.sample_rate)
    names = [c.name for c in classes]
    kinds, splits = plan_dataset(clips, seed, cfg)
    codec = video_codec()
    workers = max(1, min(cfg.workers or os.cpu_count() or 1, clips))
    tasks = [(str(out), seed, i, kinds[i], cfg, codec) for i in range(clips)]
    log.info("synthesising %d clips (%dx%d, %.1f s at %g fps, %s) with %d workers into %s",
             clips, cfg.size, cfg.size, cfg.duration, cfg.fps, codec, workers, out)
    t0 = time.perf_counter()
    results = _run_tasks(tasks, workers)
    elapsed = time.perf_counter() - t0
    log.info("synthesised %d clips in %.1f s (%.1f clips/s)", clips, elapsed, clips / elapsed)

    records, vggss, flickr = [], [], {}
    for res in results:
        i = res["index"]
        cid, offscreen = clip_id(i), kinds[i] == "offscreen"
        srcs = [names[c] for c in res["sources"]]
        records.append(Record(
            id=cid, video=res["path"], labels=srcs, split=splits[i],
            extra={"annotation_time": cfg.annotation_time, "sources": srcs,
                   "num_sources": len(srcs), "offscreen": offscreen, "boxes": res["boxes"],
                   "distractors": [names[c] for c in res["distractors"]]},
        ))
        if not offscreen:
            vggss.append({"file": cid, "class": srcs[0], "bbox": res["boxes"]})
            flickr[cid] = [[int(round(v * 256)) for v in b] for b in res["boxes"]]
    manifest = write_manifest(out / "manifest.jsonl", records)
    (out / "classes.json").write_text(json.dumps({c.name: c.to_dict() for c in classes}, indent=2))
    (out / "synth_config.json").write_text(json.dumps(
        {"clips": clips, "seed": seed, "codec": codec} | asdict(cfg), indent=2))
    write_annotations(out, vggss, flickr, names)
    return manifest


def _run_tasks(tasks: list[tuple], workers: int) -> list[dict]:
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="synth", unit="clip", disable=not log.isEnabledFor(logging.INFO))
    results = []
    if workers == 1:
        for t in tasks:
            results.append(_make_clip(t))
            bar.update()
    else:
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(workers) as pool:
            for r in pool.imap(_make_clip, tasks, chunksize=2):
                results.append(r)
                bar.update()
    bar.close()
    return results


def _remove_stale(out: Path, clips: int) -> None:
    """Delete what an earlier, larger run left: our clip files and Flickr XML files only."""
    keep = {clip_id(i) for i in range(clips)}
    stale = [p for p in (out / "clips").glob("clip*.mp4") if p.stem not in keep]
    stale += list((out / "annotations" / "flickr").glob("clip*.xml"))
    for p in stale:
        p.unlink()
    if stale:
        log.info("removed %d files of an earlier run in %s", len(stale), out)


def write_annotations(out: Path, vggss: list[dict], flickr: dict[str, list], names: list[str]) -> None:
    """The sounding boxes as ``annotations/vggss.json`` (normalised) and ``annotations/flickr/<id>.xml`` (256-pixel)."""
    from avssl.data.annotations import write_flickr_xml, write_vggss

    write_vggss(out / "annotations" / "vggss.json", vggss, classes=names)
    for cid, boxes in flickr.items():
        write_flickr_xml(out / "annotations" / "flickr" / f"{cid}.xml", boxes)


def load_config(out_dir: str | os.PathLike) -> SynthConfig:
    """The :class:`SynthConfig` a data set was generated with (from ``synth_config.json``)."""
    d = json.loads((Path(out_dir) / "synth_config.json").read_text())
    fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()
              if k in SynthConfig.__dataclass_fields__}
    return replace(SynthConfig(), **fields)
