"""One way to derive a seed from several integer keys (leaf module).

:func:`mix` folds ``(seed, epoch, step, ...)`` into a 63-bit seed: the training loop's per-step
generators and epoch orders (:mod:`avssl.engine.train`) and the shard streams' shard orders and
shuffle buffers (:mod:`avssl.data.shards`) all draw from it, so a run's randomness is a function
of its keys alone (what exact resume and the DDP equivalence rest on).
"""
from __future__ import annotations

__all__ = ["mix"]

_MIX = 0x9E3779B97F4A7C15


def mix(*keys: int) -> int:
    """A 63-bit seed from integer ``keys`` (order matters)."""
    h = 0
    for k in keys:
        h = (h * 6364136223846793005 + int(k) + _MIX) % (1 << 63)
    return h
