"""Tests for avssl.data.decode on tiny media files encoded with PyAV at test time.

Video pattern: frame ``i`` is a solid grey of level ``10 + 12 i`` (20 frames at 10 fps, 2 s), so a
decoded frame's index is ``round((mean - 10) / 12)``. Audio: stereo, left ``0.5 sin(440 Hz)``,
right ``0.3 sin(1 kHz)``, so the mono downmix holds 440 Hz at 0.25 and 1 kHz at 0.15.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from avssl.data import decode as D

FPS, NFRAMES, W, H = 10, 20, 64, 48
DUR = NFRAMES / FPS

# (container, video encoder, pixel format, audio encoder, audio rate, audio encoder options)
CASES = {
    "mp4-h264-aac": ("mp4", "libx264", "yuv420p", "aac", 44100, {}),
    "webm-vp8-vorbis": ("webm", "libvpx", "yuv420p", "vorbis", 44100, {"strict": "experimental"}),
    "webm-vp9-opus": ("webm", "libvpx-vp9", "yuv420p", "libopus", 48000, {}),
    "avi-mjpeg-pcm_u8": ("avi", "mjpeg", "yuvj420p", "pcm_u8", 44100, {}),
    "mov-mpeg4-aac": ("mov", "mpeg4", "yuv420p", "aac", 44100, {}),
    "mkv-h264-mp3": ("mkv", "libx264", "yuv420p", "libmp3lame", 44100, {}),
}
LOSSLESS_AUDIO = {"pcm_u8"}
# relative tolerance on decoded tone amplitudes; FFmpeg's experimental native vorbis encoder
# does not keep amplitudes (1 kHz at 0.3 comes back as 0.1 at 991 Hz), so there only peaks
# (within 2 %) are checked
AMP_TOL = {"pcm_u8": 0.02, "aac": 0.1, "libopus": 0.1, "libmp3lame": 0.1, "vorbis": None}


def _need(*codecs: str) -> None:
    missing = [c for c in codecs if c and c not in av.codecs_available]
    if missing:
        pytest.skip(f"this PyAV build has no encoder for {missing}")


def _stereo(sr: int, dur: float) -> np.ndarray:
    t = np.arange(round(sr * dur)) / sr
    return np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 1000 * t)])


def _audio_frame(x: np.ndarray, fmt: str, sr: int) -> av.AudioFrame:
    """(C, n) float in [-1, 1] -> an AudioFrame in ``fmt`` (planar or packed)."""
    conv = {"flt": lambda a: a.astype(np.float32), "s16": lambda a: (a * 32767).astype(np.int16),
            "s32": lambda a: (a * 2**31 * 0.999).astype(np.int32),
            "u8": lambda a: np.round(a * 127 + 128).astype(np.uint8)}[fmt.rstrip("p")]
    arr = conv(x) if fmt.endswith("p") else conv(x.T.reshape(1, -1))
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format=fmt, layout="stereo")
    frame.sample_rate, frame.pts = sr, 0
    return frame


def write_media(path: Path, vcodec: str | None, pix: str = "yuv420p", acodec: str | None = None,
                sr: int = 44100, aopts: dict | None = None, n: int = NFRAMES,
                options: dict | None = None, gop: int | None = None) -> Path:
    """Encode the grey-level video and/or the stereo tone with PyAV."""
    _need(vcodec, acodec)
    with av.open(str(path), "w", options=options or {}) as c:
        streams = []  # every stream must exist before the first packet is muxed
        if vcodec:
            vs = c.add_stream(vcodec, rate=FPS)
            vs.width, vs.height, vs.pix_fmt = W, H, pix
            if gop:
                vs.codec_context.gop_size = gop
            grey = [np.full((H, W, 3), (10 + 12 * i) % 250, np.uint8) for i in range(n)]
            streams.append((vs, [av.VideoFrame.from_ndarray(g, format="rgb24") for g in grey]))
        if acodec:
            fmts = [f.name for f in av.Codec(acodec, "w").audio_formats]
            fmt = next(f for f in ("fltp", "flt", "s16p", "s16", "u8") if f in fmts)
            aus = c.add_stream(acodec, rate=sr, layout="stereo", options=aopts or {})
            aus.format = fmt
            if acodec not in LOSSLESS_AUDIO:
                aus.bit_rate = 192000
            streams.append((aus, [_audio_frame(_stereo(sr, n / FPS), fmt, sr)]))
        for stream, frames in streams:
            for i, frame in enumerate(frames):
                frame.pts = i
                c.mux(stream.encode(frame))
            c.mux(stream.encode())
    return path


def tone_amp(x: np.ndarray, sr: int, f: int) -> float:
    """Amplitude of the ``f`` Hz component of a 1 s segment from the middle (1 Hz bins, Hann)."""
    s = (len(x) - sr) // 2
    seg = x[s:s + sr] * np.hanning(sr)
    return float(2 * np.abs(np.fft.rfft(seg))[f] / np.hanning(sr).sum())


def frame_index(frames: np.ndarray) -> np.ndarray:
    """Index of each grey frame (valid below 20 frames, where levels do not wrap)."""
    return np.round((frames.reshape(len(frames), -1).mean(1) - 10) / 12).astype(int)


def peak_hz(x: np.ndarray, sr: int) -> int:
    s = (len(x) - sr) // 2
    return int(np.abs(np.fft.rfft(x[s:s + sr] * np.hanning(sr))).argmax())


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """name -> path for each CASES entry whose encoders exist (lazily, so skips are per case)."""
    root = tmp_path_factory.mktemp("media")
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            ext, vc, pix, ac, sr, aopts = CASES[name]
            made[name] = write_media(root / f"{name}.{ext}", vc, pix, ac, sr, aopts)
        return made[name]

    return get


# ----------------------------------------------------------------------------- real media
@pytest.mark.parametrize("name", list(CASES))
def test_probe_frames_and_audio(media, name):
    path, (_, _, _, acodec, sr, _) = media(name), CASES[name]
    info = D.probe(path)
    assert (info.has_video, info.has_audio, info.width, info.height) == (True, True, W, H)
    assert info.fps == pytest.approx(FPS) and info.num_frames == NFRAMES
    assert info.duration == pytest.approx(DUR, abs=0.05)
    assert (info.sample_rate, info.channels) == (sr, 2)

    # unsorted, repeated, on a frame boundary, between frames, before and after the clip
    times = [1.95, 0.0, 0.3, 0.05, 0.99, 1.0, 0.3, 7.0, -1.0, 0.55]
    expect = [19, 0, 3, 0, 9, 10, 3, 19, 0, 5]
    frames = D.read_frames(path, times)
    assert frames.shape == (len(times), H, W, 3) and frames.dtype == np.uint8
    assert frame_index(frames).tolist() == expect
    # forced seeks give the same frames; size rescales
    small = D.read_frames(path, times, size=(32, 24), seek_threshold=0.2)
    assert small.shape == (len(times), 24, 32, 3) and frame_index(small).tolist() == expect

    wave, rate = D.read_audio(path, sample_rate=16000)
    assert rate == 16000 and wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - DUR * 16000) <= 0.05 * 16000  # within one codec frame
    stereo, native = D.read_audio(path, mono=False)
    assert native == sr and stereo.shape[0] == 2
    mono, _ = D.read_audio(path)
    np.testing.assert_allclose(mono, stereo.mean(0), atol=1e-6)  # downmix = channel average
    assert abs(peak_hz(stereo[0], sr) - 440) <= 9 and abs(peak_hz(stereo[1], sr) - 1000) <= 20
    assert tone_amp(stereo[0], sr, 1000) < 0.01 and tone_amp(stereo[1], sr, 440) < 0.01
    if (tol := AMP_TOL[acodec]) is not None:
        assert tone_amp(wave, 16000, 440) == pytest.approx(0.25, rel=tol)  # (0.5 + 0) / 2
        assert tone_amp(wave, 16000, 1000) == pytest.approx(0.15, rel=tol)  # (0 + 0.3) / 2
        assert tone_amp(stereo[0], sr, 440) == pytest.approx(0.5, rel=tol)
        assert tone_amp(stereo[1], sr, 1000) == pytest.approx(0.3, rel=tol)


def test_read_clip(media):
    clip = D.read_clip(media("mp4-h264-aac"), num_frames=4, sample_rate=16000)
    assert clip.frame_times == pytest.approx([0.25, 0.75, 1.25, 1.75])
    assert frame_index(clip.frames).tolist() == [2, 7, 12, 17]
    assert clip.sample_rate == 16000 and len(clip.audio) == pytest.approx(DUR * 16000, abs=800)
    assert clip.duration == pytest.approx(DUR, abs=0.05)
    assert len(D.read_clip(media("mp4-h264-aac")).frames) == 10  # default: 10 evenly spaced
    clip = D.read_clip(media("mp4-h264-aac"), frame_times=[1.05], sample_rate=None)
    assert frame_index(clip.frames).tolist() == [10] and clip.sample_rate == 44100


def test_read_frames_seeks_forward_on_long_gaps(tmp_path, monkeypatch):
    """Two far-apart times in a 10 s clip with 1 s GOPs: the decoder seeks instead of decoding all."""
    path = write_media(tmp_path / "long.mp4", "libx264", n=100, gop=10)
    seeks = []
    real_seek = av.container.InputContainer.seek
    monkeypatch.setattr(av.container.InputContainer, "seek",
                        lambda self, *a, **k: seeks.append(a[0]) or real_seek(self, *a, **k))
    frames = D.read_frames(path, [9.05, 0.15, 5.55])
    levels = frames.reshape(3, -1).mean(1)
    np.testing.assert_allclose(levels, [(10 + 12 * i) % 250 for i in (90, 1, 55)], atol=3)
    assert len(seeks) == 2  # 0.15 decoded from the start; then seeks to 5.55 and to 9.05


def test_evenly_spaced_times():
    assert D.evenly_spaced_times(10.0, 5) == pytest.approx([1, 3, 5, 7, 9])
    assert D.evenly_spaced_times(2.0, 0) == []
    with pytest.raises(ValueError):
        D.evenly_spaced_times(0.0, 3)


# ----------------------------------------------------------------------------- resampling
def _tone(f: float, sr: int, dur: float = 2.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * f * np.arange(round(sr * dur)) / sr)).astype(np.float32)


@pytest.mark.parametrize("orig,new", [(44100, 16000), (16000, 44100), (48000, 16000), (22050, 16000), (44100, 48000)])
def test_resample_preserves_tone(orig, new):
    for f in (440, 1000, 5000):
        y = D.resample(_tone(f, orig), orig, new)
        assert y.dtype == np.float32 and len(y) == -(-2 * orig * new // orig)
        assert tone_amp(y, new, f) == pytest.approx(0.5, rel=1e-3)
        spec = np.abs(np.fft.rfft(y[new // 2: new // 2 + new]))
        assert spec.argmax() == f  # 1 Hz bins
        # sample-exact and without delay: equals the tone sampled at the new rate (away from the ends)
        np.testing.assert_allclose(y[200:-200], _tone(f, new)[200:len(y) - 200], atol=2e-3)


def test_resample_rejects_aliasing():
    y = D.resample(_tone(12000, 44100), 44100, 16000)  # would fold to 4 kHz
    assert np.abs(y[1000:-1000]).max() < 1e-3 * 0.5  # below -60 dB (measured ~ -80 dB)
    assert tone_amp(y, 16000, 4000) < 1e-4


def test_resample_shapes_dc_identity():
    x = np.ones((2, 3, 4410), np.float32)
    y = D.resample(x, 44100, 16000)
    assert y.shape == (2, 3, 1600)
    assert np.allclose(y[..., 100:-100], 1.0, atol=1e-3)  # DC gain 1 (edges see zero padding)
    z = D.resample(x[0, 0], 16000, 16000)
    assert np.array_equal(z, x[0, 0]) and z is not x[0, 0]


def test_read_audio_swresample_44k_to_16k(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, np.stack([_tone(1000, 44100), _tone(12000, 44100)], 1), 44100)
    wave, sr = D.read_audio(path, sample_rate=16000)
    assert sr == 16000 and len(wave) == pytest.approx(32000, abs=2)
    assert tone_amp(wave, sr, 1000) == pytest.approx(0.25, rel=0.01)
    assert tone_amp(wave, sr, 4000) < 1e-3  # the 12 kHz channel must not alias to 4 kHz


# ----------------------------------------------------------------------------- extracted files
def test_read_wav(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, np.stack([_tone(440, 44100), _tone(1000, 44100, amp=0.3)], 1), 44100)
    wave, sr = D.read_wav(path)
    assert sr == 44100 and wave.shape == (88200,) and tone_amp(wave, sr, 440) == pytest.approx(0.25, rel=1e-3)
    wave, sr = D.read_wav(path, sample_rate=16000)
    assert sr == 16000 and wave.shape == (32000,) and tone_amp(wave, sr, 1000) == pytest.approx(0.15, rel=1e-3)
    with pytest.raises(D.SampleRateError, match="44100.*16000") as e:
        D.read_wav(path, sample_rate=16000, resample=False)
    assert e.value.path == str(path)


def test_read_wav_mp3(tmp_path):
    path = write_media(tmp_path / "a.mp3", None, acodec="libmp3lame", sr=44100)
    wave, sr = D.read_wav(path, sample_rate=16000)
    assert sr == 16000 and abs(len(wave) - DUR * 16000) < 0.1 * 16000
    assert tone_amp(wave, sr, 440) == pytest.approx(0.25, rel=0.1)


def test_read_wav_bad(tmp_path):
    full = tmp_path / "full.wav"
    sf.write(full, _tone(440, 16000), 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(D.CorruptMediaError, match="truncated wav") as e:
        D.read_wav(cut)
    assert str(cut) in str(e.value)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(D.EmptyAudioError, match="empty.wav"):
        D.read_wav(empty)
    junk = tmp_path / "junk.wav"
    junk.write_text("not audio at all\n" * 10)
    with pytest.raises(D.CorruptMediaError, match="junk.wav"):
        D.read_wav(junk)


def test_read_image_and_extracted(tmp_path):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"frame_{i}.jpg")
        Image.fromarray(np.full((24, 32, 3), (40 + 80 * i, 20, 200), np.uint8)).save(paths[-1], quality=95)
    img = D.read_image(paths[1])
    assert img.shape == (24, 32, 3) and img.dtype == np.uint8
    assert np.abs(img.reshape(-1, 3).mean(0) - (120, 20, 200)).max() < 3
    wav = tmp_path / "a.wav"
    sf.write(wav, _tone(440, 22050, 3.0), 22050)
    clip = D.read_extracted(paths, wav, sample_rate=16000)
    assert clip.frames.shape == (3, 24, 32, 3) and clip.frame_times == pytest.approx([0.5, 1.5, 2.5])
    assert clip.sample_rate == 16000 and clip.audio.shape == (48000,) and clip.duration == pytest.approx(3.0)

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(paths[0].read_bytes()[:200])
    with pytest.raises(D.CorruptMediaError, match="broken.jpg"):
        D.read_image(broken)
    with pytest.raises(D.CorruptMediaError, match="broken.jpg"):
        D.read_extracted([paths[0], broken], wav)


# ----------------------------------------------------------------------------- bad input
def test_truncated_mp4(tmp_path):
    src = write_media(tmp_path / "full.mp4", "libx264", acodec="aac", n=50)  # moov at the end
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    for call in (D.probe, lambda p: D.read_frames(p, [0.0]), D.read_audio):
        with pytest.raises(D.CorruptMediaError, match="not a readable media file") as e:
            call(cut)
        assert e.value.path == str(cut) and str(cut) in str(e.value)


@pytest.mark.parametrize("ext,options", [("mp4", {"movflags": "faststart"}), ("mkv", {})])
def test_truncated_with_index_up_front(tmp_path, ext, options):
    """The headers survive the cut, so decoding stops early: report how far it got."""
    src = write_media(tmp_path / f"full.{ext}", "libx264", acodec="aac", n=50, options=options)
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    assert frame_index(D.read_frames(cut, [0.5])).tolist() == [5]  # the intact part still reads
    with pytest.raises(D.CorruptMediaError, match=r"video stream ends at [\d.]+ s but the file declares 5\.0"):
        D.read_frames(cut, [4.5])
    with pytest.raises(D.CorruptMediaError, match=r"(audio stream ends at|audio decoding failed after) [\d.]+ s") as e:
        D.read_audio(cut)
    assert str(cut) in str(e.value)


def test_video_without_audio(tmp_path):
    path = write_media(tmp_path / "silent.mp4", "libx264")
    with pytest.raises(D.NoAudioStreamError, match="silent.mp4: no audio stream"):
        D.read_audio(path)
    with pytest.raises(D.NoAudioStreamError, match="silent.mp4"):
        D.read_clip(path)
    clip = D.read_clip(path, num_frames=2, require_audio=False)
    assert clip.audio is None and frame_index(clip.frames).tolist() == [5, 15]


def test_audio_only_file(tmp_path):
    path = write_media(tmp_path / "sound.m4a", None, acodec="aac")
    with pytest.raises(D.NoVideoStreamError, match="sound.m4a: no video stream"):
        D.read_frames(path, [0.0])
    with pytest.raises(D.NoVideoStreamError):
        D.read_clip(path)
    assert D.probe(path).has_video is False


def test_zero_byte_text_and_missing(tmp_path):
    zero = tmp_path / "zero.mp4"
    zero.touch()
    text = tmp_path / "notes.mp4"
    text.write_text("this is a text file, not a video\n" * 20)
    missing = tmp_path / "missing.mp4"
    for call in (D.probe, lambda p: D.read_frames(p, [0.0]), D.read_audio, D.read_wav, D.read_image):
        with pytest.raises(D.CorruptMediaError, match="zero-byte file") as e:
            call(zero)
        assert e.value.path == str(zero)
        with pytest.raises(D.CorruptMediaError, match="notes.mp4"):
            call(text)
        with pytest.raises(FileNotFoundError, match="missing.mp4: no such file") as e:
            call(missing)
        assert isinstance(e.value, D.MediaError)


def test_errors_pickle():
    err = pickle.loads(pickle.dumps(D.NoAudioStreamError("/x/a.mp4", "no audio stream")))
    assert type(err) is D.NoAudioStreamError and (err.path, err.reason) == ("/x/a.mp4", "no audio stream")
    assert str(err) == "/x/a.mp4: no audio stream"


# ----------------------------------------------------------------------------- real-world quirks
def _offset_audio_media(path: Path, audio_offset: float, sr: int = 16000) -> Path:
    """1 s video (10 fps) whose audio stream starts ``audio_offset`` s after the first frame.
    The audio holds a 1 kHz burst 0.5 s into its own samples, so at container time
    ``audio_offset + 0.5`` s."""
    from fractions import Fraction

    _need("libx264", "aac")
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        a = c.add_stream("aac", rate=sr, layout="mono")
        for i in range(2 * FPS):
            f = av.VideoFrame.from_ndarray(np.full((H, W, 3), 10 + 12 * i, np.uint8), format="rgb24")
            f.pts = i
            c.mux(v.encode(f))
        c.mux(v.encode(None))
        n = round((2.0 - audio_offset) * sr)
        wave = np.zeros(n, np.float32)
        wave[sr // 2: sr // 2 + sr // 10] = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(sr // 10) / sr)
        for s in range(0, n, 1024):
            af = av.AudioFrame.from_ndarray(wave[None, s:s + 1024].copy(), format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = sr, s + round(audio_offset * sr), Fraction(1, sr)
            c.mux(a.encode(af))
        c.mux(a.encode(None))
    return path


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_late_audio_is_aligned_on_the_container_timeline(tmp_path, ext, caplog):
    path = _offset_audio_media(tmp_path / f"late.{ext}", 0.5)
    with caplog.at_level("INFO", logger="avssl.data.decode"):
        wave, sr = D.read_audio(path, 16000)
    assert re.search(r"audio starts 0\.(4[3-9]|50)\d* s after the video; padded with", caplog.text)  # mp4: less AAC priming
    loud = np.flatnonzero(np.abs(wave) > 0.1)
    assert loud[0] / sr == pytest.approx(1.0, abs=0.01)  # the burst, at its container time
    assert np.abs(wave[: int(0.45 * sr)]).max() < 1e-3  # the gap before the audio is silence
    assert len(wave) / sr == pytest.approx(2.0, abs=0.07)  # spans the video (+ AAC padding)
    clip = D.read_clip(path, num_frames=2, sample_rate=16000)
    assert np.flatnonzero(np.abs(clip.audio) > 0.1)[0] / 16000 == pytest.approx(1.0, abs=0.01)
    own, _ = D.read_audio(path, 16000, align_to_video=False)  # the stream's own clock
    assert np.flatnonzero(np.abs(own) > 0.1)[0] / sr < 0.6


def _ogg_with_bad_packets(path: Path) -> Path:
    """VP8 + Vorbis in Ogg (this PyAV has no Theora encoder) with one garbage packet in each
    stream, as in damaged real-world .ogg files: FFmpeg's players skip them."""
    from fractions import Fraction

    _need("libvpx", "vorbis")
    sr = 44100
    with av.open(str(path), "w") as c:
        v = c.add_stream("libvpx", rate=FPS)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        v.codec_context.gop_size = 5
        a = c.add_stream("vorbis", rate=sr, layout="stereo", options={"strict": "experimental"})
        for i in range(NFRAMES):
            f = av.VideoFrame.from_ndarray(np.full((H, W, 3), 10 + 12 * i, np.uint8), format="rgb24")
            f.pts = i
            for pkt in v.encode(f):
                if pkt.pts == 7:
                    pkt = av.Packet(b"\xff" * 40)
                    pkt.pts = pkt.dts = 7
                    pkt.time_base, pkt.stream = v.time_base, v
                c.mux(pkt)
        c.mux(v.encode(None))
        wave = _stereo(sr, DUR).astype(np.float32)
        for s in range(0, wave.shape[1], 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, s:s + 1024]), format="fltp", layout="stereo")
            af.sample_rate, af.pts, af.time_base = sr, s, Fraction(1, sr)
            for pkt in a.encode(af):
                if 30000 < pkt.pts <= 31000:  # a packet whose type bit says "audio" but is noise
                    bad = av.Packet(b"\x00" + b"\xff" * 39)
                    bad.pts = bad.dts = pkt.pts
                    bad.time_base, bad.stream = pkt.time_base, a
                    pkt = bad
                c.mux(pkt)
        c.mux(a.encode(None))
    return path


