"""Untrusted checkpoints never run code: every avssl entry point that reads a checkpoint uses
``weights_only`` loading (avssl.checkpoint.safe_load) and refuses a file holding other
Python objects with a one-line error, while avssl's own and the authors' files still load."""
from __future__ import annotations

import argparse
import os
import pathlib
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from avssl.checkpoint import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    safe_load,
    save_checkpoint,
    set_rng_state,
)

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "configs" / "synthetic" / "ssltie.yaml"
REFUSED = "refused to load"


class _Touch:
    """Unpickling this creates ``marker`` (pathlib.Path.touch): stands for arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


class _Open:
    """Unpickling this creates ``marker`` through ``open(marker, "w")``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


PAYLOADS = {"touch": _Touch, "open": _Open}


def _evil_files(tmp_path: Path, kind: str = "touch") -> tuple[Path, Path, Path]:
    """(avssl-format file, official-format file, marker): both would create ``marker`` when unpickled."""
    marker = tmp_path / f"pwned_{kind}"
    payload = PAYLOADS[kind](marker)
    ours = tmp_path / f"evil_avssl_{kind}.pt"
    torch.save({"format": "avssl-checkpoint", "version": 1, "model": {"w": torch.ones(1)}, "step": 0,
                "epoch": 0, "config": {"method": "ssltie"}, "extra": {"x": payload}}, ours)
    official = tmp_path / f"evil_official_{kind}.pth.tar"
    torch.save({"epoch": 3, "args": argparse.Namespace(lr=1e-4, hook=payload),
                "model": {"module.w": torch.ones(1)}}, official)
    return ours, official, marker


def _refused(fn, path: Path, marker: Path) -> str:
    """Run ``fn``; assert it ran no code from the file (no ``marker``) and raised a one-line
    CheckpointError naming ``path``; returns the message."""
    try:
        fn()
    except CheckpointError as e:
        err = str(e)
    else:
        err = None
    assert not marker.exists(), "loading the file ran code from it"
    assert err is not None, "the file was loaded instead of refused"
    assert "\n" not in err
    _check_refusal(err, path)
    return err


