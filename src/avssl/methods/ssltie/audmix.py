"""Audmix: SSL-TIE's nearest-audio waveform mixing (docs/methods.md §1.4, an option of the SSL-TIE pipeline).

After every training epoch each training clip gets its nearest audio neighbour: cosine
similarity of the audio embeddings (:meth:`SSLTIE.encode_audio`, eval mode, original
waveforms) against a random queue of ``audmix_queue`` clips (4,000 in the paper), itself
excluded. In the next epoch, with probability ``p = 0.1 + 0.01 k`` per sample, its waveform
becomes ``(1 - a) x + a x_nn`` with ``a = 0.01 k``, where ``k`` is the number of epochs of
mixing so far, counting the current one (``k = epoch + 1`` for the table computed after
0-based epoch ``epoch``: the first mixing epoch has ``k = 1``).

Where things live, and why:

* :func:`audmix_on_epoch_end` is the :class:`avssl.methods.base.Pipeline` hook. It returns
  ``{}`` at once when ``cfg.ssltie.audmix`` is off. Otherwise it stores an :class:`AudmixState`
  (neighbour table, ``k``, clip id -> index, the training data set) on the *batch transform*
  (``transform.audmix``). The transform runs in the training process, so the table never has
  to reach the DataLoader workers (which may be persistent, with their own copy of the data
  set: mutating the data set there would not be seen).
* :func:`mix_waves` runs inside :class:`avssl.methods.ssltie.pipeline.SSLTIEBatchTransform`, on the
  whole batch: the per-sample Bernoulli draw comes from the step generator, the neighbours'
  waveforms are read from the training data set by index (free with ``cache_in_memory``, one
  decode per mixed sample otherwise) and the convex combination is one batched operation.
* Under DDP every rank computes the table from the same clips and the same queue (seeded by
  ``cfg.train.seed`` and the epoch); because BatchNorm running statistics can differ slightly
  between ranks, rank 0's table is then broadcast so that every rank holds the same one.

Resuming a run rebuilds the table of the first resumed epoch from the restored weights (the
engine calls the hook once for the epoch before it), so a resumed run mixes as the uninterrupted
one does (tested bit-exact in ``tests/methods/test_audmix.py``).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from avssl import distributed as dist_utils
from avssl.methods.base import run_batches

logger = logging.getLogger(__name__)

__all__ = ["AudmixState", "mix_schedule", "nearest_neighbours", "draw_queue", "embed_audio",
           "mix_waves", "audmix_on_epoch_end"]


@dataclass
class AudmixState:
    """The neighbour table of one epoch.

    neighbour: (N,) long, the training-set index of each clip's nearest audio.
    similarity: (N,) float, its cosine similarity.
    k: epochs of mixing so far, counting the epoch that uses this table.
    index: clip id -> training-set index.
    dataset: the training data set (``dataset[i]["wave"]`` is clip ``i``'s waveform).
    """

    neighbour: Tensor
    similarity: Tensor
    k: int
    index: dict[str, int]
    dataset: object
    p0: float = 0.1
    p_step: float = 0.01
    alpha_step: float = 0.01

    @property
    def probability(self) -> float:
        return mix_schedule(self.k, self.p0, self.p_step, self.alpha_step)[0]

    @property
    def alpha(self) -> float:
        return mix_schedule(self.k, self.p0, self.p_step, self.alpha_step)[1]


def mix_schedule(k: int, p0: float = 0.1, p_step: float = 0.01, alpha_step: float = 0.01
                 ) -> tuple[float, float]:
    """``(probability, alpha)`` of the ``k``-th mixing epoch: ``(min(1, p0 + p_step k), alpha_step k)``."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return min(1.0, p0 + p_step * k), alpha_step * k


def draw_queue(n: int, size: int, seed: int, epoch: int) -> Tensor:
    """(min(size, n),) long: a random subset of ``range(n)``, seeded by ``(seed, epoch)``, sorted."""
    if n < 2:
        raise ValueError(f"Audmix needs at least 2 training clips, got {n}")
    gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch) * 7_919 + 0xA0D) % (1 << 63))
    return torch.randperm(n, generator=gen)[:max(2, min(size, n))].sort().values


