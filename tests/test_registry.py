"""avssl.registry: a saved run reloads from its checkpoint alone, even when its init files are gone."""
from __future__ import annotations

import torch
import torchvision

from avssl.checkpoint import save_checkpoint
from avssl.registry import build_method, load_method


def test_load_method_never_rereads_initialisation_files(tmp_path):
    init = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), init)
    options = {"width": 64, "image_size": 64, "heatmap_size": 4, "imagenet_init": str(init)}
    model = build_method("ssltie", options)
    path = save_checkpoint(tmp_path / "run.pt", model=model.state_dict(), config={"method": "ssltie", "ssltie": options})
    init.unlink()
    reloaded, _ = load_method(path)
    for k, v in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[k], v), k
