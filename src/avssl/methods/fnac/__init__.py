"""FNAC (Sun et al., CVPR 2023): learning audio-visual source localisation via false negative
aware contrastive learning.

``model`` (the network, its config, the two test scorings), ``pipeline`` (data set, batched
on-device transform with FNAC's spectrogram masks, inference, the warmup hook), ``losses`` (the
pure MIL contrastive and false-negative-aware terms), ``convert`` (the authors' checkpoints). The
networks are the EZ-VSL family's (:mod:`avssl.models.mil`). :data:`SPEC` is the method's row in
:mod:`avssl.registry`.
"""
from avssl.data.batch import collate_mixed_rates
from avssl.methods.base import MethodSpec, Pipeline
from avssl.methods.fnac import losses
from avssl.methods.fnac.convert import convert_official_state_dict, load_official
from avssl.methods.fnac.model import FNAC, SCORES, FNACConfig
from avssl.methods.fnac.pipeline import (
    FNACBatchTransform,
    fnac_dataset,
    fnac_infer,
    fnac_on_epoch_end,
)

__all__ = ["FNAC", "FNACConfig", "FNACBatchTransform", "SCORES", "convert_official_state_dict", "load_official",
           "fnac_dataset", "fnac_infer", "losses", "SPEC"]



SPEC = MethodSpec(
    name="fnac", config=FNACConfig, model=FNAC,
    pipeline=Pipeline(fnac_dataset, FNACBatchTransform.from_config, fnac_infer,
                      collate=collate_mixed_rates, on_epoch_end=fnac_on_epoch_end),
    title="FNAC", paper="Sun et al., Learning Audio-Visual Source Localization via False Negative Aware "
                        "Contrastive Learning, CVPR 2023 (arXiv 2303.11302)",
    preset="synthetic/fnac", demo=False,
    tiny=("fnac.width=8", "fnac.dim=16", "fnac.image_size=64", "data.seconds=1"))
