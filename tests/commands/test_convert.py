"""`avssl convert`: the authors' checkpoints -> avssl checkpoints that load_method rebuilds."""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from avssl.cli import main
from avssl.registry import load_method
from golden_utils import SSLTIE_AUDIO_NAMES as AUDIO_NAMES
from golden_utils import dequantise_int8


def test_ssltie_official_checkpoint_round_trip(tmp_path, golden, capsys):
    """ssltie_avenet_weights_int8.npz wrapped as the authors' DataParallel training file (with pickled args);
    the converted model reproduces ssltie_avenet_io.npz eval_trimap_Neg_A (rel. error <= 1e-5)."""
    sd = dequantise_int8(golden("ssltie_avenet_weights_int8.npz"))
    src = tmp_path / "official.pth.tar"
    torch.save({"epoch": 3, "args": argparse.Namespace(lr=1e-4), "model": {f"module.{k}": v for k, v in sd.items()}}, src)
    out = tmp_path / "ours.pt"
    assert main(["convert", "--from", "ssltie-official", str(src), str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and "module.conv3.weight" not in report["unexpected"]
    assert any(k.startswith("conv3.") for k in report["dropped"])  # unused by the original forward
    model, ckpt = load_method(out)
    assert ckpt["config"]["ssltie"]["width"] == 64
    image = torch.from_numpy(golden("ssltie_avenet_io.npz")["in_image"])
    fe = golden("ssltie_frontend.npz")
    spec = torch.from_numpy(np.stack([fe[f"{n}_spec"] for n in AUDIO_NAMES]))
    with torch.no_grad():
        A = model.forward_maps(image, spec)["A"]
    ref = golden("ssltie_avenet_io.npz")["eval_trimap_Neg_A"]
    assert np.abs(A.numpy() - ref).max() / np.abs(ref).max() < 1e-5


def test_mismatched_checkpoint_is_refused(tmp_path, golden_dir, capsys):
    """equiav_pt_tiny_state_dict.pt converts with the tiny preset, and is refused under ViT-B sizes."""
    src = golden_dir / "equiav_pt_tiny_state_dict.pt"
    ok = tmp_path / "tiny.pt"
    assert main(["convert", "--from", "equiav-official", str(src), str(ok), "--preset", "tiny"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"]
    model, _ = load_method(ok)
    ref = torch.load(src)
    assert torch.equal(model.audio_encoder.modality_token.detach(), ref["modality_a"])
    sd = {k: v for k, v in ref.items() if not k.startswith("pred_a_inter")}
    torch.save(sd, tmp_path / "partial.pt")
    assert main(["convert", "--from", "equiav-official", str(tmp_path / "partial.pt"), str(tmp_path / "x.pt"),
                 "--preset", "tiny"]) == 2
    assert not (tmp_path / "x.pt").exists()


def test_unreadable_input(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    assert main(["convert", "--from", "ssltie-official", str(bad), str(tmp_path / "o.pt")]) == 2


def test_equiav_sizes_are_read_from_the_weights(tmp_path, golden_dir, caplog):
    """The tiny golden file under the default ViT-B preset: the widths, depth, patch grids and head
    widths come from the weights; the head count, which they cannot tell, is refused in one line
    until given, and then the conversion equals the tiny preset's."""
    src = golden_dir / "equiav_pt_tiny_state_dict.pt"
    assert main(["convert", "--from", "equiav-official", str(src), str(tmp_path / "a.pt")]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "num_heads=N" in errors[0] and str(src) in errors[0]
    assert not (tmp_path / "a.pt").exists()
    assert main(["convert", "--from", "equiav-official", str(src), str(tmp_path / "b.pt"), "num_heads=4"]) == 0
    assert main(["convert", "--from", "equiav-official", str(src), str(tmp_path / "c.pt"), "--preset", "tiny"]) == 0
    (mb, cb), (mc, cc) = load_method(tmp_path / "b.pt"), load_method(tmp_path / "c.pt")
    sizes = ("embed_dim", "depth", "num_heads", "img_size", "audio_length", "aug_emb_dim", "proj_hidden_dim",
             "inter_out_dim", "intra_out_dim")
    assert {k: cb["config"]["equiav"][k] for k in sizes} == {k: cc["config"]["equiav"][k] for k in sizes}
    sb, sc = mb.state_dict(), mc.state_dict()
    assert sb.keys() == sc.keys() and all(torch.equal(sb[k], sc[k]) for k in sb)
