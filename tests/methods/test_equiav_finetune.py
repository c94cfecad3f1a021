"""EquiAV fine-tuning classifier (avssl.methods.equiav.finetune) against golden C, plus options."""
from __future__ import annotations

import pytest
import torch

from avssl.methods.equiav.convert import load_official_finetune
from avssl.methods.equiav.finetune import (
    EquiAVClassifier,
    EquiAVFTConfig,
    load_pretrained_backbone,
)
from avssl.methods.equiav.model import equiav_tiny, equiav_tiny_config

TOL = dict(atol=1e-5, rtol=1e-5)
TAGS = [f"{m}_interlinear{i}" for m in ("multimodal", "audio_only", "video_only") for i in (1, 0)]


def _ft_config(tag: str, **kw) -> EquiAVFTConfig:
    mode, linear = tag.rsplit("_interlinear", 1)
    return EquiAVFTConfig(num_classes=10, mode=mode, inter_linear=linear == "1", proj_hidden_dim=128,
                          proj_out_dim=64, drop_path=0.1, **kw)


@pytest.fixture(scope="module")
def ft(golden, golden_dir):
    """equiav_ft_tiny_state_dicts.pt (all six tags) and equiav_ft_tiny_io.npz."""
    g = golden("equiav_ft_tiny_io.npz")
    sds = torch.load(golden_dir / "equiav_ft_tiny_state_dicts.pt")
    a = torch.from_numpy(g["in_a_1ch"]).repeat(1, 3, 1, 1)
    return sds, g, a, torch.from_numpy(g["in_v"])


@pytest.mark.parametrize("tag", TAGS)
def test_golden_logits(ft, tag):
    """out_<tag> in eval mode, and outtrain_droppath_seed99_<tag> (DropPath drawn in the same order)."""
    sds, g, a, v = ft
    model = EquiAVClassifier(equiav_tiny_config(), _ft_config(tag))
    report = load_official_finetune(model, sds[tag])
    assert report.ok
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(a, v), torch.from_numpy(g[f"out_{tag}"]), **TOL)
        model.train()
        torch.manual_seed(99)
        out = model(a, v)
    torch.testing.assert_close(out, torch.from_numpy(g[f"outtrain_droppath_seed99_{tag}"]), **TOL)


def test_unused_branches_are_dropped_not_built(ft):
    sds, _, _, _ = ft
    model = EquiAVClassifier(equiav_tiny_config(), _ft_config("audio_only_interlinear1"))
    assert model.visual_encoder is None and model.proj_v is None
    report = load_official_finetune(model, sds["audio_only_interlinear1"])
    assert any("visual_encoder is not built" in r for r in report.dropped.values())


def test_audio_only_head_width():
    backbone = equiav_tiny_config()
    a = torch.randn(2, 3, 256, 128)
    model = EquiAVClassifier(backbone, EquiAVFTConfig(num_classes=5, mode="audio_only", proj_out_dim=32))
    assert model(a, None).shape == (2, 5)  # ours: sized from the projected features
    with pytest.raises(ValueError, match="matmul shape error"):
        EquiAVClassifier(backbone, EquiAVFTConfig(num_classes=5, mode="audio_only", proj_out_dim=32,
                                                  original_head_dims=True))
    # the original sizes are accepted where they are consistent
    EquiAVClassifier(backbone, EquiAVFTConfig(num_classes=5, mode="audio_only", proj_out_dim=64,
                                              original_head_dims=True))


def test_mlp_head_and_video_only():
    model = EquiAVClassifier(equiav_tiny_config(), EquiAVFTConfig(
        num_classes=7, mode="video_only", head_type="mlp", head_dim=16, proj_out_dim=32))
    out = model(None, torch.randn(3, 3, 64, 64))
    out.sum().backward()
    assert out.shape == (3, 7) and isinstance(model.head[1], torch.nn.BatchNorm1d)
    assert model.head_parameters()[0].grad is not None


@pytest.mark.parametrize("inter_linear", [True, False])
def test_load_pretrained_backbone(inter_linear):
    torch.manual_seed(0)
    pre = equiav_tiny()
    cfg = EquiAVFTConfig(num_classes=4, inter_linear=inter_linear, proj_hidden_dim=128, proj_out_dim=32)
    model = EquiAVClassifier(equiav_tiny_config(), cfg)
    report = load_pretrained_backbone(model, pre.state_dict())
    assert torch.equal(model.audio_encoder.blocks[1].attn.qkv.weight, pre.audio_encoder.blocks[1].attn.qkv.weight)
    assert torch.equal(model.visual_encoder.norm.weight, pre.visual_encoder.norm.weight)
    if inter_linear:  # fresh Linear heads: names differ from the pre-trained MLP heads
        assert "proj_a.weight" in report.missing
    else:  # the MLP inter heads load, as in the released loader (names and shapes match)
        assert torch.equal(model.proj_a.fc3.weight, pre.head_inter_a.fc3.weight)
    assert all(k.startswith(("head.", "proj_")) for k in report.missing)
