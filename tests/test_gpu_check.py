"""benchmarks/gpu_check.py in its smoke mode on the CPU: both methods' real training steps run in
fp32 and bf16 autocast, the losses are finite and agree, and the loader share is measured."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_smoke_runs_both_methods_in_each_precision(tmp_path, capsys):
    out = tmp_path / "rows.json"
    rc = _module().main(["--smoke", "--device", "cpu", "--steps", "1", "--warmup", "0", "--loader-clips", "2",
                         "--out", str(out)])
    rows = json.loads(out.read_text())
    assert rc == 0, capsys.readouterr().out
    assert {(r["method"], r["precision"]) for r in rows} == {(m, p) for m in ("ssltie", "equiav") for p in ("fp32", "bf16")}
    for r in rows:
        assert r["finite"] and r["ok"] and r["samples_per_s"] > 0 and r["loader_s_per_batch"] > 0
        assert 0 < r["loader_share"] < 1 and r["workers_to_keep_up"] >= 1
    fp32 = {r["method"]: r["first_loss"] for r in rows if r["precision"] == "fp32"}
    bf16 = {r["method"]: r["first_loss"] for r in rows if r["precision"] == "bf16"}
    assert all(bf16[m] != fp32[m] for m in fp32)  # bf16 autocast really ran (other arithmetic)
    assert "| ssltie | fp32 |" in capsys.readouterr().out
