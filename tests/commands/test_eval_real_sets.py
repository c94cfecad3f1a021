"""`avssl eval` on what real test sets look like (issue 22): clips at several native sample rates,
a broken clip read in a loader worker, the model's own audio rate, checkpoints of older versions."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from avssl.checkpoint import save_checkpoint
from avssl.cli import main
from avssl.registry import build_method

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"width": 8, "image_size": 64, "heatmap_size": 4}
RATES = (11025, 16000, 22050, 44100)


def write_clip(path: Path, rate: int, shade: int, freq: float, seconds: float = 1.0, width: int = 64) -> Path:
    """A 64 px high clip (a square of grey ``shade`` on black) with a sine of ``freq`` Hz at ``rate`` Hz."""
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=10)
        vs.width, vs.height = width, 64
        vs.pix_fmt = "yuv420p"
        aus = c.add_stream("aac", rate=rate)
        aus.layout = "mono"
        frame = np.zeros((64, width, 3), np.uint8)
        frame[16:48, 8 + shade % 24: 24 + shade % 24] = shade
        for _ in range(int(10 * seconds)):
            for p in vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        t = np.arange(int(rate * seconds)) / rate
        wave = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
        for k in range(0, wave.size, 1024):
            af = av.AudioFrame.from_ndarray(wave[None, k:k + 1024], format="fltp", layout="mono")
            af.sample_rate = rate
            for p in aus.encode(af):
                c.mux(p)
        for p in aus.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """8 clips at four native rates (as `avssl prepare --layout test` keeps them), their boxes, and
    a tiny SSL-TIE checkpoint that heard 1 s at 16 kHz."""
    root = tmp_path_factory.mktemp("mixed_rates")
    rows, boxes = [], {}
    for i in range(8):
        cid = f"c{i}"
        write_clip(root / f"{cid}.mp4", RATES[i % 4], 60 + 20 * i, 300 + 150 * i)
        rows.append({"id": cid, "video": f"{cid}.mp4", "split": "test", "labels": [f"k{i % 2}"]})
        boxes[cid] = [[0.1, 0.2, 0.6, 0.8]]
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "vggss.json").write_text(json.dumps([{"file": k, "bbox": v} for k, v in boxes.items()]))
    torch.manual_seed(0)
    model = build_method("ssltie", TINY)
    ckpt = save_checkpoint(root / "tiny.pt", model=model.state_dict(), config_schema=2,
                           config={"method": "ssltie", "ssltie": TINY, "data": {"seconds": 1.0}},
                           extra={"trained_audio": {"sample_rates": [16000], "seconds": 1.0}})
    return root, ckpt


def _eval(root: Path, ckpt: Path, out: Path, *extra: str) -> int:
    return main(["eval", str(ckpt), "--data", str(root / "manifest.jsonl"), "--gt", str(root / "vggss.json"),
                 "--split", "all", "--workers", "0", "--out", str(out), *extra])


def _maps(out: Path) -> dict[str, np.ndarray]:
    with np.load(out / "heatmaps.npz") as z:
        return {k: z[k] for k in z.files}


def test_mixed_native_rates_batch_as_batch_size_one(mixed, tmp_path, capsys):
    """The default batch size works on clips of several rates, with the maps of batch size 1 (the
    authors' test() runs one clip at a time)."""
    root, ckpt = mixed
    assert _eval(root, ckpt, tmp_path / "b4", "--batch-size", "4") == 0
    assert _eval(root, ckpt, tmp_path / "b1", "--batch-size", "1") == 0
    capsys.readouterr()
    b4, b1 = _maps(tmp_path / "b4"), _maps(tmp_path / "b1")
    assert sorted(b4) == sorted(b1) == [f"c{i}" for i in range(8)]
    for k in b1:
        np.testing.assert_allclose(b4[k], b1[k], atol=1e-5, err_msg=k)
    s4 = json.loads((tmp_path / "b4" / "scores.json").read_text())
    s1 = json.loads((tmp_path / "b1" / "scores.json").read_text())
    assert s4["n_scored"] == s1["n_scored"] == 8 and s4["auc"] == pytest.approx(s1["auc"])


def test_eval_warns_when_the_clips_rate_is_not_the_models_and_resamples_on_request(mixed, tmp_path, capsys,
                                                                                    caplog):
    root, ckpt = mixed
    with caplog.at_level(logging.WARNING):
        assert _eval(root, ckpt, tmp_path / "native") == 0
    warned = [r.getMessage() for r in caplog.records if "16000" in r.getMessage()]
    assert warned and "6 of 8" in warned[0] and "--sample-rate 16000" in warned[0], warned
    scores = json.loads((tmp_path / "native" / "scores.json").read_text())
    assert scores["audio_rates"] == {"11025": 2, "16000": 2, "22050": 2, "44100": 2}
    assert scores["model_audio"]["sample_rates"] == [16000]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert _eval(root, ckpt, tmp_path / "rs", "--sample-rate", "16000") == 0
    assert not [r for r in caplog.records if "trained on" in r.getMessage()]
    assert json.loads((tmp_path / "rs" / "scores.json").read_text())["audio_rates"] == {"16000": 8}


def test_a_bad_sample_rate_option_is_refused(mixed, capsys):
    root, ckpt = mixed
    with pytest.raises(SystemExit) as e:
        main(["eval", str(ckpt), "--data", str(root / "manifest.jsonl"), "--sample-rate", "-5"])
    assert e.value.code == 2 and "--sample-rate" in capsys.readouterr().err


def test_a_broken_clip_read_in_a_loader_worker_is_one_line(mixed, tmp_path, capsys):
    """A user error raised in a DataLoader worker (here a truncated video: CorruptMediaError, which
    the loader re-raises as RuntimeError with the worker's traceback) reaches the user as one line."""
    root, ckpt = mixed
    bad = tmp_path / "set"
    bad.mkdir()
    for f in root.glob("c*.mp4"):
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "c3.mp4").write_bytes((root / "c3.mp4").read_bytes()[:2000])
    (bad / "manifest.jsonl").write_text((root / "manifest.jsonl").read_text())
    rc = main(["eval", str(ckpt), "--data", str(bad / "manifest.jsonl"), "--split", "all", "--workers", "1",
               "--batch-size", "2", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "c3.mp4" in err and "Traceback" not in err, err


def test_worker_errors_of_any_user_type_are_one_line():
    """Subclasses of the user-error classes and plain ValueErrors raised in a worker: one line."""
    from torch.utils.data import DataLoader, Dataset

    from avssl.commands import error_text, loader_worker_error
    from avssl.data.container import CorruptMediaError

    class Raises(Dataset):
        def __init__(self, exc):
            self.exc = exc

        def __len__(self):
            return 1

        def __getitem__(self, i):
            raise self.exc

    def caught(exc):
        try:
            list(DataLoader(Raises(exc), num_workers=1, multiprocessing_context="fork"))
        except Exception as e:  # noqa: BLE001 - what the loader re-raises
            return e
        raise AssertionError("no error")

    e = caught(CorruptMediaError("/x/clip.mp4", "truncated"))
    assert loader_worker_error(e) == "/x/clip.mp4: truncated"
    e = caught(ValueError("clips of one batch differ"))
    assert error_text(e) == "clips of one batch differ"
    assert loader_worker_error(e) is None  # a plain ValueError from a worker may be a bug: traceback kept
    e = caught(KeyError("boom"))
    assert loader_worker_error(e) is None and "\n" not in error_text(e)


def test_boxes_outside_the_centre_crop_are_counted_and_full_frame_maps_them(tmp_path, mixed, caplog, capsys):
    """Wide frames (128x64: the crop is the middle half): boxes at the sides lie outside what the
    model sees. The protocol keeps them as they are (warned, counted); --boxes full-frame maps them."""
    root, ckpt = mixed
    rows = []
    for i in range(4):
        write_clip(tmp_path / f"w{i}.mp4", 16000, 80 + 30 * i, 400 + 100 * i, width=128)
        rows.append({"id": f"w{i}", "video": f"w{i}.mp4", "split": "test", "labels": ["k"]})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    side, middle = [[0.0, 0.2, 0.2, 0.8]], [[0.3, 0.2, 0.7, 0.8]]
    (tmp_path / "gt.json").write_text(json.dumps([{"file": f"w{i}", "bbox": side if i < 3 else middle}
                                                  for i in range(4)]))
    args = ["eval", str(ckpt), "--data", str(tmp_path / "m.jsonl"), "--gt", str(tmp_path / "gt.json"), "--split",
            "all", "--workers", "0"]
    with caplog.at_level(logging.WARNING):
        assert main([*args, "--out", str(tmp_path / "crop")]) == 0
    assert any("3 of 4 clips have boxes mostly outside" in r.getMessage() for r in caplog.records)
    crop = json.loads((tmp_path / "crop" / "scores.json").read_text())
    assert crop["boxes"]["mode"] == "crop" and crop["boxes"]["mostly_outside"] == 3
    assert json.loads((tmp_path / "crop" / "frame_sizes.json").read_text())["w0"] == [128, 64]
    assert main([*args, "--boxes", "full-frame", "--out", str(tmp_path / "full")]) == 0
    full = json.loads((tmp_path / "full" / "scores.json").read_text())
    capsys.readouterr()
    assert full["boxes"]["mode"] == "full-frame"
    # the side boxes map to nothing inside the crop: those clips score as empty-gt failures
    assert full["n_empty_gt"] == 3 and crop["n_empty_gt"] == 0


def test_the_crop_window_and_the_box_mapping():
    from avssl.eval.boxes import boxes_to_crop, crop_window, map_boxes, outside_share

    x0, y0, x1, y1 = crop_window(640, 360, 224)  # long side 398, offset 87
    assert (y0, y1) == (0.0, 1.0) and x0 == pytest.approx(87 / 398) and x1 == pytest.approx(311 / 398)
    assert crop_window(360, 640, 224)[1] == pytest.approx(87 / 398) and crop_window(50, 50) == (0, 0, 1, 1)
    middle = np.array([[0.5 - 0.1, 0.25, 0.5 + 0.1, 0.75]])
    np.testing.assert_allclose(boxes_to_crop(middle, 640, 360, 224)[0],
                               [(0.4 - x0) / (x1 - x0), 0.25, (0.6 - x0) / (x1 - x0), 0.75])
    left = np.array([[0.0, 0.2, 0.1, 0.8]])
    assert outside_share(left, (x0, y0, x1, y1)) == 1.0 and outside_share(middle, (x0, y0, x1, y1)) == 0.0
    b = boxes_to_crop(left, 640, 360, 224)[0]
    assert b[2] - b[0] == 0.0  # clipped to an empty box
    same, rep = map_boxes({"a": left}, {"a": (640, 360)}, "crop", 224)
    assert same["a"] is left and rep["mostly_outside"] == 1 and rep["n_sized"] == 1
    with pytest.raises(ValueError, match="frame size"):
        map_boxes({"a": left}, {}, "full-frame")


def test_score_maps_boxes_with_the_frame_sizes_eval_wrote(tmp_path, capsys):
    """`avssl score --boxes full-frame --frame-sizes` gives what `eval --boxes full-frame` scored."""
    from avssl.engine.evaluate import save_frame_sizes, save_heatmaps

    maps = {"a": np.eye(4, dtype=np.float32), "b": np.ones((4, 4), np.float32)}
    save_heatmaps(tmp_path / "h.npz", maps)
    save_frame_sizes(tmp_path / "s.json", {"a": (128, 64), "b": (64, 64)})
    (tmp_path / "gt.json").write_text(json.dumps([{"file": "a", "bbox": [[0.0, 0.0, 0.2, 1.0]]},
                                                  {"file": "b", "bbox": [[0.2, 0.2, 0.8, 0.8]]}]))
    base = ["score", "--pred", str(tmp_path / "h.npz"), "--gt", str(tmp_path / "gt.json")]
    assert main([*base, "--frame-sizes", str(tmp_path / "s.json")]) == 0
    crop = json.loads(capsys.readouterr().out)
    assert crop["boxes"]["mostly_outside"] == 1 and crop["n_empty_gt"] == 0
    assert main([*base, "--boxes", "full-frame", "--frame-sizes", str(tmp_path / "s.json")]) == 0
    full = json.loads(capsys.readouterr().out)
    assert full["boxes"]["mode"] == "full-frame" and full["n_empty_gt"] == 1  # a's box lies outside the crop
    assert main([*base, "--boxes", "full-frame"]) == 2
    assert "--frame-sizes" in capsys.readouterr().err
