"""EZ-VSL: golden parity with the authors' code (../shared/golden/peers, README there) and
behaviour on tiny random inputs (no golden needed)."""
from __future__ import annotations

import logging
import wave as wavmod

import numpy as np
import pytest
import torch
from PIL import Image

from avssl.data.datasets import collate
from avssl.data.record import Record
from avssl.methods.ezvsl import (
    EZVSL,
    EZVSLConfig,
    convert_official_state_dict,
    load_official,
    losses,
)
from avssl.methods.ezvsl.model import minmax, upsample
from avssl.methods.ezvsl.pipeline import (
    EZVSLBatchTransform,
    EZVSLDataset,
    centre_cut,
    ezvsl_logspec,
    random_crop_flip,
    square_frame,
)
from golden_utils import dequantise_int8, peers_inputs, peers_loader

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = dict(rtol=1e-5, atol=1e-5)  # README: embeddings, maps and losses
GRAD_NAMES = ["imgnet.conv1.weight", "imgnet.layer4.1.bn2.weight", "audnet.conv1.weight",
              "audnet.layer1.0.conv1.weight", "img_proj.bias", "aud_proj.bias"]


@pytest.fixture(scope="module")
def peers(golden_dir):
    return peers_loader(golden_dir, "EZ-VSL")


@pytest.fixture(scope="module")
def official_sd(peers):
    """The official EZVSL state dict: shared int8 ResNet-18s + EZ-VSL heads, dequantised."""
    sd = dequantise_int8(peers("peers_resnet18_int8.npz"))
    sd.update(dequantise_int8(peers("ezvsl_heads_int8.npz")))
    return sd


@pytest.fixture(scope="module")
def io(peers):
    return peers("ezvsl_io.npz")


@pytest.fixture(scope="module")
def inputs(peers):
    return peers_inputs(peers)


def _model(official_sd, **kw) -> EZVSL:
    model = EZVSL(EZVSLConfig(**kw))
    report = load_official(model, official_sd, strict=True)
    assert report.ok and not report.dropped and len(report.loaded) == len(official_sd)
    return model


def _close(ours: torch.Tensor, ref: np.ndarray, **tol) -> None:
    torch.testing.assert_close(ours.detach().float(), torch.from_numpy(np.asarray(ref)).float(), **(tol or TOL))


def _ogl_state(official_sd) -> dict:
    """The OGL network of the golden run: ``imgnet.*`` without the prefix, as a torchvision resnet18 dict."""
    sd = {k.removeprefix("imgnet."): v for k, v in official_sd.items() if k.startswith("imgnet.")}
    return {**sd, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}


# -- converter -----------------------------------------------------------------------------
def test_converter_renames_and_reports(official_sd):
    wrapped = {"model": {f"module.{k}": v for k, v in official_sd.items()}, "epoch": 3}
    wrapped["model"]["module.imgnet.fc.weight"] = torch.zeros(1000, 512)
    wrapped["model"]["module.mystery.weight"] = torch.zeros(1)
    del wrapped["model"]["module.aud_proj.bias"]
    ours, report = convert_official_state_dict(wrapped)
    assert list(report.dropped) == ["imgnet.fc.weight"] and report.unexpected == ["mystery.weight"]
    assert report.missing == ["aud_proj.bias"]
    torch.testing.assert_close(ours["audio.conv1.weight"], official_sd["audnet.conv1.weight"])
    torch.testing.assert_close(ours["visual.layer4.1.bn2.running_var"], official_sd["imgnet.layer4.1.bn2.running_var"])
    with pytest.raises(ValueError, match="mystery"):
        convert_official_state_dict(wrapped, strict=True)
    with pytest.raises(ValueError, match="audio.bn1.weight"):
        convert_official_state_dict(dict(official_sd, **{"audnet.bn1.weight": torch.ones(3)}))


# -- golden parity: eval forward, loss, train step -----------------------------------------
def test_eval_forward_matches_golden(official_sd, io, inputs):
    image, spec = inputs
    model = _model(official_sd).eval()
    with torch.no_grad():
        _close(model.visual(image).flatten(1), io["eval_imgnet_out"])
        _close(model.audio(spec), io["eval_audnet_out"])
        out = model.step_outputs(image, spec)
    for ours, key in (("img", "eval_img"), ("aud", "eval_aud"), ("Slogits", "eval_Slogits"),
                      ("Savl", "eval_Savl"), ("loss", "eval_loss")):
        _close(out[ours], io[key])


def test_train_step_matches_golden_losses_and_gradients(official_sd, io, inputs):
    image, spec = inputs
    model = _model(official_sd).train()
    out = model.step_outputs(image, spec)
    for ours, key in (("img", "train_img"), ("aud", "train_aud"), ("Slogits", "train_Slogits"),
                      ("Savl", "train_Savl"), ("loss", "train_loss")):
        _close(out[ours], io[key])
    assert abs(float(out["loss"].detach()) - float(io["train_loss_total"])) < 1e-5
    out["loss"].backward()
    params = dict(model.named_parameters())
    for name in GRAD_NAMES:
        ours = name.replace("imgnet.", "visual.", 1).replace("audnet.", "audio.", 1)
        ref = io[f"train_grad::{name}"]
        err = float((params[ours].grad - torch.from_numpy(ref)).abs().max()) / float(np.abs(ref).max())
        assert err < 1e-4, (name, err)  # README: 1e-4 of the tensor's max |value|


