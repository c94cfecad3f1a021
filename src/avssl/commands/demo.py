"""Run the main job end to end on the built-in synthetic data set and write a report.

Steps (a rerun reuses what is already there):
  1. generate the synthetic benchmark into OUT/data (real H.264 + AAC mp4 clips, boxes);
  2. train each of --methods with its packaged preset (`synthetic/ssltie`: SSL-TIE;
     `synthetic/equiav`: a tiny EquiAV) for each --seeds value (OUT/runs/<method>_seed<S>;
     the checkpoint is chosen on the validation split);
  3. evaluate the trained and the untrained models on the test split, beside the reference
     maps (centre prior, perfect box, random): cIoU@0.5, AUC, adaptive cIoU@0.5, pointing
     accuracy (EquiAV: zero-shot maps), retrieval recall, linear-probe accuracy;
  4. write OUT/report.html and OUT/report.json (same numbers), OUT/training_curve.png and
     OUT/best_worst_<method>.png.

KEY=VALUE overrides apply to every method's preset (ssltie.* options only matter to SSL-TIE,
equiav.* only to EquiAV). Overrides may come before or after the --options.

Examples:
    avssl demo runs/demo
    avssl demo runs/demo3 --seeds 0,1,2
    avssl demo runs/demo_noequi ssltie.equivariance=false --methods ssltie
    avssl demo runs/equiav_nointra equiav.weight_intra_a=0 equiav.weight_intra_v=0 --methods equiav
"""
from __future__ import annotations

import argparse
import json
import logging

from avssl.commands.synth import add_cutout_arguments, comma_names, cutout_source

HELP = "run the demo (synthetic data -> SSL-TIE and EquiAV training -> evaluation) and write an HTML + JSON report"

log = logging.getLogger(__name__)


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="output folder (data, runs, report)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="overrides of the training preset, e.g. ssltie.equivariance=false")
    parser.add_argument("--clips", type=int, default=600, help="synthetic clips to generate (default 600)")
    parser.add_argument("--size", type=int, default=128, help="synthetic frame size in pixels (default 128)")
    parser.add_argument("--data-seed", type=int, default=0, help="synthetic data seed (default 0)")
    parser.add_argument("--seeds", type=_seeds, default=(0,), help="training seeds, e.g. 0,1,2 (default 0)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the preset's)")
    parser.add_argument("--workers", type=int, default=None, help="data generation processes (default: all cores)")
    parser.add_argument("--methods", type=comma_names, default=("ssltie", "equiav"),
                        help="methods to train and compare, comma-separated (default ssltie,equiav)")
    parser.add_argument("--data", choices=("synthetic", "semireal"), default="synthetic",
                        help="synthetic (default: the built-in benchmark) or semireal (real cut-outs, --source)")
    add_cutout_arguments(parser, "with --data semireal: ", "with --data semireal: ")


def run(args: argparse.Namespace) -> int:
    from avssl.demo import run_demo

    source = None
    if args.data == "semireal":
        try:
            source = cutout_source(args.source or "")
        except ValueError as e:
            log.error("--data semireal: %s", e)
            return 2
    elif args.source or args.backgrounds:
        log.error("--source and --backgrounds need --data semireal")
        return 2
    report = run_demo(args.out, clips=args.clips, data_seed=args.data_seed, seeds=args.seeds, epochs=args.epochs,
                      workers=args.workers, size=args.size, overrides=args.overrides,
                      methods=args.methods, source=source, backgrounds=args.backgrounds, exclude=args.exclude)
    print(json.dumps({"report": f"{args.out}/report.html", "localisation": report["localisation"],
                      "retrieval": report["retrieval"], "probe": report["probe"]}, indent=2))
    return 0
