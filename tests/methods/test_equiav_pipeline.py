"""EquiAV pre-training data pipeline: transform, shards, train module, inference, presets, default sampler."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from avssl.augment.apply import apply_audio, apply_visual
from avssl.augment.params import identity_audio_params, identity_visual_params
from avssl.augment.recipes import EvalTransform
from avssl.config import load_config
from avssl.data.audio import equiav_fbank_batch
from avssl.methods.equiav.model import EquiAV, EquiAVConfig
from avssl.methods.equiav.pipeline import (
    INFER_SEED,
    EquiAVBatchTransform,
    EquiAVTrainModule,
    equiav_dataset,
    equiav_infer,
)
from avssl.train_config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

SR = 16000
# T = 48 frames (7920 samples), F = 32 bins, 32 px frames: every op of the pipeline, tiny
CFG = EquiAVConfig(embed_dim=32, depth=1, num_heads=2, img_size=32, audio_length=48, num_mel_bins=32,
                   aug_emb_dim=16, cross_attn_heads=2, cross_attn_head_dim=8, proj_hidden_dim=32,
                   inter_out_dim=16, intra_out_dim=16, num_centroid=3)
TRAIN_KEYS = {"a", "v", "a_aug", "v_aug", "t_a", "t_v", "t_a_list", "t_v_list"}


def _batch(b: int = 4, size: int = 32, n: int = 7920, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    num = torch.tensor([n, n - 1000, n - 3000, n][:b] + [n] * max(0, b - 4))
    wave = torch.randn(b, n, generator=g) * 0.1
    wave[torch.arange(n)[None] >= num[:, None]] = 0.0
    return {"id": [f"c{i}" for i in range(b)], "sample_rate": SR, "num_samples": num, "wave": wave,
            "image": torch.randint(0, 256, (b, 3, size, size), generator=g, dtype=torch.uint8)}


def _rows(batch: dict, sl: slice) -> dict:
    return {k: (v[sl] if torch.is_tensor(v) or isinstance(v, list) else v) for k, v in batch.items()}


def test_eval_transform_clean_and_deterministic():
    batch = _batch()
    tr = EquiAVBatchTransform(CFG)
    out = tr(batch)
    assert set(out) == {"a", "v"}
    assert out["a"].shape == (4, 3, 48, 32) and out["v"].shape == (4, 3, 32, 32)
    assert out["a"].dtype == out["v"].dtype == torch.float32
    fb = equiav_fbank_batch(batch["wave"], batch["num_samples"], SR, 48, (-4.346, 4.332), 32)
    for c in range(3):  # three identical channels of the AudioSet-normalised fbank
        torch.testing.assert_close(out["a"][:, c], fb, rtol=0, atol=0)
    torch.testing.assert_close(out["v"], EvalTransform(32)(batch["image"]), rtol=0, atol=0)
    again = tr(batch, torch.Generator().manual_seed(3))
    assert all(torch.equal(out[k], again[k]) for k in out)
    vgg = EquiAVBatchTransform(dataclasses.replace(CFG, fbank_stats=(-4.956, 4.486)))(batch)["a"]
    torch.testing.assert_close(vgg[:, 0] * 4.486 - 4.956, out["a"][:, 0] * 4.332 - 4.346, atol=1e-4, rtol=0)


def test_train_transform_shapes_and_reproducible():
    batch = _batch()
    tr = EquiAVBatchTransform(CFG)
    o1 = tr(batch, torch.Generator().manual_seed(1), train=True)
    o2 = tr(batch, torch.Generator().manual_seed(1), train=True)
    o3 = tr(batch, torch.Generator().manual_seed(2), train=True)
    assert set(o1) == TRAIN_KEYS
    shapes = {"a": (4, 3, 48, 32), "a_aug": (4, 3, 48, 32), "v": (4, 3, 32, 32), "v_aug": (4, 3, 32, 32),
              "t_a": (4, 24), "t_v": (4, 18), "t_a_list": (4, 3, 24), "t_v_list": (4, 3, 18)}
    assert {k: tuple(v.shape) for k, v in o1.items()} == shapes
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in o1.values())
    assert all(torch.equal(o1[k], o2[k]) for k in TRAIN_KEYS)
    assert not torch.equal(o1["t_a"], o3["t_a"]) and not torch.equal(o1["a_aug"], o3["a_aug"])
    # the clean audio is a circular time roll of the clean fbank, one shift per clip, not all zero
    clean = tr(batch)["a"]
    shifts = []
    for i in range(4):
        match = [s for s in range(48) if torch.equal(torch.roll(clean[i], s, dims=1), o1["a"][i])]
        assert match, f"row {i} is not a time roll of the clean fbank"
        shifts.append(match[0])
    assert any(s != 0 for s in shifts)
    assert torch.equal(o1["v"], tr(batch)["v"])  # the clean frame is not augmented
    # no centroid: no lists; extended visual vectors: 21-d
    cfg = dataclasses.replace(CFG, centroid=False, visual_extended=True, aug_dim_v=21)
    o4 = EquiAVBatchTransform(cfg)(batch, torch.Generator().manual_seed(1), train=True)
    assert "t_a_list" not in o4 and o4["t_v"].shape == (4, 21)


def test_shards_concatenate_to_the_one_process_batch():
    batch = _batch()
    tr = EquiAVBatchTransform(CFG)
    full = tr(batch, torch.Generator().manual_seed(7), train=True, shard=(0, 1))
    parts = [tr(_rows(batch, slice(2 * r, 2 * r + 2)), torch.Generator().manual_seed(7), train=True,
                shard=(r, 2)) for r in range(2)]
    for k in TRAIN_KEYS:
        cat = torch.cat([p[k] for p in parts])
        if k.startswith("t_"):
            assert torch.equal(cat, full[k]), k
        else:  # the fbank of 2 vs 4 rows may differ in the last float bit
            torch.testing.assert_close(cat, full[k], rtol=1e-5, atol=1e-5, msg=k)
    assert not torch.equal(parts[0]["t_a"], parts[1]["t_a"])  # the ranks draw different rows


def _full_batch(b: int = 4) -> dict:
    """A batch with original frames of mixed sizes on a zero canvas (as collate builds it)."""
    batch = _batch(b)
    g = torch.Generator().manual_seed(5)
    hw = torch.tensor([[40, 64], [32, 32], [48, 36], [30, 50]][:b])
    full = torch.zeros(b, 3, 48, 64, dtype=torch.uint8)
    for i, (h, w) in enumerate(hw.tolist()):
        full[i, :, :h, :w] = torch.randint(1, 256, (3, h, w), generator=g, dtype=torch.uint8)
    return {**batch, "full": full, "full_hw": hw}


def test_original_frame_crops_follow_each_frames_size_and_shard():
    """``data.train_crop=original``: the augmented view crops each clip's own frame (vectors
    normalised by its size, applied on it), and shards still concatenate to one process's batch."""
    batch = _full_batch()
    tr = EquiAVBatchTransform(CFG)
    out = tr(batch, torch.Generator().manual_seed(7), train=True)
    assert out["v_aug"].shape == (4, 3, 32, 32) and torch.isfinite(out["v_aug"]).all()
    expect = apply_visual(batch["full"], out["t_v"], out_size=32, sizes=batch["full_hw"], antialias=True)
    torch.testing.assert_close(out["v_aug"], expect)
    # each row's crop vector is the draw for that frame's own size
    from avssl.augment.params import sample_visual_params
    for i, (h, w) in enumerate(batch["full_hw"].tolist()):
        g = torch.Generator().manual_seed(7)
        torch.randint(-48, 48, (4,), generator=g)
        from avssl.augment.params import sample_audio_params
        sample_audio_params(4, g, 48, 32, original_bugs=CFG.aug_original_bugs)
        alone = sample_visual_params(4, g, h, w)
        assert torch.equal(out["t_v"][i], alone[i]), i
    parts = [tr(_rows(batch, slice(2 * r, 2 * r + 2)), torch.Generator().manual_seed(7), train=True,
                shard=(r, 2)) for r in range(2)]
    for k in ("t_v", "t_v_list", "t_a"):
        assert torch.equal(torch.cat([p[k] for p in parts]), out[k]), k
    torch.testing.assert_close(torch.cat([p["v_aug"] for p in parts]), out["v_aug"])
    # the clean view is still the loader's square
    assert torch.equal(out["v"], tr(batch)["v"])


