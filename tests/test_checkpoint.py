"""avssl.checkpoint: atomic writes, clear errors, RNG round trip."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from avssl.checkpoint import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    strip_prefixes,
    unwrap_state_dict,
)


def test_save_load_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    p = save_checkpoint(tmp_path / "ckpt.pt", model=model.state_dict(), step=7, config={"a": 1})
    ckpt = load_checkpoint(p)
    assert ckpt["step"] == 7 and ckpt["config"] == {"a": 1}
    assert torch.equal(ckpt["model"]["weight"], model.weight)
    assert [f.name for f in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind


def test_failed_write_keeps_the_previous_checkpoint(tmp_path):
    p = save_checkpoint(tmp_path / "ckpt.pt", model={"w": torch.ones(1)}, step=1)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(p, model={"w": torch.zeros(1)}, step=2, extra=Unpicklable())
    assert load_checkpoint(p)["step"] == 1
    assert [f.name for f in tmp_path.iterdir()] == ["ckpt.pt"]


@pytest.mark.parametrize(
    "content, message",
    [(b"", "empty file"), (b"not a checkpoint", "unreadable")],
)
def test_broken_files_raise_precise_errors(tmp_path, content, message):
    p = tmp_path / "bad.pt"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as e:
        load_checkpoint(p)
    assert str(p) in str(e.value)


def test_foreign_and_missing_files(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="avssl convert"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "missing.pt")


def test_rng_state_round_trip():
    state = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_unwrap_and_strip():
    sd = {"module.w": torch.ones(1)}
    assert strip_prefixes(unwrap_state_dict({"model": {"state_dict": sd}})) == {"w": sd["module.w"]}
    with pytest.raises(CheckpointError, match="no state dict"):
        unwrap_state_dict({"epoch": 3})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda")])
def test_loading_onto_cuda_without_cuda_names_the_device_not_the_file(tmp_path, device):
    p = save_checkpoint(tmp_path / "ckpt.pt", model={"w": torch.ones(1)}, step=1)
    with pytest.raises(CheckpointError, match="CUDA requested but not available") as e:
        load_checkpoint(p, map_location=device)
    assert "unreadable" not in str(e.value) and "--device cpu" in str(e.value) and str(p) in str(e.value)
    assert "\n" not in str(e.value)
