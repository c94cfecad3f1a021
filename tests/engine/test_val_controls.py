"""Validation with the audio controls (train.val_audio_control) and an audio-aware best.pt."""
from __future__ import annotations

import pytest

from avssl.config import ConfigError
from avssl.engine.train import fit
from train_utils import tiny_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


def test_val_controls_are_logged_and_can_choose_the_checkpoint(tiny_synth, tmp_path):
    cfg = tiny_cfg(tiny_synth, tmp_path / "run", "train.val_audio_control=both",
                   "train.select_on=swap_drop_pointing_accuracy")
    summary = fit(cfg)
    last = summary["history"][-1]
    for c in ("swap", "silent"):
        assert 0 <= last[f"val/{c}_pointing_accuracy"] <= 1 and -1 <= last[f"val/{c}_map_correlation"] <= 1
        assert 0 <= last[f"val/{c}_peak_moved"] <= 1
        assert last[f"val/{c}_drop_pointing_accuracy"] == pytest.approx(
            last["val/pointing_accuracy"] - last[f"val/{c}_pointing_accuracy"])
        assert f"val/{c}_a2v_class_R1" in last
    best = summary["best"]
    assert best["metric"] == "swap_drop_pointing_accuracy"
    assert best["value"] == max(h["val/swap_drop_pointing_accuracy"] for h in summary["history"])
    assert (tmp_path / "run" / "best.pt").is_file()


def test_a_control_metric_needs_its_control(tiny_synth, tmp_path):
    with pytest.raises(ConfigError, match="swap_drop_pointing_accuracy"):
        fit(tiny_cfg(tiny_synth, tmp_path / "r", "train.select_on=swap_drop_pointing_accuracy"))
    with pytest.raises(ValueError, match="audio control"):
        tiny_cfg(tiny_synth, tmp_path / "r", "train.val_audio_control=loud")
