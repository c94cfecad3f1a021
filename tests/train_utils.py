"""Shared test helpers for training runs (imported as ``from train_utils import ...``, like golden_utils)."""
from __future__ import annotations

from pathlib import Path

from avssl.config import load_config
from avssl.train_config import TrainConfig

PRESET = Path(__file__).resolve().parents[1] / "configs" / "synthetic" / "ssltie.yaml"


def tiny_cfg(synth, out_dir, *extra: str) -> TrainConfig:
    return load_config(TrainConfig, [], tiny_overrides(synth, out_dir, *extra))


def tiny_overrides(synth, out_dir, *extra: str) -> list[str]:
    """The key=value overrides of :func:`tiny_cfg` (a tiny SSL-TIE on ``synth``), e.g. for ``avssl train``."""
    m = synth / "manifest.jsonl"
    return [
        f"data.train_manifest={m}", f"data.val_manifest={m}",
        f"data.annotations={synth / 'annotations' / 'vggss.json'}",
        "data.seconds=1", "data.num_workers=0", "data.cache_in_memory=true",
        "ssltie.width=8", "ssltie.image_size=64", "ssltie.heatmap_size=4",
        "train.batch_size=4", "train.epochs=2", f"train.out_dir={out_dir}", "train.log_every=1",
        "train.progress=false", "train.tensorboard=false", "train.select_on=adaptive_ciou_at_0.5", *extra]
