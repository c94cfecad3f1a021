"""Process-group helpers: rank, world size and all-gathers that are no-ops on one process.

Every function works whether or not ``torch.distributed`` is available or initialised: with
no process group (or a world of one) ``rank() == 0``, ``world_size() == 1`` and both gathers
return their input unchanged (same tensor object, so autograd is untouched).

Gathers concatenate along dim 0 in rank order. The two autograd-aware gathers need the same
shape on every rank (``drop_last`` in the sampler); :func:`all_gather_rows` (evaluation outputs)
takes a different number of rows per rank.

Gradient convention (``all_gather_with_grad``): each rank computes a loss that is a *mean*
over its local queries, and DDP averages parameter gradients over ranks. The backward pass
sums the incoming gradient of the gathered tensor over ranks and returns each rank its own
slice. Then the DDP-averaged gradient equals the gradient of one process computing the same
mean loss on the concatenated batch (tested in ``tests/engine/test_distributed.py``).
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

__all__ = [
    "shard_rows",
    "is_distributed",
    "rank",
    "world_size",
    "local_rank",
    "is_main_process",
    "all_gather_no_grad",
    "all_gather_with_grad",
    "all_reduce_mean",
    "shard_indices",
    "all_gather_object",
    "broadcast_from_main",
    "all_gather_rows",
    "gather_inference",
    "DistributedTimeoutError",
    "DEFAULT_TIMEOUT_S",
    "resolve_timeout_s",
    "init_process_group",
    "mark_progress",
    "stalled_ranks",
    "guard",
]

DEFAULT_TIMEOUT_S = 1800.0


class DistributedTimeoutError(RuntimeError):
    """A collective did not complete within the process-group timeout: a rank stalled or died."""


def resolve_timeout_s(configured: float | None = None) -> float:
    """The process-group timeout in seconds: env ``AVSSL_DIST_TIMEOUT`` if set, else
    ``configured`` (``train.dist_timeout_s``), else :data:`DEFAULT_TIMEOUT_S`."""
    env = os.environ.get("AVSSL_DIST_TIMEOUT")
    if env:
        try:
            value = float(env)
        except ValueError:
            raise ValueError(f"AVSSL_DIST_TIMEOUT must be a number of seconds, got {env!r}") from None
    else:
        value = DEFAULT_TIMEOUT_S if configured is None else float(configured)
    if not value > 0:
        raise ValueError(f"the process-group timeout must be > 0 seconds, got {value}")
    return value


_TIMEOUT_S: float | None = None
_PROGRESS = 0


def init_process_group(backend: str | None = None, timeout_s: float | None = None, **kwargs) -> None:
    """``torch.distributed.init_process_group`` with a timeout (:func:`resolve_timeout_s`), so that a
    rank that stalls makes the others fail with :class:`DistributedTimeoutError` instead of hanging."""
    global _TIMEOUT_S, _PROGRESS
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    _TIMEOUT_S = resolve_timeout_s(timeout_s)
    _PROGRESS = 0
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=_TIMEOUT_S), **kwargs)
    mark_progress()


def _store():
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        return _get_default_store()
    except Exception:  # noqa: BLE001 - no store: no progress bookkeeping
        return None


def mark_progress() -> None:
    """Record in the process group's store that this rank reached its next collective (so a rank
    whose collective times out can name the ranks that fell behind)."""
    global _PROGRESS
    if not is_distributed():
        return
    _PROGRESS += 1
    store = _store()
    if store is not None:
        with contextlib.suppress(Exception):
            store.set(f"avssl/progress/{rank()}", str(_PROGRESS))


def stalled_ranks() -> list[int]:
    """The ranks whose recorded progress is behind the furthest rank's (or never recorded)."""
    store = _store()
    if store is None or not is_distributed():
        return []
    progress: dict[int, int] = {}
    for r in range(world_size()):
        key = f"avssl/progress/{r}"
        try:
            progress[r] = int(store.get(key)) if store.check([key]) else -1
        except Exception:  # noqa: BLE001 - the store itself is gone (rank 0 died)
            return []
    furthest = max(progress.values())
    return [r for r, p in progress.items() if p < furthest]


def _is_timeout(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, RuntimeError) and ("timed out" in text or "timeout" in text or "deadline" in text)


