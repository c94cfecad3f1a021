"""`avssl score`: npz heatmaps + VGG-SS JSON / Flickr XML -> JSON metrics and per-sample CSV."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from avssl.cli import main
from avssl.data.annotations import write_flickr_xml, write_vggss
from avssl.eval.localisation import evaluate


@pytest.fixture()
def tiny(tmp_path):
    rng = np.random.default_rng(0)
    maps = {f"clip{i}": rng.random((14, 14), dtype=np.float32) for i in range(6)}
    maps["clip0"][2:6, 2:6] += 3  # a confident, correct peak
    boxes = {k: np.array([[0.1, 0.1, 0.45, 0.45]]) if i % 2 == 0 else np.array([[0.3, 0.2, 0.9, 0.8], [0.0, 0.0, 0.2, 0.3]])
             for i, k in enumerate(maps)}
    np.savez(tmp_path / "pred.npz", **maps)
    write_vggss(tmp_path / "vggss.json", boxes)
    for k, b in boxes.items():
        write_flickr_xml(tmp_path / "flickr" / f"{k}.xml", np.round(b * 256).astype(int))
    return tmp_path, maps, boxes


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["score", *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_vggss_json_and_per_sample_csv(tiny, capsys):
    d, maps, boxes = tiny
    rc, out, _ = _run(capsys, "--pred", d / "pred.npz", "--gt", d / "vggss.json", "--per-sample", d / "o" / "ps.csv")
    assert rc == 0
    res = json.loads(out)
    ref = evaluate(maps, boxes)
    assert res == json.loads(json.dumps(ref.summary))
    assert res["n_scored"] == 6 and res["box_format"] == "vggss"
    for key in ("ciou_at_0.5", "auc", "mean_ciou", "adaptive_ciou_at_0.5", "pointing_accuracy"):
        assert isinstance(res[key], float)
    rows = list(csv.DictReader((d / "o" / "ps.csv").open()))
    assert [r["id"] for r in rows] == list(maps)
    assert set(rows[0]) == {"id", "ciou", "adaptive_ciou", "pointing_hit", "confidence"}
    np.testing.assert_array_equal([float(r["ciou"]) for r in rows], ref.ciou)
    assert rows[0]["pointing_hit"] == "True"


def test_flickr_folder_inferred_and_protocol_flags(tiny, capsys):
    d, maps, _ = tiny
    rc, out, _ = _run(capsys, "--pred", d / "pred.npz", "--gt", d / "flickr", "--protocol", "adaptive",
                      "--upsample", "bicubic")
    assert rc == 0
    res = json.loads(out)
    assert res["box_format"] == "flickr"
    assert res["protocol"] == {"threshold": "adaptive", "upsample": "bicubic", "size": 224}
    assert res["ciou_at_0.5"] == res["adaptive_ciou_at_0.5"]


def test_nan_map_excluded_or_strict_error(tiny, capsys):
    d, maps, _ = tiny
    maps = dict(maps)
    maps["clip3"] = np.full((14, 14), np.nan, np.float32)
    np.savez(d / "bad.npz", **maps)
    rc, out, _ = _run(capsys, "--pred", d / "bad.npz", "--gt", d / "vggss.json")
    assert rc == 0 and json.loads(out)["invalid"] == ["clip3"]
    rc, _, err = _run(capsys, "--pred", d / "bad.npz", "--gt", d / "vggss.json", "--strict")
    assert rc == 2 and "clip3" in err and "NaN" in err


@pytest.mark.parametrize("what", ["pred", "gt_json", "gt_missing", "silent"])
def test_unreadable_inputs_fail_clearly(tiny, capsys, what):
    d, _, _ = tiny
    (d / "junk.npz").write_bytes(b"not a zip")
    (d / "broken.json").write_text("[{\"file\": ")
    args = {"pred": ["--pred", d / "junk.npz", "--gt", d / "vggss.json"],
            "gt_json": ["--pred", d / "pred.npz", "--gt", d / "broken.json"],
            "gt_missing": ["--pred", d / "pred.npz", "--gt", d / "nothing.json"],
            "silent": ["--pred", d / "pred.npz", "--gt", d / "vggss.json", "--silent", d / "none.txt"]}[what]
    rc, out, err = _run(capsys, *args)
    assert rc == 2 and out == ""
    assert err.startswith("avssl score: error:")
    assert {"pred": "junk.npz", "gt_json": "broken.json", "gt_missing": "nothing.json", "silent": "none.txt"}[what] in err


def test_silent_ids_add_open_set(tiny, capsys):
    d, maps, _ = tiny
    np.savez(d / "with_silent.npz", **maps, quiet=np.zeros((14, 14), np.float32))
    (d / "silent.txt").write_text("quiet\n")
    rc, out, _ = _run(capsys, "--pred", d / "with_silent.npz", "--gt", d / "vggss.json", "--silent", d / "silent.txt")
    res = json.loads(out)
    assert rc == 0 and res["missing_gt"] == [] and res["open_set"]["n_silent"] == 1
    assert 0.0 <= res["open_set"]["ap"] <= 1.0


def test_empty_gt_kept_as_failure_unless_excluded(tiny, capsys):
    d, maps, boxes = tiny
    boxes = dict(boxes)
    boxes["clip1"] = np.array([[1.1, 1.2, 1.4, 1.5]])  # outside the image: empty after clipping
    write_vggss(d / "outside.json", boxes)
    rc, out, _ = _run(capsys, "--pred", d / "pred.npz", "--gt", d / "outside.json")
    res = json.loads(out)
    assert rc == 0 and res["n_scored"] == 6 and res["n_empty_gt"] == 1 and res["empty_gt"] == ["clip1"]
    rc, out, _ = _run(capsys, "--pred", d / "pred.npz", "--gt", d / "outside.json", "--exclude-empty-gt")
    ex = json.loads(out)
    assert rc == 0 and ex["n_scored"] == 5 and ex["n_empty_gt"] == 1 and ex["exclude_empty_gt"] is True
    assert res["ciou_at_0.5"] == ex["ciou_at_0.5"] * 5 / 6


@pytest.mark.parametrize("what", ["text", "npy", "truncated"])
def test_pred_that_is_not_an_npz_archive_says_so(tiny, capsys, what):
    """A text file (or a single .npy array, or a cut-off archive) passed as --pred: one line naming
    the file and saying it is not a .npz heatmap archive, never NumPy's "contains pickled data"."""
    d, maps, _ = tiny
    path = d / {"text": "ids.txt", "npy": "one.npy", "truncated": "cut.npz"}[what]
    if what == "text":
        path.write_text("clip0\nclip1\n")
    elif what == "npy":
        np.save(path, maps["clip0"])
    else:
        path.write_bytes((d / "pred.npz").read_bytes()[:200])
    rc, out, err = _run(capsys, "--pred", path, "--gt", d / "vggss.json")
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("avssl score: error:")
    assert str(path) in err and "pickled" not in err
    assert ("not a .npz heatmap archive" if what != "truncated" else "corrupt .npz heatmap archive") in err
