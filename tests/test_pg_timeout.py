"""A rank that stalls makes the others fail with a clear error (process-group timeout), not hang."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest
import torch
import torch.multiprocessing as mp

from avssl import distributed as D

pytestmark = pytest.mark.distributed


def _worker(rank: int, init_file: str, out_file: str) -> None:
    D.init_process_group("gloo", timeout_s=3, init_method=f"file://{init_file}", rank=rank, world_size=2)
    if rank == 1:
        os.kill(os.getpid(), signal.SIGSTOP)  # stalls (a hung data loader, a stuck GPU, ...)
        time.sleep(120)
    t0 = time.monotonic()
    try:
        D.all_reduce_mean(torch.ones(3))
        result = {"error": None}
    except D.DistributedTimeoutError as e:
        result = {"error": str(e), "type": type(e).__name__}
    except Exception as e:  # noqa: BLE001 - reported to the test
        result = {"error": str(e), "type": type(e).__name__}
    result["elapsed"] = time.monotonic() - t0
    with open(out_file, "w") as f:
        json.dump(result, f)
    os._exit(0)  # the group is broken: no destroy_process_group (it would wait for rank 1)


def _two_ranks(worker, tmp_path, wait_s: float) -> dict:
    """Run ``worker(rank, init_file, out_file)`` as ranks 0 and 1 (rank 1 stalls); rank 0 must end
    within ``wait_s``; returns what it wrote to the out file."""
    ctx = mp.get_context("spawn")
    init, out = str(tmp_path / "init"), str(tmp_path / "out.json")
    procs = [ctx.Process(target=worker, args=(r, init, out)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        procs[0].join(timeout=wait_s)
        assert not procs[0].is_alive(), "rank 0 hung on the stalled rank"
    finally:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
            p.join(timeout=5)
    with open(out) as f:
        return json.load(f)


def test_a_stalled_rank_is_named_within_the_timeout(tmp_path):
    result = _two_ranks(_worker, tmp_path, 25)
    assert result.get("type") == "DistributedTimeoutError", result
    msg = result["error"]
    assert "rank 0/2" in msg and "rank(s) 1 stalled" in msg and "3 s" in msg and "\n" not in msg
    assert result["elapsed"] < 15


def test_the_timeout_comes_from_the_config_or_the_environment(monkeypatch):
    monkeypatch.delenv("AVSSL_DIST_TIMEOUT", raising=False)
    assert D.resolve_timeout_s() == 1800 and D.resolve_timeout_s(60) == 60
    monkeypatch.setenv("AVSSL_DIST_TIMEOUT", "7.5")
    assert D.resolve_timeout_s(60) == 7.5
    monkeypatch.setenv("AVSSL_DIST_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="AVSSL_DIST_TIMEOUT"):
        D.resolve_timeout_s()
    from avssl.train_config import LoopConfig
    assert LoopConfig().dist_timeout_s == 1800
    with pytest.raises(ValueError):
        LoopConfig(dist_timeout_s=0)


class _WithBuffers(torch.nn.Module):
    """A module with BatchNorm buffers: DDP's forward broadcasts them from rank 0 (a collective)."""

    def __init__(self):
        super().__init__()
        self.lin, self.bn = torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3)

    def forward(self, inputs, generator=None):
        return {"loss": self.bn(self.lin(inputs)).square().mean()}


def _forward_worker(rank: int, init_file: str, out_file: str) -> None:
    from avssl.engine.train import training_forward

    D.init_process_group("gloo", timeout_s=3, init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(0)
    net = torch.nn.parallel.DistributedDataParallel(_WithBuffers())
    if rank == 1:  # stalls after the set-up, while rank 0 waits in the forward's buffer broadcast
        os.kill(os.getpid(), signal.SIGSTOP)
        time.sleep(120)
    try:
        training_forward(net, torch.ones(4, 3), None, 1, torch.device("cpu"), torch.float32, False)
        result = {"error": None}
    except Exception as e:  # noqa: BLE001 - reported to the test
        result = {"error": str(e), "type": type(e).__name__}
    with open(out_file, "w") as f:
        json.dump(result, f)
    os._exit(0)


def test_a_rank_stalled_during_ddps_forward_is_named(tmp_path):
    """Issue 22 item 8: the forward's buffer broadcast timed out as a raw RuntimeError traceback."""
    result = _two_ranks(_forward_worker, tmp_path, 40)
    assert result.get("type") == "DistributedTimeoutError", result
    msg = result["error"]
    assert "training step" in msg and "forward" in msg and "rank(s) 1 stalled" in msg and "\n" not in msg, msg
