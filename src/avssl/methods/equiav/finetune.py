"""EquiAV fine-tuning classifier (docs/methods.md §2.7, golden C).

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

Fine-tuning runs (``avssl train ... method: equiav_ft``) use :class:`EquiAVFinetuneConfig` and
:class:`EquiAVFinetune` (the classifier, initialised from a pre-training checkpoint when one is
set); their data, loss, evaluation and optimiser groups are in :mod:`avssl.methods.equiav.finetune_pipeline`.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn

from avssl.checkpoint import ConversionReport, strip_key
from avssl.methods.equiav.convert import convert_official_pretrain
from avssl.methods.equiav.model import EquiAVConfig, build_encoders
from avssl.models.predictor import ProjectionHead
from avssl.models.vit import init_linear_and_norm

logger = logging.getLogger(__name__)

Mode = Literal["multimodal", "audio_only", "video_only"]

__all__ = [
    "EquiAVFTConfig", "EquiAVClassifier", "load_pretrained_backbone",
    "EquiAVFinetuneConfig", "EquiAVFinetune", "load_init_checkpoint",
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


# ====================================================================== initialisation
def load_pretrained_backbone(model: EquiAVClassifier, state_dict: Mapping[str, torch.Tensor]
                             ) -> ConversionReport:
    """Initialise a classifier from a pre-trained EquiAV (ours, or official: converted first).

    Copies the encoders (clean-view norms), and — as the released loader does when names
    and shapes match, i.e. only with ``inter_linear=False`` — the inter heads into
    ``proj_a``/``proj_v``. ``proj_*`` that stay fresh and the classifier are ``missing``.
    """
    if any(strip_key(k).startswith(("blocks_a.", "blocks_v.")) for k in state_dict):
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


# ====================================================================== fine-tuning runs
@dataclass(frozen=True)
class EquiAVFinetuneConfig:
    """A fine-tuning run of ``avssl train`` (``method: equiav_ft``), docs/methods.md §2.7.

    backbone: encoder sizes (must match ``init_checkpoint``); ft: the classifier options.
    loss: "bce" (the released recipe, also for single-label VGGSound) or "ce" (soft-target
        cross-entropy; mixed targets are renormalised to sum to 1).
    multi_label: True scores by mAP (AudioSet), False by top-1 accuracy (VGGSound); both are
        always computed and logged.
    mixup_p / mixup_alpha: probability of mixing a clip (waveform, frame and target) with a
        partner, lambda ~ Beta(alpha, alpha) (released: 0.5, Beta(10, 10)).
    time_roll: circular time roll of the normalised fbank by U{-T..T-1} frames in training.
    fbank_stats: normalisation statistics (a key of ``avssl.data.audio.FBANK_STATS``).
    head_lr_scale / original_head_lr: the released code asks for the classifier at 50 x lr, but
        its scheduler overwrites every group's lr, so the classifier in effect trains at 1 x
        (docs/methods.md §2.8). ``original_head_lr=True`` (default) reproduces that (scale 1);
        False applies ``head_lr_scale`` as the paper intends.
    init_checkpoint: an EquiAV pre-training checkpoint (an avssl checkpoint, or an official
        ``pt_EquiAV`` state dict: detected from its keys) loaded into the encoders at
        construction. None: random initialisation.
    class_list: the label space, in classifier order: a CAV-MAE labels CSV (columns index, mid,
        display_name: the mids by index), a JSON list of names or object name -> index (or
        name -> {"index": i}, as ``avssl synth`` writes ``classes.json``), or a text file with one
        name per line. None: the sorted distinct labels of the training records.
    sample_weights: a per-clip weights file (CAV-MAE's: one float per line, in the order of
        the training records) for class-balanced sampling with replacement; None: shuffled epochs.
    """

    backbone: EquiAVConfig = field(default_factory=EquiAVConfig)
    ft: EquiAVFTConfig = field(default_factory=EquiAVFTConfig)
    loss: Literal["bce", "ce"] = "bce"
    multi_label: bool = True
    mixup_p: float = 0.5
    mixup_alpha: float = 10.0
    time_roll: bool = True
    fbank_stats: str = "audioset"
    head_lr_scale: float = 50.0
    original_head_lr: bool = True
    init_checkpoint: str | None = None
    class_list: str | None = None
    sample_weights: str | None = None

    def __post_init__(self) -> None:
        if self.loss not in ("bce", "ce"):
            raise ValueError(f"loss must be 'bce' or 'ce', got {self.loss!r}")
        if not 0.0 <= self.mixup_p <= 1.0:
            raise ValueError(f"mixup_p must lie in [0, 1], got {self.mixup_p}")
        if self.mixup_alpha <= 0 or self.head_lr_scale <= 0:
            raise ValueError("mixup_alpha and head_lr_scale must be > 0")

    @property
    def head_lr(self) -> float:
        """The classifier's lr multiplier in effect."""
        return 1.0 if self.original_head_lr else self.head_lr_scale


