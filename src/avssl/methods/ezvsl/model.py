"""EZ-VSL: localising visual sounds the easy way (Mo & Morgado, ECCV 2022; docs/methods.md, EZ-VSL).

Two ResNet-18s (:mod:`avssl.models.resnet`, torchvision layout and key names), a 1x1-conv visual
head and a linear audio head, both L2-normalised::

    img = normalize(img_proj(visual(frame)))      # (B, dim, 7, 7) for a 224 px frame (stride 32)
    aud = normalize(aud_proj(audio(spec)))        # (B, dim), audio trunk globally max-pooled
    Slogits[n, m] = <img_n, aud_m> / tau          # (B, B, 7, 7); Savl = Slogits[n, n]
    loss = CE(max_hw Slogits) + CE(max_hw Slogits^T)

Test time (the authors' ``test.py``): the AV map ``Savl`` upsampled to the frame (bilinear,
align_corners=True) and min-max normalised; optionally object-guided localisation (OGL): the
channel mean of |layer4| of a separate, frozen ImageNet ResNet-18, upsampled the same way and
mixed as ``minmax(alpha * av + (1 - alpha) * obj)``. OGL needs that network's torchvision
weights file (``ogl_weights``); nothing is ever downloaded, and without the file OGL is off
(logged). The OGL network is not part of the state dict: a checkpoint holds only the trained
model, and the ImageNet network is re-read from ``ogl_weights`` where it is set.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avssl.methods.ezvsl import losses
from avssl.models.resnet import AudioResNet18, ResNet18Trunk, init_weights, load_imagenet_visual

logger = logging.getLogger(__name__)

__all__ = ["EZVSLConfig", "EZVSL", "minmax"]


@dataclass(frozen=True)
class EZVSLConfig:
    """EZ-VSL options; the defaults are the authors' released ones (``EZVSL(tau=0.03, dim=512)``,
    ``test.py --alpha 0.4``, train.py's 224 px frames). The audio length is ``data.seconds`` (the
    authors' 3 s: the packaged preset sets it).

    tau: the similarity temperature. dim: the embedding size of both heads.
    width: base channels of both ResNet-18s (64 is the authors'; 16/8 give cheap CPU models).
    image_size: the frame side the model is fed (224: 7x7 maps).
    train_resize: training frames are resized (short side) to ``train_resize / 224 * image_size``
        and randomly cropped to ``image_size`` (246 for 224, the authors'; read by the pipeline).
    imagenet_init: optional local torchvision ``resnet18`` state dict loaded into the visual
        encoder (the authors start from ImageNet; None: torchvision's random init).
    ogl_weights: optional local torchvision ``resnet18`` state dict for object-guided
        localisation at test time; None or a missing file: OGL off (logged).
    ogl_alpha: the weight of the AV map in the AV+OGL mix (``--alpha``, 0.4).
    """

    tau: float = 0.03
    dim: int = 512
    width: int = 64
    image_size: int = 224
    train_resize: int = 246
    imagenet_init: str | None = None
    ogl_weights: str | None = None
    ogl_alpha: float = 0.4

    def __post_init__(self) -> None:
        if self.tau <= 0 or self.dim <= 0 or self.width <= 0:
            raise ValueError("tau, dim and width must be positive")
        if self.image_size < 32 or self.train_resize < 224:
            raise ValueError(f"image_size must be >= 32 and train_resize >= 224, got {self.image_size}, "
                             f"{self.train_resize}")
        if not 0.0 <= self.ogl_alpha <= 1.0:
            raise ValueError(f"ogl_alpha must be in [0, 1], got {self.ogl_alpha}")


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
    """(B, h, w) -> (B, H, W): the test script's ``F.interpolate`` (bilinear, align_corners=True;
    train.py's per-epoch validation uses bicubic, align_corners=False)."""
    return F.interpolate(maps.unsqueeze(1), size=size, mode=mode, align_corners=align_corners).squeeze(1)


def _init_head(module: nn.Module) -> None:
    """The authors' init of a projection: conv kaiming-normal (fan_out), linear trunc-normal
    (std 0.01); biases keep PyTorch's default uniform init."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.01)


class EZVSL(nn.Module):
    """EZ-VSL model + loss. Frames (B, 3, S, S) ImageNet-normalised; spectrograms (B, 1, 257, T)
    (``log(PSD + 1e-7) / 12``, :func:`avssl.methods.ezvsl.pipeline.ezvsl_logspec`)."""

    def __init__(self, config: EZVSLConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or EZVSLConfig()
        channels = 8 * c.width
        # torchvision resnet18 (layer4 stride 2) minus avgpool/fc; torchvision's own init
        self.visual = ResNet18Trunk(in_channels=3, width=c.width, layer4_stride=2)
        init_weights(self.visual, "torchvision")
        # 1-channel stem, global max pool; EZ-VSL re-inits it: kaiming convs, BN weight N(1, 0.02)
        self.audio = AudioResNet18(width=c.width, layer4_stride=2)
        init_weights(self.audio, "ssltie")
        self.img_proj = nn.Conv2d(channels, c.dim, kernel_size=1)
        self.aud_proj = nn.Linear(channels, c.dim)
        _init_head(self.img_proj)
        _init_head(self.aud_proj)
        if c.imagenet_init is not None:
            load_imagenet_visual(self.visual, c.imagenet_init)
        self._ogl: tuple[ResNet18Trunk, ...] = ()  # kept out of the state dict and the parameters
        self._ogl_reason = "ezvsl.ogl_weights is not set"
        if c.ogl_weights is not None:
            if os.path.isfile(c.ogl_weights):
                self.set_ogl_network(c.ogl_weights)
            else:
                self._ogl_reason = f"ezvsl.ogl_weights {c.ogl_weights} does not exist"
                logger.warning("EZ-VSL: object-guided localisation off: %s", self._ogl_reason)

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
        logger.info("EZ-VSL: object-guided localisation on (alpha %.2f)", self.config.ogl_alpha)

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

    def step_outputs(self, image: Tensor, spec: Tensor) -> dict[str, Tensor]:
        """``img``, ``aud`` (embeddings), ``Slogits`` (B, B, h, w), ``loss`` and ``Savl`` (B, h, w, no grad)."""
        img, aud = self.encode_image(image), self.encode_audio(spec)
        loss, slogits = losses.ezvsl_mil_loss(img, aud, self.config.tau)
        return {"img": img, "aud": aud, "Slogits": slogits, "loss": loss,
                "Savl": losses.paired_maps(slogits.detach())}

    def forward(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Training entry point: ``batch["image"]``, ``batch["spec"]`` -> ``{"loss": ...}``."""
        return {"loss": self.step_outputs(batch["image"], batch["spec"])["loss"]}

    @torch.no_grad()
    def test_maps(self, image: Tensor, spec: Tensor, size: int | tuple[int, int] | None = None,
                  mode: str = "bilinear", align_corners: bool = True) -> dict[str, Tensor]:
        """The test script's maps at ``size`` (default the frame's): ``av_in`` (B, h, w) = Savl,
        ``av`` its upsampling, ``pred_av`` = minmax(av); with OGL also ``obj_in``, ``obj``,
        ``pred_obj`` and ``pred_av_obj`` = minmax(alpha pred_av + (1 - alpha) pred_obj)."""
        size = tuple(image.shape[-2:]) if size is None else size
        img, aud = self.encode_image(image), self.encode_audio(spec)
        out = {"av_in": torch.einsum("bchw,bc->bhw", img, aud) / self.config.tau}
        out["av"] = upsample(out["av_in"], size, mode, align_corners)
        out["pred_av"] = minmax(out["av"])
        if self._ogl:
            a = self.config.ogl_alpha
            out["obj_in"] = self.object_map(image)
            out["obj"] = upsample(out["obj_in"], size)  # OGL always bilinear, align_corners=True
            out["pred_obj"] = minmax(out["obj"])
            out["pred_av_obj"] = minmax(a * out["pred_av"] + (1.0 - a) * out["pred_obj"])
        return out

    @torch.no_grad()
    def infer(self, image: Tensor, spec: Tensor) -> dict[str, Tensor]:
        """Evaluation outputs: ``heatmap`` = Savl (B, h, w) in units of 1/tau, or with OGL the
        AV+OGL map at the frame's size (B, S, S); ``audio`` (B, dim) the normalised audio
        embedding; ``visual`` (B, dim) the normalised spatial mean of the visual map."""
        img, aud = self.encode_image(image), self.encode_audio(spec)
        heat = torch.einsum("bchw,bc->bhw", img, aud) / self.config.tau
        if self._ogl:
            a = self.config.ogl_alpha
            size = tuple(image.shape[-2:])
            pred_obj = minmax(upsample(self.object_map(image), size))
            heat = minmax(a * minmax(upsample(heat, size)) + (1.0 - a) * pred_obj)
        return {"heatmap": heat, "audio": aud, "visual": F.normalize(img.mean(dim=(2, 3)), dim=1)}

    @torch.no_grad()
    def localise(self, image: Tensor, spec: Tensor) -> Tensor:
        """The localisation map of :meth:`infer` (no grad)."""
        return self.infer(image, spec)["heatmap"]
