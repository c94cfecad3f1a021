"""SLAVC: golden parity with the authors' code (../shared/golden/peers, README there) and behaviour
on tiny random inputs (no golden needed)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from avssl.eval.localisation import ciou
from avssl.eval.open_set import slavc_epoch_metrics, slavc_open_set_stats
from avssl.methods.slavc import (
    SLAVC,
    SLAVCBatchTransform,
    SLAVCConfig,
    confidence,
    convert_official_state_dict,
    load_official,
    losses,
    momentum_update_,
)
from avssl.methods.slavc.pipeline import slavc_param_groups
from golden_utils import dequantise_int8, dropout_keeps, peers_inputs, peers_loader, resolve_same_as

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = dict(rtol=1e-5, atol=1e-5)  # README: embeddings, maps and losses
GRAD_NAMES = ["imgnet.conv1.weight", "audnet.layer1.0.conv1.weight", "img_proj1.bias", "img_proj2.bias",
              "aud_proj1.bias", "aud_proj2.bias"]
MOM_NAMES = ["momentum_imgnet.conv1.weight", "momentum_audnet.layer4.1.bn2.weight", "momentum_img_proj1.bias",
             "momentum_img_proj2.bias", "momentum_aud_proj1.bias", "momentum_aud_proj2.bias"]
# the train script's arguments (--use_mom_eval --m_img 0.999 --m_aud 0.999 --dropout_aud 0)
TRAIN = dict(mom_eval=True, momentum_img=0.999, momentum_aud=0.999, dropout_aud=0.0)
EPOCH = ("precision_at_50", "ap_at_50", "f1_at_50")
VARIANTS = {"test": (False, False), "test_relpred": (True, False), "test_momeval": (False, True),
            "test_relpred_momeval": (True, True)}  # tag -> (relative, mom_eval)


def _ours(name: str) -> str:
    """An official parameter name -> ours."""
    for old, new in (("momentum_imgnet.", "momentum_visual."), ("momentum_audnet.", "momentum_audio."),
                     ("imgnet.", "visual."), ("audnet.", "audio.")):
        if name.startswith(old):
            return new + name.removeprefix(old)
    return name


@pytest.fixture(scope="module")
def peers(golden_dir):
    return peers_loader(golden_dir, "SLAVC")


@pytest.fixture(scope="module")
def io(peers):
    """slavc_io.npz with its ``<key>__same_as`` entries resolved (to itself or ezvsl_io.npz)."""
    return resolve_same_as(peers("slavc_io.npz"), peers)


@pytest.fixture(scope="module")
def official_sd(peers):
    """The official SLAVC state dict: shared ResNet-18s (also as the momentum backbones, buffers
    included) + the online and momentum heads."""
    base = dequantise_int8(peers("peers_resnet18_int8.npz"))
    sd = dict(base)
    sd.update({f"momentum_{k}": v.clone() for k, v in base.items()})
    sd.update(dequantise_int8(peers("slavc_heads_int8.npz")))
    return sd


@pytest.fixture(scope="module")
def inputs(peers):
    return peers_inputs(peers)


def _model(official_sd, **kw) -> SLAVC:
    model = SLAVC(SLAVCConfig(**kw))
    report = load_official(model, official_sd, strict=True)
    assert report.ok and not report.dropped and len(report.loaded) == len(official_sd)
    return model


def _close(ours: torch.Tensor, ref: np.ndarray, **tol) -> None:
    torch.testing.assert_close(ours.detach().double(), torch.from_numpy(np.asarray(ref)).double(), **(tol or TOL))


def _rel_err(ours: torch.Tensor, ref: np.ndarray) -> float:
    return float((ours.detach() - torch.from_numpy(ref)).abs().max()) / float(np.abs(ref).max())


class _FixedMasks(torch.nn.Module):
    """The recorded dropouts of a golden run, one per call (online first, then momentum)."""

    def __init__(self, keeps: list[torch.Tensor], p: float) -> None:
        super().__init__()
        self.keeps, self.scale, self.calls = keeps, 1.0 / (1.0 - p), 0

    def forward(self, x):
        keep = self.keeps[self.calls]
        self.calls += 1
        return x * keep.to(x.dtype) * self.scale


# -- converter -----------------------------------------------------------------------------
def test_converter_maps_momentum_networks_and_reports(official_sd):
    wrapped = {"model": {f"module.{k}": v for k, v in official_sd.items()}, "epoch": 3}
    wrapped["model"]["module.momentum_audnet.fc.bias"] = torch.zeros(1000)
    del wrapped["model"]["module.momentum_img_proj2.bias"]
    ours, report = convert_official_state_dict(wrapped)
    assert list(report.dropped) == ["momentum_audnet.fc.bias"] and report.missing == ["momentum_img_proj2.bias"]
    assert not report.unexpected and len(report.loaded) == len(official_sd) - 1
    torch.testing.assert_close(ours["momentum_visual.bn1.running_var"], official_sd["momentum_imgnet.bn1.running_var"])
    with pytest.raises(ValueError, match="momentum_img_proj2.bias"):
        convert_official_state_dict(wrapped, strict=True)


# -- golden parity -------------------------------------------------------------------------
@pytest.mark.parametrize("mom", [0, 1])
def test_eval_forward_and_loss_match_golden(official_sd, io, inputs, mom):
    image, spec = inputs
    model = _model(official_sd, mom_eval=bool(mom)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        _close(model.visual(image).flatten(1), io["eval_imgnet_out"])
        _close(model.audio(spec), io["eval_audnet_out"])
        out = model.step_outputs(image, spec)
    for ours, key in ((out["img"][0], "eval_img1"), (out["img"][1], "eval_img2"), (out["aud"][0], "eval_aud1"),
                      (out["aud"][1], "eval_aud2"), (out["aud_trg"][0], "eval_aud1_mom"),
                      (out["aud_trg"][1], "eval_aud2_mom"), (out["loss"], f"eval_mom{mom}_loss"),
                      (out["Savl"], f"eval_mom{mom}_Savl")):
        _close(ours, io[key])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # no EMA in eval


def test_pure_loss_matches_golden_from_golden_features(official_sd, io, inputs):
    """The pure loss on the stored online and momentum-audio features (the momentum visual maps,
    not stored, from the momentum network, whose parity the eval test checks through the loss)."""
    image, _ = inputs
    with torch.no_grad():
        img1_t, img2_t = _model(official_sd).eval().image_features(image, momentum=True)
    t = {k: torch.from_numpy(io[f"eval_{k}"]) for k in ("img1", "img2", "aud1", "aud2", "aud1_mom", "aud2_mom")}
    img1 = t["img1"].clone().requires_grad_()
    out = losses.slavc_loss(img1, t["img2"], t["aud1"], t["aud2"], img1_t, img2_t, t["aud1_mom"], t["aud2_mom"])
    _close(out["loss"], io["eval_mom0_loss"])
    torch.testing.assert_close(out["loss"], out["loss_i2a"] + out["loss_a2i"])
    out["loss"].backward()
    assert torch.isfinite(img1.grad).all() and float(img1.grad.abs().sum()) > 0


@pytest.mark.parametrize("run,p", [("train", 0.0), ("train_dropout0.9", 0.9)])
def test_train_step_matches_golden_loss_gradients_and_ema(official_sd, io, inputs, run, p):
    image, spec = inputs
    model = _model(official_sd, dropout_img=p, **TRAIN).train()
    if p:
        model.img_dropout = _FixedMasks(dropout_keeps(io, run), p)
    out = model.step_outputs(image, spec)
    if p:
        assert model.img_dropout.calls == 2  # online, then the momentum targets
    _close(out["loss"], io[f"{run}_loss"])
    _close(out["loss"], io[f"{run}_loss_total"])
    _close(out["Savl"], io[f"{run}_Savl"])
    out["loss"].backward()
    params = dict(model.named_parameters())
    for name in GRAD_NAMES:
        err = _rel_err(params[_ours(name)].grad, io[f"{run}_grad::{name}"])
        assert err < 1e-4, (run, name, err)  # README: 1e-4 of the tensor's max |value|
    assert all(params[_ours(n)].grad is None for n in MOM_NAMES)
    if run == "train":
        for name in MOM_NAMES:  # one EMA step from the loaded state
            _close(params[_ours(name)], io[f"train_after_forward::{name}"])


def test_two_adam_steps_match_golden(official_sd, io, inputs):
    image, spec = inputs
    model = _model(official_sd, dropout_img=0.0, **TRAIN).train()
    opt = torch.optim.Adam([g["params"] for g in slavc_param_groups(model, None)][0], lr=1e-4, weight_decay=0)
    params = dict(model.named_parameters())
    for it in (1, 2):
        opt.zero_grad()
        out = model.step_outputs(image, spec)
        _close(out["loss"], io["adam2_loss_total"][it - 1])
        out["loss"].backward()
        for name in GRAD_NAMES:
            err = _rel_err(params[_ours(name)].grad, io[f"adam2_iter{it}_grad::{name}"])
            assert err < (1e-4 if it == 1 else 1e-2), (it, name, err)  # README: iteration 2 to 1e-2
        opt.step()
    _close(out["Savl"], io["adam2_Savl_iter2"])
    for name in GRAD_NAMES + MOM_NAMES:
        _close(params[_ours(name)], io[f"adam2_final::{name}"], rtol=0, atol=2e-4)  # README atol 2e-4


def test_single_momentum_update_matches_golden(official_sd, io):
    model = _model(official_sd)
    momentum_update_(model.momentum_aud_proj1, model.aud_proj1, 0.999)
    _close(model.momentum_aud_proj1.bias, io["momupdate_m0.999::momentum_aud_proj1.bias"])
    assert not model.momentum_aud_proj1.bias.requires_grad


@pytest.fixture(scope="module")
def ogl_file(official_sd, tmp_path_factory):
    sd = {k.removeprefix("imgnet."): v for k, v in official_sd.items() if k.startswith("imgnet.")}
    path = tmp_path_factory.mktemp("ogl") / "resnet18_imagenet.pth"
    torch.save({**sd, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, path)
    return str(path)


@pytest.mark.parametrize("tag", sorted(VARIANTS))
def test_four_test_variants_match_golden(official_sd, io, inputs, peers, ogl_file, tag):
    image, spec = inputs
    relative, mom = VARIANTS[tag]
    model = _model(official_sd, ogl_weights=ogl_file, relative_prediction=relative, mom_eval=mom,
                   dropout_img=0.0).eval()
    maps = model.test_maps(image, spec, 224)
    for ours, key in (("av_in", "av_map_in"), ("av", "av_map_224"), ("obj_in", "obj_map_in"), ("obj", "obj_map_224")):
        _close(maps[ours], io[f"{tag}_{key}"])
    gt = peers("peers_inputs.npz")["gt_map"]
    nb = (io["dataset_bboxes_padded"][:, :, 0] >= 0).sum(1)
    area = gt.reshape(len(gt), -1).sum(1, dtype=np.float64)
    for e in ("av", "obj", "av_obj"):
        _close(maps[f"conf_{e}"], io[f"{tag}_{e}_conf"], rtol=0, atol=1e-6)  # README: thresholds 1e-6
        # README: thresholds 1e-6; this variant's AV+OGL map is the one the README saw move
        # between runs (a near-tie at the median): 1.3e-6 here
        _close(maps[f"thr_{e}"], io[f"{tag}_{e}_thr"], rtol=0, atol=2e-6 if tag == "test_relpred_momeval" else 1e-6)
        binary = (maps[f"pred_{e}"] >= maps[f"thr_{e}"][:, None, None]).float().numpy()
        ours = ciou(binary, gt)
        np.testing.assert_allclose(ours, io[f"{tag}_{e}_ciou"], rtol=0, atol=1e-4)
        # the open-set scoring of these 4 pairs (README: exact)
        stats = slavc_open_set_stats(nb, ours, maps[f"conf_{e}"].numpy(), area)
        ref = json.loads(str(io[f"{tag}_{e}_stats_json"]))
        assert {k: v for k, v in stats.items() if not (isinstance(v, float) and math.isnan(v))} == \
            {k: v for k, v in ref.items() if v is not None}
        epoch = slavc_epoch_metrics(nb, ours, maps[f"conf_{e}"].numpy())
        assert [epoch[k] for k in EPOCH] == [float(io[f"{tag}_{e}_{k}"]) for k in EPOCH]
    torch.testing.assert_close(model.infer(image, spec)["heatmap"], maps["pred_av_obj"])


def test_train_validation_map_matches_golden(official_sd, io, inputs, peers):
    image, spec = inputs  # train.py validate(): bicubic, align_corners=False, relative threshold
    model = _model(official_sd, **{**TRAIN, "mom_eval": False}).eval()  # the recorded run: online features
    maps = model.test_maps(image, spec, 224, relative=True, mode="bicubic", align_corners=False)
    _close(maps["av"], io["trainval_av_map_224"])
    # the min-max of a score map spanning ~0.05 magnifies the bicubic map's float32 rounding
    # (2e-6 at 1/tau scale) twentyfold: 1.1e-6 here, so 2e-6 (README: 1e-6)
    _close(maps["thr_av"], io["trainval_thr"], rtol=0, atol=2e-6)
    _close(maps["conf_av"], io["trainval_conf"], rtol=0, atol=1e-6)
    binary = (maps["pred_av"] >= maps["thr_av"][:, None, None]).float().numpy()
    nb = (io["dataset_bboxes_padded"][:, :, 0] >= 0).sum(1)
    epoch = slavc_epoch_metrics(nb, ciou(binary, peers("peers_inputs.npz")["gt_map"]), maps["conf_av"].numpy())
    assert [epoch[k] for k in EPOCH] == io["trainval_returned"].tolist()  # (precision, ap, f1)


# -- behaviour on tiny random inputs (no golden) -------------------------------------------
TINY = dict(width=8, dim=16, image_size=64)


def test_tiny_training_step_updates_momentum_and_trains_online_only():
    torch.manual_seed(0)
    model = SLAVC(SLAVCConfig(**TINY, momentum_img=0.5, momentum_aud=0.9)).train()
    with torch.no_grad():  # make the online networks differ from their copies
        for p in model.online_parameters():
            p.add_(0.01)
    before = {n: p.clone() for n, p in model.named_parameters()}
    image, spec = torch.randn(3, 3, 64, 64), torch.randn(3, 1, 257, 40)
    out = model({"image": image, "spec": spec}, generator=torch.Generator().manual_seed(0))
    assert set(out) == {"loss", *losses.TERMS}
    torch.testing.assert_close(out["loss"], out["loss_i2a"] + out["loss_a2i"])
    out["loss"].backward()
    params = dict(model.named_parameters())
    for name, p in params.items():
        if name.startswith("momentum_"):
            base = name.removeprefix("momentum_")
            m = 0.5 if base.split(".")[0] in ("visual", "img_proj1", "img_proj2") else 0.9
            torch.testing.assert_close(p, m * before[name] + (1 - m) * before[base])
            assert p.grad is None and not p.requires_grad
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all()
    ids = {id(p) for p in slavc_param_groups(model, None)[0]["params"]}
    assert ids == {id(p) for n, p in params.items() if not n.startswith("momentum_")}
    assert any(k.startswith("momentum_visual.bn1.running") for k in model.state_dict())


def test_eval_forward_and_inference_do_not_update_momentum():
    torch.manual_seed(0)
    model = SLAVC(SLAVCConfig(**TINY)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    image, spec = torch.randn(2, 3, 64, 64), torch.randn(2, 1, 257, 40)
    model({"image": image, "spec": spec})
    inf = model.infer(image, spec)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert inf["heatmap"].shape == (2, 2, 2) and inf["visual"].shape == inf["audio"].shape == (2, 16)
    assert float(inf["heatmap"].min()) >= 0 and float(inf["heatmap"].max()) <= 1  # s_av in [0, 1]
    rel = SLAVC(SLAVCConfig(**TINY, relative_prediction=True))
    rel.load_state_dict(model.state_dict())
    h = rel.eval().infer(image, spec)["heatmap"].flatten(1)
    torch.testing.assert_close(h.amax(1), torch.ones(2))
    torch.testing.assert_close(h.amin(1), torch.zeros(2))


def test_dropout_is_seeded_by_the_step_generator():
    torch.manual_seed(0)
    model = SLAVC(SLAVCConfig(**TINY, momentum_img=1.0, momentum_aud=1.0)).train()
    batch = {"image": torch.randn(2, 3, 64, 64), "spec": torch.randn(2, 1, 257, 40)}
    a = model(batch, generator=torch.Generator().manual_seed(5))["loss"]
    b = model(batch, generator=torch.Generator().manual_seed(5))["loss"]
    c = model(batch, generator=torch.Generator().manual_seed(6))["loss"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_test_maps_thresholds_and_confidence():
    torch.manual_seed(0)
    model = SLAVC(SLAVCConfig(**TINY)).eval()
    image, spec = torch.randn(2, 3, 64, 64), torch.randn(2, 1, 257, 40)
    ab = model.test_maps(image, spec)
    assert ab["av"].shape == (2, 64, 64) and torch.equal(ab["pred_av"], ab["s_av"])
    assert torch.equal(ab["thr_av"], torch.full((2,), 0.5))
    rel = model.test_maps(image, spec, relative=True)
    flat = rel["pred_av"].flatten(1)
    torch.testing.assert_close(rel["thr_av"], flat.sort(1).values[:, 64 * 64 // 2])
    assert "obj" not in ab and not model.has_ogl
    x = torch.arange(10.0).view(1, 10)  # top ceil(10 / 4) = 3 values
    torch.testing.assert_close(confidence(x), torch.tensor([8.0], dtype=torch.float64))


def test_transform_flips_and_crops_in_training():
    full = torch.zeros(4, 3, 70, 80, dtype=torch.uint8)
    full[..., :] = torch.arange(80, dtype=torch.uint8)
    batch = {"full": full, "full_hw": torch.tensor([[70, 80]] * 4), "image": full[..., :64, :64],
             "wave": torch.randn(4, 16000) * 0.1, "sample_rate": torch.tensor([16000] * 4)}
    t = SLAVCBatchTransform(64)
    tr = t(batch, torch.Generator().manual_seed(0), train=True)
    assert tr["image"].shape == (4, 3, 64, 64) and tr["spec"].shape == (4, 1, 257, 66)
    ev = t(batch, None, train=False)
    assert torch.equal(ev["spec"], tr["spec"])  # no audio augmentation


def test_config_validation():
    with pytest.raises(ValueError, match="momenta"):
        SLAVCConfig(momentum_img=1.5)
    with pytest.raises(ValueError, match="dropout"):
        SLAVCConfig(dropout_img=1.0)
    c = SLAVCConfig()
    assert (c.tau, c.dim, c.dropout_img, c.dropout_aud, c.momentum_img, c.momentum_aud, c.ogl_alpha,
            c.pred_threshold, c.pred_size) == (0.03, 512, 0.9, 0.0, 0.999, 0.999, 0.9, 0.5, 0.5)
