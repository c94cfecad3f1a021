"""Shared fixtures: golden vectors, tiny media files."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN_DIR = Path(os.environ.get("AVSSL_GOLDEN", REPO.parent / "shared" / "golden"))


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The authors'-code test vectors (``../shared/golden``); skip where absent (a user's clone)."""
    if not GOLDEN_DIR.is_dir():
        pytest.skip(f"golden vectors not found at {GOLDEN_DIR} (set AVSSL_GOLDEN); CI always has them")
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def golden(golden_dir):
    """Load a golden ``.npz`` by file name: ``golden("ssltie_frontend.npz")``."""
    cache: dict[str, dict] = {}

    def load(name: str):
        if name not in cache:
            with np.load(golden_dir / name) as z:
                cache[name] = {k: z[k] for k in z.files}
        return cache[name]

    return load


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for modules of tiny-model training tests: tiny convolutions run faster
    and far steadier on a shared 2-core machine. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Path:
    """A tiny synthetic data set (16 clips, 64 px, 1 s, 3 classes; splits 8/4/4) shared by the training tests."""
    from avssl.data.synthetic import SynthConfig, generate

    out = tmp_path_factory.mktemp("tiny_synth")
    generate(out, clips=16, seed=0,
             config=SynthConfig(size=64, duration=1.0, classes=3, workers=2, split=(0.5, 0.25, 0.25)))
    return out
