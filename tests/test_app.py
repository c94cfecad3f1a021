"""avssl app: the page's logic (limits, clear refusals, results) on tiny media, and the page itself in a
real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium; skipped without them)."""
from __future__ import annotations

import argparse
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from avssl.app import AppInputError, Limits, Localiser
from avssl.checkpoint import save_checkpoint
from avssl.data.manifest import read_manifest
from avssl.data.synthetic import SynthConfig, generate
from avssl.registry import build_method

TINY = {"width": 8, "image_size": 64, "heatmap_size": 4}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    torch.manual_seed(0)
    ckpt = save_checkpoint(root / "tiny.pt", model=build_method("ssltie", TINY).state_dict(),
                           config={"method": "ssltie", "ssltie": TINY, "data": {"seconds": 1.0}})
    clips = [Path(r.video) for r in read_manifest(generate(root / "clips", clips=2, seed=0, config=SynthConfig(
        size=64, duration=2.0, workers=1)))]
    broken = root / "broken.mp4"
    broken.write_bytes(clips[0].read_bytes()[:3000])  # a truncated upload
    silent = root / "silent.mp4"
    import av

    with av.open(str(silent), "w") as c:  # video only
        s = c.add_stream("libx264", rate=10)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        for i in range(10):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), 20 * i, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return {"ckpt": ckpt, "clip": clips[0], "broken": broken, "silent": silent, "root": root}


def test_the_localiser_refuses_bad_files_in_one_sentence_and_localises_good_ones(media, tmp_path):
    loc = Localiser(media["ckpt"], Limits(max_mb=5, max_seconds=10, frames=3), workdir=tmp_path / "work")
    for path, words in [(None, "Choose a video"), (media["silent"], "no audio track"),
                        (media["broken"], "could not be decoded|not a video this page can read"),
                        (tmp_path / "gone.mp4", "not there")]:
        with pytest.raises(AppInputError, match=words) as e:
            loc.run(path)
        assert "\n" not in str(e.value) and "Traceback" not in str(e.value)
    with pytest.raises(AppInputError, match="up to 1 s"):
        Localiser(media["ckpt"], Limits(max_seconds=1), workdir=tmp_path / "w2").check(media["clip"])
    with pytest.raises(AppInputError, match="MB"):
        Localiser(media["ckpt"], Limits(max_mb=1e-4), workdir=tmp_path / "w3").check(media["clip"])
    stages = []
    res = loc.run(media["clip"], progress=lambda f, d: stages.append(f))
    assert stages[-1] == 1.0 and res.overlay.is_file() and res.overlay.stat().st_size > 0
    assert res.maps.shape[0] == res.frames.shape[0] == 3 and res.method == "ssltie"
    image, text = res.view(1.0, 0.7)
    assert image.shape == res.frames[0].shape and "peaks at" in text
    assert not np.array_equal(image, res.frames[res.index_at(1.0)])  # the heatmap is drawn on it
    assert np.array_equal(res.view(1.0, 0.0)[0], res.frames[res.index_at(1.0)])  # opacity 0: the frame
    again = loc.run(media["clip"])
    assert not res.overlay.exists() and again.overlay.is_file()  # one result kept at a time
    loc.close()


def _tiny_equiav(path):
    """A tiny untrained EquiAV checkpoint (ViTs of 32 px, 0.655 s of audio)."""
    eq = {"embed_dim": 32, "num_heads": 4, "depth": 1, "img_size": 32, "patch_size": 8, "audio_length": 64,
          "num_mel_bins": 32, "num_centroid": 2, "aug_emb_dim": 16, "cross_attn_heads": 2, "cross_attn_head_dim": 8,
          "proj_hidden_dim": 32, "inter_out_dim": 16, "intra_out_dim": 16}
    torch.manual_seed(0)
    return save_checkpoint(path, model=build_method("equiav", eq).state_dict(),
                           config={"method": "equiav", "equiav": eq, "data": {"seconds": 0.655}})


