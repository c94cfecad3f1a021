"""benchmarks/bench_loader.py in a smoke run (tiny clips, no timing claims): every path of both
recipes reads its batches through the current package, and the figures are written."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_loader_benchmark_smoke_run_reads_every_path(tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_loader.py"), "--clips", "2", "--items", "4", "--batch", "2",
         "--workers", "1", "--seconds", "1", "--size", "64x36", "--media", str(tmp_path / "media"), "--json", str(out)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rates = json.loads(out.read_text())["items_per_s"]
    paths = ("mp4-v1", "mp4", "folder", "shards", "shard-index")
    assert set(rates) == {f"{r}/{p}" for r in ("ssltie", "equiav") for p in paths}
    assert all(v > 0 for v in rates.values())
    assert "x mp4-v1" in proc.stdout  # ratios against the reference measured in the same run
