"""Checkpoints: atomic writes, precise errors on broken files, exact resume.

A checkpoint is one ``torch.save`` dict::

    {"format": "avssl-checkpoint", "version": 1, "model": state_dict,
     "optimizer": ..., "scheduler": ..., "scaler": ..., "step": int, "epoch": int,
     "config": resolved config as a plain dict, "rng": RNG states, "extra": {...}}

It is written to a temporary file in the same folder, flushed and fsynced, then renamed
over the target, so a run killed mid-write leaves the previous checkpoint intact. NumPy values
(e.g. the NumPy RNG state, metric scalars) are stored as tensors / Python numbers, so that the
file holds only tensors and plain containers.

Every checkpoint avssl reads (its own, the authors' released files, MAE / init weights) goes
through :func:`safe_load`: ``torch.load(weights_only=True)`` with a short allow-list
(:data:`SAFE_GLOBALS`), never full unpickling, so an untrusted file cannot run code.
"""
from __future__ import annotations

import argparse
import logging
import os
import pickle
import random
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avssl.atomic import atomic_path

log = logging.getLogger(__name__)

FORMAT = "avssl-checkpoint"
VERSION = 1
#: The version of the meaning of a saved run config (``config_schema``, written with every config;
#: :mod:`avssl.train_config` reads older ones: 1 = checkpoints without the key).
CONFIG_SCHEMA = 2


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


def finish_conversion(ours: dict, expected: Mapping, report: ConversionReport, name: str, strict: bool = False,
                      note: str = "") -> dict:
    """The last step of converting a foreign state dict: ``ours`` (our key -> tensor, already in
    ``report.loaded``) checked against ``expected`` (the target model's state dict, e.g. built
    on the meta device): keys we do not have move to ``report.unexpected``, a wrong shape is a
    ValueError (``note``: the options the shapes were expected for), ``report.missing`` gets the
    keys not filled; logged under ``name``; ``strict`` raises unless every key matched. Returns
    the tensors to load."""
    for key, value in ours.items():
        if key not in expected:
            report.loaded.remove(key)
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(f"official key for {key}: shape {tuple(value.shape)}, expected "
                             f"{tuple(expected[key].shape)}{f' ({note})' if note else ''}")
    ours = {k: v for k, v in ours.items() if k in expected}
    report.missing = [k for k in expected if k not in ours]
    log.info("%s: %s", name, report.summary())
    if report.unexpected or report.missing:
        log.warning("%s: %d unexpected, %d missing keys: %s", name, len(report.unexpected), len(report.missing),
                    report.summary())
        if strict:
            raise ValueError(f"strict conversion failed: unexpected {report.unexpected}, missing {report.missing}")
    return ours


def load_converted(model: torch.nn.Module, ours: Mapping) -> None:
    """Load the tensors :func:`finish_conversion` returned into ``model`` (missing keys keep their init)."""
    result = model.load_state_dict(ours, strict=False)
    if result.unexpected_keys:  # cannot happen: the converters only emit our keys
        raise RuntimeError(f"converter produced unknown keys {result.unexpected_keys}")


def _numpy_globals() -> list:
    """The NumPy reconstructors older avssl checkpoints need (a NumPy RNG state: a uint32 array;
    metric values: float scalars), under the names NumPy 1 and NumPy 2 pickle them with."""
    try:
        from numpy._core import multiarray  # NumPy >= 2
    except ImportError:  # pragma: no cover - NumPy 1
        from numpy.core import multiarray
    out: list = [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar]
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out += [(multiarray._reconstruct, f"{mod}._reconstruct"), (multiarray.scalar, f"{mod}.scalar")]
    dtypes = getattr(np, "dtypes", None)  # NumPy >= 1.25 pickles dtypes as these classes
    for name in ("UInt32DType", "Float32DType", "Float64DType"):
        if dtypes is not None and hasattr(dtypes, name):
            out.append(getattr(dtypes, name))
    return out


#: Everything beyond tensors and plain containers / numbers / strings that :func:`safe_load`
#: accepts: ``argparse.Namespace`` (the authors' training files pickle their options) and the
#: NumPy array / scalar reconstructors for uint32 / float32 / float64 (older avssl checkpoints).
SAFE_GLOBALS: list = [argparse.Namespace, *_numpy_globals()]

_REFUSED = (r"Unsupported global: (GLOBAL [^ ]+)", r"but got <(class '[^']+')>")


