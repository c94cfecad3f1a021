"""Retrieval metrics (avssl.eval.retrieval) against golden G1 and hand-made cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from avssl.eval.retrieval import class_recall_at_k, cosine_similarity, recall_at_k

KEYS = ("R1", "R5", "R10", "MR")


def _expect(g, prefix):
    return {k: float(g[f"{prefix}_{k}"]) for k in KEYS}


def test_golden_instance_recall(golden):
    """equiav_retrieval.npz: a2v_*, v2a_*, a2v_fp16_*, tie_* (exact), a2v_sim, a2v_fp16_sim."""
    g = golden("equiav_retrieval.npz")
    assert recall_at_k(g["a2v_sim"]) == _expect(g, "a2v")
    assert recall_at_k(g["a2v_sim"].T) == _expect(g, "v2a")
    assert recall_at_k(g["a2v_fp16_sim"]) == _expect(g, "a2v_fp16")
    assert recall_at_k(torch.from_numpy(g["a2v_fp16_sim"]).half()) == _expect(g, "a2v_fp16")
    assert recall_at_k(g["tie_sim"]) == _expect(g, "tie")
    # our own similarity matrices give the same metrics
    assert recall_at_k(cosine_similarity(g["emb_a"], g["emb_v"])) == _expect(g, "a2v")
    assert recall_at_k(cosine_similarity(g["emb_v"], g["emb_a"])) == _expect(g, "v2a")
    np.testing.assert_allclose(cosine_similarity(g["emb_a"], g["emb_v"]).numpy(), g["a2v_sim"], atol=1e-6)
    # the released fp16 arithmetic, bit-exact, and its ties (205 entries for 200 queries)
    s16 = cosine_similarity(torch.from_numpy(g["emb_a"]), g["emb_v"], official_fp16=True)
    assert s16.dtype == torch.float16
    np.testing.assert_array_equal(s16.double().numpy(), g["a2v_fp16_sim"])
    assert recall_at_k(s16) == _expect(g, "a2v_fp16")


def test_tie_entries_by_hand():
    # row 0: positive 0.5 tied with one other, beaten by one -> entries at ranks 1 and 2
    sim = torch.tensor([[0.5, 0.9, 0.5], [0.0, 1.0, 0.2], [0.3, 0.1, 0.2]])
    r = recall_at_k(sim, k=(1, 2, 3))
    # entries: row0 {1, 2}, row1 {0}, row2 {1}; 4 entries
    assert r == {"R1": 0.25, "R2": 0.75, "R3": 1.0, "MR": 2.0}


def test_positives_argument():
    sim = torch.tensor([[0.1, 0.9, 0.2], [0.8, 0.1, 0.3]])
    r = recall_at_k(sim, k=(1,), positives=torch.tensor([1, 2]))
    assert r == {"R1": 0.5, "MR": 1.5}
    assert recall_at_k(sim, k=(1,)) == {"R1": 0.0, "MR": 3.0}  # diagonal of a 2x3 matrix
    with pytest.raises(ValueError):
        recall_at_k(sim.t())  # 3 queries, 2 keys: no diagonal positive for query 2


def test_class_recall():
    sim = torch.tensor([
        [1.0, 0.9, 0.1, 0.2],
        [0.9, 1.0, 0.3, 0.8],
        [0.1, 0.3, 1.0, 0.0],
        [0.2, 0.8, 0.0, 1.0],
    ])
    labels = torch.tensor([0, 0, 1, 2])
    r = class_recall_at_k(sim, labels, labels, k=(1, 2))
    assert r == {"R1": 1.0, "R2": 1.0}  # every query retrieves itself first
    r = class_recall_at_k(sim, labels, labels, k=(1, 3), exclude_self=True)
    # q0 -> 1 (hit); q1 -> 0 (hit); q2 -> 1,0,3 (no other class-1 item); q3 -> 1,0,2 (none)
    assert r == {"R1": 0.5, "R3": 0.5}
