"""Differentiable, batched geometric transform for SSL-TIE's equivariance loss (docs/methods.md §1.4).

Per batch: one scale ``s`` (1.0 or 0.5, equal chance), one horizontal flip (p = 0.5) and an
integer rotation angle per sample in ``[-max_angle, max_angle]``. ``T(x)`` (:func:`apply`):

1. an input that is not ``canvas x canvas`` (224) is resized to it (bilinear, half-pixel
   centres, no antialias) - this is how a 14x14 heatmap is transformed;
2. affine warp with the rotation-and-scale-``s`` matrix about ``(canvas/2, canvas/2)`` =
   (112, 112) (:func:`rotation_matrix`; positive angle = counter-clockwise on screen, the
   OpenCV/kornia convention), bilinear, zero padding, pixel centres at integer coordinates
   (kornia 0.5.6 ``warp_affine`` with ``align_corners=True``);
3. resize to ``int(s * input size)`` (bilinear, no antialias);
4. horizontal flip of the whole batch if drawn.

At ``s = 0.5`` the content is therefore shrunk twice (matrix, then output resize), as in the
authors' code; ``shrink_once=True`` drops the scale from the matrix (the content is shrunk
once, by the output resize). :func:`invert` undoes :func:`apply` (up to interpolation and
what fell outside the canvas).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

CANVAS = 224


@dataclass(frozen=True)
class EquivarianceParams:
    """One batch's transform: ``angles`` (B,) float32 degrees, per-batch ``scale`` and ``hflip``."""

    angles: Tensor
    scale: float
    hflip: bool

    @property
    def batch_size(self) -> int:
        return int(self.angles.shape[0])


