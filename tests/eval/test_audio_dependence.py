"""Audio dependence of maps and scores (avssl.eval.controls)."""
from __future__ import annotations

import numpy as np
import pytest

from avssl.eval.controls import audio_dependence, map_correlations, score_drops


def test_saliency_maps_are_fully_correlated_and_keep_their_peaks():
    rng = np.random.default_rng(0)
    own = {f"c{i}": rng.random((4, 4)) for i in range(5)}
    scaled = {k: 0.5 * v + 0.1 for k, v in own.items()}  # the audio only sets a level: same shape
    dep = audio_dependence(own, scaled)
    assert dep["map_correlation"] == pytest.approx(1.0) and dep["peak_moved"] == 0.0 and dep["n_clips"] == 5


def test_maps_that_follow_the_sound_move():
    own = {"a": np.eye(3), "b": np.eye(3)[::-1].copy()}
    other = {k: 1.0 - v for k, v in own.items()}  # the sounding place becomes the coldest
    r = map_correlations(own, other)
    assert np.allclose(r, -1.0)
    dep = audio_dependence(own, other, {"pointing_accuracy": 0.9, "n_scored": 2, "retrieval": {"a2v": {"R1": 0.5}}},
                           {"pointing_accuracy": 0.2, "n_scored": 2, "retrieval": {"a2v": {"R1": 0.1}}})
    assert dep["peak_moved"] == 1.0
    assert dep["drop"] == pytest.approx({"pointing_accuracy": 0.7, "retrieval a2v R1": 0.4})  # counts left out


def test_a_constant_map_is_left_out_of_the_correlation_and_counted():
    own = {"a": np.ones((2, 2)), "b": np.arange(4.0).reshape(2, 2)}
    dep = audio_dependence(own, {"a": np.ones((2, 2)), "b": np.arange(4.0).reshape(2, 2)})
    assert dep["n_constant"] == 1 and dep["map_correlation"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="share no clip"):
        audio_dependence(own, {"z": np.ones((2, 2))})
    assert score_drops({"x": True, "y": 1}, {"x": False, "y": 3}) == {"y": -2.0}
