"""Batched random crops of variable-size frames (the EZ-VSL family's training frames).

:func:`random_crop_flip`: torchvision's ``RandomCrop(size)`` (+ optional ``RandomHorizontalFlip``)
of each frame, drawn from a generator for the global batch and applied as one gather on the
frames' device. EZ-VSL flips; FNAC does not (its flip is commented out).
"""
from __future__ import annotations

import torch
from torch import Tensor

from avssl.distributed import shard_rows

__all__ = ["random_crop_flip"]


def random_crop_flip(full: Tensor, hw: Tensor, size: int, generator: torch.Generator | None = None,
                     shard: tuple[int, int] = (0, 1), flip: bool = True) -> Tensor:
    """torchvision ``RandomCrop(size)`` (+ ``RandomHorizontalFlip()`` when ``flip``) of each frame, batched.

    Args:
        full: (B, 3, H, W) frames, each at the top left of a zero canvas; hw: (B, 2) their sizes.
        generator: CPU generator the offsets and flips are drawn from (for the global batch of
            ``world * B`` frames; this rank keeps its rows). The draws do not depend on ``flip``.
    Returns:
        (B, 3, size, size), same dtype as ``full``.
    """
    b, device = full.shape[0], full.device
    n = b * shard[1]
    u = shard_rows(torch.rand(n, 3, generator=generator, dtype=torch.float64), shard).to(device)
    hw = hw.to(device)
    if bool((hw < size).any()):
        raise ValueError(f"a frame is smaller than the {size} px crop: sizes {hw.tolist()}")
    top = (u[:, 0] * (hw[:, 0] - size + 1)).long()
    left = (u[:, 1] * (hw[:, 1] - size + 1)).long()
    flipped = (u[:, 2] < 0.5) & flip
    ar = torch.arange(size, device=device)
    rows = top[:, None] + ar
    cols = left[:, None] + torch.where(flipped[:, None], size - 1 - ar, ar)
    bidx = torch.arange(b, device=device)[:, None, None]
    return full.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()
