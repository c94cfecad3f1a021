"""EquiAV augmentation parameter vectors (docs/methods.md §2.3): the layouts, sampling, identities.

The layouts are defined once here (:class:`AudioSlot`, :class:`VisualSlot`, and the
:class:`ParamLayout` objects :data:`AUDIO_LAYOUT`, :data:`VISUAL_LAYOUT`,
:data:`VISUAL_LAYOUT_EXTENDED`); :func:`avssl.augment.apply.apply_audio` and :func:`avssl.augment.apply.apply_visual`
decode vectors through them. Values are raw unless stated.

Audio (24-d), on a normalised ``(3, T=1024, F=128)`` fbank: SpecAugment on, time-mask start/end,
freq-mask start/end (raw indices, end exclusive); time shift on (= SpecAugment on), shift/T;
crop on (always 1), crop top/left/h/w (see *crop encoding*); jitter on, order (4 slots),
brightness-1, contrast-1, saturation-1, hue; blur on, sigma; frequency flip.

*Crop encoding* (``original_bugs=True``, the released code): ``t[8] = top/F``, ``t[9] = left/T``,
``t[10] = h/F``, ``t[11] = w/T`` although top, h run along time and left, w along frequency;
``original_bugs=False`` stores ``top/T, left/F, h/T, w/F``. The decoder must be told which.

Visual (18-d), on the raw frame: crop on (always 1), top/H, left/W, h/H, w/W; jitter on, order,
values as for audio; blur on, sigma (PIL radius); horizontal flip; grayscale.
Extended visual (21-d, an option of ours, not in the released code): + rotation on, angle in
degrees (counter-clockwise), vertical flip.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import torch
from torch import Tensor

from avssl.augment.image import sample_resized_crop


class AudioSlot(IntEnum):
    """Index of each slot of the 24-d audio vector."""

    SPECAUG_ON = 0
    TIME_MASK_START = 1
    TIME_MASK_END = 2
    FREQ_MASK_START = 3
    FREQ_MASK_END = 4
    SHIFT_ON = 5
    SHIFT = 6
    CROP_ON = 7
    CROP_TOP = 8
    CROP_LEFT = 9
    CROP_H = 10
    CROP_W = 11
    JITTER_ON = 12
    ORDER_0 = 13
    ORDER_1 = 14
    ORDER_2 = 15
    ORDER_3 = 16
    BRIGHTNESS = 17
    CONTRAST = 18
    SATURATION = 19
    HUE = 20
    BLUR_ON = 21
    SIGMA = 22
    FLIP = 23


class VisualSlot(IntEnum):
    """Index of each slot of the 18-d visual vector (and the 21-d extension)."""

    CROP_ON = 0
    CROP_TOP = 1
    CROP_LEFT = 2
    CROP_H = 3
    CROP_W = 4
    JITTER_ON = 5
    ORDER_0 = 6
    ORDER_1 = 7
    ORDER_2 = 8
    ORDER_3 = 9
    BRIGHTNESS = 10
    CONTRAST = 11
    SATURATION = 12
    HUE = 13
    BLUR_ON = 14
    SIGMA = 15
    HFLIP = 16
    GRAY = 17
    ROTATE_ON = 18
    ANGLE = 19
    VFLIP = 20


@dataclass(frozen=True)
class ParamLayout:
    """A fixed vector layout: ``dim`` slots named by ``slots``; group slices for multi-slot fields."""

    name: str
    dim: int
    slots: type[IntEnum]
    crop: slice          # top, left, h, w
    order: slice         # 4 jitter-order slots
    jitter: slice        # brightness-1, contrast-1, saturation-1, hue

    def names(self) -> list[str]:
        return [s.name.lower() for s in self.slots if s < self.dim]

    def check(self, t: Tensor) -> None:
        """Raise if ``t`` is not (..., dim)."""
        if t.shape[-1] != self.dim:
            raise ValueError(f"{self.name} parameter vectors must have {self.dim} slots, got shape "
                             f"{tuple(t.shape)}")


AUDIO_LAYOUT = ParamLayout("audio", 24, AudioSlot, slice(8, 12), slice(13, 17), slice(17, 21))
VISUAL_LAYOUT = ParamLayout("visual", 18, VisualSlot, slice(1, 5), slice(6, 10), slice(10, 14))
VISUAL_LAYOUT_EXTENDED = ParamLayout("visual_extended", 21, VisualSlot, slice(1, 5), slice(6, 10),
                                     slice(10, 14))
AUDIO_DIM, VISUAL_DIM, VISUAL_DIM_EXTENDED = 24, 18, 21
IDENTITY_ORDER = (0.0, 1.0, 2.0, 3.0)


def _dev(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _blur(on: Tensor, sigma_range: Sequence[float], generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Blur slots: on (B,) as float and sigma ``U(sigma_range)`` (0 where off); one draw per sample."""
    sigma = sigma_range[0] + (sigma_range[1] - sigma_range[0]) * torch.rand(
        on.shape[0], generator=generator, device=on.device)
    return on.float(), torch.where(on, sigma, 0.0)


