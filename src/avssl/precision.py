"""Mixed precision settings shared by the training loop and the methods' evaluation (a leaf module).

``train.amp`` turns autocast on (CUDA only); ``train.amp_dtype`` picks float16 (with a
GradScaler, as the originals' AMP) or bfloat16 (no scaler: bf16 has float32's exponent range).
"""
from __future__ import annotations

import torch

__all__ = ["AMP_DTYPES", "amp_settings"]

#: ``train.amp_dtype`` values -> torch dtypes.
AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def amp_settings(loop, device: torch.device) -> tuple[bool, torch.dtype, bool]:
    """``(autocast on, its dtype, GradScaler on)`` for a :class:`~avssl.train_config.LoopConfig`
    ``loop`` on ``device``: autocast only on CUDA, the scaler only with float16."""
    use = bool(getattr(loop, "amp", False)) and torch.device(device).type == "cuda"
    dtype = AMP_DTYPES[getattr(loop, "amp_dtype", "float16")]
    return use, dtype, use and dtype == torch.float16
