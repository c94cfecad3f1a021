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
    assert straight["step"] == 4  # 8 train clips / batch 4, 2 epochs: the index's counts fix the epoch
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "time_s" not in x] == list(range(1, 5))
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


def test_shards_train_on_the_train_split_with_the_manifest_paths_classes(tiny_synth, shard_index, tmp_path):
    """The shards hold every split of the manifest they were prepared from: training keeps
    data.train_split's clips (as the manifest path does) and makes the class list the pipeline
    makes from those clips' records: first labels (SSL-TIE), every label or the class_list file's
    order (EquiAV fine-tuning, multi-label)."""
    from avssl.config import load_config
    from avssl.data.manifest import Record, read_manifest, write_manifest
    from avssl.engine.train import _shard_stream
    from avssl.registry import pipeline_for
    from avssl.train_config import TrainConfig

    records = read_manifest(tiny_synth / "manifest.jsonl")
    train = sorted(r.id for r in records if r.split == "train")
    one_pass = ("data.num_workers=0", "data.shuffle_buffer=1")  # one stream, no buffer: a pass reads each clip once
    stream = _shard_stream(_cfg(tiny_synth, shard_index, tmp_path / "x", *one_pass), pipeline_for("ssltie"), 0, 1)
    assert len(stream) == 2 and sorted(i for b in stream for i in b["id"]) == train
    assert len(stream.classes) == 2  # the train split has 2 of the 3 classes
    assert stream.classes == pipeline_for("ssltie").dataset([r for r in records if r.split == "train"],
                                                             _cfg(tiny_synth, shard_index, tmp_path / "x"), True).classes
    everything = _shard_stream(_cfg(tiny_synth, shard_index, tmp_path / "x", "data.num_workers=0",
                                    "data.train_split=null"), pipeline_for("ssltie"), 0, 1)
    assert len(everything) == 4
    with pytest.raises(ValueError, match="no clip of split 'nope'"):
        _shard_stream(_cfg(tiny_synth, shard_index, tmp_path / "x", "data.train_split=nope"), pipeline_for("ssltie"), 0, 1)

    # multi-label: a second label on every clip, some of them only ever second
    place = {r.id: [x.id for x in records if x.split == r.split].index(r.id) for r in records}
    multi = [Record(id=r.id, video=r.video, labels=[*r.labels, f"extra_{place[r.id] % 2}"], split=r.split)
             for r in records]
    write_manifest(tmp_path / "multi.jsonl", multi)
    prepare_shards(tmp_path / "multi.jsonl", tmp_path / "multi", shard_size=8, workers=2, frames=1)
    order = ["extra_1", "red_disc", "extra_0", "green_square", "blue_triangle"]
    (tmp_path / "classes.txt").write_text("\n".join(order) + "\n")
    pipe = pipeline_for("equiav_ft")
    for listed in (False, True):
        cfg = load_config(TrainConfig, ["synthetic/equiav_ft"], [
            f"data.train_shards={tmp_path / 'multi' / 'shards.json'}", "data.train_manifest=null",
            "equiav_ft.ft.num_classes=5", "data.num_workers=0", "train.batch_size=4", "data.train_split=null",
            f"equiav_ft.class_list={tmp_path / 'classes.txt' if listed else 'null'}"])
        want = pipe.dataset(multi, cfg, train=True).classes
        assert _shard_stream(cfg, pipe, 0, 1).classes == want == (order if listed else sorted(order))
    (tmp_path / "weights.csv").write_text("\n".join(["1.0"] * 16) + "\n")
    with pytest.raises(ValueError, match="per-clip weights"):  # class-balanced draws need the manifest's order
        _shard_stream(load_config(TrainConfig, ["synthetic/equiav_ft"], [
            f"data.train_shards={tmp_path / 'multi' / 'shards.json'}", "data.train_manifest=null",
            "equiav_ft.ft.num_classes=5", "data.train_split=null", "equiav_ft.class_list=null",
            f"equiav_ft.sample_weights={tmp_path / 'weights.csv'}"]), pipe, 0, 1)
