"""avssl.distributed and the gathered EquiAV losses on a real 2-process gloo group.

Each rank embeds its half of a batch with a shared linear "encoder", computes a loss over
its local queries against gathered keys, backpropagates, and the parameter gradients are
averaged over ranks (what DDP does). The result is compared with one process computing the
same loss on the concatenated batch. No golden files.
"""
from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from avssl import distributed as D
from avssl.methods.equiav.losses import info_nce, nt_xent

WORLD, N_LOCAL, DIM_IN, DIM = 2, 4, 6, 5
TAU = 0.1
CASES = [("info_nce", "with_grad"), ("info_nce", "no_grad"), ("nt_xent", "with_grad")]
LOSSES = {"info_nce": info_nce, "nt_xent": nt_xent}


def _setup() -> tuple[torch.nn.Linear, torch.nn.Linear, torch.Tensor, torch.Tensor]:
    """Identical encoders and the full batch (WORLD * N_LOCAL rows) on every process."""
    torch.manual_seed(0)
    enc_a, enc_v = torch.nn.Linear(DIM_IN, DIM), torch.nn.Linear(DIM_IN, DIM)
    g = torch.Generator().manual_seed(1)
    xa = torch.randn(WORLD * N_LOCAL, DIM_IN, generator=g)
    xv = xa + 0.5 * torch.randn(WORLD * N_LOCAL, DIM_IN, generator=g)
    return enc_a, enc_v, xa, xv


def _grads(*mods: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for m in mods for p in m.parameters()])


def _worker(rank: int, init_file: str, out_file: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                         world_size=WORLD)
    try:
        assert D.is_distributed() and D.rank() == rank and D.world_size() == WORLD
        enc_a, enc_v, xa, xv = _setup()
        sl = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
        gathered = D.all_gather_no_grad(xa[sl])
        assert torch.equal(gathered, xa)
        results = {}
        for name, mode in CASES:
            enc_a.zero_grad()
            enc_v.zero_grad()
            loss, acc = LOSSES[name](enc_a(xa[sl]), enc_v(xv[sl]), TAU, gather=mode)
            loss.backward()
            grads = _grads(enc_a, enc_v)
            torch.distributed.all_reduce(grads)  # DDP: average of per-rank gradients
            results[(name, mode)] = (D.all_reduce_mean(loss), D.all_reduce_mean(acc), grads / WORLD)
        if rank == 0:
            torch.save(results, out_file)
    finally:
        torch.distributed.destroy_process_group()


def _no_grad_reference(enc_a, enc_v, xa, xv) -> torch.Tensor:
    """DDP-averaged gradient when other ranks' keys are constants (info_nce, 'no_grad')."""
    enc_a.zero_grad()
    enc_v.zero_grad()
    za, zv = F.normalize(enc_a(xa), dim=-1), F.normalize(enc_v(xv), dim=-1)
    total = 0.0
    for r in range(WORLD):
        sl = slice(r * N_LOCAL, (r + 1) * N_LOCAL)
        own = torch.zeros(len(xa), 1, dtype=torch.bool)
        own[sl] = True
        ka, kv = torch.where(own, za, za.detach()), torch.where(own, zv, zv.detach())
        labels = torch.arange(r * N_LOCAL, (r + 1) * N_LOCAL)
        total = total + (F.cross_entropy(za[sl] @ kv.t() / TAU, labels)
                         + F.cross_entropy(zv[sl] @ ka.t() / TAU, labels)) / 2
    (total / WORLD).backward()
    return _grads(enc_a, enc_v)


@pytest.mark.distributed
def test_gathered_losses_match_single_process(tmp_path, monkeypatch):
    out_file = str(tmp_path / "result.pt")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(str(tmp_path / "init"), out_file), nprocs=WORLD, join=True)
    results = torch.load(out_file)

    enc_a, enc_v, xa, xv = _setup()
    for name, mode in CASES:
        enc_a.zero_grad()
        enc_v.zero_grad()
        ref_loss, ref_acc = LOSSES[name](enc_a(xa), enc_v(xv), TAU, gather="none")
        ref_loss.backward()
        ref_grads = _grads(enc_a, enc_v)
        loss, acc, grads = results[(name, mode)]
        assert torch.allclose(loss, ref_loss.detach(), atol=1e-6), (name, mode)
        assert torch.allclose(acc, ref_acc), (name, mode)
        if mode == "with_grad":
            # exact: DDP-averaged gradient == single process on the concatenated batch
            assert torch.allclose(grads, ref_grads, atol=1e-6), (name, mode)
        else:
            # keys from other ranks carry no gradient: a different (documented) gradient
            assert not torch.allclose(grads, ref_grads, atol=1e-4)
            assert torch.allclose(grads, _no_grad_reference(enc_a, enc_v, xa, xv), atol=1e-6)


def test_single_process_helpers_are_identity():
    x = torch.randn(3, 2, requires_grad=True)
    assert not D.is_distributed()
    assert D.rank() == 0 and D.world_size() == 1 and D.is_main_process()
    assert D.all_gather_no_grad(x) is x
    assert D.all_gather_with_grad(x) is x
    assert D.all_reduce_mean(x) is x
