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


def test_validation_reads_a_shard_index_as_the_folder_layout(tiny_synth, shard_index, tmp_path):
    """data.val_manifest=shards.json (random access into the tars) scores as the folder layout
    prepared from the same manifest: the same val metrics, epoch by epoch."""
    from avssl.data.prepare import prepare

    prepare(tiny_synth / "manifest.jsonl", tmp_path / "folder", workers=2)
    runs = [fit(_cfg(tiny_synth, shard_index, tmp_path / name, "train.epochs=1", "data.num_workers=0",
                     f"data.val_manifest={val}"))
            for name, val in (("s", shard_index), ("f", tmp_path / "folder" / "manifest.jsonl"))]
    vals = [{k: v for k, v in r["history"][0].items() if k.startswith("val/")} for r in runs]
    assert vals[0] and "val/adaptive_ciou_at_0.5" in vals[0] and vals[0] == vals[1]


def test_a_missing_shard_stops_training_with_one_line_naming_it(tiny_synth, shard_index, tmp_path, capsys):
    """A shard that cannot be opened (in a loader worker) is not skipped: `avssl train` exits 2
    with one line naming it (not the worker's traceback)."""
    import shutil

    from avssl.cli import main
    from train_utils import PRESET, tiny_overrides

    copy = tmp_path / "copy"
    shutil.copytree(shard_index.parent, copy)
    (copy / "shards" / "shard-000001.tar").unlink()
    rc = main(["train", str(PRESET), *tiny_overrides(tiny_synth, tmp_path / "run"),
               f"data.train_shards={copy / 'shards.json'}", "data.train_manifest=null", "data.num_workers=2",
               "data.cache_in_memory=false", "train.epochs=1"])
    err = [x for x in capsys.readouterr().err.splitlines() if "error" in x]
    assert rc == 2 and len(err) == 1, err
    assert "shard-000001.tar: cannot be read" in err[0] and "Traceback" not in err[0] and "worker" not in err[0]
