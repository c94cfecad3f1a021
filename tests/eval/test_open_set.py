"""SLAVC's open-set metrics (avssl.eval.open_set): parity with the authors' ``EvaluatorFull`` on the
synthetic metric set of ../shared/golden/peers (peers_metrics.npz), and behaviour on hand cases."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from avssl.eval.localisation import ciou
from avssl.eval.open_set import (
    precision_recall,
    slavc_ap,
    slavc_epoch_metrics,
    slavc_open_set_stats,
)
from avssl.models.mil import minmax


@pytest.fixture(scope="module")
def metrics(golden_dir):
    path = golden_dir / "peers" / "peers_metrics.npz"
    if not path.is_file():
        pytest.skip(f"SLAVC metric golden vectors not found at {path}")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _preds(m: dict, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The golden run's prediction maps and thresholds: ``abs`` the kron map with 0.5, ``rel`` its
    min-max with the median (``sorted[25088]``)."""
    pred = np.kron(m["p14"].astype(np.float64), np.ones((1, 16, 16)))
    if kind == "abs":
        return pred, np.full(len(pred), 0.5)
    pred = minmax(torch.from_numpy(pred)).numpy()
    return pred, np.sort(pred.reshape(len(pred), -1), axis=1)[:, 224 * 224 // 2]


@pytest.mark.parametrize("kind", ["abs", "rel"])
def test_stats_match_the_authors_evaluator(metrics, kind):
    pred, thr = _preds(metrics, kind)
    gt = metrics["gt"]
    with np.errstate(invalid="ignore", divide="ignore"):
        ours_ciou = ciou((pred >= thr[:, None, None]).astype(np.float32), gt)
    np.testing.assert_array_equal(np.isnan(ours_ciou), np.isnan(metrics[f"slavc_{kind}_ciou"]))
    np.testing.assert_allclose(ours_ciou, metrics[f"slavc_{kind}_ciou"], rtol=0, atol=1e-12)
    area = gt.reshape(len(gt), -1).sum(1, dtype=np.float64)
    np.testing.assert_array_equal(area, metrics[f"slavc_{kind}_area"])
    nb, conf = metrics["num_boxes"], metrics["conf"]
    stats = slavc_open_set_stats(nb, ours_ciou, conf, area)
    ref = json.loads(str(metrics[f"slavc_{kind}_stats_json"]))
    assert stats.keys() == ref.keys()
    for k, v in ref.items():  # README: AP / AUC / precision / F1 exact
        if v is None:
            assert isinstance(stats[k], float) and math.isnan(stats[k]), k
        else:
            assert stats[k] == v, (k, stats[k], v)
    epoch = slavc_epoch_metrics(nb, ours_ciou, conf)
    for k in ("precision_at_50", "ap_at_50", "f1_at_50"):
        assert epoch[k] == float(metrics[f"slavc_{kind}_{k}"]), k


def test_silent_detections_and_mislocalised_pairs():
    nb = np.array([1, 1, 0, 1])
    ci = np.array([0.9, 0.2, np.nan, 0.7])
    conf = np.array([0.9, 0.8, 0.7, 0.1])
    p, r = precision_recall(nb, ci, conf, [0.75, 0.5, 0.0])
    # 0.75: TP 1, FP 1 (mislocalised), FN 1 (the undetected pair; the mislocalised one is no FN)
    np.testing.assert_allclose(p, [1 / 2, 1 / 3, 2 / 4])
    np.testing.assert_allclose(r, [1 / 2, 1 / 2, 1.0])
    p, r = precision_recall(nb, ci, conf, [2.0])  # nothing detected: P = 1 by convention, R = 0
    assert (p[0], r[0]) == (1.0, 0.0)
    assert slavc_ap(nb[:1], ci[:1], conf[:1]) == 0.0  # one pair: no threshold pair
    stats = slavc_open_set_stats(nb, ci, conf, np.array([500.0, 20000.0, 0.0, 30000.0]))
    assert math.isnan(stats["AP-medium@50"]) and stats["Precision-visible@50"] == 2 / 3
    assert stats["Precision-all@50"] == 2 / 4 and stats["AUC-small@50"] == pytest.approx(0.9, abs=0.03)
    e = slavc_epoch_metrics(nb, ci, conf)
    assert e["precision_at_50"] == 2 / 3
    with pytest.raises(ValueError, match="one length"):
        slavc_ap(nb, ci[:2], conf)
