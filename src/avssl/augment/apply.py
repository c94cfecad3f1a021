"""Apply EquiAV's augmentation parameter vectors (:mod:`avssl.augment.params`), batched and exactly.

:func:`apply_visual` takes (B, 18 or 21) visual vectors to frames, :func:`apply_audio` (B, 24)
audio vectors to normalised fbanks; every op runs only where its "on" slot is 1, so the
identity vectors return the input (normalised, for frames).

Audio: input ``fbank`` (B, 3, T, F) (normally 3 identical channels, T = 1024 frames, F = 128 bins),
vectors ``t`` (B, 24) laid out by :data:`avssl.augment.params.AUDIO_LAYOUT`. Order of the ops, as
in the released ``_get_transform_a``:

1. SpecAugment (slot 0): frames ``[t1, t2)`` and bins ``[t3, t4)`` set to 0;
2. time shift (slots 5-6, shift = ``round(t6 * T)``);
3. random-resized crop (slots 7-11), resized back to (T, F) bilinearly (crop + interpolate,
   half-pixel centres; the crop is never larger than the input, so no antialiasing is involved);
4. colour jitter (slots 12-20) in the encoded order, factors ``1 + t``, hue ``t20``;
5. Gaussian blur (slots 21-22), kernel ``2 ceil(sigma) + 1``, reflected edges (torchvision's
   tensor op with the released code's kernel rule);
6. "horizontal" flip (slot 23): reverses the frequency axis.

Deviations of the released code, reproduced by default (``original_bugs=True``), each
selectable on its own:

* ``crop_axes_swapped``: the crop slots hold top/F, left/T, h/F, w/T (top, h along time; left, w
  along frequency) — decoded accordingly; with False they hold top/T, left/F, h/T, w/F. The
  encoding must match the sampler's (``sample_audio_params(original_bugs=...)``).
* ``shift_noop``: the released shift is ``torch.roll(fbank, shift, 0)`` on a (3, T, F) tensor,
  which rolls the identical channels: nothing happens although slot 6 records the shift. With
  False the fbank is rolled circularly along time.
* ``jitter_clamp``: torchvision's float jitter clamps to [0, 1] (brightness, contrast,
  saturation clamp their output; hue clamps two of the three channels) — applied to a
  normalised spectrogram, this destroys most of it. With False the ops run unclamped (hue on
  identical channels is then the identity).
"""
from __future__ import annotations

import torch
from torch import Tensor

from avssl.augment import image as I
from avssl.augment import params as P
from avssl.augment.audio import spec_masks, time_roll
from avssl.augment.params import AUDIO_LAYOUT, AudioSlot, decode_crop

__all__ = ["apply_visual", "apply_audio"]


def apply_visual(images: Tensor, t: Tensor, out_size: int = 224, normalise: bool = True,
                 sizes: Tensor | None = None, antialias: bool = False) -> Tensor:
    """Apply EquiAV visual vectors exactly (docs/methods.md §2.3): crop -> jitter in the encoded order ->
    blur -> horizontal flip -> grayscale [-> rotation -> vertical flip (21-d)] -> ImageNet.

    Args:
        images: (B, 3, H, W) raw frames, uint8 or float in [0, 1].
        t: (B, 18) or (B, 21) vectors (:mod:`avssl.augment.params`); slots whose "on" flag is 0
            are skipped (the identity vector returns the input, normalised).
        out_size: crop output side (224); ignored when the crop flag is 0.
        sizes: (B, 2) each frame's own ``(h, w)`` when ``images`` is a zero-padded canvas of
            original frames of mixed sizes (then every crop flag must be on).
        antialias: resample the crop as PIL does (:func:`resized_crop`).
    Returns:
        (B, 3, out, out) float (normalised if ``normalise``). Differences from the PIL pipeline:
        no antialiasing when the crop is shrunk; blur is an exact Gaussian with sigma = PIL
        radius, kernel ``2 ceil(3 sigma) + 1``, replicated edges; float (no uint8 rounding).
    """
    V = P.VisualSlot
    if t.shape[-1] not in (P.VISUAL_DIM, P.VISUAL_DIM_EXTENDED):
        raise ValueError(f"visual parameter vectors must have 18 or 21 slots, got {tuple(t.shape)}")
    x = I.to_float(images)
    t = t.to(device=x.device, dtype=torch.float32)
    on = lambda slot: t[:, slot] > 0.5  # noqa: E731
    crop_on = on(V.CROP_ON)
    if bool(crop_on.any()):
        fh, fw = (x.shape[-2], x.shape[-1]) if sizes is None else sizes.to(x.device).unbind(1)
        boxes = P.decode_crop(t, P.VISUAL_LAYOUT, fh, fw)
        if not bool(crop_on.all()):
            if sizes is not None:
                raise ValueError("frames of mixed sizes need every crop flag on")
            if x.shape[-2:] != (out_size, out_size):
                raise ValueError("a batch mixing crop on/off needs frames of the output size")
            full = torch.tensor([0.0, 0.0, x.shape[-2], x.shape[-1]], device=x.device)
            boxes = torch.where(crop_on[:, None], boxes, full)
        x = I.resized_crop(x, boxes, out_size, antialias=antialias)
    elif sizes is not None:
        raise ValueError("frames of mixed sizes need every crop flag on")
    lay = P.VISUAL_LAYOUT
    factors = t[:, lay.jitter] + torch.tensor([1.0, 1.0, 1.0, 0.0], device=x.device)
    x = I.color_jitter(x, factors, t[:, lay.order].round().long(), on(V.JITTER_ON))
    x = I.gaussian_blur(x, t[:, V.SIGMA], on(V.BLUR_ON), "3sigma", "replicate")
    x = I.hflip(x, on(V.HFLIP))
    x = I.to_grayscale(x, on(V.GRAY))
    if t.shape[-1] == P.VISUAL_DIM_EXTENDED:
        rot = on(V.ROTATE_ON)
        if bool(rot.any()):
            x = torch.where(rot.view(-1, 1, 1, 1), I.rotate(x, t[:, V.ANGLE]), x)
        x = I.vflip(x, on(V.VFLIP))
    return I.normalize(x) if normalise else x