def load_init_checkpoint(model: EquiAVClassifier, path: str | os.PathLike) -> ConversionReport:
    """Initialise ``model``'s encoders (and matching projections) from a pre-training file.

    Accepts an avssl checkpoint (``{"format": "avssl-checkpoint", "model": ...}``) or an
    official EquiAV state dict (possibly under ``model`` / ``state_dict``, with ``module.``
    prefixes). Raises :class:`avssl.checkpoint.CheckpointError` naming the file when it
    is missing or unreadable, or when no encoder weight fits the model (wrong sizes).
    """
    from avssl.checkpoint import (
        CheckpointError,
        check_checkpoint,
        is_avssl_checkpoint,
        safe_load,
        unwrap_state_dict,
    )

    path = str(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"init checkpoint {path}: no such file")
    obj = safe_load(path, map_location="cpu", what="init checkpoint")  # weights_only, never code
    if is_avssl_checkpoint(obj):
        state, kind = check_checkpoint(obj, path)["model"], "avssl"
    else:
        try:
            state, kind = unwrap_state_dict(obj), "official"
        except CheckpointError as e:
            raise CheckpointError(f"init checkpoint {path}: {e}") from e
    state = {strip_key(k): v for k, v in state.items()}
    report = load_pretrained_backbone(model, state)
    enc = [k for k in model.state_dict() if k.startswith(("audio_encoder.", "visual_encoder."))]
    loaded = set(report.loaded)
    if not any(k in loaded for k in enc):
        bad = [k for k in state if k.startswith(("audio_encoder.", "visual_encoder.", "blocks_a.", "blocks_v."))][:3]
        raise CheckpointError(
            f"init checkpoint {path} ({kind}): no encoder weight fits the model (sizes differ from "
            f"equiav_ft.backbone? e.g. {[(k, tuple(state[k].shape)) for k in bad]})")
    missing = [k for k in enc if k not in loaded]
    if missing:
        logger.warning("init checkpoint %s: %d encoder tensors keep their random init, e.g. %s",
                       path, len(missing), missing[:5])
    logger.info("fine-tuning initialised from %s checkpoint %s", kind, path)
    return report


class EquiAVFinetune(EquiAVClassifier):
    """:class:`EquiAVClassifier` built from an :class:`EquiAVFinetuneConfig` (the registry's ``equiav_ft``).

    ``forward(a (B, 3, T, F), v (B, 3, H, W)) -> logits (B, C)``. Loads ``init_checkpoint`` when set
    (``self.init_report`` keeps the report).
    """

    def __init__(self, cfg: EquiAVFinetuneConfig | None = None) -> None:
        cfg = cfg or EquiAVFinetuneConfig()
        super().__init__(cfg.backbone, cfg.ft)
        self.finetune_cfg = cfg
        self.init_report: ConversionReport | None = None
        if cfg.init_checkpoint:
            self.init_report = load_init_checkpoint(self, cfg.init_checkpoint)
