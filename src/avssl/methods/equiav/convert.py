"""The authors' EquiAV checkpoints -> avssl parameter names (pre-training; the fine-tuning
classifier's rules build on these in :mod:`avssl.methods.equiav.finetune`).

:func:`convert_official_pretrain` maps an official ``pt_EquiAV`` / ``pt_trainer`` state dict
(``__M__.`` and ``module.`` prefixes accepted) onto :class:`~avssl.methods.equiav.model.EquiAV`
and reports what it loaded, dropped and missed; :func:`official_pretrain_sizes` reads the
model sizes from the weights; :func:`load_official_pretrain` loads into a model.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from avssl.checkpoint import ConversionReport, strip_key, strip_prefixes
from avssl.methods.equiav.model import EquiAV

logger = logging.getLogger(__name__)

__all__ = ["ConversionReport", "official_pretrain_key", "convert_official_pretrain", "official_pretrain_sizes",
           "load_official_pretrain", "convert_state_dict", "BLOCK_DROP_RULES", "official_finetune_key",
           "convert_official_finetune", "load_official_finetune"]

_BRANCH = {"a": "audio_encoder", "v": "visual_encoder"}
_PRETRAIN_RULES: list[tuple[str, str]] = [
    (r"modality_([av])$", r"{enc\1}.modality_token"),
    (r"patch_embed_([av])\.proj\.(weight|bias)$", r"{enc\1}.patch_embed.\2"),
    (r"blocks_([av])\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$",
     r"{enc\1}.blocks.\2.\3.\4"),
    (r"norm_([av])\.(weight|bias)$", r"{enc\1}.norm.\2"),
    (r"norm_([av])_aug\.(weight|bias)$", r"{enc\1}.norm_aug.\2"),
    (r"aug_encoder_([av])\.0\.(weight|bias)$", r"aug_encoder_\1.fc1.\2"),
    (r"aug_encoder_([av])\.2\.(weight|bias)$", r"aug_encoder_\1.fc2.\2"),
    (r"aug_encoder_([av])\.4\.(weight|bias)$", r"aug_encoder_\1.fc3.\2"),
    (r"cross_attn_([av])\.attn\.(to_q|to_k|to_v|to_out)\.(weight|bias)$", r"predictor_\1.\2.\3"),
    (r"cross_attn_([av])\.(norm_aug|norm|mlp\.fc1|mlp\.fc2)\.(weight|bias)$", r"predictor_\1.\2.\3"),
    (r"pred_([av])_(intra|inter)\.(.+)$", r"head_\2_\1.\3"),
    (r"__L_inter__\.tau$", "tau_inter"),
    (r"__L_intra__\.tau$", "tau_intra"),
]
BLOCK_DROP_RULES: list[tuple[str, str]] = [
    (r"blocks_[av]\.\d+\.norm[12]_[av]\.", "unused per-modality norm of the original Block"),
]


def official_pretrain_key(key: str) -> str | None:
    """Our parameter name for an official ``pt_EquiAV`` / ``pt_trainer`` key (``__M__.`` and
    ``module.`` prefixes accepted), or None when no rule maps it (position embeddings and the
    unused Block norms included)."""
    key = strip_key(key)
    for pattern, target in _PRETRAIN_RULES:
        m = re.match(pattern, key)
        if m:
            out = m.expand(target)
            return re.sub(r"\{enc([av])\}", lambda g: _BRANCH[g.group(1)], out)
    return None


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], key_fn: Callable[[str], str | None],
    drop_rules: list[tuple[str, str]], expected: Iterable[str] | None, strict: bool,
    reference_pos: Mapping[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Shared conversion loop (pre-training and fine-tuning checkpoints).

    ``key_fn`` maps an official key to ours (or None). Mapped keys outside ``expected`` are
    dropped when their top-level module is not built (e.g. the visual encoder of an
    audio-only classifier), else unexpected. Unmapped ``pos_embed_[av]`` are dropped (or
    loaded into a learnable ``pos_embed``) and compared with ``reference_pos``; unmapped keys
    matching ``drop_rules`` are dropped with the rule's reason; the rest are unexpected.
    """
    ours: dict[str, torch.Tensor] = {}
    report = ConversionReport()
    expected = None if expected is None else set(expected)
    built = None if expected is None else {k.split(".")[0] for k in expected}
    for key, value in state_dict.items():
        new = key_fn(key)
        bare = strip_key(key)
        if new is not None:
            if expected is None or new in expected:
                ours[new] = value
            elif new.split(".")[0] not in built:
                report.dropped[key] = f"{new.split('.')[0]} is not built in this configuration"
            else:
                report.unexpected.append(key)
            continue
        pos = re.match(r"pos_embed_([av])$", bare)
        if pos and expected is not None and f"{_BRANCH[pos.group(1)]}.pos_embed" in expected:
            ours[f"{_BRANCH[pos.group(1)]}.pos_embed"] = value  # learnable_pos: load it
            continue
        if pos:
            report.dropped[key] = "fixed sin-cos position embedding (recomputed)"
            ref = (reference_pos or {}).get(_BRANCH[pos.group(1)])
            flat = value.reshape(-1, value.shape[-1]).float()
            if ref is not None and (flat.shape != ref.shape or not torch.allclose(flat, ref, atol=1e-6)):
                report.notes.append(f"{key} differs from our fixed sin-cos embedding of shape {tuple(ref.shape)}")
            continue
        reason = next((r for p, r in drop_rules if re.match(p, bare)), None)
        if reason is not None:
            report.dropped[key] = reason
        else:
            report.unexpected.append(key)
    report.loaded = sorted(ours)
    if expected is not None:
        report.missing = sorted(expected - set(ours))
    for note in report.notes:
        logger.warning("checkpoint conversion: %s", note)
    if strict and not report.ok:
        raise KeyError(f"checkpoint conversion failed ({report.summary()}): unexpected "
                       f"{report.unexpected[:10]}, missing {report.missing[:10]}")
    return ours, report


