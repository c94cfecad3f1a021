"""EquiAV fine-tuning classifier (METHODS 2.7, golden C).

Three modes on the clean-view encoders (final ``norm`` only):

* ``multimodal``: mean-pool each modality's tokens, project each with ``proj_a``/``proj_v``
  (a fresh Linear(D, P) with ``inter_linear``, else a Linear-LN-ReLU x2 + Linear-LN head that
  can take the pre-trained inter head), concatenate (2P), classify.
* ``audio_only``: project *every* token with ``proj_a``, then average (B, P), classify.
* ``video_only``: mean-pooled visual tokens (B, D) straight into the classifier.

The classifier is ``Linear(in, C)`` (``head_type="linear"``) or
``Linear(in, head_dim) - BatchNorm1d - ReLU - Linear(head_dim, C)`` (``"mlp"``; the original
uses SyncBatchNorm: convert with ``nn.SyncBatchNorm.convert_sync_batchnorm`` under DDP).

Head input widths. The released code feeds ``audio_only`` features of width P into a linear
classifier built for width D (and ``video_only`` features of width D into an mlp classifier
built for P), so it crashes whenever ``proj_out_dim != embed_dim`` (512 vs 768 by default).
We size the classifier from the features it receives. ``original_head_dims=True`` keeps the
released sizes and raises a ``ValueError`` naming that crash at construction instead.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn

from avssl.methods.equiav import (
    BLOCK_DROP_RULES,
    ConversionReport,
    EquiAVConfig,
    build_encoders,
    convert_official_pretrain,
    convert_state_dict,
    official_pretrain_key,
    strip_prefixes,
)
from avssl.models.predictor import ProjectionHead
from avssl.models.vit import init_linear_and_norm

logger = logging.getLogger(__name__)

Mode = Literal["multimodal", "audio_only", "video_only"]

__all__ = [
    "EquiAVFTConfig", "EquiAVClassifier", "official_finetune_key", "convert_official_finetune",
    "load_official_finetune", "load_pretrained_backbone",
]


@dataclass(frozen=True)
class EquiAVFTConfig:
    """Fine-tuning options (defaults: the released recipe, ``--inter_linear`` in effect True)."""

    num_classes: int = 527
    mode: Mode = "multimodal"
    inter_linear: bool = True
    proj_hidden_dim: int = 2048
    proj_out_dim: int = 512
    head_type: Literal["linear", "mlp"] = "linear"
    head_dim: int = 512
    drop_path: float = 0.1
    drop: float = 0.0
    original_head_dims: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("multimodal", "audio_only", "video_only"):
            raise ValueError(f"mode must be multimodal, audio_only or video_only, got {self.mode!r}")
        if self.head_type not in ("linear", "mlp"):
            raise ValueError(f"head_type must be 'linear' or 'mlp', got {self.head_type!r}")


class EquiAVClassifier(nn.Module):
    """EquiAV encoders + projection + classifier; ``forward(a, v) -> logits (B, C)``.

    Args:
        backbone: encoder sizes (the pre-training config; its heads/loss fields are unused).
        ft: fine-tuning options.
    """

    def __init__(self, backbone: EquiAVConfig | None = None, ft: EquiAVFTConfig | None = None):
        super().__init__()
        self.backbone_cfg = backbone = backbone or EquiAVConfig()
        self.cfg = ft = ft or EquiAVFTConfig()
        d, p = backbone.embed_dim, ft.proj_out_dim
        audio, visual = build_encoders(backbone, aug_norm=False, drop_path=ft.drop_path, drop=ft.drop)
        self.audio_encoder = audio if ft.mode in ("multimodal", "audio_only") else None
        self.visual_encoder = visual if ft.mode in ("multimodal", "video_only") else None

        def proj() -> nn.Module:
            if ft.inter_linear:
                return nn.Linear(d, p)
            return ProjectionHead(d, ft.proj_hidden_dim, p)

        self.proj_a = proj() if ft.mode in ("multimodal", "audio_only") else None
        self.proj_v = proj() if ft.mode == "multimodal" else None
        feat = {"multimodal": 2 * p, "audio_only": p, "video_only": d}[ft.mode]
        head_in = feat
        if ft.original_head_dims and ft.mode != "multimodal":
            head_in = d if ft.head_type == "linear" else p
            if head_in != feat:
                raise ValueError(
                    f"original_head_dims: the released ft_EquiAV builds a {ft.mode} {ft.head_type} "
                    f"classifier for {head_in} inputs but feeds it {feat}-wide features "
                    f"(proj_out_dim={p}, embed_dim={d}); it crashes with a matmul shape error. "
                    "Use original_head_dims=False (sized from the features) or proj_out_dim == embed_dim."
                )
        if ft.head_type == "linear":
            self.head = nn.Sequential(nn.Linear(head_in, ft.num_classes))
        else:
            self.head = nn.Sequential(
                nn.Linear(head_in, ft.head_dim), nn.BatchNorm1d(ft.head_dim), nn.ReLU(inplace=True),
                nn.Linear(ft.head_dim, ft.num_classes),
            )
        for m in (self.proj_a, self.proj_v, self.head):
            if m is not None:
                init_linear_and_norm(m)

    def features(self, a: torch.Tensor | None, v: torch.Tensor | None) -> torch.Tensor:
        """Classifier inputs: (B, 2P) multimodal, (B, P) audio_only, (B, D) video_only.

        Args:
            a: (B, 3, T, F) audio (ignored by video_only; may be None there).
            v: (B, 3, H, W) frames (ignored by audio_only; may be None there).
        """
        mode = self.cfg.mode
        if mode == "multimodal":
            za = self.proj_a(self.audio_encoder(a).mean(dim=1))
            zv = self.proj_v(self.visual_encoder(v).mean(dim=1))
            return torch.cat([za, zv], dim=-1)
        if mode == "audio_only":
            return self.proj_a(self.audio_encoder(a)).mean(dim=1)
        return self.visual_encoder(v).mean(dim=1)

    def forward(self, a: torch.Tensor | None, v: torch.Tensor | None) -> torch.Tensor:
        """Logits (B, num_classes)."""
        return self.head(self.features(a, v))

    def head_parameters(self) -> list[nn.Parameter]:
        """The freshly initialised classifier's parameters (the original's ``mlp_head``)."""
        return list(self.head.parameters())


# ====================================================================== checkpoint conversion
def official_finetune_key(key: str) -> str | None:
    """Our name for an official ``ft_EquiAV`` key (``__M__.``/``module.`` prefixes accepted)."""
    bare = strip_prefixes(key)
    m = re.match(r"pred_([av])_inter\.(.+)$", bare)
    if m:
        return f"proj_{m.group(1)}.{m.group(2)}"
    m = re.match(r"mlp_head\.(.+)$", bare)
    if m:
        return f"head.{m.group(1)}"
    if re.match(r"norm_[av]_aug\.", bare):
        return None
    return official_pretrain_key(bare)


def convert_official_finetune(state_dict: Mapping[str, torch.Tensor], strict: bool = False,
                              expected_keys: list[str] | None = None
                              ) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Official EquiAV fine-tuning state dict -> our :class:`EquiAVClassifier` state dict.

    With ``expected_keys`` (our model's keys), tensors of modules the mode does not build
    (e.g. the visual encoder in ``audio_only``) are reported as dropped, not unexpected.
    """
    return convert_state_dict(state_dict, official_finetune_key, BLOCK_DROP_RULES, expected_keys, strict)


