"""ResNet-18 encoders for SSL-TIE (docs/methods.md §1.2), built from torchvision's ``BasicBlock``.

* :func:`visual_resnet18` - 3-channel 7x7 stem, layer4 with stride 1: a 224x224 frame gives a
  ``(8*width) x 14 x 14`` map (512 x 14 x 14 at the paper width 64).
* :func:`audio_resnet18` - 1-channel 7x7 stem, same layers (layer4 stride 1 too, as in the
  authors' code - checked against the golden audio embedding), then a global max pool: a
  spectrogram ``(B, 1, F, T)`` gives ``(B, 8*width)``.

``width`` is the number of base channels (64 in the paper; 32 or 16 give cheap CPU models).
Weights are drawn with the SSL-TIE init quirk by default (every conv Kaiming-normal fan_out,
every BatchNorm weight N(1, 0.02), bias 0); ``init="torchvision"`` gives the standard
torchvision ResNet init (BatchNorm weight 1). No pretrained weight is ever downloaded here;
:func:`load_imagenet_visual` loads a local torchvision ``resnet18`` state dict file.
"""
from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, conv1x1

from avssl.checkpoint import CheckpointError, strip_key, unwrap_state_dict

logger = logging.getLogger(__name__)

InitMode = Literal["ssltie", "torchvision"]
INIT_MODES: tuple[str, ...] = ("ssltie", "torchvision")


class ResNet18Trunk(nn.Module):
    """ResNet-18 without pooling head: stem (7x7 conv, BN, ReLU, 3x3 max pool) + 4 stages.

    Parameter names follow torchvision (``conv1``, ``bn1``, ``layer{1..4}.{0,1}.*``,
    ``downsample.{0,1}``), so torchvision ImageNet state dicts load directly.

    Args:
        in_channels: 3 for frames, 1 for spectrograms.
        width: base channel count; stages have ``width * (1, 2, 4, 8)`` channels.
        layer4_stride: 1 keeps a stride-16 output map (SSL-TIE visual), 2 is torchvision's.
    """

    def __init__(self, in_channels: int, width: int = 64, layer4_stride: int = 2) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.width = width
        self.out_channels = 8 * width
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self._inplanes = width
        self.layer1 = self._make_layer(width, stride=1)
        self.layer2 = self._make_layer(2 * width, stride=2)
        self.layer3 = self._make_layer(4 * width, stride=2)
        self.layer4 = self._make_layer(8 * width, stride=layer4_stride)

    def _make_layer(self, planes: int, stride: int, blocks: int = 2) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._inplanes != planes:
            downsample = nn.Sequential(conv1x1(self._inplanes, planes, stride), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self._inplanes, planes, stride, downsample)]
        self._inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W)`` -> ``(B, 8*width, H', W')`` (``H' = H/16`` with layer4 stride 1)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class AudioResNet18(ResNet18Trunk):
    """Spectrogram encoder: ``(B, 1, F, T)`` -> global max-pooled ``(B, 8*width)`` (not normalised).

    The trunk before pooling has stride 16 (layer4 stride 1): (1, 257, 670) -> (8w, 17, 42).
    """

    def __init__(self, width: int = 64, layer4_stride: int = 1) -> None:
        super().__init__(in_channels=1, width=width, layer4_stride=layer4_stride)

    def forward(self, x: Tensor) -> Tensor:
        return torch.amax(super().forward(x), dim=(2, 3))


def init_weights(module: nn.Module, mode: InitMode = "ssltie") -> None:
    """Re-draw the conv and BatchNorm weights of ``module`` in place (global torch RNG).

    ``"ssltie"``: convs Kaiming-normal (fan_out, relu), BN weight N(1, 0.02), bias 0 (AVENet).
    ``"torchvision"``: convs Kaiming-normal (fan_out, relu), BN weight 1, bias 0.
    """
    if mode not in INIT_MODES:
        raise ValueError(f"unknown init mode {mode!r}; expected one of {INIT_MODES}")
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            if mode == "ssltie":
                nn.init.normal_(m.weight, mean=1.0, std=0.02)
            else:
                nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def visual_resnet18(width: int = 64, init: InitMode = "ssltie") -> ResNet18Trunk:
    """SSL-TIE frame encoder: ``(B, 3, H, W)`` -> ``(B, 8*width, H/16, W/16)`` (layer4 stride 1)."""
    net = ResNet18Trunk(in_channels=3, width=width, layer4_stride=1)
    init_weights(net, init)
    return net


def audio_resnet18(width: int = 64, init: InitMode = "ssltie") -> AudioResNet18:
    """SSL-TIE spectrogram encoder: ``(B, 1, F, T)`` -> ``(B, 8*width)`` (global max pool)."""
    net = AudioResNet18(width=width)
    init_weights(net, init)
    return net


@dataclass
class LoadReport:
    """What a state-dict load did: keys loaded, left at their init, and not used."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.source}: {len(self.loaded)} tensors loaded, {len(self.missing)} missing "
                f"{self.missing[:5]}, {len(self.unused)} unused {self.unused[:5]}")


def load_imagenet_visual(encoder: ResNet18Trunk, state_dict: dict[str, Tensor] | str | Path) -> LoadReport:
    """Initialise ``encoder`` from a torchvision ``resnet18`` ImageNet state dict (or a file of one).

    ``fc.*`` and any other key the trunk does not have are reported as unused; trunk keys absent
    from the state dict are reported as missing (and keep their current values). A shape
    mismatch (e.g. a width other than 64) raises ``ValueError``.
    """
    source = "<state_dict>"
    if isinstance(state_dict, (str, Path)):
        source = str(state_dict)
        path = Path(state_dict)
        if not path.is_file():
            raise FileNotFoundError(f"ImageNet weights file not found: {path}")
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, ValueError, pickle.UnpicklingError) as err:
            raise ValueError(f"cannot read ImageNet weights from {path}: {err}") from err
        try:
            state_dict = unwrap_state_dict(state_dict, ("state_dict", "model"))
        except CheckpointError as err:
            raise ValueError(f"{source}: {err}") from None
    if not isinstance(state_dict, dict):
        raise ValueError(f"{source}: expected a dict of tensors, got {type(state_dict).__name__}")
    own = encoder.state_dict()
    report = LoadReport(source=source)
    new_state: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        name = strip_key(key, ("module.",))
        if name not in own:
            report.unused.append(key)
            continue
        if tuple(value.shape) != tuple(own[name].shape):
            raise ValueError(f"{source}: shape of {key} is {tuple(value.shape)}, encoder expects "
                             f"{tuple(own[name].shape)} (width {encoder.width})")
        new_state[name] = value
        report.loaded.append(name)
    report.missing = [k for k in own if k not in new_state]
    encoder.load_state_dict(new_state, strict=False)
    logger.info("ImageNet init of the visual encoder: %s", report.summary())
    return report


def torchvision_imagenet_state_dict() -> dict[str, Tensor]:
    """torchvision's ``IMAGENET1K_V1`` resnet18 weights (downloads them: needs internet)."""
    from torchvision.models import ResNet18_Weights, resnet18

    return resnet18(weights=ResNet18_Weights.IMAGENET1K_V1).state_dict()
