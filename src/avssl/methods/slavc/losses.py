"""SLAVC's pure loss (Mo & Morgado, NeurIPS 2022; docs/methods.md, SLAVC section).

Two heads per modality (``img1`` / ``img2``: (B, C, h, w), ``aud1`` / ``aud2``: (B, C), all
L2-normalised) and their momentum-network targets. With ``E(x, y)[n, m, hw] = <x_n(hw), y_m> / tau``,
one direction's score matrix is

    X(x1, y1, x2, y2)[n, m] = log sum_hw softmax_m E(x1, y1) * softmax_hw E(x2, y2)

(head 1 says *which* clip, over the audio index m; head 2 says *where*, over the locations), and

    i2a = X(img1, aud1_trg, img2, aud2_trg)      a2i = X(img1_trg, aud1, img2_trg, aud2)
    loss = CE(a2i, arange(B)) + CE(i2a, arange(B))

Both cross-entropies normalise over the audio index m (rows), as the authors' code does; the two
terms differ in which side carries the gradient. No module state.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from avssl.models.mil import similarity_maps

__all__ = ["xmil_scores", "slavc_loss", "TERMS"]

TERMS = ("loss_i2a", "loss_a2i")


def xmil_scores(img1: Tensor, aud1: Tensor, img2: Tensor, aud2: Tensor, tau: float = 0.03) -> Tensor:
    """``log sum_hw softmax_m E(img1, aud1) * softmax_hw E(img2, aud2)``: (N, M) scores of N frames
    against M clips (``img*`` (N, C, h, w), ``aud*`` (M, C))."""
    which = similarity_maps(img1, aud1, tau).flatten(2).softmax(dim=1)
    where = similarity_maps(img2, aud2, tau).flatten(2).softmax(dim=2)
    return torch.log((which * where).sum(dim=2))


def slavc_loss(img1: Tensor, img2: Tensor, aud1: Tensor, aud2: Tensor, img1_trg: Tensor, img2_trg: Tensor,
               aud1_trg: Tensor, aud2_trg: Tensor, tau: float = 0.03) -> dict[str, Tensor]:
    """SLAVC's loss of one batch: ``{"loss", "loss_i2a", "loss_a2i"}`` (``loss`` = the sum of the two
    batch-mean cross-entropies). The ``*_trg`` targets are the momentum networks' features (no grad
    expected, none taken here)."""
    if not (img1.shape[0] == aud1.shape[0] == img1_trg.shape[0] == aud1_trg.shape[0]):
        raise ValueError("the frames, clips and targets must have one batch size")
    target = torch.arange(img1.shape[0], device=img1.device)
    i2a = F.cross_entropy(xmil_scores(img1, aud1_trg, img2, aud2_trg, tau), target)
    a2i = F.cross_entropy(xmil_scores(img1_trg, aud1, img2_trg, aud2, tau), target)
    return {"loss": a2i + i2a, "loss_i2a": i2a, "loss_a2i": a2i}
