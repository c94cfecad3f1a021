"""The methods avssl implements, by name: config class and model class, and loading from checkpoints.

An explicit table, no string imports. A training config (``avssl.engine.train``) names its
method (``method: ssltie``) and holds that method's options under the same key; a checkpoint
stores that resolved config, so :func:`load_method` can rebuild the model from the file alone.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn

from avssl.config import from_dict
from avssl.engine.checkpoint import CheckpointError, load_checkpoint, strip_prefixes
from avssl.methods.equiav import EquiAV, EquiAVConfig
from avssl.methods.equiav_ft import EquiAVFinetune, EquiAVFinetuneConfig
from avssl.methods.ssltie import SSLTIE, SSLTIEConfig


@dataclass(frozen=True)
class MethodSpec:
    config: type
    model: type
    paper: str


METHODS: dict[str, MethodSpec] = {
    "ssltie": MethodSpec(SSLTIEConfig, SSLTIE, "Liu et al., SSL-TIE, ACM MM 2022 (arXiv 2206.12772)"),
    "equiav": MethodSpec(EquiAVConfig, EquiAV, "Kim et al., EquiAV, ICML 2024 (arXiv 2403.09502)"),
    "equiav_ft": MethodSpec(EquiAVFinetuneConfig, EquiAVFinetune,
                            "Kim et al., EquiAV, ICML 2024 (arXiv 2403.09502): fine-tuning classification"),
}


def method_spec(name: str) -> MethodSpec:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available: {sorted(METHODS)}") from None


def build_method(name: str, options: Mapping | object | None = None) -> nn.Module:
    """The model of method ``name`` from its config dataclass or a dict of overrides."""
    spec = method_spec(name)
    if options is None or isinstance(options, Mapping):
        options = from_dict(spec.config, dict(options or {}))
    if not isinstance(options, spec.config):
        raise TypeError(f"{name} expects a {spec.config.__name__}, got {type(options).__name__}")
    return spec.model(options)


_INIT_KEYS = ("init_checkpoint", "imagenet_init")


def _without_init(options: dict) -> dict:
    """``options`` with every initialisation file (also in nested sections) set to None."""
    return {k: (None if k in _INIT_KEYS else _without_init(v) if isinstance(v, dict) else v)
            for k, v in options.items()}


def load_method(path: str | os.PathLike, map_location: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model saved in an avssl checkpoint; returns ``(model in eval mode, checkpoint)``."""
    ckpt = load_checkpoint(path, map_location=map_location)
    cfg = ckpt.get("config") or {}
    name = cfg.get("method")
    if name not in METHODS:
        raise CheckpointError(f"checkpoint {path}: its config names no known method ({name!r})")
    # the checkpoint's weights replace any initialisation: never re-read (or need) the init files
    options = _without_init(dict(cfg.get(name, {})))
    model = build_method(name, options)
    missing, unexpected = model.load_state_dict(strip_prefixes(ckpt["model"]), strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit {name} (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return model.eval(), ckpt
