"""Checkpoints: atomic writes, precise errors on broken files, exact resume.

A checkpoint is one ``torch.save`` dict::

    {"format": "avssl-checkpoint", "version": 1, "model": state_dict,
     "optimizer": ..., "scheduler": ..., "scaler": ..., "step": int, "epoch": int,
     "config": resolved config as a plain dict, "rng": RNG states, "extra": {...}}

It is written to a temporary file in the same folder, flushed and fsynced, then renamed
over the target, so a run killed mid-write leaves the previous checkpoint intact.
"""
from __future__ import annotations

import logging
import os
import pickle
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

FORMAT = "avssl-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used, with the file and the cause."""


@dataclass
class ConversionReport:
    """What converting a foreign (e.g. the authors') state dict did: ``loaded`` (our keys filled), ``dropped`` (official key -> reason,
    deliberately unused), ``unexpected`` (official keys with no rule), ``missing`` (our keys not
    filled), ``notes`` (warnings such as a position embedding that differs from ours)."""

    loaded: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unexpected and not self.missing

    def summary(self) -> str:
        return (f"{len(self.loaded)} loaded, {len(self.dropped)} dropped, {len(self.unexpected)} "
                f"unexpected, {len(self.missing)} missing")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def rng_state() -> dict:
    """Every RNG the training loop draws from (Python, NumPy, torch CPU and CUDA)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, **fields: Any) -> Path:
    """Save a training state (see the module docstring for the fields) atomically."""
    payload = {"format": FORMAT, "version": VERSION, **fields}
    return atomic_torch_save(payload, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load and check an avssl checkpoint; raise :class:`CheckpointError` naming the cause."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path}: empty file (an interrupted copy?)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, pickle.UnpicklingError) as e:
        raise CheckpointError(f"checkpoint {path}: unreadable ({type(e).__name__}: {e})") from e
    return check_checkpoint(ckpt, path)


def is_avssl_checkpoint(obj: Any) -> bool:
    """True for a loaded object written by :func:`save_checkpoint` (checked no further)."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def check_checkpoint(ckpt: Any, path: str | os.PathLike) -> dict:
    """``ckpt`` (already loaded from ``path``) if it is a usable avssl checkpoint, else a
    :class:`CheckpointError` naming ``path`` and the cause."""
    if not is_avssl_checkpoint(ckpt):
        raise CheckpointError(
            f"checkpoint {path}: not an avssl checkpoint (for the authors' files use `avssl convert`)"
        )
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(f"checkpoint {path}: version {ckpt['version']} is newer than this avssl ({VERSION})")
    if "model" not in ckpt:
        raise CheckpointError(f"checkpoint {path}: has no 'model' state")
    return ckpt


def strip_prefixes(state_dict: dict, prefixes: tuple[str, ...] = ("module.",)) -> dict:
    """Remove DDP/wrapper prefixes such as ``module.`` from every key that has them."""
    out = {}
    for k, v in state_dict.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def unwrap_state_dict(obj: Any, keys: tuple[str, ...] = ("model", "state_dict", "module")) -> dict:
    """The state dict inside a checkpoint of unknown wrapping (``{"model": sd}``, ``{"state_dict": sd}``, ...)."""
    while isinstance(obj, dict) and not _looks_like_state_dict(obj):
        inner = next((obj[k] for k in keys if k in obj and isinstance(obj[k], dict)), None)
        if inner is None:
            raise CheckpointError(f"no state dict found under any of {keys}; top-level keys: {sorted(obj)[:10]}")
        obj = inner
    if not isinstance(obj, dict):
        raise CheckpointError(f"expected a state dict, got {type(obj).__name__}")
    return obj


def _looks_like_state_dict(d: dict) -> bool:
    return bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())
