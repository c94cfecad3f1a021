"""`avssl train` and `avssl eval` end to end on tiny synthetic clips."""
from __future__ import annotations

import json
import os
import subprocess
import sys
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
    assert sub["retrieval_arithmetic"] == "fp32"
    assert main(["eval", str(run / "last.pt"), "--data", str(synth / "manifest.jsonl"), "--split", "all",
                 "--per-class", "1", "--out", str(tmp_path / "sub16"), "--workers", "0", "--retrieval-fp16"]) == 0
    sub16 = json.loads((tmp_path / "sub16" / "scores.json").read_text())
    assert sub16["retrieval_arithmetic"].startswith("fp16") and sub16["n_clips"] == 3
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


# ---- user errors: one line "avssl: FILE: cause" on stderr, exit code 2, no traceback ----------

AVSSL = Path(sys.executable).parent / "avssl"


def _avssl(*args: str, debug: bool = False) -> subprocess.CompletedProcess:
    if not AVSSL.is_file():
        pytest.skip(f"{AVSSL} not installed")
    env = {k: v for k, v in os.environ.items() if k != "AVSSL_DEBUG"}
    if debug:
        env["AVSSL_DEBUG"] = "1"
    return subprocess.run([str(AVSSL), *args], capture_output=True, text=True, env=env, timeout=300)


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [x for x in proc.stderr.splitlines() if x.startswith("avssl")]
    assert len(errors) == 1, proc.stderr
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def tiny_run(synth, tmp_path_factory):
    run = tmp_path_factory.mktemp("cli_run") / "run"
    assert main(["train", str(PRESET), *_overrides(synth), "--out", str(run)]) == 0
    return run


def test_eval_refuses_non_positive_counts(synth, tiny_run, capsys):
    base = ["eval", str(tiny_run / "last.pt"), "--data", str(synth / "manifest.jsonl")]
    for opt, value in (("--batch-size", "0"), ("--batch-size", "-3"), ("--per-class", "0"), ("--workers", "-1"),
                       ("--batch-size", "four")):
        with pytest.raises(SystemExit) as e:
            main([*base, opt, value])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert opt in err and value in err


