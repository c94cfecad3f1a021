"""EZ-VSL (Mo & Morgado, ECCV 2022): localising visual sounds the easy way.

``model`` (the network, its config, the test-time maps with object-guided localisation),
``pipeline`` (data set, batched on-device transform, inference), ``losses`` (the pure
multiple-instance contrastive loss), ``convert`` (the authors' checkpoints). The public names
are re-exported here, and :data:`SPEC` is the method's row in :mod:`avssl.registry`.
"""
from avssl.data.batch import collate_mixed_rates
from avssl.methods.base import MethodSpec, Pipeline
from avssl.methods.ezvsl.convert import convert_official_state_dict, load_official
from avssl.methods.ezvsl.model import EZVSL, EZVSLConfig
from avssl.methods.ezvsl.pipeline import EZVSLBatchTransform, ezvsl_dataset, ezvsl_infer

__all__ = ["EZVSL", "EZVSLConfig", "EZVSLBatchTransform", "convert_official_state_dict", "load_official",
           "ezvsl_dataset", "ezvsl_infer", "SPEC"]



SPEC = MethodSpec(
    name="ezvsl", config=EZVSLConfig, model=EZVSL,
    pipeline=Pipeline(ezvsl_dataset, EZVSLBatchTransform.from_config, ezvsl_infer,
                      collate=collate_mixed_rates),  # evaluation: one sub-batch per sample rate
    title="EZ-VSL", paper="Mo & Morgado, Localizing Visual Sounds the Easy Way, ECCV 2022 (arXiv 2203.09324)",
    preset="synthetic/ezvsl", demo=False,
    tiny=("ezvsl.width=8", "ezvsl.dim=16", "ezvsl.image_size=64", "data.seconds=1"))
