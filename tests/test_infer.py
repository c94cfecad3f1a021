"""avssl.infer and `avssl localize`: tiny SSL-TIE checkpoint, tiny PyAV-made videos."""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from avssl import infer
from avssl.checkpoint import save_checkpoint
from avssl.cli import main
from avssl.data import container, decode
from avssl.registry import build_method, load_method

TINY = {"width": 8, "image_size": 64, "heatmap_size": 4}


def make_video(path: Path, width: int = 96, height: int = 64, seconds: float = 2.0, fps: int = 10,
               audio_seconds: float | None = None, sample_rate: int = 16000, channels: int = 1) -> Path:
    """H.264 + AAC mp4 with a moving bright square and a tone (audio_seconds 0: no audio stream)."""
    audio_seconds = seconds if audio_seconds is None else audio_seconds
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        a = c.add_stream("aac", rate=sample_rate, layout="stereo" if channels == 2 else "mono") if audio_seconds else None
        for i in range(int(seconds * fps)):
            img = np.full((height, width, 3), 40, np.uint8)
            x = int(i * (width - 16) / max(1, seconds * fps - 1))
            img[20:36, x:x + 16] = (250, 200, 30)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            c.mux(v.encode(f))
        c.mux(v.encode(None))
        if a is not None:
            n = int(audio_seconds * sample_rate)
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / sample_rate)).astype(np.float32)
            wave = np.stack([tone] * channels)
            af = av.AudioFrame.from_ndarray(wave, format="fltp", layout=a.layout.name)
            af.sample_rate, af.pts, af.time_base = sample_rate, 0, Fraction(1, sample_rate)
            c.mux(a.encode(af))
            c.mux(a.encode(None))
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("infer")
    torch.manual_seed(0)
    model = build_method("ssltie", TINY)
    ckpt = save_checkpoint(d / "tiny.pt", model=model.state_dict(), config={"method": "ssltie", "ssltie": TINY})
    return {
        "ckpt": ckpt,
        "wide": make_video(d / "wide.mp4"),  # 96x64, 2 s, 16 kHz mono
        "stereo": make_video(d / "stereo.mp4", width=64, height=80, seconds=2.0, audio_seconds=3.0,
                             sample_rate=44100, channels=2),
        "silent": make_video(d / "silent.mp4", audio_seconds=0),
    }


class PatternModel(torch.nn.Module):
    """Stub: map value = 10 * row + column, whatever the input (checks the geometry)."""

    def __init__(self, size: int = 64, h: int = 4):
        super().__init__()
        self.config = type("C", (), {"image_size": size})()
        self.h = h
        self.seen: list[tuple] = []

    def localise(self, image, spec):
        self.seen.append((tuple(image.shape), tuple(spec.shape)))
        r = torch.arange(self.h, dtype=torch.float32)
        return (10 * r[:, None] + r[None, :]).expand(image.shape[0], self.h, self.h)


def test_localise_video_shapes_and_times(media):
    model, _ = load_method(media["ckpt"])
    out = infer.localise_video(model, media["wide"], num_frames=3, batch_size=2)
    assert out.frames.shape == (3, 64, 96, 3) and out.frames.dtype == np.uint8
    np.testing.assert_allclose(out.times, decode.evenly_spaced_times(2.0, 3), atol=1e-6)
    assert out.crop_maps.shape == (3, 4, 4) and np.isfinite(out.crop_maps).all()
    assert out.maps.shape == (3, 4, 6) and out.maps.dtype == np.float32
    np.testing.assert_array_equal(out.maps[:, :, 1:5], out.crop_maps)
    assert out.sample_rate == 16000
    # every map is a cosine between unit vectors; batches of 2 equal one batch of 3
    assert np.abs(out.crop_maps).max() <= 1.0 + 1e-5
    again = infer.localise_video(model, media["wide"], times=out.times, batch_size=3)
    np.testing.assert_allclose(again.crop_maps, out.crop_maps, atol=1e-5)
    assert len(out.peaks()) == 3 and all(16 <= p["x"] <= 80 for p in out.peaks())