def test_an_equiav_checkpoint_gives_its_zero_shot_maps(media, tmp_path):
    ckpt = _tiny_equiav(tmp_path / "eq.pt")
    loc = Localiser(ckpt, Limits(frames=2), workdir=tmp_path / "work")
    res = loc.run(media["clip"])
    assert res.method == "equiav" and res.maps.shape[0] == 2 and np.isfinite(res.maps).any()
    assert res.overlay.is_file()
    loc.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _browser_missing() -> str | None:
    for module in ("gradio", "selenium"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install 'avssl[app]' selenium)"
    for exe in ("chromium", "chromedriver"):
        if shutil.which(exe) is None:
            return f"{exe} is not installed (apt-get install chromium chromium-driver)"
    return None


BROWSER_MISSING = _browser_missing()


@pytest.mark.browser
@pytest.mark.skipif(BROWSER_MISSING is not None, reason=str(BROWSER_MISSING))
def test_the_page_in_a_real_browser(media, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from avssl.commands.app import serve

    port = _free_port()
    args = argparse.Namespace(checkpoint=str(media["ckpt"]), host="127.0.0.1", port=port, max_mb=5,
                              max_seconds=30, frames=4, device="cpu", no_examples=False)
    page, loc, tmp = serve(args, block=False)
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    wait = WebDriverWait(driver, 120)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]")))

        def upload(path: Path) -> None:
            driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(path))
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload video"))
            driver.find_element(By.CSS_SELECTOR, "#run").click()

        upload(media["clip"])
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#overlay video")
                   and d.find_elements(By.CSS_SELECTOR, "#heatmap img"))
        wait.until(lambda d: "peaks at" in d.find_element(By.CSS_SELECTOR, "#status").text)
        src = driver.find_element(By.CSS_SELECTOR, "#overlay video").get_attribute("src")
        assert src and "overlay" in src
        uploads = [p for p in Path(tmp.name).rglob("*.mp4") if p.name == media["clip"].name]
        assert uploads, "the upload lands in the app's own temporary folder"
        time.sleep(1)
        driver.save_screenshot(str(tmp_path / "app.png"))
        assert (tmp_path / "app.png").stat().st_size > 10_000
        # a corrupt upload: one sentence on the page, and the server keeps serving
        driver.find_element(By.CSS_SELECTOR, "#upload button[aria-label='Clear']").click()
        # (a truncated mp4 may not preview in the player, so it is sent without waiting for one)
        driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(media["broken"]))
        time.sleep(2)
        driver.find_element(By.CSS_SELECTOR, "#run").click()
        wait.until(lambda d: "could not be decoded" in d.page_source or "not a video this page can read" in d.page_source)
        driver.save_screenshot(str(tmp_path / "app_error.png"))
        driver.get(f"http://127.0.0.1:{port}/")  # still up
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#run")))
    finally:
        driver.quit()
        page.close()
        loc.close()
        tmp.cleanup()
    assert not Path(tmp.name).exists()  # uploads and results removed with it


def test_sigterm_stops_a_blocking_server_and_removes_its_folder(media, monkeypatch):
    """issue 22 item 14: kill / systemd / docker stop send SIGTERM; it stops the page as Ctrl-C
    does (Gradio's blocking launch returns on KeyboardInterrupt) and the temporary folder goes."""
    import os
    import signal

    import avssl.app as app_module
    from avssl.commands import app as app_command

    seen = {}

    class FakePage:  # what Gradio's launch(prevent_thread_lock=False) does with a KeyboardInterrupt
        def launch(self, **kw):
            seen["folder"] = Path(kw["allowed_paths"][0])
            assert seen["folder"].is_dir()
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
                seen["interrupted"] = False
            except KeyboardInterrupt:
                seen["interrupted"] = True

    monkeypatch.setattr(app_module, "build_page", lambda localiser, examples: FakePage())
    before = signal.getsignal(signal.SIGTERM)
    args = argparse.Namespace(checkpoint=str(media["ckpt"]), host="127.0.0.1", port=0, max_mb=5.0, max_seconds=30.0,
                              frames=2, device="cpu", no_examples=True)
    app_command.serve(args, block=True)
    assert seen["interrupted"] and not seen["folder"].exists()
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is put back