def test_pure_loss_matches_golden_from_embeddings(io):
    loss, slogits = losses.ezvsl_mil_loss(torch.from_numpy(io["eval_img"]), torch.from_numpy(io["eval_aud"]))
    _close(loss, io["eval_loss"])
    _close(slogits, io["eval_Slogits"])


def test_test_maps_with_ogl_match_golden(official_sd, io, inputs, tmp_path):
    image, spec = inputs
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(_ogl_state(official_sd), path)
    model = _model(official_sd, ogl_weights=str(path)).eval()
    assert model.has_ogl and not any(k.startswith("_ogl") for k in model.state_dict())
    maps = model.test_maps(image, spec, 224)
    for ours, key in (("av_in", "test_av_map_in"), ("av", "test_av_map_224"),
                      ("obj_in", "test_obj_map_in"), ("obj", "test_obj_map_224")):
        _close(maps[ours], io[key])
    assert list(io["test_interp_modes"]) == ["bilinear/align_corners=True"] * 2
    for e in ("av", "obj", "av_obj"):  # the median thresholds of the min-max maps, README tol 1e-6
        thr = maps[f"pred_{e}"].flatten(1).sort(dim=1).values[:, int(224 * 224 * 0.5)]
        _close(thr, io[f"test_{e}_thr"], rtol=0, atol=1e-6)
    torch.testing.assert_close(model.infer(image, spec)["heatmap"], maps["pred_av_obj"])
    # train.py's per-epoch validation: bicubic, align_corners=False
    assert str(io["trainval_interp_mode"]) == "bicubic/align_corners=False"
    _close(upsample(maps["av_in"], 224, "bicubic", False), io["trainval_av_map_224"])


# -- golden parity: front-end and image transform ------------------------------------------
def _names(inp: dict) -> list[tuple[str, str]]:
    out = [(f"s{i}", f"s{i}_{inp[f's{i}_id']}") for i in range(4)]
    return out + [(p, p) for p in ("x0_mono_22050_4s", "x1_mono_16k_3.3s")]


def test_frontend_matches_golden_logspec(peers):
    inp, fe = peers("peers_inputs.npz"), peers("peers_frontend.npz")
    for prefix, name in _names(inp):
        q, sr = inp[f"{prefix}_wave_int16"], int(inp[f"{prefix}_sr"])
        w = q.astype(np.float32) / 32768  # what soundfile reads
        w = w.mean(axis=1, dtype=np.float32) if w.ndim == 2 else w  # the loader's stereo mean
        x = centre_cut(torch.from_numpy(w), sr, 3.0)
        ours = ezvsl_logspec(x[None], sr)[0]
        ref = fe[f"{name}_logspec"]
        assert ours.dtype == torch.float64 and ours.shape == ref.shape
        assert float((ours - torch.from_numpy(ref)).abs().max()) < 1e-9, name


def _write_wav(path, q: np.ndarray, sr: int) -> None:
    with wavmod.open(str(path), "wb") as f:
        f.setnchannels(1 if q.ndim == 1 else q.shape[1])
        f.setsampwidth(2)
        f.setframerate(sr)
        f.writeframes(np.ascontiguousarray(q, dtype="<i2").tobytes())


def test_dataset_and_transform_give_golden_model_inputs(peers, tmp_path):
    inp = peers("peers_inputs.npz")
    records = []
    for i in range(4):
        Image.fromarray(inp[f"s{i}_frame_rgb_uint8"]).save(tmp_path / f"s{i}.png")
        _write_wav(tmp_path / f"s{i}.wav", inp[f"s{i}_wave_int16"], int(inp[f"s{i}_sr"]))
        records.append(Record(id=str(inp[f"s{i}_id"]), audio=str(tmp_path / f"s{i}.wav"),
                              frames=[str(tmp_path / f"s{i}.png")]))
    ds = EZVSLDataset(records, image_size=224, seconds=3.0)
    batch = collate([ds[i] for i in range(4)])
    out = EZVSLBatchTransform(224)(batch, None, train=False)
    _close(out["image"], inp["image"], rtol=0, atol=1e-6)
    _close(out["spec"], inp["spec"], rtol=0, atol=1e-6)


# -- behaviour on tiny random inputs (no golden) -------------------------------------------
TINY = dict(width=8, dim=16, image_size=64)


