"""EquiAV's two contrastive losses as pure tensor functions (docs/methods.md §2.5, golden B).

* :func:`info_nce` — inter-modal symmetric CLIP loss between audio and visual embeddings.
* :func:`nt_xent` — intra-modal SimCLR loss between the equivariant prediction and the
  embedding of the augmented view, with same-list self-similarity masked by ``-1e9``.

Both L2-normalise their inputs, compute *local* queries against *global* keys gathered
across ranks (``gather`` selects how) and return ``(loss, acc)`` where ``acc`` is the top-1
accuracy of the first direction in percent (a detached 0-dim tensor). ``tau`` may be a float
or a learnable 0-dim tensor.

Gather modes (identical at world size 1):
* ``"none"``: no gathering, local batch only.
* ``"no_grad"``: keys from other ranks are constants; this rank's own slice keeps its
  gradient. (The released EquiAV code also detaches its own slice when world > 1, so its
  key gradients vanish on several GPUs but not on one; we keep the local gradient, which
  makes single- and multi-process training agree on every local-key term.)
* ``"with_grad"``: every rank's keys carry gradient; with DDP gradient averaging this equals
  single-process training on the concatenated batch exactly.
"""
from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F

from avssl import distributed as D

logger = logging.getLogger(__name__)

Gather = Literal["none", "no_grad", "with_grad"]

__all__ = ["Gather", "gather_keys", "info_nce", "nt_xent"]

# Value subtracted from same-list self-similarities in nt_xent (the released code's 1e9).
SELF_MASK = 1e9


def gather_keys(x: torch.Tensor, gather: Gather) -> torch.Tensor:
    """Keys from every rank, (n, d) -> (world*n, d), in rank order, per the ``gather`` mode."""
    if gather == "none" or D.world_size() == 1:
        return x
    if gather == "with_grad":
        return D.all_gather_with_grad(x)
    if gather == "no_grad":
        allx = D.all_gather_no_grad(x)
        n, r = x.shape[0], D.rank()
        return torch.cat([allx[: r * n], x, allx[(r + 1) * n:]], dim=0)
    raise ValueError(f"gather must be 'none', 'no_grad' or 'with_grad', got {gather!r}")


def _labels(x: torch.Tensor, gather: Gather) -> torch.Tensor:
    """Global indices of the local rows: rank * n + arange(n) (arange(n) when not gathering)."""
    n = x.shape[0]
    offset = 0 if gather == "none" else D.rank() * n
    return offset + torch.arange(n, device=x.device)


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy in percent, detached, float32."""
    with torch.no_grad():
        correct = (logits.argmax(dim=-1) == labels).sum()
        return (100.0 * correct / labels.numel()).float()


def info_nce(
    za: torch.Tensor,
    zv: torch.Tensor,
    tau: float | torch.Tensor = 0.07,
    gather: Gather = "no_grad",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE (CLIP) between paired rows of ``za`` and ``zv``.

    Args:
        za: (n, d) audio embeddings (not necessarily normalised).
        zv: (n, d) visual embeddings, row i paired with ``za[i]``.
        tau: temperature (float or learnable 0-dim tensor).
        gather: how keys are gathered across ranks (module docstring).

    Returns:
        ``(loss, acc)``: ``(CE(za @ zv_all.T / tau) + CE(zv @ za_all.T / tau)) / 2`` averaged
        over local rows, and the audio->visual top-1 accuracy in percent.
    """
    za = F.normalize(za, dim=-1, p=2)
    zv = F.normalize(zv, dim=-1, p=2)
    labels = _labels(za, gather)
    za_all, zv_all = gather_keys(za, gather), gather_keys(zv, gather)
    logits_a = za @ zv_all.t() / tau
    logits_v = zv @ za_all.t() / tau
    loss = (F.cross_entropy(logits_a, labels) + F.cross_entropy(logits_v, labels)) / 2
    return loss, _accuracy(logits_a, labels)


def nt_xent(
    q: torch.Tensor,
    k: torch.Tensor,
    tau: float | torch.Tensor = 0.07,
    gather: Gather = "with_grad",
) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCLR NT-Xent between two lists: ``q`` (equivariant predictions) and ``k`` (augmented).

    For row i of ``q`` the positive is ``k[i]``; the negatives are every other row of both
    (gathered) lists; the self-similarity ``q[i]·q[i]`` is masked by subtracting 1e9 (after
    dividing by tau, as the released code does). Symmetric: averaged with the k -> q term.

    Args:
        q: (n, d) first list.
        k: (n, d) second list, row i paired with ``q[i]``.
        tau: temperature (float or learnable 0-dim tensor).
        gather: how both lists are gathered across ranks (default with gradient).

    Returns:
        ``(loss, acc)``: the mean loss over local rows and directions, and the q -> k top-1
        accuracy in percent over the 2N candidates.
    """
    q = F.normalize(q, dim=-1, p=2)
    k = F.normalize(k, dim=-1, p=2)
    labels = _labels(q, gather)
    q_all, k_all = gather_keys(q, gather), gather_keys(k, gather)
    # float32 logits: under fp16 autocast the 1e9 mask would overflow (the released code
    # promotes to float32 the same way by subtracting a float32 mask).
    mask = F.one_hot(labels, q_all.shape[0]).float() * SELF_MASK
    logits_qq = (q @ q_all.t()).float() / tau - mask
    logits_kk = (k @ k_all.t()).float() / tau - mask
    logits_qk = (q @ k_all.t()).float() / tau
    logits_kq = (k @ q_all.t()).float() / tau
    logits_q = torch.cat([logits_qk, logits_qq], dim=1)
    logits_k = torch.cat([logits_kq, logits_kk], dim=1)
    loss = (F.cross_entropy(logits_q, labels) + F.cross_entropy(logits_k, labels)) / 2
    return loss, _accuracy(logits_q, labels)
