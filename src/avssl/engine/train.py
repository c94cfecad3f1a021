"""The training loop, the same for every method: ``fit(cfg)``.

One step, top to bottom::

    batch  = next(loader)                                  # uint8 frames, waveforms (CPU)
    gen    = step_generator(seed, epoch, step)             # every random draw of the step
    inputs = batch_transform(batch, gen, train=True, shard=(rank, world))  # on-device preparation
    losses = net(inputs, generator=gen)                    # net = DDP(pipe.train_module(model)): loss dict
    losses["loss"].backward(); clip; optimizer.step(); scheduler.step()

The method is looked up once (:func:`avssl.registry.build_method`,
:func:`avssl.registry.pipeline_for`); the loop never asks which one it runs. The
pipeline's optional hooks give the optimiser's parameter groups, per-clip sampling weights, a
whole-set evaluation (else localisation + retrieval from ``pipe.infer``) and an end-of-epoch step.

Under torchrun (DDP) ``train.batch_size`` is per process; rank ``r`` trains on slice ``r`` of
each global batch and the transform draws the global batch's augmentation then keeps its rows,
so a method whose loss gathers across ranks (EquiAV) trains as one process on the
concatenated batch (tested with 2 gloo processes). Logged losses are the mean over ranks; the
val set is split across ranks and the outputs gathered, so metrics cover the whole set.

Reproducibility: the model is initialised from ``seed``; the data order of epoch ``e`` is a
permutation drawn from ``(seed, e)`` (under torchrun each rank takes its slice of every global
batch: :class:`EpochSampler`) and each step's augmentation from ``(seed, epoch, step)``, so ``resume`` from ``last.pt`` continues
exactly (tested: 2 epochs == 1 epoch + resume + 1 epoch, bit for bit, on CPU).

Outputs (rank 0 only) in ``train.out_dir``: ``config.yaml`` (resolved), ``metrics.jsonl`` (one
JSON object per logged step and per epoch), TensorBoard scalars, ``last.pt`` after every
``checkpoint_every`` epochs and ``best.pt`` when the val metric ``select_on`` improves
(never chosen on the test split). Checkpoints are written atomically with the model,
optimiser, scheduler, AMP scaler, epoch, step, RNG states and the resolved config.

User errors are checked before the first epoch: ``select_on`` must be a val metric of the
method (:func:`selectable_metrics`), a CUDA device must exist, a resumed checkpoint must be of
the same method. On resume, ``metrics.jsonl`` is cut back (atomically) to the records at or
before the checkpoint's step, so steps logged after it by a killed run appear once; ``.*.tmp``
files left in the run folder by a killed atomic write are removed.

Long file: the loop with its resume, checkpoint, metric-log and DDP plumbing; its parts (the
sampler, the optimiser and schedule, the metric writer) are small units tested one by one.
"""
from __future__ import annotations

import errno
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler

from avssl import distributed as dist_utils
from avssl.atomic import atomic_write_text, remove_stale_tmp, with_filename
from avssl.checkpoint import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    strip_prefixes,
)
from avssl.config import ConfigError, save_config, to_dict
from avssl.data.controls import AudioControlDataset, parse_audio_control
from avssl.data.manifest import read_manifest
from avssl.data.shard_index import expand_shards
from avssl.data.shards import ShardStream
from avssl.engine.evaluate import (
    load_annotations,
    localisation_scores,
    retrieval_scores,
    run_inference,
)
from avssl.precision import amp_settings
from avssl.registry import build_method, pipeline_for
from avssl.seeding import mix
from avssl.train_config import CONFIG_SCHEMA, OptimConfig, TrainConfig

logger = logging.getLogger(__name__)

__all__ = ["fit", "resolve_device", "build_optimizer", "lr_factor", "EpochSampler", "step_generator",
           "selectable_metrics", "check_select_on"]

