"""The training configuration: frozen nested dataclasses read by :func:`avssl.config.load_config`.

    cfg = load_config(TrainConfig, ["configs/ssltie/flickr10k.yaml"], ["data.train_manifest=..."])

``method`` names an entry of :data:`avssl.registry.METHODS`; that method's options live under
the key of the same name (``ssltie:``), and a saved config holds only that section (configs
and checkpoints that hold every section, written before, still load). The defaults of
``data``, ``optim`` and ``train`` are SSL-TIE's released recipe (docs/methods.md §1.4): Adam,
lr 1e-4, coupled weight decay 1e-4, batch 32, 100 epochs, seed 4, MultiStepLR with milestones
300/700/900 (so the lr never decays within 100 epochs); every other method's packaged presets
set their own, so the generic defaults only matter to a config that names no preset.

Why two modules: :mod:`avssl.config` is the machinery (dataclass <-> YAML, dotlists, errors), a
leaf that every layer may use (method configs, the synthetic generator); this module is the
run config, which lists the registered methods and so sits above :mod:`avssl.registry`.
Merged, the machinery would import every method and the methods could not import it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass

from avssl.checkpoint import CONFIG_SCHEMA
from avssl.data.datasets import FRAME_RESIZE
from avssl.precision import AMP_DTYPES
from avssl.registry import METHODS

__all__ = ["DataConfig", "OptimConfig", "LoopConfig", "TrainConfig", "CONFIG_SCHEMA", "config_from_checkpoint",
           "checkpoint_config_dict", "trained_audio", "audio_rate_warning"]


#: Where training's random crop is drawn (:attr:`DataConfig.train_crop`).
TRAIN_CROP = ("load_size", "original")
TRAIN_FRAME = ("fixed", "random")


@dataclass(frozen=True)
class DataConfig:
    """Where the clips are and how one sample is read.

    *_manifest: avssl JSONL / CAV-MAE JSON manifests (one file may serve several splits);
        *_split keeps only the records of that split (records without a split are kept).
    annotations, annotation_format: boxes for scoring the val/test localisation
        ("vggss" JSON or a "flickr" folder of XML files); None disables val scoring.
    frame_time: seconds of the frame taken from a raw video (None: the record's
        ``annotation_time``, else the clip middle). frame_index: index among a pre-extracted
        record's frames (None: the middle one).
    sample_rate: None keeps each file's native rate (SSL-TIE); an int resamples.
    seconds: audio length after tiling/cutting; keep_seconds: keep only the first seconds of
        training audio before tiling (Flickr training: 4).
    load_size: side of the square uint8 frame the loader returns (None: the method's
        image_size); frames are resized (short side) then centre-cropped.
    frame_resize: how the loader resizes the ORIGINAL frame to ``load_size``: "pil_bicubic"
        (default: the authors' test transform, torchvision ``Resize(S, BICUBIC)`` on the PIL
        image + ``CenterCrop(S)``, bit-exact) or "torch_bilinear" (antialiased bilinear in
        torch, the earlier loader; SSL-TIE heatmaps then differ from the authors' by up to ~1%).
    train_crop: where training's random crop is drawn: "load_size" (default: on the loader's
        ``load_size`` square, batched on the device; crops cannot reach the sides the centre
        crop cut and upsample a ``load_size`` image) or "original" (as both authors' loaders:
        on each ORIGINAL frame at its full resolution, resampled as PIL's bilinear does; the
        loader then also returns the original frames, zero-padded to the batch's largest).
        Evaluation and the clean views always use the ``frame_resize`` square.
    train_frame: which frame a training clip gives: "fixed" (default, SSL-TIE's recipe: the
        ``frame_time`` / ``frame_index`` frame, as evaluation) or "random" (EquiAV's recipe,
        docs/methods.md §2.1: per step, uniformly one of the record's pre-extracted frames, or of
        ``train_frame_count`` evenly spaced times of a raw video; drawn from the run's seed, the
        epoch and the clip's place in it, so DDP and resume are exact).
    on_error: "raise" (a clip that fails to decode raises MediaError naming it) or "skip"
        (every clip is decoded once at construction; failures are logged, counted, dropped).
    train_shards: train from webdataset shards (``avssl prepare --format shards``) instead of
        ``train_manifest``: their ``shards.json`` index, or a brace pattern
        (``OUT/shards/shard-{000000..000099}.tar``; local paths or URLs) with the index beside
        them (it gives each shard's clip count, so epochs have a known length). Streamed by
        :class:`avssl.data.shards.ShardStream`: split over processes and loader workers,
        shuffled in a buffer of ``shuffle_buffer`` clips; ``shard_resampled`` draws shards with
        replacement (open_clip's resampled shards) instead of one permutation per epoch;
        ``shard_groups`` fixes the number of data streams (default: one per process), so a run on
        fewer processes reads the same global batches. Any ``*_manifest`` may also name a local
        ``shards.json``: its clips are then read by random access into the tars (validation,
        evaluation, small training sets), equal to the folder layout's samples.
    """

    train_manifest: str | None = None
    val_manifest: str | None = None
    test_manifest: str | None = None
    train_split: str | None = "train"
    val_split: str | None = "val"
    test_split: str | None = "test"
    annotations: str | None = None
    annotation_format: str = "vggss"
    frame_time: float | None = None
    frame_index: int | None = None
    sample_rate: int | None = None
    seconds: float = 10.0
    keep_seconds: float | None = None
    load_size: int | None = None
    frame_resize: str = "pil_bicubic"
    train_crop: str = "load_size"
    train_frame: str = "fixed"
    train_frame_count: int = 10
    num_workers: int = 4
    cache_in_memory: bool = False
    on_error: str = "raise"
    train_shards: str | None = None
    shuffle_buffer: int = 1000
    shard_resampled: bool = False
    shard_groups: int | None = None

    def __post_init__(self) -> None:
        if self.annotation_format not in ("vggss", "flickr"):
            raise ValueError(f"annotation_format must be 'vggss' or 'flickr', got {self.annotation_format!r}")
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        if self.frame_resize not in FRAME_RESIZE:
            raise ValueError(f"frame_resize must be one of {FRAME_RESIZE}, got {self.frame_resize!r}")
        if self.train_crop not in TRAIN_CROP:
            raise ValueError(f"train_crop must be one of {TRAIN_CROP}, got {self.train_crop!r}")
        if self.train_frame not in TRAIN_FRAME:
            raise ValueError(f"train_frame must be one of {TRAIN_FRAME}, got {self.train_frame!r}")
        if self.train_frame_count < 1:
            raise ValueError(f"train_frame_count must be >= 1, got {self.train_frame_count}")
        if self.seconds <= 0 or self.num_workers < 0:
            raise ValueError("seconds must be > 0 and num_workers >= 0")
        if self.shuffle_buffer < 1 or (self.shard_groups is not None and self.shard_groups < 1):
            raise ValueError("shuffle_buffer and shard_groups must be >= 1")

    def random_frames(self, train: bool) -> int:
        """The data set's ``random_frames``: ``train_frame_count`` for a training set with
        ``train_frame="random"``, else 0 (the fixed frame)."""
        return self.train_frame_count if train and self.train_frame == "random" else 0


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and lr schedule (stepped per iteration through one LambdaLR).

    name: "adam" (coupled L2 weight decay, as the original) or "adamw" (decoupled).
    schedule: "multistep" (lr * gamma^(milestones passed), milestones in epochs) or "cosine"
        (to min_lr over the run); warmup_epochs of linear warm-up precede either.
    warmup_start_lr: the lr of the first step, rising linearly to ``lr`` over the warm-up (EquiAV's
        released recipe: 2e-7, docs/methods.md §2.6). None: the warm-up starts at
        ``lr / (warmup steps)`` and reaches ``lr`` at its last step.
    fused: torch's fused Adam/AdamW kernel (one kernel over all parameters; CUDA or CPU). The
        update is the same up to float rounding; off by default (the originals use the plain loop).
    """

    name: str = "adam"
    lr: float = 1e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "multistep"
    milestones: tuple[int, ...] = (300, 700, 900)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    warmup_start_lr: float | None = None
    min_lr: float = 0.0
    fused: bool = False

    def __post_init__(self) -> None:
        if self.name not in ("adam", "adamw"):
            raise ValueError(f"optim.name must be 'adam' or 'adamw', got {self.name!r}")
        if self.schedule not in ("multistep", "cosine"):
            raise ValueError(f"optim.schedule must be 'multistep' or 'cosine', got {self.schedule!r}")
        if self.warmup_start_lr is not None and not 0 <= self.warmup_start_lr <= self.lr:
            raise ValueError(f"optim.warmup_start_lr must be in [0, lr], got {self.warmup_start_lr}")
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be positive, got {self.lr}")


@dataclass(frozen=True)
class LoopConfig:
    """The loop: epochs, batch, seed, AMP (CUDA only), logging, evaluation and checkpoints.

    select_on: the val metric (a key of :func:`avssl.eval.localisation.score`'s summary, e.g.
        "ciou_at_0.5" or "adaptive_ciou_at_0.5") that picks ``best.pt``; never the test set.
    device: "auto" (CUDA when available, at LOCAL_RANK), "cpu", "cuda", "cuda:1", ...
    amp: autocast, on CUDA only. Off by default: SSL-TIE's released loop is fp32 (its tau = 0.03
        sigmoid masks have not been checked in fp16); EquiAV's pre-training and fine-tuning
        presets turn it on, as their released loops use it (fp16).
        amp_dtype: "float16" (with a GradScaler, the originals' AMP) or "bfloat16" (no scaler:
        bf16 has fp32's range; GPUs from Ampere on).
    channels_last: the model's 4-D weights in channels-last memory format (faster convolutions
        on tensor-core GPUs, SSL-TIE's ResNets). The convolutions then sum in another order: the
        same loss to ~1e-5, gradients within a few % per layer (SSL-TIE's tau = 0.03 masks amplify
        the rounding), so a run is not bit-identical to the default.
    compile: ``torch.compile`` the training module (the first steps are slow while it compiles;
        needs a C++ compiler on CPU). Checkpoints hold the plain module's weights either way.
    grad_clip: max gradient norm (after unscaling under AMP); None: no clipping.
        grad_clip_amp_only: clip only when AMP is in use (the released EquiAV loop).
    threads: torch intra-op CPU threads (None: torch's default). On a busy shared CPU, 1 can be
        several times faster than 2 for the small demo models (measured 10.5 s vs 69 s per epoch).
    dist_timeout_s: under torchrun, the process-group timeout: a collective that waits longer
        (a rank stalled or died) fails with an error naming the rank instead of hanging
        (env ``AVSSL_DIST_TIMEOUT`` overrides it).
    val_audio_control: also validate with each val clip's recording replaced ("swap": another
        clip's, of another class; "silent"; "both"; None: off), logging ``val/<control>_<metric>``,
        ``val/<control>_drop_<metric>`` (own - control), ``val/<control>_map_correlation`` and
        ``val/<control>_peak_moved``; ``select_on`` may name any of them (an audio-aware choice
        of ``best.pt``, e.g. ``swap_drop_pointing_accuracy``).
    """

    epochs: int = 100
    batch_size: int = 32
    eval_batch_size: int = 32
    drop_last: bool = True
    seed: int = 4
    amp: bool = False
    amp_dtype: str = "float16"
    channels_last: bool = False
    compile: bool = False
    grad_clip: float | None = None
    grad_clip_amp_only: bool = False  # EquiAV's released loop clips only on its AMP path (fp32 unclipped)
    log_every: int = 20
    eval_every: int = 1
    checkpoint_every: int = 1
    select_on: str = "ciou_at_0.5"
    out_dir: str = "runs/ssltie"
    device: str = "auto"
    threads: int | None = None
    tensorboard: bool = True
    progress: bool = True
    dist_timeout_s: float = 1800.0
    val_audio_control: str | None = None

    def __post_init__(self) -> None:
        from avssl.data.controls import parse_audio_control

        parse_audio_control(self.val_audio_control)  # ValueError naming the bad value
        if self.amp_dtype not in AMP_DTYPES:
            raise ValueError(f"train.amp_dtype must be one of {tuple(AMP_DTYPES)}, got {self.amp_dtype!r}")
        if not self.dist_timeout_s > 0:
            raise ValueError(f"train.dist_timeout_s must be > 0, got {self.dist_timeout_s}")
        if self.epochs < 1 or self.batch_size < 1 or self.log_every < 1:
            raise ValueError("epochs, batch_size and log_every must be >= 1")
        if self.eval_every < 0 or self.checkpoint_every < 1:
            raise ValueError("eval_every must be >= 0 (0: never) and checkpoint_every >= 1")


def _method_config(self):
    """The options of the selected method (``getattr(self, self.method)``)."""
    return getattr(self, self.method)


def _check(self) -> None:
    if self.method not in METHODS:
        raise ValueError(f"unknown method {self.method!r}; available: {sorted(METHODS)}")
    validate = METHODS[self.method].validate
    if validate is not None:
        validate(self)


def _config_omit(self) -> tuple[str, ...]:
    """Sections :func:`avssl.config.to_dict` leaves out: the methods this run does not use."""
    return tuple(name for name in METHODS if name != self.method)


#: A whole run: ``method``, one options section per registered method (named after it; only the
#: chosen one is used, and only it is saved), ``data``, ``optim`` and ``train``. Built from
#: :data:`avssl.registry.METHODS`, so a new method needs no edit here.
TrainConfig = make_dataclass(
    "TrainConfig",
    [("method", str, field(default="ssltie")),
     *[(name, spec.config, field(default_factory=spec.config)) for name, spec in METHODS.items()],
     ("data", DataConfig, field(default_factory=DataConfig)),
     ("optim", OptimConfig, field(default_factory=OptimConfig)),
     ("train", LoopConfig, field(default_factory=LoopConfig))],
    frozen=True,
    namespace={"method_config": property(_method_config), "__post_init__": _check,
               "__config_omit__": _config_omit,
               "__doc__": "A whole run: the method, its options, data, optimiser and loop."})
TrainConfig.__module__ = __name__


# ---------------------------------------------------------------------------------------------
# Checkpoints of older versions, and the audio a model was trained on

#: :data:`avssl.checkpoint.CONFIG_SCHEMA`, the version of the saved run config's meaning, written
#: into every checkpoint with its config (``config_schema``). 1: checkpoints without the key (written
#: before it existed); 2: current. A field missing from a checkpoint's saved section takes the value
#: the code that wrote it used, not today's default (:data:`_BEFORE_FIELD`); bump it when a default
#: changes, and say what it was.

#: ``section.field -> (schema that added it, the behaviour before)``: a checkpoint of an older
#: schema that lacks the field was trained and scored with that value.
_BEFORE_FIELD = {
    # 3a2096e added data.frame_resize (default "pil_bicubic", the authors' test resize): the
    # loader before it resized with torch's antialiased bilinear, which "torch_bilinear" keeps.
    "data.frame_resize": (2, "torch_bilinear"),
}


def checkpoint_config_dict(ckpt: dict, source: str = "checkpoint") -> dict:
    """The run config of a loaded avssl checkpoint as a plain dict, brought to :data:`CONFIG_SCHEMA`:
    a field an older checkpoint lacks takes the value of the version that wrote it (logged, with
    the current default beside it). Raises ValueError for a checkpoint of a newer schema."""
    import copy
    import logging

    log = logging.getLogger(__name__)
    raw = ckpt.get("config")
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: the checkpoint holds no run config")
    schema = int(ckpt.get("config_schema", 1))
    if schema > CONFIG_SCHEMA:
        raise ValueError(f"{source}: written with config schema {schema}, newer than this avssl's "
                         f"({CONFIG_SCHEMA}); upgrade avssl to use it")
    data = copy.deepcopy(raw)
    for key, (added, before) in _BEFORE_FIELD.items():
        section, name = key.split(".")
        # only where the section was saved without the field (a training run's full config from
        # before the field existed); a section never saved (e.g. `avssl convert` of the authors'
        # weights) takes today's defaults
        if schema < added and isinstance(data.get(section), dict) and name not in data[section]:
            data[section][name] = before
            log.info("%s: written by config schema %d, before %s existed: using %r, the value that "
                     "version used (the default now: %r)", source, schema, key, before,
                     getattr(_SECTIONS[section](), name))
    return data


_SECTIONS = {"data": DataConfig, "optim": OptimConfig, "train": LoopConfig}


def config_from_checkpoint(ckpt: dict, source: str = "checkpoint"):
    """The :data:`TrainConfig` of a loaded avssl checkpoint (:func:`checkpoint_config_dict`)."""
    from avssl.config import from_dict

    return from_dict(TrainConfig, checkpoint_config_dict(ckpt, source))


def trained_audio(ckpt: dict, cfg=None) -> dict | None:
    """What audio the checkpoint's model was trained on: ``{"sample_rates": [Hz, ...], "seconds": s}``
    (saved by training since config schema 2; for an older checkpoint trained at a fixed
    ``data.sample_rate``, that rate), or None when unknown."""
    rec = (ckpt.get("extra") or {}).get("trained_audio")
    if isinstance(rec, dict) and rec.get("sample_rates"):
        return {"sample_rates": sorted(int(r) for r in rec["sample_rates"]), "seconds": rec.get("seconds")}
    cfg = cfg if cfg is not None else config_from_checkpoint(ckpt)
    if cfg.data.sample_rate is not None:
        return {"sample_rates": [int(cfg.data.sample_rate)], "seconds": cfg.data.seconds}
    return None


def audio_rate_warning(trained: dict | None, rates: dict[int, int], option: str = "--sample-rate") -> str | None:
    """One sentence when clips' sample rates (``{Hz: clip count}``) are not rates the model was
    trained on (``trained``: :func:`trained_audio`): the spectrograms then have another frequency
    and time scale than in training. None when they all are, or the model's rates are unknown."""
    if not trained or not rates:
        return None
    known = set(trained["sample_rates"])
    off = {r: n for r, n in rates.items() if int(r) not in known}
    if not off:
        return None
    total, n_off = sum(rates.values()), sum(off.values())
    model = "/".join(str(r) for r in sorted(known))
    target = min(known, key=lambda r: abs(r - max(off, key=off.get)))
    listed = ", ".join(f"{n} at {r} Hz" for r, n in sorted(off.items()))
    return (f"{n_off} of {total} clips are not at the sample rate the model was trained on ({model} Hz): "
            f"{listed}; their spectrograms have another frequency and time scale than in training; pass "
            f"{option} {target} to resample them")
