"""Bilinear upsampling == cv2.resize(INTER_LINEAR) bit for bit (the official evaluator uses cv2)."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from avssl.eval import upsample as U
from avssl.eval.localisation import upsample

cv2 = pytest.importorskip("cv2")

SHAPES = [(14, 14, 224), (7, 7, 224), (14, 14, 120), (10, 13, 224), (13, 10, 97), (2, 2, 224), (28, 16, 224)]


def _maps(h, w, n=120, seed=0):
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(n, h, w)).astype(np.float32)
    m[::4] = np.round(m[::4] * 2) / 2  # ties
    m[1::4] = rng.random((len(m[1::4]), h, w), dtype=np.float32)  # [0, 1) like cosine maps
    m[2::4] *= np.float32(1e-3)
    m[3::8] += np.float32(100.0)
    return m


@pytest.mark.parametrize("h, w, size", SHAPES)
def test_bilinear_bit_identical_to_cv2(h, w, size):
    if not cv2.ipp.useIPP():
        pytest.skip("this cv2 build does not use IPP (the default wheels and the golden data do)")
    maps = _maps(h, w, seed=h * 1000 + w * 10 + size)
    ref = np.stack([cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR) for m in maps])
    assert np.array_equal(upsample(maps, size), ref)


def test_opencv_generic_path_is_not_what_cv2_runs_by_default():
    """cv2 with IPP off (OpenCV's own float path, products rounded then added) differs."""
    if not cv2.ipp.useIPP():
        pytest.skip("no IPP")
    maps = _maps(14, 14, n=20)
    cv2.ipp.setUseIPP(False)
    try:
        generic = np.stack([cv2.resize(m, (224, 224), interpolation=cv2.INTER_LINEAR) for m in maps])
    finally:
        cv2.ipp.setUseIPP(True)
    assert not np.array_equal(upsample(maps), generic)


def test_fma32_correctly_rounded():
    rng = np.random.default_rng(1)
    d = rng.normal(size=20000).astype(np.float32)
    t = rng.random(20000, dtype=np.float32)
    a = rng.normal(size=20000).astype(np.float32) * np.float32(1e-4)
    # hard cases: a product that lands exactly half an ulp of the result away (double rounding)
    d[:4] = np.float32(1.0)
    t[:4] = np.float32(2.0 ** -24)
    a[:4] = np.float32(1.0) + np.float32(2.0 ** -23) * np.arange(4, dtype=np.float32)
    t[4:8] = np.float32(2.0 ** -24) + np.float32(2.0 ** -50)
    a[4:8] = np.float32(1.0)
    got = U._fma32(d, t, a)
    for i in [*range(8), *range(8, 20000, 97)]:
        exact = Fraction(float(d[i])) * Fraction(float(t[i])) + Fraction(float(a[i]))
        lo = np.float32(float(exact))
        cands = [np.nextafter(lo, np.float32(-np.inf)), lo, np.nextafter(lo, np.float32(np.inf))]
        best = min(cands, key=lambda c: (abs(Fraction(float(c)) - exact), int(np.array(c).view(np.int32)) & 1))
        assert got[i] == best, i
