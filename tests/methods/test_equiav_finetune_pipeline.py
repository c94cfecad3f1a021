"""EquiAV fine-tuning pipeline: transform (mixup, roll, sharding), loss module, evaluation,
param groups, sample weights, init checkpoints, and one training step per mode."""
from dataclasses import replace

import pytest
import torch

from avssl.checkpoint import CheckpointError, save_checkpoint
from avssl.config import load_config
from avssl.data.audio import equiav_fbank_batch
from avssl.data.labels import read_sample_weights
from avssl.methods.equiav.finetune import EquiAVFinetune, EquiAVFinetuneConfig, EquiAVFTConfig
from avssl.methods.equiav.finetune_pipeline import (
    EquiAVFinetuneTransform,
    finetune_evaluate,
    finetune_param_groups,
    finetune_sample_weights,
    finetune_train_module,
    sample_beta,
)
from avssl.methods.equiav.model import EquiAV, equiav_tiny_config
from avssl.registry import build_method, load_method
from avssl.train_config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

BACKBONE = equiav_tiny_config(img_size=32, audio_length=64, num_mel_bins=32, patch_size=8, depth=1)


def _cfg(**ft_over) -> TrainConfig:
    ft = EquiAVFinetuneConfig(backbone=BACKBONE, ft=EquiAVFTConfig(num_classes=3, proj_out_dim=16, drop_path=0.0),
                              **ft_over)
    return TrainConfig(method="equiav_ft", equiav_ft=ft)


