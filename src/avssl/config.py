"""Configs: frozen nested dataclasses, YAML presets that hold only overrides, CLI dotlists.

Resolution order: the dataclass defaults, then each YAML preset in turn, then
``key.sub=value`` overrides from the command line. Unknown keys and values of the wrong
type raise :class:`ConfigError` naming the key, with a suggestion for typos.

    cfg = load_config(TrainConfig, ["configs/ssltie/flickr10k.yaml"], ["optim.lr=3e-4"])
    save_config(cfg, run_dir / "config.yaml")   # saved with every run and checkpoint
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from avssl.atomic import atomic_write_text

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key that does not exist or a value of the wrong type."""


def parse_dotlist(items: Iterable[str]) -> dict:
    """``["optim.lr=1e-3", "data.clips=8"]`` -> ``{"optim": {"lr": 0.001}, "data": {"clips": 8}}``.

    Values are parsed as YAML scalars/lists (``true``, ``1e-3``, ``[1, 2]``, ``null``).
    """
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier one")
        node[parts[-1]] = value
    return out


def merge(base: Mapping, override: Mapping) -> dict:
    """Recursively merge ``override`` into a copy of ``base`` (dicts merge, the rest replaces)."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def to_dict(cfg: Any) -> Any:
    """A dataclass (nested) as plain dicts/lists, ready for YAML/JSON. A dataclass may name
    fields to leave out with a ``__config_omit__()`` method (e.g. the unused methods' sections)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        omit = set(cfg.__config_omit__()) if hasattr(cfg, "__config_omit__") else set()
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.name not in omit}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(x) for x in cfg]
    return cfg


def from_dict(cls: type[T], data: Mapping, path: str = "") -> T:
    """Build dataclass ``cls`` from ``data`` on top of its defaults, checking keys and types."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(k, list(fields), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {sorted(fields)}"
        raise ConfigError(f"unknown config key {path + k!r}{hint}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{path}{name}", fields[name], cls)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str, field: dataclasses.Field, owner: type) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        base = _default_of(field, owner)
        merged = merge(to_dict(base), value) if isinstance(value, Mapping) and base is not None else value
        return from_dict(tp, merged, key + ".")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _coerce(a, value, key, field, owner)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} matches none of {tp}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(a, v, key, field, owner) for a, v in zip(args, value, strict=True))
        item = args[0] if args else Any
        seq = [_coerce(item, v, key, field, owner) for v in value]
        return tuple(seq) if origin is tuple else seq
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
        except ValueError:
            pass
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    return value


def _default_of(field: dataclasses.Field, owner: type) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def load_yaml(path: str | os.PathLike) -> dict:
    """One preset file; an empty file is an empty override."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path}: invalid YAML ({e})") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    return data


PRESET_DIR = Path(__file__).resolve().parent / "configs"


def preset_path(name: str | os.PathLike) -> Path:
    """A preset file: an existing path as given, else a packaged preset by name
    (``synthetic/ssltie`` or ``synthetic/ssltie.yaml`` -> ``avssl/configs/synthetic/ssltie.yaml``)."""
    p = Path(name)
    if p.is_file():
        return p
    packaged = PRESET_DIR / (p if p.suffix else p.with_suffix(".yaml"))
    if packaged.is_file():
        return packaged
    known = sorted(str(q.relative_to(PRESET_DIR).with_suffix("")) for q in PRESET_DIR.glob("*/*.yaml"))
    raise ConfigError(f"config {name}: no such file, and no packaged preset of that name (packaged: {known})")


def load_preset(name: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> dict:
    """A preset's overrides, on top of its ``base:`` preset's when it names one (a preset that
    differs from another holds only its differences: ``base: synthetic/equiav``)."""
    path = preset_path(name).resolve()
    if path in _seen:
        raise ConfigError(f"config {name}: its base presets form a cycle ({' -> '.join(map(str, _seen))})")
    data = load_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"config {path}: base must name one preset, got {base!r}")
    return merge(load_preset(base, (*_seen, path)), data)


def load_config(cls: type[T], presets: Iterable[str | os.PathLike] = (), overrides: Iterable[str] = ()) -> T:
    """Defaults <- each YAML preset (after its ``base:``) <- ``key=value`` overrides; validated."""
    data: dict = {}
    for p in presets:
        data = merge(data, load_preset(p))
    data = merge(data, parse_dotlist(overrides))
    return from_dict(cls, data)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (atomically)."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
