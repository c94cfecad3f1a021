"""Label-space and sampling files users bring: class lists and per-clip sample weights.

:func:`read_class_list` reads the classifier's label order (a CAV-MAE labels CSV, JSON, or one
name per line); :func:`read_sample_weights` one weight per training record (AudioSet's
balanced-sampling weights). Both raise ValueError naming the file (and line) on a bad file.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["read_class_list", "read_sample_weights"]


def read_class_list(path: str | Path) -> list[str]:
    """Class names in classifier order from a CAV-MAE labels CSV (``index,mid,display_name``),
    a JSON list / object (name -> index or name -> {"index": i}), or one name per line.
    Raises ValueError naming the file on an unreadable or malformed file or duplicate names."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"class list {path}: cannot read it ({e})") from e
    try:
        if path.suffix.lower() == ".json":
            obj = json.loads(text)
            if isinstance(obj, list):
                names = [str(x) for x in obj]
            elif isinstance(obj, dict):
                def index(v) -> int:
                    return int(v["index"] if isinstance(v, dict) else v)
                names = [k for k, _ in sorted(obj.items(), key=lambda kv: index(kv[1]))]
            else:
                raise ValueError("expected a list or an object")
        elif path.suffix.lower() == ".csv":
            rows = list(csv.DictReader(text.splitlines()))
            if not rows or "mid" not in rows[0] or "index" not in rows[0]:
                raise ValueError("expected a header with columns index, mid, display_name")
            names = [r["mid"] for r in sorted(rows, key=lambda r: int(r["index"]))]
        else:
            names = [line.strip() for line in text.splitlines() if line.strip()]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"class list {path}: malformed ({type(e).__name__}: {e})") from e
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"class list {path}: empty or has duplicate names")
    return names


def read_sample_weights(path: str | Path, expected: int | None = None) -> Tensor:
    """(N,) float64 weights from a file with one number per line (blank lines ignored).

    Raises ValueError naming the file and line for a non-numeric, negative or non-finite value,
    and for a count different from ``expected``.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ValueError(f"sample weights file {path}: cannot read it ({e})") from e
    values = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            w = float(line)
        except ValueError:
            raise ValueError(f"sample weights file {path}, line {i}: {line.strip()[:40]!r} is not a number") from None
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"sample weights file {path}, line {i}: weight {w} must be finite and >= 0")
        values.append(w)
    if expected is not None and len(values) != expected:
        raise ValueError(f"sample weights file {path} has {len(values)} weights but the training set has "
                         f"{expected} clips (one weight per training record, in manifest order)")
    out = torch.tensor(values, dtype=torch.float64)
    if not bool((out > 0).any()):
        raise ValueError(f"sample weights file {path}: all weights are zero")
    return out
