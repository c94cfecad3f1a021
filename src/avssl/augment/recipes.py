"""The frame recipes, batched: SSL-TIE's MoCo-v2 training augmentation and the test transform.

Built from the primitives of :mod:`avssl.augment.image` (see its docstring for where they differ
from PIL); every random choice is drawn first (:meth:`MoCoV2Transform.sample`, from a
``torch.Generator``), then applied as batched tensor ops on the frames' device.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from avssl.augment.image import (
    _gen_device,
    color_jitter,
    gaussian_blur,
    hflip,
    normalize,
    resized_crop,
    sample_resized_crop,
    to_float,
    to_grayscale,
)

__all__ = ["MoCoV2Params", "MoCoV2Transform", "EvalTransform", "sample_jitter"]


@dataclass(frozen=True)
class MoCoV2Params:
    """One batch's MoCo-v2 draw; all tensors (B, ...) on the generator's device."""

    boxes: Tensor          # (B, 4) top, left, h, w
    jitter_on: Tensor      # (B,) bool
    jitter: Tensor         # (B, 4) brightness/contrast/saturation factors, hue shift
    order: Tensor          # (B, 4) op order
    gray_on: Tensor        # (B,) bool
    blur_on: Tensor        # (B,) bool
    sigma: Tensor          # (B,)
    flip_on: Tensor        # (B,) bool

    def select(self, index: Tensor | slice) -> MoCoV2Params:
        """The parameters of a subset of samples."""
        return MoCoV2Params(*(getattr(self, f)[index] for f in self.__dataclass_fields__))


def sample_jitter(batch: int, generator: torch.Generator | None,
                  strength: Sequence[float] = (0.4, 0.4, 0.4, 0.1)) -> tuple[Tensor, Tensor]:
    """Factors (B, 4) ``U(1 - s, 1 + s)`` x3 and hue ``U(-s, s)``, and a random order (B, 4)."""
    dev = _gen_device(generator)
    s = torch.tensor(strength, device=dev, dtype=torch.float32)
    u = torch.rand((batch, 4), generator=generator, device=dev)
    factors = (2 * u - 1) * s + torch.tensor([1.0, 1.0, 1.0, 0.0], device=dev)
    order = torch.rand((batch, 4), generator=generator, device=dev).argsort(dim=1)
    return factors, order


class MoCoV2Transform:
    """SSL-TIE / MoCo-v2 training frames (docs/methods.md §1.1), batched on the images' device.

    RandomResizedCrop(size, scale, ratio 3/4-4/3) -> ColorJitter(jitter) with p ``jitter_p`` ->
    grayscale p ``gray_p`` -> Gaussian blur sigma ``U(blur_sigma)`` (PIL radius; kernel
    ``2 ceil(3 sigma) + 1``, replicated edges) with p ``blur_p`` -> horizontal flip p ``flip_p`` ->
    ImageNet normalisation. See the module docstring for where this differs from PIL.
    ``antialias``: the crop is resampled as PIL does (:func:`resized_crop`), for crops of
    full-resolution original frames.
    """

    def __init__(self, size: int = 224, scale: Sequence[float] = (0.3, 1.0),
                 jitter: Sequence[float] = (0.4, 0.4, 0.4, 0.1), jitter_p: float = 0.8,
                 gray_p: float = 0.2, blur_p: float = 0.5, blur_sigma: Sequence[float] = (0.1, 2.0),
                 flip_p: float = 0.5, ratio: Sequence[float] = (3 / 4, 4 / 3), antialias: bool = False):
        self.size, self.scale, self.ratio = size, tuple(scale), tuple(ratio)
        self.jitter, self.jitter_p, self.gray_p = tuple(jitter), jitter_p, gray_p
        self.blur_p, self.blur_sigma, self.flip_p = blur_p, tuple(blur_sigma), flip_p
        self.antialias = antialias

    def sample(self, batch: int, height: int | Tensor, width: int | Tensor,
               generator: torch.Generator | None = None) -> MoCoV2Params:
        """Draw every random choice for a batch of ``height x width`` frames (ints, or (B,)
        tensors for frames of mixed sizes)."""
        dev = _gen_device(generator)
        boxes = sample_resized_crop(batch, height, width, generator, self.scale, self.ratio)
        factors, order = sample_jitter(batch, generator, self.jitter)
        u = torch.rand((batch, 5), generator=generator, device=dev)
        lo, hi = self.blur_sigma
        return MoCoV2Params(boxes=boxes, jitter_on=u[:, 0] < self.jitter_p, jitter=factors, order=order,
                            gray_on=u[:, 1] < self.gray_p, blur_on=u[:, 2] < self.blur_p,
                            sigma=lo + (hi - lo) * u[:, 3], flip_on=u[:, 4] < self.flip_p)

    def apply(self, images: Tensor, params: MoCoV2Params) -> Tensor:
        """(B, 3, H, W) uint8 or float [0, 1] -> normalised float (B, 3, size, size)."""
        x = resized_crop(to_float(images), params.boxes, self.size, antialias=self.antialias)
        x = color_jitter(x, params.jitter, params.order, params.jitter_on)
        x = to_grayscale(x, params.gray_on)
        x = gaussian_blur(x, params.sigma, params.blur_on, "3sigma", "replicate")
        x = hflip(x, params.flip_on)
        return normalize(x)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None,
                 sizes: Tensor | None = None) -> Tensor:
        """``sizes`` (B, 2): each frame's own ``(h, w)`` when ``images`` is a zero-padded canvas
        of frames of mixed sizes (:func:`avssl.data.datasets.collate`)."""
        b, _, h, w = images.shape
        if sizes is not None:
            h, w = sizes[:, 0], sizes[:, 1]
        return self.apply(images, self.sample(b, h, w, generator))


class EvalTransform:
    """Test frames: Resize(size) of the short side (bicubic, antialias) -> CenterCrop -> ImageNet.

    (B, 3, H, W) uint8 or float [0, 1] -> (B, 3, size, size) float. The resized image is clamped
    to [0, 1] (PIL's uint8 output is clamped too; torchvision's float tensor op is not).
    """

    def __init__(self, size: int = 224):
        self.size = size

    def __call__(self, images: Tensor) -> Tensor:
        x = to_float(images)
        h, w = x.shape[-2:]
        if h <= w:
            nh, nw = self.size, int(self.size * w / h)
        else:
            nh, nw = int(self.size * h / w), self.size
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False,
                              antialias=True).clamp_(0.0, 1.0)
        top, left = int(round((nh - self.size) / 2.0)), int(round((nw - self.size) / 2.0))
        return normalize(x[..., top:top + self.size, left:left + self.size])
