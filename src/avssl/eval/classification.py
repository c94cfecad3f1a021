"""Classification metrics for fine-tuning (docs/methods.md §2.7): AP / mAP, ROC AUC, d-prime, top-1 accuracy.

All functions are vectorised over samples *and* classes (one sort per call, no Python loop
over classes) and computed in float64.

Conventions (the AudioSet ones, as computed by scikit-learn in CAV-MAE / EquiAV):

* ``average_precision``: the non-interpolated AP, ``sum_k (R_k - R_{k-1}) P_k`` over the
  distinct score thresholds; tied scores form one threshold (no optimistic ordering inside
  a tie). A class without positives has no AP (NaN).
* ``mean_average_precision``: the mean AP over the classes that have at least one positive;
  the number of classes left out is reported (the original averages scikit-learn's output,
  whose value for such classes is undefined).
* ``roc_auc``: the Mann-Whitney statistic with tied scores counting 1/2; NaN for a class
  without positives or without negatives. ``d_prime(auc) = sqrt(2) * Phi^-1(auc)``.
* ``accuracy``: top-1; targets are class indices (N,) or multi-hot / soft (N, C), whose
  argmax is the label (the original's single-label VGGSound accuracy).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "average_precision", "roc_auc", "d_prime", "mean_average_precision", "accuracy", "classification_summary",
]


def _prepare(scores: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    scores = torch.as_tensor(scores).detach().to("cpu", torch.float64)
    targets = torch.as_tensor(targets).detach().to("cpu", torch.float64)
    if scores.ndim == 1:
        scores, targets = scores[:, None], targets.reshape(-1, 1)
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(f"scores and targets must both be (N, C); got {tuple(scores.shape)} and {tuple(targets.shape)}")
    if scores.shape[0] == 0:
        raise ValueError("no samples to score")
    if not torch.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    return scores, (targets > 0.5).to(torch.float64)


def _sorted_groups(scores: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Sort each column by descending score; return (positives sorted (N, C), tie-group first index,
    tie-group last index), both (N, C) int64 positions in the sorted order."""
    n = scores.shape[0]
    s, order = torch.sort(scores, dim=0, descending=True, stable=True)
    pos = torch.gather(targets, 0, order)
    idx = torch.arange(n, dtype=torch.int64)[:, None].expand_as(s)
    is_last = torch.ones_like(s, dtype=torch.bool)
    is_last[:-1] = s[:-1] != s[1:]
    is_first = torch.ones_like(s, dtype=torch.bool)
    is_first[1:] = s[1:] != s[:-1]
    # last index of i's group = min over j >= i of the group ends: a reversed cumulative min
    ends = torch.where(is_last, idx, torch.full_like(idx, n))
    last = ends.flip(0).cummin(0).values.flip(0)
    starts = torch.where(is_first, idx, torch.full_like(idx, -1))
    first = starts.cummax(0).values
    return pos, first, last


def average_precision(scores: Tensor, targets: Tensor) -> Tensor:
    """Per-class average precision.

    Args:
        scores: (N, C) (or (N,)) real scores, higher = more likely positive.
        targets: (N, C) binary (values > 0.5 are positive).
    Returns:
        (C,) float64; NaN for classes without a positive.
    """
    scores, targets = _prepare(scores, targets)
    pos, _, last = _sorted_groups(scores, targets)
    tp = pos.cumsum(0)
    precision_at_end = torch.gather(tp, 0, last) / (last + 1).to(torch.float64)
    n_pos = pos.sum(0)
    ap = (pos * precision_at_end).sum(0) / n_pos
    return torch.where(n_pos > 0, ap, torch.full_like(ap, math.nan))


def roc_auc(scores: Tensor, targets: Tensor) -> Tensor:
    """Per-class ROC AUC (ties count 1/2): (C,) float64, NaN where a class lacks positives or negatives."""
    scores, targets = _prepare(scores, targets)
    pos, first, last = _sorted_groups(scores, targets)
    n = scores.shape[0]
    # ascending average rank (1-based) of each sorted position: n - mean(descending positions)
    rank = n - (first + last).to(torch.float64) / 2.0
    n_pos = pos.sum(0)
    n_neg = n - n_pos
    auc = ((pos * rank).sum(0) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    ok = (n_pos > 0) & (n_neg > 0)
    return torch.where(ok, auc, torch.full_like(auc, math.nan))


def d_prime(auc: Tensor | float) -> Tensor:
    """d' = sqrt(2) * Phi^-1(auc) (AudioSet's d-prime); +-inf at auc 1 / 0."""
    auc = torch.as_tensor(auc, dtype=torch.float64)
    return 2.0 * torch.erfinv(2.0 * auc - 1.0)


def mean_average_precision(scores: Tensor, targets: Tensor) -> dict[str, float | int]:
    """``{"mAP", "classes_scored", "classes_without_positives"}``: mean AP over classes with positives."""
    ap = average_precision(scores, targets)
    ok = ~torch.isnan(ap)
    n_ok = int(ok.sum())
    return {"mAP": float(ap[ok].mean()) if n_ok else math.nan, "classes_scored": n_ok,
            "classes_without_positives": int(ap.numel() - n_ok)}


def accuracy(logits: Tensor, targets: Tensor) -> float:
    """Top-1 accuracy. ``logits`` (N, C); ``targets`` (N,) class indices or (N, C) multi-hot / soft."""
    logits = torch.as_tensor(logits).detach()
    targets = torch.as_tensor(targets).detach().to(logits.device)
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(f"logits must be a non-empty (N, C), got {tuple(logits.shape)}")
    if targets.ndim == 2:
        if targets.shape != logits.shape:
            raise ValueError(f"targets {tuple(targets.shape)} do not match logits {tuple(logits.shape)}")
        targets = targets.argmax(1)
    elif targets.shape != logits.shape[:1]:
        raise ValueError(f"targets must be (N,) or (N, C), got {tuple(targets.shape)}")
    return float((logits.argmax(1) == targets.long()).double().mean())


def classification_summary(logits: Tensor, targets: Tensor) -> dict[str, float | int]:
    """All metrics for (N, C) logits and (N, C) multi-hot targets: mAP (+ counts), mAUC, d_prime, accuracy.

    mAUC averages the defined per-class AUCs; ``d_prime`` is that of mAUC (as AudioSet reports it).
    """
    out: dict[str, float | int] = dict(mean_average_precision(logits, targets))
    auc = roc_auc(logits, targets)
    ok = ~torch.isnan(auc)
    out["mAUC"] = float(auc[ok].mean()) if bool(ok.any()) else math.nan
    out["d_prime"] = float(d_prime(out["mAUC"])) if ok.any() else math.nan
    out["accuracy"] = accuracy(logits, targets)
    return out
