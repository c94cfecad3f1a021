"""Classification metrics against plain per-class loops and hand-computed values (ties included)."""
import math

import pytest
import torch

from avssl.eval.classification import (
    accuracy,
    average_precision,
    classification_summary,
    d_prime,
    mean_average_precision,
    roc_auc,
)


def _ap_loop(s: list[float], y: list[int]) -> float:
    """Non-interpolated AP over distinct thresholds (scikit-learn's definition)."""
    p = sum(y)
    ap, prev_recall = 0.0, 0.0
    for t in sorted(set(s), reverse=True):
        sel = [yy for ss, yy in zip(s, y, strict=True) if ss >= t]
        tp = sum(sel)
        recall, precision = tp / p, tp / len(sel)
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


def _auc_loop(s: list[float], y: list[int]) -> float:
    pos = [a for a, b in zip(s, y, strict=True) if b]
    neg = [a for a, b in zip(s, y, strict=True) if not b]
    return sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))


def test_ap_hand_values():
    # ranking: + - + -  -> AP = (1/1 + 2/3) / 2
    s = torch.tensor([0.9, 0.8, 0.7, 0.1])
    y = torch.tensor([1, 0, 1, 0])
    assert average_precision(s, y).item() == pytest.approx((1 + 2 / 3) / 2)
    # a tie between the top positive and a negative: one threshold with precision 1/2
    s = torch.tensor([0.9, 0.9, 0.5])
    y = torch.tensor([1, 0, 1])
    assert average_precision(s, y).item() == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    # AUC: (tie 1/2 + 0.5 below 0.9) / 2 pairs
    assert roc_auc(s, y).item() == pytest.approx(0.25)


def test_matches_loop_with_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (40, 7), generator=g).double() / 5  # many ties
    targets = (torch.rand(40, 7, generator=g) < 0.3).double()
    targets[:, 3] = 0  # a class without positives
    targets[:, 5] = 1  # a class without negatives
    ap, auc = average_precision(scores, targets), roc_auc(scores, targets)
    for c in range(7):
        s, y = scores[:, c].tolist(), targets[:, c].int().tolist()
        if sum(y) == 0:
            assert math.isnan(ap[c]) and math.isnan(auc[c])
            continue
        assert ap[c].item() == pytest.approx(_ap_loop(s, y), abs=1e-12)
        if sum(y) == len(y):
            assert math.isnan(auc[c])
        else:
            assert auc[c].item() == pytest.approx(_auc_loop(s, y), abs=1e-12)
    m = mean_average_precision(scores, targets)
    assert m["classes_scored"] == 6 and m["classes_without_positives"] == 1
    assert m["mAP"] == pytest.approx(float(ap[~torch.isnan(ap)].mean()))


def test_perfect_and_accuracy():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    onehot = torch.eye(3)[[0, 1, 2, 1]]
    assert accuracy(logits, onehot) == 0.75
    assert accuracy(logits, torch.tensor([0, 1, 2, 0])) == 1.0
    summary = classification_summary(torch.eye(3) * 2 - 1, torch.eye(3))
    assert summary["mAP"] == 1.0 and summary["mAUC"] == 1.0 and math.isinf(summary["d_prime"])
    with pytest.raises(ValueError):
        accuracy(logits, torch.zeros(4, 2))


def test_d_prime():
    assert d_prime(0.5).item() == pytest.approx(0.0)
    # Phi(1) = 0.841344746...  ->  d' = sqrt(2)
    assert d_prime(0.8413447460685429).item() == pytest.approx(math.sqrt(2), abs=1e-9)
