"""EZ-VSL: localising visual sounds the easy way (Mo & Morgado, ECCV 2022; docs/methods.md, EZ-VSL).

Two ResNet-18s (:mod:`avssl.models.resnet`, torchvision layout and key names), a 1x1-conv visual
head and a linear audio head, both L2-normalised::

    img = normalize(img_proj(visual(frame)))      # (B, dim, 7, 7) for a 224 px frame (stride 32)
    aud = normalize(aud_proj(audio(spec)))        # (B, dim), audio trunk globally max-pooled
    Slogits[n, m] = <img_n, aud_m> / tau          # (B, B, 7, 7); Savl = Slogits[n, n]
    loss = CE(max_hw Slogits) + CE(max_hw Slogits^T)

The networks, object-guided localisation (OGL) and the test-time maps are the EZ-VSL family's
(:class:`avssl.models.mil.MILLocaliser`, shared with FNAC). Test time (the authors' ``test.py``):
the AV map ``Savl`` upsampled to the frame (bilinear, align_corners=True) and min-max
normalised; optionally OGL: the channel mean of |layer4| of a separate, frozen ImageNet
ResNet-18, upsampled the same way and mixed as ``minmax(alpha * av + (1 - alpha) * obj)``. OGL
needs that network's torchvision weights file (``ogl_weights``); nothing is ever downloaded, and
without the file OGL is off (logged). The OGL network is not part of the state dict.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from avssl.methods.ezvsl import losses
from avssl.models.mil import MILLocaliser, check_mil_config, minmax, upsample

__all__ = ["EZVSLConfig", "EZVSL", "minmax", "upsample"]


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
        check_mil_config(self, "ezvsl")


class EZVSL(MILLocaliser):
    """EZ-VSL model + loss. Frames (B, 3, S, S) ImageNet-normalised; spectrograms (B, 1, 257, T)
    (``log(PSD + 1e-7) / 12``, :func:`avssl.methods.ezvsl.pipeline.ezvsl_logspec`)."""

    title, section = "EZ-VSL", "ezvsl"

    def __init__(self, config: EZVSLConfig | None = None) -> None:
        super().__init__()
        self.config = config or EZVSLConfig()
        self.build()

    def step_outputs(self, image: Tensor, spec: Tensor) -> dict[str, Tensor]:
        """``img``, ``aud`` (embeddings), ``Slogits`` (B, B, h, w), ``loss`` and ``Savl`` (B, h, w, no grad)."""
        img, aud = self.encode_image(image), self.encode_audio(spec)
        loss, slogits = losses.ezvsl_mil_loss(img, aud, self.config.tau)
        return {"img": img, "aud": aud, "Slogits": slogits, "loss": loss,
                "Savl": losses.paired_maps(slogits.detach())}

    def forward(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Training entry point: ``batch["image"]``, ``batch["spec"]`` -> ``{"loss": ...}``."""
        return {"loss": self.step_outputs(batch["image"], batch["spec"])["loss"]}
