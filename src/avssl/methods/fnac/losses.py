"""FNAC's pure loss functions (Sun et al., CVPR 2023; docs/methods.md, FNAC section).

On top of EZ-VSL's multiple-instance contrastive loss (``nce``), three false-negative-aware
terms compare the (B, B) cross-modal score distribution with intra-modal similarities, all as
row softmaxes and mean absolute differences over the B x B entries:

* ``fns1`` (false-negative suppression, audio): ``L1(softmax(aud aud^T / tau), softmax(logits))``;
* ``tns`` (true-negative suppression): ``L1(softmax(aud aud^T / tau), softmax(frg frg^T / tau))``,
  ``frg`` the spatial mean (over all h x w positions) of the visual map masked where the frame's
  own min-max normalised map (``+1e-5`` in the denominator) exceeds 0.6;
* ``fns2`` (false-negative suppression, image): ``L1(softmax(img img^T / tau), softmax(logits))``,
  ``img`` the spatial mean of the normalised visual map (not re-normalised).

``logits = max_hw Slogits``. No module state.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from avssl.models.mil import mil_logits, mil_nce_loss, paired_maps, similarity_maps

__all__ = ["foreground_mask", "fnac_losses", "fnac_total"]

TERMS = ("nce", "fns1", "tns", "fns2")


def foreground_mask(savl: Tensor, threshold: float = 0.6, eps: float = 1e-5) -> Tensor:
    """(B, h, w) paired maps -> (B, h, w) float mask ``(savl - min) / (max - min + eps) > threshold``
    (per sample)."""
    flat = savl.flatten(1)
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return ((flat - lo) / (hi - lo + eps) > threshold).to(savl.dtype).view_as(savl)


def _row_l1(a: Tensor, b: Tensor) -> Tensor:
    return F.l1_loss(a.softmax(dim=1), b.softmax(dim=1))


def fnac_losses(img: Tensor, aud: Tensor, tau: float = 0.03, threshold: float = 0.6
                ) -> tuple[dict[str, Tensor], Tensor]:
    """FNAC's four loss terms of one batch.

    Args:
        img: (B, C, h, w) L2-normalised visual map; aud: (B, C) L2-normalised audio embedding.
        tau: the temperature of every similarity. threshold: the foreground cut of the min-max map.
    Returns:
        ``({"nce", "fns1", "tns", "fns2"}: scalars, Slogits (B, B, h, w))``.
    """
    if img.shape[0] != aud.shape[0]:
        raise ValueError(f"img and aud batch sizes differ: {img.shape[0]} vs {aud.shape[0]}")
    slogits = similarity_maps(img, aud, tau)
    logits = mil_logits(slogits)
    img_mean = img.mean(dim=(2, 3))
    frg = (img * foreground_mask(paired_maps(slogits), threshold).unsqueeze(1)).mean(dim=(2, 3))
    aud_attn = aud @ aud.t() / tau
    out = {"nce": mil_nce_loss(logits),
           "fns1": _row_l1(aud_attn, logits),
           "tns": _row_l1(aud_attn, frg @ frg.t() / tau),
           "fns2": _row_l1(img_mean @ img_mean.t() / tau, logits)}
    return out, slogits


def fnac_total(terms: dict[str, Tensor], weights: tuple[float, float, float], warm: bool) -> Tensor:
    """``nce + w1 fns1 + w2 tns + w3 fns2`` once past the warmup (``warm``), else ``nce`` alone."""
    if not warm:
        return terms["nce"]
    return terms["nce"] + weights[0] * terms["fns1"] + weights[1] * terms["tns"] + weights[2] * terms["fns2"]
