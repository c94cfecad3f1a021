"""Train a method from a YAML preset plus key=value overrides (resolution: defaults <- preset <- overrides).

The preset holds only the differences from the defaults of avssl.train_config.TrainConfig
(method, method options, data, optim, train). The run folder (train.out_dir, or --out) receives
config.yaml (the resolved config), metrics.jsonl, TensorBoard logs, last.pt (every epoch) and
best.pt (the best epoch on the val split by train.select_on). --resume continues a run exactly
from its last.pt (or from the checkpoint given). Multi-GPU: launch with torchrun; the process
group is initialised from its environment, with a timeout of train.dist_timeout_s seconds
(env AVSSL_DIST_TIMEOUT overrides it): a rank that stalls makes the others stop with an error
naming it instead of hanging.

Examples:
    avssl synth data/synth --clips 200
    avssl train configs/synthetic/ssltie.yaml data.train_manifest=data/synth/manifest.jsonl \\
        data.val_manifest=data/synth/manifest.jsonl data.annotations=data/synth/annotations/vggss.json
    avssl train configs/ssltie/flickr10k.yaml data.train_manifest=... --out runs/flickr10k
    avssl train configs/ssltie/flickr10k.yaml --out runs/flickr10k --resume
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from avssl.commands import error_text

HELP = "train a method (SSL-TIE, ...) from a YAML preset and key=value overrides"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG.yaml", help="preset file (only overrides of the defaults), or a packaged preset name such as "
                        "synthetic/ssltie or ssltie/flickr10k")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. optim.lr=3e-4 train.epochs=5")
    parser.add_argument("--out", default=None, metavar="DIR", help="run folder (sets train.out_dir)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                        help="continue from OUT/last.pt, or from the checkpoint given")


def run(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from avssl.checkpoint import CheckpointError
    from avssl.config import ConfigError, load_config
    from avssl.data.decode import MediaError
    from avssl.data.manifest import ManifestError
    from avssl.engine.train import fit
    from avssl.train_config import TrainConfig

    overrides = list(args.overrides) + ([f"train.out_dir={args.out}"] if args.out else [])
    try:
        cfg = load_config(TrainConfig, [args.config], overrides)
    except (ConfigError, ValueError) as e:
        print(f"avssl train: error: {error_text(e)}", file=sys.stderr)
        return 2
    started = False
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        from avssl.distributed import init_process_group

        try:
            init_process_group(timeout_s=cfg.train.dist_timeout_s)
        except ValueError as e:  # a malformed AVSSL_DIST_TIMEOUT
            print(f"avssl train: error: {error_text(e)}", file=sys.stderr)
            return 2
        started = True
    try:
        result = fit(cfg, resume=args.resume)
    except (ManifestError, MediaError, CheckpointError, FileExistsError, ValueError) as e:
        print(f"avssl train: error: {error_text(e)}", file=sys.stderr)
        return 2
    finally:
        if started:
            dist.destroy_process_group()
    summary = {k: result[k] for k in ("run_dir", "epochs", "step", "final_loss", "best")}
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(json.dumps(summary, indent=2))
    return 0