def test_ogg_bad_packets_are_skipped_not_fatal(tmp_path, caplog):
    path = _ogg_with_bad_packets(tmp_path / "damaged.ogg")
    with caplog.at_level("WARNING", logger="avssl.data.decode"):
        frames = D.read_frames(path, [0.05, 0.95, 1.95])
        wave, sr = D.read_audio(path)
    idx = frame_index(frames).tolist()  # decoding went on past the bad packet (one frame lost)
    assert idx[0] == 0 and idx[1] in (8, 9) and idx[2] == 19
    assert "skipped 1 video packets the decoder rejected" in caplog.text
    assert len(wave) / sr == pytest.approx(DUR, abs=0.05)
    assert peak_hz(wave, sr) in (440, 441)


def test_a_rejected_packet_is_skipped_whatever_the_error_code():
    """libavcodec's Theora decoder rejects a damaged packet with EPERM, not EINVAL: any decoder
    error skips that packet (as FFmpeg does); running out of memory still stops."""

    class Packet:
        def __init__(self, pts, result):
            self.pts, self.result = pts, result

        def decode(self):
            if isinstance(self.result, BaseException):
                raise self.result
            return [self.result]

    class Container:
        def __init__(self, packets):
            self.packets = packets

        def demux(self, stream):
            return iter(self.packets)

    stream = type("S", (), {"type": "video"})()
    eperm = av.error.PermissionError(1, "Operation not permitted", "avcodec_send_packet()")
    einval = av.error.InvalidDataError(1094995529, "Invalid data found when processing input")
    bad: list[str] = []
    got = list(D._decode_skipping(Container([Packet(0, "f0"), Packet(1, eperm), Packet(2, einval), Packet(3, "f3")]),
                                  stream, "x.ogv", bad))
    assert got == ["f0", "f3"] and len(bad) == 2 and bad[0].startswith("pts 1: ")
    oom = av.error.MemoryError(12, "Cannot allocate memory")
    with pytest.raises(av.error.MemoryError):
        list(D._decode_skipping(Container([Packet(0, oom)]), stream, "x.ogv", []))


