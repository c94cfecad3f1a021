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


def peers_loader(golden_dir, what: str):
    """``load(name) -> {key: array}`` of ``golden/peers/<name>`` (cached), or a skip naming the folder."""
    import pytest

    d = golden_dir / "peers"
    if not d.is_dir():
        pytest.skip(f"{what} golden vectors not found at {d}")
    cache: dict[str, dict] = {}

    def load(name: str) -> dict:
        if name not in cache:
            with np.load(d / name) as z:
                cache[name] = {k: z[k] for k in z.files}
        return cache[name]

    return load


def resolve_same_as(arrays: dict, load) -> dict:
    """A peers ``*_io.npz`` with its ``<key>__same_as`` entries replaced by what they name: another
    key of the same file, or ``<file>.npz:<key>`` (a key itself may hold ``::``) read by ``load``."""
    out = dict(arrays)
    for key in [k for k in out if k.endswith("__same_as")]:
        ref = str(out.pop(key))
        name, sep, src = ref.partition(".npz:")
        out[key.removesuffix("__same_as")] = load(name + ".npz")[src] if sep else out[ref]
    return out


def peers_inputs(load) -> tuple[torch.Tensor, torch.Tensor]:
    """The shared ``peers_inputs.npz`` frames and spectrograms."""
    z = load("peers_inputs.npz")
    return torch.from_numpy(z["image"]), torch.from_numpy(z["spec"])


def dropout_keeps(io: dict, run: str) -> list[torch.Tensor]:
    """The recorded visual dropout keep masks of golden run ``run`` (one per recorded call)."""
    shape = tuple(int(v) for v in io[f"{run}_img_dropout_shape"])
    n = int(np.prod(shape))
    return [torch.from_numpy(np.unpackbits(row)[:n].reshape(shape).astype(np.float32))
            for row in io[f"{run}_img_dropout_keep_packbits"]]
