"""Linear probe: multinomial logistic regression on frozen embeddings (a pure function).

    acc = linear_probe_accuracy(train_x, train_y, test_x, test_y)

Features are standardised with the training set's mean and std; the classifier is fitted by
full-batch L-BFGS on the cross-entropy plus an L2 penalty ``weight_decay * ||W||^2`` (the bias
is not penalised), from zeros, so the result is deterministic. Clips with label < 0 are left out.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["fit_linear_probe", "linear_probe_accuracy"]


def _keep(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"features must be (N, C) with labels (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    ok = y >= 0
    return x[ok].double(), y[ok].long()


def fit_linear_probe(x: Tensor, y: Tensor, num_classes: int | None = None, weight_decay: float = 1e-3,
                     max_iter: int = 200) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fit on (N, C) features ``x`` and (N,) labels ``y``; returns ``(W (C, K), b (K,), mean, std)``."""
    x, y = _keep(x, y)
    if x.shape[0] < 2:
        raise ValueError("a linear probe needs at least 2 labelled clips")
    k = int(num_classes if num_classes is not None else int(y.max()) + 1)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-8)
    z = (x - mean) / std
    w = torch.zeros(z.shape[1], k, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z @ w + b, y) + weight_decay * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach(), mean, std


def linear_probe_accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor,
                          weight_decay: float = 1e-3) -> float:
    """Top-1 accuracy on the test clips of a probe fitted on the training clips."""
    k = int(max(int(train_y.max()), int(test_y.max()))) + 1
    w, b, mean, std = fit_linear_probe(train_x, train_y, k, weight_decay)
    x, y = _keep(test_x, test_y)
    if x.shape[0] == 0:
        raise ValueError("no labelled test clip for the linear probe")
    pred = (((x - mean) / std) @ w + b).argmax(1)
    return float((pred == y).double().mean())
