"""Checkpoints of older avssl versions keep the behaviour they were trained and scored with (issue 22,
item 7), and every checkpoint records the audio its model heard (item 3)."""
from __future__ import annotations

import logging

import pytest

from avssl.checkpoint import load_checkpoint
from avssl.train_config import (
    CONFIG_SCHEMA,
    audio_rate_warning,
    checkpoint_config_dict,
    config_from_checkpoint,
    trained_audio,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _ckpt(config: dict, **extra) -> dict:
    return {"format": "avssl-checkpoint", "version": 1, "model": {}, "config": config, **extra}


def test_a_checkpoint_from_before_frame_resize_keeps_the_bilinear_loader(caplog):
    """b59d3b3's checkpoints hold no data.frame_resize: they were trained and scored with the
    antialiased torch bilinear resize, which is what they must still get (not today's default)."""
    old = _ckpt({"method": "equiav", "data": {"seconds": 10.0}})
    with caplog.at_level(logging.INFO):
        cfg = config_from_checkpoint(old, "old.pt")
    assert cfg.data.frame_resize == "torch_bilinear"
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "old.pt" in said and "data.frame_resize" in said and "pil_bicubic" in said
    # a checkpoint of the current schema without the field takes today's default, and one that
    # names the field keeps it
    assert config_from_checkpoint(_ckpt({"method": "ssltie"}, config_schema=CONFIG_SCHEMA)).data.frame_resize \
        == "pil_bicubic"
    named = _ckpt({"method": "ssltie", "data": {"frame_resize": "pil_bicubic"}})
    assert config_from_checkpoint(named).data.frame_resize == "pil_bicubic"
    assert old["config"] == {"method": "equiav", "data": {"seconds": 10.0}}  # not modified in place
    # a config that never saved a data section (`avssl convert` of the authors' weights) takes today's
    # defaults, whatever its schema; and every config save_checkpoint writes carries the schema
    assert config_from_checkpoint(_ckpt({"method": "ssltie", "ssltie": {}})).data.frame_resize == "pil_bicubic"


def test_save_checkpoint_writes_the_schema_with_a_config(tmp_path):
    from avssl.checkpoint import save_checkpoint

    with_config = load_checkpoint(save_checkpoint(tmp_path / "a.pt", model={}, config={"method": "ssltie"}))
    assert with_config["config_schema"] == CONFIG_SCHEMA
    assert "config_schema" not in load_checkpoint(save_checkpoint(tmp_path / "b.pt", model={}))


def test_a_newer_schema_is_refused():
    assert checkpoint_config_dict(_ckpt({"method": "ssltie"}, config_schema=CONFIG_SCHEMA)) == {"method": "ssltie"}
    with pytest.raises(ValueError, match="newer"):
        config_from_checkpoint(_ckpt({"method": "ssltie"}, config_schema=CONFIG_SCHEMA + 1), "new.pt")


def test_training_records_the_schema_and_the_audio_rates_it_heard(tiny_synth, tmp_path):
    from avssl.engine.train import fit
    from train_utils import tiny_cfg

    cfg = tiny_cfg(tiny_synth, tmp_path / "run", "train.epochs=1", "data.num_workers=0")
    fit(cfg)
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["config_schema"] == CONFIG_SCHEMA
    assert ckpt["extra"]["trained_audio"] == {"sample_rates": [16000], "seconds": cfg.data.seconds}
    assert trained_audio(ckpt) == {"sample_rates": [16000], "seconds": cfg.data.seconds}
    assert config_from_checkpoint(ckpt) == cfg


def test_the_rate_warning_names_the_clips_the_rate_and_the_option():
    model = {"sample_rates": [16000], "seconds": 3.0}
    assert audio_rate_warning(model, {16000: 5}) is None
    assert audio_rate_warning(None, {44100: 5}) is None  # unknown: nothing to compare
    text = audio_rate_warning(model, {16000: 2, 44100: 3, 22050: 1})
    assert "4 of 6" in text and "3 at 44100 Hz" in text and "1 at 22050 Hz" in text and "--sample-rate 16000" in text
    # an older checkpoint trained at a fixed data.sample_rate: that rate is what it heard
    old = _ckpt({"method": "ssltie", "data": {"sample_rate": 22050}})
    assert trained_audio(old) == {"sample_rates": [22050], "seconds": 10.0}
    assert trained_audio(_ckpt({"method": "ssltie"})) is None
