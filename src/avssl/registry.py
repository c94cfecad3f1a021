"""THE table of the methods avssl implements: name -> :class:`~avssl.methods.base.MethodSpec`
(config class, model class, pipeline, title, paper, demo preset), and loading from checkpoints.

An explicit table, no string imports. The engine, the demo, ``avssl eval`` and ``avssl localize``
look a method up here and nowhere else; adding a method is one folder under ``avssl/methods/``
that defines its ``SPEC`` and one line below. A training config names its method
(``method: ssltie``) and holds that method's options under the same key; a checkpoint stores
that resolved config, so :func:`load_method` can rebuild the model from the file alone.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

from torch import nn

from avssl.checkpoint import CheckpointError, load_checkpoint, strip_prefixes
from avssl.config import from_dict
from avssl.methods import equiav, ezvsl, fnac, slavc, ssltie
from avssl.methods.base import MethodSpec, Pipeline

__all__ = ["METHODS", "MethodSpec", "method_spec", "pipeline_for", "build_method", "load_method"]

METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    ssltie.SPEC,
    equiav.SPEC,
    equiav.FINETUNE_SPEC,
    ezvsl.SPEC,
    fnac.SPEC,
    slavc.SPEC,
)}


def method_spec(name: str) -> MethodSpec:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available: {sorted(METHODS)}") from None


def pipeline_for(name: str) -> Pipeline:
    """The :class:`~avssl.methods.base.Pipeline` of method ``name``."""
    return method_spec(name).pipeline


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
