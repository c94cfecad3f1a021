"""avssl.eval.masks: the localisation protocol against exact masks; on box-shaped masks it equals
the box scorer; empty masks are left out and counted."""
from __future__ import annotations

import numpy as np
import pytest

from avssl.data.annotations import pad_boxes, vggss_gt_maps
from avssl.eval.localisation import score
from avssl.eval.masks import mask_scores, mask_scores_by_id


def _disc_masks(n: int, s: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:s, :s]
    out = np.zeros((n, s, s), bool)
    for i in range(n):
        cy, cx, r = rng.uniform(10, s - 10), rng.uniform(10, s - 10), rng.uniform(4, 12)
        out[i] = (y - cy) ** 2 + (x - cx) ** 2 <= r * r
    return out


def test_the_mask_itself_is_the_ceiling_and_its_inverse_the_floor():
    masks = _disc_masks(20)
    best = mask_scores(masks.astype(np.float32), masks)
    assert best["mask_ciou_at_0.5"] == 1.0 and best["mask_mean_ciou"] == 1.0
    assert best["mask_adaptive_ciou_at_0.5"] == 1.0 and best["mask_pointing_accuracy"] == 1.0
    worst = mask_scores((~masks).astype(np.float32), masks)
    assert worst["mask_mean_ciou"] == 0.0 and worst["mask_pointing_accuracy"] == 0.0
    assert best["n_scored"] == 20 and best["n_empty"] == 0


def test_on_box_shaped_masks_it_equals_the_box_scorer():
    rng = np.random.default_rng(3)
    n = 60
    maps = rng.random((n, 14, 14), dtype=np.float32)
    x1, y1 = rng.uniform(0, 0.6, n), rng.uniform(0, 0.6, n)
    boxes = [[[a, b, a + rng.uniform(0.1, 0.4), b + rng.uniform(0.1, 0.4)]] for a, b in zip(x1, y1, strict=True)]
    _, padded, valid = pad_boxes([np.asarray(b) for b in boxes])
    masks = vggss_gt_maps(padded, 224, valid) > 0
    ids = [f"c{i}" for i in range(n)]
    by_box = score(dict(zip(ids, maps, strict=True)), dict(zip(ids, boxes, strict=True)), "vggss")
    by_mask = mask_scores(maps, masks)
    for box_key, mask_key in [("ciou_at_0.5", "mask_ciou_at_0.5"), ("auc", "mask_auc"), ("mean_ciou", "mask_mean_ciou"),
                              ("adaptive_ciou_at_0.5", "mask_adaptive_ciou_at_0.5"),
                              ("pointing_accuracy", "mask_pointing_accuracy")]:
        assert by_mask[mask_key] == pytest.approx(by_box[box_key], abs=1e-12), box_key


def test_empty_masks_are_counted_not_scored_and_ids_are_matched():
    masks = _disc_masks(4)
    masks[1] = False
    maps = masks.astype(np.float32) + 0.01
    out = mask_scores(maps, masks)
    assert out["n_scored"] == 3 and out["n_empty"] == 1 and out["per_sample"][1] is None
    keyed = mask_scores_by_id({"a": maps[0], "b": maps[2], "z": maps[3]}, {"a": masks[0], "b": masks[2], "y": masks[3]})
    assert keyed["n_scored"] == 2 and keyed["missing_pred"] == ["y"] and keyed["missing_mask"] == ["z"]
    assert keyed["per_sample"] == {"a": 1.0, "b": 1.0}
    with pytest.raises(ValueError, match="must be"):
        mask_scores(maps, masks[:2])
