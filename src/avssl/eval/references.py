"""Reference heatmaps and their scores: what a map that knows the boxes, the centre prior and
noise reach on a data set's ground truth, so a trained model's numbers have a floor and a ceiling.

:func:`reference_scores` scores them on a generated set's split (read back from its manifest and
``annotations/vggss.json``) with the standard evaluator and writes ``reference_scores.json``
beside the set (``avssl synth`` and ``avssl demo`` call it after generating).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from avssl.atomic import atomic_write_text
from avssl.data.annotations import load_vggss, pad_boxes, vggss_gt_maps
from avssl.data.manifest import read_manifest
from avssl.data.synthetic_render import seeded_rng, upsample_bilinear
from avssl.eval.localisation import score

log = logging.getLogger(__name__)

__all__ = ["reference_heatmaps", "reference_scores", "load_masks"]

_RANDOM_KEY = 0x5EED  # RNG stream of the random map (the generator's plan key: the same draws as before)


def reference_heatmaps(boxes: list[list[list[float]]], size: int = 224, seed: int = 0
                       ) -> dict[str, np.ndarray]:
    """Reference heatmaps for clips with the given ground-truth boxes.

    Args:
        boxes: per clip, its normalised ``[x1, y1, x2, y2]`` boxes (list or (k, 4) array).
        size: map size (the evaluation resolution).
        seed: seed of the random maps.

    Returns:
        ``{"perfect", "centre_prior", "random"}`` -> float32 (N, size, size): the
        ground-truth box map itself (the ceiling), an isotropic Gaussian at the centre
        (sigma = size / 4), and smooth seeded noise (a 14x14 uniform grid, upsampled).
    """
    n = len(boxes)
    _, padded, mask = pad_boxes([np.asarray(b, np.float64).reshape(-1, 4) for b in boxes])
    perfect = vggss_gt_maps(padded, size, mask)
    c = (np.arange(size, dtype=np.float32) + 0.5) - size / 2
    gauss = np.exp(-(c[None, :] ** 2 + c[:, None] ** 2) / (2 * (size / 4) ** 2)).astype(np.float32)
    grid = seeded_rng(seed, _RANDOM_KEY).uniform(size=(14, 14, n)).astype(np.float32)
    random = np.moveaxis(upsample_bilinear(grid, size), -1, 0)
    return {"perfect": perfect, "centre_prior": np.broadcast_to(gauss, (n, size, size)),
            "random": np.ascontiguousarray(random)}


def load_masks(out_dir: str | os.PathLike, records) -> dict[str, np.ndarray]:
    """``{id: (S, S) bool}`` for the records that name a mask (``masks/<id>.png``, the semi-real set)."""
    from PIL import Image

    out = Path(out_dir)
    masks = {}
    for r in records:
        if r.extra.get("mask"):
            with Image.open(out / r.extra["mask"]) as im:
                masks[r.id] = np.asarray(im.convert("1"), bool)
    return masks


def reference_scores(out_dir: str | os.PathLike, split: str = "test", seed: int = 0) -> dict:
    """Score the reference heatmaps on a split's clips with a visible source.

    Ground truth is read back from ``annotations/vggss.json``; scores (the standard
    evaluator, :func:`avssl.eval.localisation.score`) go to ``reference_scores.json``. On a
    set with masks (``avssl synth --source``) each map is also scored against them
    (``"mask"``: :func:`avssl.eval.masks.mask_scores_by_id`) and the mask itself is a further
    reference map (``perfect_mask``, the ceiling of the mask measures).
    Returns ``{map name: metrics}``.
    """
    from avssl.eval.masks import mask_scores_by_id

    out = Path(out_dir)
    records = [r for r in read_manifest(out / "manifest.jsonl", split=split) if not r.extra.get("offscreen")]
    gt = load_vggss(out / "annotations" / "vggss.json")
    ids = [r.id for r in records if r.id in gt]
    if not ids:
        log.warning("no %s clips with a visible source: no reference scores", split)
        return {}
    boxes = {i: gt[i] for i in ids}
    maps = reference_heatmaps(list(boxes.values()), seed=seed)
    masks = load_masks(out, [r for r in records if r.id in boxes])
    if masks and set(masks) == set(ids):
        maps["perfect_mask"] = np.stack([masks[i].astype(np.float32) for i in ids])
    scores = {name: score(dict(zip(ids, m, strict=True)), boxes, "vggss") for name, m in maps.items()}
    if masks:
        for name, m in maps.items():
            mask_sc = mask_scores_by_id(dict(zip(ids, m, strict=True)), masks)
            scores[name]["mask"] = {k: v for k, v in mask_sc.items() if k != "per_sample"}
    atomic_write_text(out / "reference_scores.json", json.dumps(scores, indent=2))
    for name, sc in scores.items():
        extra = (f"  mask cIoU@0.5 {sc['mask']['mask_ciou_at_0.5']:.3f}  mask pointing "
                 f"{sc['mask']['mask_pointing_accuracy']:.3f}") if "mask" in sc else ""
        log.info("reference %-12s cIoU@0.5 %.3f  AUC %.3f  mean cIoU %.3f  adaptive cIoU@0.5 %.3f  "
                 "pointing %.3f%s  (%d %s clips)", name, sc["ciou_at_0.5"], sc["auc"], sc["mean_ciou"],
                 sc["adaptive_ciou_at_0.5"], sc["pointing_accuracy"], extra, sc["n_scored"], split)
    return scores
