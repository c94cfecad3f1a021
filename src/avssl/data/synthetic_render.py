"""Drawing, sound synthesis and mp4 writing for the synthetic audio-visual benchmark.

A *class* (:class:`ClassSpec`) pairs a visual signature (shape, hue, texture) with a sound
signature (pitch band, harmonic timbre, temporal pattern). An *instance*
(:class:`ObjectInstance`) is one drawn object of a class, with its own position, drift,
size, rotation, hue jitter and texture phase; a sounding instance also gets its own pitch,
rate and phase (:func:`synth_sound`). Drawing is vectorised numpy: an object is rendered,
anti-aliased from a signed-distance function, once per half-pixel phase of its drift and
pasted into each frame's crop. Clips are written with PyAV (:func:`write_mp4`).

Coordinates are in pixels of the square ``size x size`` frame, pixel ``(i, j)`` has its
centre at ``(x, y) = (j + 0.5, i + 0.5)``.
"""
from __future__ import annotations

import colorsys
import logging
import math
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SHAPES = ("disc", "square", "triangle", "ring", "cross", "diamond", "hexagon", "crescent")
TEXTURES = ("solid", "stripes", "checker", "dots")
TIMBRES: dict[str, tuple[float, ...]] = {
    "pure": (1.0,),
    "odd": (1.0, 0.0, 0.33, 0.0, 0.2, 0.0, 0.14),
    "saw": (1.0, 0.5, 0.33, 0.25, 0.2, 0.17),
    "bright": (1.0, 0.6, 0.45, 0.35, 0.3, 0.25, 0.2),
}
PATTERNS = ("steady", "pulsed", "am", "chirp")
_HUE_NAMES = ("red", "orange", "yellow", "lime", "green", "teal", "cyan", "azure",
              "blue", "violet", "magenta", "pink")
#: Fundamental-frequency range (Hz) split into one log-spaced band per class.
F_MIN, F_MAX = 150.0, 4000.0


@dataclass(frozen=True)
class ClassSpec:
    """One class: what it looks like and what it sounds like."""

    index: int
    name: str
    shape: str
    hue: float  # degrees
    texture: str
    texture_period: float  # in units of the object radius
    band: tuple[float, float]  # fundamental-frequency band, Hz
    timbre: str
    pattern: str
    rate: float  # Hz: pulse / modulation / sweep rate

    def to_dict(self) -> dict:
        """Human-readable signature for ``classes.json``."""
        d = asdict(self)
        return {
            "index": d["index"],
            "visual": {"shape": self.shape, "hue_deg": round(self.hue, 1), "texture": self.texture,
                       "texture_period_radii": round(self.texture_period, 3)},
            "sound": {"pitch_band_hz": [round(self.band[0], 1), round(self.band[1], 1)],
                      "timbre": self.timbre, "harmonic_amplitudes": list(TIMBRES[self.timbre]),
                      "pattern": self.pattern, "rate_hz": round(self.rate, 2)},
        }


