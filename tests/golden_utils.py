"""Readers for the golden files' own formats (see ../shared/golden/README.md), shared by tests."""
from __future__ import annotations

import numpy as np
import torch

#: ssltie_frontend.npz waveforms at 16 kHz whose ``<name>_spec`` feed ssltie_avenet_io.npz.
SSLTIE_AUDIO_NAMES = ("w0_chirp_16k_3s", "w1_noise_16k_12s", "w2_tones_16k_10s")


def dequantise_int8(arrays: dict) -> dict[str, torch.Tensor]:
    """ssltie_avenet_weights_int8.npz: ``q.astype(float32) * float32(scale)``; ``::raw`` entries as stored."""
    sd = {}
    for key, value in arrays.items():
        name, kind = key.split("::")
        if kind == "q":
            sd[name] = torch.from_numpy(value.astype(np.float32) * np.float32(arrays[f"{name}::scale"]))
        elif kind == "raw":
            sd[name] = torch.from_numpy(np.array(value))
    return sd
