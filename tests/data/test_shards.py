"""Shards: ``avssl prepare --format shards`` (whole, in slices + merge, resumed) and ShardStream.

Media: the tiny synthetic set (16 clips of 1 s, 64 px mp4 with AAC); the folder layout prepared
from the same manifest is the reference a shard sample must equal.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avssl.data.datasets import AVFrameAudioDataset, collate
from avssl.data.manifest import read_manifest
from avssl.data.prepare import prepare
from avssl.data.prepare_shards import merge, prepare_shards
from avssl.data.shard_index import ShardIndex, expand_shards, read_index
from avssl.data.shards import ShardStream


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avssl", "prepare", *args], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))


@pytest.fixture(scope="module")
def shards(tiny_synth, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    prepare_shards(tiny_synth / "manifest.jsonl", out, shard_size=3, workers=2)
    return out


def _maker(**kw) -> AVFrameAudioDataset:
    return AVFrameAudioDataset([], image_size=32, seconds=1.0, **kw)


def _stream(index, maker=None, batch=1, **kw) -> ShardStream:
    maker = maker or _maker(classes=index.classes)
    return ShardStream(index, maker, collate, batch, **kw)


def _ids(stream: ShardStream, epoch: int = 0) -> list[list[str]]:
    stream.set_epoch(epoch)
    return [b["id"] for b in stream]


def test_a_shard_sample_equals_the_folder_layouts(tiny_synth, shards, tmp_path):
    """The same clip read from a shard and from frames/ + audio/: the same image, wave and label."""
    prepare(tiny_synth / "manifest.jsonl", tmp_path / "folder", workers=2)
    records = read_manifest(tmp_path / "folder" / "manifest.jsonl")
    index = read_index(shards / "shards.json")
    assert index.total == len(records) == 16 and len(index.urls) == 6  # ceil(16 / 3)
    assert index.clips == [3, 3, 3, 3, 2, 2]
    assert [sum(c.values()) for c in index.splits] == index.clips  # each shard's clips by split
    assert [sum(index.clips_of(x)) for x in ("train", "val", "test", None)] == [8, 4, 4, 16]
    assert ShardIndex(["a.tar"], [5]).clips_of("train") == [5]  # an index without split counts keeps all
    folder = AVFrameAudioDataset(records, image_size=32, seconds=1.0, classes=index.classes)
    by_id = {r.id: i for i, r in enumerate(records)}
    stream = _stream(index, shuffle_buffer=1)  # one stream, one pass: every clip once, in shard order
    seen = []
    for batch in stream:
        ref = folder[by_id[batch["id"][0]]]
        assert torch.equal(batch["image"][0], ref["image"])
        assert torch.equal(batch["wave"][0], ref["wave"])
        assert int(batch["label"][0]) == ref["label"] and batch["sample_rate"] == ref["sample_rate"]
        seen.append(batch["id"][0])
    assert sorted(seen) == sorted(by_id)
    # FLAC holds the same 16-bit samples in less space
    flac = prepare_shards(tiny_synth / "manifest.jsonl", tmp_path / "flac", shard_size=8, workers=0,
                          audio_format="flac", limit=8).manifest
    for batch in _stream(read_index(flac), shuffle_buffer=1):
        assert torch.equal(batch["wave"][0], folder[by_id[batch["id"][0]]]["wave"])
    sizes = [sum(p.stat().st_size for p in (d / "shards").glob("*.tar")) for d in (tmp_path / "flac", shards)]
    assert sizes[0] / 8 < sizes[1] / 16  # per clip
    # the record travels in the JSON: labels, split, the times the frames were taken at
    side = json.loads((shards / "shards" / "shard-000000.json").read_text())
    assert side["clips"] == 3 and side["failures"] == [] and len(side["ids"]) == 3


def test_slices_then_merge_equal_one_run_byte_for_byte(tiny_synth, shards, tmp_path):
    out = tmp_path / "sliced"
    m = str(tiny_synth / "manifest.jsonl")
    assert _cli(m, str(out), "--format", "shards", "--shard-size", "3", "--shard-of", "1/2",
                "--workers", "0").returncode == 0
    assert sorted(p.name for p in (out / "shards").glob("*.tar")) == ["shard-000001.tar", "shard-000003.tar",
                                                                      "shard-000005.tar"]
    early = _cli("--merge", str(out))  # slice 0 has not run: refused, naming what is missing
    assert early.returncode == 2 and "3 of 6 shards are not finished (shard-000000.tar" in early.stderr
    assert "Traceback" not in early.stderr and not (out / "shards.json").exists()
    assert _cli(m, str(out), "--format", "shards", "--shard-size", "3", "--shard-of", "0/2",
                "--workers", "0").returncode == 0
    assert _cli("--merge", str(out)).returncode == 0
    for g in range(6):
        name = f"shard-{g:06d}.tar"
        assert (out / "shards" / name).read_bytes() == (shards / "shards" / name).read_bytes(), name
    assert json.loads((out / "shards.json").read_text()) == json.loads((shards / "shards.json").read_text())
    other = _cli(m, str(out), "--format", "shards", "--shard-size", "4", "--shard-of", "0/2")
    assert other.returncode == 2 and "shard_size=3 (now 4)" in other.stderr  # a slice with other options


def test_a_killed_slice_resumes_its_unfinished_shard(tiny_synth, shards, tmp_path):
    out = tmp_path / "resumed"
    prepare_shards(tiny_synth / "manifest.jsonl", out, shard_size=3, workers=0)
    keep = (out / "shards" / "shard-000000.tar").stat().st_mtime_ns
    # a kill while shard 2 was written: no sidecar, a half tar under a temporary name
    (out / "shards" / "shard-000002.json").unlink()
    (out / "shards" / "shard-000002.tar").unlink()
    (out / "shards" / ".shard-000002.tar.abc.tmp").write_bytes(b"half")
    report = prepare_shards(tiny_synth / "manifest.jsonl", out, shard_size=3, workers=0)
    assert report.done == 3 and report.skipped == 13  # only shard 2's clips were decoded again
    assert (out / "shards" / "shard-000000.tar").stat().st_mtime_ns == keep
    assert not list((out / "shards").glob(".*.tmp"))
    assert (out / "shards" / "shard-000002.tar").read_bytes() == (shards / "shards" / "shard-000002.tar").read_bytes()


def test_failed_clips_are_listed_never_replaced(tiny_synth, tmp_path):
    records = [json.loads(x) for x in (tiny_synth / "manifest.jsonl").read_text().splitlines()][:4]
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    records[1]["video"] = str(bad)
    for r in records:
        if not os.path.isabs(r["video"]):
            r["video"] = str(tiny_synth / r["video"])
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    prepare_shards(tmp_path / "m.jsonl", tmp_path / "out", shard_size=2, workers=0)
    index = read_index(tmp_path / "out" / "shards.json")
    assert index.total == 3
    rows = (tmp_path / "out" / "failures.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith(f"{records[1]['id']},{bad}")


def test_streams_are_disjoint_exact_in_length_and_reproducible(shards):
    index = read_index(shards / "shards.json")
    # 2 ranks x 1 worker: each epoch, rank 0 and rank 1 read different shards
    ranks = [_stream(index, batch=2, rank=r, world=2, shuffle_buffer=4) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 4  # ceil(16 / (2 x 2)): the ranks stay in step
    for epoch in (0, 1):
        seen = [sum(_ids(s, epoch), []) for s in ranks]
        assert len(seen[0]) == len(seen[1]) == 8
        shard_of = {cid: g for g in range(6) for cid in json.loads(
            (shards / "shards" / f"shard-{g:06d}.json").read_text())["ids"]}
        assert not {shard_of[c] for c in seen[0]} & {shard_of[c] for c in seen[1]}
    again = _stream(index, batch=2, rank=0, world=2, shuffle_buffer=4)
    assert _ids(again, 1) == _ids(ranks[0], 1)  # a function of (seed, epoch, ...) alone: resume reads the same
    assert _ids(ranks[0], 0) != _ids(ranks[0], 1)  # and each epoch another order
    # one process with 2 data groups reads, per step, rank 0's batch then rank 1's
    one = _stream(index, batch=4, groups=2, shuffle_buffer=4)
    assert _ids(one, 1) == [a + b for a, b in zip(_ids(ranks[0], 1), _ids(ranks[1], 1), strict=True)]
    resampled = _stream(index, batch=2, resampled=True, shuffle_buffer=2)
    assert len(sum(_ids(resampled), [])) == 16


def test_loader_workers_split_a_stream(shards):
    index = read_index(shards / "shards.json")
    stream = _stream(index, batch=2, workers=2, shuffle_buffer=2)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    got = [b["id"] for b in loader]
    assert len(got) == 8 and all(len(b) == 2 for b in got)
    # worker k made batches k, k + 2, ...: reading its stream alone in this process gives them
    with pytest.raises(RuntimeError, match="built for 2 loader workers"):
        next(iter(stream))


def test_bad_stream_settings_are_refused(shards):
    index = read_index(shards / "shards.json")
    with pytest.raises(ValueError, match="multiple of the 2 processes"):
        _stream(index, batch=2, world=2, groups=3)
    with pytest.raises(ValueError, match="cannot give each of 2 data groups x 4 loader workers"):
        _stream(index, batch=2, groups=2, workers=4)
    with pytest.raises(ValueError, match="no shards.json next to"):
        expand_shards(str(shards.parent / "nowhere" / "x" / "shard-{000000..000001}.tar"))
    assert expand_shards(str(shards / "shards" / "shard-{000000..000002}.tar")).clips == [3, 3, 3]
    with pytest.raises(ValueError, match="not an avssl shard index"):
        (shards / "x.json").write_text("{}")
        read_index(shards / "x.json")
    assert merge(shards).name == "shards.json"  # merging a finished folder again is harmless


def test_a_stream_where_no_clip_decodes_raises_naming_it(tmp_path):
    """Broken samples are skipped one by one (logged); a stream with no good clip at all stops."""
    from webdataset import TarWriter

    from avssl.data.decode import MediaError

    tar = tmp_path / "shard-000000.tar"
    with open(tar, "wb") as f:
        writer = TarWriter(f, encoder=False)
        for k in range(2):  # frames and a record, but no audio
            writer.write({"__key__": f"{k:09d}", "json": b'{"id": "c"}', "00.jpg": b"not a jpeg"})
        writer.close()
    with pytest.raises(MediaError, match="no clip of this stream decodes.*no audio"):
        next(iter(_stream(ShardIndex([str(tar)], [2]), shuffle_buffer=1)))


@pytest.fixture(scope="module")
def folder(tiny_synth, tmp_path_factory) -> Path:
    """The folder layout prepared from the manifest the ``shards`` fixture was prepared from."""
    out = tmp_path_factory.mktemp("folder")
    prepare(tiny_synth / "manifest.jsonl", out, workers=2)
    return out


def test_a_shard_index_reads_as_a_manifest_with_random_access(shards, folder):
    """read_manifest(shards.json): the folder manifest's records (order, ids, labels, splits, frame
    counts), and the data set built on them gives the folder's samples bit for bit."""
    from avssl.data.shard_access import SHARD_MEMBERS

    ref = read_manifest(folder / "manifest.jsonl")
    got = read_manifest(shards / "shards.json")
    assert [(r.id, r.labels, r.split, len(r.frames)) for r in got] == \
        [(r.id, r.labels, r.split, len(r.frames)) for r in ref]
    assert all(SHARD_MEMBERS in r.extra and r.audio.endswith(".wav") and ".tar#" in r.frames[0] for r in got)
    assert [r.id for r in read_manifest(shards / "shards.json", split="test")] == \
        [r.id for r in ref if r.split == "test"]
    for kw in ({}, {"random_frames": 10, "sample_rate": 8000}):  # a fixed frame; any drawn frame, resampled
        a = AVFrameAudioDataset(ref, image_size=32, seconds=1.0, **kw)
        b = AVFrameAudioDataset(got, image_size=32, seconds=1.0, **kw)
        for key in ([0, 7, 15] if not kw else [(0, 11), (7, 5), (15, 3)]):
            sa, sb = a[key], b[key]
            assert sa["id"] == sb["id"] and sa["label"] == sb["label"]
            assert torch.equal(sa["image"], sb["image"]) and torch.equal(sa["wave"], sb["wave"])
    cached = AVFrameAudioDataset(got, image_size=32, seconds=1.0, random_frames=10, cache_in_memory=True, workers=2)
    assert torch.equal(cached[(3, 8)]["image"], AVFrameAudioDataset(ref, image_size=32, seconds=1.0,
                                                                     random_frames=10)[(3, 8)]["image"])


