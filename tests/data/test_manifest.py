"""Manifests: the avssl JSONL, CAV-MAE JSON and SSL-TIE id-list formats, validation, writing."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from avssl.data.manifest import (
    CAVMAE_NUM_FRAMES,
    SSLTIE_LAYOUTS,
    ManifestError,
    Record,
    read_manifest,
    validate,
    write_manifest,
)


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def _write_jsonl(path: Path, objs: list) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    return path


# ---------------------------------------------------------------- avssl JSONL


def test_jsonl_fields_relative_paths_and_extra(tmp_path):
    _touch(tmp_path / "media" / "a.mp4")
    m = _write_jsonl(tmp_path / "m.jsonl", [
        {"id": "a", "video": "media/a.mp4", "labels": ["dog", "bark"], "split": "train", "weight": 0.5},
        {"id": "b", "frames": ["f/b/0.jpg", "/abs/b/1.jpg"], "audio": "w/b.wav", "labels": "x,y"},
    ])
    a, b = read_manifest(m)
    assert a.id == "a" and a.video == str(tmp_path / "media" / "a.mp4")
    assert a.labels == ["dog", "bark"] and a.split == "train" and a.extra == {"weight": 0.5}
    assert a.audio is None and a.frames is None
    assert b.frames == [str(tmp_path / "f/b/0.jpg"), "/abs/b/1.jpg"]
    assert b.audio == str(tmp_path / "w/b.wav")
    assert b.labels == ["x", "y"] and b.split is None and b.extra == {}
    # an explicit root replaces the manifest's folder as the base of relative paths
    (a2, _) = read_manifest(m, root=tmp_path / "elsewhere")
    assert a2.video == str(tmp_path / "elsewhere" / "media" / "a.mp4")


def test_jsonl_split_filter_keeps_unsplit(tmp_path):
    m = _write_jsonl(tmp_path / "m.jsonl", [
        {"id": "a", "video": "a.mp4", "split": "train"},
        {"id": "b", "video": "b.mp4", "split": "test"},
        {"id": "c", "video": "c.mp4"},
    ])
    assert [r.id for r in read_manifest(m, split="test")] == ["b", "c"]


def test_jsonl_broken_line_is_named(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text('{"id": "a", "video": "a.mp4"}\n\n{"id": "b", "video": \n', encoding="utf-8")
    with pytest.raises(ManifestError, match=r"m\.jsonl, line 3: invalid JSON"):
        read_manifest(m)


@pytest.mark.parametrize("line", ['{"video": "a.mp4"}', '{"id": ""}', '["a"]', '{"id": 3}'])
def test_jsonl_needs_an_id(tmp_path, line):
    m = tmp_path / "m.jsonl"
    m.write_text('{"id": "ok", "video": "a.mp4"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="line 2: an object with an 'id'"):
        read_manifest(m)


def test_jsonl_frames_must_be_a_list(tmp_path):
    m = _write_jsonl(tmp_path / "m.jsonl", [{"id": "a", "frames": "f.jpg"}])
    with pytest.raises(ManifestError, match="line 1: 'frames' must be a list"):
        read_manifest(m)


def test_duplicate_ids_are_an_error(tmp_path):
    m = _write_jsonl(tmp_path / "m.jsonl", [{"id": i, "video": f"{i}.mp4"} for i in ("a", "b", "a")])
    with pytest.raises(ManifestError, match=r"duplicate ids \['a'\]"):
        read_manifest(m)


def test_missing_manifest_file(tmp_path):
    with pytest.raises(ManifestError, match="no such file"):
        read_manifest(tmp_path / "nope.jsonl")


# ---------------------------------------------------------------- CAV-MAE JSON


def test_cavmae_json(tmp_path):
    m = tmp_path / "cav.json"
    m.write_text(json.dumps({"data": [
        {"video_id": "v1", "wav": "audio/v1.wav", "video_path": "frames", "labels": "/m/a,/m/b"},
        {"video_id": "v2", "wav": "/abs/v2.wav", "video_path": "/abs/frames", "labels": "", "w": 2},
    ]}), encoding="utf-8")
    v1, v2 = read_manifest(m)
    assert v1.id == "v1" and v1.audio == str(tmp_path / "audio/v1.wav")
    assert len(v1.frames) == CAVMAE_NUM_FRAMES == 10
    assert v1.frames[0] == str(tmp_path / "frames" / "frame_0" / "v1.jpg")
    assert v1.frames[9] == str(tmp_path / "frames" / "frame_9" / "v1.jpg")
    assert v1.labels == ["/m/a", "/m/b"] and v1.video is None
    assert v2.labels == [] and v2.extra == {"w": 2} and v2.frames[3] == "/abs/frames/frame_3/v2.jpg"


def test_cavmae_json_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ManifestError, match="invalid JSON"):
        read_manifest(bad)
    bad.write_text(json.dumps([{"video_id": "a"}]), encoding="utf-8")
    with pytest.raises(ManifestError, match="expected a CAV-MAE manifest"):
        read_manifest(bad)
    bad.write_text(json.dumps({"data": [{"video_id": "a", "wav": "a.wav"}]}), encoding="utf-8")
    with pytest.raises(ManifestError, match=r"entry 0: missing \['video_path'\]"):
        read_manifest(bad)


# ---------------------------------------------------------------- SSL-TIE id lists


@pytest.mark.parametrize("layout", sorted(SSLTIE_LAYOUTS))
def test_id_list_layouts(tmp_path, layout):
    ids = tmp_path / "ids.txt"
    ids.write_text("id\nclip_a\nclip_b.mp4\n\n", encoding="utf-8")
    root = tmp_path / "data"
    recs = read_manifest(ids, root=root, layout=layout)
    frame_tpl, audio_tpl = SSLTIE_LAYOUTS[layout]
    assert [r.id for r in recs] == ["clip_a", "clip_b"]
    assert recs[1].frames == [str(root / frame_tpl.format(id="clip_b"))]
    assert recs[1].audio == str(root / audio_tpl.format(id="clip_b"))


def test_id_list_csv_first_column_and_default_root(tmp_path):
    ids = tmp_path / "test.csv"
    ids.write_text("file,label\nx1.jpg,dog\nx2,cat\n", encoding="utf-8")
    recs = read_manifest(ids, layout="test")
    assert [r.id for r in recs] == ["x1", "x2"]
    assert recs[0].frames == [str(tmp_path / "frame" / "x1.jpg")]
    assert recs[0].audio == str(tmp_path / "audio" / "x1.wav")


def test_id_list_needs_a_known_layout(tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("a\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="needs a layout"):
        read_manifest(ids)
    with pytest.raises(ManifestError, match="unknown layout 'nope'"):
        read_manifest(ids, layout="nope")


# ---------------------------------------------------------------- validate


def _records(tmp_path):
    ok = Record("ok", video=str(_touch(tmp_path / "ok.mp4")))
    gone = Record("gone", video=str(tmp_path / "gone.mp4"))
    half = Record("half", audio=str(_touch(tmp_path / "half.wav")),
                  frames=[str(tmp_path / "f0.jpg"), str(tmp_path / "f1.jpg")])
    empty = Record("empty")
    return [ok, gone, half, empty]


def test_validate_error_names_the_entries(tmp_path):
    with pytest.raises(ManifestError, match="3 broken manifest entries: gone: missing file .*gone.mp4") as e:
        validate(_records(tmp_path))
    assert "half: missing file" in str(e.value) and "(+1 more)" in str(e.value)
    assert "empty: no media" in str(e.value)


def test_validate_skip_counts_and_logs(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="avssl.data.manifest"):
        kept, problems = validate(_records(tmp_path), policy="skip")
    assert [r.id for r in kept] == ["ok"]
    assert [i for i, _ in problems] == ["gone", "half", "empty"]
    assert "skipped 3 of 4 manifest entries" in caplog.text
    assert "skipping gone: missing file" in caplog.text


def test_validate_all_good_is_quiet(tmp_path, caplog):
    recs = _records(tmp_path)[:1]
    with caplog.at_level(logging.WARNING, logger="avssl.data.manifest"):
        kept, problems = validate(recs, policy="skip")
    assert kept == recs and problems == [] and caplog.text == ""
    with pytest.raises(ValueError, match="policy"):
        validate(recs, policy="ignore")


# ---------------------------------------------------------------- write + round trip


def test_write_manifest_relative_paths_round_trip(tmp_path):
    out = tmp_path / "out"
    recs = [
        Record("a", audio=str(out / "audio" / "a.wav"), frames=[str(out / "frames/a/0.jpg")],
                labels=["dog"], split="train", extra={"duration": 1.5}),
        Record("b", video="/elsewhere/b.mp4"),
    ]
    path = write_manifest(out / "m.jsonl", recs)
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert lines[0] == {"id": "a", "audio": "audio/a.wav", "frames": ["frames/a/0.jpg"],
                        "labels": ["dog"], "split": "train", "duration": 1.5}
    assert lines[1] == {"id": "b", "video": "/elsewhere/b.mp4"}
    assert not list(out.glob("*.tmp"))
    assert read_manifest(path) == recs
