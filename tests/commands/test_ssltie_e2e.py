"""SSL-TIE end to end on real pictures and recordings (golden section H, ``ssltie_e2e/``).

The documented route, as a user runs it: the authors' main.py checkpoint -> ``avssl convert``,
the VGG-SS test list -> ``avssl prepare --layout test``, then ``avssl eval`` and ``avssl score
--per-sample``. Frames range from 160x120 to 1280x720 (one portrait, one 224x224), so the
loader's resize of the ORIGINAL frame is what is checked (README section H).
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from avssl.augment.recipes import EvalTransform
from avssl.cli import main
from avssl.data.datasets import AVFrameAudioDataset
from avssl.data.manifest import read_manifest
from golden_utils import dequantise_int8


@pytest.fixture(scope="module")
def e2e(golden_dir, tmp_path_factory):
    """Run convert -> prepare -> eval -> score once; return the folder, the inputs and the outputs."""
    src = golden_dir / "ssltie_e2e"
    work = tmp_path_factory.mktemp("e2e")
    with np.load(golden_dir / "ssltie_avenet_weights_int8.npz") as z:
        sd = dequantise_int8({k: z[k] for k in z.files})
    official = work / "official.pth.tar"  # main.py's format, no 'module.' prefix
    torch.save({"epoch": 1, "state_dict": sd, "best_miou": 0.0, "optimizer": {}, "iteration": 0}, official)
    ckpt = work / "ours.pt"
    assert main(["convert", "--from", "ssltie-official", str(official), str(ckpt)]) == 0
    assert main(["prepare", str(src / "test_list.txt"), str(work / "prep"), "--layout", "test",
                 "--root", str(src)]) == 0
    assert main(["eval", str(ckpt), "--data", str(work / "prep" / "manifest.jsonl"), "--gt",
                 str(src / "vggss.json"), "--split", "all", "--out", str(work / "ev"), "--no-retrieval", "--workers", "0"]) == 0
    assert main(["score", "--pred", str(work / "ev" / "heatmaps.npz"), "--gt", str(src / "vggss.json"),
                 "--per-sample", str(work / "per_sample.csv")]) == 0
    with np.load(src / "expected_outputs.npz") as z:
        expected = {k: z[k] for k in z.files}
    return {"src": src, "work": work, "expected": expected,
            "official": json.loads((src / "expected.json").read_text())["runs"]["official_mono"]}


def test_heatmaps_match_official_test(e2e):
    """``avssl eval`` reproduces the official ``main.py --test`` heatmaps A within atol 2e-5."""
    with np.load(e2e["work"] / "ev" / "heatmaps.npz") as z:
        maps = {k: z[k] for k in z.files}
    ids = e2e["official"]["ids"]
    assert sorted(maps) == sorted(ids)
    for cid in ids:
        ref = e2e["expected"][f"official/{cid}/A"][0]
        assert maps[cid].shape == ref.shape == (14, 14)
        np.testing.assert_allclose(maps[cid], ref, rtol=0, atol=2e-5, err_msg=cid)


def test_scores_match_official_test(e2e):
    """Per-sample cIoU within 2e-3 of the official test(); the set's cIoU@0.5 and AUC equal it."""
    with (e2e["work"] / "per_sample.csv").open() as f:
        rows = {r["id"]: float(r["ciou"]) for r in csv.DictReader(f)}
    official = e2e["official"]
    for cid in official["ids"]:
        assert abs(rows[cid] - official["per_sample"][cid]["ciou"]) <= 2e-3, cid
    scores = json.loads((e2e["work"] / "ev" / "scores.json").read_text())
    assert scores["n_scored"] == len(official["ids"])
    assert scores["ciou_at_0.5"] == pytest.approx(official["ciou_at_0.5"], abs=1e-12)
    assert scores["auc"] == pytest.approx(official["auc"], abs=1e-12)


def _records(e2e):
    return read_manifest(e2e["work"] / "prep" / "manifest.jsonl")


@pytest.mark.parametrize("method, exact", [("pil_bicubic", True), ("torch_bilinear", False)])
def test_loader_frame_is_the_official_tensor(e2e, method, exact):
    """The default loader + eval transform give the official normalised frame (atol 1e-5 on
    ``frame_sub``, PIL's resize as the original); the old torch bilinear resize, kept as
    ``data.frame_resize=torch_bilinear``, does not, except on the 224x224 frame."""
    records = _records(e2e)
    ds = AVFrameAudioDataset(records, image_size=224, frame_resize=method)
    transform = EvalTransform(224)
    worst = {}
    for i, r in enumerate(records):
        x = transform(ds[i]["image"][None])[0, :, ::8, ::8].numpy()
        worst[r.id] = float(np.abs(x - e2e["expected"][f"official/{r.id}/frame_sub"]).max())
    if exact:
        assert max(worst.values()) <= 1e-5, worst
    else:
        non_square = [cid for cid, r in zip(worst, records, strict=True)
                      if (r.extra["orig_width"], r.extra["orig_height"]) != (224, 224)]
        assert non_square and all(worst[cid] > 1e-2 for cid in non_square), worst


def test_equiav_frame_path_is_the_official_tensor(e2e):
    """EquiAV's released loader (CAV-MAE's) applies the same test transform to the original frame
    (``Resize(224, BICUBIC)``, ``CenterCrop(224)``, the same ImageNet mean/std): EquiAV's data set
    and clean batch transform (fine-tuning eval, retrieval, zero-shot maps) give that tensor too."""
    from avssl.config import load_config
    from avssl.data.datasets import collate
    from avssl.methods.equiav.pipeline import EquiAVBatchTransform, equiav_dataset
    from avssl.train_config import TrainConfig

    cfg = load_config(TrainConfig, [], ["method=equiav", "data.num_workers=0"])
    records = _records(e2e)
    ds = equiav_dataset(records, cfg, train=False)
    _, v = EquiAVBatchTransform.from_config(cfg, "cpu").clean(collate([ds[i] for i in range(len(ds))]))
    assert v.shape == (len(records), 3, 224, 224)
    for i, r in enumerate(records):
        ref = e2e["expected"][f"official/{r.id}/frame_sub"]
        np.testing.assert_allclose(v[i, :, ::8, ::8].numpy(), ref, rtol=0, atol=1e-5, err_msg=r.id)
