"""Evaluate a trained checkpoint: localisation (cIoU@0.5, AUC, adaptive cIoU, pointing) and retrieval.

Rebuilds the model from the checkpoint alone (its saved config names the method and its
options) and reads the clips of MANIFEST (split --split; --split all keeps every record) with the
checkpoint's data settings (frame choice, image size, audio length and rate). Writes
heatmaps.npz (one map per clip id, readable by `avssl score --pred`), frame_sizes.json (each
clip's frame width and height, for `avssl score --boxes full-frame`), best_worst.png (overlays
of the best and worst clips by cIoU, boxes in green; with --gt) and scores.json (all scorer
measures under the standard protocol, plus recall@1/5/10: audio->audio by class,
audio<->visual by class and by instance) into --out, and prints the scores as JSON.

``--audio-control swap|silent|both`` scores the same frames again with each clip's recording
replaced (another clip's, of another class; or silence): the control's scores sit beside the
normal ones in scores.json (``audio_control``), with ``audio_dependence`` (map correlation own vs
control, share of clips whose peak moved, the drop of every score) and heatmaps_<control>.npz. A
localisation score the control also reaches is not evidence that the model listens.

A fine-tuned classifier (method equiav_ft) is scored by its pipeline's own evaluation instead:
mAP, mAUC, d-prime and top-1 accuracy over the whole set, written to scores.json.

Examples:
    avssl eval runs/synth_ft/best.pt --data data/synth/manifest.jsonl
    avssl eval runs/synth/best.pt --data data/synth/manifest.jsonl --gt data/synth/annotations/vggss.json
    avssl eval runs/flickr/best.pt --data flickr_test.jsonl --gt Annotations/ --format flickr --split all
    avssl eval runs/synth/best.pt --data data/synth/manifest.jsonl --gt data/synth/annotations/vggss.json \
        --audio-control both
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

from avssl.atomic import atomic_write_text, remove_stale_tmp
from avssl.commands import add_sample_rate_option, error_text, non_negative_int, positive_int

HELP = "evaluate a checkpoint on a test set: heatmaps.npz, scores.json (cIoU, AUC, retrieval; mAP/accuracy)"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="an avssl checkpoint (best.pt / last.pt)")
    parser.add_argument("--data", required=True, metavar="MANIFEST",
                        help="manifest of the test clips (or the shards.json of `avssl prepare --format shards`)")
    parser.add_argument("--gt", default=None, metavar="ANNOTATIONS",
                        help="vggss.json or a folder of Flickr-SoundNet XML files (omit: retrieval only)")
    parser.add_argument("--format", choices=("vggss", "flickr"), default=None,
                        help="annotation format (default: flickr for a folder, vggss for a file)")
    parser.add_argument("--split", default="test", help="manifest split to evaluate ('all': every record)")
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (default: next to the checkpoint)")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="default: the checkpoint's eval_batch_size")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--workers", type=non_negative_int, default=None, help="data loader workers")
    parser.add_argument("--no-retrieval", action="store_true", help="skip the retrieval metrics")
    parser.add_argument("--retrieval-fp16", action="store_true",
                        help="instance retrieval in the released EquiAV script's float16 arithmetic (its ties "
                             "raise the recalls; default fp32), to compare with numbers that script printed")
    parser.add_argument("--audio-control", choices=("off", "swap", "silent", "both"), default="off",
                        help="also score every clip with its recording replaced: 'swap' gives it another clip's "
                             "(of another class where labels exist; a fixed derangement), 'silent' zeros of the "
                             "same length; scores.json then holds the control's scores (audio_control) and how "
                             "much the maps and scores depend on the recording (audio_dependence: map "
                             "correlation own vs control, share of peaks moved, drop of every score)")
    parser.add_argument("--boxes", choices=("crop", "full-frame"), default="crop",
                        help="VGG-SS boxes are normalised to the full frame: 'crop' (default, the released "
                             "protocol) lays them on the centre crop the model sees unchanged; 'full-frame' maps "
                             "each into the crop and clips it (a deviation, for wide frames). Either way "
                             "scores.json's 'boxes' counts clips whose boxes lie mostly outside the crop (warned)")
    add_sample_rate_option(parser, "every clip's audio")
    parser.add_argument("--per-class", type=positive_int, default=None, metavar="N",
                        help="keep only the first N clips of each class (manifest order), e.g. 5 as EquiAV's "
                             "retrieval subset; clips without a label are dropped")


def per_class_subset(records, n: int) -> list:
    """The first ``n`` records of each first label, in manifest order (unlabelled records dropped)."""
    if n < 1:
        raise ValueError(f"--per-class must be >= 1, got {n}")
    seen: dict[str, int] = {}
    kept = []
    for r in records:
        if r.labels and seen.get(r.labels[0], 0) < n:
            seen[r.labels[0]] = seen.get(r.labels[0], 0) + 1
            kept.append(r)
    return kept


def _classification(args, model, cfg, pipe, dataset, device) -> int:
    from torch.utils.data import DataLoader

    from avssl.data.controls import AudioControlDataset, parse_audio_control
    from avssl.eval.controls import score_drops

    loader = DataLoader(dataset, batch_size=args.batch_size or cfg.train.eval_batch_size, shuffle=False,
                        num_workers=cfg.data.num_workers if args.workers is None else args.workers,
                        collate_fn=pipe.collate)
    model, transform = model.to(device), pipe.batch_transform(cfg, device)
    scores = pipe.evaluate(model, loader, transform, device, cfg)
    for name in parse_audio_control(args.audio_control):  # the classifier on the frames with other audio
        control = AudioControlDataset(dataset, name)
        loader = DataLoader(control, batch_size=loader.batch_size, shuffle=False, num_workers=loader.num_workers,
                            collate_fn=pipe.collate)
        c_scores = pipe.evaluate(model, loader, transform, device, cfg)
        scores.setdefault("audio_control", {})[name] = {**control.describe(), **c_scores}
        scores.setdefault("audio_dependence", {})[name] = {"drop": score_drops(scores, c_scores)}
    return _write_scores(args, _out_dir(args), scores)


def _out_dir(args: argparse.Namespace) -> Path:
    out_dir = Path(args.out) if args.out else Path(args.checkpoint).parent / f"eval_{Path(args.checkpoint).stem}"
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(out_dir)  # left by a killed write
    return out_dir


def _write_scores(args: argparse.Namespace, out_dir: Path, scores: dict) -> int:
    """scores.json in ``out_dir`` (with what was evaluated, written atomically), and the same JSON on stdout."""
    scores = {"checkpoint": str(args.checkpoint), "data": str(args.data), "split": args.split, **scores}
    atomic_write_text(out_dir / "scores.json", json.dumps(scores, indent=2))
    print(json.dumps(scores, indent=2))
    return 0


def run(args: argparse.Namespace) -> int:
    from avssl.checkpoint import CheckpointError
    from avssl.config import ConfigError
    from avssl.data.annotations import AnnotationError
    from avssl.data.controls import parse_audio_control
    from avssl.data.decode import MediaError
    from avssl.data.manifest import ManifestError, read_manifest
    from avssl.engine.evaluate import (
        best_worst_sheet,
        evaluate_localisation,
        load_annotations,
        save_frame_sizes,
        save_heatmaps,
    )
    from avssl.engine.train import resolve_device
    from avssl.registry import load_method, pipeline_for
    from avssl.train_config import audio_rate_warning, config_from_checkpoint, trained_audio

    try:
        model, ckpt = load_method(args.checkpoint)
        cfg = config_from_checkpoint(ckpt, str(args.checkpoint))
        model_audio = trained_audio(ckpt, cfg)
        if args.sample_rate is not None:
            cfg = replace(cfg, data=replace(cfg.data, sample_rate=args.sample_rate))
        records = read_manifest(args.data, split=None if args.split == "all" else args.split)
        if args.per_class is not None:
            records = per_class_subset(records, args.per_class)
        if not records:
            raise ValueError(f"{args.data}: no clips of split {args.split!r}")
        fmt = args.format or ("flickr" if args.gt and Path(args.gt).is_dir() else "vggss")
        classes = (ckpt.get("extra") or {}).get("classes")
        pipe = pipeline_for(cfg.method)
        dataset = pipe.dataset(records, cfg, train=False, classes=classes)
        if pipe.evaluate is not None:
            return _classification(args, model, cfg, pipe, dataset, resolve_device(args.device))
        scores, out = evaluate_localisation(
            model, records, cfg, args.gt, fmt, device=resolve_device(args.device), batch_size=args.batch_size,
            with_retrieval=not args.no_retrieval, classes=classes, num_workers=args.workers, dataset=dataset,
            retrieval_fp16=args.retrieval_fp16, audio_controls=parse_audio_control(args.audio_control),
            boxes_mode=args.boxes)
    except (CheckpointError, ConfigError, ManifestError, MediaError, AnnotationError, ValueError) as e:
        print(f"avssl eval: error: {error_text(e)}", file=sys.stderr)
        return 2
    scores["model_audio"] = model_audio
    warning = audio_rate_warning(model_audio, out.rate_counts())
    if warning:
        log.warning("%s", warning)
    out_dir = _out_dir(args)
    save_heatmaps(out_dir / "heatmaps.npz", out.heatmaps)
    if out.frame_sizes:
        save_frame_sizes(out_dir / "frame_sizes.json", out.frame_sizes)
    for name, maps in (out.controls or {}).items():
        save_heatmaps(out_dir / f"heatmaps_{name}.npz", maps)
    if args.gt:
        sheet = best_worst_sheet(dataset, out.heatmaps, load_annotations(args.gt, fmt), fmt, out_dir / "best_worst.png")
        scores["contact_sheet"] = str(sheet) if sheet else None
    return _write_scores(args, out_dir, scores)
