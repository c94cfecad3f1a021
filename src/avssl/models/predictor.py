"""EquiAV's transformation predictor and projection heads (docs/methods.md §2.4).

* :class:`AugmentationEncoder` — an augmentation-parameter vector t (d_t) -> embedding (E):
  Linear - QuickGELU - Linear - QuickGELU - Linear.
* :class:`CrossAttentionPredictor` — predicts the embedding of an augmented view from the
  clean patch tokens and the augmentation embedding: the queries are ``LayerNorm(aug emb)``
  (K of them), keys/values the *un-normalised* (by this block) tokens, 8 heads x 64 dims
  whatever the width, ``to_out`` without bias; ``out = mean(tokens) + attn``;
  ``out = out + MLP(LN(out))``. :meth:`~CrossAttentionPredictor.forward` returns one output
  per query; the EquiAV model averages them over K (K=1: the equivariant prediction for
  one t; K=S: the invariant centroid).
* :class:`ProjectionHead` — Linear-LN-ReLU, Linear-LN-ReLU, Linear-LN.
"""
from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp

from avssl.models.vit import init_linear_and_norm

logger = logging.getLogger(__name__)

__all__ = [
    "QuickGELU", "AugmentationEncoder", "CrossAttentionPredictor", "ProjectionHead",
    "init_linear_and_norm",
]


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)`` (CLIP's GELU approximation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class AugmentationEncoder(nn.Module):
    """Augmentation-parameter vectors (..., d_t) -> embeddings (..., E)."""

    def __init__(self, d_t: int, emb_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_t, emb_dim)
        self.fc2 = nn.Linear(emb_dim, emb_dim)
        self.fc3 = nn.Linear(emb_dim, emb_dim)
        self.act = QuickGELU()

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act(self.fc2(self.act(self.fc1(t)))))


class CrossAttentionPredictor(nn.Module):
    """Cross-attention block: augmentation queries attend to the clean patch tokens.

    Args:
        dim: token width D (keys/values input and output width).
        aug_dim: augmentation-embedding width E (query input).
        num_heads, head_dim: attention shape (the original: always 8 x 64).
        mlp_ratio: MLP hidden width = ``dim * mlp_ratio`` (GELU).
    """

    def __init__(
        self, dim: int, aug_dim: int, num_heads: int = 8, head_dim: int = 64, mlp_ratio: float = 4.0
    ) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        inner = num_heads * head_dim
        self.norm_aug = nn.LayerNorm(aug_dim)
        self.to_q = nn.Linear(aug_dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.to_out = nn.Linear(inner, dim, bias=False)
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, H*dh) -> (B, H, L, dh)."""
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, tokens: torch.Tensor, aug_emb: torch.Tensor) -> torch.Tensor:
        """Per-query predictions.

        Args:
            tokens: (B, N, D) patch tokens (keys and values).
            aug_emb: (B, K, E) augmentation embeddings (queries).

        Returns:
            (B, K, D): ``mean_N(tokens) + attn``, then ``+ MLP(LN(.))``, one row per query.
        """
        q = self._heads(self.to_q(self.norm_aug(aug_emb)))
        k = self._heads(self.to_k(tokens))
        v = self._heads(self.to_v(tokens))
        attn = F.scaled_dot_product_attention(q, k, v)  # (B, H, K, dh)
        b, _, kq, _ = attn.shape
        attn = self.to_out(attn.transpose(1, 2).reshape(b, kq, -1))
        x = tokens.mean(dim=1, keepdim=True) + attn
        return x + self.mlp(self.norm(x))

    def predict(self, tokens: torch.Tensor, aug_emb: torch.Tensor) -> torch.Tensor:
        """The prediction averaged over the K queries: (B, N, D), (B, K, E) -> (B, D)."""
        return self(tokens, aug_emb).mean(dim=1)


class ProjectionHead(nn.Module):
    """(..., in_dim) -> (..., out_dim): Linear-LN-ReLU, Linear-LN-ReLU, Linear-LN."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, hidden_dim)
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.fc3 = nn.Linear(hidden_dim, out_dim)
        self.norm3 = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.fc1(x)))
        x = F.relu(self.norm2(self.fc2(x)))
        return self.norm3(self.fc3(x))

