"""Test media for cut-out sources, built here (``from cutout_utils import ...``, like train_utils):
RGBA pictures with exact alpha, recordings in wav/ogg/flac, folders and .deb packages."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

SR = 22050


def png(mask: np.ndarray, colour=(200, 40, 10), mode: str = "RGBA") -> bytes:
    h, w = mask.shape
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = np.where(mask, 255, 0)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def sound(freq: float, seconds: float = 0.5, fmt: str = "WAV", amp: float = 0.3, rate: int = SR) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, format=fmt)
    return buf.getvalue()


def disc(h: int = 20, w: int = 30, cy: int = 12, cx: int = 14, r: int = 6) -> np.ndarray:
    y, x = np.mgrid[:h, :w]
    return (y - cy) ** 2 + (x - cx) ** 2 <= r * r


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}".encode() + b"`\n"
    return header + data + (b"\n" if len(data) % 2 else b"")


def write_deb(path: Path, files: dict[str, bytes], data_name: str = "data.tar.xz") -> Path:
    buf = io.BytesIO()
    mode = {"data.tar.xz": "w:xz", "data.tar.gz": "w:gz", "data.tar.zst": "w"}[data_name]
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo("./usr/share/stamps/" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(b"!<arch>\n" + _ar_member("debian-binary", b"2.0\n")
                     + _ar_member("control.tar.xz", b"") + _ar_member(data_name, buf.getvalue()))
    return path


#: Four solid-colour disc cut-outs, each with a pure tone: the semi-real tests' source.
TONE_COLOURS = {"cat": (220, 30, 30), "bell": (30, 220, 30), "drum": (30, 30, 220), "horn": (230, 230, 20)}
TONE_FREQS = {"cat": 440.0, "bell": 660.0, "drum": 150.0, "horn": 990.0}


def write_tone_cutouts(root: Path) -> Path:
    """``root/things/<name>.png`` (a 24 px disc of radius 10) + ``<name>.wav`` (0.37 s at 16 kHz)."""
    files = {}
    for name, colour in TONE_COLOURS.items():
        files[f"things/{name}.png"] = png(disc(24, 24, 12, 12, 10), colour)
        files[f"things/{name}.wav"] = sound(TONE_FREQS[name], seconds=0.37, rate=16000)
    return write_folder(root, files)
