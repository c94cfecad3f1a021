"""Frames and recordings stay paired from file to loss (issue 21).

Every clip of :func:`pairing_utils.write_coded_set` carries its number in its frame (grey level)
and in its recording (sine frequency); the check wrapped round the training forward decodes both
from what the model receives and every row must agree. Covered: the loader with and without the
in-memory cache and with loader workers, random training frames, the batched on-device
transform (SSL-TIE with its augmentation off, so the grey level survives; EquiAV's clean views),
Audmix's waveform mixing, the shard stream, and a 2-process torchrun (each rank's slice of the
global batch). A control that swaps the recordings on purpose shows the check fails.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from avssl.config import load_config
from avssl.engine.train import fit
from avssl.registry import METHODS
from avssl.train_config import TrainConfig
from pairing_utils import CHECKED, install, write_coded_set

pytestmark = pytest.mark.usefixtures("one_thread")
TESTS = Path(__file__).resolve().parents[1]
N_TRAIN = 8  # codes 0..7 are the training split of the coded set


@pytest.fixture(scope="module")
def coded(tmp_path_factory) -> Path:
    return write_coded_set(tmp_path_factory.mktemp("coded")).parent


@pytest.fixture
def checked(monkeypatch):
    CHECKED.clear()
    install(monkeypatch)
    yield CHECKED
    CHECKED.clear()


def _overrides(method: str, manifest: Path, out: Path, *extra: str) -> list[str]:
    base = [f"method={method}", *METHODS[method].tiny, f"data.train_manifest={manifest}",
            f"data.val_manifest={manifest}", "data.annotations=null", "data.seconds=1", "data.num_workers=0", "train.batch_size=4",
            "train.epochs=1", "train.eval_every=0", f"train.out_dir={out}", "train.progress=false",
            "train.tensorboard=false", "optim.warmup_epochs=0"]
    if method == "ssltie":
        base.append("ssltie.invariance=false")  # MoCo-v2's colour jitter would blur the grey level
    return [*base, *extra]


def _fit(method, manifest, out, *extra):
    return fit(load_config(TrainConfig, [], _overrides(method, manifest, out, *extra)))


def _assert_paired(rows, epochs: int):
    """Every training clip (codes 0..7) seen once per epoch, each with its own recording."""
    bad = [(f, a) for f, a in rows if f != a]
    assert not bad, f"frames paired with another clip's audio (frame code, audio code): {bad}"
    assert sorted(f for f, _ in rows) == sorted(list(range(N_TRAIN)) * epochs)


@pytest.mark.parametrize("method", ["ssltie", "equiav"])
@pytest.mark.parametrize("loader", [
    pytest.param(("data.cache_in_memory=false",), id="decode"),
    pytest.param(("data.cache_in_memory=true", "data.train_frame=random"), id="cache-random-frame"),
    pytest.param(("data.num_workers=2",), id="workers"),
])
def test_training_rows_pair_each_frame_with_its_own_recording(method, loader, coded, tmp_path, checked):
    _fit(method, coded / "manifest.jsonl", tmp_path / "run", "train.epochs=2", *loader)
    _assert_paired(checked, epochs=2)


def test_audmix_mixes_without_unpairing(coded, tmp_path, checked):
    _fit("ssltie", coded / "manifest.jsonl", tmp_path / "run", "ssltie.audmix=true", "ssltie.audmix_queue=4",
         "ssltie.audmix_p0=1.0", "train.epochs=3")
    _assert_paired(checked, epochs=3)


def test_shard_stream_keeps_pairs(coded, tmp_path, checked):
    from avssl.data.prepare_shards import prepare_shards

    prepare_shards(coded / "manifest.jsonl", tmp_path / "shards", shard_size=3, workers=0)
    _fit("ssltie", coded / "manifest.jsonl", tmp_path / "run", f"data.train_shards={tmp_path / 'shards' / 'shards.json'}",
         "data.train_manifest=null", "data.shuffle_buffer=4")
    _assert_paired(checked, epochs=1)


def test_the_check_catches_a_swapped_recording(coded, tmp_path, checked, monkeypatch):
    """The check can fail: the loader gives each clip the next clip's recording."""
    from avssl.data.datasets import AVFrameAudioDataset

    load = AVFrameAudioDataset.load

    def swapped(self, index, choice=None):
        s = load(self, index, choice)
        s.update(self.audio_of((index + 1) % len(self)))
        return s

    monkeypatch.setattr(AVFrameAudioDataset, "load", swapped)
    _fit("ssltie", coded / "manifest.jsonl", tmp_path / "run")
    assert len(checked) == N_TRAIN and all(a == (f + 1) % N_TRAIN for f, a in checked)


@pytest.mark.distributed
@pytest.mark.parametrize("method", ["ssltie", "equiav"])
def test_torchrun_slices_keep_pairs(method, coded, tmp_path):
    script = tmp_path / "train_checked.py"
    script.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from pathlib import Path\n"
        "import pairing_utils\n"
        "pairing_utils.install()\n"
        "from avssl.cli import main\n"
        "code = main(['-q', 'train', *sys.argv[1:]])\n"
        f"pairing_utils.dump(Path({str(tmp_path)!r}) / f\"rank{{os.environ['RANK']}}.json\")\n"
        "sys.exit(code)\n")
    args = [x for x in _overrides(method, coded / "manifest.jsonl", tmp_path / "run", "train.batch_size=2",
                                  "train.threads=1") if not x.startswith("method=")]
    preset = METHODS[method].preset
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           preset, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    import json

    rows = [tuple(r) for rank in (0, 1) for r in json.loads((tmp_path / f"rank{rank}.json").read_text())]
    _assert_paired(rows, epochs=1)  # 2 ranks x batch 2: each clip once, on one rank
