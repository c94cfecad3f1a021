"""The authors' FNAC checkpoints (``imgnet.*``, ``audnet.*``, ``img_proj.*``, ``aud_proj.*``; their
train.py saves ``{"model": state_dict}``) -> :class:`FNAC`.

:func:`convert_official_state_dict` renames the parameters (``imgnet.`` -> ``visual.``,
``audnet.`` -> ``audio.``, the heads keep their names), reports what it loaded, dropped (keys
the original forward never uses: a ``fc`` head) and missed, and checks every shape. The format is
the EZ-VSL family's (:func:`avssl.models.mil.convert_mil_checkpoint`).
"""
from __future__ import annotations

from avssl.methods.fnac.model import FNAC, FNACConfig
from avssl.models.mil import official_converters

__all__ = ["convert_official_state_dict", "load_official"]

convert_official_state_dict, load_official = official_converters(FNAC, FNACConfig, "FNAC")
