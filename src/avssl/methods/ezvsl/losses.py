"""EZ-VSL's pure loss functions (Mo & Morgado, ECCV 2022; docs/methods.md, EZ-VSL section).

The multiple-instance contrastive loss: a frame's score for an audio clip is the best match over
its locations, ``logits[n, m] = max_hw <img_n(h, w), aud_m> / tau``, and the loss is the
symmetric cross-entropy of those scores with the paired clips as targets, summed over the two
directions (the authors' code adds them; it does not average them). No module state. The map
helpers live in :mod:`avssl.models.mil` (shared with FNAC) and are re-exported here.
"""
from __future__ import annotations

from torch import Tensor

from avssl.models.mil import mil_logits, mil_nce_loss, paired_maps, similarity_maps

__all__ = ["similarity_maps", "mil_logits", "paired_maps", "ezvsl_mil_loss"]


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
    return mil_nce_loss(mil_logits(slogits)), slogits
