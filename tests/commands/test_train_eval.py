"""`avssl train` and `avssl eval` end to end on tiny synthetic clips."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from avssl.cli import main

PRESET = Path(__file__).resolve().parents[2] / "configs" / "synthetic" / "ssltie.yaml"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synth(tiny_synth):
    return tiny_synth


def _overrides(synth: Path) -> list[str]:
    m = synth / "manifest.jsonl"
    return [f"data.train_manifest={m}", f"data.val_manifest={m}",
            f"data.annotations={synth / 'annotations' / 'vggss.json'}", "data.seconds=1", "data.num_workers=0",
            "ssltie.width=8", "ssltie.image_size=64", "ssltie.heatmap_size=4", "train.batch_size=3",
            "train.epochs=1", "train.progress=false", "train.tensorboard=false"]


def test_train_then_eval(synth, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(PRESET), *_overrides(synth), "--out", str(run)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 2 and np.isfinite(summary["final_loss"]) and summary["run_dir"] == str(run)
    assert (run / "last.pt").is_file() and (run / "best.pt").is_file() and (run / "config.yaml").is_file()
    assert "width: 8" in (run / "config.yaml").read_text()

    # --resume continues the run to 2 epochs
    assert main(["train", str(PRESET), *_overrides(synth), "train.epochs=2", "--out", str(run), "--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 4

    out = tmp_path / "eval"
    rc = main(["eval", str(run / "last.pt"), "--data", str(synth / "manifest.jsonl"),
               "--gt", str(synth / "annotations" / "vggss.json"), "--split", "test", "--out", str(out)])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "scores.json").read_text())
    sheet = out / "best_worst.png"
    assert saved["contact_sheet"] == str(sheet) and sheet.stat().st_size > 0
    assert printed == saved
    test_ids = [json.loads(x)["id"] for x in (synth / "manifest.jsonl").read_text().splitlines()
                if json.loads(x)["split"] == "test"]
    with np.load(out / "heatmaps.npz") as z:
        assert sorted(z.files) == sorted(test_ids)
        assert all(z[k].shape == (4, 4) and np.isfinite(z[k]).all() for k in z.files)
    assert saved["n_scored"] == len(test_ids) and 0 <= saved["ciou_at_0.5"] <= 1
    assert {"auc", "adaptive_ciou_at_0.5", "pointing_accuracy"} <= set(saved)
    assert {"a2v_instance", "v2a_instance", "a2a_class", "a2v_class"} <= set(saved["retrieval"])
    assert set(saved["retrieval"]["a2v_instance"]) >= {"R1", "R5", "R10", "MR"}

    # a per-class subset (EquiAV's retrieval protocol): at most 1 clip of each class
    assert main(["eval", str(run / "last.pt"), "--data", str(synth / "manifest.jsonl"), "--split", "all",
                 "--per-class", "1", "--out", str(tmp_path / "sub"), "--workers", "0"]) == 0
    sub = json.loads((tmp_path / "sub" / "scores.json").read_text())
    assert sub["n_clips"] == 3  # tiny_synth has 3 classes
    capsys.readouterr()

    # the saved heatmaps score identically with `avssl score`
    assert main(["score", "--pred", str(out / "heatmaps.npz"), "--gt", str(synth / "annotations" / "vggss.json")]) == 0
    assert json.loads(capsys.readouterr().out)["ciou_at_0.5"] == saved["ciou_at_0.5"]


def test_train_rejects_a_bad_override(capsys):
    assert main(["train", str(PRESET), "optim.lrr=1"]) == 2
    assert "lrr" in capsys.readouterr().err


def test_eval_reports_a_broken_checkpoint(tmp_path, capsys):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"")
    assert main(["eval", str(bad), "--data", str(tmp_path / "m.jsonl")]) == 2
    assert "x.pt" in capsys.readouterr().err


def test_overrides_may_follow_the_options(monkeypatch):
    """`avssl train P --out D k=v`: a key=value after the options joins the overrides; a stray
    option is still rejected."""
    import avssl.cli as cli

    seen = {}

    def fake_run(args):
        seen.update(overrides=list(args.overrides), out=args.out)
        return 0

    make = cli.build_parser

    def parser_with_fake_train():
        p = make()
        p._subparsers._group_actions[0].choices["train"].set_defaults(_run=fake_run)
        return p

    monkeypatch.setattr(cli, "build_parser", parser_with_fake_train)
    assert cli.main(["train", "synthetic/ssltie", "a.b=1", "--out", "D", "c.d=2"]) == 0
    assert seen == {"overrides": ["a.b=1", "c.d=2"], "out": "D"}
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "synthetic/ssltie", "--out", "D", "--bogus"])
    assert e.value.code == 2
