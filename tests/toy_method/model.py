"""The toy method's network: 8x8 patches -> a feature map, log power spectrum -> an embedding."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class ToyConfig:
    image_size: int = 32
    dim: int = 16
    n_fft: int = 254          # 128 frequency bins
    tau: float = 0.1

    def __post_init__(self) -> None:
        if self.image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8, got {self.image_size}")


class ToyAV(nn.Module):
    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        self.visual = nn.Conv2d(3, config.dim, kernel_size=8, stride=8)
        self.audio = nn.Linear(config.n_fft // 2 + 1, config.dim)

    def encode(self, image: Tensor, wave: Tensor) -> tuple[Tensor, Tensor]:
        fmap = F.normalize(self.visual(image), dim=1)                                # (B, D, h, w)
        window = torch.hann_window(self.config.n_fft, device=wave.device)
        spec = torch.stft(wave, self.config.n_fft, window=window, return_complex=True).abs().pow(2)
        aud = F.normalize(self.audio(torch.log1p(spec).mean(dim=-1)), dim=1)          # (B, D)
        return fmap, aud

    def forward(self, inputs, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        fmap, aud = self.encode(inputs["image"], inputs["wave"])
        vis = F.normalize(fmap.mean(dim=(2, 3)), dim=1)
        logits = vis @ aud.T / self.config.tau
        target = torch.arange(len(logits), device=logits.device)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        return {"loss": loss}

    @torch.no_grad()
    def infer(self, image: Tensor, wave: Tensor) -> dict[str, Tensor]:
        fmap, aud = self.encode(image, wave)
        return {"heatmap": torch.einsum("bchw,bc->bhw", fmap, aud), "audio": aud,
                "visual": F.normalize(fmap.mean(dim=(2, 3)), dim=1)}