def test_train_cuda_requested_without_cuda_is_one_line(synth, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = _avssl("train", str(PRESET), *_overrides(synth), "train.device=cuda", "--out", str(tmp_path / "r"))
    _one_line_error(proc, "cuda", "CUDA is not available")


def test_train_out_under_a_file_is_one_line(synth, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    proc = _avssl("train", str(PRESET), *_overrides(synth), "--out", str(blocker / "run"))
    _one_line_error(proc, "avssl: ", str(blocker))
    debug = _avssl("train", str(PRESET), *_overrides(synth), "--out", str(blocker / "run"), debug=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_resume_from_another_methods_checkpoint_is_one_line(synth, tiny_run, tmp_path):
    import torch

    from avssl.checkpoint import load_checkpoint, save_checkpoint

    ours = load_checkpoint(tiny_run / "last.pt")
    other = tmp_path / "equiav_last.pt"  # an EquiAV run's checkpoint: other weights, other method
    save_checkpoint(other, model={"audio_encoder.proj.weight": torch.zeros(4, 4)}, optimizer=ours["optimizer"],
                    scheduler=ours["scheduler"], scaler=ours["scaler"], epoch=1, step=2,
                    config={**ours["config"], "method": "equiav"}, rng=ours["rng"], extra={})
    proc = _avssl("train", str(PRESET), *_overrides(synth), "train.epochs=2", "--out", str(tmp_path / "r"),
                  "--resume", str(other))
    _one_line_error(proc, str(other), "equiav")


def test_eval_data_is_a_folder_is_one_line(synth, tiny_run, tmp_path):
    proc = _avssl("eval", str(tiny_run / "last.pt"), "--data", str(tmp_path), "--out", str(tmp_path / "e"))
    _one_line_error(proc, str(tmp_path))


def test_disk_full_and_missing_files_are_one_line(monkeypatch, capsys):
    import errno

    import avssl.cli as cli

    make = cli.build_parser
    raised: list[BaseException] = []

    def parser_raising():
        p = make()

        def boom(args):
            raise raised[0]

        p._subparsers._group_actions[0].choices["train"].set_defaults(_run=boom)
        return p

    monkeypatch.setattr(cli, "build_parser", parser_raising)
    monkeypatch.delenv("AVSSL_DEBUG", raising=False)
    cases = [(OSError(errno.ENOSPC, "No space left on device", "runs/x/last.pt"),
              "avssl: runs/x/last.pt: disk full while writing runs/x/last.pt (No space left on device)"),
             (FileNotFoundError(errno.ENOENT, "No such file or directory", "data/m.jsonl"),
              "avssl: data/m.jsonl: No such file or directory"),
             (PermissionError(errno.EACCES, "Permission denied", "/root/runs"), "avssl: /root/runs: Permission denied"),
             (IsADirectoryError(errno.EISDIR, "Is a directory", "data"), "avssl: data: Is a directory")]
    for exc, line in cases:
        raised[:] = [exc]
        assert cli.main(["train", "synthetic/ssltie"]) == 2
        err = capsys.readouterr().err
        assert err.strip() == line, err
    raised[:] = [KeyError("a bug")]  # not a user error: the traceback stays
    with pytest.raises(KeyError):
        cli.main(["train", "synthetic/ssltie"])
    monkeypatch.setenv("AVSSL_DEBUG", "1")
    raised[:] = [cases[0][0]]
    with pytest.raises(OSError):
        cli.main(["train", "synthetic/ssltie"])


def test_eval_reads_a_shard_index_as_the_folder_layout(synth, tiny_run, tmp_path, capsys):
    """`avssl eval --data OUT/shards.json` scores the test split exactly as the folder layout
    prepared from the same manifest: the same scores, heatmaps and contact sheet."""
    from avssl.data.prepare import prepare
    from avssl.data.prepare_shards import prepare_shards

    prepare(synth / "manifest.jsonl", tmp_path / "folder", workers=2)
    prepare_shards(synth / "manifest.jsonl", tmp_path / "shards", shard_size=5, workers=2)
    gt = str(synth / "annotations" / "vggss.json")
    scores, maps = [], []
    for name, data in (("f", tmp_path / "folder" / "manifest.jsonl"), ("s", tmp_path / "shards" / "shards.json")):
        assert main(["eval", str(tiny_run / "last.pt"), "--data", str(data), "--gt", gt, "--out",
                     str(tmp_path / name), "--workers", "2", "--audio-control", "both"]) == 0
        saved = json.loads((tmp_path / name / "scores.json").read_text())
        assert (tmp_path / name / "best_worst.png").stat().st_size > 0
        scores.append({k: v for k, v in saved.items() if k not in ("data", "contact_sheet")})
        for kind in ("", "_swap", "_silent"):  # the audio controls too: same partners, same maps
            with np.load(tmp_path / name / f"heatmaps{kind}.npz") as z:
                maps.append({k: z[k] for k in z.files})
    capsys.readouterr()
    assert scores[0] == scores[1] and scores[0]["n_clips"] == 4
    assert set(scores[0]["audio_control"]) == {"swap", "silent"}
    maps = maps[:3], maps[3:]
    assert all(a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a) for a, b in zip(*maps, strict=True))
    maps = [maps[0][0], maps[1][0]]
    assert maps[0].keys() == maps[1].keys() and all(np.array_equal(maps[0][k], maps[1][k]) for k in maps[0])


def test_eval_audio_control_plays_the_partners_recording(synth, tiny_run, tmp_path, capsys):
    """--audio-control swap scores each frame with its partner's recording: the same maps as a normal
    evaluation of a manifest whose audio fields were permuted by hand; silent gives the maps of
    zeros; scores.json holds both controls and the audio dependence."""
    from avssl.data.controls import swap_partners
    from avssl.data.manifest import read_manifest, write_manifest
    from avssl.data.prepare import prepare

    prepare(synth / "manifest.jsonl", tmp_path / "folder", workers=2)
    gt = str(synth / "annotations" / "vggss.json")
    m = tmp_path / "folder" / "manifest.jsonl"
    assert main(["eval", str(tiny_run / "last.pt"), "--data", str(m), "--gt", gt, "--out", str(tmp_path / "c"),
                 "--workers", "0", "--audio-control", "both"]) == 0
    capsys.readouterr()
    saved = json.loads((tmp_path / "c" / "scores.json").read_text())
    swap, dep = saved["audio_control"]["swap"], saved["audio_dependence"]
    assert swap["control"] == "swap" and "pointing_accuracy" in swap
    assert "a2v_class" in swap["retrieval"] and saved["audio_control"]["silent"]["control"] == "silent"
    for name in ("swap", "silent"):
        assert -1 <= dep[name]["map_correlation"] <= 1 and 0 <= dep[name]["peak_moved"] <= 1
        assert dep[name]["drop"]["pointing_accuracy"] == pytest.approx(
            saved["pointing_accuracy"] - saved["audio_control"][name]["pointing_accuracy"])

    test = read_manifest(m, split="test")
    partners = swap_partners([r.labels[0] for r in test])
    same = sum(test[j].labels[0] == r.labels[0] for r, j in zip(test, partners, strict=True))
    assert swap["same_class_pairs"] == same < len(test)  # 4 test clips, a class holds more than half
    audio = [r.audio for r in test]
    for r, j in zip(test, partners.tolist(), strict=True):
        r.audio = audio[j]
    write_manifest(tmp_path / "permuted.jsonl", test)
    assert main(["eval", str(tiny_run / "last.pt"), "--data", str(tmp_path / "permuted.jsonl"), "--gt", gt,
                 "--out", str(tmp_path / "p"), "--workers", "0", "--no-retrieval"]) == 0
    capsys.readouterr()
    with np.load(tmp_path / "c" / "heatmaps_swap.npz") as a, np.load(tmp_path / "p" / "heatmaps.npz") as b:
        assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)
    with np.load(tmp_path / "c" / "heatmaps.npz") as own, np.load(tmp_path / "c" / "heatmaps_silent.npz") as sil:
        assert not all(np.array_equal(own[k], sil[k]) for k in own.files)
