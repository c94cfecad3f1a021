"""SSL-TIE (Liu et al., ACM MM 2022): sound source localisation with transformation invariance and
equivariance.

``model`` (the network, its config and loss), ``pipeline`` (data set, batched transform,
inference), ``audmix`` (the optional Audmix hard negatives), ``losses`` (pure loss functions),
``convert`` (the authors' checkpoints). The public names are re-exported here, and
:data:`SPEC` is the method's row in :mod:`avssl.registry`.
"""
from avssl.data.batch import collate_mixed_rates
from avssl.methods.base import MethodSpec, Pipeline
from avssl.methods.ssltie.audmix import audmix_on_epoch_end
from avssl.methods.ssltie.convert import convert_official_state_dict, load_official
from avssl.methods.ssltie.model import SSLTIE, SSLTIEConfig
from avssl.methods.ssltie.pipeline import SSLTIEBatchTransform, ssltie_dataset, ssltie_infer

__all__ = ["SSLTIE", "SSLTIEConfig", "SSLTIEBatchTransform", "convert_official_state_dict", "load_official",
           "ssltie_dataset",
           "ssltie_infer", "SPEC"]


def _check_config(cfg) -> None:
    if cfg.ssltie.audmix and cfg.data.train_shards:
        raise ValueError("ssltie.audmix mixes in each clip's nearest neighbours, read by index, which a shard "
                         "stream cannot: train from data.train_manifest, or set ssltie.audmix=false")


SPEC = MethodSpec(
    name="ssltie", config=SSLTIEConfig, model=SSLTIE,
    # clips of several native rates batch together; evaluation runs one sub-batch per rate
    # (avssl.data.batch.split_by_rate) and training refuses a mixed batch (batch_rate)
    pipeline=Pipeline(ssltie_dataset, SSLTIEBatchTransform.from_config, ssltie_infer,
                      collate=collate_mixed_rates, on_epoch_end=audmix_on_epoch_end),
    title="SSL-TIE", paper="Liu et al., SSL-TIE, ACM MM 2022 (arXiv 2206.12772)", preset="synthetic/ssltie", demo=True,
    tiny=("ssltie.width=8", "ssltie.image_size=64", "ssltie.heatmap_size=4", "data.seconds=1"),
    validate=_check_config)
