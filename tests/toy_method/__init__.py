"""A third method, written the way a user would add one to avssl: this folder plus one registry
line. ``tests/test_third_method.py`` registers it (the line ``toy_method.SPEC,`` in
``avssl.registry.METHODS``, done at run time there), then runs the contract test and the
engine's ``fit`` on it unchanged.

Files: ``__init__.py`` (the registry row), ``model.py`` (config + nn.Module with ``forward``
returning the loss dict and ``infer`` returning heatmap / audio / visual), ``pipeline.py``
(data set + batched transform), ``toy.yaml`` (its preset: only overrides).

Not a method of the literature: a linear patch encoder and a spectrum encoder trained with a
symmetric InfoNCE, just enough to learn on the synthetic set.
"""
from pathlib import Path

from avssl.methods.base import MethodSpec, Pipeline
from toy_method.model import ToyAV, ToyConfig
from toy_method.pipeline import ToyTransform, toy_dataset

SPEC = MethodSpec(
    name="toy", config=ToyConfig, model=ToyAV,
    pipeline=Pipeline(toy_dataset, ToyTransform.from_config, lambda model, inputs: model.infer(**inputs)),
    title="Toy AV", paper="none (a test of the method contract)",
    preset=str(Path(__file__).with_name("toy.yaml")), tiny=("toy.dim=8",))
