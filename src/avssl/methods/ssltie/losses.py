"""Pure loss functions, grouped by method. Shapes are in the docstrings; no module state.

SSL-TIE (docs/methods.md §1.3-1.4): :func:`lvs_trimap_logits`, :func:`lvs_loss`,
:func:`equivariance_consistency`.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

# ---------------------------------------------------------------------------------------------
# SSL-TIE: LVS "hard way" contrastive localisation loss and the equivariance consistency


class LVSLogits(NamedTuple):
    """``logits`` (B, B+2) or (B, B+1); ``pos``/``neg`` soft region masks (B, 1, h, w)."""

    logits: Tensor
    pos: Tensor
    neg: Tensor


def _masked_mean(mask: Tensor, values: Tensor) -> Tensor:
    """sum(mask*values)/sum(mask) over the last two dims: (..., h, w) -> (...)."""
    num = (mask * values).sum(dim=(-2, -1))
    den = mask.sum(dim=(-2, -1)).clamp_min(torch.finfo(mask.dtype).tiny)
    return num / den


def lvs_trimap_logits(
    A: Tensor,
    A0: Tensor,
    tau: float = 0.03,
    eps_p: float = 0.65,
    eps_n: float = 0.4,
    tri_map: bool = True,
    hard_negatives: bool = True,
    temperature: float = 0.07,
    diagonal_factor: float = 100.0,
    exclude_own_pair: bool = False,
) -> LVSLogits:
    """Localisation logits of LVS / SSL-TIE (docs/methods.md §1.3), exactly as the authors' AVENet.

    Args:
        A: (B, 1, h, w) cosine map of frame i with its own audio i.
        A0: (B, B, h, w) all pairs, ``A0[i, j]`` = frame i with audio j (``A0[i, i] == A[i, 0]``).
        tau, eps_p, eps_n: sigmoid temperature and positive/negative thresholds.
        tri_map: negative mask ``1 - sigmoid((A - eps_n)/tau)``; off: ``N = 1 - P``.
        hard_negatives: append the hard-negative column ``s_hn``; off: logits ``[s_pos, s_en]``.
        temperature: logit divisor (0.07, hard-coded in the authors' code).
        diagonal_factor: easy negatives are multiplied by ``1 - diagonal_factor * I``: the
            positive pair stays among the negatives at ``-99x`` its value (the authors' quirk).
        exclude_own_pair: drop the own pair from the easy negatives instead (its logit -inf; an
            avssl option): the quirk assumes a non-negative ``s_pos``, and a negative one makes
            the "excluded" pair the largest logit.
    Returns:
        :class:`LVSLogits`: ``logits`` (B, 1+B[+1]) = ``[s_pos, s_en (B), s_hn] / temperature``,
        target class 0; ``pos`` = P and ``neg`` = N masks (B, 1, h, w).

    ``1 - sigmoid(z)`` is computed as ``sigmoid(-z)`` (identical in exact arithmetic, never 0 in
    float32 for |A| <= 1), so no region sum vanishes.
    """
    batch = A.shape[0]
    if A0.shape[:2] != (batch, batch) or A0.shape[-2:] != A.shape[-2:]:
        raise ValueError(f"A0 must be (B, B, h, w) matching A {tuple(A.shape)}, got {tuple(A0.shape)}")
    pos = torch.sigmoid((A - eps_p) / tau)
    neg = torch.sigmoid(-(A - (eps_n if tri_map else eps_p)) / tau)
    s_pos = _masked_mean(pos, A)  # (B, 1)
    pos_all = torch.sigmoid((A0 - eps_p) / tau)
    eye = torch.eye(batch, dtype=A0.dtype, device=A0.device)
    s_en = _masked_mean(pos_all, A0)  # (B, B)
    if exclude_own_pair:
        s_en = s_en.masked_fill(eye.bool(), float("-inf"))
    else:
        s_en = s_en * (1.0 - diagonal_factor * eye)
    columns = [s_pos, s_en]
    if hard_negatives:
        columns.append(_masked_mean(neg, A))  # (B, 1)
    return LVSLogits(torch.cat(columns, dim=1) / temperature, pos, neg)


def lvs_loss(logits: Tensor) -> Tensor:
    """Cross-entropy with target class 0 (the positive column): (B, K) -> scalar (batch mean)."""
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def equivariance_consistency(map_t: Tensor, t_map: Tensor) -> Tensor:
    """MSE between the map of the transformed frame and the transformed map (mean over all elements).

    Args:
        map_t: (B, 1, h', w') ``A_T``, the model's map for ``T(frame)``.
        t_map: (B, 1, h', w') ``T(A)``, the original map transformed.
    Returns:
        scalar; gradients flow into both arguments.
    """
    if map_t.shape != t_map.shape:
        raise ValueError(f"shape mismatch: {tuple(map_t.shape)} vs {tuple(t_map.shape)}")
    return F.mse_loss(map_t, t_map)
