"""SSL-TIE model: official-checkpoint converter, golden parity (eval/train/TE loss), tiny training steps."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from avssl.augment.geometric import EquivarianceParams
from avssl.methods.ssltie import SSLTIE, SSLTIEConfig, convert_official_state_dict, load_official
from golden_utils import SSLTIE_AUDIO_NAMES as AUDIO_NAMES
from golden_utils import dequantise_int8

TE_TAGS = ["scale1.0_hflip0", "scale1.0_hflip1", "scale0.5_hflip0", "scale0.5_hflip1"]


def _rel(ours: torch.Tensor, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref|."""
    return float(np.abs(ours.detach().numpy() - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def official_sd(golden):
    """ssltie_avenet_weights_int8.npz, dequantised, under the official AVENet key names."""
    return dequantise_int8(golden("ssltie_avenet_weights_int8.npz"))


@pytest.fixture(scope="module")
def inputs(golden):
    """ssltie_avenet_io.npz: in_image (3,3,224,224); ssltie_frontend.npz: <name>_spec stacked (3,1,257,670)."""
    fe = golden("ssltie_frontend.npz")
    spec = torch.from_numpy(np.stack([fe[f"{n}_spec"] for n in AUDIO_NAMES]))
    return torch.from_numpy(golden("ssltie_avenet_io.npz")["in_image"]), spec


@pytest.fixture(scope="module")
def golden_model(official_sd):
    """The golden AVENet configuration (tri_map=False, Neg=False) with the golden weights."""
    model = SSLTIE(SSLTIEConfig(tri_map=False, hard_negatives=False))
    report = load_official(model, official_sd, strict=True)
    assert not report.missing and not report.unexpected
    return model


# -- converter ---------------------------------------------------------------------------------
def test_converter_reports_unused_official_keys(official_sd):
    ours, report = convert_official_state_dict(official_sd)
    assert sorted(report.dropped) == sorted(k for k in official_sd if k.startswith(("conv3.", "norm3.")))
    assert report.unexpected == [] and report.missing == []
    with torch.device("meta"):
        assert set(ours) == set(SSLTIE(SSLTIEConfig(width=64)).state_dict())
    torch.testing.assert_close(ours["audio.conv1.weight"], official_sd["audnet.conv1_a.weight"])
    torch.testing.assert_close(ours["visual.layer4.1.bn2.weight"], official_sd["imgnet.layer4.1.bn2.weight"])


def test_converter_accepts_wrappers_and_module_prefix(official_sd):
    plain, _ = convert_official_state_dict(official_sd)
    for wrapped in ({"model": official_sd}, {"state_dict": {f"module.{k}": v for k, v in official_sd.items()},
                                             "epoch": 3}):
        ours, report = convert_official_state_dict(wrapped)
        assert set(ours) == set(plain) and not report.unexpected and not report.missing
        assert all(torch.equal(ours[k], plain[k]) for k in plain)


def test_converter_reports_and_strict_raises(official_sd, caplog):
    broken = dict(official_sd)
    del broken["imgnet.layer2.0.conv1.weight"]
    broken["imgnet.mystery.weight"] = torch.zeros(1)
    _, report = convert_official_state_dict(broken)
    assert report.missing == ["visual.layer2.0.conv1.weight"]
    assert report.unexpected == ["imgnet.mystery.weight"]
    assert "1 unexpected, 1 missing" in caplog.text
    with pytest.raises(ValueError, match="mystery"):
        convert_official_state_dict(broken, strict=True)
    bad_shape = dict(official_sd, **{"audnet.bn1.weight": torch.ones(3)})
    with pytest.raises(ValueError, match="audio.bn1.weight"):
        convert_official_state_dict(bad_shape)


# -- golden parity -----------------------------------------------------------------------------
def test_golden_eval_outputs(golden, golden_model, inputs):
    """ssltie_avenet_io.npz: eval_img_feat_normed, eval_aud_feat_normed, eval_default_{A, logits, Pos, Neg},
    eval_trimap_Neg_{A, logits, Pos, Neg}."""
    io = golden("ssltie_avenet_io.npz")
    model = golden_model.eval()
    trimap = SSLTIE(SSLTIEConfig(tri_map=True, hard_negatives=True))  # logits only: reuse the maps
    with torch.no_grad():
        out = model.forward_maps(*inputs)
    assert _rel(out["img_feat"], io["eval_img_feat_normed"]) < 1e-5
    assert _rel(out["aud_feat"], io["eval_aud_feat_normed"]) < 1e-5
    for case, m in (("eval_default", model), ("eval_trimap_Neg", trimap)):
        lg = m.localisation_logits(out["A"], out["A0"])
        assert _rel(out["A"], io[f"{case}_A"]) < 1e-5
        assert _rel(lg.logits, io[f"{case}_logits"]) < 1e-4
        assert _rel(lg.pos, io[f"{case}_Pos"]) < 1e-4
        assert _rel(lg.neg, io[f"{case}_Neg"]) < 1e-4
    with torch.no_grad():
        torch.testing.assert_close(model.localise(*inputs), out["A"][:, 0])


def test_golden_train_mode_and_te_loss(golden, golden_model, inputs):
    """ssltie_avenet_io.npz: train_default_{A, logits, Pos, Neg}; ssltie_tf_equivariance.npz, per tag:
    angles_deg/scale/hflip (inputs), heatmap, logits, heatmap_ts, logits_ts, ts_heatmap,
    transformed_image_sample0, loss, loss_cl, loss_cl_ts, loss_ts."""
    io, eq = golden("ssltie_avenet_io.npz"), golden("ssltie_tf_equivariance.npz")
    model = copy.deepcopy(golden_model).train()  # BatchNorm batch statistics, as the golden
    with torch.no_grad():
        out = model.forward_maps(*inputs)
        lg = model.localisation_logits(out["A"], out["A0"])
    for ours, key in ((out["A"], "A"), (lg.logits, "logits"), (lg.pos, "Pos"), (lg.neg, "Neg")):
        assert _rel(ours, io[f"train_default_{key}"]) < 1e-4, key
    for tag in TE_TAGS:
        params = EquivarianceParams(torch.from_numpy(eq[f"{tag}_angles_deg"]), float(eq[f"{tag}_scale"]),
                                    bool(eq[f"{tag}_hflip"]))
        with torch.no_grad():
            step = model.step_outputs(*inputs, params=params)
            losses = model.loss_terms(step)
        pairs = {"A": "heatmap", "logits": "logits", "A_t": "heatmap_ts", "logits_t": "logits_ts",
                 "t_A": "ts_heatmap"}
        for ours, ref in pairs.items():
            assert _rel(step[ours], eq[f"{tag}_{ref}"]) < 1e-4, (tag, ours)
        assert _rel(step["image_t"][:1], eq[f"{tag}_transformed_image_sample0"]) < 1e-4
        for ours, ref in (("loss", "loss"), ("loss/cl", "loss_cl"), ("loss/cl_ts", "loss_cl_ts"),
                          ("loss/equi", "loss_ts")):
            assert _rel(losses[ours], eq[f"{tag}_{ref}"]) < 1e-4, (tag, ours)


# -- tiny models -------------------------------------------------------------------------------
def _tiny_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 64, 64, generator=g), torch.randn(2, 1, 32, 40, generator=g) * 10 - 50


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_tiny_forward_backward(scale):
    torch.manual_seed(0)
    model = SSLTIE(SSLTIEConfig(width=16, scales=(scale,))).train()
    image, spec = _tiny_batch()
    out = model.loss(image, spec, generator=torch.Generator().manual_seed(1))
    assert set(out) == {"loss", "loss/cl", "loss/cl_ts", "loss/equi"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in out.values())
    torch.testing.assert_close(out["loss"], 0.5 * (out["loss/cl"] + out["loss/cl_ts"]) + out["loss/equi"])
    out["loss"].backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.visual.conv1.weight.grad.abs().sum() > 0 and model.audio.conv1.weight.grad.abs().sum() > 0
    step = model.step_outputs(image, spec, params=EquivarianceParams(torch.tensor([3.0, -4.0]), scale, True))
    side = 4 if scale == 1.0 else 2
    assert step["A"].shape == (2, 1, 4, 4) and step["A_t"].shape == step["t_A"].shape == (2, 1, side, side)


def test_switches_change_logits_and_loss_terms():
    torch.manual_seed(0)
    image, spec = _tiny_batch()
    base = SSLTIE(SSLTIEConfig(width=16)).eval()
    widths = {}
    for tri_map in (True, False):
        for hard in (True, False):
            m = SSLTIE(SSLTIEConfig(width=16, tri_map=tri_map, hard_negatives=hard))
            m.load_state_dict(base.state_dict())
            with torch.no_grad():
                widths[(tri_map, hard)] = m.eval().step_outputs(image, spec)["logits"]
    assert widths[(True, True)].shape == (2, 4) and widths[(True, False)].shape == (2, 3)
    torch.testing.assert_close(widths[(True, False)], widths[(False, False)])
    assert not torch.allclose(widths[(True, True)][:, -1], widths[(False, True)][:, -1])
    no_equi = SSLTIE(SSLTIEConfig(width=16, equivariance=False))
    no_equi.load_state_dict(base.state_dict())
    out = no_equi.eval().loss(image, spec)
    assert set(out) == {"loss", "loss/cl"} and torch.equal(out["loss"], out["loss/cl"])


def test_generator_determinism():
    torch.manual_seed(0)
    model = SSLTIE(SSLTIEConfig(width=16)).eval()
    image, spec = _tiny_batch()
    with torch.no_grad():
        a = model.loss(image, spec, generator=torch.Generator().manual_seed(5))
        b = model({"image": image, "spec": spec}, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_shared_audio_pass_matches_two_passes_including_running_stats():
    torch.manual_seed(0)
    shared = SSLTIE(SSLTIEConfig(width=16, share_audio_pass=True)).train()
    twice = SSLTIE(SSLTIEConfig(width=16, share_audio_pass=False)).train()
    twice.load_state_dict(shared.state_dict())
    image, spec = _tiny_batch()
    params = EquivarianceParams(torch.tensor([10.0, -20.0]), 1.0, False)
    la, lb = shared.loss(image, spec, params=params), twice.loss(image, spec, params=params)
    torch.testing.assert_close(la["loss"], lb["loss"])
    la["loss"].backward()
    lb["loss"].backward()
    for (name, pa), pb in zip(shared.named_parameters(), twice.parameters(), strict=True):
        assert (pa.grad - pb.grad).abs().max() <= 1e-5 * pb.grad.abs().max(), name
    torch.testing.assert_close(shared.audio.bn1.running_mean, twice.audio.bn1.running_mean)
    torch.testing.assert_close(shared.audio.layer4[1].bn2.running_var, twice.audio.layer4[1].bn2.running_var)
    assert shared.audio.bn1.momentum == 0.1  # restored after the step


def test_imagenet_init_from_config(tmp_path):
    from torchvision.models import resnet18

    reference = resnet18(weights=None).state_dict()
    path = tmp_path / "r18.pth"
    torch.save(reference, path)
    model = SSLTIE(SSLTIEConfig(imagenet_init=str(path)))
    torch.testing.assert_close(model.visual.layer3[0].conv1.weight, reference["layer3.0.conv1.weight"])
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        SSLTIE(SSLTIEConfig(width=8, imagenet_init=str(tmp_path / "missing.pth")))


def test_config_validation():
    with pytest.raises(ValueError):
        SSLTIEConfig(heatmap_size=7)
    with pytest.raises(ValueError):
        SSLTIEConfig(init="xavier")
    with pytest.raises(ValueError):
        SSLTIEConfig(tau=0.0)


def test_config_rejects_sizes_whose_half_scale_maps_disagree():
    """112 px at scale 0.5 gives a 56 px frame (4x4 map) but a 3x3 transformed map."""
    with pytest.raises(ValueError, match="multiple of 16"):
        SSLTIEConfig(image_size=112, heatmap_size=7)
    SSLTIEConfig(image_size=112, heatmap_size=7, equivariance=False)
    SSLTIEConfig(image_size=112, heatmap_size=7, scales=(1.0,))
    SSLTIEConfig(image_size=128, heatmap_size=8)


def test_init_checkpoint_warm_starts_both_encoders(tmp_path):
    from avssl.checkpoint import CheckpointError, save_checkpoint

    torch.manual_seed(1)
    trained = SSLTIE(SSLTIEConfig(width=8, image_size=64, heatmap_size=4))
    path = tmp_path / "warm.pt"
    save_checkpoint(path, model=trained.state_dict(), epoch=1, step=1, config={"method": "ssltie"})
    torch.manual_seed(2)
    warm = SSLTIE(SSLTIEConfig(width=8, image_size=64, heatmap_size=4, init_checkpoint=str(path)))
    for (name, a), b in zip(trained.state_dict().items(), warm.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(CheckpointError, match="another width"):
        SSLTIE(SSLTIEConfig(width=16, image_size=64, heatmap_size=4, init_checkpoint=str(path)))


def test_audio_roll_shifts_each_training_waveform_and_nothing_else():
    from avssl.augment.audio import random_wave_roll
    from avssl.methods.ssltie.pipeline import SSLTIEBatchTransform

    wave = torch.arange(2 * 8, dtype=torch.float32).reshape(2, 8)
    rolled = random_wave_roll(wave, torch.Generator().manual_seed(0))
    for row, out in zip(wave, rolled, strict=True):  # a circular shift of its own row
        assert any(torch.equal(torch.roll(row, -k), out) for k in range(8))
    assert torch.equal(rolled, random_wave_roll(wave, torch.Generator().manual_seed(0)))

    batch = {"image": torch.zeros(2, 3, 64, 64, dtype=torch.uint8), "wave": torch.randn(2, 16000),
             "sample_rate": 16000, "id": ["a", "b"]}
    plain = SSLTIEBatchTransform(64, 1.0, invariance=False)
    roll = SSLTIEBatchTransform(64, 1.0, invariance=False, audio_roll=True)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert not torch.equal(plain(batch, g(), train=True)["spec"], roll(batch, g(), train=True)["spec"])
    assert torch.equal(plain(batch, None)["spec"], roll(batch, None)["spec"])  # evaluation hears the clip as it is


def test_centred_embeddings_spread_the_audio_and_train():
    torch.manual_seed(0)
    cfg = dict(width=8, image_size=64, heatmap_size=4)
    plain, centred = SSLTIE(SSLTIEConfig(**cfg)), SSLTIE(SSLTIEConfig(**cfg, center_embeddings="both",
                                                                      exclude_own_pair=True))
    audio_only = SSLTIE(SSLTIEConfig(**cfg, center_embeddings="audio"))
    assert set(audio_only.state_dict()) - set(plain.state_dict()) == {
        f"audio_center.{b}" for b in ("running_mean", "running_var", "num_batches_tracked")}
    with pytest.raises(ValueError, match="center_embeddings"):
        SSLTIEConfig(center_embeddings="visual")
    assert set(centred.state_dict()) - set(plain.state_dict()) == {
        f"{m}_center.{b}" for m in ("visual", "audio") for b in ("running_mean", "running_var", "num_batches_tracked")}
    image, spec = torch.randn(6, 3, 64, 64), torch.randn(6, 1, 257, 40)
    centred.train()
    out = centred.loss(image, spec, torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and centred.audio.conv1.weight.grad.abs().sum() > 0
    cos = lambda m: (lambda a: (a @ a.t())[~torch.eye(6, dtype=torch.bool)].mean())(m.encode_audio(spec))  # noqa: E731
    plain.train()
    with torch.no_grad():
        assert cos(centred) < 0.5 < cos(plain)  # the released encoders' embeddings share one direction