def _check_refusal(err: str, path: Path) -> None:
    assert REFUSED in err and str(path) in err, err
    assert "never unpickles arbitrary code" in err


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "avssl"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "avssl"]
    env = dict(os.environ)
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run([*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _assert_one_line_cli_error(proc: subprocess.CompletedProcess, path: Path, marker: Path) -> None:
    assert not marker.exists(), "loading the file ran code from it"
    assert proc.returncode != 0, proc
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    refused = [ln for ln in lines if REFUSED in ln]
    assert len(refused) == 1, proc.stderr
    _check_refusal(refused[0], path)


# ---------------------------------------------------------------- in-process entry points


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_safe_load_refuses_code(tmp_path, kind):
    ours, official, marker = _evil_files(tmp_path, kind)
    for path in (ours, official):
        _refused(lambda p=path: safe_load(p), path, marker)


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_load_checkpoint_refuses_code(tmp_path, kind):
    """The loader of `avssl eval`, `avssl localize`, `avssl train --resume` and registry.load_method."""
    ours, _, marker = _evil_files(tmp_path, kind)
    _refused(lambda: load_checkpoint(ours), ours, marker)


def test_load_method_refuses_code(tmp_path):
    from avssl.registry import load_method

    ours, _, marker = _evil_files(tmp_path)
    _refused(lambda: load_method(ours), ours, marker)


@pytest.mark.parametrize("source", ["ssltie-official", "equiav-official"])
def test_convert_refuses_code(tmp_path, source, caplog):
    from avssl.cli import main
    from avssl.commands.convert import convert

    _, official, marker = _evil_files(tmp_path)
    out = tmp_path / "out.pt"
    _refused(lambda: convert(source, official, out, preset="tiny"), official, marker)
    assert main(["convert", "--from", source, str(official), str(out), "--preset", "tiny"]) == 2
    assert REFUSED in caplog.text
    assert not marker.exists() and not out.exists()


def test_equiav_ft_init_checkpoint_refuses_code(tmp_path):
    from avssl.methods.equiav.finetune import load_init_checkpoint

    ours, official, marker = _evil_files(tmp_path)
    for path in (ours, official):  # refused before the model is touched
        _refused(lambda p=path: load_init_checkpoint(object(), p), path, marker)


def test_equiav_mae_init_refuses_code(tmp_path):
    from avssl.methods.equiav.model import load_mae_init

    _, official, marker = _evil_files(tmp_path)
    _refused(lambda: load_mae_init(object(), official), official, marker)


# ---------------------------------------------------------------- the command line


def test_cli_eval_refuses_code(tmp_path):
    ours, _, marker = _evil_files(tmp_path)
    proc = _cli("eval", str(ours), "--data", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "ev"), cwd=tmp_path)
    _assert_one_line_cli_error(proc, ours, marker)
    assert not marker.exists()


def test_cli_localize_refuses_code(tmp_path):
    ours, _, marker = _evil_files(tmp_path, "open")
    proc = _cli("localize", str(tmp_path / "clip.mp4"), "--checkpoint", str(ours), "--out", str(tmp_path / "loc"),
                cwd=tmp_path)
    _assert_one_line_cli_error(proc, ours, marker)
    assert not marker.exists()


@pytest.mark.parametrize("source", ["ssltie-official", "equiav-official"])
def test_cli_convert_refuses_code(tmp_path, source):
    _, official, marker = _evil_files(tmp_path)
    out = tmp_path / "out.pt"
    proc = _cli("convert", "--from", source, str(official), str(out), "--preset", "tiny", cwd=tmp_path)
    _assert_one_line_cli_error(proc, official, marker)
    assert not marker.exists() and not out.exists()


def test_cli_train_resume_refuses_code(tmp_path):
    ours, _, marker = _evil_files(tmp_path)
    proc = _cli("train", str(PRESET), "--out", str(tmp_path / "run"), "--resume", str(ours),
                "train.device=cpu", cwd=tmp_path)
    _assert_one_line_cli_error(proc, ours, marker)
    assert not marker.exists()


# ---------------------------------------------------------------- what must still load


def test_avssl_checkpoint_still_loads_and_resumes_rng(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    state = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    p = save_checkpoint(tmp_path / "last.pt", model=model.state_dict(), optimizer=opt.state_dict(),
                        scheduler=sched.state_dict(), scaler=scaler.state_dict(), step=5, epoch=1,
                        config={"method": "ssltie"}, rng=state,
                        extra={"best": {"value": np.float64(0.25), "epoch": 1}, "classes": ["a", "b"]})
    ckpt = load_checkpoint(p)
    assert ckpt["step"] == 5 and ckpt["extra"]["best"]["value"] == 0.25
    assert torch.equal(ckpt["model"]["weight"], model.weight)
    opt.load_state_dict(ckpt["optimizer"])
    set_rng_state(ckpt["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_older_checkpoint_with_numpy_rng_still_loads(tmp_path):
    """Checkpoints written before NumPy values were stored as tensors (np.random.get_state())."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    p = tmp_path / "old.pt"
    torch.save({"format": "avssl-checkpoint", "version": 1, "model": {"w": torch.ones(1)}, "step": 1, "epoch": 1,
                "rng": state, "extra": {"best": {"value": np.float64(0.5)}}}, p)
    ckpt = load_checkpoint(p)
    assert ckpt["extra"]["best"]["value"] == 0.5
    set_rng_state(ckpt["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_official_checkpoint_with_namespace_still_loads(tmp_path):
    from avssl.commands.convert import _load

    p = tmp_path / "official.pth.tar"
    torch.save({"epoch": 3, "args": argparse.Namespace(lr=1e-4, arch="resnet18", gpus=[0, 1]),
                "model": {"module.w": torch.ones(2)}}, p)
    obj = _load(p)
    assert obj["args"].lr == 1e-4 and obj["args"].gpus == [0, 1]
    assert torch.equal(obj["model"]["module.w"], torch.ones(2))


def test_other_objects_are_refused_even_harmless_ones(tmp_path):
    p = tmp_path / "path.pt"
    torch.save({"model": {}, "where": pathlib.PurePosixPath("/x")}, p)
    with pytest.raises(CheckpointError, match=REFUSED):
        safe_load(p)


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_plain_pickle_files_are_refused_too(tmp_path, protocol):
    """A file written with pickle.dump (not torch.save), any protocol: no code runs."""
    marker = tmp_path / "pwned"
    p = tmp_path / "raw.pkl"
    with open(p, "wb") as f:
        pickle.dump({"format": "avssl-checkpoint", "model": {}, "x": _Touch(marker)}, f, protocol=protocol)
    with pytest.raises(CheckpointError, match="never unpickles arbitrary code") as e:
        load_checkpoint(p)
    assert not marker.exists() and str(p) in str(e.value) and "\n" not in str(e.value)
