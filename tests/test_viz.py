"""avssl.viz: overlays, boxes, contact sheets."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from avssl import viz


def test_upsample_half_pixel_bilinear():
    m = np.array([[0.0, 1.0]], np.float32)
    up = viz.upsample(m, 1, 4)  # centres at -0.25, 0.25, 0.75, 1.25 source pixels, edges clamped
    np.testing.assert_allclose(up, [[0.0, 0.25, 0.75, 1.0]])
    np.testing.assert_array_equal(viz.upsample(np.eye(3), 3, 3), np.eye(3))


def test_overlay_deterministic_in_range_and_peak_is_hot():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    heat = np.zeros((4, 4), np.float32)
    heat[1, 2] = 5.0
    a = viz.overlay(frame, heat, alpha=0.6)
    assert a.dtype == np.uint8 and a.shape == frame.shape
    np.testing.assert_array_equal(a, viz.overlay(frame, heat, alpha=0.6))
    # alpha 1: pure colormap; jet's top is dark red, its bottom dark blue
    pure = viz.overlay(frame, heat, alpha=1.0)
    peak = pure[18, 50]  # centre of cell (1, 2): y = 1.5 * 12, x = 2.5 * 20
    assert peak[0] > 100 and peak[2] < 50
    assert pure[0, 0, 2] > 100 and pure[0, 0, 0] < 50
    np.testing.assert_array_equal(viz.overlay(frame, heat, alpha=0.0), frame)
    const = viz.overlay(frame, np.ones((3, 3)), alpha=1.0)  # constant map: all the colormap's 0
    assert (const == const[0, 0]).all()
    with pytest.raises(ValueError):
        viz.overlay(frame.astype(np.float32), heat)
    with pytest.raises(ValueError, match="colormap"):
        viz.overlay(frame, heat, cmap="no-such-map")


def test_overlay_leaves_nan_cells_uncoloured():
    frame = np.full((40, 60, 3), 100, np.uint8)
    heat = np.full((4, 6), np.nan, np.float32)
    heat[:, 1:5] = np.arange(16, dtype=np.float32).reshape(4, 4)
    out = viz.overlay(frame, heat, alpha=0.5)
    np.testing.assert_array_equal(out[:, :10], frame[:, :10])  # column 0 cells: x < 10
    np.testing.assert_array_equal(out[:, 50:], frame[:, 50:])
    assert (out[:, 10:50] != 100).any(axis=-1).mean() > 0.9


def test_draw_boxes():
    img = np.zeros((20, 30, 3), np.uint8)
    out = viz.draw_boxes(img, [[0.0, 0.0, 0.5, 0.5]], colour=(255, 0, 0), width=1)
    assert img.sum() == 0  # a copy
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[5, 5]) == (0, 0, 0)
    assert tuple(out[int(0.5 * 19), 3]) == (255, 0, 0)


def test_contact_sheet_and_grid(tmp_path):
    frame = np.full((64, 96, 3), 128, np.uint8)
    heat = np.arange(12, dtype=np.float32).reshape(3, 4)
    items = [(frame, heat, "best: 0.91", [[0.1, 0.1, 0.6, 0.7]]), (frame, heat, "a very long title " * 5, None),
             (frame, None, "no map", None)]
    path = viz.contact_sheet(items, cols=2, path=tmp_path / "sub" / "sheet.png", tile=50)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (2 * (75 + 4) + 4, 2 * (50 + 16 + 4) + 4)
    grid = viz.grid_png(np.stack([frame] * 3), np.stack([heat] * 3), [0.5, 1.0, 1.5], tmp_path / "g.png", tile=32)
    with Image.open(grid) as im:
        assert im.size == (3 * (48 + 4) + 4, 32 + 16 + 8)
    with pytest.raises(ValueError):
        viz.grid_png(np.stack([frame] * 2), np.stack([heat] * 3), [0.5, 1.0, 1.5], tmp_path / "x.png")
