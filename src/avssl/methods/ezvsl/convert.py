"""The authors' EZ-VSL checkpoints (``imgnet.*``, ``audnet.*``, ``img_proj.*``, ``aud_proj.*``) -> :class:`EZVSL`.

:func:`convert_official_state_dict` renames the parameters (``imgnet.`` -> ``visual.``,
``audnet.`` -> ``audio.``, the heads keep their names), reports what it loaded, dropped (keys
the original forward never uses: a ``fc`` head) and missed, and checks every shape.
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
from avssl.methods.ezvsl.model import EZVSL, EZVSLConfig

__all__ = ["convert_official_state_dict", "load_official"]

_RENAMES = (("imgnet.", "visual."), ("audnet.", "audio."), ("img_proj.", "img_proj."), ("aud_proj.", "aud_proj."))
_UNUSED_PREFIXES = ("imgnet.fc.", "audnet.fc.")  # Identity in the official model; a plain resnet18 has them


def _official_to_ours(key: str) -> str | None:
    for official, ours in _RENAMES:
        if key.startswith(official):
            return ours + key.removeprefix(official)
    return None


def convert_official_state_dict(state_dict: Mapping, strict: bool = False, width: int | None = None,
                                dim: int | None = None) -> tuple[dict[str, Tensor], ConversionReport]:
    """Map an official EZ-VSL state dict onto :class:`EZVSL` parameter names.

    Accepts a plain state dict, ``{"model": sd}`` or ``{"state_dict": sd}`` (the authors save
    ``{"model": ...}``), with or without DataParallel ``module.`` prefixes. ``fc`` heads are
    reported as dropped; unrecognised keys as ``unexpected``; model keys not provided as
    ``missing`` (against a model of ``width`` / ``dim``, inferred from ``imgnet.conv1.weight`` /
    ``img_proj.weight`` when None). Everything is logged; ``strict`` raises ``ValueError`` on any
    unexpected or missing key, and a shape mismatch always raises.
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"expected a state dict mapping, got {type(state_dict).__name__}")
    source = strip_prefixes(unwrap_state_dict(dict(state_dict), ("state_dict", "model")), ("module.",))
    report = ConversionReport()
    ours: dict[str, Tensor] = {}
    for key, value in source.items():
        target = None if key.startswith(_UNUSED_PREFIXES) else _official_to_ours(key)
        if target is not None:
            ours[target] = torch.as_tensor(value)
            report.loaded.append(target)
        elif key.startswith(_UNUSED_PREFIXES):
            report.dropped[key] = "unused by the original forward (Identity)"
        else:
            report.unexpected.append(key)
    if width is None:
        width = int(ours["visual.conv1.weight"].shape[0]) if "visual.conv1.weight" in ours else 64
    if dim is None:
        dim = int(ours["img_proj.weight"].shape[0]) if "img_proj.weight" in ours else 512
    with torch.device("meta"):
        expected = EZVSL(EZVSLConfig(width=width, dim=dim)).state_dict()
    ours = finish_conversion(ours, expected, report, "official EZ-VSL checkpoint", strict, f"width {width}, dim {dim}")
    return ours, report


def load_official(model: EZVSL, state_dict: Mapping, strict: bool = False) -> ConversionReport:
    """Load an official EZ-VSL checkpoint into ``model`` (any wrapper :func:`convert_official_state_dict` accepts)."""
    ours, report = convert_official_state_dict(state_dict, strict=strict, width=model.config.width,
                                               dim=model.config.dim)
    load_converted(model, ours)
    return report
