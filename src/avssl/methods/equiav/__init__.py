"""EquiAV (Kim et al., ICML 2024): audio-visual contrastive learning with equivariant embeddings.

``model`` (pre-training network, config, presets), ``pipeline`` (its data set, batched
transform, training module, inference), ``losses`` (InfoNCE / NT-Xent, gathered over ranks),
``finetune`` + ``finetune_pipeline`` (the classification fine-tuning method ``equiav_ft``),
``convert`` (the authors' checkpoints). The public names are re-exported here; :data:`SPEC`
and :data:`FINETUNE_SPEC` are the two methods' rows in :mod:`avssl.registry`.
"""
from avssl.data.datasets import collate_mixed_rates
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
                      train_module=lambda model, cfg: EquiAVTrainModule(model), collate=collate_mixed_rates),
    title="EquiAV", paper=PAPER, preset="synthetic/equiav", demo=True,
    tiny=("equiav.embed_dim=32", "equiav.num_heads=4", "equiav.depth=1", "equiav.img_size=32", "data.load_size=32",
          "equiav.audio_length=64", "equiav.num_mel_bins=32", "equiav.num_centroid=2", "equiav.aug_emb_dim=16",
          "equiav.cross_attn_heads=2", "equiav.cross_attn_head_dim=8", "equiav.proj_hidden_dim=32",
          "equiav.inter_out_dim=16", "equiav.intra_out_dim=16", "data.seconds=1"))

FINETUNE_SPEC = MethodSpec(
    name="equiav_ft", config=EquiAVFinetuneConfig, model=EquiAVFinetune,
    pipeline=Pipeline(ft.equiav_ft_dataset, ft.EquiAVFinetuneTransform.from_config,
                      train_module=ft.finetune_train_module, evaluate=ft.finetune_evaluate,
                      param_groups=ft.finetune_param_groups, sample_weights=ft.finetune_sample_weights,
                      collate=collate_mixed_rates),
    title="EquiAV fine-tuning", paper=PAPER + ": fine-tuning classification", preset="synthetic/equiav_ft",
    tiny=("equiav_ft.backbone.embed_dim=32", "equiav_ft.backbone.depth=1", "equiav_ft.backbone.img_size=32",
          "equiav_ft.backbone.audio_length=64", "equiav_ft.backbone.num_mel_bins=32", "equiav_ft.ft.proj_out_dim=16",
          "equiav_ft.ft.num_classes=3", "equiav_ft.class_list=null", "data.load_size=32", "data.seconds=1"),
    validate=ft.check_config)
