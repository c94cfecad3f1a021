"""avssl.config: defaults <- YAML presets <- dotlist overrides, with key and type checks."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from avssl.config import ConfigError, from_dict, load_config, parse_dotlist, save_config, to_dict


@dataclass(frozen=True)
class Optim:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    name: Literal["adam", "adamw"] = "adam"


@dataclass(frozen=True)
class Cfg:
    seed: int = 0
    optim: Optim = field(default_factory=Optim)
    out: str | None = None
    tags: list[str] = field(default_factory=list)


def test_defaults_then_presets_then_overrides(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("seed: 3\noptim:\n  lr: 1e-3\n")
    b = tmp_path / "b.yaml"
    b.write_text("optim:\n  name: adamw\n")
    cfg = load_config(Cfg, [a, b], ["optim.lr=2e-4", "tags=[x, y]"])
    assert cfg == Cfg(seed=3, optim=Optim(lr=2e-4, name="adamw"), tags=["x", "y"])
    # a nested preset only overrides what it names
    assert cfg.optim.betas == (0.9, 0.999)


def test_yaml_float_without_dot_is_a_float(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lr: 1e-4\n")  # YAML 1.1 reads this as a string
    assert load_config(Cfg, [p]).optim.lr == pytest.approx(1e-4)


@pytest.mark.parametrize(
    "override, message",
    [
        (["optim.lrr=1"], "did you mean 'lr'"),
        (["seed=abc"], "seed: expected int"),
        (["optim.name=sgd"], "is not one of"),
        (["optim.betas=[1, 2, 3]"], "expected 2 values"),
        (["seed"], "key.sub=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Cfg, [], override)


def test_round_trip_through_yaml(tmp_path):
    cfg = Cfg(seed=5, optim=Optim(lr=0.5, betas=(0.1, 0.2)), out="x", tags=["a"])
    save_config(cfg, tmp_path / "cfg.yaml")
    assert load_config(Cfg, [tmp_path / "cfg.yaml"]) == cfg
    assert from_dict(Cfg, to_dict(cfg)) == cfg


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(Cfg, [tmp_path / "nope.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(Cfg, [bad])


def test_parse_dotlist_types():
    assert parse_dotlist(["a.b=true", "a.c=null", "d=1.5"]) == {"a": {"b": True, "c": None}, "d": 1.5}


def test_packaged_presets_resolve_by_name():
    from avssl.config import preset_path
    from avssl.train_config import TrainConfig

    assert preset_path("synthetic/ssltie").name == "ssltie.yaml"
    cfg = load_config(TrainConfig, ["synthetic/ssltie"])
    assert cfg.method == "ssltie" and cfg.ssltie.image_size % 32 == 0
    for name in ("ssltie/flickr10k", "ssltie/flickr144k", "ssltie/vggsound144k"):
        cfg = load_config(TrainConfig, [name])
        assert (cfg.train.batch_size, cfg.optim.lr, cfg.optim.weight_decay, cfg.train.epochs) == (32, 1e-4, 1e-4, 100)
    with pytest.raises(ConfigError, match="no packaged preset"):
        preset_path("nope/none")


def test_train_crop_is_validated_and_refused_where_nothing_is_cropped():
    from avssl.train_config import TrainConfig

    assert load_config(TrainConfig, [], ["data.train_crop=original"]).data.train_crop == "original"
    with pytest.raises(ValueError, match="train_crop must be one of"):
        load_config(TrainConfig, [], ["data.train_crop=centre"])
    with pytest.raises(ValueError, match="does not apply to equiav_ft"):
        load_config(TrainConfig, [], ["method=equiav_ft", "data.train_crop=original"])


def test_train_frame_is_validated():
    from avssl.train_config import TrainConfig

    cfg = load_config(TrainConfig, [], ["data.train_frame=random", "data.train_frame_count=4"])
    assert (cfg.data.train_frame, cfg.data.train_frame_count) == ("random", 4)
    with pytest.raises(ValueError, match="train_frame must be one of"):
        load_config(TrainConfig, [], ["data.train_frame=middle"])
    with pytest.raises(ValueError, match="train_frame_count must be >= 1"):
        load_config(TrainConfig, [], ["data.train_frame_count=0"])


def test_a_preset_on_a_base_holds_only_its_differences(tmp_path):
    from avssl.train_config import TrainConfig

    base, semireal = load_config(TrainConfig, ["synthetic/equiav"]), load_config(TrainConfig, ["semireal/equiav"])
    assert (semireal.train.epochs, semireal.train.val_audio_control) == (40, "swap")
    assert semireal.equiav == base.equiav and semireal.optim == base.optim and semireal.data == base.data
    base, semireal = load_config(TrainConfig, ["synthetic/ssltie"]), load_config(TrainConfig, ["semireal/ssltie"])
    assert (semireal.train.epochs, semireal.train.val_audio_control, semireal.train.select_on) == (
        150, "swap", "swap_drop_pointing_accuracy")
    assert semireal.ssltie == base.ssltie and semireal.optim == base.optim and semireal.data == base.data
    (tmp_path / "a.yaml").write_text(f"base: {tmp_path / 'b.yaml'}\ntrain:\n  epochs: 3\n")
    (tmp_path / "b.yaml").write_text(f"base: {tmp_path / 'a.yaml'}\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(TrainConfig, [tmp_path / "a.yaml"])
    (tmp_path / "c.yaml").write_text("base: [x, y]\n")
    with pytest.raises(ConfigError, match="base must name one preset"):
        load_config(TrainConfig, [tmp_path / "c.yaml"])