def safe_load(path: str | os.PathLike, map_location: str | torch.device = "cpu", what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` allowing only :data:`SAFE_GLOBALS` besides tensors and
    plain containers; never unpickles arbitrary objects (so never runs code from the file).

    Raises :class:`CheckpointError` (one line, naming ``what`` and ``path``) when the file is
    missing, empty, unreadable, or refused because it holds other Python objects, and when
    ``map_location`` (or, without one, the file's tensors) is a CUDA device on a machine without
    CUDA (saying so, not "unreadable").
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{what} {path}: empty file (an interrupted copy?)")
    if _is_cuda(map_location) and not torch.cuda.is_available():  # the device's fault, not the file's
        raise CheckpointError(_no_cuda(what, path, map_location))
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        found = next((m.group(1) for m in (re.search(r, msg) for r in _REFUSED) if m), None)
        if found is not None:  # an object beyond the allow-list: never unpickled
            raise CheckpointError(
                f"{what} {path}: refused to load: it contains Python objects other than tensors and plain "
                f"containers ({found}); avssl never unpickles arbitrary code") from None
        detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", msg)
        if detail:  # garbage, or pickle opcodes the weights-only unpickler refuses
            raise CheckpointError(
                f"{what} {path}: unreadable (not a weights-only torch file: {_one_line(detail.group(1))}); "
                "avssl never unpickles arbitrary code") from None
        raise CheckpointError(f"{what} {path}: unreadable ({type(e).__name__}: {_one_line(msg)})") from e
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError) as e:
        if isinstance(e, RuntimeError) and "torch.cuda.is_available() is False" in str(e):
            raise CheckpointError(_no_cuda(what, path, map_location)) from None  # CUDA tensors, no CUDA
        raise CheckpointError(f"{what} {path}: unreadable ({type(e).__name__}: {_one_line(str(e))})") from e


def _is_cuda(map_location: Any) -> bool:
    """Whether ``map_location`` (a device or its name; a dict or function is not checked) is CUDA."""
    try:
        return isinstance(map_location, (str, torch.device)) and torch.device(map_location).type == "cuda"
    except (RuntimeError, ValueError):
        return False  # not a device name: torch.load says what is wrong with it


def _no_cuda(what: str, path: Path, map_location: Any) -> str:
    """The message of loading onto CUDA where there is none: the same kind as train's and eval's."""
    onto = f"onto device {str(map_location)!r}" if _is_cuda(map_location) else "(it holds CUDA tensors)"
    return (f"{what} {path}: cannot be loaded {onto}: CUDA requested but not available on this machine "
            "(use --device cpu)")


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plain(obj: Any) -> Any:
    """``obj`` with NumPy arrays as tensors and NumPy scalars as Python numbers (containers are
    rebuilt only where something changed, so state dicts keep their ``_metadata``)."""
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        return torch.from_numpy(np.ascontiguousarray(obj).copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        new = {k: _plain(v) for k, v in obj.items()}
        if all(new[k] is obj[k] for k in obj):
            return obj
        out = OrderedDict(new) if isinstance(obj, OrderedDict) else dict(new)
        if hasattr(obj, "_metadata"):
            out._metadata = obj._metadata
        return out
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        new = [_plain(v) for v in obj]
        if all(a is b for a, b in zip(new, obj, strict=True)):
            return obj
        return type(obj)(new)
    return obj


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically (temp file + fsync + rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def rng_state() -> dict:
    """Every RNG the training loop draws from (Python, NumPy, torch CPU and CUDA)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]  # keys: a tensor (or a NumPy array in older checkpoints)
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((name, keys.astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, **fields: Any) -> Path:
    """Save a training state (see the module docstring for the fields) atomically."""
    if "config" in fields:
        fields.setdefault("config_schema", CONFIG_SCHEMA)
    payload = {"format": FORMAT, "version": VERSION, **_plain(fields)}
    return atomic_torch_save(payload, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load and check an avssl checkpoint; raise :class:`CheckpointError` naming the cause."""
    return check_checkpoint(safe_load(path, map_location), path)


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


#: Prefixes wrappers put before parameter names: DDP / DataParallel, EquiAV's released trainer.
WRAPPER_PREFIXES = ("module.", "__M__.")


def strip_key(key: str, prefixes: tuple[str, ...] = WRAPPER_PREFIXES) -> str:
    """``key`` without leading wrapper ``prefixes`` (any number, in any order)."""
    changed = True
    while changed:
        changed = False
        for p in prefixes:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def strip_prefixes(state_dict: Mapping, prefixes: tuple[str, ...] = WRAPPER_PREFIXES) -> dict:
    """``state_dict`` with :func:`strip_key` applied to every key."""
    return {strip_key(k, prefixes): v for k, v in state_dict.items()}


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
