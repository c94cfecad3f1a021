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


def test_a_checkpoint_holding_every_methods_section_still_loads(tmp_path):
    """Before a saved config held only its method's section, it held all of them (data, optim and
    train too): such files (e.g. written by 3a45568) still rebuild the model and the run config."""
    from avssl.config import from_dict, to_dict
    from avssl.registry import METHODS
    from avssl.train_config import DataConfig, LoopConfig, OptimConfig, TrainConfig

    options = {"width": 8, "image_size": 64, "heatmap_size": 4}
    model = build_method("ssltie", options)
    config = {"method": "ssltie", **{name: to_dict(spec.config()) for name, spec in METHODS.items()},
              "data": to_dict(DataConfig()), "optim": to_dict(OptimConfig()), "train": to_dict(LoopConfig())}
    config["ssltie"].update(options)
    path = save_checkpoint(tmp_path / "old.pt", model=model.state_dict(), config=config)
    reloaded, ckpt = load_method(path)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in reloaded.state_dict().items())
    cfg = from_dict(TrainConfig, ckpt["config"])
    assert cfg.method == "ssltie" and cfg.ssltie.width == 8
    assert sorted(to_dict(cfg)) == ["data", "method", "optim", "ssltie", "train"]  # saved again: one section
