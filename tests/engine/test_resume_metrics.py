"""metrics.jsonl after a kill and --resume: every step once, in order."""
from __future__ import annotations

import json
import shutil

import pytest

from avssl.engine.train import fit
from train_utils import tiny_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


def _records(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


def test_resume_after_a_kill_logs_each_step_once(tiny_synth, tmp_path):
    run = tmp_path / "run"
    fit(tiny_cfg(tiny_synth, run, "train.epochs=1"))
    shutil.copy(run / "last.pt", tmp_path / "epoch1.pt")
    fit(tiny_cfg(tiny_synth, run, "train.epochs=2"), resume=True)
    # the kill: epoch 2's steps (and its epoch record) were logged, its checkpoint was not written;
    # plus a half-written line
    shutil.copy(tmp_path / "epoch1.pt", run / "last.pt")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"train/loss": 1.0, "st')
    fit(tiny_cfg(tiny_synth, run, "train.epochs=3"), resume=True)
    recs = _records(run)
    steps = [r["step"] for r in recs if "time_s" not in r]
    assert steps == sorted(set(steps)) == list(range(1, 7)), steps
    assert [r["epoch"] for r in recs if "time_s" in r] == [1, 2, 3]
    assert not list(run.glob(".*.tmp"))


def test_resume_without_a_kill_keeps_every_record(tiny_synth, tmp_path):
    run = tmp_path / "run"
    fit(tiny_cfg(tiny_synth, run, "train.epochs=1"))
    first = (run / "metrics.jsonl").read_text()
    fit(tiny_cfg(tiny_synth, run, "train.epochs=2"), resume=True)
    assert (run / "metrics.jsonl").read_text().startswith(first)
    assert [r["step"] for r in _records(run) if "time_s" not in r] == [1, 2, 3, 4]