def test_damaged_shards_are_named_as_manifests_and_as_samples(shards, tmp_path):
    """A missing or cut shard: one ManifestError / MediaError naming the tar; URLs are not random access;
    a shard index is not input to prepare."""
    import shutil

    from avssl.data.decode import MediaError
    from avssl.data.manifest import ManifestError
    from avssl.data.prepare import PrepareError

    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    records = read_manifest(copy / "shards.json")
    tar = copy / "shards" / "shard-000001.tar"
    data = tar.read_bytes()
    tar.write_bytes(data[: len(data) // 2])  # cut after the index was read: the sample names the member
    victim = next(r for r in records if str(tar) in r.audio)
    ds = AVFrameAudioDataset([victim], image_size=32, seconds=1.0)
    with pytest.raises(MediaError, match="shard-000001.tar#"):
        for _ in range(2):  # frames lie before the audio: one of the two reads fails
            ds[0]
            tar.write_bytes(data[:1024])
    with pytest.raises(ManifestError, match="shard-000001.tar"):
        read_manifest(copy / "shards.json")
    tar.unlink()
    with pytest.raises(ManifestError, match="shard-000001.tar.*unreadable"):
        read_manifest(copy / "shards.json")
    index = json.loads((copy / "shards.json").read_text())
    index["shards"][0]["file"] = "http://example.invalid/shard-000000.tar"
    (copy / "remote.json").write_text(json.dumps(index))
    with pytest.raises(ManifestError, match="is a URL"):
        read_manifest(copy / "remote.json")
    with pytest.raises(ManifestError, match="a URL, but manifests and shard indexes are read from local files"):
        read_manifest("http://example.invalid/shards.json")
    with pytest.raises(PrepareError, match="is a shard index"):
        prepare(shards / "shards.json", tmp_path / "again")


@pytest.mark.skipif(__import__("shutil").which("curl") is None,
                    reason="webdataset opens http(s) shards with the curl program, which this machine lacks")
def test_shards_stream_over_http_as_from_disk(shards):
    """data.train_shards as an http URL (the index, or a brace pattern with the index beside): the
    batches equal the local stream's."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(shards)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        local = read_index(shards / "shards.json")
        for spec in (f"{base}/shards.json", f"{base}/shards/shard-{{000000..000005}}.tar"):
            index = expand_shards(spec)
            assert index.urls[0].startswith(base) and index.clips == local.clips
            want, got = (list(_stream(i, batch=2, seed=3, groups=2, shuffle_buffer=4)) for i in (local, index))
            assert [b["id"] for b in got] == [b["id"] for b in want]
            assert all(torch.equal(a["image"], b["image"]) and torch.equal(a["wave"], b["wave"])
                       for a, b in zip(got, want, strict=True))
        with pytest.raises(ValueError, match="no shards.json next to"):
            expand_shards(f"{base}/nowhere/x/shard-{{000000..000001}}.tar")
    finally:
        server.shutdown()
        server.server_close()


def test_an_unreadable_shard_stops_the_stream_naming_it(shards, tmp_path):
    """A missing or cut shard is not skipped (that would drop its clips from every epoch): the
    stream stops with one ManifestError naming the shard and the cause."""
    import shutil

    from avssl.data.manifest import ManifestError

    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    index = read_index(copy / "shards.json")
    tar = copy / "shards" / "shard-000002.tar"
    tar.write_bytes(tar.read_bytes()[:3000])
    with pytest.raises(ManifestError, match=r"shard .*shard-000002.tar: cannot be read \(ReadError: unexpected end"):
        list(_stream(index, shuffle_buffer=1))
    tar.unlink()
    with pytest.raises(ManifestError, match=r"shard-000002.tar: cannot be read \(FileNotFoundError: No such file"):
        list(_stream(index, shuffle_buffer=1))


def test_a_stream_without_a_clip_of_its_split_stops_naming_it(shards):
    """Split counts that promise clips the stream's shards do not hold: one ManifestError (a user
    error that crosses loader workers as one line), not an endless pass over the shards."""
    from avssl.data.manifest import ManifestError

    index = read_index(shards / "shards.json")
    promised = ShardIndex(index.urls, index.clips, index.classes, splits=[{"nope": c} for c in index.clips])
    with pytest.raises(ManifestError, match="loader stream 0 reads shards with no clip of split 'nope'"):
        next(iter(_stream(promised, split="nope")))


def test_a_full_disk_stops_prepare_with_one_line_and_closes_the_tar_cleanly(tiny_synth, tmp_path):
    """ENOSPC while a shard's tar is written: `avssl prepare` exits 2 with the one clear line, and
    nothing more (no `Exception ignored in _Stream.__del__`: the tar writer is closed on the
    failure, not left for the garbage collector to flush into the closed file), and no temporary
    file is left; the finished shard before it is kept."""
    code = f"""
import errno, io, sys
import avssl.data.prepare_shards as ps
from avssl.cli import main

class Full(io.FileIO):
    left = 300_000  # the disk: the first shard fits (~205 kB), the second does not
    def write(self, b):
        if len(b) > Full.left:
            raise OSError(errno.ENOSPC, "No space left on device")
        Full.left -= len(b)
        return super().write(b)

ps.open = lambda path, mode="r", *a, **k: io.BufferedWriter(Full(path, mode))
sys.exit(main(["prepare", {str(tiny_synth / "manifest.jsonl")!r}, {str(tmp_path / "out")!r}, "--format", "shards",
               "--shard-size", "3", "--workers", "0", "--limit", "6"]))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 2, run.stderr
    assert "Exception ignored" not in run.stderr and "Traceback" not in run.stderr, run.stderr
    errors = [x for x in run.stderr.splitlines() if "error" in x.lower()]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "shard-000001.tar" in errors[0], errors
    assert "stopped after 3 clips" in errors[0]
    folder = tmp_path / "out" / "shards"
    assert sorted(p.name for p in folder.iterdir()) == ["shard-000000.json", "shard-000000.tar"]


def _first_shard_read(index) -> int:
    """The shard a one-stream ShardStream (seed 0, epoch 0) reads first."""
    return index.urls.index(next(_stream(index)._shards(0)))


@pytest.mark.parametrize("delta", [1, -1])
def test_an_index_whose_counts_are_not_the_tars_stops_the_stream_naming_the_shard(shards, tmp_path, delta):
    """shards.json listing more clips than a tar holds (or fewer: a stale index after a shard was
    prepared again) would make an epoch repeat or drop clips: the stream counts each shard's
    clips as it reads it and stops at its end with one ManifestError naming it and both counts;
    read as a manifest, the same."""
    import shutil

    from avssl.data.manifest import ManifestError

    index = read_index(shards / "shards.json")
    g = _first_shard_read(index)
    clips = list(index.clips)
    holds, clips[g] = clips[g], clips[g] + delta
    stale = ShardIndex(index.urls, clips, index.classes)
    name = f"shard-{g:06d}.tar"
    with pytest.raises(ManifestError, match=rf"shard .*{name}: holds {holds} clips, but the index lists "
                                            rf"{holds + delta}"):
        list(_stream(stale, shuffle_buffer=1))
    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    data = json.loads((copy / "shards.json").read_text())
    data["shards"][g]["clips"] += delta
    (copy / "shards.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=rf"shard .*{name}: holds {holds} clips, but the index lists "
                                            rf"{holds + delta}"):
        read_manifest(copy / "shards.json")


def test_damaged_image_or_audio_bytes_in_a_shard_are_counted_and_logged(shards, tmp_path, caplog):
    """Bytes damaged inside a shard (one clip's frames, another clip's audio; the tar itself
    intact) decode to garbage without an error: each clip's members carry their CRC-32 in its
    JSON record, so the two clips fail, are logged (shard and key) and counted, and every other
    clip loads; read as a manifest, the two clips raise CorruptMediaError naming the member."""
    import logging
    import random
    import shutil
    import tarfile

    from avssl.data.decode import CorruptMediaError

    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    tar = copy / "shards" / "shard-000001.tar"
    with tarfile.open(tar) as t:
        members = {m.name: (m.offset_data, m.size) for m in t if m.isfile()}
    keys = sorted({n.split(".")[0] for n in members})
    data, rng = bytearray(tar.read_bytes()), random.Random(0)

    def damage(name):  # 200 bytes a third of the way in: the headers and the tar stay intact
        offset, size = members[name]
        at = offset + size // 3
        data[at:at + 200] = bytes(rng.randrange(256) for _ in range(200))

    for name in members:
        if name.startswith(keys[0]) and name.endswith(".jpg"):
            damage(name)
    damage(f"{keys[1]}.wav")
    tar.write_bytes(bytes(data))
    with tarfile.open(tar) as t:
        bad = {json.loads(t.extractfile(f"{k}.json").read())["id"] for k in keys[:2]}

    index = read_index(copy / "shards.json")
    with caplog.at_level(logging.WARNING, logger="avssl.data.shards"):
        seen = {b["id"][0] for b in _stream(index, shuffle_buffer=1)}
    skips = [r.getMessage() for r in caplog.records if "failed to decode" in r.getMessage()]
    assert len(skips) == 2, skips
    assert any(f"shard-000001.tar:{keys[0]}" in s and ".jpg: damaged" in s for s in skips), skips
    assert any(f"shard-000001.tar:{keys[1]}" in s and ": wav: damaged" in s for s in skips), skips
    assert "2 skipped" in skips[1]
    all_ids = {cid for g in range(6) for cid in json.loads((copy / "shards" / f"shard-{g:06d}.json").read_text())["ids"]}
    assert seen == all_ids - bad  # the rest load
    records = read_manifest(copy / "shards.json")
    ds = AVFrameAudioDataset(records, image_size=32, seconds=1.0)
    for i, r in enumerate(records):
        if r.id in bad:
            with pytest.raises(CorruptMediaError, match=r"shard-000001.tar#.*damaged"):
                ds[i]
        else:
            assert ds[i]["id"] == r.id