# ----------------------------------------------------------------------------- round 3: full frame, audio rates
def _wide_clip(path: Path, width: int = 96, height: int = 64, seconds: float = 2.0, sample_rate: int = 44100) -> Path:
    """H.264 + AAC mp4: a bright square on the left edge (outside the centre square) and a tone."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=10)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        a = c.add_stream("aac", rate=sample_rate, layout="mono")
        for i in range(int(seconds * 10)):
            img = np.full((height, width, 3), 40, np.uint8)
            img[20:36, 0:14] = (250, 200, 30)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            c.mux(v.encode(f))
        c.mux(v.encode(None))
        n = int(seconds * sample_rate)
        af = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / sample_rate))
                                        .astype(np.float32)[None], format="fltp", layout="mono")
        af.sample_rate, af.pts, af.time_base = sample_rate, 0, Fraction(1, sample_rate)
        c.mux(a.encode(af))
        c.mux(a.encode(None))
    return path


def _rated_checkpoint(path: Path, rates: list[int]) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(path, model=build_method("ssltie", TINY).state_dict(),
                           config={"method": "ssltie", "ssltie": TINY, "data": {"seconds": 1.0}},
                           extra={"trained_audio": {"sample_rates": rates, "seconds": 1.0}})


def test_the_page_maps_the_whole_frame_by_default(media, tmp_path):
    clip = _wide_clip(tmp_path / "wide.mp4", sample_rate=16000)
    loc = Localiser(media["ckpt"], Limits(frames=2), workdir=tmp_path / "work")
    res = loc.run(clip)
    assert res.full_frame and res.maps.shape == (2, 4, 6) and np.isfinite(res.maps).all()
    image, _ = res.view(0.5, 0.7)
    assert np.abs(image[:, :12].astype(int) - res.frames[0][:, :12].astype(int)).mean() > 10  # sides coloured
    loc.close()
    crop = Localiser(media["ckpt"], Limits(frames=2), workdir=tmp_path / "crop", full_frame=False)
    res = crop.run(clip)
    assert not res.full_frame and res.maps.shape == (2, 4, 6) and np.isnan(res.maps[:, :, [0, 5]]).all()
    crop.close()


def test_the_page_falls_back_to_the_centre_square_for_equiav(media, tmp_path):
    ckpt = _tiny_equiav(tmp_path / "eq.pt")
    loc = Localiser(ckpt, Limits(frames=2), workdir=tmp_path / "work")
    res = loc.run(_wide_clip(tmp_path / "wide.mp4", sample_rate=16000))
    assert not res.full_frame and np.isnan(res.maps).any()
    _, text = res.view(0.5, 0.5)
    assert "centre square" in text and "\n" not in text
    loc.close()


def test_the_page_resamples_to_the_models_one_rate_and_says_so(media, tmp_path):
    clip = _wide_clip(tmp_path / "wide44.mp4", sample_rate=44100)
    loc = Localiser(_rated_checkpoint(tmp_path / "one.pt", [16000]), Limits(frames=2), workdir=tmp_path / "w1")
    res = loc.run(clip)
    _, text = res.view(0.5, 0.5)
    assert res.sample_rate == 16000 and "44100 Hz" in text and "resampled to 16000 Hz" in text
    loc.close()
    loc = Localiser(_rated_checkpoint(tmp_path / "two.pt", [16000, 22050]), Limits(frames=2), workdir=tmp_path / "w2")
    res = loc.run(clip)
    _, text = res.view(0.5, 0.5)
    assert res.sample_rate == 44100 and "44100 Hz" in text and "16000/22050 Hz" in text and "resampled" not in text
    loc.close()
    loc = Localiser(_rated_checkpoint(tmp_path / "same.pt", [44100]), Limits(frames=2), workdir=tmp_path / "w3")
    res = loc.run(clip)
    assert res.sample_rate == 44100 and "Hz" not in res.view(0.5, 0.5)[1]  # nothing to say
    loc.close()