def step_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, epoch, step)``: every random draw of one step."""
    return torch.Generator().manual_seed(mix(seed, epoch, step))


class EpochSampler(Sampler[int]):
    """This rank's indices of epoch ``e``: a permutation of ``range(n)`` from ``(seed, e)`` (or, with
    ``weights``, ``n`` draws with replacement in proportion to them), cut into global batches of
    ``world * batch_size``; rank ``r`` takes the contiguous slice ``r * batch_size : (r + 1) *
    batch_size`` of each. So the ranks' batches of one step, concatenated in rank order, are the
    one-process batch of ``world * batch_size`` (what the DDP equivalence rests on); with one
    process it is the plain shuffled epoch. The last partial global batch is dropped
    (``drop_last``) or split evenly, topped up from the start of the epoch's order.

    With ``draw_keys`` it yields ``(index, draw)``: ``draw`` a 63-bit number from ``(seed, epoch,
    place in the epoch's global order)``, which a data set uses for per-sample random choices
    (EquiAV's random training frame), the same on any number of ranks and after a resume.
    """

    def __init__(self, n: int, seed: int, batch_size: int = 1, rank: int = 0, world: int = 1,
                 drop_last: bool = False, weights: torch.Tensor | None = None, draw_keys: bool = False) -> None:
        if n < 1:
            raise ValueError("EpochSampler needs at least one clip")
        if weights is not None and (weights.shape != (n,) or bool((weights < 0).any()) or float(weights.sum()) <= 0):
            raise ValueError(f"sampling weights must be (n={n},) non-negative with a positive sum")
        self.n, self.seed, self.epoch = n, seed, 0
        self.batch_size, self.rank, self.world, self.drop_last = batch_size, rank, world, drop_last
        self.weights = None if weights is None else weights.double()
        self.draw_keys = draw_keys
        glob = batch_size * world
        if drop_last:
            self.per_rank = (n // glob) * batch_size
        else:
            full, rest = divmod(n, glob)
            self.per_rank = full * batch_size + -(-rest // world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(mix(self.seed, self.epoch, 0x5A))
        if self.weights is None:
            return torch.randperm(self.n, generator=g)
        return torch.multinomial(self.weights, self.n, replacement=True, generator=g)

    def __iter__(self) -> Iterator[int] | Iterator[tuple[int, int]]:
        order = self._order()
        b, glob = self.batch_size, self.batch_size * self.world
        full = (self.n // glob) * glob

        def mine_of(x: torch.Tensor) -> torch.Tensor:
            out = x[:full].view(-1, self.world, b)[:, self.rank].reshape(-1)
            if not self.drop_last and full < self.n:
                per = -(-(self.n - full) // self.world)
                rest = torch.cat([x[full:], x[: per * self.world - (self.n - full)]])
                out = torch.cat([out, rest.view(self.world, per)[self.rank]])
            return out

        mine = mine_of(order).tolist()
        if not self.draw_keys:
            return iter(mine)
        places = mine_of(torch.arange(self.n)).tolist()  # each entry's place in the global order
        return iter(zip(mine, [mix(self.seed, self.epoch, p, 0xF4) for p in places], strict=True))

    def __len__(self) -> int:
        return self.per_rank


def resolve_device(spec: str) -> torch.device:
    """"auto" -> ``cuda:LOCAL_RANK`` when CUDA is available, else CPU; anything else as given.

    Raises :class:`avssl.config.ConfigError` for a malformed spec or a CUDA device on a machine
    (or torch build) without CUDA, or an index beyond the visible GPUs.
    """
    if spec == "auto":
        return torch.device(f"cuda:{dist_utils.local_rank()}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"device {spec!r} is not a device (auto, cpu, cuda, cuda:1, ...): {e}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!r} requested but CUDA is not available on this machine "
                              "(set train.device=cpu / --device cpu, or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA "
                              "device(s) are visible")
    return device


# The val metrics each kind of evaluation produces (what ``train.select_on`` may name). The default
# evaluation (``pipe.infer``): the localisation scorer's summary (with annotations) and recall@K
# ``<direction>_<R1|R5|R10|MR>`` of :func:`avssl.engine.evaluate.retrieval_scores`.
LOCALISATION_METRICS = ("ciou_at_0.5", "auc", "mean_ciou", "adaptive_ciou_at_0.5", "adaptive_auc",
                        "adaptive_mean_ciou", "pointing_accuracy")
RETRIEVAL_METRICS = tuple(f"{d}_{k}" for d in ("a2v_instance", "v2a_instance", "a2a_class", "a2v_class", "v2a_class")
                          for k in ("R1", "R5", "R10"))
# pipelines with their own ``evaluate``: by method name
EVALUATE_METRICS = {"equiav_ft": ("mAP", "mAUC", "d_prime", "accuracy")}


def selectable_metrics(method: str, pipe=None, controls: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """The val metric names ``train.select_on`` may take for ``method`` (None: not known statically,
    a pipeline with its own evaluation that is not listed in :data:`EVALUATE_METRICS`). With the
    val audio ``controls`` (``train.val_audio_control``) also each control's metrics, their drops,
    ``<control>_map_correlation`` and ``<control>_peak_moved``."""
    pipe = pipeline_for(method) if pipe is None else pipe
    base = LOCALISATION_METRICS + RETRIEVAL_METRICS if pipe.evaluate is None else EVALUATE_METRICS.get(method)
    if base is None:
        return None
    extra = []
    for c in controls:
        extra += [f"{c}_{m}" for m in base]
        if pipe.evaluate is None:
            extra += [f"{c}_drop_{m}" for m in base] + [f"{c}_map_correlation", f"{c}_peak_moved"]
    return base + tuple(extra)


def check_select_on(cfg: TrainConfig, pipe=None) -> None:
    """Raise :class:`avssl.config.ConfigError` when ``train.select_on`` is not a val metric of the method."""
    names = selectable_metrics(cfg.method, pipe, parse_audio_control(cfg.train.val_audio_control))
    if names is not None and cfg.train.select_on not in names:
        raise ConfigError(f"train.select_on={cfg.train.select_on!r} is not a val metric of method "
                          f"{cfg.method!r}; choose one of: {', '.join(names)}")


def _truncate_metrics(path: Path, step: int) -> int:
    """Keep only the records of ``metrics.jsonl`` at or before ``step`` (what the checkpoint being
    resumed had seen), rewritten atomically; returns the number of records dropped."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the kill
            dropped += 1
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] > step:
            dropped += 1
            continue
        kept.append(line)
    if dropped:
        atomic_write_text(path, "".join(x + "\n" for x in kept))
        logger.info("%s: dropped %d record(s) logged after step %d (the checkpoint resumed)", path, dropped, step)
    return dropped


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam with coupled L2 weight decay (the original) or AdamW (decoupled).

    ``params``: parameters, or groups ``{"params": [...], "lr_scale": x}`` whose lr is ``cfg.lr * x``
    (the schedule then multiplies every group by the same factor).
    """
    cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    params = list(params)
    if params and isinstance(params[0], dict):
        params = [{**{k: v for k, v in g.items() if k != "lr_scale"}, "lr": cfg.lr * float(g.get("lr_scale", 1.0))}
                  for g in params]
    extra = {"fused": True} if cfg.fused else {}
    return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, **extra)


def lr_factor(step: int, steps_per_epoch: int, epochs: int, cfg: OptimConfig) -> float:
    """Multiplier of ``cfg.lr`` at iteration ``step``: linear warm-up, then multistep or cosine."""
    epoch_f = step / max(1, steps_per_epoch)
    if cfg.warmup_epochs > 0 and epoch_f < cfg.warmup_epochs:
        if cfg.warmup_start_lr is not None:  # start_lr at step 0, linearly to lr at the warm-up's end
            start = cfg.warmup_start_lr / cfg.lr
            return start + (1.0 - start) * epoch_f / cfg.warmup_epochs
        return (epoch_f + 1.0 / max(1, steps_per_epoch)) / cfg.warmup_epochs
    if cfg.schedule == "multistep":
        return cfg.gamma ** sum(1 for m in cfg.milestones if int(epoch_f) >= m)
    span = max(1e-9, epochs - cfg.warmup_epochs)
    t = min(1.0, (epoch_f - cfg.warmup_epochs) / span)
    floor = cfg.min_lr / cfg.lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def _records(path: str | None, split: str | None):
    return read_manifest(path, split=split) if path else []


class _Writer:
    """metrics.jsonl + TensorBoard on rank 0; no-ops elsewhere."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled, self.tb = enabled, None
        self.path = run_dir / "metrics.jsonl"
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(run_dir / "tb"))

    def log(self, record: dict, step: int) -> None:
        if not self.enabled:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise with_filename(e, self.path) from e
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "epoch"):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def training_forward(net, inputs, generator, step: int, device: torch.device, amp_dtype, use_amp: bool) -> dict:
    """The loss dict of one training step's forward (under autocast when ``use_amp``). Under DDP the
    forward is a collective (it broadcasts rank 0's buffers, e.g. BatchNorm statistics): it is
    guarded, so a stalled rank is named (:func:`avssl.distributed.guard`) instead of gloo's timeout
    escaping as a traceback."""
    with dist_utils.guard(f"training step {step} (forward: DDP's buffer broadcast)"), \
            torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
        return net(inputs, generator=generator)


