"""The EZ-VSL family of localisers, shared by the methods built on it (EZ-VSL, FNAC).

Two ResNet-18s (:mod:`avssl.models.resnet`, torchvision layout and key names), a 1x1-conv visual
head and a linear audio head, both L2-normalised, and the multiple-instance (MIL) similarity::

    img = normalize(img_proj(visual(frame)))      # (B, dim, 7, 7) for a 224 px frame (stride 32)
    aud = normalize(aud_proj(audio(spec)))        # (B, dim), audio trunk globally max-pooled
    Slogits[n, m] = <img_n, aud_m> / tau          # (B, B, 7, 7); Savl = Slogits[n, n]
    nce = CE(max_hw Slogits) + CE(max_hw Slogits^T)

:class:`MILLocaliser` holds the networks, their init (the authors' order of random draws), the
test-time maps with object-guided localisation (OGL: the channel mean of |layer4| of a separate,
frozen ImageNet ResNet-18 read from a local torchvision file, never downloaded, kept out of the
state dict) and ``infer``. A method subclasses it with its config and its training loss. The
pure map and loss helpers (:func:`similarity_maps`, :func:`mil_logits`, :func:`paired_maps`,
:func:`mil_nce_loss`, :func:`minmax`, :func:`upsample`, :func:`seeded_dropout`) are module
functions; the family's data set and batch transform are in :mod:`avssl.models.mil_pipeline`;
:func:`convert_mil_checkpoint` reads the authors' checkpoints (one format for the family; SLAVC
adds its own key prefixes).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avssl.checkpoint import (
    ConversionReport,
    finish_conversion,
    load_converted,
    strip_prefixes,
    unwrap_state_dict,
)
from avssl.models.resnet import AudioResNet18, ResNet18Trunk, init_weights, load_imagenet_visual

logger = logging.getLogger(__name__)

__all__ = ["similarity_maps", "mil_logits", "paired_maps", "mil_nce_loss", "minmax", "upsample",
           "init_projection", "seeded_dropout", "check_mil_config", "MILLocaliser",
           "convert_mil_checkpoint", "official_converters"]


# ----------------------------------------------------------------------------- pure maps / loss
def similarity_maps(img: Tensor, aud: Tensor, tau: float = 0.03) -> Tensor:
    """All-pairs localisation logits ``Slogits`` (B_img, B_aud, h, w) in units of 1/tau.

    Args:
        img: (N, C, h, w) L2-normalised (along C) visual map.
        aud: (M, C) L2-normalised audio embedding.
    Returns:
        ``Slogits[n, m, h, w] = <img_n(h, w), aud_m> / tau``.
    """
    if img.ndim != 4 or aud.ndim != 2 or img.shape[1] != aud.shape[1]:
        raise ValueError(f"expected img (N, C, h, w) and aud (M, C), got {tuple(img.shape)}, {tuple(aud.shape)}")
    return torch.einsum("nchw,mc->nmhw", img, aud) / tau


def mil_logits(slogits: Tensor) -> Tensor:
    """(N, M, h, w) -> (N, M): the maximum over locations (the multiple-instance score)."""
    return slogits.flatten(2).amax(dim=2)


def paired_maps(slogits: Tensor) -> Tensor:
    """(B, B, h, w) -> (B, h, w): each frame's map with its own audio (``Slogits[n, n]``)."""
    return torch.diagonal(slogits, dim1=0, dim2=1).permute(2, 0, 1)


def mil_nce_loss(logits: Tensor) -> Tensor:
    """``CE(logits, arange(B)) + CE(logits^T, arange(B))`` of (B, B) MIL scores: a sum of the
    two directions' batch-mean cross-entropies (the authors add them)."""
    target = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)


def minmax(x: Tensor) -> Tensor:
    """Per-sample min-max normalisation of (B, ...) maps; a constant map is returned unchanged
    (the authors' ``normalize_img`` skips it when max == min)."""
    flat = x.flatten(1)
    lo, hi = flat.amin(1), flat.amax(1)
    span = hi - lo
    out = (flat - lo[:, None]) / torch.where(span > 0, span, torch.ones_like(span))[:, None]
    return torch.where((span > 0)[:, None], out, flat).view_as(x)


def upsample(maps: Tensor, size: int | tuple[int, int], mode: str = "bilinear",
             align_corners: bool = True) -> Tensor:
    """(B, h, w) -> (B, H, W): the test scripts' ``F.interpolate`` (bilinear, align_corners=True;
    train.py's per-epoch validation uses bicubic, align_corners=False)."""
    return F.interpolate(maps.unsqueeze(1), size=size, mode=mode, align_corners=align_corners).squeeze(1)


