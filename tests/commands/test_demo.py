"""`avssl demo` end to end on a tiny synthetic set, and the report writer."""
from __future__ import annotations

import json

from avssl.cli import main
from avssl.report import render_html, write_report


def test_demo_writes_a_report(tmp_path, capsys):
    assert main(["demo", str(tmp_path), "--clips", "20", "--workers", "1"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    loc = report["localisation"]
    perfect, centre = loc["reference: perfect"], loc["reference: centre_prior"]
    assert perfect["ciou_at_0.5"] == 1.0 and perfect["n_scored"] >= 1
    assert centre["mean_ciou"] < perfect["mean_ciou"]
    assert report["data"]["prepared clips"] == 20 and report["data"]["prepare failures"] == 0
    page = (tmp_path / "report.html").read_text()
    assert "adaptive cIoU@0.5" in page and "reference: perfect" in page
    # a rerun reuses the data and the prepared clips
    assert main(["demo", str(tmp_path), "--clips", "20", "--workers", "1"]) == 0
    assert json.loads((tmp_path / "report.json").read_text())["localisation"] == loc


def test_report_tables_escape_and_format(tmp_path):
    report = {"title": "t<1>", "localisation": {"m": {"ciou_at_0.5": 0.51234, "n_scored": 3}},
              "retrieval": {"a->v": {"R@1": {"mean": 0.5, "std": 0.1}}}}
    page = render_html(report)
    assert "t&lt;1&gt;" in page and "0.512" in page and "0.500 ± 0.100" in page
    js, html_path = write_report(report, tmp_path)
    assert json.loads(js.read_text()) == report and html_path.is_file()