@contextlib.contextmanager
def guard(what: str):
    """Around one collective: record this rank's progress (:func:`mark_progress`), then turn the
    collective's timeout (or a peer that died) into one clear :class:`DistributedTimeoutError`
    naming this rank and the ranks that stalled."""
    mark_progress()
    try:
        yield
    except DistributedTimeoutError:
        raise
    except RuntimeError as e:
        if not is_distributed():
            raise
        text = str(e).lower()
        peer_died = "connection reset" in text or "connection closed" in text or "broken pipe" in text
        if not (_is_timeout(e) or peer_died):
            raise
        late = stalled_ranks()
        who = (f"rank(s) {', '.join(map(str, late))} stalled or failed" if late
               else "another rank stalled or failed")
        limit = f" after {_TIMEOUT_S:g} s (train.dist_timeout_s / AVSSL_DIST_TIMEOUT)" if _TIMEOUT_S else ""
        cause = "a peer closed the connection" if peer_died and not _is_timeout(e) else f"timed out{limit}"
        raise DistributedTimeoutError(
            f"rank {rank()}/{world_size()}: {what} {cause}: {who}") from e


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Global rank of this process (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes in the default group (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """Rank on this node, from torchrun's ``LOCAL_RANK`` (0 when unset)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """True on rank 0 (the only rank that should write files)."""
    return rank() == 0


def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (n, ...) from every rank along dim 0 -> (world*n, ...), no autograd.

    At world size 1 returns ``x`` itself (gradients keep flowing, as in the original code).
    Otherwise the result is detached; callers that want their own slice to keep its gradient
    substitute it back (see :func:`avssl.methods.equiav.losses.info_nce`).
    """
    ws = world_size()
    if ws == 1:
        return x
    out = [torch.empty_like(x) for _ in range(ws)]
    with guard("all_gather"):
        dist.all_gather(out, x.detach().contiguous())
    return torch.cat(out, dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward all-reduces (sums) the gradient and keeps this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ws = dist.get_world_size()
        ctx.n = x.shape[0]
        ctx.rank = dist.get_rank()
        out = [torch.empty_like(x) for _ in range(ws)]
        with guard("all_gather"):
            dist.all_gather(out, x.contiguous())
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        with guard("all_reduce (backward of all_gather)"):
            dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.n
        return grad[start:start + ctx.n]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (n, ...) from every rank along dim 0 -> (world*n, ...), with autograd.

    The gradient reaching this rank's ``x`` is the sum over ranks of the gradients of their
    gathered copies at this rank's slice (see the module docstring for why that is exact
    under DDP averaging). At world size 1 returns ``x`` itself.
    """
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ranks (a new tensor, no autograd); ``x`` itself at world size 1."""
    ws = world_size()
    if ws == 1:
        return x
    y = x.detach().clone()
    with guard("all_reduce"):
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / ws


def shard_indices(n: int, rank_: int | None = None, world: int | None = None) -> list[int]:
    """This rank's contiguous share of ``range(n)`` for evaluation: no padding, no duplicates
    (shares differ by at most one item; a rank may get none when ``n < world``)."""
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return list(range(start, start + base + (1 if r < extra else 0)))


def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's (n_r, ...) tensor in rank order, the n_r may differ (padded to
    the largest for the collective, then trimmed); no autograd. ``x`` itself on one process."""
    ws = world_size()
    if ws == 1:
        return x
    n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(ws)]
    with guard("all_gather (row counts)"):
        dist.all_gather(sizes, n)
    counts = [int(s) for s in sizes]
    padded = torch.zeros((max(counts), *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[:x.shape[0]] = x
    out = [torch.empty_like(padded) for _ in range(ws)]
    with guard("all_gather (rows)"):
        dist.all_gather(out, padded.contiguous())
    return torch.cat([o[:c] for o, c in zip(out, counts, strict=True)])


def broadcast_from_main(t: torch.Tensor) -> torch.Tensor:
    """Rank 0's ``t`` on every rank (same shape and dtype everywhere; through the backend's
    device: CUDA for NCCL, CPU otherwise); ``t`` itself on one process."""
    if world_size() == 1:
        return t
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    buf = t.to(dev).contiguous()
    with guard("broadcast"):
        dist.broadcast(buf, src=0)
    return buf.to(t.device)


def all_gather_object(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (pickled; for evaluation results, not hot paths)."""
    if world_size() == 1:
        return [obj]
    out: list = [None] * world_size()
    with guard("all_gather_object"):
        dist.all_gather_object(out, obj)
    return out


def gather_inference(out):
    """Concatenate the ranks' :class:`avssl.engine.evaluate.InferenceOutput` shards in rank order
    (``None`` for a rank that had no clips); returns the local output on one process."""
    if world_size() == 1:
        if out is None:
            raise ValueError("no clips were evaluated")
        return out
    parts = [p for p in all_gather_object(out) if p is not None]
    if not parts:
        raise ValueError("no clips were evaluated on any rank")
    heat: dict = {}
    for p in parts:
        heat.update(p.heatmaps)
    rates = [p.sample_rates for p in parts]
    return type(parts[0])(heat, [i for p in parts for i in p.ids], torch.cat([p.labels for p in parts]),
                          torch.cat([p.audio for p in parts]), torch.cat([p.visual for p in parts]),
                          sample_rates=torch.cat(rates) if all(r is not None for r in rates) else None)


def shard_rows(x: torch.Tensor, shard: tuple[int, int]) -> torch.Tensor:
    """Rows ``rank * B : (rank + 1) * B`` of a tensor drawn for the global batch of ``world * B`` rows."""
    rank, world = shard
    if world == 1:
        return x
    if x.shape[0] % world:
        raise ValueError(f"{x.shape[0]} rows do not split over {world} processes")
    b = x.shape[0] // world
    return x[rank * b:(rank + 1) * b]