def test_tiny_model_shapes_loss_and_gradients():
    torch.manual_seed(0)
    model = EZVSL(EZVSLConfig(**TINY))
    image, spec = torch.randn(3, 3, 64, 64), torch.randn(3, 1, 257, 40)
    out = model.step_outputs(image, spec)
    assert out["img"].shape == (3, 16, 2, 2) and out["aud"].shape == (3, 16)
    assert out["Slogits"].shape == (3, 3, 2, 2) and out["Savl"].shape == (3, 2, 2)
    torch.testing.assert_close(out["img"].norm(dim=1), torch.ones(3, 2, 2))
    loss = model({"image": image, "spec": spec})["loss"]
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())
    inf = model.eval().infer(image, spec)
    assert inf["heatmap"].shape == (3, 2, 2) and inf["visual"].shape == inf["audio"].shape == (3, 16)
    assert not model.has_ogl


def test_loss_is_the_sum_of_both_directions_and_prefers_aligned_pairs():
    torch.manual_seed(1)
    img = torch.nn.functional.normalize(torch.randn(4, 8, 3, 3), dim=1)
    aud = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    loss, s = losses.ezvsl_mil_loss(img, aud, 0.1)
    logits = losses.mil_logits(s)
    t = torch.arange(4)
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(loss, ce(logits, t) + ce(logits.t(), t))
    torch.testing.assert_close(losses.paired_maps(s)[2], s[2, 2])
    aligned = img.clone()
    aligned[:, :, 1, 1] = aud  # each frame holds its own audio at one location
    assert losses.ezvsl_mil_loss(aligned, aud, 0.1)[0] < loss


def test_minmax_keeps_constant_maps():
    x = torch.stack([torch.arange(4.0).view(2, 2), torch.full((2, 2), 3.0)])
    y = minmax(x)
    torch.testing.assert_close(y[0], torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]]))
    torch.testing.assert_close(y[1], x[1])


def test_ogl_is_off_with_a_log_when_the_weights_file_is_absent(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        model = EZVSL(EZVSLConfig(**TINY, ogl_weights=str(tmp_path / "none.pth")))
    assert not model.has_ogl and "object-guided localisation off" in caplog.text
    with pytest.raises(RuntimeError, match="does not exist"):
        model.object_map(torch.zeros(1, 3, 64, 64))
    assert "pred_obj" not in model.eval().test_maps(torch.zeros(1, 3, 64, 64), torch.zeros(1, 1, 257, 40))


def test_ogl_tiny_network_from_a_torchvision_state_dict():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = EZVSL(EZVSLConfig(**TINY)).eval()
    model.set_ogl_network(resnet18(weights=None).state_dict())
    image, spec = torch.randn(2, 3, 64, 64), torch.randn(2, 1, 257, 40)
    maps = model.test_maps(image, spec)
    assert maps["obj_in"].shape == (2, 2, 2) and maps["pred_av_obj"].shape == (2, 64, 64)
    heat = model.infer(image, spec)["heatmap"]
    assert heat.shape == (2, 64, 64) and float(heat.amin()) == 0.0 and float(heat.amax()) == 1.0
    assert all(not p.requires_grad for p in model._ogl[0].parameters())


def test_centre_cut_and_logspec_shapes():
    w = torch.arange(16000 * 5, dtype=torch.float32)
    c = centre_cut(w, 16000, 3.0)
    assert c.shape == (48000,) and int(c[0]) == 16000
    short = centre_cut(torch.arange(10.0), 4, 3.0)  # 2.5 s at 4 Hz: tiled from the start
    assert short.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    spec = ezvsl_logspec(torch.randn(2, 48000).clamp(-1, 1) * 0.1, 16000)
    assert spec.shape == (2, 257, 200) and torch.isfinite(spec).all()


def test_random_crop_flip_is_an_exact_crop_and_seeded():
    full = torch.zeros(2, 3, 8, 10, dtype=torch.uint8)
    full[0, :, :7, :9] = torch.arange(63, dtype=torch.uint8).view(7, 9)
    full[1] = torch.arange(80, dtype=torch.uint8).view(8, 10)
    hw = torch.tensor([[7, 9], [8, 10]])
    a = random_crop_flip(full, hw, 5, torch.Generator().manual_seed(0))
    b = random_crop_flip(full, hw, 5, torch.Generator().manual_seed(0))
    assert a.shape == (2, 3, 5, 5) and torch.equal(a, b)
    for i in range(2):  # each crop is a (possibly flipped) window of its own frame, inside it
        h, w = hw[i].tolist()
        frame = full[i, 0, :h, :w]
        windows = [frame[t:t + 5, s:s + 5] for t in range(h - 4) for s in range(w - 4)]
        assert any(torch.equal(a[i, 0], x) or torch.equal(a[i, 0], x.flip(-1)) for x in windows)
    with pytest.raises(ValueError, match="smaller"):
        random_crop_flip(full, torch.tensor([[4, 9], [8, 10]]), 5)


def test_square_frame_ignores_aspect_ratio():
    frame = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    out = square_frame(frame, 16)
    assert out.shape == (3, 16, 16) and out.dtype == torch.uint8