def _batch(b: int = 4, n: int = 11000, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(6000, n + 1, (b,), generator=g)
    lengths[0] = n
    wave = torch.randn(b, n, generator=g) * 0.1 + 0.05
    wave = torch.where(torch.arange(n)[None] < lengths[:, None], wave, 0.0)
    target = torch.eye(3)[torch.arange(b) % 3]
    return {"id": [f"c{i}" for i in range(b)], "wave": wave, "num_samples": lengths,
            "image": torch.randint(0, 256, (b, 3, 40, 40), generator=g, dtype=torch.uint8),
            "target": target, "label": target.argmax(1), "sample_rate": 16000}


def _transform(**kw) -> EquiAVFinetuneTransform:
    args = dict(image_size=32, audio_length=64, num_mel_bins=32, mixup_p=0.5, mixup_alpha=10.0, time_roll=True)
    args.update(kw)
    return EquiAVFinetuneTransform(**args)


def test_eval_transform_shapes_and_fbank():
    batch = _batch()
    out = _transform()(batch, train=False)
    assert out["a"].shape == (4, 3, 64, 32) and out["v"].shape == (4, 3, 32, 32) and out["target"].shape == (4, 3)
    ref = equiav_fbank_batch(batch["wave"], batch["num_samples"], 16000, 64, "audioset", 32)
    torch.testing.assert_close(out["a"][:, 0], ref)
    assert torch.equal(out["a"][:, 0], out["a"][:, 2])


def test_mixup_is_convex_with_drawn_lambda():
    batch = _batch()
    tf = _transform(mixup_p=1.0, time_roll=False)
    out = tf(batch, torch.Generator().manual_seed(3), train=True)
    lam = out["lam"]
    assert ((lam > 0) & (lam < 1)).all()
    plain = tf(batch, train=False)
    p = EquiAVFinetuneTransform.partner(4)
    assert p.tolist() == [1, 0, 3, 2]
    l4 = lam[:, None, None, None]
    torch.testing.assert_close(out["v"], l4 * plain["v"] + (1 - l4) * plain["v"][p])
    torch.testing.assert_close(out["target"], lam[:, None] * batch["target"] + (1 - lam[:, None]) * batch["target"][p])
    # the audio is the fbank of the mixed centred waveforms, partner cut to the clip's length
    w, n = batch["wave"], batch["num_samples"]
    valid = torch.arange(w.shape[1])[None] < n[:, None]
    c = torch.where(valid, w - (w * valid).sum(1, keepdim=True) / n[:, None], 0.0)
    mixed = torch.where(valid, lam[:, None] * c + (1 - lam[:, None]) * c[p], 0.0)
    torch.testing.assert_close(out["a"][:, 0], equiav_fbank_batch(mixed, n, 16000, 64, "audioset", 32))
    # p = 0: no mixing at all, lambda 1
    none = _transform(mixup_p=0.0, time_roll=False)(batch, torch.Generator().manual_seed(3), train=True)
    torch.testing.assert_close(none["v"], plain["v"])
    assert torch.equal(none["target"], batch["target"])


def test_time_roll_is_a_circular_shift():
    batch = _batch()
    tf = _transform(mixup_p=0.0)
    out = tf(batch, torch.Generator().manual_seed(5), train=True)
    shift = tf.draw(4, torch.Generator().manual_seed(5))["shift"]
    plain = tf(batch, train=False)["a"]
    for i in range(4):
        assert torch.equal(out["a"][i], torch.roll(plain[i], int(shift[i]), dims=1))


def test_shards_equal_one_process():
    batch = _batch(b=8, seed=1)
    tf = _transform(mixup_p=0.5)
    full = tf(batch, torch.Generator().manual_seed(7), train=True)
    parts = []
    for rank in range(2):
        half = {k: (v[rank * 4:(rank + 1) * 4] if isinstance(v, (torch.Tensor, list)) else v) for k, v in batch.items()}
        parts.append(tf(half, torch.Generator().manual_seed(7), train=True, shard=(rank, 2)))
    for k in ("a", "v", "target", "lam"):
        torch.testing.assert_close(torch.cat([p[k] for p in parts]), full[k])


def test_sample_beta_moments():
    x = sample_beta(20000, 10.0, torch.Generator().manual_seed(0))
    assert abs(x.mean().item() - 0.5) < 0.005
    assert abs(x.var().item() - 0.25 / 21) < 0.001  # Var Beta(a, a) = 1 / (4 (2a + 1))
    y = sample_beta(20000, 0.5, torch.Generator().manual_seed(0))
    assert abs(y.var().item() - 0.25 / 2) < 0.01 and ((y >= 0) & (y <= 1)).all()
    assert torch.equal(x[:10], sample_beta(20000, 10.0, torch.Generator().manual_seed(0))[:10])


@pytest.mark.parametrize("mode,loss", [("multimodal", "bce"), ("audio_only", "ce"), ("video_only", "bce")])
def test_modes_train_a_step(mode, loss):
    cfg = _cfg(loss=loss)
    cfg = replace(cfg, equiav_ft=replace(cfg.equiav_ft, ft=replace(cfg.equiav_ft.ft, mode=mode)))
    torch.manual_seed(0)
    model = build_method("equiav_ft", cfg.equiav_ft)
    net = finetune_train_module(model, cfg)
    inputs = EquiAVFinetuneTransform.from_config(cfg, "cpu")(_batch(), torch.Generator().manual_seed(0), train=True)
    groups = finetune_param_groups(model, cfg)
    opt = torch.optim.AdamW([{"params": g["params"], "lr": 1e-3 * g["lr_scale"]} for g in groups])
    before = [p.detach().clone() for p in model.head.parameters()]
    losses = net(inputs)
    assert set(losses) == {"loss", "acc"} and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.head.parameters(), strict=True))


def test_param_groups_head_scale():
    model = build_method("equiav_ft", _cfg().equiav_ft)
    n_params = sum(1 for _ in model.parameters())
    for original, scale in ((True, 1.0), (False, 50.0)):
        groups = finetune_param_groups(model, _cfg(original_head_lr=original))
        head = [g for g in groups if g["name"] == "head"][0]
        assert head["lr_scale"] == scale and len(head["params"]) == 2
        assert sum(len(g["params"]) for g in groups) == n_params
        assert [g["lr_scale"] for g in groups if g["name"] != "head"] == [1.0]


class _Loader(list):
    pass


