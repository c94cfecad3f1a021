"""FNAC: golden parity with the authors' code (../shared/golden/peers, README there) and behaviour
on tiny random inputs (no golden needed)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from avssl.methods.fnac import (
    FNAC,
    FNACBatchTransform,
    FNACConfig,
    convert_official_state_dict,
    load_official,
    losses,
)
from avssl.methods.fnac.pipeline import fnac_on_epoch_end, spec_masks_fnac
from avssl.models.mil import upsample
from golden_utils import dequantise_int8, dropout_keeps, peers_inputs, peers_loader, resolve_same_as

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = dict(rtol=1e-5, atol=1e-5)  # README: embeddings, maps and losses
GRAD_NAMES = ["imgnet.conv1.weight", "imgnet.layer4.1.bn2.weight", "audnet.conv1.weight",
              "audnet.layer1.0.conv1.weight", "img_proj.bias", "aud_proj.bias"]
RUNS = {"train": (5, 0.0), "train_warmup": (0, 0.0), "train_dropout0.9": (5, 0.9)}  # run -> (epoch, dropout_img)


@pytest.fixture(scope="module")
def peers(golden_dir):
    return peers_loader(golden_dir, "FNAC")


@pytest.fixture(scope="module")
def io(peers):
    """fnac_io.npz with its ``<key>__same_as`` entries resolved (to itself or ezvsl_io.npz)."""
    return resolve_same_as(peers("fnac_io.npz"), peers)


@pytest.fixture(scope="module")
def official_sd(peers):
    sd = dequantise_int8(peers("peers_resnet18_int8.npz"))
    sd.update(dequantise_int8(peers("fnac_heads_int8.npz")))
    return sd


@pytest.fixture(scope="module")
def inputs(peers):
    return peers_inputs(peers)


def _model(official_sd, **kw) -> FNAC:
    model = FNAC(FNACConfig(**kw))
    report = load_official(model, official_sd, strict=True)
    assert report.ok and not report.dropped and len(report.loaded) == len(official_sd)
    return model


def _close(ours: torch.Tensor, ref: np.ndarray, **tol) -> None:
    torch.testing.assert_close(ours.detach().double(), torch.from_numpy(np.asarray(ref)).double(), **(tol or TOL))


class _FixedMask(torch.nn.Module):
    """The recorded dropout of a golden run: ``x * keep / (1 - p)``."""

    def __init__(self, keep: torch.Tensor, p: float) -> None:
        super().__init__()
        self.keep, self.scale = keep, 1.0 / (1.0 - p)

    def forward(self, x):
        return x * self.keep.to(x.dtype) * self.scale


def _keep(io, run: str) -> torch.Tensor:
    return dropout_keeps(io, run)[0]


# -- converter -----------------------------------------------------------------------------
def test_converter_reports_loaded_dropped_missing(official_sd):
    wrapped = {"model": {f"module.{k}": v for k, v in official_sd.items()}, "epoch": 3}
    wrapped["model"]["module.audnet.fc.bias"] = torch.zeros(1000)
    del wrapped["model"]["module.img_proj.bias"]
    ours, report = convert_official_state_dict(wrapped)
    assert list(report.dropped) == ["audnet.fc.bias"] and report.missing == ["img_proj.bias"]
    assert not report.unexpected and len(report.loaded) == len(official_sd) - 1
    torch.testing.assert_close(ours["visual.conv1.weight"], official_sd["imgnet.conv1.weight"])
    with pytest.raises(ValueError, match="img_proj.bias"):
        convert_official_state_dict(wrapped, strict=True)


# -- golden parity -------------------------------------------------------------------------
def test_eval_forward_and_losses_match_golden(official_sd, io, inputs):
    image, spec = inputs
    model = _model(official_sd).eval()  # dropout_img 0.9, inactive in eval
    with torch.no_grad():
        _close(model.visual(image).flatten(1), io["eval_imgnet_out"])
        _close(model.audio(spec), io["eval_audnet_out"])
        out = model.step_outputs(image, spec)
    for ours, key in (("img", "eval_img"), ("aud", "eval_aud"), ("Slogits", "eval_Slogits"), ("Savl", "eval_Savl")):
        _close(out[ours], io[key])
    for term in losses.TERMS:
        _close(out[term], io[f"eval_loss_{term}"])


def test_pure_losses_match_golden_from_embeddings(io):
    terms, slogits = losses.fnac_losses(torch.from_numpy(io["eval_img"]), torch.from_numpy(io["eval_aud"]))
    for term in losses.TERMS:
        _close(terms[term], io[f"eval_loss_{term}"])
    _close(slogits, io["eval_Slogits"])


@pytest.mark.parametrize("run", sorted(RUNS))
def test_train_step_matches_golden_losses_and_gradients(official_sd, io, inputs, run):
    image, spec = inputs
    epoch, p = RUNS[run]
    model = _model(official_sd, dropout_img=p, dropout_aud=0.0).train()
    model.epoch = epoch
    model.img_dropout = _FixedMask(_keep(io, run), p)
    out = model.step_outputs(image, spec)
    for ours, key in (("Slogits", "Slogits"), ("Savl", "Savl"), *((t, f"loss_{t}") for t in losses.TERMS)):
        _close(out[ours], io[f"{run}_{key}"])
    _close(out["loss"], io[f"{run}_loss_total"])
    out["loss"].backward()
    params = dict(model.named_parameters())
    for name in GRAD_NAMES:
        ours = name.replace("imgnet.", "visual.", 1).replace("audnet.", "audio.", 1)
        ref = io[f"{run}_grad::{name}"]
        err = float((params[ours].grad - torch.from_numpy(ref)).abs().max()) / float(np.abs(ref).max())
        assert err < 1e-4, (run, name, err)  # README: 1e-4 of the tensor's max |value|


@pytest.mark.parametrize("tag,score", [("test", "validate"), ("test_validate2", "validate2")])
def test_both_test_scorings_match_golden(official_sd, io, inputs, tmp_path, tag, score):
    image, spec = inputs
    sd = {k.removeprefix("imgnet."): v for k, v in official_sd.items() if k.startswith("imgnet.")}
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save({**sd, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, path)
    model = _model(official_sd, ogl_weights=str(path), score=score).eval()
    maps = model.test_maps(image, spec, 224)
    for ours, key in (("av_in", "av_map_in"), ("av", "av_map_224"), ("obj_in", "obj_map_in"), ("obj", "obj_map_224")):
        _close(maps[ours], io[f"{tag}_{key}"])
    for e in ("av", "obj", "av_obj"):  # the median thresholds of the min-max maps, README tol 1e-6
        thr = maps[f"pred_{e}"].flatten(1).sort(dim=1).values[:, int(224 * 224 * 0.5)]
        _close(thr, io[f"{tag}_{e}_thr"], rtol=0, atol=1e-6)
    torch.testing.assert_close(model.infer(image, spec)["heatmap"], maps["pred_av_obj"])
    if tag == "test":  # train.py's per-epoch validation: bicubic, align_corners=False
        _close(upsample(maps["av_in"], 224, "bicubic", False), io["trainval_av_map_224"])
        _close(maps["av_in"], io["eval_Savl"])


# -- behaviour on tiny random inputs (no golden) -------------------------------------------
TINY = dict(width=8, dim=16, image_size=64)


def test_tiny_model_warmup_terms_and_gradients():
    torch.manual_seed(0)
    model = FNAC(FNACConfig(**TINY, warmup_epochs=1))
    image, spec = torch.randn(3, 3, 64, 64), torch.randn(3, 1, 257, 40)
    out = model({"image": image, "spec": spec}, generator=torch.Generator().manual_seed(0))
    assert set(out) == {"loss", *losses.TERMS} and not model.warm
    torch.testing.assert_close(out["loss"], out["nce"])  # the warmup: nce alone
    assert fnac_on_epoch_end(model, None, None, None, 0, "cpu") == {"fnac_warm": 1.0} and model.warm
    out = model({"image": image, "spec": spec}, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["loss"], out["nce"] + 100 * (out["fns1"] + out["tns"] + out["fns2"]))
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert "epoch" not in model.state_dict() and not any("dropout" in k for k in model.state_dict())
    inf = model.eval().infer(image, spec)
    assert inf["heatmap"].shape == (3, 2, 2) and inf["visual"].shape == inf["audio"].shape == (3, 16)


def test_dropout_is_seeded_by_the_step_generator():
    torch.manual_seed(0)
    model = FNAC(FNACConfig(**TINY)).train()
    batch = {"image": torch.randn(2, 3, 64, 64), "spec": torch.randn(2, 1, 257, 40)}
    a = model(batch, generator=torch.Generator().manual_seed(5))["loss"]
    b = model(batch, generator=torch.Generator().manual_seed(5))["loss"]
    c = model(batch, generator=torch.Generator().manual_seed(6))["loss"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_false_negative_terms_vanish_for_matching_distributions():
    # identical audio and per-location visual features: every row softmax is uniform
    img = torch.nn.functional.normalize(torch.ones(4, 8, 3, 3), dim=1)
    aud = torch.nn.functional.normalize(torch.ones(4, 8), dim=1)
    terms, _ = losses.fnac_losses(img, aud, 0.1)
    for t in ("fns1", "tns", "fns2"):
        assert float(terms[t]) < 1e-7
    m = losses.foreground_mask(torch.tensor([[[0.0, 1.0], [0.7, 0.5]]]))
    assert m.tolist() == [[[0.0, 1.0], [1.0, 0.0]]]


def test_spec_masks_follow_the_authors_axes():
    x = torch.ones(64, 257, 200, dtype=torch.float64)
    y = spec_masks_fnac(x, 10, 10, torch.Generator().manual_seed(0))
    zero_rows = (y == 0).all(dim=2).sum(1)  # frequency masks: whole rows
    zero_cols = (y == 0).all(dim=1).sum(1)  # time masks: whole columns
    assert int(zero_rows.max()) <= 9 and int(zero_cols.max()) <= 9
    assert bool((zero_cols == 0).any())  # a time start >= 200 masks nothing
    assert torch.equal(y, spec_masks_fnac(x, 10, 10, torch.Generator().manual_seed(0)))
    assert torch.equal(spec_masks_fnac(x, 0, 0, torch.Generator().manual_seed(0)), x)


def test_transform_crops_without_flip_and_masks_only_in_training():
    full = torch.zeros(2, 3, 70, 80, dtype=torch.uint8)
    full[..., :] = torch.arange(80, dtype=torch.uint8)  # columns increase left to right
    batch = {"full": full, "full_hw": torch.tensor([[70, 80], [70, 80]]), "image": full[..., :64, :64],
             "wave": torch.randn(2, 16000) * 0.1, "sample_rate": torch.tensor([16000, 16000])}
    t = FNACBatchTransform(64)
    tr = t(batch, torch.Generator().manual_seed(0), train=True)
    assert tr["image"].shape == (2, 3, 64, 64) and tr["spec"].shape == (2, 1, 257, 66)
    assert bool((tr["image"][:, 0, 0, 1:] > tr["image"][:, 0, 0, :-1]).all())  # never flipped
    ev = t(batch, None, train=False)
    assert torch.equal(ev["image"], t(batch, None, train=False)["image"])
    assert not bool((ev["spec"] == 0).all(dim=2).any()) and not bool((ev["spec"] == 0).all(dim=3).any())


def test_config_validation():
    with pytest.raises(ValueError, match="score"):
        FNACConfig(score="validate3")
    with pytest.raises(ValueError, match="dropout"):
        FNACConfig(dropout_img=1.0)
    c = FNACConfig()
    assert (c.tau, c.dim, c.dropout_img, c.dropout_aud, c.warmup_epochs, c.fns1_weight) == (0.03, 512, 0.9, 0.0, 5, 100.0)