def _jitter(batch: int, generator: torch.Generator | None, on: Tensor,
            strength: Sequence[float]) -> tuple[Tensor, Tensor]:
    """Order (B, 4) (identity when off) and values (B, 4) (factor - 1 x3, hue; 0 when off)."""
    dev = _dev(generator)
    order = torch.rand((batch, 4), generator=generator, device=dev).argsort(dim=1).float()
    s = torch.tensor(strength, dtype=torch.float32, device=dev)
    values = (2 * torch.rand((batch, 4), generator=generator, device=dev) - 1) * s
    ident = torch.tensor(IDENTITY_ORDER, device=dev).expand(batch, 4)
    return torch.where(on[:, None], order, ident), torch.where(on[:, None], values, 0.0)


def _mask(batch: int, size: int, max_width: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """torchaudio ``mask_along_axis`` rule: ``value = U max_width``, ``start = floor(U (size - value))``,
    ``end = start + floor(value)``. Returns float (B,) start, end."""
    u = torch.rand((batch, 2), generator=generator, device=_dev(generator), dtype=torch.float64)
    value = u[:, 0] * max_width
    start = torch.floor(u[:, 1] * (size - value))
    return start.float(), (start + torch.floor(value)).float()


def sample_audio_params(batch: int, generator: torch.Generator | None = None, frames: int = 1024,
                        bins: int = 128, time_mask: int | None = None, freq_mask: int | None = None,
                        specaug_p: float = 0.8, crop_scale: Sequence[float] = (0.08, 1.0),
                        crop_ratio: Sequence[float] = (1 / 10, 1.5 / 8), jitter_p: float = 0.8,
                        jitter: Sequence[float] = (0.4, 0.4, 0.4, 0.1), blur_p: float = 0.5,
                        blur_sigma: Sequence[float] = (0.1, 2.0), flip_p: float = 0.5,
                        original_bugs: bool = True) -> Tensor:
    """Draw (B, 24) audio vectors with EquiAV's distributions (docs/methods.md §2.3, module docstring).

    The crop is torchvision's RandomResizedCrop rule on the (frames, bins) plane with aspect ratio
    (bins-width / frames-height) in ``crop_ratio``. ``original_bugs`` selects the crop encoding.
    ``time_mask`` / ``freq_mask`` (max SpecAugment widths) default to the released 192 frames / 48
    bins scaled to the fbank: ``round(192 frames / 1024)``, ``round(48 bins / 128)``.
    Returns float32 on the generator's device.
    """
    if time_mask is None:
        time_mask = round(192 * frames / 1024)
    if freq_mask is None:
        freq_mask = round(48 * bins / 128)
    dev = _dev(generator)
    t = torch.zeros(batch, AUDIO_DIM, device=dev)
    u = torch.rand((batch, 4), generator=generator, device=dev)
    spec = u[:, 0] < specaug_p
    ts, te = _mask(batch, frames, time_mask, generator)
    fs, fe = _mask(batch, bins, freq_mask, generator)
    shift = torch.randint(-frames, frames, (batch,), generator=generator, device=dev).float() / frames
    A = AudioSlot
    for slot, value in [(A.SPECAUG_ON, 1.0), (A.TIME_MASK_START, ts), (A.TIME_MASK_END, te),
                        (A.FREQ_MASK_START, fs), (A.FREQ_MASK_END, fe), (A.SHIFT_ON, 1.0), (A.SHIFT, shift)]:
        t[:, slot] = torch.where(spec, torch.as_tensor(value, device=dev, dtype=torch.float32), 0.0)
    t[:, A.CROP_ON] = 1.0
    top, left, h, w = sample_resized_crop(batch, frames, bins, generator, crop_scale, crop_ratio).unbind(1)
    den = (bins, frames) if original_bugs else (frames, bins)
    t[:, AUDIO_LAYOUT.crop] = torch.stack([top / den[0], left / den[1], h / den[0], w / den[1]], dim=1)
    jit_on = u[:, 1] < jitter_p
    t[:, A.JITTER_ON] = jit_on.float()
    t[:, AUDIO_LAYOUT.order], t[:, AUDIO_LAYOUT.jitter] = _jitter(batch, generator, jit_on, jitter)
    t[:, A.BLUR_ON], t[:, A.SIGMA] = _blur(u[:, 2] < blur_p, blur_sigma, generator)
    t[:, A.FLIP] = (u[:, 3] < flip_p).float()
    return t


def sample_visual_params(batch: int, generator: torch.Generator | None = None, height: int | Tensor = 224,
                         width: int | Tensor = 224, crop_scale: Sequence[float] = (0.08, 1.0),
                         crop_ratio: Sequence[float] = (3 / 4, 4 / 3), jitter_p: float = 0.8,
                         jitter: Sequence[float] = (0.4, 0.4, 0.4, 0.1), blur_p: float = 0.5,
                         blur_sigma: Sequence[float] = (0.1, 2.0), flip_p: float = 0.5,
                         gray_p: float = 0.2, extended: bool = False, rotate_p: float = 0.5,
                         max_angle: float = 30.0, vflip_p: float = 0.5) -> Tensor:
    """Draw (B, 18) visual vectors for ``height x width`` frames ((B, 21) with ``extended``).

    ``height`` / ``width``: ints, or (B,) tensors of each frame's own size (original frames of
    mixed sizes); the random stream does not depend on them.

    Extended slots: rotation on (p ``rotate_p``), angle ``U(-max_angle, max_angle)`` degrees
    (0 when off), vertical flip (p ``vflip_p``). Returns float32 on the generator's device.
    """
    dev = _dev(generator)
    dim = VISUAL_DIM_EXTENDED if extended else VISUAL_DIM
    t = torch.zeros(batch, dim, device=dev)
    V = VisualSlot
    t[:, V.CROP_ON] = 1.0
    top, left, h, w = sample_resized_crop(batch, height, width, generator, crop_scale, crop_ratio).unbind(1)
    hh = torch.as_tensor(height, dtype=torch.float32, device=dev)
    ww = torch.as_tensor(width, dtype=torch.float32, device=dev)
    t[:, VISUAL_LAYOUT.crop] = torch.stack([top / hh, left / ww, h / hh, w / ww], dim=1)
    u = torch.rand((batch, 4), generator=generator, device=dev)
    jit_on = u[:, 0] < jitter_p
    t[:, V.JITTER_ON] = jit_on.float()
    t[:, VISUAL_LAYOUT.order], t[:, VISUAL_LAYOUT.jitter] = _jitter(batch, generator, jit_on, jitter)
    t[:, V.BLUR_ON], t[:, V.SIGMA] = _blur(u[:, 1] < blur_p, blur_sigma, generator)
    t[:, V.HFLIP] = (u[:, 2] < flip_p).float()
    t[:, V.GRAY] = (u[:, 3] < gray_p).float()
    if extended:
        e = torch.rand((batch, 3), generator=generator, device=dev)
        rot_on = e[:, 0] < rotate_p
        t[:, V.ROTATE_ON] = rot_on.float()
        t[:, V.ANGLE] = torch.where(rot_on, (2 * e[:, 1] - 1) * max_angle, 0.0)
        t[:, V.VFLIP] = (e[:, 2] < vflip_p).float()
    return t


def identity_audio_params(batch: int, device: torch.device | str | None = None) -> Tensor:
    """(B, 24): zeros except the jitter order 0, 1, 2, 3 (every op off, crop off)."""
    t = torch.zeros(batch, AUDIO_DIM, device=device)
    t[:, AUDIO_LAYOUT.order] = torch.tensor(IDENTITY_ORDER, device=device)
    return t


def identity_visual_params(batch: int, device: torch.device | str | None = None,
                           extended: bool = False) -> Tensor:
    """(B, 18) (or (B, 21)): zeros except the jitter order 0, 1, 2, 3."""
    t = torch.zeros(batch, VISUAL_DIM_EXTENDED if extended else VISUAL_DIM, device=device)
    t[:, VISUAL_LAYOUT.order] = torch.tensor(IDENTITY_ORDER, device=device)
    return t


def sample_param_lists(batch: int, num: int, generator: torch.Generator | None = None,
                       device: torch.device | str | None = None, height: int | Tensor = 224,
                       width: int | Tensor = 224,
                       *, frames: int = 1024, bins: int = 128, extended: bool = False,
                       original_bugs: bool = True, seed: int | None = None) -> tuple[Tensor, Tensor]:
    """S = ``num`` vectors per clip for EquiAV's centroid: (B, S, 24), (B, S, 18 or 21) on ``device``.

    Has the :data:`avssl.methods.equiav.ParamSampler` signature
    ``(batch, S, generator, device) -> (t_a_list, t_v_list)``; the vectors are never applied.
    Audio vectors are drawn for a ``frames x bins`` fbank (mask widths scaled as in
    :func:`sample_audio_params`); visual ones for ``height x width`` frames (ints, or (B,) tensors
    of each clip's frame size; ``extended``: 21-d). ``original_bugs`` selects the
    audio crop encoding. ``seed``: with ``generator=None``, draw from a fresh generator seeded
    with it (the same vectors on every call) instead of torch's global generator.
    """
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    t_a = sample_audio_params(batch * num, generator, frames, bins, original_bugs=original_bugs)
    if isinstance(height, Tensor):
        height = height.repeat_interleave(num)
    if isinstance(width, Tensor):
        width = width.repeat_interleave(num)
    t_v = sample_visual_params(batch * num, generator, height, width, extended=extended)
    t_a, t_v = t_a.view(batch, num, AUDIO_DIM), t_v.view(batch, num, t_v.shape[-1])
    if device is not None:
        t_a, t_v = t_a.to(device), t_v.to(device)
    return t_a, t_v


def decode_crop(t: Tensor, layout: ParamLayout, height: int | Tensor, width: int | Tensor,
                axes_swapped: bool = False) -> Tensor:
    """Crop slots of (B, dim) vectors -> (B, 4) ``(top, left, h, w)`` pixels, rounded to integers.

    ``height`` / ``width``: ints, or (B,) tensors of each frame's own size.

    ``axes_swapped``: the audio encoding of the released code (top, h divided by ``width`` and
    left, w by ``height``).
    """
    c = t[:, layout.crop]
    den = (width, height) if axes_swapped else (height, width)
    d0, d1 = (torch.as_tensor(d, device=t.device, dtype=t.dtype).expand(t.shape[0]) for d in den)
    return torch.round(c * torch.stack([d0, d1, d0, d1], dim=1))

