"""Adding a method is one folder plus one registry line: ``tests/toy_method/`` is such a folder.

In a fresh interpreter the test adds the toy's row to :data:`avssl.registry.METHODS` (what the
line in ``registry.py`` would do) and then, with no other change to avssl: the run config gains
its section, the unchanged contract test passes on it, and the engine trains, validates,
checkpoints and reloads it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REGISTER = "import avssl.registry as registry, toy_method\nregistry.METHODS['toy'] = toy_method.SPEC\n"


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.usefixtures("one_thread")
def test_the_contract_test_runs_on_a_registered_third_method(tmp_path):
    code = REGISTER + (
        "import sys, pytest\n"
        f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '--basetemp', {str(tmp_path / 'bt')!r},"
        f" {str(TESTS / 'methods' / 'test_contract.py')!r}, '-k', 'toy']))\n")
    proc = _python(code, TESTS.parent)
    assert "1 passed" in proc.stdout, proc.stdout


def test_the_engine_trains_a_registered_third_method(tiny_synth, tmp_path):
    m, run = tiny_synth / "manifest.jsonl", tmp_path / "run"
    code = REGISTER + f"""
import json
import dataclasses
from avssl.config import load_config
from avssl.engine.train import fit
from avssl.registry import load_method
from avssl.train_config import TrainConfig

assert "toy" in {{f.name for f in dataclasses.fields(TrainConfig)}}
cfg = load_config(TrainConfig, [toy_method.SPEC.preset], [
    "data.train_manifest={m}", "data.val_manifest={m}", "data.annotations={tiny_synth / 'annotations' / 'vggss.json'}",
    "data.num_workers=0", "train.out_dir={run}", "train.progress=false", "train.tensorboard=false", "train.threads=1"])
out = fit(cfg)
model, ckpt = load_method("{run / 'best.pt'}")
print(json.dumps({{"step": out["step"], "loss": out["final_loss"], "model": type(model).__name__,
                  "sections": sorted(ckpt["config"])}}))
"""
    result = json.loads(_python(code, tmp_path).stdout.strip().splitlines()[-1])
    assert result["model"] == "ToyAV" and result["step"] == 2  # 8 training clips, batch 8, 2 epochs
    assert result["sections"] == ["data", "method", "optim", "toy", "train"]
    epochs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if "time_s" in x]
    assert len(epochs) == 2 and all(0 <= e["val/pointing_accuracy"] <= 1 and "val/a2v_instance_R1" in e
                                    for e in epochs)
    assert (run / "config.yaml").read_text().startswith("method: toy")