def _jitter_unclamped(x: Tensor, factors: Tensor, order: Tensor, enabled: Tensor) -> Tensor:
    """Colour jitter without any clamp (the fixed behaviour for spectrograms)."""
    def bright(z: Tensor, f: Tensor) -> Tensor:
        return z * f.view(-1, 1, 1, 1)

    def contrast(z: Tensor, f: Tensor) -> Tensor:
        m = I.rgb_to_gray(z).mean(dim=(1, 2, 3), keepdim=True)
        return f.view(-1, 1, 1, 1) * z + (1 - f.view(-1, 1, 1, 1)) * m

    def sat(z: Tensor, f: Tensor) -> Tensor:
        return f.view(-1, 1, 1, 1) * z + (1 - f.view(-1, 1, 1, 1)) * I.rgb_to_gray(z)

    def hue(z: Tensor, h: Tensor) -> Tensor:
        return I.adjust_hue(z, h, clamp=False)

    return I.color_jitter(x, factors, order, enabled, ops=(bright, contrast, sat, hue))


def apply_audio(fbank: Tensor, t: Tensor, original_bugs: bool = True, *,
                crop_axes_swapped: bool | None = None, shift_noop: bool | None = None,
                jitter_clamp: bool | None = None) -> Tensor:
    """Apply (B, 24) vectors ``t`` to normalised fbanks (B, 3, T, F) -> (B, 3, T, F).

    Every op runs only where its "on" slot is 1, so :func:`~avssl.augment.params.identity_audio_params`
    returns the input unchanged. The three named flags default to ``original_bugs`` (module
    docstring).
    """
    AUDIO_LAYOUT.check(t)
    if fbank.ndim != 4:
        raise ValueError(f"fbank must be (B, C, T, F), got shape {tuple(fbank.shape)}")
    crop_axes_swapped = original_bugs if crop_axes_swapped is None else crop_axes_swapped
    shift_noop = original_bugs if shift_noop is None else shift_noop
    jitter_clamp = original_bugs if jitter_clamp is None else jitter_clamp
    A = AudioSlot
    t = t.to(device=fbank.device, dtype=torch.float32)
    on = lambda slot: t[:, slot] > 0.5  # noqa: E731
    n_t, n_f = fbank.shape[-2:]
    x = spec_masks(fbank, t)
    if not shift_noop:
        x = time_roll(x, torch.round(t[:, A.SHIFT] * n_t), on(A.SHIFT_ON))
    crop_on = on(A.CROP_ON)
    if bool(crop_on.any()):
        boxes = decode_crop(t, AUDIO_LAYOUT, n_t, n_f, axes_swapped=crop_axes_swapped)
        full = torch.tensor([0.0, 0.0, n_t, n_f], device=x.device)
        boxes = torch.where(crop_on[:, None], boxes, full)
        top, left, h, w = boxes.unbind(1)
        if bool(((top < 0) | (left < 0) | (h < 1) | (w < 1) | (top + h > n_t) | (left + w > n_f)).any()):
            raise ValueError("audio crop slots decode to a box outside the (T, F) plane; was the vector "
                             f"sampled with original_bugs={crop_axes_swapped}?")
        x = torch.where(crop_on.view(-1, 1, 1, 1), I.resized_crop(x, boxes, (n_t, n_f)), x)
    factors = t[:, AUDIO_LAYOUT.jitter] + torch.tensor([1.0, 1.0, 1.0, 0.0], device=x.device)
    order = t[:, AUDIO_LAYOUT.order].round().long()
    if jitter_clamp:
        x = I.color_jitter(x, factors, order, on(A.JITTER_ON))
    else:
        x = _jitter_unclamped(x, factors, order, on(A.JITTER_ON))
    x = I.gaussian_blur(x, t[:, A.SIGMA], on(A.BLUR_ON), kernel_rule="1sigma", padding_mode="reflect")
    return I.hflip(x, on(A.FLIP))
