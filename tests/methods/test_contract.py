"""The engine's contract, checked on EVERY registered method (avssl.registry.METHODS).

A method is one folder plus one registry row: this test is what a new method must pass. For each
row it builds the run config from the row's packaged ``preset`` shrunk by its ``tiny`` overrides,
reads a batch through the method's data set and batched transform, takes one training step
through the training module (a finite scalar ``loss``, finite gradients that reach the
parameters), runs its evaluation (``infer``'s heatmap / audio / visual shapes, or the
``evaluate`` metrics), and saves and reloads the model from the checkpoint alone.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

from avssl.checkpoint import save_checkpoint
from avssl.config import load_config, to_dict
from avssl.data.manifest import read_manifest
from avssl.registry import METHODS, build_method, load_method
from avssl.train_config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def _config(name: str, synth, out) -> TrainConfig:
    spec = METHODS[name]
    m = synth / "manifest.jsonl"
    return load_config(TrainConfig, [spec.preset], [
        f"data.train_manifest={m}", f"data.val_manifest={m}", f"data.test_manifest={m}",
        f"data.annotations={synth / 'annotations' / 'vggss.json'}", "data.num_workers=0",
        "data.cache_in_memory=false", *spec.tiny, "train.batch_size=4", f"train.out_dir={out}"])


def _every_class(records, n: int = 6):
    """``n`` records, round-robin over the labels, so every class of the tiny set is present."""
    by_label: dict[str, list] = {}
    for r in records:
        by_label.setdefault(r.labels[0], []).append(r)
    rows = [r for group in zip(*by_label.values(), strict=False) for r in group][:n]
    assert len({r.labels[0] for r in rows}) == len(by_label) == 3
    return rows


def _batch(pipe, cfg, records, train: bool):
    ds = pipe.dataset(records, cfg, train=train)
    return ds, pipe.collate([ds[i] for i in range(len(records))])


def _evaluation(pipe, model, cfg, records) -> dict:
    """infer's outputs for the val batch, or the whole-set ``evaluate`` metrics."""
    transform = pipe.batch_transform(cfg, CPU)
    ds, batch = _batch(pipe, cfg, records, train=False)
    if pipe.infer is not None:
        return pipe.infer(model.eval(), transform(batch, None, train=False))
    loader = DataLoader(ds, batch_size=2, collate_fn=pipe.collate)
    return pipe.evaluate(model.eval(), loader, transform, CPU, cfg)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_meets_the_engine_contract(name, tiny_synth, tmp_path):
    spec = METHODS[name]
    assert spec.name == name and spec.title and spec.paper
    cfg = _config(name, tiny_synth, tmp_path / "run")
    assert cfg.method == name and isinstance(getattr(cfg, name), spec.config)
    records = _every_class(read_manifest(tiny_synth / "manifest.jsonl"))
    pipe = spec.pipeline
    assert pipe.infer is not None or pipe.evaluate is not None, "a method must be evaluable"

    # one training step through the training module
    torch.manual_seed(0)
    model = build_method(name, getattr(cfg, name))
    assert isinstance(model, spec.model)
    _, batch = _batch(pipe, cfg, records, train=True)
    transform = pipe.batch_transform(cfg, CPU)
    inputs = transform(batch, torch.Generator().manual_seed(1), train=True, shard=(0, 1))
    losses = pipe.train_module(model, cfg).train()(inputs, generator=torch.Generator().manual_seed(2))
    loss = losses["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss), losses
    assert all(torch.isfinite(v).all() for v in losses.values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    model.zero_grad(set_to_none=True)

    # evaluation
    out = _evaluation(pipe, model, cfg, records)
    if pipe.infer is not None:
        b = len(records)
        heat, aud, vis = out["heatmap"], out["audio"], out["visual"]
        assert heat.ndim == 3 and heat.shape[0] == b and min(heat.shape[1:]) >= 1
        assert aud.ndim == 2 and vis.ndim == 2 and aud.shape[0] == vis.shape[0] == b
        assert aud.shape[1] == vis.shape[1]  # one embedding space for retrieval
        assert all(torch.isfinite(t).all() for t in (heat, aud, vis))
        torch.testing.assert_close(aud.norm(dim=1), torch.ones(b))
    else:
        assert out and all(isinstance(v, (int, float)) for v in out.values())

    # save with the run config; reload from the file alone: same weights, same outputs
    path = save_checkpoint(tmp_path / "m.pt", model=model.state_dict(), config=to_dict(cfg), step=1, epoch=1)
    reloaded, ckpt = load_method(path)
    assert type(reloaded) is spec.model and not reloaded.training and ckpt["config"]["method"] == name
    ref = model.state_dict()
    assert reloaded.state_dict().keys() == ref.keys()
    assert all(torch.equal(v, ref[k]) for k, v in reloaded.state_dict().items())
    again = _evaluation(pipe, reloaded, cfg, records)
    for k, v in out.items():
        if isinstance(v, torch.Tensor):
            torch.testing.assert_close(again[k], v)
        elif isinstance(v, float) and math.isnan(v):
            assert math.isnan(again[k]), k
        else:
            assert again[k] == v, k
