"""The toy method's data set (avssl's clip loader) and batched transform (avssl's eval frames)."""
from __future__ import annotations

import torch

from avssl.augment.recipes import EvalTransform
from avssl.data.datasets import AVFrameAudioDataset


def toy_dataset(records, cfg, train: bool, classes=None) -> AVFrameAudioDataset:
    d = cfg.data
    return AVFrameAudioDataset(records, image_size=cfg.toy.image_size, seconds=d.seconds, sample_rate=16000,
                               classes=classes, cache_in_memory=d.cache_in_memory, on_error=d.on_error,
                               frame_resize=d.frame_resize)


class ToyTransform:
    def __init__(self, image_size: int, device):
        self.frames, self.device = EvalTransform(image_size), torch.device(device)

    @classmethod
    def from_config(cls, cfg, device) -> ToyTransform:
        return cls(cfg.toy.image_size, device)

    def __call__(self, batch, generator=None, train: bool = False, shard=(0, 1)) -> dict:
        return {"image": self.frames(batch["image"].to(self.device)), "wave": batch["wave"].to(self.device).float()}
