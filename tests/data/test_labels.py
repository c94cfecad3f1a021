"""avssl.data.labels: class lists in their three formats and per-clip sample weights, and the
one-line errors on bad files."""
from __future__ import annotations

import pytest

from avssl.data.labels import read_class_list, read_sample_weights


def test_read_class_list(tmp_path):
    (tmp_path / "labels.csv").write_text("index,mid,display_name\n1,/m/b,B\n0,/m/a,\"A, a\"\n")
    assert read_class_list(tmp_path / "labels.csv") == ["/m/a", "/m/b"]
    (tmp_path / "c.json").write_text('{"x": {"index": 1}, "y": {"index": 0}}')
    assert read_class_list(tmp_path / "c.json") == ["y", "x"]
    (tmp_path / "c.txt").write_text("u\nv\n\n")
    assert read_class_list(tmp_path / "c.txt") == ["u", "v"]
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"bad\.csv: malformed"):
        read_class_list(tmp_path / "bad.csv")


def test_read_sample_weights(tmp_path):
    good = tmp_path / "w.csv"
    good.write_text("0.5\n1.0\n\n2e-1\n")
    assert read_sample_weights(good, 3).tolist() == [0.5, 1.0, 0.2]
    for text, match in [("1\n-2\n", "line 2: weight -2.0 must be finite"), ("0\n0\n", "all weights are zero"),
                        ("1\ninf\n", "line 2: weight inf")]:
        (tmp_path / "x.csv").write_text(text)
        with pytest.raises(ValueError, match=match):
            read_sample_weights(tmp_path / "x.csv")
    with pytest.raises(ValueError, match="has 3 weights but the training set has 4"):
        read_sample_weights(good, 4)