def load_official_finetune(model: EquiAVClassifier, state_dict: Mapping[str, torch.Tensor],
                           strict: bool = True) -> ConversionReport:
    """Convert an official fine-tuning checkpoint and load it into ``model``."""
    expected = list(model.state_dict().keys())
    ref = {name: enc.pos_embed[0].detach().cpu() for name in ("audio_encoder", "visual_encoder")
           if (enc := getattr(model, name)) is not None}
    ours, report = convert_state_dict(state_dict, official_finetune_key, BLOCK_DROP_RULES, expected, strict, ref)
    model.load_state_dict(ours, strict=strict)
    logger.info("loaded official EquiAV fine-tuning checkpoint: %s", report.summary())
    return report


def load_pretrained_backbone(model: EquiAVClassifier, state_dict: Mapping[str, torch.Tensor]
                             ) -> ConversionReport:
    """Initialise a classifier from a pre-trained EquiAV (ours, or official: converted first).

    Copies the encoders (clean-view norms), and — as the released loader does when names
    and shapes match, i.e. only with ``inter_linear=False`` — the inter heads into
    ``proj_a``/``proj_v``. ``proj_*`` that stay fresh and the classifier are ``missing``.
    """
    if any(strip_prefixes(k).startswith(("blocks_a.", "blocks_v.")) for k in state_dict):
        state_dict, _ = convert_official_pretrain(state_dict)
    own = model.state_dict()
    src: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        target = re.sub(r"^head_inter_([av])\.", r"proj_\1.", key)
        if target in own and own[target].shape == value.shape:
            src[target] = value
    report = ConversionReport(loaded=sorted(src), missing=sorted(set(own) - set(src)))
    report.dropped = {k: "not used by the classifier" for k in state_dict
                      if re.sub(r"^head_inter_([av])\.", r"proj_\1.", k) not in src}
    model.load_state_dict(src, strict=False)
    logger.info("classifier initialised from pre-training: %s", report.summary())
    return report
