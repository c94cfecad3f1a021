"""SLAVC (Mo & Morgado, NeurIPS 2022): a closer look at weakly-supervised audio-visual source
localisation.

``model`` (the network with its momentum encoders, its config, the test script's four variants),
``pipeline`` (data set, batched on-device transform, inference, the optimiser's parameters),
``losses`` (the pure two-head momentum-target loss), ``convert`` (the authors' checkpoints). The
networks are the EZ-VSL family's (:mod:`avssl.models.mil`). :data:`SPEC` is the method's row in
:mod:`avssl.registry`.
"""
from avssl.data.batch import collate_mixed_rates
from avssl.methods.base import MethodSpec, Pipeline
from avssl.methods.slavc import losses
from avssl.methods.slavc.convert import convert_official_state_dict, load_official
from avssl.methods.slavc.model import SLAVC, SLAVCConfig, confidence, momentum_update_
from avssl.methods.slavc.pipeline import (
    SLAVCBatchTransform,
    slavc_dataset,
    slavc_infer,
    slavc_param_groups,
)

__all__ = ["SLAVC", "SLAVCConfig", "SLAVCBatchTransform", "convert_official_state_dict", "load_official",
           "slavc_dataset", "slavc_infer", "confidence", "momentum_update_", "losses", "SPEC"]



SPEC = MethodSpec(
    name="slavc", config=SLAVCConfig, model=SLAVC,
    pipeline=Pipeline(slavc_dataset, SLAVCBatchTransform.from_config, slavc_infer,
                      collate=collate_mixed_rates, param_groups=slavc_param_groups),
    title="SLAVC", paper="Mo & Morgado, A Closer Look at Weakly-Supervised Audio-Visual Source Localization, "
                         "NeurIPS 2022 (arXiv 2209.09634)",
    preset="synthetic/slavc", demo=False,
    tiny=("slavc.width=8", "slavc.dim=16", "slavc.image_size=64", "data.seconds=1"))
