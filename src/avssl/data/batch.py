"""Batching the loader's samples: :func:`collate` (one sample rate per batch) and
:func:`collate_mixed_rates`, and the two ways a consumer deals with a batch of several rates:
:func:`batch_rate` (one rate or a clear error naming the resampling options) and
:func:`split_by_rate` (one batch per rate, for evaluation)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

__all__ = ["collate", "collate_mixed_rates", "batch_rate", "split_by_rate", "MixedRateError"]


def collate(samples: Sequence[dict], mixed_rates: bool = False) -> dict:
    """Stack samples: ``image`` uint8 (B, 3, S, S), ``wave`` (B, N), ``num_samples`` (B,), ``label`` (B,),
    ``target`` (B, C), ``id`` list, ``sample_rate`` int, ``frame_hw`` (B, 2) long (each clip's
    decoded frame size, when the samples have it); samples with ``"full"`` original frames
    give ``full`` uint8 (B, 3, H, W), each frame at the top left of a zero canvas of the largest
    size, and ``full_hw`` (B, 2) long, each frame's own ``(h, w)``.

    Clips of one batch must share a sample rate (else :class:`MixedRateError`) unless
    ``mixed_rates`` (:func:`collate_mixed_rates`): then a batch of several rates has
    ``sample_rate`` (B,) long, ``wave`` zero-padded to the longest clip and ``wave_length`` (B,)
    long, each clip's own length; :func:`split_by_rate` cuts it into one batch per rate."""
    rates = {s["sample_rate"] for s in samples}
    waves = [s["wave"] for s in samples]
    if len(rates) == 1:
        rate = rates.pop()
    elif mixed_rates:
        rate = torch.tensor([s["sample_rate"] for s in samples], dtype=torch.long)
        lengths = torch.tensor([w.shape[-1] for w in waves], dtype=torch.long)
        longest = int(lengths.max())
        waves = [F.pad(w, (0, longest - w.shape[-1])) for w in waves]
    else:
        bad = [(s["id"], s["sample_rate"]) for s in samples][:6]
        raise MixedRateError(f"clips of one batch have different sample rates {sorted(rates)} ({bad}); "
                             "resample them to one rate: data.sample_rate=R for training, "
                             "--sample-rate R for eval and localize")
    out = {"id": [s["id"] for s in samples], "image": torch.stack([s["image"] for s in samples]),
           "wave": torch.stack(waves),
           "num_samples": torch.tensor([s["num_samples"] for s in samples], dtype=torch.long),
           "label": torch.tensor([s["label"] for s in samples], dtype=torch.long),
           "target": torch.stack([s["target"] for s in samples]), "sample_rate": rate}
    if isinstance(rate, torch.Tensor):
        out["wave_length"] = lengths
    if all("frame_hw" in s for s in samples):  # each clip's decoded frame (h, w), before its centre crop
        out["frame_hw"] = torch.tensor([tuple(s["frame_hw"]) for s in samples], dtype=torch.long)
    if "full" in samples[0]:
        hw = torch.tensor([tuple(s["full"].shape[-2:]) for s in samples], dtype=torch.long)
        canvas = torch.zeros((len(samples), 3, *hw.max(dim=0).values.tolist()), dtype=torch.uint8)
        for i, s in enumerate(samples):  # a copy per sample into the batch buffer, as torch.stack
            canvas[i, :, : hw[i, 0], : hw[i, 1]] = s["full"]
        out["full"], out["full_hw"] = canvas, hw
    return out


def collate_mixed_rates(samples: Sequence[dict]) -> dict:
    """:func:`collate` that accepts clips of several sample rates in one batch (``mixed_rates``)."""
    return collate(samples, mixed_rates=True)


class MixedRateError(ValueError):
    """Clips of one batch have different sample rates where the consumer needs one rate."""


def batch_rate(batch: Mapping, what: str = "this batch") -> int:
    """The one sample rate of a collated batch (``sample_rate`` an int, or a (B,) tensor of equal
    rates); :class:`MixedRateError` naming the rates and the options that resample otherwise."""
    rate = batch["sample_rate"]
    if not isinstance(rate, torch.Tensor):
        return int(rate)
    rates = sorted({int(r) for r in rate.tolist()})
    if len(rates) == 1:
        return rates[0]
    raise MixedRateError(f"the clips of {what} have different sample rates {rates} (e.g. "
                         f"{list(zip(batch['id'], rate.tolist(), strict=False))[:4]}): resample them to one "
                         "rate with data.sample_rate=R (training) or --sample-rate R (eval, localize)")


def split_by_rate(batch: Mapping) -> list[tuple[torch.Tensor, dict]] | None:
    """A batch of several sample rates (:func:`collate_mixed_rates`) as one batch per rate:
    ``[(rows, sub_batch), ...]`` in order of first appearance, ``rows`` the (b,) indices of the
    sub-batch's clips in ``batch``, each sub-batch's ``sample_rate`` an int and its ``wave`` cut to
    its longest clip; None when the batch has one rate. Evaluation runs each sub-batch as its own
    batch, so clips of any rates give the maps of batch size 1 (the authors' test loop)."""
    rate = batch.get("sample_rate")
    if not isinstance(rate, torch.Tensor) or rate.numel() < 2 or bool((rate == rate[0]).all()):
        return None
    size = rate.shape[0]
    out = []
    for r in dict.fromkeys(rate.tolist()):
        rows = torch.nonzero(rate == r).flatten()
        sub: dict = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == size:
                sub[key] = value.index_select(0, rows)
            elif isinstance(value, list) and len(value) == size:
                sub[key] = [value[i] for i in rows.tolist()]
            else:
                sub[key] = value
        sub["sample_rate"] = int(r)
        if "wave_length" in sub:
            sub["wave"] = sub["wave"][..., : int(sub["wave_length"].max())]
        out.append((rows, sub))
    return out