def _mean_over_ranks(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """Scalar tensors -> floats averaged over ranks, in one collective (and one device sync)."""
    keys = list(values)
    stacked = dist_utils.all_reduce_mean(torch.stack([values[k].float().reshape(()) for k in keys]))
    return dict(zip(keys, stacked.tolist(), strict=True))


def _val_metrics(out, cfg: TrainConfig, boxes) -> dict:
    metrics: dict = {}
    if boxes is not None:
        summary = localisation_scores(out.heatmaps, boxes, cfg.data.annotation_format)
        metrics.update({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    metrics.update({f"{p}_{k}": v for p, d in retrieval_scores(out).items() for k, v in d.items()})
    return metrics


def _validate(model, loader, transform, pipe, cfg: TrainConfig, device, boxes, controls=None) -> dict:
    """Val metrics over the whole val set, the same on every rank (each rank runs its shard).

    ``controls``: {audio control: its loader} (``train.val_audio_control``): each control's
    metrics as ``<control>_<metric>``, with ``<control>_drop_<metric>`` (own - control),
    ``<control>_map_correlation`` and ``<control>_peak_moved`` (:func:`avssl.eval.controls.audio_dependence`)."""
    from avssl.eval.controls import audio_dependence

    if pipe.evaluate is not None:
        metrics = pipe.evaluate(model, loader, transform, device, cfg)
        for name, c_loader in (controls or {}).items():
            c = pipe.evaluate(model, c_loader, transform, device, cfg)
            metrics.update({f"{name}_{k}": v for k, v in c.items()})
        return metrics

    def gathered(ld):
        return dist_utils.gather_inference(run_inference(model, ld, transform, pipe.infer, device)
                                           if len(ld.dataset) else None)

    out = gathered(loader)
    metrics = _val_metrics(out, cfg, boxes)
    for name, c_loader in (controls or {}).items():
        c_out = gathered(c_loader)
        c = _val_metrics(c_out, cfg, boxes)
        dep = audio_dependence(out.heatmaps, c_out.heatmaps, metrics, c)
        metrics.update({f"{name}_{k}": v for k, v in c.items()})
        metrics.update({f"{name}_drop_{k}": v for k, v in dep["drop"].items()})
        metrics.update({f"{name}_map_correlation": dep["map_correlation"], f"{name}_peak_moved": dep["peak_moved"]})
    return metrics


def _shard_stream(cfg: TrainConfig, pipe, rank: int, world: int) -> ShardStream:
    """``data.train_shards`` as this process's :class:`ShardStream` (the method's sample maker)."""
    d = cfg.data
    index = expand_shards(d.train_shards)
    # the class list the pipeline would make from the kept clips' records, from their label sets
    quiet = replace(cfg, data=replace(d, cache_in_memory=False, on_error="raise"))  # builds only
    classes = pipe.dataset(index.label_records(d.train_split), quiet, train=True).classes
    maker = pipe.dataset([], cfg, train=True, classes=classes)
    if pipe.sample_weights is not None:  # None from an empty data set: no weights configured
        try:
            weighted = pipe.sample_weights(maker, cfg) is not None
        except ValueError:  # configured, for a manifest's clips
            weighted = True
        if weighted:
            raise ValueError(f"{cfg.method} is set to draw clips with per-clip weights (a weights file in "
                             "manifest order), which a shard stream cannot: train from data.train_manifest")
    return ShardStream(index, maker, pipe.collate, cfg.train.batch_size, seed=cfg.train.seed, rank=rank,
                       world=world, groups=d.shard_groups, workers=d.num_workers, shuffle_buffer=d.shuffle_buffer,
                       resampled=d.shard_resampled, drop_last=cfg.train.drop_last,
                       random_frames=maker.random_frames > 0, split=d.train_split)


def fit(cfg: TrainConfig, resume: bool | str | os.PathLike = False) -> dict:
    """Train ``cfg.method`` as configured; returns a summary (final losses, best val score, paths).

    Args:
        resume: False (fresh run; refuses a run dir that already has ``last.pt``), True
            (continue from ``out_dir/last.pt``) or a checkpoint path.
    """
    device = resolve_device(cfg.train.device)
    pipe = pipeline_for(cfg.method)
    check_select_on(cfg, pipe)
    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    main = dist_utils.is_main_process()
    run_dir = Path(cfg.train.out_dir)
    if resume is False and (run_dir / "last.pt").exists():
        raise FileExistsError(f"{run_dir} already holds a run (last.pt); pass resume or choose another out_dir")
    ckpt = None
    if resume is not False:  # read (and check) the checkpoint before anything is written
        path = run_dir / "last.pt" if resume is True else Path(resume)
        ckpt = load_checkpoint(path, map_location=device)
        saved_method = (ckpt.get("config") or {}).get("method")
        if saved_method is not None and saved_method != cfg.method:
            raise CheckpointError(f"checkpoint {path}: a {saved_method!r} run cannot be resumed as method "
                                  f"{cfg.method!r} (wrong checkpoint or config?)")
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(run_dir)
        try:
            save_config(cfg, run_dir / "config.yaml")
        except OSError as e:
            raise with_filename(e, run_dir / "config.yaml") from e

    torch.manual_seed(cfg.train.seed)
    model = build_method(cfg.method, cfg.method_config).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    rank, world = dist_utils.rank(), dist_utils.world_size()
    if cfg.data.train_shards:
        train_ds = _shard_stream(cfg, pipe, rank, world)
    else:
        train_records = _records(cfg.data.train_manifest, cfg.data.train_split)
        if not train_records:
            raise ValueError("no training clips: set data.train_manifest (and data.train_split) or data.train_shards")
        train_ds = pipe.dataset(train_records, cfg, train=True)
    classes = train_ds.classes
    val_records = _records(cfg.data.val_manifest, cfg.data.val_split)
    val_ds = pipe.dataset(val_records, cfg, train=False, classes=classes) if val_records else None
    boxes = load_annotations(cfg.data.annotations, cfg.data.annotation_format) if cfg.data.annotations else None
    if val_ds is None or boxes is None:
        logger.warning("no val manifest or annotations: best.pt will not be selected (only last.pt)")

    if isinstance(train_ds, ShardStream):  # batches come whole from the stream's workers
        sampler = train_ds
        loader = DataLoader(train_ds, batch_size=None, num_workers=cfg.data.num_workers,
                            pin_memory=device.type == "cuda")  # fresh workers per epoch: they read its number
    else:
        weights = pipe.sample_weights(train_ds, cfg) if pipe.sample_weights is not None else None
        sampler = EpochSampler(len(train_ds), cfg.train.seed, cfg.train.batch_size, rank, world,
                               drop_last=cfg.train.drop_last, weights=weights,
                               draw_keys=getattr(train_ds, "random_frames", 0) > 0)
        loader = DataLoader(train_ds, batch_size=cfg.train.batch_size, sampler=sampler,
                            drop_last=cfg.train.drop_last, num_workers=cfg.data.num_workers,
                            collate_fn=pipe.collate, pin_memory=device.type == "cuda",
                            persistent_workers=cfg.data.num_workers > 0)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_ds)} training clips give no batch of {cfg.train.batch_size} x {world} "
                         "processes (drop_last)")
    transform = pipe.batch_transform(cfg, device)

    groups = pipe.param_groups(model, cfg) if pipe.param_groups is not None else model.parameters()
    optimizer = build_optimizer(groups, cfg.optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps_per_epoch, cfg.train.epochs, cfg.optim))
    use_amp, amp_dtype, use_scaler = amp_settings(cfg.train, device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

    start_epoch, step, best, history = 0, 0, {"value": None, "epoch": None}, []
    heard: set[int] = set()  # the sample rates of the training clips seen (rank 0's; saved as trained_audio)
    if ckpt is not None:
        try:
            model.load_state_dict(strip_prefixes(ckpt["model"]))
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
            start_epoch, step = int(ckpt["epoch"]), int(ckpt["step"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"checkpoint {path}: does not fit this run's model/optimiser "
                                  f"(another config?): {first}") from e
        best = ckpt.get("extra", {}).get("best", best)
        heard.update(int(r) for r in (ckpt.get("extra", {}).get("trained_audio") or {}).get("sample_rates", []))
        set_rng_state(ckpt["rng"])
        logger.info("resumed from %s at epoch %d, step %d", path, start_epoch, step)
        if main:  # records logged after the checkpoint (the run was killed) are logged again
            _truncate_metrics(run_dir / "metrics.jsonl", step)
        if pipe.on_epoch_end is not None and 0 < start_epoch < cfg.train.epochs:
            # rebuild the state the hook left for this epoch (Audmix's neighbour table) from the
            # restored weights, as the uninterrupted run did; the RNG is put back as it was saved
            saved = rng_state()
            pipe.on_epoch_end(model, train_ds, transform, cfg, start_epoch - 1, device)
            set_rng_state(saved)

    net = pipe.train_module(model, cfg)
    if dist_utils.is_distributed():
        with dist_utils.guard("DDP set-up (parameter broadcast)"):
            net = torch.nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.train.compile:
        net = torch.compile(net)
    writer = _Writer(run_dir, main, cfg.train.tensorboard)
    val_loader, val_controls = None, {}
    if val_ds is not None:  # each rank evaluates a contiguous shard; the results are gathered
        shard = dist_utils.shard_indices(len(val_ds))

        def val_loader_of(d):
            return DataLoader(torch.utils.data.Subset(d, shard), batch_size=cfg.train.eval_batch_size,
                              shuffle=False, num_workers=cfg.data.num_workers, collate_fn=pipe.collate)

        val_loader = val_loader_of(val_ds)
        val_controls = {name: val_loader_of(AudioControlDataset(val_ds, name))
                        for name in parse_audio_control(cfg.train.val_audio_control)}

    def checkpoint(path: Path, epoch: int) -> None:
        try:
            save_checkpoint(path, model=model.state_dict(), optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), epoch=epoch, step=step,
                            config=to_dict(cfg), config_schema=CONFIG_SCHEMA, rng=rng_state(),
                            extra={"best": best, "classes": classes,
                                   "trained_audio": {"sample_rates": sorted(heard), "seconds": cfg.data.seconds}})
        except OSError as e:  # e.g. ENOSPC: the previous checkpoint is intact (atomic write)
            if e.errno == errno.ENOSPC:
                logger.error("disk full while writing %s; the previous %s is intact", path, path.name)
            raise with_filename(e, path) from e

    last_loss = math.nan
    try:
        for epoch in range(start_epoch, cfg.train.epochs):
            sampler.set_epoch(epoch)
            net.train()
            sums: dict[str, torch.Tensor] = {}
            n_batches, t0, n_clips = 0, time.perf_counter(), 0
            bar = loader
            if main and cfg.train.progress:
                from tqdm import tqdm

                bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False)
            for batch in bar:
                gen = step_generator(cfg.train.seed, epoch, step)
                inputs = transform(batch, gen, train=True, shard=(rank, world))
                losses = training_forward(net, inputs, gen, step + 1, device, amp_dtype, use_amp)
                loss = losses["loss"]
                optimizer.zero_grad(set_to_none=True)
                # a rank stalled before here is named if the others time out
                with dist_utils.guard(f"training step {step + 1} (gradient all-reduce)"):
                    scaler.scale(loss).backward()
                if cfg.train.grad_clip is not None and (use_amp or not cfg.train.grad_clip_amp_only):
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                n_batches += 1
                n_clips += len(batch["id"])
                rate = batch["sample_rate"]
                heard.update(rate.unique().tolist() if isinstance(rate, torch.Tensor) else (int(rate),))
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + v.detach().float()
                if step % cfg.train.log_every == 0:  # the mean over ranks (= the global batch's loss)
                    rec = _mean_over_ranks({k: v.detach() for k, v in losses.items()})
                    if not math.isfinite(rec["loss"]):
                        raise FloatingPointError(f"non-finite loss {rec['loss']} at epoch {epoch}, step {step}")
                    rec.update(step=step, epoch=epoch, lr=scheduler.get_last_lr()[0])
                    writer.log({f"train/{k}" if k not in ("step", "epoch", "lr") else k: v for k, v in rec.items()},
                               step)
                    if bar is not loader:
                        bar.set_postfix(loss=f"{rec['loss']:.4f}")
            means = _mean_over_ranks({k: v / n_batches for k, v in sums.items()})
            last_loss = means["loss"]
            if not math.isfinite(last_loss):
                raise FloatingPointError(f"non-finite mean loss {last_loss} in epoch {epoch}")
            elapsed = time.perf_counter() - t0
            record = {"epoch": epoch + 1, "step": step, "time_s": elapsed, "clips_per_s": n_clips / elapsed,
                      **{f"train/{k}": v for k, v in means.items()}}
            if pipe.on_epoch_end is not None:
                extra = pipe.on_epoch_end(model, train_ds, transform, cfg, epoch, device) or {}
                record.update({f"train/{k}": v for k, v in extra.items()})
            if val_loader is not None and cfg.train.eval_every and (epoch + 1) % cfg.train.eval_every == 0:
                record.update({f"val/{k}": v for k, v in _validate(model, val_loader, transform, pipe, cfg,
                                                                   device, boxes, val_controls).items()})
                value = record.get(f"val/{cfg.train.select_on}")
                if value is not None and (best["value"] is None or value > best["value"]):
                    best = {"value": value, "epoch": epoch + 1, "metric": cfg.train.select_on}
                    if main:
                        checkpoint(run_dir / "best.pt", epoch + 1)
            history.append(record)
            writer.log(record, step)
            shown = ("train/loss", f"val/{cfg.train.select_on}", "val/ciou_at_0.5", "val/auc",
                     "val/adaptive_ciou_at_0.5", "val/pointing_accuracy")
            shown = tuple(dict.fromkeys(shown))  # the selection metric first, once
            logger.info("epoch %d/%d (%.1f s): %s (all metrics: %s)", epoch + 1, cfg.train.epochs, record["time_s"],
                        ", ".join(f"{k} {record[k]:.4f}" for k in shown if k in record),
                        run_dir / "metrics.jsonl")
            if main and ((epoch + 1) % cfg.train.checkpoint_every == 0 or epoch + 1 == cfg.train.epochs):
                checkpoint(run_dir / "last.pt", epoch + 1)
    finally:
        writer.close()
    return {"run_dir": str(run_dir), "epochs": cfg.train.epochs, "step": step, "final_loss": last_loss,
            "best": best, "history": history, "classes": classes}
