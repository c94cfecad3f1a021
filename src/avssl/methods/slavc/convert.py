"""The authors' SLAVC checkpoints (their train.py saves ``{"model": state_dict}``) -> :class:`SLAVC`.

The format is the EZ-VSL family's (:func:`avssl.models.mil.convert_mil_checkpoint`) with SLAVC's
key prefixes: ``imgnet.`` -> ``visual.``, ``audnet.`` -> ``audio.``, ``momentum_imgnet.`` ->
``momentum_visual.``, ``momentum_audnet.`` -> ``momentum_audio.``; the heads (``img_proj1/2``,
``aud_proj1/2`` and their ``momentum_`` copies) keep their names. The momentum networks' BN
buffers load as saved. Unused ``fc`` heads are reported as dropped; every shape is checked.
"""
from __future__ import annotations

from avssl.methods.slavc.model import SLAVC, SLAVCConfig
from avssl.models.mil import official_converters

__all__ = ["convert_official_state_dict", "load_official", "RENAMES"]

_HEADS = ("img_proj1.", "img_proj2.", "aud_proj1.", "aud_proj2.")
RENAMES = (("imgnet.", "visual."), ("audnet.", "audio."), ("momentum_imgnet.", "momentum_visual."),
           ("momentum_audnet.", "momentum_audio."), *((h, h) for h in _HEADS),
           *((f"momentum_{h}", f"momentum_{h}") for h in _HEADS))
_UNUSED = ("imgnet.fc.", "audnet.fc.", "momentum_imgnet.fc.", "momentum_audnet.fc.")

convert_official_state_dict, load_official = official_converters(
    SLAVC, SLAVCConfig, "SLAVC", renames=RENAMES, unused=_UNUSED, dim_key="img_proj1.weight")