def _ffmpeg_theora() -> str:
    import shutil
    import subprocess

    exe = shutil.which("ffmpeg")
    if exe is None:
        pytest.skip("Theora fixture needs the ffmpeg program (PyAV ships no Theora encoder): apt-get install ffmpeg")
    encoders = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    if "libtheora" not in encoders or "libvorbis" not in encoders:
        pytest.skip("this ffmpeg has no libtheora / libvorbis encoder")
    return exe


def test_theora_vorbis_ogv_with_damaged_packets_decodes(tmp_path, caplog):
    """A real Theora + Vorbis .ogv (made by the ffmpeg program when installed), then damaged by
    FFmpeg's noise bitstream filter: frames and the whole audio track still decode."""
    import subprocess

    exe = _ffmpeg_theora()
    clean, damaged = tmp_path / "clip.ogv", tmp_path / "damaged.ogv"
    subprocess.run([exe, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=15",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "3", "-c:v", "libtheora",
                    "-q:v", "5", "-c:a", "libvorbis", "-ac", "1", str(clean)], check=True)
    subprocess.run([exe, "-hide_banner", "-loglevel", "error", "-i", str(clean), "-c", "copy",
                    "-bsf:v", "noise=amount=2000", str(damaged)], check=True)
    info = D.probe(damaged)
    assert info.has_video and info.has_audio and (info.width, info.height) == (160, 120)
    with caplog.at_level("WARNING", logger="avssl.data.decode"):
        clip = D.read_clip(damaged, num_frames=4, sample_rate=16000)
    assert clip.frames.shape == (4, 120, 160, 3) and clip.frames.std() > 10
    assert len(clip.audio) == pytest.approx(3 * 16000, abs=200) and peak_hz(clip.audio, 16000) in (440, 441)
    assert "video packets the decoder rejected" in caplog.text


