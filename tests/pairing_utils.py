"""A data set whose clip number is written into both its frame and its recording, and a check of
the pair inside the training step (imported as ``from pairing_utils import ...``; also by the
torchrun script of the DDP pairing test).

Clip ``k``'s frames are uniform grey at level ``GREY0 + GREY_STEP * k`` and its recording is a
sine at ``FREQ0 + FREQ_STEP * k`` Hz. :func:`install` wraps the training module's ``forward`` of
SSL-TIE and EquiAV so that every row of every training batch is decoded twice, from the image
the model gets (mean of the de-normalised red channel) and from its audio input (the loudest
frequency bin, matched to the bins of the reference sines through the same front-end), and the
two numbers are recorded in :data:`CHECKED`. A loader, cache, collate, transform, shard stream
or DDP slice that pairs a frame with another clip's recording makes the two numbers differ.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

N_CLIPS, CLASSES, RATE, SECONDS = 12, 4, 16000, 1.0
GREY0, GREY_STEP = 20, 18
FREQ0, FREQ_STEP = 300.0, 550.0
MEAN, STD = 0.485, 0.229  # ImageNet red channel: both methods' frame normalisation

CHECKED: list[tuple[int, int]] = []  # (code from the frame, code from the audio) per training row


def sine(k: int, seconds: float = SECONDS, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * (FREQ0 + FREQ_STEP * k) * t)).astype(np.float32)


def write_coded_set(out: Path, frames: int = 3) -> Path:
    """The prepared folder layout (``frames/<id>/<j>.jpg``, ``audio/<id>.wav``, ``manifest.jsonl``):
    clips 0..11, classes k % 4, splits 8 train / 4 val. Returns the manifest."""
    import soundfile as sf
    from PIL import Image

    from avssl.data.manifest import write_manifest
    from avssl.data.record import Record

    records = []
    for k in range(N_CLIPS):
        cid = f"code{k:02d}"
        (out / "frames" / cid).mkdir(parents=True, exist_ok=True)
        (out / "audio").mkdir(parents=True, exist_ok=True)
        grey = np.full((48, 64, 3), GREY0 + GREY_STEP * k, np.uint8)
        paths = []
        for j in range(frames):
            p = out / "frames" / cid / f"{j}.jpg"
            Image.fromarray(grey).save(p, quality=95)
            paths.append(str(p))
        sf.write(out / "audio" / f"{cid}.wav", sine(k), RATE, subtype="PCM_16")
        records.append(Record(id=cid, audio=str(out / "audio" / f"{cid}.wav"), frames=paths,
                              labels=[f"class{k % CLASSES}"], split="train" if k < 8 else "val"))
    return write_manifest(out / "manifest.jsonl", records)


def frame_codes(image: torch.Tensor) -> list[int]:
    """The clip numbers of normalised frames (B, 3, S, S)."""
    grey = (image[:, 0].float().mean(dim=(1, 2)) * STD + MEAN) * 255.0
    return [int(round(float(g - GREY0) / GREY_STEP)) for g in grey]


def _loudest_bins(feat: torch.Tensor, freq_axis: int) -> torch.Tensor:
    """Index of the loudest frequency bin of each row, over the time-mean of channel 0."""
    x = feat[:, 0].float()  # SSL-TIE (B, F, T) / EquiAV (B, T, F)
    return x.mean(dim=2 if freq_axis == 1 else 1).argmax(dim=1)


def _reference_bins(front_end, freq_axis: int) -> torch.Tensor:
    waves = torch.from_numpy(np.stack([sine(k) for k in range(N_CLIPS)]))
    return _loudest_bins(front_end(waves), freq_axis)


def audio_codes(feat: torch.Tensor, reference: torch.Tensor, freq_axis: int) -> list[int]:
    """The clip numbers of audio inputs: the reference sine whose loudest bin is nearest."""
    bins = _loudest_bins(feat, freq_axis)
    return [int((reference - b).abs().argmin()) for b in bins]


def install(monkeypatch=None) -> None:
    """Wrap the training forwards of SSL-TIE and EquiAV with the pair check (``monkeypatch``: a
    pytest fixture to undo it; None patches for good, as in a torchrun worker)."""
    from avssl.data.audio import equiav_fbank_batch, ssltie_spectrogram
    from avssl.methods.equiav.pipeline import EquiAVTrainModule
    from avssl.methods.ssltie.model import SSLTIE

    ssl_ref = _reference_bins(lambda w: ssltie_spectrogram(w, RATE, SECONDS), 1)
    ssl_forward, eq_forward = SSLTIE.forward, EquiAVTrainModule.forward
    eq_refs: dict = {}

    def ssltie_forward(self, batch, generator=None):
        CHECKED.extend(zip(frame_codes(batch["image"]), audio_codes(batch["spec"], ssl_ref, 1), strict=True))
        return ssl_forward(self, batch, generator)

    def equiav_forward(self, inputs, generator=None):
        c = self.model.cfg
        key = (c.audio_length, c.num_mel_bins, tuple(c.fbank_stats))
        if key not in eq_refs:
            eq_refs[key] = _reference_bins(lambda w: equiav_fbank_batch(
                w, None, RATE, target_frames=c.audio_length, stats=tuple(c.fbank_stats),
                num_mel_bins=c.num_mel_bins)[:, None], 2)
        CHECKED.extend(zip(frame_codes(inputs["v"]), audio_codes(inputs["a"], eq_refs[key], 2), strict=True))
        return eq_forward(self, inputs, generator)

    for cls, name, fn in ((SSLTIE, "forward", ssltie_forward), (EquiAVTrainModule, "forward", equiav_forward)):
        if monkeypatch is not None:
            monkeypatch.setattr(cls, name, fn)
        else:
            setattr(cls, name, fn)


def dump(path: Path) -> None:
    """Write :data:`CHECKED` as JSON (the torchrun workers' report)."""
    path.write_text(json.dumps(CHECKED))
