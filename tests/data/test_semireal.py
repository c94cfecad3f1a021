"""avssl.data.semireal on a tiny source of generated cut-outs and tones: exact masks and boxes, the
recording's offset and loop, silent distractors, off-screen and two-source clips, held-out classes,
determinism whatever the workers."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from avssl.data.cutouts import load_cutouts
from avssl.data.decode import read_clip
from avssl.data.manifest import read_manifest
from avssl.data.semireal import SemiRealConfig, generate_semireal, render_scene
from cutout_utils import TONE_COLOURS as COLOURS
from cutout_utils import TONE_FREQS as FREQS
from cutout_utils import write_tone_cutouts

CFG = SemiRealConfig(size=64, duration=1.0, fps=5.0, sample_rate=16000, objects=(1, 3),
                     object_size=(0.1, 0.2), snr_db=None, gain_db=(0.0, 0.0), rate=(1.0, 1.0), workers=1)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_tone_cutouts(tmp_path_factory.mktemp("cutouts"))


@pytest.fixture(scope="module")
def cutouts(source):
    return load_cutouts(source).cutouts


def test_masks_are_the_sounding_cutouts_visible_pixels_and_boxes_their_extent(cutouts):
    names = [c.name for c in cutouts]
    for index in range(12):
        clip = render_scene(cutouts, None, seed=3, index=index, kind="single", cfg=CFG)
        mask, (src,) = clip["mask"], clip["sources"]
        assert mask.any() and clip["frames"].shape == (5, 64, 64, 3)
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert clip["boxes"] == [[round(cols[0] / 64, 5), round(rows[0] / 64, 5),
                                  round((cols[-1] + 1) / 64, 5), round((rows[-1] + 1) / 64, 5)]]
        # every mask pixel shows the sounding cut-out's colour: nearer to it than to any other
        pixels = clip["frames"][CFG.annotation_index][mask].astype(float)
        dist = {n: np.linalg.norm(pixels - COLOURS[n], axis=1) for n in names}
        nearest = np.argmin(np.stack([dist[n] for n in names]), axis=0)
        assert np.mean(nearest == names.index(names[src])) > 0.97
        assert len(set(clip["shown"])) == len(clip["shown"]) and src in clip["shown"]


def test_the_soundtrack_is_the_sounding_recording_looped_from_its_offset(cutouts):
    for index in range(6):
        clip = render_scene(cutouts, None, seed=1, index=index, kind="single", cfg=CFG)
        cut = cutouts[clip["sources"][0]]
        wave = cut.wave / np.abs(cut.wave).max()
        offset = int(round(clip["offset_s"][0] * CFG.sample_rate))
        looped = np.take(wave, (offset + np.arange(16000)) % len(wave))
        scale = np.abs(clip["audio"]).max() / np.abs(looped).max()
        np.testing.assert_allclose(clip["audio"], scale * looped, atol=1e-5)  # distractors are silent
        assert 0.3 <= np.abs(clip["audio"]).max() <= 0.9


def test_rate_and_noise_change_the_recording(cutouts):
    cfg = replace(CFG, rate=(0.9, 0.9), snr_db=(10.0, 10.0))
    clip = render_scene(cutouts, None, seed=1, index=0, kind="single", cfg=cfg)
    assert clip["rate"] == [pytest.approx(0.9, abs=0.005)] and clip["snr_db"] == 10.0
    spectrum = np.abs(np.fft.rfft(clip["audio"]))
    peak = np.fft.rfftfreq(16000, 1 / 16000)[spectrum.argmax()]
    assert peak == pytest.approx(FREQS[cutouts[clip["sources"][0]].name] * 0.9, rel=0.01)  # slower, lower


def test_offscreen_and_two_source_scenes(cutouts):
    for index in range(6):
        off = render_scene(cutouts, None, seed=2, index=index, kind="offscreen", cfg=CFG)
        assert off["sources"][0] not in off["shown"] and off["boxes"] == [] and not off["mask"].any()
        two = render_scene(cutouts, None, seed=2, index=index, kind="two", cfg=CFG)
        assert len(two["sources"]) == 2 and set(two["sources"]) <= set(two["shown"])


def test_the_data_set_is_deterministic_whatever_the_workers_and_holds_classes_out(source, tmp_path):
    cfg = replace(CFG, holdout=("horn",), two_source_frac=0.25, offscreen_frac=0.25, split=(0.5, 0.25, 0.25))
    one = generate_semireal(tmp_path / "a", source, clips=8, seed=5, config=cfg)
    two = generate_semireal(tmp_path / "b", source, clips=8, seed=5, config=replace(cfg, workers=2))
    assert one.read_text() == two.read_text()
    records = read_manifest(one)
    assert {r.split for r in records} == {"train", "val", "test"}
    for r in records:
        a = np.asarray(Image.open(tmp_path / "a" / r.extra["mask"]))
        assert np.array_equal(a, np.asarray(Image.open(tmp_path / "b" / r.extra["mask"])))
        assert a.shape == (64, 64) and a.any() == bool(r.extra["boxes"])
        if r.split == "train":
            assert "horn" not in r.labels + r.extra["distractors"]
    clip = read_clip(records[0].video, num_frames=2, sample_rate=16000)
    assert clip.frames.shape[1:] == (64, 64, 3) and clip.audio.shape[0] == pytest.approx(16000, abs=1100)
    other = generate_semireal(tmp_path / "c", source, clips=8, seed=6, config=cfg)
    assert other.read_text() != one.read_text()
    for bad, match in [(replace(cfg, holdout=("yak",)), "not among the cut-outs"),
                       (replace(cfg, holdout=tuple(COLOURS)), "no class to train on")]:
        with pytest.raises(ValueError, match=match):
            generate_semireal(tmp_path / "d", source, clips=4, seed=0, config=bad)


def test_photographs_are_the_backgrounds(source, tmp_path):
    photo = np.zeros((100, 140, 3), np.uint8)
    photo[..., 0] = np.arange(140, dtype=np.uint8)[None, :]
    (tmp_path / "bg").mkdir()
    Image.fromarray(photo).save(tmp_path / "bg" / "ramp.jpg", quality=95)
    m = generate_semireal(tmp_path / "out", source, clips=2, seed=0, config=replace(CFG, objects=(1, 1)),
                          backgrounds=tmp_path / "bg")
    frame = read_clip(read_manifest(m)[0].video, num_frames=1, sample_rate=16000).frames[0].astype(int)
    assert frame[..., 1].mean() < 40 and frame[..., 0].std() > 10  # the red ramp shows around the cut-out


def test_avssl_synth_with_a_cutout_source(source, tmp_path, caplog):
    from avssl.cli import main

    out = tmp_path / "cli"
    assert main(["synth", str(out), "--clips", "4", "--size", "64", "--duration", "1", "--fps", "5",
                 "--source", f"cutouts:{source}", "--workers", "1", "--noise-db", "none", "--split", "0.5,0,0.5"]) == 0
    records = read_manifest(out / "manifest.jsonl")
    assert len(records) == 4 and all((out / r.extra["mask"]).is_file() for r in records)
    assert (out / "reference_scores.json").is_file() and (out / "semireal_config.json").is_file()
    assert main(["synth", str(tmp_path / "x"), "--clips", "2", "--source", f"cutouts:{source}",
                 "--classes", "3"]) == 2
    assert main(["synth", str(tmp_path / "y"), "--clips", "2", "--source", f"cutouts:{tmp_path / 'none'}"]) == 2
    assert main(["synth", str(tmp_path / "z"), "--clips", "2", "--source", "shapes:x"]) == 2
    err = caplog.text
    assert "do not apply to --source" in err and "no such file or folder" in err and "cutouts:PATH" in err
    three = list(COLOURS)[:3]
    keep = ",".join(three)
    assert main(["synth", str(tmp_path / "only"), "--clips", "6", "--size", "64", "--duration", "1", "--fps", "5",
                 "--source", f"cutouts:{source}", "--workers", "1", "--only", keep, "--no-reference"]) == 0
    kept = read_manifest(tmp_path / "only" / "manifest.jsonl")
    assert {c for r in kept for c in r.labels + r.extra["distractors"]} <= set(three)
    assert main(["synth", str(tmp_path / "only2"), "--clips", "2", "--source", f"cutouts:{source}",
                 "--only", "yak"]) == 2
    assert "['yak'] are not among the cut-outs" in caplog.text


def test_reference_scores_include_the_masks(source, tmp_path):
    import json

    from avssl.eval.references import reference_scores

    out = tmp_path / "refs"
    generate_semireal(out, source, clips=8, seed=1, config=replace(CFG, split=(0.5, 0, 0.5)))
    scores = reference_scores(out, seed=1)
    assert json.loads((out / "reference_scores.json").read_text()) == json.loads(json.dumps(scores))
    assert scores["perfect_mask"]["mask"]["mask_ciou_at_0.5"] == 1.0
    assert scores["perfect_mask"]["mask"]["mask_pointing_accuracy"] == 1.0
    assert scores["perfect"]["ciou_at_0.5"] == 1.0 and scores["perfect"]["mask"]["mask_mean_ciou"] < 1.0
    assert scores["centre_prior"]["mask"]["n_scored"] == 4


def test_avssl_score_adds_the_mask_measures(source, tmp_path, capsys):
    import json

    from avssl.cli import main

    out = tmp_path / "set"
    generate_semireal(out, source, clips=6, seed=2, config=CFG)
    records = read_manifest(out / "manifest.jsonl")
    maps = {r.id: np.asarray(Image.open(out / r.extra["mask"]), np.float32) for r in records}
    np.savez(tmp_path / "pred.npz", **maps)
    assert main(["score", "--pred", str(tmp_path / "pred.npz"), "--gt", str(out / "annotations" / "vggss.json"),
                 "--masks", str(out / "manifest.jsonl")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["mask"]["mask_ciou_at_0.5"] == 1.0 and summary["mask"]["n_scored"] == 6
    assert main(["score", "--pred", str(tmp_path / "pred.npz"), "--gt", str(out / "annotations" / "vggss.json"),
                 "--masks", str(tmp_path / "nope.jsonl")]) == 2