def sample_params(
    batch_size: int,
    generator: torch.Generator | None = None,
    max_angle: int = 30,
    scales: Sequence[float] = (1.0, 0.5),
    flip_prob: float = 0.5,
) -> EquivarianceParams:
    """Draw one batch's transform from ``generator`` (CPU); the same generator state gives the same draw.

    Scale: uniform choice among ``scales``; flip with probability ``flip_prob``; angles:
    integers uniform in ``[-max_angle, max_angle]``, one per sample.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if max_angle < 0:
        raise ValueError(f"max_angle must be >= 0, got {max_angle}")
    index = int(torch.randint(len(scales), (1,), generator=generator))
    hflip = bool(torch.rand((1,), generator=generator) < flip_prob)
    angles = torch.randint(-max_angle, max_angle + 1, (batch_size,), generator=generator)
    return EquivarianceParams(angles=angles.float(), scale=float(scales[index]), hflip=hflip)


def rotation_matrix(angle_deg: Tensor, centre: tuple[float, float], scale: float | Tensor = 1.0) -> Tensor:
    """OpenCV ``getRotationMatrix2D`` / kornia ``get_rotation_matrix2d`` in pixel coordinates.

    Args:
        angle_deg: (B,) angles in degrees, positive = counter-clockwise on screen (y axis down).
        centre: (x, y) pixel coordinates of the fixed point.
        scale: isotropic scale (float or (B,) tensor).
    Returns:
        (B, 2, 3) ``[[a, b, (1-a)x - b y], [-b, a, b x + (1-a) y]]``, ``a = s cos``, ``b = s sin``;
        it maps source pixel coordinates to destination pixel coordinates.
    """
    rad = angle_deg * torch.tensor(math.pi, dtype=angle_deg.dtype, device=angle_deg.device) / 180.0
    scale = torch.as_tensor(scale, dtype=angle_deg.dtype, device=angle_deg.device)
    a, b = scale * torch.cos(rad), scale * torch.sin(rad)
    x, y = centre
    row0 = torch.stack([a, b, (1 - a) * x - b * y], dim=-1)
    row1 = torch.stack([-b, a, b * x + (1 - a) * y], dim=-1)
    return torch.stack([row0, row1], dim=-2)


def invert_affine(matrix: Tensor) -> Tensor:
    """Inverse of a batch of 2x3 affine matrices: (B, 2, 3) -> (B, 2, 3)."""
    lin, shift = matrix[:, :, :2], matrix[:, :, 2:]
    inv = torch.linalg.inv(lin)
    return torch.cat([inv, -inv @ shift], dim=2)


def _pixel_to_norm(height: int, width: int, like: Tensor) -> Tensor:
    """(1, 3, 3) map from pixel coordinates (centres at integers) to [-1, 1] (align_corners=True)."""
    sx = 2.0 / (width - 1) if width > 1 else 1.0
    sy = 2.0 / (height - 1) if height > 1 else 1.0
    return torch.tensor([[[sx, 0.0, -1.0], [0.0, sy, -1.0], [0.0, 0.0, 1.0]]],
                        dtype=like.dtype, device=like.device)


def warp_affine(x: Tensor, matrix: Tensor, dsize: tuple[int, int]) -> Tensor:
    """Warp ``x`` (B, C, H, W) by pixel-space ``matrix`` (B, 2, 3, source -> destination).

    Output (B, C, dsize[0], dsize[1]); bilinear, zero padding, pixel centres at integer
    coordinates normalised with ``align_corners=True`` (kornia 0.5.6 ``warp_affine``: the
    normalised matrix is composed and inverted in ``x``'s dtype, in kornia's order, which
    keeps float32 parity with it at ~2e-5). Differentiable in ``x``.
    """
    batch, channels, height, width = x.shape
    dst_h, dst_w = dsize
    m = matrix.to(dtype=x.dtype, device=x.device)
    m3 = torch.cat([m, m.new_tensor([0.0, 0.0, 1.0]).expand(batch, 1, 3)], dim=1)
    src_norm = _pixel_to_norm(height, width, m3)
    dst_norm = _pixel_to_norm(dst_h, dst_w, m3)
    dst_norm_from_src_norm = dst_norm @ (m3 @ torch.linalg.inv(src_norm))
    theta = torch.linalg.inv(dst_norm_from_src_norm)[:, :2]
    grid = F.affine_grid(theta, [batch, channels, dst_h, dst_w], align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize with half-pixel centres and no antialias (identity when sizes match)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def transform_matrix(params: EquivarianceParams, canvas: int = CANVAS, shrink_once: bool = False,
                     device: torch.device | None = None) -> Tensor:
    """(B, 2, 3) pixel matrices of :func:`apply` on the ``canvas`` (rotation about canvas/2)."""
    angles = params.angles.to(device=device, dtype=torch.float32)
    scale = 1.0 if shrink_once else params.scale
    return rotation_matrix(angles, (canvas / 2, canvas / 2), scale)


def apply(x: Tensor, params: EquivarianceParams, canvas: int = CANVAS, shrink_once: bool = False) -> Tensor:
    """``T(x)``: (B, C, H, W) -> (B, C, int(s*H), int(s*W)); see the module docstring. Differentiable."""
    height, width = x.shape[-2:]
    if x.shape[0] != params.batch_size:
        raise ValueError(f"batch of {x.shape[0]} but transform drawn for {params.batch_size}")
    out_size = (int(height * params.scale), int(width * params.scale))
    matrix = transform_matrix(params, canvas, shrink_once, device=x.device)
    y = warp_affine(_resize(x, (canvas, canvas)), matrix, (canvas, canvas))
    y = _resize(y, out_size)
    return y.flip(-1) if params.hflip else y


def invert(y: Tensor, params: EquivarianceParams, out_size: tuple[int, int],
           canvas: int = CANVAS, shrink_once: bool = False) -> Tensor:
    """Undo :func:`apply`: (B, C, h, w) -> (B, C, *out_size). Exact up to interpolation inside the canvas."""
    if params.hflip:
        y = y.flip(-1)
    matrix = invert_affine(transform_matrix(params, canvas, shrink_once, device=y.device).double())
    x = warp_affine(_resize(y, (canvas, canvas)), matrix.to(y.dtype), (canvas, canvas))
    return _resize(x, tuple(out_size))
