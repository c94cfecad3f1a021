"""`avssl demo` end to end on a tiny synthetic set, and the report writer."""
from __future__ import annotations

import json

import pytest

from avssl.cli import main
from avssl.report import render_html, write_report


@pytest.mark.usefixtures("one_thread")
def test_demo_trains_evaluates_and_reports(tmp_path, capsys):
    args = ["demo", str(tmp_path), "ssltie.image_size=64", "ssltie.heatmap_size=4", "ssltie.width=8",
            "train.batch_size=8", "data.num_workers=0", "train.threads=1",
            "equiav.embed_dim=32", "equiav.num_heads=4", "equiav.depth=1", "equiav.num_centroid=2",
            "--clips", "24", "--size", "64", "--epochs", "1", "--seeds", "0,1", "--workers", "1"]
    assert main(args) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    loc = report["localisation"]
    trained = loc["SSL-TIE trained (2 seeds)"]
    assert set(trained) == {"ciou_at_0.5", "auc", "mean_ciou", "adaptive_ciou_at_0.5", "pointing_accuracy"}
    assert len(trained["auc"]["runs"]) == 2 and 0.0 <= trained["auc"]["mean"] <= 1.0
    assert loc["reference: perfect"]["ciou_at_0.5"] == 1.0
    for control in ("another clip's recording", "silence"):  # the audio controls of every trained model
        for name in ("SSL-TIE trained", "EquiAV trained (zero-shot)"):
            row = loc[f"{name}, {control} (2 seeds)"]
            assert len(row["pointing_accuracy"]["runs"]) == 2 and 0 <= row["auc"]["mean"] <= 1
        dep = report["audio_dependence"][f"SSL-TIE trained, {control} (2 seeds)"]
        assert -1 <= dep["map_correlation"]["mean"] <= 1 and 0 <= dep["peak_moved"]["mean"] <= 1
        assert "a2v_class R1" in report["retrieval"][f"EquiAV trained, {control}"]
    assert "a2v_instance R1" in report["retrieval"]["SSL-TIE trained"]
    zero_shot = loc["EquiAV trained (zero-shot) (2 seeds)"]
    assert len(zero_shot["pointing_accuracy"]["runs"]) == 2 and "EquiAV untrained (zero-shot)" in loc
    for name in ("SSL-TIE trained", "EquiAV trained", "EquiAV untrained"):
        acc = report["probe"][name]["probe accuracy"]
        acc = acc["mean"] if isinstance(acc, dict) else acc
        assert 0.0 <= acc <= 1.0
    assert "a2v_instance R5" in report["retrieval"]["EquiAV trained"]
    for png in ("training_curve.png", "best_worst_ssltie.png", "best_worst_equiav.png"):
        assert (tmp_path / png).stat().st_size > 0
    page = (tmp_path / "report.html").read_text()
    assert "adaptive cIoU@0.5" in page and "training_curve.png" in page and "Audio dependence" in page
    for seed in (0, 1):
        for method in ("ssltie", "equiav"):
            assert (tmp_path / "runs" / f"{method}_seed{seed}" / "best.pt").is_file()
    # a rerun reuses data and runs and reproduces the report
    assert main(args) == 0
    assert json.loads((tmp_path / "report.json").read_text())["localisation"] == loc


def test_report_tables_escape_and_format(tmp_path):
    report = {"title": "t<1>", "localisation": {"m": {"ciou_at_0.5": 0.51234, "n_scored": 3}},
              "retrieval": {"a->v": {"R@1": {"mean": 0.5, "std": 0.1}}}}
    page = render_html(report)
    assert "t&lt;1&gt;" in page and "0.512" in page and "0.500 ± 0.100" in page
    js, html_path = write_report(report, tmp_path)
    assert json.loads(js.read_text()) == report and html_path.is_file()


@pytest.mark.usefixtures("one_thread")
def test_semireal_demo_reports_the_mask_scores(tmp_path):
    from cutout_utils import write_tone_cutouts

    source = write_tone_cutouts(tmp_path / "cutouts")
    out = tmp_path / "demo"
    args = ["demo", str(out), "ssltie.image_size=64", "ssltie.heatmap_size=4", "ssltie.width=8",
            "train.batch_size=8", "data.num_workers=0", "train.threads=1", "--methods", "ssltie",
            "--clips", "24", "--size", "64", "--epochs", "1", "--workers", "1",
            "--data", "semireal", "--source", f"cutouts:{source}"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert "semi-real" in report["title"] and "--data semireal" in report["commands"][0]
    masks = report["localisation_masks"]
    trained = masks["SSL-TIE trained (seed 0)"]
    assert 0.0 <= trained["mask_pointing_accuracy"] <= 1.0 and trained["n_scored"] >= 1
    assert "SSL-TIE trained (seed 0), another clip's recording" in masks
    assert masks["reference: perfect mask"]["mask_ciou_at_0.5"] == 1.0
    assert "reference: perfect mask" in report["localisation"]
    assert "Localisation against the exact masks" in (out / "report.html").read_text()
    assert main(["demo", str(tmp_path / "x"), "--data", "semireal"]) == 2