def test_identity_vectors_give_the_clean_views():
    batch = _batch()
    tr = EquiAVBatchTransform(CFG)
    a, v = tr.clean(batch)
    for bugs in (True, False):
        assert torch.equal(apply_audio(a, identity_audio_params(4), bugs), a)
    torch.testing.assert_close(apply_visual(batch["image"], identity_visual_params(4), out_size=32), v,
                               atol=1e-6, rtol=0)


def test_train_module_loss_backward():
    torch.manual_seed(0)
    model = EquiAV(CFG)
    inputs = EquiAVBatchTransform(CFG)(_batch(), torch.Generator().manual_seed(0), train=True)
    module = EquiAVTrainModule(model)
    assert {k[len("model."):] for k in module.state_dict()} == set(model.state_dict())
    losses = module(inputs, generator=torch.Generator().manual_seed(0))
    assert {"loss", "loss/inter", "loss/intra_a", "loss/intra_v"} <= set(losses)
    torch.testing.assert_close(losses["loss"], model.loss(**inputs)["loss"])
    losses["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for enc in (model.audio_encoder, model.visual_encoder):  # fixed sin-cos position embeddings
        assert not enc.pos_embed.requires_grad and enc.pos_embed.grad is None
    with pytest.raises(KeyError, match="train=True"):
        module({"a": inputs["a"], "v": inputs["v"]})


@pytest.mark.parametrize("centroid", [True, False])
def test_infer_equals_embed_and_localise(centroid):
    torch.manual_seed(0)
    model = EquiAV(dataclasses.replace(CFG, centroid=centroid)).eval()
    inputs = EquiAVBatchTransform(CFG)(_batch())
    out = equiav_infer(model, inputs)
    with torch.no_grad():
        za, zv = model.embed(inputs["a"], inputs["v"], generator=torch.Generator().manual_seed(INFER_SEED))
        heat = model.localise(inputs["a"], inputs["v"], generator=torch.Generator().manual_seed(INFER_SEED))
    assert out["heatmap"].shape == (4, 2, 2) and out["audio"].shape == out["visual"].shape == (4, 16)
    torch.testing.assert_close(out["audio"], za, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["visual"], zv, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["heatmap"], heat, rtol=1e-5, atol=1e-6)
    again = equiav_infer(model, inputs)
    assert all(torch.equal(out[k], again[k]) for k in out)


def test_default_param_sampler_follows_the_config():
    cfg = dataclasses.replace(CFG, visual_extended=True, aug_dim_v=21)
    model = EquiAV(cfg)
    t_a, t_v = model.param_sampler(3, 5, None, torch.device("cpu"))
    assert t_a.shape == (3, 5, 24) and t_v.shape == (3, 5, 21)
    again = model.param_sampler(3, 5, None, torch.device("cpu"))  # seeded: the same without a generator
    assert torch.equal(t_a, again[0]) and torch.equal(t_v, again[1])
    fresh = model.param_sampler(3, 5, torch.Generator().manual_seed(9), "cpu")
    assert not torch.equal(t_a, fresh[0])
    # the vectors decode inside the configured (T, F) = (48, 32) plane, for both crop encodings
    for bugs in (True, False):
        m = EquiAV(dataclasses.replace(CFG, aug_original_bugs=bugs))
        ta, _ = m.param_sampler(64, 1, torch.Generator().manual_seed(0), "cpu")
        apply_audio(torch.randn(64, 3, 48, 32), ta[:, 0], bugs)  # raises on an out-of-plane crop
        assert float(ta[:, 0, 2].max()) <= 48 and float(ta[:, 0, 4].max()) <= 32  # mask ends
    with torch.no_grad():
        za, _ = model.embed(torch.randn(2, 3, 48, 32), torch.randn(2, 3, 32, 32))
    assert za.shape == (2, 16)
    with pytest.raises(ValueError, match="aug_dim_v=21"):
        EquiAVConfig(visual_extended=True)


def test_presets_load_with_the_claimed_sizes():
    a = load_config(TrainConfig, ["equiav/audioset"], [])
    assert a.method == "equiav"
    e = a.equiav
    assert (e.embed_dim, e.depth, e.num_heads, e.img_size, e.audio_length, e.num_mel_bins, e.patch_size,
            e.num_centroid, e.centroid) == (768, 12, 12, 224, 1024, 128, 16, 16, True)
    assert e.fbank_stats == (-4.346, 4.332)
    o = a.optim
    assert (o.name, o.lr, o.betas, o.weight_decay, o.schedule, o.warmup_epochs, o.min_lr) == (
        "adamw", 1e-4, (0.9, 0.95), 1e-5, "cosine", 2, 1e-6)
    t = a.train
    assert (t.epochs, t.batch_size, t.amp, t.grad_clip, t.select_on) == (20, 16, True, 0.01, "a2v_instance_R1")
    # each file's own rate, as the original; 10.255 s give 1024 frames at the usual rates
    assert a.data.sample_rate is None and a.data.train_frame == "random" and a.data.frame_index == 5
    for sr in (16000, 44100, 48000):
        assert 1 + (int(a.data.seconds * sr) - int(sr * 0.025)) // int(sr * 0.01) >= 1024
    v = load_config(TrainConfig, ["equiav/vggsound"], [])
    assert v.equiav.fbank_stats == (-4.956, 4.486) and v.equiav.embed_dim == 768
    s = load_config(TrainConfig, ["synthetic/equiav"], [])
    model = EquiAV(s.equiav)
    assert model.visual_encoder.grid == (s.equiav.img_size // s.equiav.patch_size,) * 2
    assert 1 + (int(s.data.seconds * 16000) - 400) // 160 >= s.equiav.audio_length
    assert s.train.select_on == "a2v_class_R1"


def test_dataset_reads_zero_padded_16k(tiny_synth):
    from avssl.data.manifest import read_manifest

    cfg = load_config(TrainConfig, ["synthetic/equiav"], ["data.seconds=1.5", "data.cache_in_memory=false"])
    ds = equiav_dataset(read_manifest(tiny_synth / "manifest.jsonl", split="train")[:2], cfg, train=True)
    s = ds[0]
    assert s["sample_rate"] == 16000 and s["wave"].shape == (24000,) and s["num_samples"] == 16000
    assert torch.all(s["wave"][16000:] == 0) and s["image"].shape == (3, cfg.equiav.img_size, cfg.equiav.img_size)


def test_fit_trains_and_saves_the_bare_model(tiny_synth, tmp_path):
    """End to end through avssl.engine.train.fit on the tiny synthetic set (8 train clips)."""
    from avssl.checkpoint import load_checkpoint
    from avssl.engine.train import fit
    from avssl.registry import load_method

    m = tiny_synth / "manifest.jsonl"
    sizes = {"embed_dim": 32, "depth": 1, "num_heads": 2, "img_size": 32, "audio_length": 48, "num_mel_bins": 32,
             "aug_emb_dim": 16, "cross_attn_heads": 2, "cross_attn_head_dim": 8, "proj_hidden_dim": 32,
             "inter_out_dim": 16, "intra_out_dim": 16, "num_centroid": 3}
    cfg = load_config(TrainConfig, ["synthetic/equiav"], [
        f"data.train_manifest={m}", f"data.val_manifest={m}", f"data.test_manifest={m}",
        f"data.annotations={tiny_synth / 'annotations' / 'vggss.json'}", "data.seconds=0.5",
        "data.load_size=null", "data.num_workers=0", "train.batch_size=4", "train.epochs=2",
        "train.log_every=1", "train.progress=false", "train.tensorboard=false", f"train.out_dir={tmp_path}",
        *[f"equiav.{k}={v}" for k, v in sizes.items()]])
    summary = fit(cfg)
    assert summary["step"] == 4 and torch.isfinite(torch.tensor(summary["final_loss"]))
    last = summary["history"][-1]
    assert "val/a2v_instance_R1" in last and 0 <= last["val/ciou_at_0.5"] <= 1
    assert summary["best"]["metric"] == "a2v_class_R1" and (tmp_path / "best.pt").is_file()
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert not any(k.startswith("model.") for k in ckpt["model"])  # the bare model, not the wrapper
    model, _ = load_method(tmp_path / "last.pt")
    batch = _batch(2, 32)
    out = equiav_infer(model, EquiAVBatchTransform(model.cfg)(batch))  # default sampler: loaded models embed
    assert out["heatmap"].shape == (2, 4, 4)  # patch 8 (preset) on 32 px and torch.isfinite(out["audio"]).all()
