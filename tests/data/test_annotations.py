"""VGG-SS JSON / Flickr-SoundNet XML readers and writers, and the ground-truth maps."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from avssl.data.annotations import (
    AnnotationError,
    AnnotationStats,
    flickr_gt_maps,
    load_flickr,
    load_vggss,
    pad_boxes,
    pixel_boxes,
    vggss_gt_maps,
    write_flickr_xml,
    write_vggss,
)


def _vggss_loop(boxes: np.ndarray, size: int = 224) -> np.ndarray:
    """The released per-sample rasterisation, written out as a loop (test reference)."""
    out = np.zeros((len(boxes), size, size), np.float32)
    for i, bs in enumerate(boxes):
        for x0, y0, x1, y1 in bs:
            if np.isnan(x0):
                continue
            out[i, int(y0 * size):int(y1 * size), int(x0 * size):int(x1 * size)] = 1
    return out


def _flickr_loop(boxes: np.ndarray, size: int = 224) -> np.ndarray:
    out = np.zeros((len(boxes), size, size))
    for i, bs in enumerate(boxes):
        for b in bs:
            if (b < 0).any():
                continue
            x0, y0, x1, y1 = (int(size * int(v) / 256) for v in b)
            tmp = np.zeros((size, size))
            tmp[y0:y1, x0:x1] = 1
            out[i] += tmp
    out /= 2
    out[out > 1] = 1
    return out.astype(np.float32)


# ----------------------------------------------------------------------------- VGG-SS JSON
def test_vggss_round_trip_exact(tmp_path):
    rng = np.random.default_rng(0)
    entries = {f"clip{i}": np.sort(rng.random((i % 3 + 1, 4)), axis=0)[:, [0, 1, 2, 3]] for i in range(5)}
    entries = {k: np.c_[v[:, 0] * 0.5, v[:, 1] * 0.5, 0.5 + v[:, 2] * 0.5, 0.5 + v[:, 3] * 0.5]
               for k, v in entries.items()}
    path = write_vggss(tmp_path / "a" / "vggss.json", entries, classes={"clip0": "dog"})
    got = load_vggss(path)
    assert list(got) == list(entries)
    for k in entries:
        np.testing.assert_array_equal(got[k], entries[k])  # repr floats: bit-exact
    rows = json.loads(path.read_text())
    assert rows[0]["class"] == "dog" and "class" not in rows[1]


def test_vggss_accepts_entry_dicts_and_class_list(tmp_path, caplog):
    path = write_vggss(tmp_path / "v.json", [{"file": "a", "class": "cat", "bbox": [[0.1, 0.1, 0.5, 0.5]]}],
                       classes=["dog"])
    assert "not in the class list" in caplog.text
    assert json.loads(path.read_text())[0]["class"] == "cat"
    np.testing.assert_array_equal(load_vggss(path)["a"], [[0.1, 0.1, 0.5, 0.5]])


def test_vggss_garbage_boxes_clipped_dropped_and_logged(tmp_path, caplog):
    data = [
        {"file": "ok", "class": "x", "bbox": [[0.1, 0.2, 0.3, 0.4]]},
        {"file": "bad", "class": "x", "bbox": [[-0.1, 0.2, 1.3, 0.8], [0.6, 0.1, 0.2, 0.5]]},
        {"file": "nan", "class": "x", "bbox": [[float("nan"), 0.1, 0.2, 0.3]]},
        {"file": "out", "class": "x", "bbox": [[1.2, 0.1, 1.5, 0.3]]},  # degenerate once clipped
    ]
    path = tmp_path / "vggss.json"
    path.write_text(json.dumps(data))  # json writes NaN literally, as Python reads it
    stats = AnnotationStats()
    with caplog.at_level(logging.WARNING, logger="avssl.data.annotations"):
        got = load_vggss(path, stats)
    np.testing.assert_array_equal(got["bad"], [[0.0, 0.2, 1.0, 0.8]])
    assert got["nan"].shape == (0, 4) and got["out"].shape == (0, 4)
    assert (stats.entries, stats.boxes, stats.clipped, stats.dropped) == (4, 5, 2, 3)
    assert stats.empty == ["nan", "out"]
    lines = [r.getMessage() for r in caplog.records]
    assert any("'bad'" in m and "[-0.1, 0.2, 1.3, 0.8]" in m and "clipped" in m for m in lines)
    assert any("'bad'" in m and "degenerate" in m for m in lines)
    assert any("'nan'" in m and "not finite" in m for m in lines)
    assert any("'out'" in m and "no usable box" in m for m in lines)


@pytest.mark.parametrize("text, needle", [
    ("[{\"file\": \"a\", \"bbox\": [[0, 0, 1]]", "cannot read"),  # truncated JSON
    ("{\"file\": \"a\"}", "expected a JSON list"),
    ("[{\"file\": \"a\", \"bbox\": [[0, 0, 1, 1]]}, {\"bbox\": []}]", "entry 1"),
    ("[{\"file\": \"a\", \"bbox\": [[0, 0, 1]]}]", "entry 0 ('a')"),
    ("[{\"file\": \"a\", \"bbox\": [[0, 0, \"x\", 1]]}]", "'bbox'"),
])
def test_vggss_malformed_raises_naming_file_and_entry(tmp_path, text, needle):
    path = tmp_path / "broken.json"
    path.write_text(text)
    with pytest.raises(AnnotationError) as e:
        load_vggss(path)
    assert str(path) in str(e.value) and needle in str(e.value)


def test_vggss_missing_file_raises(tmp_path):
    with pytest.raises(AnnotationError, match="nope.json"):
        load_vggss(tmp_path / "nope.json")


# ----------------------------------------------------------------------------- Flickr XML
def test_flickr_round_trip_and_sources(tmp_path):
    boxes = {"a": np.array([[10, 20, 100, 200], [0, 0, 256, 256]]), "b": np.array([[5, 6, 7, 8]])}
    for k, v in boxes.items():
        write_flickr_xml(tmp_path / "ann" / f"{k}.xml", v)
    got = load_flickr(tmp_path / "ann")
    assert list(got) == ["a", "b"]
    for k in boxes:
        np.testing.assert_array_equal(got[k], boxes[k])
        assert got[k].dtype == np.int64
    only_b = load_flickr([tmp_path / "ann" / "b.xml"])
    assert list(only_b) == ["b"]
    text = (tmp_path / "ann" / "a.xml").read_text()
    assert text.startswith("<annotation><object><bbox><annotator>0</annotator><xmin>10</xmin>")


def test_flickr_clips_and_drops_logged(tmp_path, caplog):
    (tmp_path / "c.xml").write_text(
        "<annotation><object><bbox><annotator>1</annotator><xmin>-5</xmin><ymin>10</ymin><xmax>300</xmax>"
        "<ymax>50</ymax></bbox></object><object><bbox><annotator>2</annotator><xmin>40</xmin><ymin>10</ymin>"
        "<xmax>30</xmax><ymax>50</ymax></bbox></object></annotation>")
    stats = AnnotationStats()
    got = load_flickr(tmp_path, stats)
    np.testing.assert_array_equal(got["c"], [[0, 10, 256, 50]])
    assert (stats.clipped, stats.dropped) == (1, 1)
    assert "clipped" in caplog.text and "degenerate" in caplog.text and "c.xml" in caplog.text


@pytest.mark.parametrize("text, needle", [
    ("<annotation><object><bbox><xmin>1</xmin></bbox>", "cannot parse"),
    ("<annotation><object><bbox><annotator>j</annotator><xmin>1</xmin><ymin>a</ymin><xmax>3</xmax>"
     "<ymax>4</ymax></bbox></object></annotation>", "<ymin> is 'a'"),
    ("<annotation><object><bbox><annotator>j</annotator><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax>"
     "</bbox></object></annotation>", "<ymax> is ''"),
])
def test_flickr_broken_xml_raises_naming_file(tmp_path, text, needle):
    (tmp_path / "x.xml").write_text(text)
    with pytest.raises(AnnotationError) as e:
        load_flickr(tmp_path)
    assert "x.xml" in str(e.value) and needle in str(e.value)


def test_flickr_empty_folder_raises(tmp_path):
    with pytest.raises(AnnotationError, match="no \\*.xml"):
        load_flickr(tmp_path)


# ----------------------------------------------------------------------------- ground-truth maps
def test_pad_boxes_and_pixel_truncation():
    ids, padded, mask = pad_boxes({"a": [[0.5, 0.25, 0.99999, 1.0]], "b": np.zeros((0, 4))})
    assert ids == ["a", "b"] and padded.shape == (2, 1, 4) and mask.tolist() == [[True], [False]]
    px = pixel_boxes(padded, "vggss")
    assert px[0, 0].tolist() == [112, 56, 223, 224] and px[1, 0].tolist() == [0, 0, 0, 0]
    fl = pixel_boxes(np.array([[[255, 1, 256, 37], [-1, -1, -1, -1]]], float), "flickr")
    assert fl[0, 0].tolist() == [int(224 * 255 / 256), 0, 224, int(224 * 37 / 256)]
    assert fl[0, 1].tolist() == [0, 0, 0, 0]


def test_gt_maps_match_per_sample_loops():
    rng = np.random.default_rng(3)
    lo = rng.random((40, 3, 2)) * 0.7
    boxes = np.concatenate([lo, lo + 0.05 + rng.random((40, 3, 2)) * 0.3], axis=2)
    boxes[::4, 2] = np.nan
    np.testing.assert_array_equal(vggss_gt_maps(boxes), _vggss_loop(boxes))
    b256 = np.round(boxes * 256)
    b256[np.isnan(b256)] = -1
    b256 = b256.astype(np.int64)
    fl = flickr_gt_maps(b256)
    np.testing.assert_array_equal(fl, _flickr_loop(b256))
    assert set(np.unique(fl)) <= {0.0, 0.5, 1.0}


def test_flickr_weighting_half_and_cap():
    b = np.array([[[0, 0, 128, 128], [64, 64, 192, 192], [0, 0, 256, 256]]])
    m = flickr_gt_maps(b, size=256)
    assert m[0, 10, 10] == 1.0  # two boxes -> capped at 1
    assert m[0, 100, 100] == 1.0  # three boxes -> capped
    assert m[0, 200, 200] == 0.5  # one annotator


def test_gt_maps_match_golden(golden):
    """Golden ``ssltie_metrics.npz``: ``vggss_boxes_norm``/``flickr_boxes_256`` -> ``*_gtmap_first8``."""
    g = golden("ssltie_metrics.npz")
    np.testing.assert_array_equal(vggss_gt_maps(g["vggss_boxes_norm"][:8]), g["vggss_gtmap_first8"])
    np.testing.assert_array_equal(flickr_gt_maps(g["flickr_boxes_256"][:8]), g["flickr_gtmap_first8"])
