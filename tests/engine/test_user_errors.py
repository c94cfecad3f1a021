"""User errors in fit(): a bad select_on, CUDA without CUDA, the wrong method's checkpoint, a full disk."""
from __future__ import annotations

import errno
import json

import pytest
import torch

from avssl import checkpoint as ckpt_mod
from avssl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from avssl.config import ConfigError
from avssl.engine import train as T
from avssl.engine.train import fit, resolve_device
from train_utils import tiny_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synth(tiny_synth):
    return tiny_synth


def test_an_unknown_select_on_is_refused_before_the_first_epoch(synth, tmp_path):
    cfg = tiny_cfg(synth, tmp_path / "run", "train.select_on=ciou_at_05")
    with pytest.raises(ConfigError) as e:
        fit(cfg)
    msg = str(e.value)
    assert "ciou_at_05" in msg and "ciou_at_0.5" in msg and "a2v_instance_R1" in msg
    assert not (tmp_path / "run" / "metrics.jsonl").exists() and not (tmp_path / "run" / "last.pt").exists()


def test_every_shipped_select_on_is_a_known_metric(synth, tmp_path):
    from avssl.config import load_config
    from avssl.train_config import TrainConfig
    for preset in ("synthetic/ssltie", "synthetic/equiav", "synthetic/equiav_ft", "equiav/audioset",
                   "equiav/finetune_vggsound"):
        T.check_select_on(load_config(TrainConfig, [preset], []))
    assert "mAP" in T.selectable_metrics("equiav_ft") and "ciou_at_0.5" in T.selectable_metrics("ssltie")


def test_cuda_requested_without_cuda_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="not a device"):
        resolve_device("gpu0")
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device("auto") == torch.device("cpu")


def test_resuming_another_methods_checkpoint_is_one_clear_error(synth, tmp_path):
    other = tmp_path / "equiav_last.pt"
    save_checkpoint(other, model={"audio_encoder.w": torch.zeros(2)}, optimizer={}, scheduler={}, scaler={},
                    epoch=1, step=2, config={"method": "equiav"}, rng={}, extra={})
    cfg = tiny_cfg(synth, tmp_path / "run")
    with pytest.raises(CheckpointError) as e:
        fit(cfg, resume=other)
    assert str(other) in str(e.value) and "'equiav'" in str(e.value) and "\n" not in str(e.value)
    # same method but another architecture: still one line, not torch's page of missing keys
    cfg8 = tiny_cfg(synth, tmp_path / "w8", "train.epochs=1")
    fit(cfg8)
    with pytest.raises(CheckpointError) as e:
        fit(tiny_cfg(synth, tmp_path / "w16", "ssltie.width=16"), resume=tmp_path / "w8" / "last.pt")
    assert "last.pt" in str(e.value) and "\n" not in str(e.value)


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(synth, tmp_path, monkeypatch):
    run = tmp_path / "run"
    fit(tiny_cfg(synth, run, "train.epochs=1"))
    before = load_checkpoint(run / "last.pt")
    assert before["epoch"] == 1
    real_save = torch.save

    def full_disk(obj, f, *a, **k):  # a few bytes reach the file, then the disk is full
        f.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_mod.torch, "save", full_disk)
    with pytest.raises(OSError) as e:
        fit(tiny_cfg(synth, run), resume=True)
    assert e.value.errno == errno.ENOSPC and str(e.value.filename).endswith(".pt")
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)
    after = load_checkpoint(run / "last.pt")
    assert after["epoch"] == 1 and after["step"] == before["step"]
    assert not list(run.glob(".*.tmp"))


def test_leftover_tmp_files_are_removed_on_the_next_run(synth, tmp_path):
    run = tmp_path / "run"
    fit(tiny_cfg(synth, run, "train.epochs=1"))
    stale = run / ".last.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    keep = run / "notes.tmp"  # not one of ours (no leading dot): left alone
    keep.write_text("mine")
    fit(tiny_cfg(synth, run), resume=True)
    assert not stale.exists() and keep.exists()


def test_eval_scores_json_is_written_atomically(tmp_path, monkeypatch):
    from avssl import atomic

    target = tmp_path / "scores.json"
    target.write_text(json.dumps({"old": 1}))

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full_disk)
    with pytest.raises(OSError) as e:
        atomic.atomic_write_text(target, json.dumps({"new": 2}))
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    assert json.loads(target.read_text()) == {"old": 1}  # never a 0-byte or half file
    assert not list(tmp_path.glob(".*.tmp"))
    target.unlink()
    with pytest.raises(OSError):
        atomic.atomic_write_text(target, "{}")
    assert not target.exists()
    monkeypatch.undo()
    atomic.atomic_write_text(target, "{}")
    assert target.read_text() == "{}"
