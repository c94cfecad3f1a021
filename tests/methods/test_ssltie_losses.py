"""Pure loss functions (SSL-TIE section): LVS tri-map logits, CE, equivariance MSE; golden parity."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avssl.methods.ssltie.losses import equivariance_consistency, lvs_loss, lvs_trimap_logits

TE_TAGS = ["scale1.0_hflip0", "scale1.0_hflip1", "scale0.5_hflip0", "scale0.5_hflip1"]


def _rel(ours: torch.Tensor, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref|."""
    return float(np.abs(ours.detach().numpy() - ref).max() / np.abs(ref).max())


def _maps(batch: int = 4, h: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(batch, 8, h, h, generator=g), dim=1)
    aud = F.normalize(torch.randn(batch, 8, generator=g) + img.mean((2, 3)) * 4, dim=1)
    A0 = torch.einsum("bchw,kc->bkhw", img, aud)
    return A0.diagonal(dim1=0, dim2=1).permute(2, 0, 1)[:, None], A0


def _reference_logits(A, A0, tri_map, hard_negatives, tau=0.03, eps_p=0.65, eps_n=0.4):
    """docs/methods.md §1.3 written out per sample, as a check of the vectorised version."""
    rows = []
    for i in range(A.shape[0]):
        a = A[i, 0]
        p = torch.sigmoid((a - eps_p) / tau)
        n = 1 - torch.sigmoid((a - (eps_n if tri_map else eps_p)) / tau)
        row = [(p * a).sum() / p.sum()]
        for j in range(A.shape[0]):
            pj = torch.sigmoid((A0[i, j] - eps_p) / tau)
            s = (pj * A0[i, j]).sum() / pj.sum()
            row.append(s * (-99.0 if i == j else 1.0))
        if hard_negatives:
            row.append((n * a).sum() / n.sum())
        rows.append(torch.stack(row))
    return torch.stack(rows) / 0.07


@pytest.mark.parametrize("tri_map", [True, False])
@pytest.mark.parametrize("hard_negatives", [True, False])
def test_lvs_switches_match_the_written_out_formula(tri_map, hard_negatives):
    A, A0 = _maps()
    out = lvs_trimap_logits(A, A0, tri_map=tri_map, hard_negatives=hard_negatives)
    assert out.logits.shape == (4, 4 + (2 if hard_negatives else 1))
    torch.testing.assert_close(out.logits, _reference_logits(A, A0, tri_map, hard_negatives))
    # the positive pair stays among the "negatives" at -99x the positive score
    torch.testing.assert_close(out.logits.diagonal(offset=1), -99 * out.logits[:, 0])
    if not tri_map:
        torch.testing.assert_close(out.neg, 1 - out.pos)


def test_tri_map_changes_only_the_hard_negative_column():
    A, A0 = _maps(seed=1)
    on, off = lvs_trimap_logits(A, A0, tri_map=True), lvs_trimap_logits(A, A0, tri_map=False)
    torch.testing.assert_close(on.logits[:, :-1], off.logits[:, :-1])
    assert not torch.allclose(on.logits[:, -1], off.logits[:, -1])
    torch.testing.assert_close(on.neg, 1 - torch.sigmoid((A - 0.4) / 0.03))


def test_lvs_rejects_mismatched_shapes():
    A, A0 = _maps()
    with pytest.raises(ValueError):
        lvs_trimap_logits(A, A0[:3])


def test_lvs_loss_is_cross_entropy_with_target_zero():
    logits = torch.randn(5, 7)
    torch.testing.assert_close(lvs_loss(logits), -torch.log_softmax(logits, 1)[:, 0].mean())


def test_equivariance_consistency_is_mse_and_flows_both_ways():
    a = torch.randn(3, 1, 7, 7, requires_grad=True)
    b = torch.randn(3, 1, 7, 7, requires_grad=True)
    loss = equivariance_consistency(a, b)
    torch.testing.assert_close(loss, ((a - b) ** 2).mean())
    loss.backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        equivariance_consistency(a, b[:, :, :6])


@pytest.mark.parametrize("case,tri_map,hard_negatives", [("eval_default", False, False),
                                                         ("eval_trimap_Neg", True, True)])
def test_golden_lvs_logits_from_features(golden, case, tri_map, hard_negatives):
    """ssltie_avenet_io.npz: eval_img_feat_normed, eval_aud_feat_normed -> <case>_{A, logits, Pos, Neg}."""
    io = golden("ssltie_avenet_io.npz")
    img, aud = torch.from_numpy(io["eval_img_feat_normed"]), torch.from_numpy(io["eval_aud_feat_normed"])
    A0 = torch.einsum("bchw,kc->bkhw", img, aud)
    A = A0.diagonal(dim1=0, dim2=1).permute(2, 0, 1)[:, None]
    out = lvs_trimap_logits(A, A0, tri_map=tri_map, hard_negatives=hard_negatives)
    assert _rel(A, io[f"{case}_A"]) < 1e-5
    assert _rel(out.logits, io[f"{case}_logits"]) < 1e-4
    assert _rel(out.pos, io[f"{case}_Pos"]) < 1e-4
    assert _rel(out.neg, io[f"{case}_Neg"]) < 1e-4


@pytest.mark.parametrize("tag", TE_TAGS)
def test_golden_te_loss_terms(golden, tag):
    """ssltie_tf_equivariance.npz: <tag>_{logits, logits_ts, heatmap_ts, ts_heatmap, loss_cl, loss_cl_ts, loss_ts, loss}."""
    eq = golden("ssltie_tf_equivariance.npz")
    t = {k: torch.from_numpy(eq[f"{tag}_{k}"]) for k in ("logits", "logits_ts", "heatmap_ts", "ts_heatmap")}
    cl, cl_ts = lvs_loss(t["logits"]), lvs_loss(t["logits_ts"])
    mse = equivariance_consistency(t["heatmap_ts"], t["ts_heatmap"])
    assert _rel(cl, eq[f"{tag}_loss_cl"]) < 1e-5
    assert _rel(cl_ts, eq[f"{tag}_loss_cl_ts"]) < 1e-5
    assert _rel(mse, eq[f"{tag}_loss_ts"]) < 1e-5
    assert _rel(0.5 * (cl + cl_ts) + mse, eq[f"{tag}_loss"]) < 1e-5


def test_excluding_the_own_pair_leaves_every_other_logit():
    g = torch.Generator().manual_seed(0)
    A0 = torch.rand(4, 4, 3, 3, generator=g) * 0.5 - 0.8  # centred embeddings: negative cosines
    A = torch.diagonal(A0, dim1=0, dim2=1).permute(2, 0, 1).unsqueeze(1)
    quirk = lvs_trimap_logits(A, A0).logits
    clean = lvs_trimap_logits(A, A0, exclude_own_pair=True).logits
    own = torch.eye(4, dtype=torch.bool)
    easy_q, easy_c = quirk[:, 1:5], clean[:, 1:5]
    assert torch.isneginf(easy_c[own]).all() and torch.equal(easy_c[~own], easy_q[~own])
    assert torch.equal(clean[:, [0, 5]], quirk[:, [0, 5]])
    neg = quirk[:, 0] < 0  # every s_pos < 0 here: a negative s_pos makes the quirk's "excluded" own pair the largest logit
    assert neg.any() and (easy_q[own][neg] > quirk[neg, 0]).all()
    assert torch.isfinite(lvs_loss(clean))
