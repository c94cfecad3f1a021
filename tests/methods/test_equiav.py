"""EquiAV pre-training model (avssl.methods.equiav) against golden A, plus API behaviour."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from avssl.methods.equiav.convert import load_official_pretrain, official_pretrain_key
from avssl.methods.equiav.model import (
    EquiAV,
    equiav_tiny,
    equiav_tiny_config,
    equiav_vit_b16_config,
    load_mae_init,
)

TOL = dict(atol=1e-5, rtol=1e-5)
# our output name -> golden suffix
OUTPUTS = {"z_a_inv": "z_a_inv", "z_v_inv": "z_v_inv", "z_a_equi": "z_a_equi_t",
           "z_v_equi": "z_v_equi_t", "z_a_aug": "z_a_aug", "z_v_aug": "z_v_aug"}


@pytest.fixture(scope="module")
def pt(golden, golden_dir):
    """equiav_pt_tiny_state_dict.pt loaded into equiav_tiny(); inputs of equiav_pt_tiny_io.npz."""
    g = golden("equiav_pt_tiny_io.npz")
    model = equiav_tiny().eval()
    report = load_official_pretrain(model, torch.load(golden_dir / "equiav_pt_tiny_state_dict.pt"))
    t = {k: torch.from_numpy(v) for k, v in g.items()}
    args = (t["in_a_1ch"].repeat(1, 3, 1, 1), t["in_v"], t["in_a_aug_1ch"].repeat(1, 3, 1, 1),
            t["in_v_aug"], t["in_t_a"], t["in_t_v"], t["in_t_a_list"], t["in_t_v_list"])
    return model, report, args, t


def test_conversion_report(pt):
    _, report, _, _ = pt
    assert report.ok and not report.notes
    reasons = list(report.dropped.values())
    assert reasons.count("unused per-modality norm of the original Block") == 32  # 4 blocks x 4 x 2
    assert reasons.count("fixed sin-cos position embedding (recomputed)") == 2


def test_golden_forward_centroid_and_mean(pt):
    """equiav_pt_tiny_io.npz: out_z_* (centroid) and out_nocen_z_* (token mean)."""
    model, _, args, t = pt
    with torch.no_grad():
        out = model(*args)
        for ours, theirs in OUTPUTS.items():
            torch.testing.assert_close(out[ours], t[f"out_{theirs}"], **TOL)
        model.cfg = dataclasses.replace(model.cfg, centroid=False)
        try:
            nocen = model(*args)
        finally:
            model.cfg = dataclasses.replace(model.cfg, centroid=True)
    for ours, theirs in OUTPUTS.items():
        torch.testing.assert_close(nocen[ours], t[f"out_nocen_{theirs}"], **TOL)


def test_golden_loss_and_gradients(pt):
    """equiav_pt_tiny_io.npz: out_loss_* and the 7 out_grad_<official name> entries."""
    model, _, args, t = pt
    model.zero_grad()
    losses = model.loss(*args)
    names = {"loss": "loss", "loss/inter": "loss_inter", "loss/intra_a": "loss_intra_a",
             "loss/intra_v": "loss_intra_v", "acc/inv": "acc_inv", "acc/intra_a": "acc_intra_a",
             "acc/intra_v": "acc_intra_v"}
    assert set(losses) == set(names)
    for ours, theirs in names.items():
        torch.testing.assert_close(losses[ours].detach(), t[f"out_loss_{theirs}"], **TOL)
    losses["loss"].backward()
    params = dict(model.named_parameters())
    grads = [k for k in t if k.startswith("out_grad_")]
    assert len(grads) == 7
    for key in grads:
        p = params[official_pretrain_key(key[len("out_grad_"):])]
        torch.testing.assert_close(p.grad, t[key], **TOL)
    model.zero_grad()


def test_prefixes_and_strict_conversion(golden_dir):
    sd = torch.load(golden_dir / "equiav_pt_tiny_state_dict.pt")
    model = equiav_tiny()
    wrapped = {f"module.__M__.{k}": v for k, v in sd.items()}
    assert load_official_pretrain(model, wrapped).ok
    with pytest.raises(KeyError, match="unexpected"):
        load_official_pretrain(model, {**sd, "__M__.something_new": torch.zeros(1)})
    # learnable temperatures of the original trainer map onto ours
    m2 = equiav_tiny(learnable_tau=True)
    load_official_pretrain(m2, {**sd, "__L_inter__.tau": torch.tensor(0.05), "__L_intra__.tau": torch.tensor(0.06)})
    assert m2.tau_inter.item() == pytest.approx(0.05) and m2.tau_intra.item() == pytest.approx(0.06)


def _sampler(batch, s, generator, device):
    return (torch.rand(batch, s, 24, generator=generator, device=device),
            torch.rand(batch, s, 18, generator=generator, device=device))


def test_embed_and_localise(pt):
    model, _, args, t = pt
    a, v = args[0], args[1]
    with torch.no_grad():
        za, zv = model.embed(a, v, t["in_t_a_list"], t["in_t_v_list"])
        out = model(*args)
    torch.testing.assert_close(za, torch.nn.functional.normalize(out["z_a_inv"], dim=-1), **TOL)
    torch.testing.assert_close(zv.norm(dim=-1), torch.ones(4))
    model.param_sampler = None  # the default sampler (EquiAV.__init__) removed: lists are required
    with pytest.raises(RuntimeError, match="param_sampler"):
        model.embed(a, v)
    model.param_sampler = _sampler
    try:
        with torch.no_grad():
            e1 = model.embed(a, v, generator=torch.Generator().manual_seed(5))
            e2 = model.embed(a, v, generator=torch.Generator().manual_seed(5))
            e3 = model.embed(a, v, generator=torch.Generator().manual_seed(6))
            heat = model.localise(a, v, generator=torch.Generator().manual_seed(5))
    finally:
        model.param_sampler = None
    assert torch.equal(e1[0], e2[0]) and not torch.equal(e1[0], e3[0])
    assert heat.shape == (4, 4, 4) and heat.abs().max() <= 1 + 1e-6
    with torch.no_grad():  # one cell by hand: cosine of the audio embedding with a patch token
        zv_tok = model.head_inter_v(model.visual_encoder(v))[1, 2 * 4 + 3]
    torch.testing.assert_close(heat[1, 2, 3], torch.cosine_similarity(e1[0][1], zv_tok, dim=0), **TOL)


def test_predictor_shares_keys_between_centroid_and_single_vector(pt):
    model, _, args, t = pt
    with torch.no_grad():
        tok = model.audio_encoder(args[0])
        cen, equi = model._predict(model.predictor_a, model.aug_encoder_a, tok, t["in_t_a_list"], t["in_t_a"])
        cen_alone = model.predictor_a.predict(tok, model.aug_encoder_a(t["in_t_a_list"]))
        equi_alone = model.predictor_a.predict(tok, model.aug_encoder_a(t["in_t_a"][:, None]))
    torch.testing.assert_close(cen, cen_alone, **TOL)
    torch.testing.assert_close(equi, equi_alone, **TOL)


@pytest.mark.parametrize("centroid", [True, False])
def test_tiny_train_step_is_finite(centroid):
    torch.manual_seed(0)
    model = equiav_tiny(centroid=centroid, num_centroid=3, learnable_tau=True)
    a, v = torch.randn(3, 3, 256, 128), torch.randn(3, 3, 64, 64)
    ta, tv = torch.rand(3, 24), torch.rand(3, 18)
    losses = model.loss(a, v, a.flip(-1), v.flip(-1), ta, tv, torch.rand(3, 3, 24), torch.rand(3, 3, 18))
    losses["loss"].backward()
    assert all(torch.isfinite(x) for x in losses.values())
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_configs_and_mae_init(tmp_path):
    b16 = equiav_vit_b16_config()
    assert (b16.embed_dim, b16.depth, b16.num_heads, b16.audio_length, b16.num_centroid) == (768, 12, 12, 1024, 16)
    assert equiav_tiny_config().embed_dim == 64
    with pytest.raises(ValueError):
        equiav_tiny_config(img_size=70)
    model = EquiAV(equiav_tiny_config())
    src = model.visual_encoder.state_dict()
    mae = {"patch_embed.proj.weight": torch.randn(64, 3, 16, 16), "patch_embed.proj.bias": torch.randn(64),
           "norm.weight": torch.full((64,), 2.0), "norm.bias": torch.zeros(64), "pos_embed": torch.zeros(1, 197, 64),
           **{k: torch.randn_like(v) for k, v in src.items() if k.startswith("blocks.")}}
    path = tmp_path / "mae.pth"
    torch.save({"model": mae}, path)
    report = load_mae_init(model, path)
    assert report["skipped"] == ["pos_embed"]
    for enc in (model.audio_encoder, model.visual_encoder):
        assert torch.equal(enc.patch_embed.weight, mae["patch_embed.proj.weight"])
        assert torch.equal(enc.blocks[0].attn.qkv.weight, mae["blocks.0.attn.qkv.weight"])
        assert torch.equal(enc.norm.weight, mae["norm.weight"])
        assert torch.equal(enc.norm_aug.weight, torch.ones(64))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_mae_init(model, tmp_path / "missing.pth")
    # the config option initialises at construction; a saved run reloads without the file
    from avssl.checkpoint import save_checkpoint
    from avssl.registry import load_method

    inited = EquiAV(equiav_tiny_config(init_checkpoint=str(path)))
    assert torch.equal(inited.audio_encoder.blocks[0].attn.qkv.weight, mae["blocks.0.attn.qkv.weight"])
    assert inited.init_report["skipped"] == ["pos_embed"]
    options = {**{k: getattr(inited.cfg, k) for k in ("embed_dim", "depth", "num_heads", "img_size", "audio_length",
                                                         "aug_emb_dim", "proj_hidden_dim", "inter_out_dim",
                                                         "intra_out_dim")}, "init_checkpoint": str(path)}
    ckpt = save_checkpoint(tmp_path / "run.pt", model=inited.state_dict(), config={"method": "equiav", "equiav": options})
    path.unlink()
    reloaded, _ = load_method(ckpt)
    assert torch.equal(reloaded.audio_encoder.blocks[0].attn.qkv.weight, mae["blocks.0.attn.qkv.weight"])
