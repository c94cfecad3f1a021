"""ViT encoder (avssl.models.vit): position embedding, token order, attention path, MAE init."""
from __future__ import annotations

import pytest
import torch

from avssl.models.vit import ViTEncoder, load_mae_into_encoder, sincos_pos_embed_2d


def _tiny_audio(**kw) -> ViTEncoder:
    return ViTEncoder((128, 64), embed_dim=32, depth=2, num_heads=4, transpose_input=True, **kw)


def test_pos_embed_matches_golden(golden_dir):
    """equiav_pt_tiny_state_dict.pt: pos_embed_a (1,128,64) on 8x16, pos_embed_v (1,16,64) on 4x4."""
    sd = torch.load(golden_dir / "equiav_pt_tiny_state_dict.pt")
    torch.testing.assert_close(sincos_pos_embed_2d(64, 8, 16), sd["pos_embed_a"][0], atol=1e-7, rtol=0)
    torch.testing.assert_close(sincos_pos_embed_2d(64, 4, 4), sd["pos_embed_v"][0], atol=1e-7, rtol=0)


def test_pos_embed_layout():
    pe = sincos_pos_embed_2d(16, 3, 5)  # row-major over (3 rows, 5 cols)
    assert pe.shape == (15, 16)
    k = 2 * 5 + 4  # row 2, col 4
    # first half encodes the column: equal to the first half of (row 0, col 4)
    torch.testing.assert_close(pe[k, :8], pe[4, :8])
    # second half encodes the row: equal to the second half of (row 2, col 0)
    torch.testing.assert_close(pe[k, 8:], pe[10, 8:])
    assert torch.equal(pe[0], torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4))


def test_audio_tokens_are_frequency_row_major():
    enc = _tiny_audio()
    with torch.no_grad():
        enc.patch_embed.weight.fill_(1.0)
        enc.patch_embed.bias.zero_()
        enc.modality_token.zero_()
    enc.pos_embed = torch.zeros_like(enc.pos_embed)
    x = torch.zeros(1, 3, 64, 128)  # (B, 3, T, F)
    f_row, t_col = 5, 2
    x[:, :, 16 * t_col:16 * (t_col + 1), 16 * f_row:16 * (f_row + 1)] = 1.0
    tokens = enc.embed(x)[0, :, 0]
    assert enc.grid == (8, 4)
    assert tokens.nonzero().flatten().tolist() == [f_row * 4 + t_col]


def test_blocks_use_sdpa_and_match_explicit_attention():
    enc = _tiny_audio().eval()
    assert all(b.attn.fused_attn for b in enc.blocks)
    assert all(isinstance(b.norm1, torch.nn.LayerNorm) and b.norm1.eps == 1e-5 for b in enc.blocks)
    x = torch.randn(2, 3, 64, 128)
    fused = enc(x)
    for b in enc.blocks:
        b.attn.fused_attn = False
    torch.testing.assert_close(enc(x), fused, atol=1e-5, rtol=1e-5)


def test_forward_pair_uses_separate_norms():
    enc = _tiny_audio().eval()
    with torch.no_grad():
        enc.norm_aug.weight.mul_(2.0)
    x, xa = torch.randn(2, 3, 64, 128), torch.randn(2, 3, 64, 128)
    t, ta = enc.forward_pair(x, xa)
    torch.testing.assert_close(t, enc(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ta, enc(xa, augmented=True), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="spatial size"):
        enc(torch.randn(1, 3, 128, 64))


def test_mae_init_copies_patch_blocks_and_clean_norm(tmp_path):
    src = ViTEncoder((32, 32), embed_dim=32, depth=2, num_heads=4)
    mae = {"cls_token": torch.zeros(1, 1, 32), "pos_embed": torch.zeros(1, 5, 32),
           "patch_embed.proj.weight": src.patch_embed.weight[:, :1].clone(),  # 1-channel
           "patch_embed.proj.bias": src.patch_embed.bias.clone(),
           "norm.weight": torch.full((32,), 3.0), "norm.bias": torch.full((32,), 0.5)}
    mae.update({k: v.clone() for k, v in src.state_dict().items() if k.startswith("blocks.")})
    dst = _tiny_audio()
    loaded, used = load_mae_into_encoder(dst, mae)
    assert "cls_token" not in used and "pos_embed" not in used
    assert torch.equal(dst.patch_embed.weight, src.patch_embed.weight[:, :1].repeat(1, 3, 1, 1))
    assert torch.equal(dst.blocks[1].mlp.fc2.weight, src.blocks[1].mlp.fc2.weight)
    assert torch.equal(dst.norm.weight, torch.full((32,), 3.0))
    assert torch.equal(dst.norm_aug.weight, torch.ones(32))  # augmented-view norm untouched
    with pytest.raises(ValueError, match="no 'blocks.' keys"):
        load_mae_into_encoder(dst, {"norm.weight": torch.ones(32)}, source="bad.pth")