def make_classes(k: int, sample_rate: int = 16000) -> list[ClassSpec]:
    """The ``k`` class signatures; they depend only on ``k`` (and the band ceiling on the rate).

    Hues are evenly spaced, fundamental bands are log-spaced and disjoint between
    ``F_MIN`` and ``min(F_MAX, 0.3 * sample_rate)``.
    """
    if k < 2:
        raise ValueError(f"need at least 2 classes, got {k}")
    f_max = min(F_MAX, 0.3 * sample_rate)
    edges = np.geomspace(F_MIN, f_max, k + 1)
    classes, seen = [], set()
    for c in range(k):
        hue = 360.0 * c / k
        shape = SHAPES[c % len(SHAPES)]
        name = f"{_HUE_NAMES[int(round(hue / 30.0)) % 12]}_{shape}"
        if name in seen:
            name = f"{name}{c}"
        seen.add(name)
        classes.append(ClassSpec(
            index=c, name=name, shape=shape, hue=hue, texture=TEXTURES[c % len(TEXTURES)],
            texture_period=0.35 + 0.1 * ((c * 5) % 3),
            band=(float(edges[c]), float(edges[c + 1])),
            timbre=list(TIMBRES)[(c + c // 4) % len(TIMBRES)],
            pattern=PATTERNS[(3 * c + 1) % len(PATTERNS)],
            rate=2.0 + (c * 1.37) % 4.0,
        ))
    return classes


@dataclass(frozen=True)
class ObjectInstance:
    """One drawn object: a rigid shape drifting at constant velocity (no spin).

    Positions in pixels at the reference time ``t_ref``; drawn positions are quantised to
    half a pixel (:func:`object_offset`) so that a few pre-rendered sprites serve all frames.
    """

    cls: int
    cx: float
    cy: float
    vx: float  # px / s
    vy: float
    radius: float  # px; the shape fits in this circle
    angle: float  # rad
    hue: float  # degrees, class hue + jitter
    sat: float
    val: float
    phase: tuple[float, float]  # texture phase (fractions of a period)
    t_ref: float


def shape_sdf(shape: str, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Signed distance (inside > 0, in radius units, approximately) of a unit-radius shape."""
    ap, aq = np.abs(p), np.abs(q)
    if shape == "disc":
        return 1.0 - np.hypot(p, q)
    if shape == "square":
        return 0.7 - np.maximum(ap, aq)
    if shape == "diamond":
        return (1.0 - ap - aq) * (1.0 / math.sqrt(2.0))
    if shape == "ring":
        r = np.hypot(p, q)
        return np.minimum(1.0 - r, r - 0.55)
    if shape == "cross":
        return np.maximum(np.minimum(0.95 - ap, 0.3 - aq), np.minimum(0.3 - ap, 0.95 - aq))
    if shape == "triangle":
        out = None
        for a in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3):
            d = 0.5 - (math.cos(a) * p + math.sin(a) * q)
            out = d if out is None else np.minimum(out, d)
        return out
    if shape == "hexagon":
        out = None
        for a in (0.0, math.pi / 3, 2 * math.pi / 3):
            d = 0.866 - np.abs(math.cos(a) * p + math.sin(a) * q)
            out = d if out is None else np.minimum(out, d)
        return out
    if shape == "crescent":
        return np.minimum(1.0 - np.hypot(p, q), np.hypot(p - 0.45, q) - 0.75)
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def _texture(texture: str, p: np.ndarray, q: np.ndarray, period: float,
             phase: tuple[float, float]) -> np.ndarray:
    """Texture weight in [0, 1] (1 = the dark secondary colour)."""
    if texture == "solid":
        return 0.15 * np.hypot(p, q)  # mild radial shading
    a = (p * (1.0 / period) + phase[0]) % 1.0
    if texture == "stripes":
        return (a < 0.5).astype(np.float32)
    b = (q * (1.0 / period) + phase[1]) % 1.0
    if texture == "checker":
        return ((a < 0.5) ^ (b < 0.5)).astype(np.float32)
    if texture == "dots":
        a -= 0.5
        b -= 0.5
        return (a * a + b * b < 0.09).astype(np.float32)
    raise ValueError(f"unknown texture {texture!r}; known: {TEXTURES}")


def seeded_rng(seed: int, *keys: int) -> np.random.Generator:
    """The NumPy generator of the stream ``(seed, *keys)``: every draw of a generated data set comes
    from one such stream per clip (or per plan), so results do not depend on the worker count."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, keys)]))


def hsv_rgb(h: float, s: float, v: float) -> np.ndarray:
    """One colour as float32 RGB in [0, 1] (hue in degrees)."""
    return np.asarray(colorsys.hsv_to_rgb((h % 360.0) / 360.0, s, v), dtype=np.float32)


def render_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random background: a muted colour under smooth shading, a gradient and grain.

    Shading multiplies the colour, so the background stays unsaturated (saturation < ~0.35)
    and never looks like an object. Returns uint8 (size, size, 3).
    """
    base = hsv_rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.3), rng.uniform(0.35, 0.75))
    n = int(rng.integers(3, 9))
    grid = np.concatenate([rng.normal(0.0, 0.2, size=(n, n, 1)), rng.normal(0.0, 0.02, size=(n, n, 3))], -1)
    smooth = upsample_bilinear(grid.astype(np.float32), size)  # (size, size, 4): shading, chroma
    ang = rng.uniform(0, 2 * np.pi)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    grad = (math.cos(ang) * coords[None, :] + math.sin(ang) * coords[:, None]) * rng.uniform(0.0, 0.6)
    grain = rng.standard_normal((size, size), dtype=np.float32) * np.float32(0.02)
    shade = np.clip(1.0 + smooth[..., 0] + grad + grain, 0.3, 1.6)[..., None]
    img = np.clip(base * shade + smooth[..., 1:], 0.0, 1.0)
    return (img * 255.0 + 0.5).astype(np.uint8)


def upsample_bilinear(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of an (n, n, C) grid spanning the frame to (size, size, C)."""
    n = grid.shape[0]
    pos = (np.arange(size) + 0.5) / size * (n - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, n - 2)
    f = (pos - lo).astype(np.float32)[:, None, None]
    rows = grid[lo] * (1 - f) + grid[lo + 1] * f  # (size, n, C)
    f = f[:, 0][None]
    return rows[:, lo] * (1 - f) + rows[:, lo + 1] * f


def object_offset(obj: ObjectInstance, t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Drift of the object at time(s) ``t`` from its reference position, in half-pixel steps.

    Returns ``(kx, ky)``: integer arrays, the offset being ``(kx / 2, ky / 2)`` pixels.
    """
    dt = np.asarray(t, dtype=np.float64) - obj.t_ref
    return np.rint(2 * obj.vx * dt).astype(int), np.rint(2 * obj.vy * dt).astype(int)


def _sprite(obj: ObjectInstance, spec: ClassSpec, x0: int, y0: int, w: int, h: int,
            hx: float, hy: float) -> tuple[np.ndarray, np.ndarray]:
    """The object, shifted by ``(hx, hy)`` pixels, on pixels ``[y0, y0+h) x [x0, x0+w)``.

    Returns ``(1 - alpha, alpha * colour * 255 + 0.5)``: float32 (h, w, 1) and (h, w, 3).
    """
    xs = np.arange(x0, x0 + w, dtype=np.float32) + (0.5 - obj.cx - hx)
    ys = np.arange(y0, y0 + h, dtype=np.float32) + (0.5 - obj.cy - hy)
    c, s = math.cos(obj.angle) / obj.radius, math.sin(obj.angle) / obj.radius
    p = c * xs[None, :] + s * ys[:, None]  # (h, w), radius units, object axes
    q = c * ys[:, None] - s * xs[None, :]
    alpha = np.clip(shape_sdf(spec.shape, p, q) * obj.radius + 0.5, 0.0, 1.0)
    shade = alpha * (1.0 - 0.45 * _texture(spec.texture, p, q, spec.texture_period, obj.phase))
    colour = (255.0 * hsv_rgb(obj.hue, obj.sat, obj.val)).astype(np.float32)
    return (1.0 - alpha)[..., None], shade[..., None] * colour + np.float32(0.5)


def draw_objects(frames: np.ndarray, objects: list[ObjectInstance], classes: list[ClassSpec],
                 times: np.ndarray) -> None:
    """Composite the objects, in list order, onto ``frames`` in place.

    Each object is rendered (anti-aliased, from its signed distance) once per half-pixel
    phase of its drift, then pasted at integer offsets; only its bounding crop is touched.
    The texture darkens the colour (same hue and saturation, value x 0.55).

    Args:
        frames: uint8 (T, H, W, 3).
        times: float (T,) seconds of each frame.
    """
    height, width = frames.shape[1:3]
    for obj in objects:
        spec = classes[obj.cls]
        kx, ky = object_offset(obj, times)
        x0, y0 = int(math.floor(obj.cx - obj.radius)) - 2, int(math.floor(obj.cy - obj.radius)) - 2
        w = int(math.ceil(obj.cx + obj.radius)) + 3 - x0
        h = int(math.ceil(obj.cy + obj.radius)) + 3 - y0
        sprites: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        for t_idx in range(len(times)):
            phase = (int(kx[t_idx]) % 2, int(ky[t_idx]) % 2)
            if phase not in sprites:
                sprites[phase] = _sprite(obj, spec, x0, y0, w, h, phase[0] / 2, phase[1] / 2)
            keep, paint = sprites[phase]
            ox, oy = (int(kx[t_idx]) - phase[0]) // 2, (int(ky[t_idx]) - phase[1]) // 2
            a0, a1 = max(x0 + ox, 0), min(x0 + ox + w, width)
            b0, b1 = max(y0 + oy, 0), min(y0 + oy + h, height)
            if a1 <= a0 or b1 <= b0:
                continue
            sx, sy = a0 - x0 - ox, b0 - y0 - oy
            crop = frames[t_idx, b0:b1, a0:a1]
            out = crop * keep[sy:sy + b1 - b0, sx:sx + a1 - a0]
            out += paint[sy:sy + b1 - b0, sx:sx + a1 - a0]
            crop[...] = out  # truncation after the +0.5 in paint rounds; values < 255.5


def shape_extent(shape: str, angle: float, resolution: int = 256) -> tuple[float, float, float, float]:
    """Extent ``(xmin, xmax, ymin, ymax)`` of a unit-radius shape rotated by ``angle``.

    In radius units relative to the centre, found on a ``resolution``-point grid across the
    bounding circle (precision 2 / resolution).
    """
    g = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution * 2.0 - 1.0
    c, s = math.cos(angle), math.sin(angle)
    inside = shape_sdf(shape, c * g[None, :] + s * g[:, None], c * g[:, None] - s * g[None, :]) > 0
    cols, rows = np.flatnonzero(inside.any(0)), np.flatnonzero(inside.any(1))
    half = 1.0 / resolution
    return (float(g[cols[0]]) - half, float(g[cols[-1]]) + half,
            float(g[rows[0]]) - half, float(g[rows[-1]]) + half)


def object_box(obj: ObjectInstance, spec: ClassSpec, t: float, size: int,
               resolution: int = 256) -> tuple[float, float, float, float]:
    """Tight axis-aligned box ``(x1, y1, x2, y2)`` of the drawn shape at time ``t``, in [0, 1].

    From :func:`shape_extent`, so it does not depend on the frame size.
    """
    xmin, xmax, ymin, ymax = shape_extent(spec.shape, obj.angle, resolution)
    kx, ky = object_offset(obj, t)
    cx, cy = obj.cx + float(kx) / 2, obj.cy + float(ky) / 2
    box = (cx + obj.radius * xmin, cy + obj.radius * ymin, cx + obj.radius * xmax, cy + obj.radius * ymax)
    return tuple(float(np.clip(v / size, 0.0, 1.0)) for v in box)


def synth_sound(spec: ClassSpec, rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """One instance of a class's sound, unit RMS. Returns float32 (n,).

    The fundamental stays inside the inner 80% (log scale) of the class band; pitch, rate,
    harmonic phases and pattern phase vary per instance.
    """
    lo, hi = math.log2(spec.band[0]), math.log2(spec.band[1])
    width = hi - lo
    lo, hi = lo + 0.1 * width, hi - 0.1 * width
    t = np.arange(n, dtype=np.float64) / sample_rate
    rate = spec.rate * rng.uniform(0.9, 1.1)
    ph = rng.uniform(0, 1)
    if spec.pattern == "chirp":
        span = 0.6 * (hi - lo)
        start = rng.uniform(lo, hi - span)
        saw = (rate * t + ph) % 1.0
        f = 2.0 ** (start + span * saw)
    else:
        f = np.full(n, 2.0 ** rng.uniform(lo, hi))
    phase = 2 * np.pi * np.cumsum(f) / sample_rate
    amps = TIMBRES[spec.timbre]
    wave = np.zeros(n)
    for h, a in enumerate(amps, 1):
        if a > 0 and h * f.max() < 0.45 * sample_rate:
            wave += a * np.sin(h * phase + rng.uniform(0, 2 * np.pi))
    if spec.pattern == "pulsed":
        wave *= 0.5 + 0.5 * np.tanh(6.0 * np.sin(2 * np.pi * (rate * t + ph)))
    elif spec.pattern == "am":
        wave *= 1.0 - 0.8 * (0.5 - 0.5 * np.cos(2 * np.pi * (rate * 2.0 * t + ph)))
    fade = min(n // 2, int(0.01 * sample_rate))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        wave[:fade] *= ramp
        wave[n - fade:] *= ramp[::-1]
    return (wave / max(float(np.sqrt(np.mean(wave ** 2))), 1e-8)).astype(np.float32)


def background_noise(rng: np.random.Generator, n: int, colour: str) -> np.ndarray:
    """White or pink (1/f power) noise, unit RMS. Returns float32 (n,)."""
    white = rng.standard_normal(n)
    if colour == "pink":
        spec = np.fft.rfft(white)
        f = np.arange(spec.shape[0], dtype=np.float64)
        f[0] = 1.0
        white = np.fft.irfft(spec / np.sqrt(f), n)
    elif colour != "white":
        raise ValueError(f"noise colour must be 'white' or 'pink', not {colour!r}")
    return (white / max(float(np.sqrt(np.mean(white ** 2))), 1e-8)).astype(np.float32)


def video_codec() -> str:
    """The best available H.264 encoder in this PyAV; ``mpeg4`` (with a warning) otherwise."""
    import av

    for name in ("libx264", "libopenh264", "h264"):
        if name in av.codecs_available:
            try:
                av.codec.Codec(name, "w")
                return name
            except (ValueError, av.FFmpegError):  # listed but not an encoder
                continue
    log.warning("no H.264 encoder in this PyAV/FFmpeg build; falling back to mpeg4 (MPEG-4 part 2)")
    return "mpeg4"


def write_mp4(path: Path, frames: np.ndarray, audio: np.ndarray, fps: float, sample_rate: int,
              codec: str = "libx264", preset: str = "ultrafast") -> None:
    """Encode uint8 RGB frames (T, H, W, 3) and mono float32 audio (N,) into an mp4."""
    import av

    options = {"libx264": {"preset": preset, "crf": "20"},
               "libopenh264": {"b": "2M"}, "mpeg4": {"qscale": "3"}}.get(codec, {})
    options["threads"] = "1"  # one clip per worker process; keeps encoding deterministic
    rate = Fraction(fps).limit_denominator(1001)
    tmp = path.with_name(path.name + ".part.mp4")
    try:
        with av.open(str(tmp), "w", format="mp4") as out:
            vs = out.add_stream(codec, rate=rate, options=options)
            vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            aus = out.add_stream("aac", rate=sample_rate, layout="mono", options={"aac_coder": "fast"})
            aus.bit_rate = 64000
            for i, f in enumerate(frames):
                vf = av.VideoFrame.from_ndarray(f, format="rgb24")
                vf.pts = i
                out.mux(vs.encode(vf))
            out.mux(vs.encode())
            step = 1024
            for s in range(0, len(audio), step):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[None, s:s + step]),
                                                format="fltp", layout="mono")
                af.sample_rate, af.pts = sample_rate, s
                out.mux(aus.encode(af))
            out.mux(aus.encode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
