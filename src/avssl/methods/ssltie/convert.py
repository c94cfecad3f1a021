"""The authors' SSL-TIE checkpoints (``AVENet``: ``imgnet.*``, ``audnet.*``) -> :class:`SSLTIE`.

:func:`convert_official_state_dict` renames the parameters, reports what it loaded, dropped
(keys the original forward never uses) and missed, and checks every shape.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from avssl.checkpoint import (
    ConversionReport,
    finish_conversion,
    load_converted,
    strip_prefixes,
    unwrap_state_dict,
)
from avssl.methods.ssltie.model import SSLTIE, SSLTIEConfig

__all__ = ["convert_official_state_dict", "load_official"]


# Official AVENet parameters that its forward never uses (or whose output is discarded).
_OFFICIAL_UNUSED_PREFIXES = (
    "imgnet.fc.", "audnet.fc.", "imgnet.conv1_a.", "imgnet.conv1_flow.", "audnet.conv1.",
    "audnet.conv1_flow.", "vision_fc1.", "conv3.", "norm3.",
)


def _official_to_ours(key: str) -> str | None:
    if key.startswith("audnet.conv1_a."):
        return "audio.conv1." + key.removeprefix("audnet.conv1_a.")
    if key.startswith("imgnet.conv1."):
        return "visual.conv1." + key.removeprefix("imgnet.conv1.")
    for official, ours in (("imgnet.", "visual."), ("audnet.", "audio.")):
        rest = key.removeprefix(official)
        if rest != key and rest.startswith(("bn1.", "layer1.", "layer2.", "layer3.", "layer4.")):
            return ours + rest
    return None


def convert_official_state_dict(state_dict: Mapping, strict: bool = False,
                                width: int | None = None) -> tuple[dict[str, Tensor], ConversionReport]:
    """Map an official SSL-TIE ``AVENet`` state dict onto :class:`SSLTIE` parameter names.

    Accepts a plain state dict, ``{"model": sd}`` or ``{"state_dict": sd}``, with or without
    DataParallel ``module.`` prefixes. ``imgnet.*`` -> ``visual.*``, ``audnet.conv1_a`` ->
    ``audio.conv1``, ``audnet.*`` -> ``audio.*``. Keys the official forward never uses
    (``conv3``, ``norm3``, ``fc``, unused stems) are reported as ``unused``; unrecognised keys
    as ``unexpected``; model keys not provided as ``missing`` (against a model of ``width``,
    inferred from ``imgnet.conv1.weight`` when None). Everything is logged; ``strict`` raises
    ``ValueError`` on any unexpected or missing key, and a shape mismatch always raises.
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"expected a state dict mapping, got {type(state_dict).__name__}")
    source = strip_prefixes(unwrap_state_dict(dict(state_dict), ("state_dict", "model")), ("module.",))
    report = ConversionReport()
    ours: dict[str, Tensor] = {}
    for key, value in source.items():
        target = _official_to_ours(key)
        if target is not None:
            ours[target] = torch.as_tensor(value)
            report.loaded.append(target)
        elif key.startswith(_OFFICIAL_UNUSED_PREFIXES):
            report.dropped[key] = "unused by the original forward"
        else:
            report.unexpected.append(key)
    if width is None:
        width = int(ours["visual.conv1.weight"].shape[0]) if "visual.conv1.weight" in ours else 64
    with torch.device("meta"):
        expected = SSLTIE(SSLTIEConfig(width=width)).state_dict()
    ours = finish_conversion(ours, expected, report, "official SSL-TIE checkpoint", strict, f"width {width}")
    return ours, report


def load_official(model: SSLTIE, state_dict: Mapping, strict: bool = False) -> ConversionReport:
    """Load an official AVENet checkpoint into ``model`` (any wrapper :func:`convert_official_state_dict` accepts)."""
    ours, report = convert_official_state_dict(state_dict, strict=strict, width=model.config.width)
    load_converted(model, ours)
    return report
