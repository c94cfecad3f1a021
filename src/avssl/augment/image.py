"""Batched, parameterised image augmentations on float tensors (B, 3, H, W) in [0, 1].

Every random op is split into *sampling* (parameter tensors drawn from a ``torch.Generator``)
and *application* (pure tensor ops on the images' device, vectorised over the batch; the only
Python loops run over the 4 jitter positions x 4 ops, never over samples). The same
parameters therefore give the same output whether a sample is processed alone or in a batch.

Semantics follow torchvision's tensor ops (``transforms.functional`` on float tensors):

* brightness ``clamp(x * f)``, contrast ``clamp(f x + (1 - f) mean(gray(x)))`` with a per-image
  mean, saturation ``clamp(f x + (1 - f) gray(x))``, gray = 0.2989 R + 0.587 G + 0.114 B,
  hue via RGB -> HSV -> RGB (h shifted mod 1; like torchvision, the hue op itself does not clamp
  its V channel, which only matters for inputs outside [0, 1]).
* :func:`resized_crop` crops a per-sample box and resizes it bilinearly with half-pixel
  centres, clamping sample coordinates to the box, i.e. ``crop`` + ``interpolate(bilinear,
  align_corners=False, antialias=False)``. Differences from the PIL pipeline: no antialiasing
  when the crop is shrunk (PIL's bilinear resize filters over the whole footprint), and float
  arithmetic instead of uint8 rounding after each op.
* :func:`gaussian_blur`: PIL's ``GaussianBlur(radius)`` treats ``radius`` as the standard
  deviation but approximates the Gaussian with three box blurs; here it is an exact sampled
  Gaussian with ``sigma = radius`` and kernel size ``2 * ceil(3 sigma) + 1``
  (``kernel_rule="3sigma"``) or ``2 * ceil(sigma) + 1`` (``"1sigma"``, EquiAV's audio rule,
  docs/methods.md §2.3), edges replicated (PIL-like) or reflected (torchvision's tensor op).

The recipes built from these ops are in :mod:`avssl.augment.recipes`, the application of
EquiAV's parameter vectors in :mod:`avssl.augment.apply`.

Speed: the batched float32 path is meant for the training device (GPU). On a CPU with one
thread, :class:`~avssl.augment.recipes.MoCoV2Transform` on 32 x 3 x 256 x 256 -> 224 takes ~150-300 ms, comparable to
(not faster than) torchvision's per-sample PIL pipeline, whose uint8 C kernels are cheap; the
hue op (~half of the time) dominates. ``benchmarks/bench_augment.py`` compares both.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _col(v: Tensor, x: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, 1) on ``x``'s device and dtype."""
    return v.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def to_float(images: Tensor) -> Tensor:
    """uint8 (B, 3, H, W) -> float32 in [0, 1]; float inputs are returned unchanged."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
    return images


# ----------------------------------------------------------------------------- crop
def _per_sample(v: int | Tensor, batch: int, device: torch.device) -> Tensor:
    """An int or (B,) tensor of frame sides -> (B,) float64 on ``device``."""
    return torch.as_tensor(v, dtype=torch.float64, device=device).expand(batch)


def sample_resized_crop(batch: int, height: int | Tensor, width: int | Tensor,
                        generator: torch.Generator | None = None,
                        scale: Sequence[float] = (0.08, 1.0),
                        ratio: Sequence[float] = (3 / 4, 4 / 3), tries: int = 10) -> Tensor:
    """torchvision ``RandomResizedCrop.get_params`` vectorised over the batch.

    Per sample: up to ``tries`` draws of area ``U(scale) * H * W`` and log-uniform aspect ratio
    (w/h); ``w = round(sqrt(area * r))``, ``h = round(sqrt(area / r))``; the first draw that fits
    is used with ``top ~ U{0..H-h}``, ``left ~ U{0..W-w}``; otherwise the centre crop of the
    largest box whose ratio is clamped to ``ratio``. All ``tries`` draws are made for every
    sample (so the random stream differs from torchvision's, the distribution does not), and
    the stream does not depend on the frame sizes: ``height`` / ``width`` may be ints or (B,)
    tensors (each frame's own size, e.g. original frames of mixed sizes), and rows drawn for
    sizes that are later discarded consume the same draws.

    Returns:
        (B, 4) float32 ``(top, left, h, w)`` in pixels (integer valued), on the generator's device.
    """
    dev = _gen_device(generator)
    height, width = _per_sample(height, batch, dev), _per_sample(width, batch, dev)
    u = torch.rand((batch, tries, 4), generator=generator, device=dev, dtype=torch.float64)
    area = (height * width)[:, None]
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * u[..., 1])
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width[:, None]) & (h > 0) & (h <= height[:, None])
    first = ok.to(torch.int8).argmax(dim=1, keepdim=True)        # first valid try (0 if none)
    pick = lambda t: t.gather(1, first).squeeze(1)  # noqa: E731
    h, w = pick(h), pick(w)
    top = torch.floor(pick(u[..., 2]) * (height - h + 1))
    left = torch.floor(pick(u[..., 3]) * (width - w + 1))
    # fallback: centre crop with the ratio clamped to the allowed range
    in_ratio = width / height
    narrow, wide = in_ratio < min(ratio), in_ratio > max(ratio)
    fw = torch.where(wide, torch.round(height * max(ratio)), width)
    fh = torch.where(narrow, torch.round(width / min(ratio)), height)
    none = ~ok.any(dim=1)
    h = torch.where(none, fh, h)
    w = torch.where(none, fw, w)
    top = torch.where(none, torch.div(height - fh, 2, rounding_mode="floor"), top)
    left = torch.where(none, torch.div(width - fw, 2, rounding_mode="floor"), left)
    return torch.stack([top, left, h, w], dim=1).float()


def _pil_bilinear_weights(start: Tensor, length: Tensor, out: int, size: int) -> Tensor:
    """(B, out, size) rows of PIL's antialiased bilinear resampling of ``[start, start + length)``.

    PIL (``Image.resize(BILINEAR)`` of the cropped image, what torchvision's RandomResizedCrop
    does to a PIL frame): output ``i`` is centred at ``start + (i + 0.5) * s`` with ``s =
    length / out``; input pixel ``j`` weighs ``max(0, 1 - |j + 0.5 - centre| / max(s, 1))``,
    only inside the crop, and the weights are normalised to sum to one. Downscaling thus
    filters over the whole footprint instead of sampling two pixels.
    """
    s = (length / out)[:, None, None]
    centre = start[:, None, None] + (torch.arange(out, dtype=s.dtype, device=s.device)[None, :, None] + 0.5) * s
    j = torch.arange(size, dtype=s.dtype, device=s.device)[None, None, :]
    wgt = (1.0 - ((j + 0.5 - centre) / s.clamp(min=1.0)).abs()).clamp_(min=0.0)
    inside = (j >= start[:, None, None]) & (j < (start + length)[:, None, None])
    wgt = wgt * inside
    return wgt / wgt.sum(dim=2, keepdim=True).clamp_(min=1e-12)


def resized_crop(images: Tensor, boxes: Tensor, out_size: int | Sequence[int],
                 mode: str = "bilinear", antialias: bool = False) -> Tensor:
    """Crop a per-sample box and resize it to ``out_size`` (one grid_sample call, or two
    batched matrix products with ``antialias``).

    Args:
        images: (B, C, H, W) float. Frames of mixed sizes may be zero-padded to a common
            canvas (at the top left): the boxes stay inside each frame and nothing outside a
            box is read.
        boxes: (B, 4) ``(top, left, h, w)`` in pixels of each image (may be fractional).
        out_size: int or (out_h, out_w).
        antialias: PIL's bilinear resampling of the crop (:func:`_pil_bilinear_weights`, what
            torchvision's RandomResizedCrop does to a PIL frame; ``mode`` must be "bilinear")
            instead of two-pixel bilinear sampling, which aliases when a crop is shrunk.
    Returns:
        (B, C, out_h, out_w): ``interpolate(crop, out_size, mode, align_corners=False)`` per sample
        (half-pixel centres, coordinates clamped to the box; no antialiasing), or PIL's
        resampling in float (no uint8 rounding) with ``antialias``.
    """
    oh, ow = (out_size, out_size) if isinstance(out_size, int) else (int(out_size[0]), int(out_size[1]))
    b, _, height, width = images.shape
    boxes = boxes.to(device=images.device, dtype=images.dtype)
    top, left, h, w = boxes.unbind(1)
    if antialias:
        if mode != "bilinear":
            raise ValueError(f"antialiased crops are bilinear, got mode={mode!r}")
        wy = _pil_bilinear_weights(top, h, oh, height)             # (B, oh, H)
        wx = _pil_bilinear_weights(left, w, ow, width)             # (B, ow, W)
        x = torch.einsum("bchw,bpw->bchp", images, wx)             # horizontal pass first, as PIL
        return torch.einsum("bchp,boh->bcop", x, wy)
    oy = torch.arange(oh, device=images.device, dtype=images.dtype) + 0.5
    ox = torch.arange(ow, device=images.device, dtype=images.dtype) + 0.5
    # source pixel-centre coordinates, clamped to the box like interpolate on the crop
    ys = top[:, None] + torch.minimum(torch.clamp(oy[None] * (h[:, None] / oh) - 0.5, min=0.0), h[:, None] - 1)
    xs = left[:, None] + torch.minimum(torch.clamp(ox[None] * (w[:, None] / ow) - 0.5, min=0.0), w[:, None] - 1)
    gy = (2 * ys + 1) / height - 1                              # (B, oh) normalised
    gx = (2 * xs + 1) / width - 1                               # (B, ow)
    grid = torch.stack([gx[:, None, :].expand(b, oh, ow), gy[:, :, None].expand(b, oh, ow)], dim=-1)
    return F.grid_sample(images, grid, mode=mode, padding_mode="border", align_corners=False)


# ----------------------------------------------------------------------------- colour
def rgb_to_gray(images: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma 0.2989 R + 0.587 G + 0.114 B."""
    r, g, b = images.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(x: Tensor, y: Tensor, f: Tensor) -> Tensor:
    return (f * x + (1.0 - f) * y).clamp_(0.0, 1.0)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """``clamp(x * factor)``; factor (B,)."""
    return (images * _col(factor, images)).clamp_(0.0, 1.0)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with the per-image mean of the grayscale image; factor (B,)."""
    mean = rgb_to_gray(images).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(images, mean, _col(factor, images))


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with the grayscale image; factor (B,)."""
    return _blend(images, rgb_to_gray(images), _col(factor, images))


def rgb_to_hsv(images: Tensor) -> Tensor:
    """(B, 3, H, W) RGB -> HSV, each in [0, 1] for inputs in [0, 1].

    torchvision's ``_rgb2hsv`` (H and S are 0 where max == min), written with fewer passes;
    equal to it up to float rounding.
    """
    r, g, b = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    maxc, minc = images.amax(dim=1, keepdim=True), images.amin(dim=1, keepdim=True)
    cr = maxc - minc
    eqc = cr == 0
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    div = torch.where(eqc, ones, cr)
    h = torch.where(maxc == r, (g - b) / div,
                    torch.where(maxc == g, 2.0 + (b - r) / div, 4.0 + (r - g) / div))
    h = torch.where(eqc, torch.zeros_like(h), torch.fmod(h / 6.0 + 1.0, 1.0))
    return torch.cat([h, s, maxc], dim=1)


def hsv_to_rgb(hsv: Tensor, clamp: bool = True) -> Tensor:
    """(B, 3, H, W) HSV -> RGB.

    Channel ``n`` (R 5, G 3, B 1) is ``v - v s clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + 6 h) mod 6``; like torchvision, the channels that equal its p, q, t terms are
    clamped to [0, 1] and the channel that equals V is not (this matters only for inputs
    outside [0, 1], e.g. EquiAV's jitter on a normalised spectrogram). Matches torchvision's
    ``_hsv2rgb`` up to float rounding (and at exact sector boundaries, out of range only).
    ``clamp=False`` skips every clamp.
    """
    h, s, v = hsv[:, 0:1], hsv[:, 1:2], hsv[:, 2:3]
    n = torch.tensor([5.0, 3.0, 1.0], device=hsv.device, dtype=hsv.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h, 6.0)
    weight = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    out = v - v * s * weight
    if not clamp:
        return out
    return torch.where(weight == 0, v.expand_as(out), out.clamp(0.0, 1.0))


def _hue(images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Hue in [0, 1) (0 where max == min), max and max - min over channels; each (B, 1, H, W)."""
    r, g, b = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    maxc, minc = images.amax(dim=1, keepdim=True), images.amin(dim=1, keepdim=True)
    cr = maxc - minc
    eqc = cr == 0
    inv = 1.0 / torch.where(eqc, torch.ones_like(cr), cr)
    h = torch.where(maxc == r, (g - b) * inv,
                    torch.where(maxc == g, 2.0 + (b - r) * inv, 4.0 + (r - g) * inv))
    h = torch.where(eqc, torch.zeros_like(h), torch.fmod(h / 6.0 + 1.0, 1.0))
    return h, maxc, cr


def adjust_hue(images: Tensor, shift: Tensor, clamp: bool = True) -> Tensor:
    """Rotate the hue by ``shift`` (B,) in [-0.5, 0.5] turns.

    Computed without the S channel: the HSV->RGB channel ``n`` is ``max - (max - min) w_n(h')``
    (= ``v - v s w``), so the result equals :func:`hsv_to_rgb` of the shifted :func:`rgb_to_hsv`
    (torchvision's op) up to float rounding, including its clamping of the non-V channels
    (``clamp=False`` skips it).
    """
    h, maxc, cr = _hue(images)
    h = torch.remainder(h + shift.to(images).view(-1, 1, 1, 1), 1.0)
    n = torch.tensor([5.0, 3.0, 1.0], device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h, 6.0)
    weight = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    out = maxc - cr * weight
    if not clamp:
        return out
    return torch.where(weight == 0, maxc.expand_as(out), out.clamp_(0.0, 1.0))


JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def color_jitter(images: Tensor, factors: Tensor, order: Tensor, enabled: Tensor | None = None,
                 ops: Sequence = JITTER_OPS) -> Tensor:
    """torchvision ``ColorJitter`` with per-sample factors and per-sample op order.

    Args:
        images: (B, 3, H, W).
        factors: (B, 4) brightness, contrast, saturation factors (1 = identity) and hue shift (0).
        order: (B, 4) integer permutation of 0 brightness, 1 contrast, 2 saturation, 3 hue.
        enabled: (B,) bool; disabled samples are returned untouched (no clamp either).
        ops: the four ``op(images_subset, factor_subset)`` functions by id (default: torchvision's).
    Returns:
        (B, 3, H, W). Loops over the 4 positions x 4 ops, each applied to the subset that needs it.
    """
    out = images.clone()
    order = order.to(device=images.device).long()
    factors = factors.to(device=images.device, dtype=images.dtype)
    on = torch.ones(images.shape[0], dtype=torch.bool, device=images.device) if enabled is None \
        else enabled.to(device=images.device, dtype=torch.bool)
    for pos in range(4):
        for op_id, op in enumerate(ops):
            idx = torch.nonzero(on & (order[:, pos] == op_id)).squeeze(1)
            if idx.numel():
                out[idx] = op(out[idx], factors[idx, op_id])
    return out


def to_grayscale(images: Tensor, enabled: Tensor) -> Tensor:
    """Replace enabled samples by their luma repeated on 3 channels; enabled (B,) bool."""
    gray = rgb_to_gray(images).expand_as(images)
    return torch.where(enabled.to(images.device).view(-1, 1, 1, 1), gray, images)


def hflip(images: Tensor, enabled: Tensor) -> Tensor:
    """Flip enabled samples left-right; enabled (B,) bool."""
    return torch.where(enabled.to(images.device).view(-1, 1, 1, 1), images.flip(-1), images)


def vflip(images: Tensor, enabled: Tensor) -> Tensor:
    """Flip enabled samples upside down (along H); enabled (B,) bool."""
    return torch.where(enabled.to(images.device).view(-1, 1, 1, 1), images.flip(-2), images)


def blur_radius(sigma: Tensor, kernel_rule: str = "3sigma") -> Tensor:
    """Kernel half-width per sample: ``ceil(3 sigma)`` ("3sigma") or ``ceil(sigma)`` ("1sigma")."""
    if kernel_rule == "3sigma":
        return torch.ceil(3.0 * sigma)
    if kernel_rule == "1sigma":
        return torch.ceil(sigma)
    raise ValueError(f"kernel_rule must be '3sigma' or '1sigma', got {kernel_rule!r}")


def gaussian_blur(images: Tensor, sigma: Tensor, enabled: Tensor | None = None,
                  kernel_rule: str = "3sigma", padding_mode: str = "replicate") -> Tensor:
    """Per-sample separable Gaussian blur (one grouped conv per axis).

    Args:
        images: (B, C, H, W).
        sigma: (B,) standard deviations (PIL ``radius``).
        enabled: (B,) bool, or None for all.
        kernel_rule: kernel size ``2 * radius + 1`` with radius from :func:`blur_radius`; all
            samples share the largest size, each sample's taps beyond its own radius are zero.
        padding_mode: "replicate" (PIL-like edges) or "reflect" (torchvision tensor op).
    Returns:
        (B, C, H, W); disabled samples untouched.
    """
    on = torch.ones(images.shape[0], dtype=torch.bool, device=images.device) if enabled is None \
        else enabled.to(images.device, torch.bool)
    idx = torch.nonzero(on).squeeze(1)
    if idx.numel() == 0:
        return images
    x = images[idx]
    s = sigma.to(device=images.device, dtype=images.dtype)[idx]
    radius = blur_radius(s, kernel_rule)
    r_max = int(radius.max().item())
    taps = torch.arange(-r_max, r_max + 1, device=images.device, dtype=images.dtype)
    kern = torch.exp(-0.5 * (taps[None] / s[:, None]) ** 2) * (taps[None].abs() <= radius[:, None])
    kern = kern / kern.sum(dim=1, keepdim=True)                  # (n, K)
    n, c, h, w = x.shape
    weight = kern.repeat_interleave(c, dim=0)                    # (n*C, K)
    y = F.pad(x.reshape(1, n * c, h, w), (r_max, r_max, r_max, r_max), mode=padding_mode)
    y = F.conv2d(y, weight.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(y, weight.view(n * c, 1, -1, 1), groups=n * c)
    out = images.clone()
    out[idx] = y.view(n, c, h, w)
    return out


def normalize(images: Tensor, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """``(x - mean) / std`` per channel; (B, 3, H, W) -> same."""
    m = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - m) / s


# ----------------------------------------------------------------------------- rotation (EquiAV)
def rotate(images: Tensor, angle_deg: Tensor) -> Tensor:
    """Rotate each sample about its centre by ``angle_deg`` (B,) degrees counter-clockwise on screen
    (bilinear, zero fill)."""
    rad = angle_deg.to(device=images.device, dtype=images.dtype) * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    h, w = images.shape[-2:]
    # output normalised coords -> input normalised coords (aspect-corrected)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin * h / w, zero], 1),
                         torch.stack([sin * w / h, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