def init_projection(module: nn.Module) -> None:
    """The authors' init of a projection: conv kaiming-normal (fan_out), linear trunc-normal
    (std 0.01); biases keep PyTorch's default uniform init."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.01)


def seeded_dropout(module: nn.Module, x: Tensor, generator: torch.Generator | None) -> Tensor:
    """``module(x)``; an active ``nn.Dropout`` draws its keep mask from ``generator`` when one is
    given (``x * keep / (1 - p)``), so a training step's dropout follows the step's seed."""
    if not (isinstance(module, nn.Dropout) and module.training and module.p > 0 and generator is not None):
        return module(x)
    keep = torch.rand(x.shape, generator=generator, device=generator.device).to(x.device) >= module.p
    return x * keep.to(x.dtype) / (1.0 - module.p)


def check_mil_config(c, section: str) -> None:
    """The checks every EZ-VSL-family options dataclass runs (``__post_init__``) on the fields they
    share: ``tau``, ``dim``, ``width`` positive; ``image_size`` >= 32 and a multiple of 32 (the
    encoders' stride); ``train_resize`` >= 224; ``ogl_alpha`` in [0, 1]; ``dropout_img`` /
    ``dropout_aud`` in [0, 1) where the method has them. ``section`` names the options in messages."""
    if c.tau <= 0 or c.dim <= 0 or c.width <= 0:
        raise ValueError("tau, dim and width must be positive")
    if c.image_size < 32 or c.train_resize < 224:
        raise ValueError(f"image_size must be >= 32 and train_resize >= 224, got {c.image_size}, {c.train_resize}")
    if c.image_size % 32:
        raise ValueError(f"{section}.image_size must be a multiple of 32 (the encoders' stride), got {c.image_size}")
    if not 0.0 <= c.ogl_alpha <= 1.0:
        raise ValueError(f"ogl_alpha must be in [0, 1], got {c.ogl_alpha}")
    if hasattr(c, "dropout_img") and not (0.0 <= c.dropout_img < 1.0 and 0.0 <= c.dropout_aud < 1.0):
        raise ValueError(f"dropouts must be in [0, 1), got {c.dropout_img}, {c.dropout_aud}")


# ----------------------------------------------------------------------------- the networks
class MILLocaliser(nn.Module):
    """Networks, OGL and test-time maps of the EZ-VSL family (subclasses add the loss).

    The subclass sets ``self.config`` with ``tau``, ``dim``, ``width``, ``imagenet_init``,
    ``ogl_weights`` and ``ogl_alpha`` before calling :meth:`build`; ``title`` names it in logs
    and ``section`` is its config section (for messages). Frames (B, 3, S, S) ImageNet-normalised;
    spectrograms (B, 1, 257, T).
    """

    title = "MIL localiser"
    section = "mil"

    def build(self) -> None:
        """Create the networks in the authors' order of random draws (visual, audio, heads)."""
        c = self.config
        channels = 8 * c.width
        # torchvision resnet18 (layer4 stride 2) minus avgpool/fc; torchvision's own init
        self.visual = ResNet18Trunk(in_channels=3, width=c.width, layer4_stride=2)
        init_weights(self.visual, "torchvision")
        # 1-channel stem, global max pool; re-initialised: kaiming convs, BN weight N(1, 0.02)
        self.audio = AudioResNet18(width=c.width, layer4_stride=2)
        init_weights(self.audio, "ssltie")
        self.img_proj = nn.Conv2d(channels, c.dim, kernel_size=1)
        self.aud_proj = nn.Linear(channels, c.dim)
        init_projection(self.img_proj)
        init_projection(self.aud_proj)
        if c.imagenet_init is not None:
            load_imagenet_visual(self.visual, c.imagenet_init)
        self.build_ogl()

    def build_ogl(self) -> None:
        """Object-guided localisation from ``config.ogl_weights`` (off, logged, when unset or missing)."""
        c = self.config
        self._ogl: tuple[ResNet18Trunk, ...] = ()  # kept out of the state dict and the parameters
        self._ogl_reason = f"{self.section}.ogl_weights is not set"
        if c.ogl_weights is not None:
            if os.path.isfile(c.ogl_weights):
                self.set_ogl_network(c.ogl_weights)
            else:
                self._ogl_reason = f"{self.section}.ogl_weights {c.ogl_weights} does not exist"
                logger.warning("%s: object-guided localisation off: %s", self.title, self._ogl_reason)

    # -- OGL -------------------------------------------------------------------------------
    def set_ogl_network(self, state_dict: Mapping[str, Tensor] | str | os.PathLike) -> None:
        """Build the frozen ImageNet ResNet-18 of OGL from a torchvision ``resnet18`` state dict or
        file (``fc.*`` unused); it must have the full width (64)."""
        net = ResNet18Trunk(in_channels=3, width=64, layer4_stride=2)
        report = load_imagenet_visual(net, dict(state_dict) if isinstance(state_dict, Mapping) else state_dict)
        if report.missing:
            raise ValueError(f"OGL weights lack {len(report.missing)} tensors: {report.missing[:5]}")
        net.requires_grad_(False).eval()
        self._ogl = (net,)
        logger.info("%s: object-guided localisation on (alpha %.2f)", self.title, self.config.ogl_alpha)

    @property
    def has_ogl(self) -> bool:
        return bool(self._ogl)

    @torch.no_grad()
    def object_map(self, image: Tensor) -> Tensor:
        """OGL's object saliency (B, h, w): mean over channels of |layer4| of the ImageNet network."""
        if not self._ogl:
            raise RuntimeError(f"object-guided localisation is off: {self._ogl_reason}")
        net = self._ogl[0]
        if next(net.parameters()).device != image.device:
            net.to(image.device)
        return net.eval()(image).abs().mean(dim=1)

    # -- encoders and maps -----------------------------------------------------------------
    def encode_image(self, image: Tensor) -> Tensor:
        """(B, 3, S, S) -> L2-normalised visual map (B, dim, S/32, S/32)."""
        return F.normalize(self.img_proj(self.visual(image)), dim=1)

    def encode_audio(self, spec: Tensor) -> Tensor:
        """(B, 1, F, T) -> L2-normalised audio embedding (B, dim)."""
        return F.normalize(self.aud_proj(self.audio(spec)), dim=1)

    def av_map(self, img: Tensor, aud: Tensor) -> Tensor:
        """Paired maps ``Savl`` (B, h, w) of embeddings, in units of 1/tau."""
        return torch.einsum("bchw,bc->bhw", img, aud) / self.config.tau

    @torch.no_grad()
    def test_maps(self, image: Tensor, spec: Tensor, size: int | tuple[int, int] | None = None,
                  mode: str = "bilinear", align_corners: bool = True) -> dict[str, Tensor]:
        """The test script's maps at ``size`` (default the frame's): ``av_in`` (B, h, w) = Savl,
        ``av`` its upsampling (``mode`` / ``align_corners``), ``pred_av`` = minmax(av); with OGL
        also ``obj_in``, ``obj`` (always bilinear, align_corners=True), ``pred_obj`` and
        ``pred_av_obj`` = minmax(alpha pred_av + (1 - alpha) pred_obj)."""
        size = tuple(image.shape[-2:]) if size is None else size
        out = {"av_in": self.av_map(self.encode_image(image), self.encode_audio(spec))}
        out["av"] = upsample(out["av_in"], size, mode, align_corners)
        out["pred_av"] = minmax(out["av"])
        if self._ogl:
            a = self.config.ogl_alpha
            out["obj_in"] = self.object_map(image)
            out["obj"] = upsample(out["obj_in"], size)
            out["pred_obj"] = minmax(out["obj"])
            out["pred_av_obj"] = minmax(a * out["pred_av"] + (1.0 - a) * out["pred_obj"])
        return out

    def heatmap(self, image: Tensor, av: Tensor, mode: str = "bilinear", align_corners: bool = True) -> Tensor:
        """``infer``'s heatmap from the paired maps ``av``: Savl itself, or with OGL the AV+OGL
        map at the frame's size (the AV map upsampled with ``mode`` / ``align_corners``, the
        object map bilinear, align_corners=True)."""
        if not self._ogl:
            return av
        a, size = self.config.ogl_alpha, tuple(image.shape[-2:])
        pred_obj = minmax(upsample(self.object_map(image), size))
        return minmax(a * minmax(upsample(av, size, mode, align_corners)) + (1.0 - a) * pred_obj)

    @torch.no_grad()
    def infer(self, image: Tensor, spec: Tensor) -> dict[str, Tensor]:
        """Evaluation outputs: ``heatmap`` (:meth:`heatmap`); ``audio`` (B, dim) the normalised
        audio embedding; ``visual`` (B, dim) the normalised spatial mean of the visual map."""
        img, aud = self.encode_image(image), self.encode_audio(spec)
        return {"heatmap": self.heatmap(image, self.av_map(img, aud)), "audio": aud,
                "visual": F.normalize(img.mean(dim=(2, 3)), dim=1)}

    @torch.no_grad()
    def localise(self, image: Tensor, spec: Tensor) -> Tensor:
        """The localisation map of :meth:`infer` (no grad)."""
        return self.infer(image, spec)["heatmap"]


# ----------------------------------------------------------------------------- checkpoints
_RENAMES = (("imgnet.", "visual."), ("audnet.", "audio."), ("img_proj.", "img_proj."), ("aud_proj.", "aud_proj."))
_UNUSED_PREFIXES = ("imgnet.fc.", "audnet.fc.")  # Identity in the official models; a plain resnet18 has them


def convert_mil_checkpoint(state_dict: Mapping, expected: Callable[[int, int], Mapping[str, Tensor]], label: str,
                           strict: bool = False, width: int | None = None, dim: int | None = None,
                           renames: Sequence[tuple[str, str]] = _RENAMES,
                           unused: tuple[str, ...] = _UNUSED_PREFIXES,
                           dim_key: str = "img_proj.weight") -> tuple[dict[str, Tensor], ConversionReport]:
    """Map an official EZ-VSL-family state dict (``imgnet.*``, ``audnet.*``, ``img_proj.*``,
    ``aud_proj.*``) onto :class:`MILLocaliser` names (``visual.*``, ``audio.*``, heads kept).

    Accepts a plain state dict, ``{"model": sd}`` or ``{"state_dict": sd}``, with or without
    DataParallel ``module.`` prefixes. ``fc`` heads are reported as dropped; unrecognised keys as
    ``unexpected``; keys of ``expected(width, dim)`` (the target model's state dict; width / dim
    inferred from ``imgnet.conv1.weight`` / ``img_proj.weight`` when None) not provided as
    ``missing``. ``renames`` / ``unused`` / ``dim_key``: another member's key prefixes (official ->
    ours), its dropped prefixes and the key ``dim`` is read from (SLAVC). ``strict`` raises ``ValueError`` on any unexpected or missing key; a shape
    mismatch always raises (:func:`avssl.checkpoint.finish_conversion`).
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"expected a state dict mapping, got {type(state_dict).__name__}")
    source = strip_prefixes(unwrap_state_dict(dict(state_dict), ("state_dict", "model")), ("module.",))
    report = ConversionReport()
    ours: dict[str, Tensor] = {}
    for key, value in source.items():
        target = next((new + key.removeprefix(old) for old, new in renames if key.startswith(old)), None)
        if key.startswith(unused):
            report.dropped[key] = "unused by the original forward (Identity)"
        elif target is not None:
            ours[target] = torch.as_tensor(value)
            report.loaded.append(target)
        else:
            report.unexpected.append(key)
    if width is None:
        width = int(ours["visual.conv1.weight"].shape[0]) if "visual.conv1.weight" in ours else 64
    if dim is None:
        dim = int(ours[dim_key].shape[0]) if dim_key in ours else 512
    ours = finish_conversion(ours, expected(width, dim), report, label, strict, f"width {width}, dim {dim}")
    return ours, report


def official_converters(model_cls: type, config_cls: type, title: str, **keys):
    """``(convert_official_state_dict, load_official)`` of an EZ-VSL-family method whose model is
    ``model_cls(config_cls(width=, dim=))`` (its checkpoint: the authors' train.py ``{"model": sd}``).

    ``convert_official_state_dict(state_dict, strict=False, width=None, dim=None)`` is
    :func:`convert_mil_checkpoint` against that model (width / dim inferred when None);
    ``load_official(model, state_dict, strict=False)`` loads the result into ``model`` and returns
    the :class:`~avssl.checkpoint.ConversionReport`. ``keys``: ``renames`` / ``unused`` / ``dim_key``
    of :func:`convert_mil_checkpoint` for a member with other key names."""
    def expected(width: int, dim: int) -> dict[str, Tensor]:
        with torch.device("meta"):
            return model_cls(config_cls(width=width, dim=dim)).state_dict()

    def convert_official_state_dict(state_dict: Mapping, strict: bool = False, width: int | None = None,
                                    dim: int | None = None) -> tuple[dict[str, Tensor], ConversionReport]:
        return convert_mil_checkpoint(state_dict, expected, f"official {title} checkpoint", strict, width, dim,
                                      **keys)

    def load_official(model: nn.Module, state_dict: Mapping, strict: bool = False) -> ConversionReport:
        ours, report = convert_official_state_dict(state_dict, strict=strict, width=model.config.width,
                                                   dim=model.config.dim)
        load_converted(model, ours)
        return report

    convert_official_state_dict.__doc__ = (
        f"Map an official {title} state dict (plain, ``{{'model': sd}}`` or ``{{'state_dict': sd}}``, with or "
        f"without ``module.``) onto {model_cls.__name__} names: :func:`avssl.models.mil.convert_mil_checkpoint`.")
    load_official.__doc__ = f"Load an official {title} checkpoint into a {model_cls.__name__}; returns the report."
    return convert_official_state_dict, load_official
