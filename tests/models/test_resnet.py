"""SSL-TIE ResNet-18 encoders: shapes, strides, the init quirk, ImageNet init from a local file.

Golden parity of the encoders (``ssltie_avenet_io.npz``: ``eval_img_feat_normed``,
``eval_aud_feat_normed``) is in ``tests/methods/test_ssltie.py``, through the official converter.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from avssl.models.resnet import (
    audio_resnet18,
    init_weights,
    load_imagenet_visual,
    visual_resnet18,
)


def test_visual_layer4_stride_one_gives_14x14_at_224():
    net = visual_resnet18(width=8).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 64, 14, 14)
    assert net.layer4[0].conv1.stride == (1, 1)
    assert net.layer4[0].downsample[0].stride == (1, 1)


def test_audio_encoder_max_pools_to_vector():
    net = audio_resnet18(width=16).eval()
    x = torch.randn(2, 1, 64, 80)
    with torch.no_grad():
        out = net(x)
        trunk = super(type(net), net).forward(x)
    assert out.shape == (2, 128)
    assert trunk.shape == (2, 128, 4, 5)  # stride 16: layer4 stride 1, as the golden requires
    torch.testing.assert_close(out, trunk.amax(dim=(2, 3)))
    assert net.conv1.in_channels == 1 and net.conv1.kernel_size == (7, 7)


def test_ssltie_init_quirk_and_standard_init():
    torch.manual_seed(0)
    net = visual_resnet18(width=64)
    bn_w = torch.cat([m.weight.detach() for m in net.modules() if isinstance(m, nn.BatchNorm2d)])
    bn_b = torch.cat([m.bias.detach() for m in net.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(bn_w.mean().item() - 1.0) < 0.005
    assert 0.017 < bn_w.std().item() < 0.023
    assert torch.all(bn_b == 0)
    conv = net.layer3[0].conv2.weight  # fan_out = 256 * 3 * 3
    assert abs(conv.std().item() - (2.0 / (256 * 9)) ** 0.5) < 0.002
    init_weights(net, "torchvision")
    assert all(torch.all(m.weight == 1) for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    with pytest.raises(ValueError, match="init mode"):
        init_weights(net, "xavier")


def test_width_must_be_positive():
    with pytest.raises(ValueError):
        visual_resnet18(width=0)


def test_load_imagenet_visual_from_local_file(tmp_path):
    reference = resnet18(weights=None).state_dict()  # random stand-in for ImageNet weights
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": reference}, path)
    net = visual_resnet18(width=64)
    report = load_imagenet_visual(net, path)
    assert sorted(report.unused) == ["fc.bias", "fc.weight"]
    assert report.missing == []
    assert len(report.loaded) == len(net.state_dict())
    torch.testing.assert_close(net.layer4[1].conv2.weight, reference["layer4.1.conv2.weight"])
    torch.testing.assert_close(net.bn1.running_var, reference["bn1.running_var"])
    # a partial state dict: the rest is reported missing, not silently skipped
    partial = {k: v for k, v in reference.items() if not k.startswith("layer4.")}
    report = load_imagenet_visual(visual_resnet18(width=64), partial)
    assert report.missing and all(k.startswith("layer4.") for k in report.missing)


def test_load_imagenet_visual_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_imagenet_visual(visual_resnet18(width=8), tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth"):
        load_imagenet_visual(visual_resnet18(width=8), bad)
    with pytest.raises(ValueError, match="shape"):
        load_imagenet_visual(visual_resnet18(width=32), resnet18(weights=None).state_dict())
