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

from avssl.checkpoint import load_checkpoint
from avssl.registry import build_method

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


def _equiav_args(synth: Path, out: Path, batch: int, *extra: str) -> list[str]:
    m = synth / "manifest.jsonl"
    return ["synthetic/equiav", f"data.train_manifest={m}", f"data.val_manifest={m}",
            f"data.annotations={synth / 'annotations' / 'vggss.json'}", "data.seconds=1", "data.num_workers=0",
            "data.load_size=32", "equiav.embed_dim=32", "equiav.num_heads=4", "equiav.depth=1", "equiav.img_size=32",
            "equiav.audio_length=64", "equiav.num_mel_bins=32", "equiav.num_centroid=2", "equiav.aug_emb_dim=16",
            "equiav.cross_attn_heads=2", "equiav.cross_attn_head_dim=8", "equiav.proj_hidden_dim=32",
            "equiav.inter_out_dim=16", "equiav.intra_out_dim=16", "optim.lr=1e-3", "optim.warmup_epochs=0",
            f"train.batch_size={batch}", "train.epochs=2", "train.log_every=1", "train.tensorboard=false",
            "train.threads=1", *extra, f"--out={out}"]


@pytest.mark.parametrize("gather", ["with_grad", "no_grad"])
def test_equiav_two_processes_equal_one_process_on_the_concatenated_batch(tiny_synth, tmp_path, gather):
    extra = [f"equiav.gather_inter={gather}"]
    _train(_equiav_args(tiny_synth, tmp_path / "one", 4, *extra), nproc=1)
    _train(_equiav_args(tiny_synth, tmp_path / "two", 2, *extra), nproc=2)
    one, two = _lines(tmp_path / "one"), _lines(tmp_path / "two")
    steps1 = [r for r in one if "time_s" not in r]
    steps2 = [r for r in two if "time_s" not in r]
    assert [r["step"] for r in steps1] == [r["step"] for r in steps2] == [1, 2, 3, 4]
    # step 1: same weights, same global batch, same augmentation -> the same loss terms
    for key in ("train/loss", "train/loss/inter", "train/loss/intra_a", "train/loss/intra_v"):
        assert steps2[0][key] == pytest.approx(steps1[0][key], rel=1e-5, abs=1e-6), key
    ckpt = load_checkpoint(tmp_path / "one" / "last.pt")
    w1, w2 = ckpt["model"], load_checkpoint(tmp_path / "two" / "last.pt")["model"]
    torch.manual_seed(ckpt["config"]["train"]["seed"])  # the initial weights, as fit() builds them
    w0 = build_method("equiav", ckpt["config"]["equiav"]).state_dict()
    def flat(w: dict) -> torch.Tensor:
        # key biases get an exactly-zero gradient (softmax ignores a constant per query), so Adam
        # turns the float noise there into lr-sized steps of random sign: leave them out
        parts = []
        for k in sorted(w1):
            x = w[k].float().flatten()
            if k.endswith("to_k.bias"):
                continue
            if k.endswith("attn.qkv.bias"):
                x = torch.cat([x[: x.numel() // 3], x[2 * x.numel() // 3:]])
            parts.append(x)
        return torch.cat(parts)

    # the whole update compared: |w_two - w_one| relative to |w_one - w_init|
    diff = float((flat(w2) - flat(w1)).norm() / (flat(w1) - flat(w0)).norm())
    print(f"{gather}: relative weight difference {diff:.2e}")
    if gather == "with_grad":
        # exact gradients: every step and the final weights agree
        for a, b in zip(steps1, steps2, strict=True):
            assert b["train/loss"] == pytest.approx(a["train/loss"], rel=1e-4), a["step"]
        assert diff < 1e-4
    else:
        # the faithful inter-modal gather carries no gradient to other ranks' keys: same losses,
        # different (documented) updates
        assert diff > 0.05


def test_two_nodes_on_localhost_equal_one_process(tiny_synth, tmp_path):
    """``torchrun --nnodes 2 --nproc_per_node 1 --rdzv-backend c10d`` (two node processes on this
    machine, gloo): each node trains its slice of every global batch, so the run equals one process
    on the concatenated batch (EquiAV, gradient-carrying gathers) step by step and in the weights."""
    extra = ["equiav.gather_inter=with_grad"]
    _train(_equiav_args(tiny_synth, tmp_path / "one", 4, *extra), nproc=1)
    _train_two_nodes(_equiav_args(tiny_synth, tmp_path / "nodes", 2, *extra), "avssl-test")
    _assert_same_run(tmp_path / "one", tmp_path / "nodes", [1, 2, 3, 4])  # 8 clips / (2 nodes x batch 2) per epoch


def _train_two_nodes(args: list[str], rdzv_id: str) -> None:
    """``torchrun --nnodes 2 --nproc_per_node 1 --rdzv-backend c10d`` as two node processes on localhost."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id={rdzv_id}",
           "-m", "avssl", "-q", "train", *args]
    nodes = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
             for _ in range(2)]
    for p in nodes:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"{' '.join(cmd)}\n{out[-2000:]}\n{err[-4000:]}"


def _assert_same_run(one: Path, nodes: Path, steps: list[int]) -> None:
    """The two runs logged ``steps`` with the same losses, and end with the same weights."""
    steps1 = [r for r in _lines(one) if "time_s" not in r]
    steps2 = [r for r in _lines(nodes) if "time_s" not in r]
    assert [r["step"] for r in steps2] == steps
    for a, b in zip(steps1, steps2, strict=True):
        assert b["train/loss"] == pytest.approx(a["train/loss"], rel=1e-4), a["step"]
    w1, w2 = load_checkpoint(one / "last.pt")["model"], load_checkpoint(nodes / "last.pt")["model"]
    for k in w1:
        if not k.endswith(("to_k.bias", "attn.qkv.bias")):  # exactly-zero gradients, Adam noise (see above)
            torch.testing.assert_close(w2[k], w1[k], rtol=1e-3, atol=1e-5)


def test_two_nodes_on_shards_read_disjoint_data_and_equal_one_process(tiny_synth, tmp_path):
    """Shards under ``torchrun --nnodes 2`` (localhost, gloo): the run equals one process reading
    both nodes' data groups (``data.shard_groups=2``) on the concatenated batch, step by step and
    in the weights, and the clips each node's stream (rebuilt from the run's config) reads within
    an epoch never meet the other node's."""
    from avssl.config import load_config
    from avssl.data.prepare_shards import prepare_shards
    from avssl.engine.train import _shard_stream
    from avssl.registry import pipeline_for
    from avssl.train_config import TrainConfig

    prepare_shards(tiny_synth / "manifest.jsonl", tmp_path / "shards", shard_size=4, workers=0)
    index = tmp_path / "shards" / "shards.json"
    extra = ["equiav.gather_inter=with_grad", f"data.train_shards={index}", "data.train_manifest=null",
             "data.shuffle_buffer=2"]
    _train(_equiav_args(tiny_synth, tmp_path / "one", 4, *extra, "data.shard_groups=2"), nproc=1)
    _train_two_nodes(_equiav_args(tiny_synth, tmp_path / "nodes", 2, *extra), "avssl-shards")
    _assert_same_run(tmp_path / "one", tmp_path / "nodes", list(range(1, 5)))  # ceil(8 train clips / (2 x 2)) x 2 epochs
    # what each node read: its stream, rebuilt from the run's config as fit() builds it
    cfg = load_config(TrainConfig, [tmp_path / "nodes" / "config.yaml"])
    pipe = pipeline_for("equiav")
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):
            stream = _shard_stream(cfg, pipe, rank, 2)
            assert stream.random_frames  # EquiAV's random training frame
            stream.set_epoch(epoch)
            seen.append({i for b in stream for i in b["id"]})
        assert seen[0] and seen[1] and not seen[0] & seen[1]