def convert_official_pretrain(state_dict: Mapping[str, torch.Tensor], strict: bool = False,
                              expected_keys: Iterable[str] | None = None
                              ) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Official EquiAV pre-training state dict -> our :class:`EquiAV` state dict.

    Args:
        state_dict: keys of ``pt_EquiAV.MainModel`` with optional ``__M__.`` / ``module.``
            prefixes (``__L_*__.tau`` of a learnable temperature included).
        strict: raise ``KeyError`` on unexpected keys (or missing ones, with ``expected_keys``).
        expected_keys: our model's state-dict keys, to report what is missing.

    Returns:
        ``(ours, report)``; the fixed position embeddings and the unused ``norm{1,2}_{a,v}``
        of every Block are reported as dropped.
    """
    return convert_state_dict(state_dict, official_pretrain_key, BLOCK_DROP_RULES, expected_keys, strict)


def official_pretrain_sizes(state_dict: Mapping[str, torch.Tensor], num_mel_bins: int = 128) -> dict:
    """The :class:`EquiAVConfig` sizes an official pre-training state dict's weights imply.

    Read from the shapes: ``embed_dim``, ``patch_size``, ``depth``, ``mlp_ratio``, the patch grids
    (``img_size``; ``audio_length`` given ``num_mel_bins``), ``aug_dim_a/v`` (``visual_extended``
    when the visual vector has 21 slots), ``aug_emb_dim``, the cross-attention width and the head
    widths. The weights cannot tell ``num_heads`` nor ``num_mel_bins`` (the caller's preset
    does). Keys absent from the file leave their size out, so the preset decides it.
    """
    import re

    sd = strip_prefixes(state_dict)
    out: dict = {}

    def shape(key: str) -> tuple[int, ...] | None:
        v = sd.get(key)
        return tuple(v.shape) if isinstance(v, torch.Tensor) else None

    pe = shape("patch_embed_v.proj.weight") or shape("patch_embed_a.proj.weight")
    if pe:
        out["embed_dim"], out["patch_size"] = pe[0], pe[2]
    depths = {int(m.group(1)) for k in sd if (m := re.match(r"blocks_a\.(\d+)\.", k))}
    if depths:
        out["depth"] = max(depths) + 1
    fc1 = shape("blocks_a.0.mlp.fc1.weight")
    if fc1 and pe:
        out["mlp_ratio"] = fc1[0] / fc1[1]
    pos_v, pos_a = shape("pos_embed_v"), shape("pos_embed_a")
    if pos_v and pe:
        side = round(pos_v[1] ** 0.5)
        if side * side == pos_v[1]:
            out["img_size"] = side * pe[2]
    if pos_a and pe:
        out["audio_length"] = pos_a[1] * pe[2] * pe[2] // num_mel_bins
    for m in ("a", "v"):
        enc = shape(f"aug_encoder_{m}.0.weight")
        if enc:
            out[f"aug_dim_{m}"], out["aug_emb_dim"] = enc[1], enc[0]
    if out.get("aug_dim_v") is not None:
        out["visual_extended"] = out["aug_dim_v"] == 21
    q = shape("cross_attn_a.attn.to_q.weight")
    if q:
        head_dim = 64 if q[0] % 64 == 0 else q[0]
        out["cross_attn_heads"], out["cross_attn_head_dim"] = q[0] // head_dim, head_dim
    for head, key in (("intra", "pred_a_intra"), ("inter", "pred_a_inter")):
        h1, h3 = shape(f"{key}.fc1.weight"), shape(f"{key}.fc3.weight")
        if h1:
            out["proj_hidden_dim"] = h1[0]
        if h3:
            out[f"{head}_out_dim"] = h3[0]
    return out


def load_official_pretrain(model: EquiAV, state_dict: Mapping[str, torch.Tensor], strict: bool = True
                           ) -> ConversionReport:
    """Convert an official pre-training checkpoint and load it into ``model``."""
    expected = model.state_dict().keys()
    ref = {name: enc.pos_embed[0].detach().cpu() for name, enc in
           (("audio_encoder", model.audio_encoder), ("visual_encoder", model.visual_encoder))}
    ours, report = convert_state_dict(state_dict, official_pretrain_key, BLOCK_DROP_RULES, expected, strict, ref)
    model.load_state_dict(ours, strict=strict)
    logger.info("loaded official EquiAV checkpoint: %s", report.summary())
    return report


# ---------------------------------------------------------------- fine-tuning classifier
def official_finetune_key(key: str) -> str | None:
    """Our name for an official ``ft_EquiAV`` key (``__M__.``/``module.`` prefixes accepted)."""
    bare = strip_key(key)
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
    """Official EquiAV fine-tuning state dict -> our :class:`~avssl.methods.equiav.finetune.EquiAVClassifier` state dict.

    With ``expected_keys`` (our model's keys), tensors of modules the mode does not build
    (e.g. the visual encoder in ``audio_only``) are reported as dropped, not unexpected.
    """
    return convert_state_dict(state_dict, official_finetune_key, BLOCK_DROP_RULES, expected_keys, strict)


def load_official_finetune(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                           strict: bool = True) -> ConversionReport:
    """Convert an official fine-tuning checkpoint and load it into ``model``."""
    expected = list(model.state_dict().keys())
    ref = {name: enc.pos_embed[0].detach().cpu() for name in ("audio_encoder", "visual_encoder")
           if (enc := getattr(model, name)) is not None}
    ours, report = convert_state_dict(state_dict, official_finetune_key, BLOCK_DROP_RULES, expected, strict, ref)
    model.load_state_dict(ours, strict=strict)
    logger.info("loaded official EquiAV fine-tuning checkpoint: %s", report.summary())
    return report
