"""``fit`` reading ``data.train_shards``: it trains, and a resume reproduces the run bit for bit."""
from __future__ import annotations

import json

import pytest
import torch

from avssl.checkpoint import load_checkpoint
from avssl.data.prepare_shards import prepare_shards
from avssl.engine.train import fit
from train_utils import tiny_cfg


@pytest.fixture(scope="module")
def shard_index(tiny_synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("train_shards")
    prepare_shards(tiny_synth / "manifest.jsonl", out, shard_size=4, workers=2)
    return out / "shards.json"


def _cfg(synth, index, out, *extra):
    return tiny_cfg(synth, out, f"data.train_shards={index}", "data.train_manifest=null", "data.num_workers=2",
                    "data.cache_in_memory=false", "data.shuffle_buffer=3", "data.train_frame=random", *extra)


def test_fit_on_shards_resumes_exactly(tiny_synth, shard_index, tmp_path):
    straight = fit(_cfg(tiny_synth, shard_index, tmp_path / "a"))
    assert straight["step"] == 8  # 16 clips / batch 4, 2 epochs: the index's counts fix the epoch
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "time_s" not in x] == list(range(1, 9))
    fit(_cfg(tiny_synth, shard_index, tmp_path / "b", "train.epochs=1"))
    resumed = fit(_cfg(tiny_synth, shard_index, tmp_path / "b"), resume=True)
    a = load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed["final_loss"] == straight["final_loss"]
    # another seed reads other batches (the stream is not fixed by accident)
    other = fit(_cfg(tiny_synth, shard_index, tmp_path / "c", "train.epochs=1", "train.seed=1"))
    assert other["final_loss"] != straight["history"][0]["train/loss"]


def test_shards_refuse_what_needs_random_access(tiny_synth, shard_index, tmp_path):
    with pytest.raises(ValueError, match="ssltie.audmix mixes in each clip's nearest neighbours"):
        _cfg(tiny_synth, shard_index, tmp_path / "d", "ssltie.audmix=true")
