"""Retrieval metrics: recall@K and median rank, instance- and class-based (docs/methods.md §1.6, 2.7).

* :func:`recall_at_k` — instance protocol (the paired item is the one positive, by default
  the diagonal). Reproduces EquiAV's ``compute_metrics`` exactly, ties included: every key
  whose similarity *equals* the positive's counts as a separate rank entry, each at its own
  sorted position, in both numerator and denominator (golden G1 ``tie_*``). With fp16
  similarities (the released pipeline's) ties are frequent and R@K changes accordingly.
* :func:`class_recall_at_k` — class protocol: a query hits at K when one of its top-K keys
  shares its label; optionally the query itself is excluded (same-set retrieval).
* :func:`cosine_similarity` — fp32 cosine matrix, or the released pipeline's fp16 numpy
  arithmetic (``official_fp16=True``, bit-exact with golden ``a2v_fp16_sim``).

All functions accept torch tensors or numpy arrays, are vectorised, and return Python floats.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

__all__ = ["cosine_similarity", "recall_at_k", "class_recall_at_k"]

ArrayLike = torch.Tensor | np.ndarray


def _tensor(x: ArrayLike) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def cosine_similarity(a: ArrayLike, b: ArrayLike, official_fp16: bool = False) -> torch.Tensor:
    """Cosine similarity matrix (Nq, Nk) between rows of ``a`` (Nq, d) and ``b`` (Nk, d).

    Default: float32 ``normalize(a) @ normalize(b).T``. With ``official_fp16`` the released
    code's arithmetic: embeddings cast to float16 and ``a.b / (|a| |b|)`` evaluated by numpy in
    float16 (returned as float16), which creates ties that :func:`recall_at_k` counts.
    """
    if official_fp16:
        a16 = _tensor(a).detach().cpu().numpy().astype(np.float16)
        b16 = _tensor(b).detach().cpu().numpy().astype(np.float16)
        na = np.sqrt(np.einsum("ij,ij->i", a16, a16))
        nb = np.sqrt(np.einsum("ij,ij->i", b16, b16))
        return torch.from_numpy((a16 @ b16.T) / (na[:, None] * nb[None, :]))
    a32, b32 = _tensor(a).float(), _tensor(b).float()
    return F.normalize(a32, dim=-1) @ F.normalize(b32, dim=-1).t()


def _median(values: torch.Tensor) -> float:
    """numpy's median (mean of the two middle values for an even count)."""
    v, _ = torch.sort(values.double())
    n = v.numel()
    return float(v[n // 2]) if n % 2 else float((v[n // 2 - 1] + v[n // 2]) / 2)


def recall_at_k(sim: ArrayLike, k: Sequence[int] = (1, 5, 10),
                positives: ArrayLike | None = None) -> dict[str, float]:
    """Instance-protocol recall@K and median rank, tie-exact with EquiAV's ``compute_metrics``.

    Args:
        sim: (Nq, Nk) similarities, any float dtype (comparisons happen in that dtype).
        k: the K values; keys ``R<K>`` in the result.
        positives: (Nq,) index of each query's positive key; default ``arange(Nq)`` (diagonal).

    Returns:
        ``{"R1": .., "R5": .., "R10": .., "MR": ..}``: R@K as a fraction in [0, 1], MR the
        1-based median rank. For a query whose positive ties with ``e - 1`` other keys and is
        beaten by ``g`` keys, the entries are ranks ``g .. g+e-1`` (0-based), each counted.
    """
    s = _tensor(sim)
    nq, nk = s.shape
    pos = torch.arange(nq) if positives is None else _tensor(positives).long()
    if pos.numel() != nq or bool((pos >= nk).any()):
        raise ValueError(f"sim of shape {tuple(s.shape)} needs a positive key index per query")
    d = s.gather(1, pos.to(s.device)[:, None])  # (Nq, 1)
    greater = (s > d).sum(dim=1).cpu()  # g: keys ranked strictly before the positive
    equal = (s == d).sum(dim=1).cpu()  # e >= 1 (the positive itself; 0 only for NaN)
    total = int(equal.sum())
    if total == 0:
        raise ValueError("no finite positive similarity (all NaN?)")
    out: dict[str, float] = {}
    for kk in k:
        hits = (torch.clamp(greater + equal, max=kk) - greater).clamp(min=0)
        out[f"R{kk}"] = float(hits.sum()) / total
    starts = torch.repeat_interleave(greater, equal)
    offsets = torch.arange(total) - torch.repeat_interleave(torch.cumsum(equal, 0) - equal, equal)
    out["MR"] = _median(starts + offsets) + 1.0
    return out


def class_recall_at_k(sim: ArrayLike, query_labels: ArrayLike, key_labels: ArrayLike,
                      k: Sequence[int] = (1, 5, 10), exclude_self: bool = False) -> dict[str, float]:
    """Class-protocol recall@K: the fraction of queries with a same-label key in their top K.

    Args:
        sim: (Nq, Nk) similarities.
        query_labels: (Nq,) integer class of each query.
        key_labels: (Nk,) integer class of each key.
        k: the K values; keys ``R<K>`` in the result.
        exclude_self: drop key i from query i's candidates (needs Nq == Nk, same items; e.g.
            audio -> audio retrieval within one set).

    Returns:
        ``{"R1": .., "R5": .., "R10": ..}`` as fractions in [0, 1]. Ties are broken by
        ``torch.topk`` (stable order is not guaranteed).
    """
    s = _tensor(sim).float().clone()
    ql, kl = _tensor(query_labels).long().to(s.device), _tensor(key_labels).long().to(s.device)
    nq, nk = s.shape
    if ql.numel() != nq or kl.numel() != nk:
        raise ValueError(f"labels ({ql.numel()}, {kl.numel()}) do not match sim {tuple(s.shape)}")
    if exclude_self:
        if nq != nk:
            raise ValueError("exclude_self needs a square similarity matrix")
        s.fill_diagonal_(float("-inf"))
    kmax = min(max(k), nk - int(exclude_self))
    top = s.topk(kmax, dim=1).indices  # (Nq, kmax)
    match = kl[top] == ql[:, None]
    first_hit = torch.where(match.any(dim=1), match.float().argmax(dim=1), torch.full_like(ql, kmax))
    return {f"R{kk}": float((first_hit < kk).float().mean()) for kk in k}
