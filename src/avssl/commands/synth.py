"""Write the built-in synthetic audio-visual benchmark as real mp4 files (H.264 + AAC).

Each clip shows a textured background and 1-3 objects of distinct classes; one visible
object is the sound source (two with --two-source-frac, none with --offscreen-frac), the
others are silent distractors. A class pairs a shape/hue/texture with a pitch band, a
timbre and a temporal pattern (classes.json lists them).

OUT receives clips/<id>.mp4, manifest.jsonl (labels, split, annotation time, boxes),
classes.json, the sounding boxes at the annotation time as annotations/vggss.json and
annotations/flickr/<id>.xml, and reference_scores.json (a perfect-box, a centre-prior and
a random heatmap scored on the test split).

With --source cutouts:DIR_OR_DEB the scenes are semi-real instead: real cut-out pictures
(PNG with alpha) with their own real recordings (<name>.ogg/.wav/.flac beside each picture),
on photographs from --backgrounds DIR_OR_DEB (or the synthetic textures); OUT also receives
masks/<id>.png, the sounding cut-outs' exact visible pixels at the annotation frame (see
avssl.data.semireal). Debian's tuxpaint-stamps-default package is such a source; a .deb is
read directly (`apt-get download tuxpaint-stamps-default gnome-backgrounds`).

Clip i is drawn from an RNG of (seed, i): the result does not depend on --workers.

Examples:
    avssl synth data/synth --clips 1000 --seed 0 --workers 8
    avssl synth data/semireal --clips 3000 --source cutouts:tuxpaint-stamps-default_2022.06.04-1_all.deb \
        --exclude symbols --backgrounds gnome-backgrounds_43.1-1_all.deb
"""
from __future__ import annotations

import argparse
import logging

from avssl.commands import positive_int

HELP = "write the synthetic audio-visual benchmark (mp4 clips, manifest, box annotations)"

log = logging.getLogger(__name__)


def _floats(n: int | None):
    def parse(text: str) -> tuple[float, ...]:
        try:
            vals = tuple(float(v) for v in text.split(","))
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from e
        if n is not None and len(vals) != n:
            raise argparse.ArgumentTypeError(f"expected {n} comma-separated numbers, got {text!r}")
        return vals
    return parse


def _noise(text: str) -> tuple[float, float] | None:
    if text.lower() in ("none", "off"):
        return None
    vals = _floats(None)(text)
    if len(vals) == 1:
        return (vals[0], vals[0])
    if len(vals) != 2:
        raise argparse.ArgumentTypeError(f"--noise-db takes SNR or MIN,MAX or 'none', got {text!r}")
    return vals  # type: ignore[return-value]


def comma_names(text: str) -> tuple[str, ...]:
    """argparse type: ``a,b,c`` -> ``("a", "b", "c")`` (empty items dropped)."""
    return tuple(x for x in text.split(",") if x)


def add_cutout_arguments(parser: argparse.ArgumentParser, source_help: str, needs: str) -> None:
    """``--source cutouts:PATH``, ``--backgrounds`` and ``--exclude`` (``avssl synth`` and ``avssl demo``);
    ``source_help`` / ``needs`` begin their help texts."""
    parser.add_argument("--source", metavar="cutouts:PATH", default=None,
                        help=f"{source_help}a folder or .deb of <name>.png + <name>.ogg|wav|flac pairs")
    parser.add_argument("--backgrounds", metavar="PATH", default=None,
                        help=f"{needs}a folder or .deb of photographs for the backgrounds")
    parser.add_argument("--exclude", type=comma_names, default=(),
                        metavar="FOLDER,...", help=f"{needs}folders of the source to leave out")


