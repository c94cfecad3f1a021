"""EquiAV parameter vectors: layouts, distributions, identities, determinism, golden structure."""
from __future__ import annotations

import torch

from avssl.augment import params as P
from avssl.methods.equiav.model import ParamSampler  # noqa: F401  (the hook this module serves)

A, V = P.AudioSlot, P.VisualSlot


def test_layouts_are_consistent():
    assert P.AUDIO_LAYOUT.dim == 24 and len(P.AUDIO_LAYOUT.names()) == 24
    assert P.VISUAL_LAYOUT.dim == 18 and len(P.VISUAL_LAYOUT.names()) == 18
    assert P.VISUAL_LAYOUT_EXTENDED.dim == 21 and P.VISUAL_LAYOUT_EXTENDED.names()[-1] == "vflip"
    assert P.AUDIO_LAYOUT.order == slice(A.ORDER_0, A.ORDER_3 + 1)
    assert P.AUDIO_LAYOUT.jitter == slice(A.BRIGHTNESS, A.HUE + 1)
    assert P.VISUAL_LAYOUT.crop == slice(V.CROP_TOP, V.CROP_W + 1)
    assert P.VISUAL_LAYOUT.jitter == slice(V.BRIGHTNESS, V.HUE + 1)


def test_audio_distribution():
    g = torch.Generator().manual_seed(0)
    t = P.sample_audio_params(4000, g)
    assert t.shape == (4000, 24) and t.dtype == torch.float32
    spec = t[:, A.SPECAUG_ON] == 1
    assert abs(spec.float().mean() - 0.8) < 0.03
    on, off = t[spec], t[~spec]
    assert (off[:, 0:7] == 0).all() and (on[:, A.SHIFT_ON] == 1).all()
    tw = on[:, A.TIME_MASK_END] - on[:, A.TIME_MASK_START]
    fw = on[:, A.FREQ_MASK_END] - on[:, A.FREQ_MASK_START]
    assert tw.min() >= 0 and tw.max() <= 191 and fw.min() >= 0 and fw.max() <= 47
    assert on[:, A.TIME_MASK_END].max() <= 1024 and on[:, A.FREQ_MASK_END].max() <= 128
    assert abs(tw.mean() - 95.5) < 6 and abs(fw.mean() - 23.5) < 2
    shift = on[:, A.SHIFT] * 1024
    assert torch.equal(shift, shift.round()) and shift.min() >= -1024 and shift.max() <= 1023
    assert (t[:, A.CROP_ON] == 1).all()
    # original (swapped) encoding: top, h along time / 128; left, w along freq / 1024
    top, left = t[:, A.CROP_TOP] * 128, t[:, A.CROP_LEFT] * 1024
    h, w = t[:, A.CROP_H] * 128, t[:, A.CROP_W] * 1024
    assert (top + h <= 1024 + 1e-3).all() and (left + w <= 128 + 1e-3).all()
    assert h.max() > 128       # impossible with the un-swapped reading
    ratio = w / h
    assert ratio.min() > 0.09 and ratio.max() < 0.2
    jit = t[:, A.JITTER_ON] == 1
    assert abs(jit.float().mean() - 0.8) < 0.03
    assert (t[~jit][:, 13:17] == torch.tensor([0.0, 1, 2, 3])).all() and (t[~jit][:, 17:21] == 0).all()
    assert torch.equal(t[jit][:, 13:17].sort(1).values, torch.tensor([[0.0, 1, 2, 3]]).expand(int(jit.sum()), 4))
    vals = t[jit][:, 17:21]
    assert vals[:, :3].abs().max() <= 0.4 and vals[:, 3].abs().max() <= 0.1
    blur = t[:, A.BLUR_ON] == 1
    assert abs(blur.float().mean() - 0.5) < 0.03 and (t[~blur][:, A.SIGMA] == 0).all()
    assert t[blur][:, A.SIGMA].min() >= 0.1 and t[blur][:, A.SIGMA].max() <= 2.0
    assert abs(t[:, A.FLIP].mean() - 0.5) < 0.03


def test_audio_fixed_crop_encoding():
    t = P.sample_audio_params(500, torch.Generator().manual_seed(1), original_bugs=False)
    top, left = t[:, A.CROP_TOP] * 1024, t[:, A.CROP_LEFT] * 128
    h, w = t[:, A.CROP_H] * 1024, t[:, A.CROP_W] * 128
    assert (t[:, P.AUDIO_LAYOUT.crop] <= 1 + 1e-6).all()
    assert (top + h <= 1024 + 1e-3).all() and (left + w <= 128 + 1e-3).all()


