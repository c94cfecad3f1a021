"""Audio controls: an evaluation data set whose recordings are replaced (scored by :mod:`avssl.eval.controls`).

    control = AudioControlDataset(dataset, "swap")     # clip i's frame with clip p[i]'s recording
    control = AudioControlDataset(dataset, "silent")   # clip i's frame with zeros of its length

Every other key of a sample (the frame, the id, the label the frame's clip carries) stays the
clip's own, so the control is scored exactly as the clip: only what the model hears changes.
The partner of each clip is :func:`swap_partners` of the records' first
labels (an unlabelled record is a class of its own). Works on any data set that has ``records``
and ``audio_of(index)`` (:class:`avssl.data.datasets.AVFrameAudioDataset`: manifests, raw
videos and ``shards.json`` records alike).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["AUDIO_CONTROLS", "parse_audio_control", "swap_partners", "AudioControlDataset"]

#: The controls, in the order they are run and reported.
AUDIO_CONTROLS = ("swap", "silent")


def parse_audio_control(text: str | None) -> tuple[str, ...]:
    """``"swap"``, ``"silent"``, ``"both"`` (or a comma list; ``None``/``""``/``"off"``: none) -> controls."""
    if text is None or text in ("", "off", "none"):
        return ()
    names = AUDIO_CONTROLS if text == "both" else tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [n for n in names if n not in AUDIO_CONTROLS]
    if bad:
        raise ValueError(f"audio control must be swap, silent, both or off, got {text!r}")
    return tuple(n for n in AUDIO_CONTROLS if n in names)


def swap_partners(groups: Sequence[object | None], seed: int = 0) -> np.ndarray:
    """For each clip ``i`` the index of the clip whose recording it gets in the swap control.

    ``groups[i]`` is clip ``i``'s class (any hashable; ``None``: unlabelled, a class of its own).
    The result is a derangement (``p[i] != i``) in which ``groups[p[i]] != groups[i]`` for every
    clip as long as no class holds more than half the clips; otherwise the clips of the largest
    class that cannot all be given another class get another clip of their own class (never
    themselves). Deterministic in (``groups``, ``seed``).

    How: the clips are ordered by class (classes and clips within a class in a seeded random
    order) and each gets the recording of the clip ``m`` places further round that cycle, ``m``
    the size of the largest class; two clips ``m`` apart in the cycle share a class only when a
    class holds more than ``N - m`` clips, i.e. when ``m > N / 2``.
    """
    n = len(groups)
    if n < 2:
        raise ValueError(f"the swap control needs at least 2 clips, got {n}")
    keys = [("clip", i) if g is None else ("class", g) for i, g in enumerate(groups)]
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5A11])
    by_class: dict[object, list[int]] = {}
    for i, k in enumerate(keys):
        by_class.setdefault(k, []).append(i)
    classes = sorted(by_class, key=repr)
    order: list[int] = []
    for c in (classes[j] for j in rng.permutation(len(classes))):
        members = by_class[c]
        order.extend(members[j] for j in rng.permutation(len(members)))
    m = max(len(v) for v in by_class.values())
    shift = m if m < n else 1  # one class only: any other clip of it
    partners = np.empty(n, dtype=np.int64)
    for pos, i in enumerate(order):
        partners[i] = order[(pos + shift) % n]
    return partners


class AudioControlDataset(Dataset):
    """``dataset`` with each clip's recording replaced by the control ``mode`` ("swap" or "silent").

    Samples gain ``audio_id``: the id of the clip whose recording was played (the clip's own id
    for "silent"). ``partners`` (swap) is the permutation used; ``same_class`` counts the clips
    whose partner shares their class (0 unless a class holds more than half the clips).
    """

    def __init__(self, dataset, mode: str, seed: int = 0) -> None:
        if mode not in AUDIO_CONTROLS:
            raise ValueError(f"audio control must be one of {AUDIO_CONTROLS}, got {mode!r}")
        self.dataset, self.mode = dataset, mode
        self.records = dataset.records
        self.partners = None
        self.same_class = 0
        if mode == "swap":
            groups = [r.labels[0] if r.labels else None for r in self.records]
            self.partners = swap_partners(groups, seed)
            self.same_class = int(sum(g is not None and groups[p] == g
                                      for g, p in zip(groups, self.partners.tolist(), strict=True)))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = dict(self.dataset[index])
        if self.mode == "silent":
            sample["wave"] = torch.zeros_like(sample["wave"])
            sample["audio_id"] = sample["id"]
            return sample
        j = int(self.partners[index])
        sample.update(self.dataset.audio_of(j))
        sample["audio_id"] = self.records[j].id
        return sample

    def describe(self) -> dict:
        """What the control played, for ``scores.json``."""
        if self.mode == "silent":
            return {"control": "silent", "what": "each clip's frame with zeros of its recording's length"}
        return {"control": "swap", "what": "each clip's frame with the recording of another clip, of another "
                "class where one exists (a deterministic derangement)", "same_class_pairs": self.same_class}
