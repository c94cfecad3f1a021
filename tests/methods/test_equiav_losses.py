"""EquiAV losses (avssl.methods.equiav.losses) against golden B and basic properties."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from avssl.methods.equiav.losses import gather_keys, info_nce, nt_xent

FUNCS = {"ntxent": info_nce, "simclr": nt_xent}


@pytest.mark.parametrize("n", [4, 16])
@pytest.mark.parametrize("name", ["ntxent", "simclr"])
def test_golden_losses(golden, n, name):
    """equiav_losses.npz: every B{n}_tau{t}_{name}_{loss,acc} and B{n}_taulearn_{name}_loss."""
    g = golden("equiav_losses.npz")
    x1, x2 = torch.from_numpy(g[f"B{n}_x1"]), torch.from_numpy(g[f"B{n}_x2"])
    fn = FUNCS[name]
    for tau in ("0.07", "0.2", "1.0"):
        loss, acc = fn(x1, x2, float(tau))
        torch.testing.assert_close(loss, torch.tensor(g[f"B{n}_tau{tau}_{name}_loss"]), atol=1e-5, rtol=1e-5)
        assert acc.item() == g[f"B{n}_tau{tau}_{name}_acc"].item()
    # learnable temperature: a parameter initialised to 0.07 gives the same value, and a gradient
    tau = torch.nn.Parameter(torch.tensor(0.07))
    loss, _ = fn(x1, x2, tau)
    torch.testing.assert_close(loss.detach(), torch.tensor(g[f"B{n}_taulearn_{name}_loss"]), atol=1e-5, rtol=1e-5)
    loss.backward()
    assert tau.grad is not None and torch.isfinite(tau.grad)


def test_info_nce_formula_and_scale_invariance():
    torch.manual_seed(0)
    a, v = torch.randn(5, 8), torch.randn(5, 8)
    loss, acc = info_nce(3 * a, 0.5 * v, 0.2)  # inputs are normalised inside
    an, vn = F.normalize(a, dim=1), F.normalize(v, dim=1)
    logits = an @ vn.t() / 0.2
    ref = (F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.t(), torch.arange(5))) / 2
    torch.testing.assert_close(loss, ref)
    assert acc.item() == pytest.approx(100.0 * (logits.argmax(1) == torch.arange(5)).float().mean().item())


def test_nt_xent_masks_self_similarity():
    # q == k: the positive equals the (masked) self-similarity; with masking the loss is the
    # CE over [q.k_j, q.q_j (j != i)] and stays finite and close to log(2n - 1) for orthogonal rows.
    q = torch.eye(4, 8)
    loss, acc = nt_xent(q, q.clone(), 1.0)
    expected = -math.log(math.e / (math.e + 6))  # positive e^1; 3 + 3 negatives e^0; self masked
    assert abs(loss.item() - expected) < 1e-5
    assert acc.item() == 100.0


def test_gather_modes_are_identity_on_one_process():
    x = torch.randn(3, 4)
    for mode in ("none", "no_grad", "with_grad"):
        assert gather_keys(x, mode) is x
    a, v = torch.randn(6, 4), torch.randn(6, 4)
    for fn in (info_nce, nt_xent):
        l1, _ = fn(a, v, 0.07, gather="none")
        l2, _ = fn(a, v, 0.07, gather="with_grad")
        assert torch.equal(l1, l2)


def test_nt_xent_half_inputs_do_not_overflow():
    q, k = torch.randn(4, 8).half(), torch.randn(4, 8).half()
    loss, _ = nt_xent(q, k, 0.07)
    ref, _ = nt_xent(q.float(), k.float(), 0.07)
    assert torch.isfinite(loss) and abs(loss.item() - ref.item()) < 1e-2