def test_truncated_mp4_names_the_cause_after_a_seek(tmp_path):
    """Index up front, keyframes every second: a seek past the cut used to find nothing and
    report "no decodable frames"; the cause is the truncation, and the intact half still reads."""
    src = write_media(tmp_path / "full.mp4", "libx264", acodec="aac", n=50, options={"movflags": "faststart"}, gop=10)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    for times in ([4.5], [0.5, 4.5]):
        with pytest.raises(D.CorruptMediaError, match=r"file truncated/corrupt after \d+ frames \(times up to "
                                                      r"[\d.]+ s decode\): video stream ends at") as e:
            D.read_frames(cut, times)
        assert "no decodable frames" not in str(e.value) and str(cut) in str(e.value)
    assert frame_index(D.read_frames(cut, [0.5, 1.5])).tolist() == [5, 15]  # frames that decoded are used


def test_skipping_non_reference_frames_returns_the_same_frames(tmp_path):
    """Frames no other frame references, shown well before the next requested time, are not
    decoded (skip_frame=nonref): the frames returned are the same, bit for bit, with FFmpeg's
    threads or one thread, for times on reference and non-reference frames alike."""
    from avssl.data.container import open_media, video_stream

    path = write_media(tmp_path / "long.mp4", "libx264", n=120, gop=250)  # one keyframe, B-frames
    with av.open(str(path)) as c:  # the stream has non-reference frames to skip
        vs = c.streams.video[0]
        vs.codec_context.skip_frame = "NONREF"
        assert sum(1 for _ in c.decode(vs)) < 120

    def read(times, threads, skip):
        with open_media(path) as (c, p):
            return D._decode_frames(c, video_stream(c), p, np.asarray(times, float), None, 1.0, threads, skip)

    rng = np.random.default_rng(0)
    for times in ([5.95], [11.9], [0.0], list(rng.uniform(0, 12, 6)), [3.0, 3.1, 3.2, 3.3], [6.0, 11.0]):
        ref = read(times, 1, False)
        for threads in (0, 1):
            assert np.array_equal(read(times, threads, True), ref), (times, threads)


