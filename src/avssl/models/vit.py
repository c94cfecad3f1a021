"""ViT encoders built from timm blocks, with fixed 2-D sin-cos position embeddings (EquiAV).

:class:`ViTEncoder` is one modality's encoder: a 16x16 patch embedding (3 input channels,
also for audio), a fixed sin-cos position embedding, a learned modality token added to every
patch (no class token), ``depth`` timm ``Block``s (attention through
``F.scaled_dot_product_attention``) and two final LayerNorms: ``norm`` for clean inputs and
``norm_aug`` for augmented inputs (EquiAV shares the blocks between the views but not the
final norm). :meth:`ViTEncoder.forward` returns normalised patch tokens (B, N, D).

Audio input is (B, 3, T, F) (a fbank repeated to 3 channels); with ``transpose_input`` it is
transposed to (B, 3, F, T) so that frequency is the image height and tokens are ordered
frequency-row-major, ``k = f_row * (T/16) + t_col`` (golden README, EquiAV quirk 1).
"""
from __future__ import annotations

import logging

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block

logger = logging.getLogger(__name__)

__all__ = ["sincos_pos_embed_2d", "init_linear_and_norm", "ViTEncoder", "load_mae_into_encoder"]


def init_linear_and_norm(module: nn.Module) -> None:
    """The original initialisation for every Linear (xavier uniform, zero bias) and
    LayerNorm (unit weight, zero bias) inside ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding, (grid_h * grid_w, dim), float32.

    Positions are row-major over a (grid_h, grid_w) grid. The first ``dim/2`` channels encode
    the column index and the last ``dim/2`` the row index; each half is ``[sin(p w), cos(p w)]``
    with ``w_i = 10000^(-i / (dim/4))``, i = 0 .. dim/4 - 1 (MAE's formula, computed in float64
    and rounded to float32 as the original does).
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows = torch.arange(grid_h, dtype=torch.float64).repeat_interleave(grid_w)
    cols = torch.arange(grid_w, dtype=torch.float64).repeat(grid_h)

    def one_d(pos: torch.Tensor) -> torch.Tensor:
        out = pos[:, None] * omega[None, :]
        return torch.cat([out.sin(), out.cos()], dim=1)

    return torch.cat([one_d(cols), one_d(rows)], dim=1).float()


class ViTEncoder(nn.Module):
    """One modality's ViT: patches -> +pos +modality -> blocks -> final norm.

    Args:
        input_size: (H, W) of the image the patch embedding sees (after the optional
            transpose): (224, 224) for frames, (num_mel_bins, audio_length) for audio.
        patch_size: square patch side.
        in_chans: input channels (3, also for the repeated audio fbank).
        embed_dim, depth, num_heads, mlp_ratio: transformer size; qkv bias on.
        drop_path: stochastic-depth rate, the same for every block (as the original).
        drop: dropout after attention projection and inside the MLPs.
        transpose_input: swap the last two input axes first ((B,C,T,F) -> (B,C,F,T), audio).
        aug_norm: also create ``norm_aug`` (pre-training; fine-tuning only needs ``norm``).
        learnable_pos: make the position embedding a trainable parameter (default: a fixed
            buffer, not saved in the state dict because it is recomputed).
    """

    def __init__(
        self,
        input_size: tuple[int, int],
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        drop: float = 0.0,
        transpose_input: bool = False,
        aug_norm: bool = True,
        learnable_pos: bool = False,
    ) -> None:
        super().__init__()
        h, w = input_size
        if h % patch_size or w % patch_size:
            raise ValueError(f"input size {input_size} is not a multiple of patch {patch_size}")
        self.grid = (h // patch_size, w // patch_size)
        self.input_size = (h, w)
        self.transpose_input = transpose_input
        self.embed_dim = embed_dim
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        pos = sincos_pos_embed_2d(embed_dim, *self.grid)[None]
        if learnable_pos:
            self.pos_embed = nn.Parameter(pos)
        else:
            self.register_buffer("pos_embed", pos, persistent=False)
        self.modality_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                embed_dim, num_heads, mlp_ratio, qkv_bias=True, proj_drop=drop,
                drop_path=drop_path, norm_layer=nn.LayerNorm,
            )
            for _ in range(depth)
        )
        for blk in self.blocks:
            blk.attn.fused_attn = True  # F.scaled_dot_product_attention, whatever TIMM_FUSED_ATTN says
        self.norm = nn.LayerNorm(embed_dim)
        self.norm_aug = nn.LayerNorm(embed_dim) if aug_norm else None
        self.reset_parameters()

    @property
    def num_patches(self) -> int:
        """Number of patch tokens N = grid_h * grid_w."""
        return self.grid[0] * self.grid[1]

    def reset_parameters(self) -> None:
        """The original initialisation: xavier-uniform linears (and the patch conv seen as a
        linear), zero biases, unit LayerNorms, modality token N(0, 0.02)."""
        init_linear_and_norm(self)
        w = self.patch_embed.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.normal_(self.modality_token, std=0.02)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens with position and modality embeddings: (B, C, H, W) -> (B, N, D)."""
        if self.transpose_input:
            x = x.transpose(2, 3)
        if tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(
                f"expected input spatial size {self.input_size} (after transpose="
                f"{self.transpose_input}), got {tuple(x.shape[-2:])}"
            )
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        return x + self.pos_embed + self.modality_token

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Un-normalised output tokens of the last block: (B, C, H, W) -> (B, N, D)."""
        x = self.embed(x)
        for blk in self.blocks:
            x = blk(x)
        return x

    def forward(self, x: torch.Tensor, augmented: bool = False) -> torch.Tensor:
        """Normalised tokens (B, N, D); ``augmented`` selects ``norm_aug`` over ``norm``."""
        tokens = self.forward_tokens(x)
        return self.final_norm(tokens, augmented)

    def final_norm(self, tokens: torch.Tensor, augmented: bool = False) -> torch.Tensor:
        """Apply ``norm`` (clean) or ``norm_aug`` (augmented) to (B, N, D) tokens."""
        if augmented:
            if self.norm_aug is None:
                raise ValueError("this encoder was built without norm_aug (aug_norm=False)")
            return self.norm_aug(tokens)
        return self.norm(tokens)

    def forward_pair(self, x: torch.Tensor, x_aug: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean and augmented views through the shared blocks in one batched pass.

        Args:
            x, x_aug: (B, C, H, W) each.

        Returns:
            ``(tokens, tokens_aug)``, each (B, N, D), normalised by ``norm`` / ``norm_aug``.
        """
        b = x.shape[0]
        tokens = self.forward_tokens(torch.cat([x, x_aug], dim=0))
        return self.final_norm(tokens[:b]), self.final_norm(tokens[b:], augmented=True)

    def extra_repr(self) -> str:
        return f"grid={self.grid}, transpose_input={self.transpose_input}"