def test_evaluate_whole_set():
    cfg = _cfg()
    torch.manual_seed(0)
    model = build_method("equiav_ft", cfg.equiav_ft)
    tf = EquiAVFinetuneTransform.from_config(cfg, "cpu")
    b1, b2 = _batch(seed=0), _batch(seed=1)
    b2["id"] = [f"d{i}" for i in range(4)]
    out = finetune_evaluate(model, _Loader([b1, b2]), tf, torch.device("cpu"), cfg)
    assert out["clips"] == 8 and 0.0 <= out["accuracy"] <= 1.0 and 0.0 < out["mAP"] <= 1.0
    assert out["classes_scored"] == 3 and model.training
    with torch.no_grad():
        model.eval()
        logits = torch.cat([model(tf(b)["a"], tf(b)["v"]) for b in (b1, b2)])
    targets = torch.cat([b1["target"], b2["target"]])
    assert out["accuracy"] == pytest.approx(float((logits.argmax(1) == targets.argmax(1)).float().mean()))


def test_sample_weights(tmp_path):
    class DS:
        skipped: list = []

        def __len__(self):
            return 3

    assert finetune_sample_weights(DS(), _cfg()) is None
    good = tmp_path / "w.csv"
    good.write_text("0.5\n1.0\n\n2e-1\n")
    assert finetune_sample_weights(DS(), _cfg(sample_weights=str(good))).tolist() == [0.5, 1.0, 0.2]
    short = tmp_path / "short.csv"
    short.write_text("1\n2\n")
    with pytest.raises(ValueError, match=r"short\.csv has 2 weights but the training set has 3"):
        finetune_sample_weights(DS(), _cfg(sample_weights=str(short)))
    bad = tmp_path / "bad.csv"
    bad.write_text("1\nabc\n2\n")
    with pytest.raises(ValueError, match=r"bad\.csv, line 2: 'abc'"):
        read_sample_weights(bad)
    with pytest.raises(ValueError, match="cannot read"):
        read_sample_weights(tmp_path / "missing.csv")


def test_init_checkpoint_and_load_method(tmp_path):
    torch.manual_seed(1)
    pre = EquiAV(BACKBONE)
    path = tmp_path / "pre.pt"
    save_checkpoint(path, model=pre.state_dict(), config={"method": "equiav"})
    cfg = _cfg(init_checkpoint=str(path))
    model = EquiAVFinetune(cfg.equiav_ft)
    for k, v in model.state_dict().items():
        if k.startswith("audio_encoder."):
            assert torch.equal(v, pre.state_dict()[k]), k
    assert model.init_report is not None
    # an official-style raw state dict with "module." prefixes is detected and loaded too
    raw = tmp_path / "raw.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in pre.state_dict().items()}}, raw)
    m2 = EquiAVFinetune(replace(cfg.equiav_ft, init_checkpoint=str(raw)))
    assert torch.equal(m2.state_dict()["visual_encoder.blocks.0.attn.qkv.weight"],
                       pre.state_dict()["visual_encoder.blocks.0.attn.qkv.weight"])
    with pytest.raises(CheckpointError, match="nope.pt: no such file"):
        EquiAVFinetune(replace(cfg.equiav_ft, init_checkpoint=str(tmp_path / "nope.pt")))
    other = tmp_path / "other.pt"
    save_checkpoint(other, model=EquiAV(replace(BACKBONE, embed_dim=32, num_heads=4)).state_dict())
    with pytest.raises(CheckpointError, match="no encoder weight fits"):
        EquiAVFinetune(replace(cfg.equiav_ft, init_checkpoint=str(other)))
    # a fine-tuned checkpoint reloads without its (now missing) init file
    from avssl.config import to_dict
    ft_path = tmp_path / "ft.pt"
    save_checkpoint(ft_path, model=model.state_dict(), config=to_dict(cfg))
    path.unlink()
    loaded, _ = load_method(ft_path)
    assert torch.equal(loaded.state_dict()["head.0.weight"], model.state_dict()["head.0.weight"])


def test_presets_load():
    for name, classes in (("equiav/finetune_audioset", 527), ("equiav/finetune_vggsound", 309),
                          ("synthetic/equiav_ft", 6)):
        cfg = load_config(TrainConfig, [name])
        assert cfg.method == "equiav_ft" and cfg.equiav_ft.ft.num_classes == classes
    cfg = load_config(TrainConfig, ["synthetic/equiav_ft"])
    assert build_method("equiav_ft", cfg.equiav_ft)(torch.zeros(1, 3, 256, 64), torch.zeros(1, 3, 64, 64)).shape == (1, 6)


