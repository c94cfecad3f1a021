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


def test_a_stalled_rank_is_named_within_the_timeout(tmp_path):
    ctx = mp.get_context("spawn")
    init, out = str(tmp_path / "init"), str(tmp_path / "out.json")
    procs = [ctx.Process(target=_worker, args=(r, init, out)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        procs[0].join(timeout=25)
        assert not procs[0].is_alive(), "rank 0 hung on the stalled rank"
    finally:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
            p.join(timeout=5)
    with open(out) as f:
        result = json.load(f)
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
