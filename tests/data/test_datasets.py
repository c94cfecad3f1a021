"""AVFrameAudioDataset: real decoded content, fixed sizes, labels, failures raise or are skipped."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from avssl.data import decode
from avssl.data.datasets import AVFrameAudioDataset, collate, resize_crop
from avssl.data.manifest import Record, read_manifest
from avssl.data.synthetic import SynthConfig, generate


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_ds")
    manifest = generate(out, clips=6, seed=3,
                        config=SynthConfig(size=64, duration=1.0, classes=3, workers=1))
    return read_manifest(manifest)


def test_video_record_decodes_the_annotated_frame_and_audio(synth):
    ds = AVFrameAudioDataset(synth, image_size=48, seconds=2.0)
    s = ds[1]
    r = synth[1]
    frame = decode.read_frames(r.video, [r.extra["annotation_time"]])[0]
    assert torch.equal(s["image"], resize_crop(frame, 48))
    assert s["image"].shape == (3, 48, 48) and s["image"].dtype == torch.uint8
    assert s["image"].float().std() > 5  # a real picture, not a constant
    wave, sr = decode.read_audio(r.video)
    assert s["sample_rate"] == sr == 16000
    assert s["wave"].shape == (2 * sr,) and s["wave"].dtype == torch.float32
    n = len(wave)  # 1 s clip tiled to 2 s
    np.testing.assert_array_equal(s["wave"][:n].numpy(), wave)
    np.testing.assert_array_equal(s["wave"][n:2 * n].numpy(), wave[: 2 * sr - n])
    assert s["label"] == ds.classes.index(r.labels[0])


def test_resample_and_keep_seconds(synth):
    ds = AVFrameAudioDataset(synth[:1], image_size=32, seconds=1.0, sample_rate=8000, keep_seconds=0.25)
    s = ds[0]
    assert s["sample_rate"] == 8000 and s["wave"].shape == (8000,)
    np.testing.assert_array_equal(s["wave"][:2000].numpy(), s["wave"][2000:4000].numpy())  # 0.25 s tiled


def test_extracted_record_and_collate(synth, tmp_path):
    import soundfile as sf
    from PIL import Image

    frames = []
    for k in range(3):
        p = tmp_path / f"f{k}.png"
        Image.fromarray(np.full((40, 60, 3), 50 * k, np.uint8)).save(p)
        frames.append(str(p))
    wav = tmp_path / "a.wav"
    sf.write(wav, np.linspace(-0.5, 0.5, 8000, dtype=np.float32), 8000)
    rec = Record(id="x", frames=frames, audio=str(wav), labels=["dog"])
    ds = AVFrameAudioDataset([rec], image_size=32, seconds=1.0, classes=["cat", "dog"])
    s = ds[0]
    assert s["image"].shape == (3, 32, 32) and int(s["image"].float().mean().round()) == 50  # the middle frame
    assert s["label"] == 1 and s["sample_rate"] == 8000
    batch = collate([s, s])
    assert batch["image"].shape == (2, 3, 32, 32) and batch["wave"].shape == (2, 8000)
    other = dict(s, sample_rate=16000)
    with pytest.raises(ValueError, match="sample rates"):
        collate([s, other])


def test_full_frames_are_the_originals_padded_by_collate(tmp_path):
    import soundfile as sf
    from PIL import Image

    rng = np.random.default_rng(0)
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(8000, np.float32), 8000)
    recs, pics = [], []
    for k, (h, w) in enumerate([(30, 50), (44, 20)]):
        pic = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        Image.fromarray(pic).save(tmp_path / f"f{k}.png")
        recs.append(Record(id=f"c{k}", frames=[str(tmp_path / f"f{k}.png")], audio=str(wav)))
        pics.append(pic)
    ds = AVFrameAudioDataset(recs, image_size=16, seconds=1.0, full_frame=True)
    assert "full" not in AVFrameAudioDataset(recs, image_size=16, seconds=1.0)[0]
    batch = collate([ds[0], ds[1]])
    assert batch["full"].shape == (2, 3, 44, 50) and batch["full"].dtype == torch.uint8
    assert batch["full_hw"].tolist() == [[30, 50], [44, 20]]
    for i, pic in enumerate(pics):
        h, w = pic.shape[:2]
        assert np.array_equal(batch["full"][i, :, :h, :w].permute(1, 2, 0).numpy(), pic)
        assert batch["full"][i].sum() == batch["full"][i, :, :h, :w].sum()  # zero padding
    assert batch["image"].shape == (2, 3, 16, 16)  # the evaluation square is still there


def test_resize_crop_centre_crops_the_long_side():
    frame = np.zeros((20, 40, 3), np.uint8)
    frame[:, 10:30] = 255  # the centre half
    out = resize_crop(frame, 10)
    assert out.shape == (3, 10, 10)
    assert out.float().mean() > 240  # a squashing resize would average to ~128
    assert int(out[:, :, 2:8].min()) == 255


def test_broken_clip_raises_or_is_skipped(synth, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 10)
    records = list(synth[:3]) + [Record(id="broken", video=str(bad), labels=["red_disc"])]
    ds = AVFrameAudioDataset(records, image_size=32, seconds=1.0)
    with pytest.raises(decode.MediaError, match="bad.mp4"):
        ds[3]
    with pytest.raises(decode.MediaError, match="bad.mp4"):
        AVFrameAudioDataset(records, image_size=32, seconds=1.0, cache_in_memory=True)
    skipping = AVFrameAudioDataset(records, image_size=32, seconds=1.0, on_error="skip")
    assert len(skipping) == 3 and [i for i, _ in skipping.skipped] == ["broken"]
    assert "bad.mp4" in skipping.skipped[0][1]
    assert [skipping[i]["id"] for i in range(3)] == [r.id for r in synth[:3]]


def test_cache_returns_the_same_samples(synth):
    plain = AVFrameAudioDataset(synth[:2], image_size=32, seconds=1.0)
    cached = AVFrameAudioDataset(synth[:2], image_size=32, seconds=1.0, cache_in_memory=True)
    for i in range(2):
        assert torch.equal(plain[i]["image"], cached[i]["image"])
        assert torch.equal(plain[i]["wave"], cached[i]["wave"])


def _frame_folder_record(tmp_path, k: int = 6) -> Record:
    import soundfile as sf
    from PIL import Image

    frames = []
    for i in range(k):
        p = tmp_path / f"r{i}.png"
        Image.fromarray(np.full((20, 20, 3), 20 * i, np.uint8)).save(p)
        frames.append(str(p))
    wav = tmp_path / "r.wav"
    sf.write(wav, np.zeros(800, np.float32), 8000)
    return Record(id="r", frames=frames, audio=str(wav), labels=["a"])


def test_random_frames_pick_by_the_draw_and_int_keys_keep_the_fixed_frame(tmp_path, synth):
    rec = _frame_folder_record(tmp_path)
    ds = AVFrameAudioDataset([rec], image_size=16, seconds=0.1, frame_index=5, random_frames=10)
    fixed = int(ds[0]["image"][0, 0, 0])
    assert fixed == 100  # frame_index 5
    picks = [int(ds[(0, d)]["image"][0, 0, 0]) for d in range(60)]
    assert set(picks) == {20 * i for i in range(6)}  # every extracted frame is drawn, none beyond them
    assert picks == [int(ds[(0, d)]["image"][0, 0, 0]) for d in range(60)]  # a draw always picks the same frame
    cached = AVFrameAudioDataset([rec], image_size=16, seconds=0.1, frame_index=5, random_frames=10,
                                 cache_in_memory=True, workers=1)
    assert [int(cached[(0, d)]["image"][0, 0, 0]) for d in range(60)] == picks
    assert int(cached[0]["image"][0, 0, 0]) == fixed and "images" not in cached[(0, 1)]
    assert AVFrameAudioDataset([rec], image_size=16, seconds=0.1, frame_index=5)[(0, 3)]["image"].equal(ds[0]["image"])
    # a raw video: one of K evenly spaced frames
    vids = AVFrameAudioDataset(synth[:1], image_size=32, seconds=0.5, random_frames=4)
    times = decode.evenly_spaced_times(decode.probe(synth[0].video).duration, 4)
    candidates = [resize_crop(f, 32) for f in decode.read_frames(synth[0].video, times)]
    for d in range(8):
        assert any(vids[(0, d)]["image"].equal(c) for c in candidates)


def test_mixed_rate_batches_give_each_clip_its_own_rate_fbank(tmp_path):
    import soundfile as sf

    from avssl.data.audio import equiav_fbank, equiav_fbank_batch
    from avssl.data.datasets import collate_mixed_rates

    g = torch.Generator().manual_seed(0)
    recs = []
    for i, sr in enumerate((16000, 22050, 16000)):
        wav = tmp_path / f"m{i}.wav"
        sf.write(wav, (0.1 * torch.randn(int(0.4 * sr), generator=g)).numpy(), sr)
        recs.append(Record(id=f"m{i}", frames=_frame_folder_record(tmp_path, 1).frames, audio=str(wav), labels=["a"]))
    ds = AVFrameAudioDataset(recs, image_size=16, seconds=0.5, audio_pad="zero")
    samples = [ds[i] for i in range(3)]
    with pytest.raises(ValueError, match="different sample rates"):
        collate(samples)
    batch = collate_mixed_rates(samples)
    assert batch["sample_rate"].tolist() == [16000, 22050, 16000] and batch["wave"].shape == (3, int(0.5 * 22050))
    fb = equiav_fbank_batch(batch["wave"], batch["num_samples"], batch["sample_rate"], 64, (-4.346, 4.332), 32)
    for i, s in enumerate(samples):
        want = equiav_fbank(s["wave"][: s["num_samples"]], s["sample_rate"], 64, (-4.346, 4.332), 32)
        torch.testing.assert_close(fb[i], want, atol=1e-4, rtol=1e-4)
    same = collate_mixed_rates([samples[0], samples[2]])
    assert same["sample_rate"] == 16000  # one rate: a plain int, as collate gives


def test_equiav_reads_a_wav_at_its_rate_and_a_video_at_16k(synth, tmp_path):
    from avssl.methods.equiav.pipeline import equiav_clip_dataset
    from avssl.train_config import DataConfig

    rec = _frame_folder_record(tmp_path)  # an 8 kHz wav
    d = DataConfig(seconds=0.1)
    assert equiav_clip_dataset([rec], d, 16, train=False)[0]["sample_rate"] == 8000
    vid = read_manifest(generate(tmp_path / "v", clips=1, seed=1, config=SynthConfig(
        size=32, duration=0.5, classes=2, workers=1, sample_rate=22050)))
    assert decode.read_audio(vid[0].video)[1] == 22050
    assert equiav_clip_dataset(vid, d, 16, train=False)[0]["sample_rate"] == 16000  # as the authors extract
    assert equiav_clip_dataset([rec], DataConfig(seconds=0.1, sample_rate=11025), 16, train=False)[0]["sample_rate"] == 11025