def test_fit_two_epochs_logs_classification(tiny_synth, tmp_path):
    import json

    from avssl.engine.train import fit

    m = tiny_synth / "manifest.jsonl"
    cfg = load_config(TrainConfig, ["synthetic/equiav_ft"], [
        f"data.train_manifest={m}", f"data.val_manifest={m}", f"data.test_manifest={m}",
        f"equiav_ft.class_list={tiny_synth / 'classes.json'}", "equiav_ft.ft.num_classes=3",
        "equiav_ft.backbone.embed_dim=32", "equiav_ft.backbone.depth=1", "equiav_ft.backbone.img_size=32",
        "equiav_ft.backbone.audio_length=64", "equiav_ft.backbone.num_mel_bins=32", "equiav_ft.ft.proj_out_dim=16",
        "data.seconds=1", "data.num_workers=0", "train.batch_size=4", "train.epochs=2", "train.log_every=1",
        f"train.out_dir={tmp_path / 'run'}", "train.progress=false", "train.tensorboard=false"])
    out = fit(cfg)
    assert out["step"] == 4 and out["classes"] == ["red_disc", "green_square", "blue_triangle"]
    epochs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if "time_s" in x]
    assert len(epochs) == 2
    for e in epochs:
        assert 0 <= e["val/accuracy"] <= 1 and 0 < e["val/mAP"] <= 1 and e["val/clips"] == 4
        assert "train/acc" in e and "val/mAUC" in e
    assert (tmp_path / "run" / "best.pt").is_file()
    model, ckpt = load_method(tmp_path / "run" / "last.pt")
    assert ckpt["config"]["method"] == "equiav_ft" and model.head[0].out_features == 3
    # `avssl eval` scores a classifier with its pipeline's evaluation (the val split here: 4 clips)
    from avssl.cli import main

    assert main(["eval", str(tmp_path / "run" / "last.pt"), "--data", str(m), "--split", "val",
                 "--out", str(tmp_path / "ev"), "--workers", "0"]) == 0
    scores = json.loads((tmp_path / "ev" / "scores.json").read_text())
    assert scores["clips"] == 4 and scores["accuracy"] == pytest.approx(epochs[-1]["val/accuracy"])


@pytest.mark.distributed
def test_torchrun_two_ranks_equal_one_process(tiny_synth, tmp_path):
    """2 ranks x batch 2 == 1 process x batch 4 (mixup/roll drawn for the global batch, DDP-averaged
    BCE), and the val metrics are over the whole val set, gathered (4 clips, not one rank's 2)."""
    import json
    import os
    import subprocess
    import sys

    m = tiny_synth / "manifest.jsonl"

    def train(nproc: int, batch: int, out) -> dict:
        args = ["synthetic/equiav_ft", f"data.train_manifest={m}", f"data.val_manifest={m}",
                f"equiav_ft.class_list={tiny_synth / 'classes.json'}", "equiav_ft.ft.num_classes=3",
                "equiav_ft.ft.drop_path=0", "equiav_ft.backbone.embed_dim=32", "equiav_ft.backbone.depth=1",
                "equiav_ft.backbone.img_size=32", "equiav_ft.backbone.audio_length=64",
                "equiav_ft.backbone.num_mel_bins=32", "equiav_ft.ft.proj_out_dim=16", "data.seconds=1",
                "data.num_workers=0", f"train.batch_size={batch}", "train.epochs=1", "train.tensorboard=false",
                "train.threads=1", f"--out={out}"]
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
                    if nproc > 1 else [sys.executable])
        env = dict(os.environ, OMP_NUM_THREADS="1")
        env.pop("WORLD_SIZE", None)
        proc = subprocess.run([*launcher, "-m", "avssl", "-q", "train", *args], capture_output=True, text=True,
                              timeout=240, env=env)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if "time_s" in x][-1]

    one, two = train(1, 4, tmp_path / "one"), train(2, 2, tmp_path / "two")
    assert one["val/clips"] == two["val/clips"] == 4
    for k in ("train/loss", "val/loss", "val/mAP", "val/accuracy"):
        assert two[k] == pytest.approx(one[k], rel=1e-4, abs=1e-5), k