def test_audio_downmix_before_resampling_matches_per_channel(media):
    """Mono audio is downmixed before libswresample (linear, so the same up to float rounding):
    the mean of the resampled channels equals it within 1e-6."""
    path = media("mp4-h264-aac")
    mono, sr = D.read_audio(path, 16000)
    stereo, sr2 = D.read_audio(path, 16000, mono=False)
    assert sr == sr2 == 16000 and stereo.shape == (2, mono.shape[0])
    np.testing.assert_allclose(stereo.mean(axis=0), mono, atol=1e-6)


def test_a_forked_loader_worker_scales_frames_after_the_parent_did(tmp_path):
    """A DataLoader worker forked after the main process scaled frames (libswscale slice threads)
    hung for ever inside the inherited scaler, using or freeing it (seen in the suite). The worker
    must decode; DataLoader's timeout turns a hang into a failure."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    path = tmp_path / "v.mp4"
    with av.open(str(path), "w") as c:  # frames large enough for libswscale to use slice threads
        vs = c.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = 640, 360, "yuv420p"
        for k in range(6):
            for p in vs.encode(av.VideoFrame.from_ndarray(np.full((360, 640, 3), 30 * k, np.uint8), format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
    D.read_frames(str(path), [0.1, 0.2], threads=0)  # the parent scales first

    class Frames(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.from_numpy(D.read_frames(str(path), [0.1 * (i + 1)], threads=1)[0].copy())

    got = list(DataLoader(Frames(), batch_size=1, num_workers=1, timeout=60, multiprocessing_context="fork"))
    assert len(got) == 2 and got[0].ndim == 4
