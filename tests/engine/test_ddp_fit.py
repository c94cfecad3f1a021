"""``torchrun --nproc_per_node 2 -m avssl train`` on CPU (gloo): the real command, real processes.

* SSL-TIE: the run trains, evaluates the whole val set (split over the ranks, gathered) and only
  rank 0 writes (one metrics.jsonl line per epoch, one checkpoint); ``--resume`` continues under
  torchrun.
* EquiAV (losses gathered across ranks): 2 processes x batch B for a few steps equal one process
  with batch 2B, step by step (the logged loss, the mean over ranks) and in the final weights.
  With ``gather_inter=with_grad`` the DDP gradient is exactly the one-process gradient; the
  faithful ``no_grad`` inter-modal gather gives the same losses but (by design, as the original)
  a different gradient, so its weights are only compared loosely.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avssl.engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.distributed


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


def _train(args: list[str], nproc: int, timeout: float = 240) -> subprocess.CompletedProcess:
    if nproc == 1:
        cmd = [sys.executable, "-m", "avssl", "-q", "train", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "avssl", "-q", "train", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())
    assert proc.returncode == 0, f"{' '.join(cmd)}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    return proc


def _lines(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _ssltie_args(synth: Path, out: Path, epochs: int) -> list[str]:
    m = synth / "manifest.jsonl"
    return ["synthetic/ssltie", f"data.train_manifest={m}", f"data.val_manifest={m}",
            f"data.annotations={synth / 'annotations' / 'vggss.json'}", "data.seconds=1", "data.num_workers=0",
            "ssltie.width=8", "ssltie.image_size=64", "ssltie.heatmap_size=4", "train.batch_size=2",
            f"train.epochs={epochs}", "train.log_every=1", "train.tensorboard=false", "train.threads=1",
            f"--out={out}"]


def test_ssltie_under_torchrun_trains_evaluates_and_resumes(tiny_synth, tmp_path):
    run = tmp_path / "ddp"
    _train(_ssltie_args(tiny_synth, run, 1), nproc=2)
    lines = _lines(run)
    epochs = [r for r in lines if "time_s" in r]
    steps = [r for r in lines if "time_s" not in r]
    assert len(epochs) == 1  # rank 0 alone writes
    assert len(steps) == 2  # 8 training clips / (2 ranks x batch 2)
    assert 0.0 <= epochs[0]["val/ciou_at_0.5"] <= 1.0 and "val/a2v_instance_R1" in epochs[0]
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["step"] == 2
    _train([*_ssltie_args(tiny_synth, run, 2), "--resume"], nproc=2)
    epochs = [r for r in _lines(run) if "time_s" in r]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert load_checkpoint(run / "last.pt")["step"] == 4