def nearest_neighbours(emb: Tensor, queue: Tensor, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Nearest queue member of every row by cosine similarity, the row itself excluded.

    Args:
        emb: (N, C) embeddings (normalised here).
        queue: (Q,) long indices into ``emb`` (Q >= 2, distinct), the candidates.
        chunk: rows per similarity block (memory ``chunk x Q``).
    Returns:
        ``(neighbour (N,) long, similarity (N,) float32)``.
    """
    if queue.numel() < 2:
        raise ValueError(f"the queue needs at least 2 clips, got {queue.numel()}")
    e = torch.nn.functional.normalize(emb.float(), dim=1)
    keys = e[queue].T.contiguous()  # (C, Q)
    nbr, sim = torch.empty(len(e), dtype=torch.long), torch.empty(len(e))
    for s in range(0, len(e), chunk):
        rows = torch.arange(s, min(s + chunk, len(e)), device=e.device)
        block = e[rows] @ keys  # (r, Q)
        block.masked_fill_(rows[:, None] == queue.to(e.device)[None, :], float("-inf"))
        best, arg = block.max(dim=1)
        nbr[s:s + len(rows)], sim[s:s + len(rows)] = queue.to(e.device)[arg].cpu(), best.cpu()
    return nbr, sim


@torch.no_grad()
def embed_audio(model: nn.Module, dataset, cfg, device: torch.device | str,
                batch_size: int | None = None) -> Tensor:
    """(N, C) audio embeddings of every training clip (eval mode, no augmentation), on the CPU.

    Cached data sets are read in this process; others through a DataLoader with
    ``cfg.data.num_workers`` workers. The model's train/eval mode is restored.
    """
    from torch.utils.data import DataLoader

    from avssl.data.audio import ssltie_spectrogram
    from avssl.data.datasets import collate

    bs = batch_size or cfg.train.eval_batch_size
    workers = 0 if cfg.data.cache_in_memory else cfg.data.num_workers
    loader = DataLoader(dataset, batch_size=bs, shuffle=False, num_workers=workers, collate_fn=collate)
    def step(batch):
        spec = ssltie_spectrogram(batch["wave"].to(device), int(batch["sample_rate"]), cfg.data.seconds)
        return {"audio": model.encode_audio(spec)}

    rows = run_batches(model, loader, step)
    if not rows:
        raise ValueError("Audmix: the training set yielded no clips")
    return rows["audio"]


def mix_waves(wave: Tensor, ids: Sequence[str], state: AudmixState,
              generator: torch.Generator | None = None) -> Tensor:
    """Mix each clip with its neighbour with probability ``state.probability``.

    Args:
        wave: (B, N) waveforms of the batch (any device).
        ids: the B clip ids (``batch["id"]``).
    Returns:
        (B, N): rows drawn for mixing are ``(1 - a) x + a x_nn``, others unchanged (a new tensor
        when any row mixes; ``wave`` itself otherwise).
    """
    p, a = state.probability, state.alpha
    draw = torch.rand(len(ids), generator=generator, device=generator.device if generator else "cpu")
    rows = torch.nonzero(draw.cpu() < p).flatten()
    if rows.numel() == 0 or a == 0.0:
        return wave
    try:
        nbr = [int(state.neighbour[state.index[ids[int(r)]]]) for r in rows]
    except KeyError as err:
        raise KeyError(f"Audmix: clip {err.args[0]!r} is not in the training set of the neighbour table") from None
    others = torch.stack([state.dataset[j]["wave"] for j in nbr]).to(wave.device, wave.dtype)
    if others.shape[1:] != wave.shape[1:]:
        raise ValueError(f"Audmix: neighbour waveforms {tuple(others.shape[1:])} do not match the batch's "
                         f"{tuple(wave.shape[1:])}")
    out = wave.clone()
    rows = rows.to(wave.device)
    out[rows] = (1.0 - a) * wave[rows] + a * others
    return out


def audmix_on_epoch_end(model: nn.Module, dataset, transform, cfg, epoch: int,
                        device: torch.device | str) -> dict[str, float]:
    """Pipeline hook: rebuild the neighbour table for the next epoch.

    A no-op returning ``{}`` when ``cfg.ssltie.audmix`` is off and after the last epoch.

    Stores the :class:`AudmixState` as ``transform.audmix``. Returns the logged values
    ``audmix_nn_cos`` (mean neighbour cosine), ``audmix_k``, ``audmix_p``, ``audmix_alpha``.
    """
    opts = cfg.ssltie
    if not opts.audmix or epoch + 1 >= cfg.train.epochs:  # off, or no next epoch to mix in
        return {}
    emb = embed_audio(model, dataset, cfg, device)
    queue = draw_queue(len(emb), opts.audmix_queue, cfg.train.seed, epoch)
    nbr, sim = nearest_neighbours(emb.to(device), queue.to(device))
    nbr, sim = dist_utils.broadcast_from_main(nbr), dist_utils.broadcast_from_main(sim)
    state = AudmixState(neighbour=nbr, similarity=sim, k=epoch + 1,
                        index={r.id: i for i, r in enumerate(dataset.records)}, dataset=dataset,
                        p0=opts.audmix_p0, p_step=opts.audmix_p_step, alpha_step=opts.audmix_alpha_step)
    transform.audmix = state
    logger.info("audmix: neighbour table for epoch %d (k=%d, p=%.2f, alpha=%.2f, queue %d, mean cos %.3f)",
                epoch + 2, state.k, state.probability, state.alpha, len(queue), float(sim.mean()))
    return {"audmix_nn_cos": float(sim.mean()), "audmix_k": float(state.k),
            "audmix_p": state.probability, "audmix_alpha": state.alpha}
