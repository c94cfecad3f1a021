"""EquiAV (Kim et al., ICML 2024): audio-visual contrastive learning with equivariant embeddings.

``model`` (pre-training network, config, presets), ``pipeline`` (its data set, batched
transform, training module, inference), ``losses`` (InfoNCE / NT-Xent, gathered over ranks),
``finetune`` + ``finetune_pipeline`` (the classification fine-tuning method ``equiav_ft``),
``convert`` (the authors' checkpoints). The public names are re-exported here; :data:`SPEC`
and :data:`FINETUNE_SPEC` are the two methods' rows in :mod:`avssl.registry`.
"""
from avssl.methods.base import MethodSpec, Pipeline
from avssl.methods.equiav import finetune_pipeline as ft
from avssl.methods.equiav.convert import (
    convert_official_finetune,
    convert_official_pretrain,
    load_official_finetune,
    load_official_pretrain,
    official_pretrain_sizes,
)
from avssl.methods.equiav.finetune import EquiAVFinetune, EquiAVFinetuneConfig
from avssl.methods.equiav.model import (
    EquiAV,
    EquiAVConfig,
    equiav_tiny,
    equiav_tiny_config,
    equiav_vit_b16,
    equiav_vit_b16_config,
)
from avssl.methods.equiav.pipeline import (
    EquiAVBatchTransform,
    EquiAVTrainModule,
    equiav_dataset,
    equiav_infer,
)

__all__ = ["EquiAV", "EquiAVConfig", "EquiAVFinetune", "EquiAVFinetuneConfig", "EquiAVBatchTransform",
           "EquiAVTrainModule", "equiav_dataset", "equiav_infer", "equiav_tiny", "equiav_tiny_config",
           "equiav_vit_b16", "equiav_vit_b16_config", "convert_official_pretrain", "load_official_pretrain",
           "official_pretrain_sizes", "convert_official_finetune", "load_official_finetune", "SPEC", "FINETUNE_SPEC"]

PAPER = "Kim et al., EquiAV, ICML 2024 (arXiv 2403.09502)"

SPEC = MethodSpec(
    name="equiav", config=EquiAVConfig, model=EquiAV,
    pipeline=Pipeline(equiav_dataset, EquiAVBatchTransform.from_config, equiav_infer,
                      train_module=lambda model, cfg: EquiAVTrainModule(model)),
    title="EquiAV", paper=PAPER, demo_preset="synthetic/equiav")

FINETUNE_SPEC = MethodSpec(
    name="equiav_ft", config=EquiAVFinetuneConfig, model=EquiAVFinetune,
    pipeline=Pipeline(ft.equiav_ft_dataset, ft.EquiAVFinetuneTransform.from_config,
                      train_module=ft.finetune_train_module, evaluate=ft.finetune_evaluate,
                      param_groups=ft.finetune_param_groups, sample_weights=ft.finetune_sample_weights),
    title="EquiAV fine-tuning", paper=PAPER + ": fine-tuning classification", validate=ft.check_config)
