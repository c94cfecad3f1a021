"""Score sound-localisation heatmaps with the standard protocol (cIoU@0.5, AUC; docs/methods.md §1.5).

PRED.npz maps each sample id (the array name) to a 2-D heatmap of any resolution (14x14,
224x224, ...). --gt is a VGG-SS ``vggss.json`` or a folder of Flickr-SoundNet ``<id>.xml`` files
(--format is inferred from it unless given). The result is printed as JSON: cIoU@0.5, AUC and
mean cIoU under the chosen protocol, plus, always, the adaptive-threshold cIoU@0.5 and the
pointing accuracy (the median rule caps cIoU at twice the box area for small boxes). Ids that
could not be scored are listed: missing_pred, missing_gt, invalid (NaN/inf maps, or an error
with --strict). Samples without a ground-truth pixel (a box outside the image, empty after
clipping) stay in N as failures, as in the official validate() (cIoU 0/0 = NaN, below every
threshold); they are listed in empty_gt and counted in n_empty_gt, and --exclude-empty-gt
drops them from N instead.

--boxes full-frame --frame-sizes SIZES.json (frame_sizes.json of `avssl eval`) maps each
full-frame VGG-SS box into the centre crop the heatmap covers, clipped (a deviation from the
released protocol, which lays the boxes on the crop unchanged); --frame-sizes alone counts the
clips whose boxes lie mostly outside the crop ("boxes" in the output).

Protocol variants: --protocol median (default: strictly above the value at sorted index
H*W//2), median_ge (>=), adaptive (top-k pixels, k = ground-truth pixels), fixed (>= 0.5 after
min-max); --upsample bilinear (OpenCV INTER_LINEAR, default) or bicubic.

Examples:
    avssl score --pred heatmaps.npz --gt data/vggss.json
    avssl score --pred heatmaps.npz --gt data/flickr/Annotations --format flickr --per-sample out.csv
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

HELP = "score localisation heatmaps (npz) against VGG-SS / Flickr-SoundNet boxes: cIoU@0.5, AUC"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, metavar="PRED.npz", help="heatmaps: one 2-D array per sample id")
    parser.add_argument("--gt", required=True, metavar="ANNOTATIONS",
                        help="VGG-SS vggss.json, or a folder of Flickr-SoundNet <id>.xml files")
    parser.add_argument("--format", choices=("vggss", "flickr"), default=None,
                        help="annotation format (default: flickr for a folder, vggss for a file)")
    parser.add_argument("--protocol", choices=("median", "median_ge", "adaptive", "fixed"), default="median",
                        help="thresholding rule (default: median, the released protocol)")
    parser.add_argument("--upsample", choices=("bilinear", "bicubic"), default="bilinear",
                        help="heatmap upsampling to 224x224 (default: bilinear)")
    parser.add_argument("--size", type=int, default=224, help="evaluation resolution (default 224)")
    parser.add_argument("--per-sample", metavar="OUT.csv", default=None,
                        help="also write id, ciou, adaptive_ciou, pointing_hit, confidence per sample")
    parser.add_argument("--silent", metavar="IDS.txt", default=None,
                        help="file listing ids of silent pairs (one per line): adds open-set AP / max-F1")
    parser.add_argument("--masks", metavar="MANIFEST.jsonl", default=None,
                        help="also score against the exact masks its records name (a semi-real set from "
                        "`avssl synth --source`): adds a \"mask\" section")
    parser.add_argument("--boxes", choices=("crop", "full-frame"), default="crop",
                        help="VGG-SS boxes are normalised to the full frame: 'crop' (default, the released "
                             "protocol) lays them on the heatmap's centre crop unchanged; 'full-frame' maps each into "
                             "the crop (needs --frame-sizes)")
    parser.add_argument("--frame-sizes", metavar="SIZES.json", default=None,
                        help="{id: [width, height]} of each clip's frame, as `avssl eval` writes "
                             "(frame_sizes.json): counts the boxes lying mostly outside the centre crop, and "
                             "--boxes full-frame maps them")
    parser.add_argument("--strict", action="store_true", help="fail on a NaN/inf heatmap instead of excluding it")
    parser.add_argument("--exclude-empty-gt", action="store_true",
                        help="drop samples whose boxes are empty after clipping (e.g. outside the image) from N; "
                             "default: keep them as failures, as the official validate() does")


#: How the files ``np.load`` tells apart begin: a zip archive (``np.savez``; an empty one starts
#: with its end record) and a single ``.npy`` array (``np.save``).
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"


def _load_pred(path: Path) -> dict:
    """The heatmaps of an ``.npz`` archive (``np.savez``), array name -> map. Anything else (a
    text file, a single ``.npy`` array, a cut-off archive) is a ValueError naming the file and
    what it is, in one line (``np.load`` would try it as a pickle, or return one array)."""
    import zipfile

    import numpy as np

    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:  # missing, unreadable, a folder
        raise ValueError(f"{path}: cannot read heatmaps npz: {e.strerror or e}") from e
    if not head.startswith(_ZIP_MAGIC):
        kind = "a single .npy array" if head.startswith(_NPY_MAGIC) else "an empty file" if not head else "not a zip file"
        raise ValueError(f"{path}: not a .npz heatmap archive (one array per sample id, as np.savez writes): {kind}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, EOFError) as e:  # a zip header, but cut off or damaged
        raise ValueError(f"{path}: corrupt .npz heatmap archive (truncated or damaged: {e})") from e
    except (OSError, ValueError) as e:  # e.g. object (pickled) arrays inside, a bad member
        raise ValueError(f"{path}: cannot read heatmaps npz: {e}") from e


def run(args: argparse.Namespace) -> int:
    from avssl.data.annotations import AnnotationError, load_flickr, load_vggss
    from avssl.eval.localisation import InvalidHeatmapError, Protocol, evaluate

    gt_path = Path(args.gt)
    fmt = args.format or ("flickr" if gt_path.is_dir() else "vggss")
    try:
        protocol = Protocol(threshold=args.protocol, upsample=args.upsample, size=args.size)
        pred = _load_pred(Path(args.pred))
        gt = load_flickr(gt_path) if fmt == "flickr" else load_vggss(gt_path)
        silent = None
        if args.silent:
            try:
                silent = [s.strip() for s in Path(args.silent).read_text().splitlines() if s.strip()]
            except OSError as e:
                raise ValueError(f"{args.silent}: cannot read silent-id list: {e}") from e
        box_report = None
        if args.frame_sizes or args.boxes != "crop":
            gt, box_report = _boxes(gt, set(pred), fmt, args)
        result = evaluate(pred, gt, fmt, protocol, strict=args.strict, silent=silent,
                          exclude_empty_gt=args.exclude_empty_gt)
        summary = dict(result.summary)
        if box_report is not None:
            summary["boxes"] = box_report
        if args.masks:
            summary["mask"] = _mask_section(Path(args.masks), pred, protocol)
    except (AnnotationError, InvalidHeatmapError, ValueError) as e:
        print(f"avssl score: error: {e}", file=sys.stderr)
        return 2
    if args.per_sample:
        out = Path(args.per_sample)
        out.parent.mkdir(parents=True, exist_ok=True)
        rows = result.rows()
        with out.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["id", "ciou", "adaptive_ciou", "pointing_hit", "confidence"])
            writer.writeheader()
            writer.writerows(rows)
        log.info("wrote %d per-sample rows to %s", len(rows), out)
    print(json.dumps(summary, indent=2))
    return 0


def _boxes(gt: dict, ids: set, fmt: str, args: argparse.Namespace) -> tuple[dict, dict]:
    """The boxes as scored under ``--boxes`` with ``--frame-sizes`` (:func:`avssl.eval.boxes.boxes_for_scoring`
    on the ids that have a heatmap), and its report (warned when boxes lie mostly outside the crop)."""
    from avssl.eval.boxes import boxes_for_scoring, outside_warning

    if fmt != "vggss":
        raise ValueError("--boxes/--frame-sizes apply to VGG-SS boxes (normalised to the full frame); "
                         "Flickr-SoundNet boxes are pixels of the shipped 256x256 frame")
    if args.frame_sizes is None:
        raise ValueError("--boxes full-frame needs --frame-sizes SIZES.json (written by avssl eval as frame_sizes.json)")
    try:
        raw = json.loads(Path(args.frame_sizes).read_text())
        sizes = {str(k): (int(v[0]), int(v[1])) for k, v in raw.items()}
    except (OSError, ValueError, TypeError, IndexError, AttributeError) as e:
        raise ValueError(f"{args.frame_sizes}: not a {{id: [width, height]}} JSON object ({e})") from e
    scored, report = boxes_for_scoring(gt, ids, sizes, fmt, args.boxes, size=args.size)
    warning = outside_warning(report)
    if warning:
        log.warning("%s", warning)
    return scored, report


def _mask_section(manifest: Path, pred: dict, protocol) -> dict:
    """The ``"mask"`` section: :func:`avssl.eval.masks.mask_scores_by_id` on the finite maps."""
    import numpy as np

    from avssl.data.manifest import ManifestError, read_manifest
    from avssl.eval.masks import mask_scores_by_id
    from avssl.eval.references import load_masks

    try:
        masks = load_masks(manifest.parent, read_manifest(manifest))
    except (OSError, ManifestError) as e:
        raise ValueError(f"{manifest}: cannot read its masks ({e})") from e
    if not masks:
        raise ValueError(f"{manifest}: its records name no masks (not a semi-real set)")
    finite = {k: v for k, v in pred.items() if np.isfinite(v).all()}
    out = mask_scores_by_id(finite, masks, protocol)
    out.pop("per_sample")
    out["missing_pred"], out["missing_mask"] = len(out["missing_pred"]), len(out["missing_mask"])
    return out
