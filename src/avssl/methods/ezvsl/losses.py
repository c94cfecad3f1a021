"""EZ-VSL's pure loss functions (Mo & Morgado, ECCV 2022; docs/methods.md, EZ-VSL section).

The multiple-instance contrastive loss: a frame's score for an audio clip is the best match over
its locations, ``logits[n, m] = max_hw <img_n(h, w), aud_m> / tau``, and the loss is the
symmetric cross-entropy of those scores with the paired clips as targets, summed over the two
directions (the authors' code adds them; it does not average them). No module state.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["similarity_maps", "mil_logits", "paired_maps", "ezvsl_mil_loss"]


def similarity_maps(img: Tensor, aud: Tensor, tau: float = 0.03) -> Tensor:
    """All-pairs localisation logits ``Slogits`` (B_img, B_aud, h, w) in units of 1/tau.

    Args:
        img: (N, C, h, w) L2-normalised (along C) visual map.
        aud: (M, C) L2-normalised audio embedding.
    Returns:
        ``Slogits[n, m, h, w] = <img_n(h, w), aud_m> / tau``.
    """
    if img.ndim != 4 or aud.ndim != 2 or img.shape[1] != aud.shape[1]:
        raise ValueError(f"expected img (N, C, h, w) and aud (M, C), got {tuple(img.shape)}, {tuple(aud.shape)}")
    return torch.einsum("nchw,mc->nmhw", img, aud) / tau


def mil_logits(slogits: Tensor) -> Tensor:
    """(N, M, h, w) -> (N, M): the maximum over locations (the multiple-instance score)."""
    return slogits.flatten(2).amax(dim=2)


def paired_maps(slogits: Tensor) -> Tensor:
    """(B, B, h, w) -> (B, h, w): each frame's map with its own audio (``Slogits[n, n]``)."""
    return torch.diagonal(slogits, dim1=0, dim2=1).permute(2, 0, 1)


def ezvsl_mil_loss(img: Tensor, aud: Tensor, tau: float = 0.03) -> tuple[Tensor, Tensor]:
    """EZ-VSL's loss ``CE(logits, arange(B)) + CE(logits^T, arange(B))`` (a sum, batch-mean CEs).

    Args:
        img: (B, C, h, w) L2-normalised visual map; aud: (B, C) L2-normalised audio embedding.
    Returns:
        ``(loss scalar, Slogits (B, B, h, w))``.
    """
    if img.shape[0] != aud.shape[0]:
        raise ValueError(f"img and aud batch sizes differ: {img.shape[0]} vs {aud.shape[0]}")
    slogits = similarity_maps(img, aud, tau)
    logits = mil_logits(slogits)
    target = torch.arange(img.shape[0], device=img.device)
    return F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target), slogits
