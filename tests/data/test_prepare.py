"""``avssl prepare``: raw videos and pre-extracted layouts into frames/, audio/, done/ and a manifest.

Tiny media are made here with PyAV (64x48 H.264 or MPEG-4 + AAC, 1 s, 10 fps, frame i a flat grey
of level 20 i + 10, so a decoded frame tells which source frame it is)."""
from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from avssl.data.manifest import Record, read_manifest, write_manifest
from avssl.data.prepare import PrepareError, _ids_from_paths, _resize, collect_inputs, prepare

VCODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"
FPS, SECONDS, W, H, SR_IN = 10, 1.0, 64, 48, 22050


def main(argv: list[str]) -> int:
    """``avssl <argv>`` through the real command line."""
    from avssl.cli import main as cli_main

    return cli_main(argv)


def make_video(path: Path, audio: bool = True, seconds: float = SECONDS, amplitude: float = 0.5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        vs = c.add_stream(VCODEC, rate=FPS)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        if audio:
            a = c.add_stream("aac", rate=SR_IN)
            a.layout = "mono"
        for i in range(round(seconds * FPS)):
            img = np.full((H, W, 3), 20 * i + 10, np.uint8)
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        c.mux(vs.encode())
        if audio:
            t = np.arange(round(seconds * SR_IN)) / SR_IN
            wave = (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)  # 0: digital silence
            for s in range(0, len(wave), 1024):
                fr = av.AudioFrame.from_ndarray(wave[None, s:s + 1024], format="fltp", layout="mono")
                fr.sample_rate, fr.pts = SR_IN, s
                c.mux(a.encode(fr))
            c.mux(a.encode())
    return path


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("videos")
    make_video(d / "good1.mp4")
    make_video(d / "sub" / "good2.mkv")
    make_video(d / "sub" / "deeper" / "good3.MP4")
    make_video(d / "silent.mp4", audio=False)
    data = make_video(d / "tmp_full.mp4").read_bytes()
    (d / "tmp_full.mp4").unlink()
    (d / "broken.mp4").write_bytes(data[: len(data) // 2])
    (d / "empty.avi").write_bytes(b"")
    (d / "notes.txt").write_text("not a video")
    return d


def _failures(out: Path) -> dict[str, tuple[str, str]]:
    with open(out / "failures.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {r["id"]: (r["path"], r["reason"]) for r in rows}


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")}


def test_prepare_directory_rerun_and_redo(video_dir, tmp_path, caplog):
    out = tmp_path / "out"
    report = prepare(video_dir, out, workers=2)
    assert (report.done, report.skipped, report.failed, report.total) == (3, 0, 3, 6)
    assert report.manifest == out / "manifest.jsonl" and report.clips_per_second > 0

    recs = read_manifest(report.manifest)
    assert [r.id for r in recs] == ["good1", "good2", "good3"]
    expected_levels = 20 * np.arange(10) + 10  # frame k at (k + 0.5) * 0.1 s is source frame k
    for r in recs:
        assert r.video is None and len(r.frames) == 10
        assert r.frames == [str(out / "frames" / r.id / f"{k}.jpg") for k in range(10)]
        levels = [np.asarray(Image.open(f)).mean() for f in r.frames]
        assert np.asarray(Image.open(r.frames[0])).shape == (H, W, 3)
        np.testing.assert_allclose(levels, expected_levels, atol=6)
        assert r.audio == str(out / "audio" / f"{r.id}.wav")
        info = sf.info(r.audio)
        # the default keeps each file's own rate (both methods read audio at it)
        assert (info.samplerate, info.channels, info.subtype) == (SR_IN, 1, "PCM_16")
        # mkv: the AAC end padding is not trimmed (its DURATION tag includes it), ~20 ms more
        assert abs(info.frames - SR_IN * SECONDS) <= (23 if r.id != "good2" else 1100)
        wave, _ = sf.read(r.audio)
        assert 0.4 < np.abs(wave).max() <= 0.6  # the 0.5-amplitude tone, not silence
        assert r.extra["frame_times"] == pytest.approx([0.05 + 0.1 * k for k in range(10)])
        assert r.extra["duration"] == pytest.approx(1.0, abs=0.05)
        assert (r.extra["orig_fps"], r.extra["orig_width"], r.extra["orig_height"]) == (10, W, H)
        assert r.extra["orig_sample_rate"] == SR_IN
        assert Path(r.extra["source"]).parent.is_relative_to(video_dir)

    fails = _failures(out)
    assert set(fails) == {"silent", "broken", "empty"}
    assert fails["silent"][0].endswith("silent.mp4") and "no audio stream" in fails["silent"][1]
    assert fails["empty"][1] == "zero-byte file"
    assert fails["broken"][0].endswith("broken.mp4") and fails["broken"][1]

    # a rerun skips finished clips without touching them, and retries the failed ones
    old = 1_000_000_000_000_000_000
    for p in [*(out / "done").glob("*.json"), *(out / "frames" / "good1").glob("*.jpg")]:
        os.utime(p, ns=(old, old))
    with caplog.at_level(logging.INFO, logger="avssl.data.prepare"):
        again = prepare(video_dir, out, workers=2)
    assert (again.done, again.skipped, again.failed) == (0, 3, 3)
    assert "skipping 3 of 6 clips already done" in caplog.text
    assert set(_mtimes(out / "done").values()) == {old}
    assert {p.stat().st_mtime_ns for p in (out / "frames" / "good1").glob("*.jpg")} == {old}
    assert read_manifest(again.manifest) == recs

    # deleting one sidecar redoes exactly that clip; its partial outputs are replaced
    (out / "done" / "good2.json").unlink()
    (out / "frames" / "good2" / "stale.jpg").write_bytes(b"junk")
    third = prepare(video_dir, out, workers=2)
    assert (third.done, third.skipped, third.failed) == (1, 2, 3)
    times = _mtimes(out / "done")
    assert times["good1.json"] == times["good3.json"] == old and times["good2.json"] != old
    assert sorted(p.name for p in (out / "frames" / "good2").iterdir()) == [f"{k}.jpg" for k in range(10)]
    assert read_manifest(third.manifest) == recs


def test_options_must_match_and_limit(video_dir, tmp_path):
    out = tmp_path / "out"
    report = prepare(video_dir, out, workers=1, frames=3, limit=2)  # broken, empty (sorted paths)
    assert (report.total, report.done, report.failed) == (2, 0, 2)
    with pytest.raises(PrepareError, match=r"prepared with frames=3 \(now 10\)"):
        prepare(video_dir, out, workers=1)


def test_on_error_stop(video_dir, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(PrepareError, match="clip broken: .*broken.mp4"):
        prepare(video_dir, out, workers=1, on_error="stop")
    assert list(_failures(out)) == ["broken"]
    assert main(["prepare", str(video_dir), str(tmp_path / "cli"), "--workers", "2",
                 "--on-error", "stop"]) == 2


def test_jsonl_input_carries_labels_and_resizes(video_dir, tmp_path):
    src = tmp_path / "src.jsonl"
    write_manifest(src, [
        Record("a", video=str(video_dir / "good1.mp4"), labels=["dog", "bark"], split="train",
               extra={"weight": 0.5}),
        Record("b", video=str(video_dir / "sub" / "good2.mkv"), split="test"),
        Record("c", video=str(video_dir / "silent.mp4"), labels=["x"]),
    ])
    out = tmp_path / "out"
    report = prepare(src, out, frames=4, size=32, workers=2)
    assert (report.done, report.failed) == (2, 1)
    a, b = read_manifest(report.manifest)
    assert (a.labels, a.split, a.extra["weight"]) == (["dog", "bark"], "train", 0.5)
    assert (b.labels, b.split) == ([], "test")
    assert len(a.frames) == 4 and np.asarray(Image.open(a.frames[3])).shape == (32, 32, 3)
    np.testing.assert_allclose(np.asarray(Image.open(a.frames[0])).mean(), 30, atol=6)  # t=0.125 s

    report = prepare(src, tmp_path / "out2", frames=2, short_side=24, workers=1)
    a = read_manifest(report.manifest)[0]
    assert np.asarray(Image.open(a.frames[0])).shape == (24, 32, 3)


def _jpeg(path: Path, level: int, size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), level, np.uint8)).save(path)
    return path


def _wav(path: Path, sr: int, seconds: float, channels: int = 1, amplitude: float = 0.3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(sr * seconds)) / sr
    wave = amplitude * np.sin(2 * np.pi * 300 * t)
    sf.write(path, np.stack([wave] * channels, 1) if channels > 1 else wave, sr, subtype="PCM_16")
    return path


def test_cavmae_json_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative INPUT and OUT: the manifest must still be right
    data = tmp_path / "cav"
    for vid in ("v44k", "v16k", "vbad"):
        for i in range(10):
            if not (vid == "vbad" and i == 7):
                _jpeg(data / "frames" / f"frame_{i}" / f"{vid}.jpg", 10 * i)
    _wav(data / "wav" / "v44k.wav", 44100, 0.5, channels=2)
    _wav(data / "wav" / "v16k.wav", 16000, 0.5)
    _wav(data / "wav" / "vbad.wav", 16000, 0.5)
    m = data / "train.json"
    m.write_text(json.dumps({"data": [
        {"video_id": v, "wav": f"wav/{v}.wav", "video_path": "frames", "labels": "/m/a,/m/b"}
        for v in ("v44k", "v16k", "vbad")]}))
    out = tmp_path / "out"
    assert main(["prepare", "cav/train.json", "out", "--workers", "2", "--sample-rate", "16000"]) == 0
    recs = {r.id: r for r in read_manifest(out / "manifest.jsonl")}
    assert sorted(recs) == ["v16k", "v44k"]
    r44 = recs["v44k"]
    assert r44.frames == [str(data / "frames" / f"frame_{i}" / "v44k.jpg") for i in range(10)]
    assert r44.labels == ["/m/a", "/m/b"] and r44.extra["orig_sample_rate"] == 44100
    assert r44.audio == str(out / "audio" / "v44k.wav")
    info = sf.info(r44.audio)
    assert (info.samplerate, info.channels, info.frames) == (16000, 1, 8000)
    assert recs["v16k"].audio == str(data / "wav" / "v16k.wav")  # already right: kept in place
    assert not (out / "frames" / "v44k").exists()
    path, reason = _failures(out)["vbad"]
    assert path == str(data / "frames" / "frame_7" / "vbad.jpg") and reason == "no such file"


def test_prepare_resamples_only_when_asked(video_dir, tmp_path):
    """--sample-rate 16000 gives the CAV-MAE layout; 'native' is the default's spelling."""
    from avssl.commands.prepare import _rate

    assert _rate("native") is None and _rate("16000") == 16000
    report = prepare(video_dir, tmp_path / "out", workers=1, sample_rate=16000)
    for r in read_manifest(report.manifest):
        info = sf.info(r.audio)
        assert info.samplerate == 16000 and r.extra["orig_sample_rate"] == SR_IN
        assert abs(info.frames - 16000 * SECONDS) <= (16 if r.id != "good2" else 800)


def test_ssltie_id_list(tmp_path):
    root = tmp_path / "flickr"
    for vid in ("c1", "c2", "c3"):
        _jpeg(root / "frame" / f"{vid}.jpg", 100, size=(50, 40))
    _wav(root / "audio" / "c1.wav", 22050, 0.3)
    _wav(root / "audio" / "c2.wav", 16000, 0.0)  # header only: no samples
    (root / "frame" / "c3.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    _wav(root / "audio" / "c3.wav", 16000, 0.2)
    ids = tmp_path / "test_ids.txt"
    ids.write_text("c1\nc2\nc3\n")
    out = tmp_path / "out"
    assert main(["prepare", str(ids), str(out), "--layout", "test", "--root", str(root),
                 "--size", "16", "--workers", "2"]) == 0
    (r,) = read_manifest(out / "manifest.jsonl")
    assert r.id == "c1" and r.frames == [str(out / "frames" / "c1" / "0.jpg")]
    assert np.asarray(Image.open(r.frames[0])).shape == (16, 16, 3)
    assert (r.extra["orig_width"], r.extra["orig_height"]) == (50, 40)
    assert r.audio == str(root / "audio" / "c1.wav")  # a mono wav at its own rate: kept in place
    assert sf.info(r.audio).samplerate == 22050 and sf.info(r.audio).frames == round(0.3 * 22050)
    fails = _failures(out)
    assert "zero samples" in fails["c2"][1] and fails["c2"][0].endswith("c2.wav")
    assert "cannot decode image" in fails["c3"][1] and fails["c3"][0].endswith("c3.jpg")


def test_ids_and_inputs(tmp_path, caplog):
    for rel in ("a/x.mp4", "b/x.mp4", "b/x.mkv", "y.webm", "c/z.MOV", "c/readme.md"):
        (tmp_path / "v" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "v" / rel).write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="avssl.data.prepare"):
        recs = collect_inputs(tmp_path / "v")
    assert [r.id for r in recs] == ["a__x", "b__x_mkv", "b__x_mp4", "z", "y"]
    assert recs[0].video == str(tmp_path / "v" / "a" / "x.mp4")
    assert "1 file stems occur more than once" in caplog.text
    assert _ids_from_paths([Path("/d/p/q.mp4"), Path("/e/q.mp4")], Path("/d")) == ["p__q", "e__q"]

    lst = tmp_path / "list.txt"
    lst.write_text("# videos\nv/y.webm\n\n/abs/w.mp4\n")
    assert [(r.id, r.video) for r in collect_inputs(lst)] == [
        ("y", str(tmp_path / "v" / "y.webm")), ("w", "/abs/w.mp4")]
    with pytest.raises(PrepareError, match="no media files"):
        collect_inputs(_empty_dir(tmp_path))
    with pytest.raises(PrepareError, match="no such file or directory"):
        collect_inputs(tmp_path / "nope")
    assert main(["prepare", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2


def _empty_dir(tmp_path: Path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    return d


@pytest.mark.parametrize("hw", [(240, 320), (360, 202), (100, 100)])
def test_resize_matches_torchvision_resize_centercrop(hw):
    """--size is CAV-MAE's T.Resize(224) + T.CenterCrop(224) on a PIL image; --short-side T.Resize."""
    T = pytest.importorskip("torchvision.transforms")
    img = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    pil = Image.fromarray(img)
    np.testing.assert_array_equal(_resize(img, 224, None), np.asarray(T.CenterCrop(224)(T.Resize(224)(pil))))
    np.testing.assert_array_equal(_resize(img, None, 112), np.asarray(T.Resize(112)(pil)))


# ----------------------------------------------------------------------------- real-world inputs
def _ogg_video(path: Path) -> Path:
    """VP8 + Vorbis in Ogg (this PyAV has no Theora encoder), 1 s at 10 fps."""
    from fractions import Fraction

    if not {"libvpx", "vorbis"} <= set(av.codecs_available):
        pytest.skip("this PyAV build cannot encode VP8 + Vorbis")
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libvpx", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        a = c.add_stream("vorbis", rate=44100, layout="stereo", options={"strict": "experimental"})
        for i in range(FPS):
            f = av.VideoFrame.from_ndarray(np.full((H, W, 3), 20 * i + 10, np.uint8), format="rgb24")
            f.pts = i
            c.mux(vs.encode(f))
        c.mux(vs.encode())
        wave = (0.5 * np.sin(2 * np.pi * 440 * np.arange(44100) / 44100)).astype(np.float32)
        for s in range(0, len(wave), 1024):
            fr = av.AudioFrame.from_ndarray(np.stack([wave[s:s + 1024]] * 2), format="fltp", layout="stereo")
            fr.sample_rate, fr.pts, fr.time_base = 44100, s, Fraction(1, 44100)
            c.mux(a.encode(fr))
        c.mux(a.encode())
    return path


def test_directory_is_probed_not_filtered_by_extension(tmp_path, caplog):
    src = tmp_path / "in"
    make_video(src / "a.mp4")
    _ogg_video(src / "b.ogg")
    make_video(src / "c.mp4").rename(src / "c.video")  # an mp4 under a name no list knows
    (src / "notes.txt").write_text("not a video")
    _wav(src / "music.flac", 16000, 0.5)  # audio only
    (src / "empty.dat").write_bytes(b"")
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="avssl.data.prepare"):
        report = prepare(src, out, workers=0)
    assert (report.done, report.failed, report.total) == (3, 0, 3)
    assert [r.id for r in read_manifest(report.manifest)] == ["a", "b", "c"]
    ignored = {Path(p).name: why for p, why in report.ignored}
    assert set(ignored) == {"notes.txt", "music.flac", "empty.dat"}
    assert "no video stream" in ignored["music.flac"] and ignored["empty.dat"] == "zero-byte file"
    assert "not a media file" in ignored["notes.txt"]
    assert "ignored 3 files" in caplog.text and "3 files ignored as not videos" in report.summary()
    with open(out / "ignored.csv", newline="", encoding="utf-8") as f:
        assert {Path(r["path"]).name for r in csv.DictReader(f)} == set(ignored)


def test_disk_full_keeps_what_is_done_and_cleans_up_on_rerun(tmp_path, monkeypatch):
    import errno

    from avssl.data import prepare as P

    src = tmp_path / "in"
    for k in range(3):
        make_video(src / f"v{k}.mp4")
    make_video(src / "silent.mp4", audio=False)
    out = tmp_path / "out"
    real = P._write_wav
    calls = []

    def full_after_one(path, wave, sr):
        calls.append(path)
        if len(calls) > 1:
            (path.parent / f".{path.name}.999.tmp").write_bytes(b"half a wav")  # as a killed write leaves
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, wave, sr)

    monkeypatch.setattr(P, "_write_wav", full_after_one)
    with pytest.raises(PrepareError, match=r"No space left on device; stopped after 1 clips finished") as e:
        prepare(src, out, workers=0)
    assert "\n" not in str(e.value) and "rerun" in str(e.value)
    assert [r.id for r in read_manifest(out / "manifest.jsonl")] == ["v0"]
    assert list(_failures(out)) == ["silent"]  # the clip that failed on its own merits
    assert list((out / "audio").glob(".*.tmp"))

    monkeypatch.setattr(P, "_write_wav", real)
    again = prepare(src, out, workers=0)
    assert (again.done, again.skipped, again.failed) == (2, 1, 1)
    assert [r.id for r in read_manifest(again.manifest)] == ["v0", "v1", "v2"]
    assert not list((out / "audio").glob(".*.tmp")) and not list(out.rglob("*.tmp"))


def _warnings(out: Path) -> dict[str, tuple[str, str]]:
    with open(out / "warnings.csv", newline="", encoding="utf-8") as f:
        return {r["id"]: (r["path"], r["reason"]) for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def quiet_dir(tmp_path_factory) -> Path:
    """Two videos with a tone, one whose audio track is all zeros (digital silence)."""
    d = tmp_path_factory.mktemp("quiet")
    make_video(d / "loud1.mp4")
    make_video(d / "loud2.mp4")
    make_video(d / "mute.mp4", amplitude=0.0)
    return d


def test_silent_audio_is_a_failure_by_default(quiet_dir, tmp_path, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="avssl.data.prepare"):
        report = prepare(quiet_dir, out, workers=0)
    assert (report.done, report.failed, report.silent) == (2, 1, 1)
    assert [r.id for r in read_manifest(report.manifest)] == ["loud1", "loud2"]
    path, reason = _failures(out)["mute"]
    assert path == str(quiet_dir / "mute.mp4") and reason.startswith("silent audio")
    assert "failed mute" in caplog.text and "silent audio" in caplog.text
    assert "1 silent audio" in report.summary() and "--keep-silent" in report.summary()
    assert not (out / "warnings.csv").exists()
    assert not (out / "frames" / "mute").exists() and not (out / "audio" / "mute.wav").exists()


def test_keep_silent_keeps_and_lists_the_clip(quiet_dir, tmp_path, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="avssl.data.prepare"):
        assert main(["prepare", str(quiet_dir), str(out), "--workers", "0", "--keep-silent"]) == 0
    recs = {r.id: r for r in read_manifest(out / "manifest.jsonl")}
    assert sorted(recs) == ["loud1", "loud2", "mute"]
    assert recs["mute"].extra["silent_audio"] is True and "silent_audio" not in recs["loud1"].extra
    wave, _ = sf.read(recs["mute"].audio)
    assert not wave.any()  # kept as it is: silence, nothing put in its place
    assert list(_failures(out)) == []
    path, reason = _warnings(out)["mute"]
    assert path == str(quiet_dir / "mute.mp4") and reason.startswith("silent audio")
    assert list(_warnings(out)) == ["mute"]
    assert "mute" in caplog.text and "silent audio" in caplog.text and "warnings.csv" in caplog.text
    # a rerun skips the finished clip and still lists it
    again = prepare(quiet_dir, out, workers=0)
    assert (again.done, again.skipped, again.failed, again.silent) == (0, 3, 0, 0)
    assert again.warnings == [("mute", str(quiet_dir / "mute.mp4"), _warnings(out)["mute"][1])]
    # redone without --keep-silent, the clip fails and is no longer a warning
    (out / "done" / "mute.json").unlink()
    third = prepare(quiet_dir, out, workers=0)
    assert (third.done, third.failed) == (0, 1) and not (out / "warnings.csv").exists()
    assert [r.id for r in read_manifest(third.manifest)] == ["loud1", "loud2"]


def test_silent_pre_extracted_audio_and_shards(tmp_path):
    from avssl.data.prepare_shards import prepare_shards

    src = tmp_path / "src"
    _jpeg(src / "a" / "0.jpg", 100)
    _jpeg(src / "b" / "0.jpg", 100)
    write_manifest(tmp_path / "m.jsonl", [
        Record("a", frames=[str(src / "a" / "0.jpg")], audio=str(_wav(src / "a.wav", 16000, 0.5))),
        Record("b", frames=[str(src / "b" / "0.jpg")], audio=str(_wav(src / "b.wav", 16000, 0.5, amplitude=0))),
    ])
    report = prepare(tmp_path / "m.jsonl", tmp_path / "out", workers=0)
    assert (report.done, report.failed, report.silent) == (1, 1, 1)
    path, reason = _failures(tmp_path / "out")["b"]
    assert path == str(src / "b.wav") and reason.startswith("silent audio")
    shards = prepare_shards(tmp_path / "m.jsonl", tmp_path / "sh", workers=0)
    assert (shards.done, shards.failed) == (1, 1)
    assert _failures(tmp_path / "sh")["b"][1].startswith("silent audio")
    # shards keep them too on request, marked in their JSON records
    assert main(["prepare", str(tmp_path / "m.jsonl"), str(tmp_path / "sh2"), "--format", "shards", "--workers", "0",
                 "--keep-silent"]) == 0
    from avssl.data.manifest import read_manifest
    kept = {r.id: r for r in read_manifest(tmp_path / "sh2" / "shards.json")}
    assert sorted(kept) == ["a", "b"] and kept["b"].extra.get("silent_audio") is True
    assert not kept["a"].extra.get("silent_audio")


def test_help_tells_what_a_full_disk_leaves(tmp_path, monkeypatch, capsys, caplog):
    """--help says what really happens on a full disk: the finished clips' done/*.json are kept, the
    manifest is rewritten only when there is still room for it (else the error says it was not),
    and the exit status is the one the command returns."""
    import errno

    from avssl.data import prepare as P

    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--keep-silent" in text and "silent audio" in text
    src = tmp_path / "in"
    for k in range(3):
        make_video(src / f"v{k}.mp4")
    out = tmp_path / "out"
    real = P._write_wav
    calls = []

    def full_after_one(path, wave, sr):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, wave, sr)

    def no_room(path, records):  # the disk has no room left even for the manifest
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(P, "_write_wav", full_after_one)
    monkeypatch.setattr(P, "write_manifest", no_room)
    with caplog.at_level(logging.ERROR, logger="avssl.commands.prepare"):
        rc = main(["prepare", str(src), str(out), "--workers", "0"])
    (err,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert rc == 2 and "\n" not in err and f"{rc} on a bad input, when the output disk fills up" in text
    assert "manifest.jsonl could not be written" in err and not (out / "manifest.jsonl").exists()
    assert [p.name for p in (out / "done").iterdir()] == ["v0.json"]
    assert "still list the clips finished" not in text  # what a full disk cannot promise
    assert "when there is room for them" in text and "done/*.json" in text
    # the failures were written although the manifest was not (each is tried on its own)
    assert (out / "failures.csv").is_file()
