"""The audio controls' data side: the swap derangement and the control data set."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from avssl.data.controls import AudioControlDataset, parse_audio_control, swap_partners


@pytest.mark.parametrize("groups", [
    [0] * 5 + [1] * 4 + [2] * 3 + [3] * 2 + [4],
    ["dog", "cat"] * 6 + ["cow"],
    list(range(9)),                      # every clip its own class
    [None] * 7,                          # no labels: any other clip
    [0, 0, 1, None, 1, 2, None, 2, 2],
])
def test_swap_is_a_derangement_that_never_keeps_the_class(groups):
    p = swap_partners(groups, seed=3)
    n = len(groups)
    assert sorted(p.tolist()) == list(range(n))          # a permutation: every recording played once
    assert all(p[i] != i for i in range(n))               # never the clip's own recording
    assert all(groups[p[i]] != groups[i] for i in range(n) if groups[i] is not None)
    assert np.array_equal(p, swap_partners(groups, seed=3))  # deterministic
    assert not np.array_equal(p, swap_partners(groups, seed=4)) or n <= 3


def test_swap_with_a_majority_class_still_deranges_and_counts_what_it_cannot_avoid():
    groups = [0] * 6 + [1] * 2
    p = swap_partners(groups)
    assert all(p[i] != i for i in range(8)) and sorted(p.tolist()) == list(range(8))
    same = sum(groups[p[i]] == groups[i] for i in range(8))
    assert same == 4  # 6 clips of class 0, only 2 recordings of another class: 4 must stay in class 0


def test_parse_audio_control():
    assert parse_audio_control("both") == ("swap", "silent")
    assert parse_audio_control("silent,swap") == ("swap", "silent")
    assert parse_audio_control(None) == parse_audio_control("off") == ()
    with pytest.raises(ValueError, match="swap, silent, both or off"):
        parse_audio_control("mute")
    with pytest.raises(ValueError, match="at least 2 clips"):
        swap_partners([0])


class _Records:
    def __init__(self, labels):
        from avssl.data.record import Record

        self.records = [Record(id=f"c{i}", labels=[lab] if lab else []) for i, lab in enumerate(labels)]

    def __len__(self):
        return len(self.records)

    def audio_of(self, i):
        return {"wave": torch.full((10,), float(i + 1)), "num_samples": 10 - i, "sample_rate": 16000 + i}

    def __getitem__(self, i):
        return {"id": f"c{i}", "image": torch.full((3, 2, 2), i, dtype=torch.uint8), "label": i % 2,
                **self.audio_of(i)}


def test_the_swap_dataset_keeps_the_frame_and_plays_the_partners_recording():
    base = _Records(["a", "a", "b", "b", "c", None])
    swap = AudioControlDataset(base, "swap")
    for i in range(len(base)):
        s, j = swap[i], int(swap.partners[i])
        assert s["id"] == f"c{i}" and torch.equal(s["image"], base[i]["image"]) and s["label"] == base[i]["label"]
        assert torch.equal(s["wave"], base.audio_of(j)["wave"]) and s["audio_id"] == f"c{j}"
        assert s["num_samples"] == 10 - j and s["sample_rate"] == 16000 + j
    assert swap.describe()["same_class_pairs"] == 0


def test_the_silent_dataset_is_silent_at_the_same_length():
    base = _Records(["a", "b", "c"])
    silent = AudioControlDataset(base, "silent")
    for i in range(3):
        s = silent[i]
        assert s["wave"].shape == base[i]["wave"].shape and not s["wave"].any()
        assert s["num_samples"] == base[i]["num_samples"] and torch.equal(s["image"], base[i]["image"])
    with pytest.raises(ValueError, match="audio control"):
        AudioControlDataset(base, "loud")