def test_non_square_map_is_placed_on_the_crop(media):
    stub = PatternModel()
    out = infer.localise_video(stub, media["wide"], num_frames=3)
    assert stub.seen[0][0] == (3, 3, 64, 64)
    assert stub.seen[0][1] == (3, 1, 257, 1 + 160000 // 239)  # 2 s tiled to 10 s at 16 kHz
    assert out.crop_box == (16.0, 0.0, 80.0, 64.0)
    pattern = 10 * np.arange(4)[:, None] + np.arange(4)[None, :]
    assert out.maps.shape == (3, 4, 6)
    assert np.isnan(out.maps[:, :, [0, 5]]).all()  # 16-pixel margins outside the 64x64 crop
    np.testing.assert_array_equal(out.maps[:, :, 1:5], np.broadcast_to(pattern, (3, 4, 4)))
    peak = out.peaks()[0]  # cell (3, 3): crop pixel (56, 56) -> frame pixel (72, 56)
    assert (peak["x"], peak["y"], peak["score"]) == (72.0, 56.0, 33.0)


def test_crop_to_frame_tall_and_uneven():
    m = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    box = infer.crop_geometry(100, 50, 64)  # tall: crop is the centre 50x50 of 50x100
    assert box == pytest.approx((0.0, 25.0, 50.0, 75.0), abs=0.5)
    full = infer.crop_to_frame(m, box, 100, 50)
    assert full.shape == (1, 8, 4)
    rows_seen = np.isfinite(full[0]).all(1)
    assert rows_seen.sum() == 4 and not rows_seen[0] and not rows_seen[-1]


def test_audio_windows_centred_clamped_and_tiled():
    sr = 100
    wave = torch.arange(2500, dtype=torch.float32)  # 25 s
    w = infer.audio_windows(wave, sr, torch.tensor([12.0, 1.0, 24.0]), 10.0)
    assert w.shape == (3, 1000)
    assert w[0, 0] == 700 and w[1, 0] == 0 and w[2, -1] == 2499  # centred; clamped at both ends
    short = infer.audio_windows(torch.arange(300, dtype=torch.float32), sr, torch.tensor([0.5, 2.5]), 10.0)
    assert short.shape == (2, 1000) and torch.equal(short[0], short[1])
    assert torch.equal(short[0, 300:600], torch.arange(300, dtype=torch.float32))


def test_stereo_44k_native_rate(media, tmp_path):
    stub = PatternModel()
    out = infer.localise_video(stub, media["stereo"], fps=2)  # 2 s at 2 fps -> 4 frames
    assert len(out.times) == 4 and out.sample_rate == 44100
    assert stub.seen[0][1] == (4, 1, 257, 1 + 441000 // 239)
    assert out.frames.shape == (4, 80, 64, 3)
    # 8-pixel margins above and below (half a cell): one NaN row each side, 4 seen rows between
    assert out.maps.shape == (4, 6, 4)
    assert np.isnan(out.maps[:, [0, 5]]).all() and np.isfinite(out.maps[:, 1:5]).all()


def test_no_audio_raises_naming_the_file(media):
    with pytest.raises(decode.NoAudioStreamError) as e:
        infer.localise_video(PatternModel(), media["silent"])
    assert e.value.path == str(media["silent"]) and "no audio stream" in str(e.value)


def test_overlay_video_and_grid(media, tmp_path):
    stub = PatternModel()
    out = infer.localise_video(stub, media["stereo"], num_frames=4)
    mp4 = infer.write_overlay_video(out, tmp_path / "o.mp4", media["stereo"])
    info = decode.probe(mp4)
    assert (info.width, info.height) == (64, 80) and info.has_audio and info.channels == 2
    assert info.sample_rate == 44100
    clip = decode.read_clip(mp4, num_frames=4, sample_rate=None)
    assert clip.frames.shape == (4, 80, 64, 3)
    assert abs(len(clip.audio) / clip.sample_rate - 3.0) < 0.05  # the source's 3 s track, re-encoded
    # the frame is left alone outside the crop (rows 0-7) and coloured inside it
    src = decode.read_frames(media["stereo"], [out.times[0]])[0].astype(int)
    got = clip.frames[0].astype(int)
    assert np.abs(got[:6] - src[:6]).mean() < 6 and np.abs(got[20:60] - src[20:60]).mean() > 20
    png = infer.write_overlay_grid(out, tmp_path / "g.png")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (4 * (179 + 4) + 4, 224 + 16 + 8)


def test_cli_end_to_end(media, tmp_path, capsys):
    rc = main(["localize", str(media["wide"]), "--checkpoint", str(media["ckpt"]), "--frames", "3",
               "--out", str(tmp_path / "o")])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 3 and summary["frame_size"] == [96, 64] and summary["method"] == "ssltie"
    for key, name in (("grid", "wide_grid.png"), ("video", "wide_overlay.mp4"), ("maps", "wide_maps.npz")):
        assert summary["outputs"][key] == str(tmp_path / "o" / name) and Path(summary["outputs"][key]).is_file()
    with np.load(tmp_path / "o" / "wide_maps.npz") as z:
        assert z["times"].shape == (3,) and z["maps"].shape == (3, 4, 6) and z["crop_maps"].shape == (3, 4, 4)
    assert len(summary["peaks"]) == 3 and {"time", "x", "y", "x_norm", "y_norm", "score"} <= set(summary["peaks"][0])
    rc = main(["localize", str(media["silent"]), "--checkpoint", str(media["ckpt"]), "--out", str(tmp_path / "s"),
               "--no-video"])
    assert rc == 2 and "silent.mp4: no audio stream" in capsys.readouterr().err


def test_pipeline_path_equals_the_ssltie_front_end(media):
    from avssl.config import from_dict
    from avssl.train_config import TrainConfig

    model, ckpt = load_method(media["ckpt"])
    cfg = from_dict(TrainConfig, ckpt["config"])
    direct = infer.localise_video(model, media["wide"], num_frames=3)
    through = infer.localise_video(model, media["wide"], num_frames=3, cfg=cfg)
    np.testing.assert_allclose(through.crop_maps, direct.crop_maps, rtol=1e-5, atol=1e-6)


def test_equiav_zero_shot_localize_cli(media, tmp_path, capsys):
    eq = {"embed_dim": 32, "num_heads": 4, "depth": 1, "img_size": 32, "patch_size": 8, "audio_length": 64,
          "num_mel_bins": 32, "num_centroid": 2, "aug_emb_dim": 16, "cross_attn_heads": 2, "cross_attn_head_dim": 8,
          "proj_hidden_dim": 32, "inter_out_dim": 16, "intra_out_dim": 16}
    torch.manual_seed(0)
    model = build_method("equiav", eq)
    path = save_checkpoint(tmp_path / "eq.pt", model=model.state_dict(),
                           config={"method": "equiav", "equiav": eq, "data": {"seconds": 1.0}})
    rc = main(["localize", str(media["stereo"]), "--checkpoint", str(path), "--frames", "2", "--out",
               str(tmp_path / "o"), "--no-video"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == "equiav" and summary["sample_rate"] == 16000  # resampled from 44.1 kHz
    with np.load(tmp_path / "o" / "stereo_maps.npz") as z:
        assert z["crop_maps"].shape == (2, 4, 4) and np.isfinite(z["crop_maps"]).all()
        assert float(np.ptp(z["crop_maps"])) > 0


def make_vfr_video(path: Path, width: int = 97, height: int = 65) -> Path:
    """Odd-sized H.264 (yuv444p allows odd sides) with irregular frame times (a VFR phone clip:
    the average rate comes out as 496000/19061) and 1.5 s of AAC."""
    gaps = [33, 17, 50, 41, 9, 70, 33, 33, 120, 5] * 3
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=30)
        v.width, v.height, v.pix_fmt = width, height, "yuv444p"
        v.time_base = v.codec_context.time_base = Fraction(1, 1000)
        a = c.add_stream("aac", rate=16000, layout="mono")
        for i, t in enumerate(np.cumsum([0, *gaps])):
            img = np.full((height, width, 3), 40, np.uint8)
            img[10:30, 3 * i:3 * i + 20] = (250, 200, 30)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = int(t), Fraction(1, 1000)
            c.mux(v.encode(f))
        c.mux(v.encode(None))
        af = av.AudioFrame.from_ndarray((0.3 * np.sin(np.arange(24000) * 0.17)).astype(np.float32)[None],
                                        format="fltp", layout="mono")
        af.sample_rate, af.pts, af.time_base = 16000, 0, Fraction(1, 16000)
        c.mux(a.encode(af))
        c.mux(a.encode(None))
    return path


def test_overlay_video_of_odd_sized_vfr_input(tmp_path):
    src = make_vfr_video(tmp_path / "vfr.mp4")
    with av.open(str(src)) as c:
        assert c.streams.video[0].average_rate.denominator > 1001  # the case that broke libx264/mp4
    out = infer.localise_video(PatternModel(), src, num_frames=3)
    assert out.frames.shape[1:3] == (65, 97)
    dst = infer.write_overlay_video(out, tmp_path / "vfr_overlay.mp4", src)
    with av.open(str(dst)) as c:
        vs = c.streams.video[0]
        assert (vs.codec_context.width, vs.codec_context.height) == (98, 66)  # padded to even
        times = [f.time for f in c.decode(vs)]
    with av.open(str(src)) as c:
        src_times = [f.time for f in c.decode(video=0)]
    assert len(times) == len(src_times) == 31
    assert np.all(np.diff(times) > 0)
    np.testing.assert_allclose(np.asarray(times) - times[0], np.asarray(src_times) - src_times[0], atol=2e-3)


def test_late_audio_stays_in_sync_in_windows_and_overlay(tmp_path):
    """Audio stream starting 0.5 s after the first frame (phone recordings): the burst at container
    time 1.0 s must be at 1.0 s in the model's track and in the overlay MP4's audio."""
    sr, path = 16000, tmp_path / "late.mp4"
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=10)
        v.width, v.height, v.pix_fmt = 64, 64, "yuv420p"
        a = c.add_stream("aac", rate=sr, layout="mono")
        for i in range(20):
            f = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 40 + 8 * i, np.uint8), format="rgb24")
            f.pts = i
            c.mux(v.encode(f))
        c.mux(v.encode(None))
        wave = np.zeros(int(1.5 * sr), np.float32)
        wave[sr // 2: sr // 2 + 1600] = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(1600) / sr)
        for s in range(0, len(wave), 1024):
            af = av.AudioFrame.from_ndarray(wave[None, s:s + 1024].copy(), format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = sr, s + sr // 2, Fraction(1, sr)
            c.mux(a.encode(af))
        c.mux(a.encode(None))
    out = infer.localise_video(PatternModel(), path, num_frames=2)
    track, got_sr = decode.read_audio(path)
    assert np.flatnonzero(np.abs(track) > 0.1)[0] / got_sr == pytest.approx(1.0, abs=0.01)
    mp4 = infer.write_overlay_video(out, tmp_path / "late_overlay.mp4", path)
    heard, hsr = decode.read_audio(mp4, align_to_video=False)
    with av.open(str(mp4)) as c:
        v0 = container.stream_start(c.streams.video[0])
        a0 = next(iter(c.decode(audio=0))).time
    assert (a0 - v0) + np.flatnonzero(np.abs(heard) > 0.1)[0] / hsr == pytest.approx(1.0, abs=0.03)


def test_frames_go_through_the_loaders_pil_resize(media, tmp_path):
    """A frame that must be resized (128x96 at image size 64) reaches the model exactly as
    ``avssl eval``'s loader gives it (PIL bicubic Resize + CenterCrop), not a torch resize."""
    from avssl.augment.recipes import EvalTransform
    from avssl.config import from_dict
    from avssl.data.audio import ssltie_spectrogram
    from avssl.data.datasets import resize_crop
    from avssl.train_config import TrainConfig

    video = make_video(tmp_path / "big.mp4", width=128, height=96)
    model, ckpt = load_method(media["ckpt"])
    cfg = from_dict(TrainConfig, ckpt["config"])
    out = infer.localise_video(model, video, num_frames=2, cfg=cfg)
    # short side 96 -> 64, long side int(64 * 128 / 96) = 85, left offset round(21 / 2) = 10
    np.testing.assert_allclose(out.crop_box, (10 * 128 / 85, 0.0, 74 * 128 / 85, 96.0))
    wave, sr = decode.read_audio(video)
    spec = ssltie_spectrogram(infer.audio_windows(torch.from_numpy(wave), sr, torch.from_numpy(out.times), 10.0), sr)
    with torch.no_grad():
        pil = torch.stack([resize_crop(f, 64) for f in out.frames])
        expected = model.localise(EvalTransform(64)(pil), spec).numpy()
        old = model.localise(EvalTransform(64)(torch.from_numpy(out.frames).permute(0, 3, 1, 2)), spec).numpy()
    np.testing.assert_allclose(out.crop_maps, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(old - expected).max() > 1e-4  # the torch bicubic of the original frame differs
    direct = infer.localise_video(model, video, num_frames=2)  # the SSL-TIE front-end: same frames
    np.testing.assert_allclose(direct.crop_maps, expected, rtol=1e-5, atol=1e-6)


def test_localize_outputs_are_atomic_and_disk_full_is_one_line(media, tmp_path, capsys, monkeypatch):
    import errno

    out = tmp_path / "o"
    out.mkdir()
    stale = out / ".wide_overlay.mp4.abc123.tmp"
    stale.write_bytes(b"half a file")
    mine = out / ".notes.tmp"  # a user's file in the same folder is left alone
    mine.write_text("keep me")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(infer, "_encode_overlay", full)
    rc = main(["localize", str(media["wide"]), "--checkpoint", str(media["ckpt"]), "--frames", "2",
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "disk full" in err and "wide_overlay.mp4" in err and len(err.strip().splitlines()) == 1
    assert not (out / "wide_overlay.mp4").exists() and not stale.exists() and mine.read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == [".notes.tmp", "wide_grid.png", "wide_maps.npz"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_localize_device_cuda_without_cuda_is_a_device_error(media, tmp_path, capsys):
    """--device cuda where CUDA is not available: the message train and eval give (CUDA is not
    available, use --device cpu), not "checkpoint unreadable"; nothing is written."""
    out = tmp_path / "o"
    rc = main(["localize", str(media["wide"]), "--checkpoint", str(media["ckpt"]), "--frames", "2",
               "--out", str(out), "--device", "cuda"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "CUDA is not available" in err and "--device cpu" in err and "'cuda'" in err
    assert "unreadable" not in err and "checkpoint" not in err
    assert not out.exists()


# ----------------------------------------------------------------------------- round 3: pictures, full frame, rates
class FramePatternModel(PatternModel):
    """Stub whose map follows the input's shape (stride 16, as a ResNet): value = 10 * row + column."""

    def localise(self, image, spec):
        self.seen.append((tuple(image.shape), tuple(spec.shape)))
        h, w = image.shape[-2] // 16, image.shape[-1] // 16
        r, c = torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32)
        return (10 * r[:, None] + c[None, :]).expand(image.shape[0], h, w)


def _picture_and_recording(d: Path, width: int = 96, height: int = 64, seconds: float = 1.5,
                           sample_rate: int = 16000) -> tuple[Path, Path]:
    import soundfile as sf

    img = np.full((height, width, 3), 40, np.uint8)
    img[20:36, 60:76] = (250, 200, 30)
    pic = d / "pic.png"
    Image.fromarray(img).save(pic)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rec = d / "rec.wav"
    sf.write(rec, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sample_rate)
    return pic, rec


def _eq_checkpoint(path: Path, seconds: float = 1.0) -> Path:
    eq = {"embed_dim": 32, "num_heads": 4, "depth": 1, "img_size": 32, "patch_size": 8, "audio_length": 64,
          "num_mel_bins": 32, "num_centroid": 2, "aug_emb_dim": 16, "cross_attn_heads": 2, "cross_attn_head_dim": 8,
          "proj_hidden_dim": 32, "inter_out_dim": 16, "intra_out_dim": 16}
    torch.manual_seed(0)
    return save_checkpoint(path, model=build_method("equiav", eq).state_dict(),
                           config={"method": "equiav", "equiav": eq, "data": {"seconds": seconds}})


def test_localize_a_picture_and_a_recording(media, tmp_path, capsys):
    """--image/--audio: the test loaders' pair (a picture, the recording's first data.seconds s,
    tiled when shorter), the same grid PNG and maps npz, no overlay video."""
    from avssl.augment.recipes import EvalTransform
    from avssl.data.audio import ssltie_spectrogram, tile_to_duration
    from avssl.data.datasets import resize_crop
    from avssl.train_config import config_from_checkpoint

    pic, rec = _picture_and_recording(tmp_path)
    out = tmp_path / "o"
    rc = main(["localize", "--image", str(pic), "--audio", str(rec), "--checkpoint", str(media["ckpt"]),
               "--out", str(out)])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["image"] == str(pic) and summary["audio"] == str(rec) and summary["frames"] == 1
    assert summary["frame_size"] == [96, 64] and summary["outputs"]["video"] is None
    assert sorted(p.name for p in out.iterdir()) == ["pic_grid.png", "pic_maps.npz"]
    model, ckpt = load_method(media["ckpt"])
    cfg = config_from_checkpoint(ckpt)
    wave, sr = decode.read_wav(rec)
    spec = ssltie_spectrogram(tile_to_duration(torch.from_numpy(wave), sr, cfg.data.seconds)[None], sr)
    frame = np.asarray(Image.open(pic).convert("RGB"))
    with torch.no_grad():
        expected = model.localise(EvalTransform(64)(resize_crop(frame, 64, cfg.data.frame_resize)[None]), spec)
    with np.load(out / "pic_maps.npz") as z:
        assert z["maps"].shape == (1, 4, 6) and z["crop_maps"].shape == (1, 4, 4)
        np.testing.assert_allclose(z["crop_maps"], expected.numpy(), rtol=1e-5, atol=1e-6)
    direct = infer.localise_image(model, pic, rec, cfg=cfg)
    np.testing.assert_allclose(direct.crop_maps, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_localize_picture_argument_errors_are_one_line(media, tmp_path, capsys):
    pic, rec = _picture_and_recording(tmp_path)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture at all")
    cases = [
        (["--image", str(pic)], "--image needs --audio"),
        (["--audio", str(rec)], "--audio needs --image"),
        ([str(media["wide"]), "--image", str(pic), "--audio", str(rec)], "not both"),
        ([], "give a VIDEO or --image"),
        (["--image", str(tmp_path / "nope.png"), "--audio", str(rec)], "nope.png"),
        (["--image", str(bad), "--audio", str(rec)], "bad.png"),
        (["--image", str(pic), "--audio", str(tmp_path / "gone.wav")], "gone.wav"),
        (["--image", str(pic), "--audio", str(bad)], "bad.png"),
    ]
    for extra, words in cases:
        rc = main(["localize", *extra, "--checkpoint", str(media["ckpt"]), "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert rc == 2, extra
        assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (extra, err)
    assert not (tmp_path / "o").exists()


def test_localize_help_names_the_checkpoints_audio_length(capsys):
    with pytest.raises(SystemExit):
        main(["localize", "--help"])
    text = capsys.readouterr().out
    assert "10 s" not in text and "data.seconds" in text
    assert "--image" in text and "--audio" in text and "--full-frame" in text and "--sample-rate" in text


def test_full_frame_mode_covers_the_whole_frame(media):
    stub = FramePatternModel()
    out = infer.localise_video(stub, media["wide"], num_frames=3, full_frame=True)
    assert stub.seen[0][0] == (3, 3, 64, 96)  # short side to 64, no crop
    assert out.crop_box == (0.0, 0.0, 96.0, 64.0)
    assert out.crop_maps.shape == (3, 4, 6) and np.isfinite(out.maps).all()
    np.testing.assert_array_equal(out.maps, out.crop_maps)
    peak = out.peaks()[0]  # cell (3, 5): the bottom right corner cell of the frame
    assert (peak["x"], peak["y"], peak["score"]) == (88.0, 56.0, 35.0)
    tall = infer.localise_video(FramePatternModel(), media["stereo"], num_frames=2, full_frame=True)
    assert tall.crop_maps.shape == (2, 5, 4) and tall.crop_box == (0.0, 0.0, 64.0, 80.0)  # 64x80 -> 64x80
    default = infer.localise_video(FramePatternModel(), media["wide"], num_frames=3)
    assert default.crop_box == (16.0, 0.0, 80.0, 64.0)  # the protocol's centre crop stays the default


def test_full_frame_resize_is_the_loaders_geometry_without_the_crop(media, tmp_path):
    from avssl.augment.image import normalize, to_float
    from avssl.config import from_dict
    from avssl.data.audio import ssltie_spectrogram
    from avssl.train_config import TrainConfig

    video = make_video(tmp_path / "big.mp4", width=128, height=96)
    model, ckpt = load_method(media["ckpt"])
    cfg = from_dict(TrainConfig, ckpt["config"])  # pil_bicubic
    out = infer.localise_video(model, video, num_frames=2, cfg=cfg, full_frame=True)
    resized = np.stack([np.asarray(Image.fromarray(f).resize((85, 64), Image.BICUBIC)) for f in out.frames])
    wave, sr = decode.read_audio(video)
    spec = ssltie_spectrogram(infer.audio_windows(torch.from_numpy(wave), sr, torch.from_numpy(out.times), 10.0), sr)
    with torch.no_grad():
        expected = model.localise(normalize(to_float(torch.from_numpy(resized).permute(0, 3, 1, 2))), spec).numpy()
    assert out.crop_maps.shape == expected.shape == (2, 4, 6)
    np.testing.assert_allclose(out.crop_maps, expected, rtol=1e-5, atol=1e-6)


def test_localize_full_frame_cli_colours_the_sides(media, tmp_path, capsys):
    out = tmp_path / "o"
    rc = main(["localize", str(media["wide"]), "--checkpoint", str(media["ckpt"]), "--frames", "2",
               "--out", str(out), "--full-frame"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["full_frame"] is True and summary["crop_box"] == [0.0, 0.0, 96.0, 64.0]
    with np.load(out / "wide_maps.npz") as z:
        assert z["maps"].shape == (2, 4, 6) and np.isfinite(z["maps"]).all()
    got = decode.read_clip(out / "wide_overlay.mp4", num_frames=2, sample_rate=None).frames.astype(int)
    src = decode.read_clip(media["wide"], num_frames=2, sample_rate=None).frames.astype(int)
    assert np.abs(got[:, :, :12] - src[:, :, :12]).mean() > 20  # the left margin is coloured too
    rc = main(["localize", "--image", str(_picture_and_recording(tmp_path)[0]), "--audio",
               str(tmp_path / "rec.wav"), "--checkpoint", str(media["ckpt"]), "--out", str(out), "--full-frame"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["crop_box"] == [0.0, 0.0, 96.0, 64.0]


def test_localize_full_frame_with_equiav_is_refused_in_one_line(media, tmp_path, capsys):
    path = _eq_checkpoint(tmp_path / "eq.pt")
    rc = main(["localize", str(media["wide"]), "--checkpoint", str(path), "--frames", "2", "--out",
               str(tmp_path / "o"), "--no-video", "--full-frame"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "full frame" in err and "equiav" in err
    with pytest.raises(infer.FullFrameUnsupportedError):
        model, ckpt = load_method(path)
        from avssl.train_config import config_from_checkpoint

        infer.localise_video(model, media["wide"], num_frames=2, cfg=config_from_checkpoint(ckpt), full_frame=True)


def test_localize_reads_the_config_as_eval_does(media, tmp_path, capsys):
    """config_from_checkpoint, not from_dict: a schema-1 checkpoint whose saved data section has no
    data.frame_resize was trained with the torch resize, which localize must then use (as eval does)."""
    from avssl.train_config import config_from_checkpoint

    video = make_video(tmp_path / "big.mp4", width=128, height=96)
    model, _ = load_method(media["ckpt"])
    old = save_checkpoint(tmp_path / "old.pt", model=model.state_dict(), config_schema=1,  # a run's full data
                          config={"method": "ssltie", "ssltie": TINY, "data": {"seconds": 10.0}})  # section, then
    rc = main(["localize", str(video), "--checkpoint", str(old), "--frames", "2", "--out",
               str(tmp_path / "o"), "--no-video"])
    assert rc == 0
    capsys.readouterr()
    model, ckpt = load_method(old)
    cfg = config_from_checkpoint(ckpt)
    assert cfg.data.frame_resize == "torch_bilinear"
    expected = infer.localise_video(model, video, num_frames=2, cfg=cfg)
    with np.load(tmp_path / "o" / "big_maps.npz") as z:
        np.testing.assert_allclose(z["crop_maps"], expected.crop_maps, rtol=1e-5, atol=1e-6)
    newer = save_checkpoint(tmp_path / "new.pt", model=model.state_dict(), config={"method": "ssltie", "ssltie": TINY},
                            config_schema=99)
    rc = main(["localize", str(video), "--checkpoint", str(newer), "--out", str(tmp_path / "n"), "--no-video"])
    err = capsys.readouterr().err
    assert rc == 2 and "newer" in err and len(err.strip().splitlines()) == 1


def test_localize_warns_of_another_rate_and_resamples_on_request(media, tmp_path, capsys, caplog):
    model, _ = load_method(media["ckpt"])
    ckpt = save_checkpoint(tmp_path / "rated.pt", model=model.state_dict(), config={"method": "ssltie", "ssltie": TINY},
                           extra={"trained_audio": {"sample_rates": [16000], "seconds": 10.0}})
    args = ["localize", str(media["stereo"]), "--checkpoint", str(ckpt), "--frames", "2", "--no-video"]
    with caplog.at_level("WARNING"):
        rc = main([*args, "--out", str(tmp_path / "a")])
    assert rc == 0 and json.loads(capsys.readouterr().out)["sample_rate"] == 44100
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("44100" in m and "16000" in m and "--sample-rate 16000" in m for m in warned), warned
    caplog.clear()
    with caplog.at_level("WARNING"):
        rc = main([*args, "--out", str(tmp_path / "b"), "--sample-rate", "16000"])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0 and summary["sample_rate"] == 16000 and summary["model_audio"]["sample_rates"] == [16000]
    assert not [r for r in caplog.records if r.levelname == "WARNING" and "sample rate" in r.getMessage()]
    pic, rec = _picture_and_recording(tmp_path, sample_rate=22050)
    with caplog.at_level("WARNING"):
        rc = main(["localize", "--image", str(pic), "--audio", str(rec), "--checkpoint", str(ckpt), "--out",
                   str(tmp_path / "c")])
    assert rc == 0 and json.loads(capsys.readouterr().out)["sample_rate"] == 22050
    assert any("22050" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