def cutout_source(text: str) -> str:
    """The PATH of ``--source cutouts:PATH``; ValueError for any other form."""
    kind, _, path = text.partition(":")
    if kind != "cutouts" or not path:
        raise ValueError(f"--source takes cutouts:PATH (a folder or .deb of cut-outs and recordings), got {text!r}")
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from avssl.data.semireal import SemiRealConfig
    from avssl.data.synthetic import PLACEMENTS, SynthConfig

    d, sr = SynthConfig(), SemiRealConfig()
    parser.add_argument("out", metavar="OUT", help="output folder")
    parser.add_argument("--clips", type=positive_int, required=True, help="number of clips")
    parser.add_argument("--seed", type=int, default=0, help="data-set seed (default 0)")
    parser.add_argument("--classes", type=int, default=None, help=f"number of classes (default {d.classes}; "
                        "not with --source, whose pairs are the classes)")
    parser.add_argument("--duration", type=float, default=d.duration, help=f"seconds per clip (default {d.duration:g})")
    parser.add_argument("--size", type=int, default=d.size, help=f"frame size in pixels, even (default {d.size})")
    parser.add_argument("--fps", type=float, default=d.fps, help=f"frame rate (default {d.fps:g})")
    parser.add_argument("--sample-rate", type=int, default=d.sample_rate, help=f"audio rate in Hz (default {d.sample_rate})")
    parser.add_argument("--workers", type=positive_int, default=None, help="worker processes (default: all CPUs)")
    parser.add_argument("--two-source-frac", type=float, default=d.two_source_frac,
                        help="fraction of clips with two visible sounding objects (default 0)")
    parser.add_argument("--offscreen-frac", type=float, default=d.offscreen_frac,
                        help="fraction of clips whose sounding class is not visible (default 0)")
    parser.add_argument("--noise-db", type=_noise, default=d.noise_db, metavar="MIN,MAX",
                        help="background-noise SNR range in dB, or 'none' "
                        f"(default {d.noise_db[0]:g},{d.noise_db[1]:g})")
    parser.add_argument("--object-size", type=_floats(2), default=None, metavar="MIN,MAX",
                        help="sounding-object box area as a share of the frame "
                        f"(default {d.object_size[0]:g},{d.object_size[1]:g}; with --source every cut-out's, "
                        f"default {sr.object_size[0]:g},{sr.object_size[1]:g})")
    parser.add_argument("--placement", choices=PLACEMENTS, default=None,
                        help="where sounding objects go: corner (near a corner), spread (off-centre), centre, "
                        f"uniform (default {d.placement}; spread with --object-size 0.1,0.45 is the old default; "
                        "not with --source)")
    parser.add_argument("--split", type=_floats(3), default=d.split, metavar="TRAIN,VAL,TEST",
                        help="split fractions (default 0.7,0.15,0.15)")
    parser.add_argument("--preset", default=d.preset,
                        choices=("ultrafast", "superfast", "veryfast", "faster", "fast", "medium"),
                        help=f"libx264 speed preset (default {d.preset})")
    add_cutout_arguments(parser, "semi-real scenes from ", "with --source: ")
    parser.add_argument("--holdout", type=comma_names, default=(),
                        metavar="NAME,...", help="with --source: classes never shown or heard in training")
    parser.add_argument("--only", type=comma_names, default=(),
                        metavar="NAME,...", help="with --source: keep only these classes (cut-out names)")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip scoring the reference heatmaps on the test split")


def _semireal(args: argparse.Namespace):
    from avssl.data.semireal import SemiRealConfig

    path = cutout_source(args.source)
    if args.classes is not None or args.placement is not None:
        raise ValueError("--classes and --placement do not apply to --source (the pairs are the classes)")
    d = SemiRealConfig()
    cfg = SemiRealConfig(
        size=args.size, duration=args.duration, fps=args.fps, sample_rate=args.sample_rate,
        object_size=tuple(args.object_size or d.object_size), two_source_frac=args.two_source_frac,
        offscreen_frac=args.offscreen_frac, snr_db=args.noise_db, split=tuple(args.split),
        holdout=args.holdout, exclude=args.exclude, only=args.only, workers=args.workers, preset=args.preset)
    return path, cfg


def run(args: argparse.Namespace) -> int:
    from avssl.data.cutouts import CutoutSourceError
    from avssl.data.synthetic import SynthConfig, generate

    try:
        if args.source is not None:
            path, cfg = _semireal(args)
        else:
            if args.backgrounds or args.holdout or args.exclude or args.only:
                raise ValueError("--backgrounds, --holdout, --exclude and --only need --source")
            d = SynthConfig()
            cfg = SynthConfig(
                classes=args.classes or d.classes, duration=args.duration, size=args.size, fps=args.fps,
                sample_rate=args.sample_rate, two_source_frac=args.two_source_frac,
                offscreen_frac=args.offscreen_frac, noise_db=args.noise_db,
                object_size=tuple(args.object_size or d.object_size), placement=args.placement or d.placement,
                split=tuple(args.split), workers=args.workers, preset=args.preset,
            )
    except ValueError as e:
        log.error("invalid option: %s", e)
        return 2
    if args.source is not None:
        from avssl.data.semireal import generate_semireal

        try:
            manifest = generate_semireal(args.out, path, clips=args.clips, seed=args.seed, config=cfg,
                                         backgrounds=args.backgrounds)
        except (CutoutSourceError, ValueError) as e:
            log.error("%s", e)
            return 2
    else:
        manifest = generate(args.out, clips=args.clips, seed=args.seed, config=cfg)
    if not args.no_reference:
        from avssl.eval.references import reference_scores

        reference_scores(args.out, seed=args.seed)
    log.info("wrote %d clips; manifest %s", args.clips, manifest)
    return 0