def test_visual_distribution_and_extended():
    t = P.sample_visual_params(4000, torch.Generator().manual_seed(2), 60, 80)
    assert t.shape == (4000, 18)
    assert (t[:, V.CROP_ON] == 1).all()
    c = t[:, P.VISUAL_LAYOUT.crop]
    assert (c[:, 0] + c[:, 2] <= 1 + 1e-6).all() and (c[:, 1] + c[:, 3] <= 1 + 1e-6).all()
    r = (c[:, 3] * 80) / (c[:, 2] * 60)
    assert r.min() > 0.7 and r.max() < 1.4
    for slot, p in [(V.JITTER_ON, 0.8), (V.BLUR_ON, 0.5), (V.HFLIP, 0.5), (V.GRAY, 0.2)]:
        assert abs(t[:, slot].mean() - p) < 0.03, slot
    e = P.sample_visual_params(500, torch.Generator().manual_seed(2), 60, 80, extended=True, max_angle=20)
    assert e.shape == (500, 21)
    rot = e[:, V.ROTATE_ON] == 1
    assert (e[~rot][:, V.ANGLE] == 0).all() and e[:, V.ANGLE].abs().max() <= 20


def test_identity_vectors():
    ta, tv = P.identity_audio_params(3), P.identity_visual_params(3)
    expected_a = torch.zeros(24)
    expected_a[13:17] = torch.tensor([0.0, 1, 2, 3])
    expected_v = torch.zeros(18)
    expected_v[6:10] = torch.tensor([0.0, 1, 2, 3])
    assert torch.equal(ta, expected_a.expand(3, 24)) and torch.equal(tv, expected_v.expand(3, 18))
    assert P.identity_visual_params(2, extended=True).shape == (2, 21)


def test_generator_reproduces_vectors():
    for fn in (P.sample_audio_params, P.sample_visual_params):
        a = fn(8, torch.Generator().manual_seed(3))
        b = fn(8, torch.Generator().manual_seed(3))
        c = fn(8, torch.Generator().manual_seed(4))
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_sample_param_lists_hook_signature():
    t_a, t_v = P.sample_param_lists(3, 16, torch.Generator().manual_seed(5), torch.device("cpu"))
    assert t_a.shape == (3, 16, 24) and t_v.shape == (3, 16, 18)
    again = P.sample_param_lists(3, 16, torch.Generator().manual_seed(5), "cpu")
    assert torch.equal(t_a, again[0]) and torch.equal(t_v, again[1])


def test_golden_vectors_have_the_same_structure(golden):
    """equiav_pt_tiny_io.npz: in_t_a, in_t_v, in_t_a_list, in_t_v_list (the authors' sample_t_a/_v)."""
    g = golden("equiav_pt_tiny_io.npz")
    ta = torch.from_numpy(g["in_t_a_list"]).reshape(-1, 24).float()
    tv = torch.from_numpy(g["in_t_v_list"]).reshape(-1, 18).float()
    on = ta[:, A.SPECAUG_ON] == 1
    assert (ta[~on][:, 0:7] == 0).all() and (ta[on][:, A.SHIFT_ON] == 1).all()
    tw = ta[on][:, A.TIME_MASK_END] - ta[on][:, A.TIME_MASK_START]
    assert tw.min() >= 0 and tw.max() < 192
    # swapped crop encoding: h/128 exceeds 1 in the authors' vectors
    assert ta[:, A.CROP_H].max() > 1 and ta[:, A.CROP_H].max() <= 8
    off = ta[:, A.JITTER_ON] == 0
    assert (ta[off][:, 13:17] == torch.tensor([0.0, 1, 2, 3])).all() and (ta[off][:, 17:21] == 0).all()
    assert (ta[ta[:, A.BLUR_ON] == 0][:, A.SIGMA] == 0).all()
    offv = tv[:, V.JITTER_ON] == 0
    assert (tv[offv][:, 6:10] == torch.tensor([0.0, 1, 2, 3])).all() and (tv[offv][:, 10:14] == 0).all()
    assert (tv[:, V.CROP_ON] == 1).all()
    # our sampler yields the same pattern of zeros/ones in the flag slots
    ours = P.sample_audio_params(64, torch.Generator().manual_seed(0))
    flags = [A.SPECAUG_ON, A.SHIFT_ON, A.CROP_ON, A.JITTER_ON, A.BLUR_ON, A.FLIP]
    assert set(ours[:, flags].unique().tolist()) == set(ta[:, flags].unique().tolist()) == {0.0, 1.0}


def test_usable_as_equiav_param_sampler():
    from avssl.methods.equiav.model import equiav_tiny

    torch.manual_seed(0)
    model = equiav_tiny().eval()
    model.param_sampler = P.sample_param_lists
    a, v = torch.randn(2, 3, 256, 128), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        z1 = model.embed(a, v, generator=torch.Generator().manual_seed(1))
        z2 = model.embed(a, v, generator=torch.Generator().manual_seed(1))
    assert z1[0].shape == (2, 32) and torch.equal(z1[0], z2[0]) and torch.equal(z1[1], z2[1])
