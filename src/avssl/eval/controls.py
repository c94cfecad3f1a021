"""Audio controls: does a model's output depend on the recording it is given? (pure functions)

A localisation score is evidence of listening only when it falls once the recording is taken
away. Two controls replace each clip's recording and keep its frame:

* ``swap``: the recording of another clip, given by :func:`avssl.data.controls.swap_partners`, a deterministic
  derangement that never pairs a clip with a clip of its own class while another class exists
  (without labels: any other clip);
* ``silent``: zeros of the same length.

:func:`audio_dependence` compares the maps of the clip's own recording with a control's: the
mean per-clip Pearson correlation of the maps, the fraction of clips whose peak moves, and the
drop (own - control) of every score both summaries hold. A model whose maps are visual saliency
shows a correlation near 1, few peaks moved and drops near 0.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["map_correlations", "audio_dependence", "score_drops"]


def _flat(maps: Mapping[str, np.ndarray], ids: Sequence[str]) -> np.ndarray:
    return np.stack([np.asarray(maps[i], np.float64).reshape(-1) for i in ids])


def map_correlations(own: Mapping[str, np.ndarray], control: Mapping[str, np.ndarray],
                     ids: Sequence[str] | None = None) -> np.ndarray:
    """Per-clip Pearson correlation of the own-recording map with the control's (NaN where either map is constant)."""
    ids = list(own) if ids is None else list(ids)
    return _row_correlations(_flat(own, ids), _flat(control, ids))


def _row_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


_NOT_SCORES = ("unannotated", "chance_R1")  # counts and chance levels: no drop to report


def score_drops(own: Mapping, control: Mapping) -> dict[str, float]:
    """``own[k] - control[k]`` for every numeric score both hold (counts ``n_*`` left out); nested
    dicts (retrieval) as ``"outer inner"``."""
    drops: dict[str, float] = {}
    for k, v in own.items():
        if k.startswith("n_") or k in _NOT_SCORES:
            continue
        c = control.get(k)
        if isinstance(v, Mapping) and isinstance(c, Mapping):
            drops.update({f"{k} {kk}": vv for kk, vv in score_drops(v, c).items()})
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(c, (int, float)) \
                and not isinstance(c, bool):
            drops[k] = float(v) - float(c)
    return drops


def audio_dependence(own_maps: Mapping[str, np.ndarray], control_maps: Mapping[str, np.ndarray],
                     own_scores: Mapping | None = None, control_scores: Mapping | None = None) -> dict:
    """How much the maps (and scores) move when the recording is replaced.

    Returns ``map_correlation`` (mean per-clip Pearson correlation of the two maps over the clips
    where both vary), ``n_constant`` (clips left out because a map is constant), ``peak_moved``
    (fraction of clips whose argmax differs) and, with both score summaries, ``drop``
    (:func:`score_drops`: own - control of every score)."""
    ids = [i for i in own_maps if i in control_maps]
    if not ids:
        raise ValueError("audio_dependence: the own and control maps share no clip id")
    a, b = _flat(own_maps, ids), _flat(control_maps, ids)
    r = _row_correlations(a, b)
    out = {"n_clips": len(ids), "map_correlation": float(np.nanmean(r)) if np.isfinite(r).any() else float("nan"),
           "n_constant": int(np.isnan(r).sum()),
           "peak_moved": float(np.mean(a.argmax(axis=1) != b.argmax(axis=1)))}
    if own_scores is not None and control_scores is not None:
        out["drop"] = score_drops(own_scores, control_scores)
    return out