def load_mae_into_encoder(
    encoder: ViTEncoder, mae_state: dict[str, torch.Tensor], source: str = "<state dict>"
) -> tuple[list[str], set[str]]:
    """Copy an ImageNet MAE ViT's weights into ``encoder``.

    Copies ``patch_embed.proj.*`` (a 1-channel kernel is repeated to ``in_chans``),
    ``blocks.<i>.*`` and ``norm.*`` (into the clean-view ``norm`` only). Position embeddings,
    the class token and any decoder keys are not used.

    Returns:
        ``(our keys loaded, MAE keys used)``.

    Raises:
        ValueError: the state has no ``blocks.`` keys, or a used tensor has the wrong shape.
    """
    if not any(k.startswith("blocks.") for k in mae_state):
        raise ValueError(f"{source} does not look like a ViT checkpoint (no 'blocks.' keys)")
    own = encoder.state_dict()
    loaded: list[str] = []
    used: set[str] = set()
    for key, value in mae_state.items():
        if key.startswith("patch_embed.proj."):
            target = "patch_embed." + key.split(".")[-1]
            if target == "patch_embed.weight" and value.shape[1] == 1 and own[target].shape[1] > 1:
                value = value.repeat(1, own[target].shape[1], 1, 1)
        elif key.startswith("blocks.") or key in ("norm.weight", "norm.bias"):
            target = key
        else:
            continue
        if target not in own:
            continue  # e.g. blocks beyond our depth
        if own[target].shape != value.shape:
            raise ValueError(
                f"{source}: {key} has shape {tuple(value.shape)}, encoder's {target} "
                f"expects {tuple(own[target].shape)}"
            )
        own[target] = value
        loaded.append(target)
        used.add(key)
    encoder.load_state_dict(own)
    return loaded, used
