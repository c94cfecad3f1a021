"""GPU check: both methods' training steps at paper size in fp32 / fp16 / bf16 (and compiled).

For each method (SSL-TIE batch 32, EquiAV batch 16 per GPU, 224 px, the recipes' audio), the
script builds the model from its packaged preset, makes one batch of the loader's format (uint8
frames, waveforms) and runs the real training step: the batched on-device input transform
(spectrograms, augmentations), the method's training module, backward, the optimiser (with a
GradScaler for fp16). Per precision it reports samples/s (median step, after warm-up), the
peak CUDA memory, whether the loss is finite, and the first step's loss against fp32 (same
initial weights, same batch and random draws: only the arithmetic differs). The data loader's
share is measured on real mp4 clips from the synthetic generator: the time to decode one batch
in one process against the fp32 step, and the loader workers needed to keep up.

    python benchmarks/gpu_check.py                      # on a CUDA machine: paper sizes (a few minutes)
    python benchmarks/gpu_check.py --compile            # + torch.compile rows
    python benchmarks/gpu_check.py --smoke              # tiny sizes on any device (CI runs this on the CPU)

On the CPU, fp16 is skipped (the training loop's autocast is CUDA-only; bf16 runs through CPU
autocast there). ``--out FILE`` writes the rows as JSON. The exit status is 1 when a loss is not
finite or a precision's first loss is off fp32's by more than its tolerance.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

try:
    import avssl  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from avssl.config import load_config, preset_path
from avssl.engine.train import build_optimizer, step_generator
from avssl.registry import build_method, pipeline_for
from avssl.train_config import TrainConfig

#: relative tolerance of a precision's first-step loss against fp32's
TOLERANCE = {"fp32": 0.0, "fp16": 0.02, "bf16": 0.05}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

PAPER = {
    "ssltie": ("ssltie/vggsound144k", ["data.sample_rate=16000", "train.batch_size=32"]),
    "equiav": ("equiav/audioset", ["train.batch_size=16"]),
}
SMOKE = {
    "ssltie": ("synthetic/ssltie", ["ssltie.width=8", "ssltie.image_size=64", "ssltie.heatmap_size=4",
                                    "data.seconds=1", "data.sample_rate=16000", "train.batch_size=4"]),
    "equiav": ("synthetic/equiav", ["equiav.embed_dim=32", "equiav.depth=1", "equiav.num_heads=2",
                                    "equiav.img_size=32", "equiav.patch_size=8", "equiav.audio_length=64",
                                    "equiav.num_mel_bins=32", "equiav.num_centroid=2", "equiav.aug_emb_dim=16",
                                    "equiav.cross_attn_heads=2", "equiav.cross_attn_head_dim=8",
                                    "equiav.proj_hidden_dim=32", "equiav.inter_out_dim=16",
                                    "equiav.intra_out_dim=16", "data.seconds=0.655", "data.load_size=32",
                                    "train.batch_size=4"]),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def method_config(method: str, smoke: bool) -> TrainConfig:
    preset, overrides = (SMOKE if smoke else PAPER)[method]
    return load_config(TrainConfig, [preset_path(preset)], [*overrides, "train.progress=false"])


def image_size(cfg: TrainConfig) -> int:
    return cfg.ssltie.image_size if cfg.method == "ssltie" else (cfg.data.load_size or cfg.equiav.img_size)


def fake_batch(cfg: TrainConfig, seed: int = 0) -> dict:
    """One collated batch of the loader's format: uint8 frames and noise waveforms at 16 kHz."""
    g = torch.Generator().manual_seed(seed)
    b, s, sr = cfg.train.batch_size, image_size(cfg), cfg.data.sample_rate or 16000
    n = int(cfg.data.seconds * sr)
    return {"id": [f"clip{i}" for i in range(b)],
            "image": torch.randint(0, 256, (b, 3, s, s), generator=g, dtype=torch.uint8),
            "wave": 0.1 * torch.randn(b, n, generator=g), "num_samples": torch.full((b,), n, dtype=torch.long),
            "label": torch.arange(b) % 2, "target": torch.eye(2)[torch.arange(b) % 2], "sample_rate": sr}


class Step:
    """The engine's training step (transform, module, backward, optimiser) in one precision."""

    def __init__(self, cfg: TrainConfig, device: torch.device, precision: str, compiled: bool) -> None:
        torch.manual_seed(cfg.train.seed)
        self.cfg, self.device, self.precision = cfg, device, precision
        self.model = build_method(cfg.method, cfg.method_config).to(device)
        pipe = pipeline_for(cfg.method)
        self.net = pipe.train_module(self.model, cfg)
        if compiled:
            self.net = torch.compile(self.net)
        groups = pipe.param_groups(self.model, cfg) if pipe.param_groups is not None else self.model.parameters()
        self.opt = build_optimizer(groups, cfg.optim)
        self.transform = pipe.batch_transform(cfg, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def __call__(self, batch: dict, i: int) -> tuple[float, float]:
        """One step; returns ``(loss, seconds)`` (device synchronised)."""
        self.net.train()
        _sync(self.device)
        t0 = time.perf_counter()
        gen = step_generator(self.cfg.train.seed, 0, i)
        inputs = self.transform(batch, gen, train=True)
        with torch.autocast(self.device.type, dtype=DTYPES.get(self.precision, torch.float32),
                            enabled=self.precision != "fp32"):
            loss = self.net(inputs, generator=gen)["loss"]
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        value = float(loss.detach())
        _sync(self.device)
        return value, time.perf_counter() - t0


def loader_seconds(cfg: TrainConfig, clips: int, workdir: Path) -> float:
    """Seconds to decode one training batch in one process, from real mp4 clips."""
    from torch.utils.data import DataLoader

    from avssl.data.manifest import read_manifest
    from avssl.data.synthetic import SynthConfig, generate

    size = max(64, image_size(cfg))
    data = workdir / f"clips_{size}"
    if not (data / "manifest.jsonl").is_file():
        generate(data, clips=clips, seed=0, config=SynthConfig(size=size + size % 2, duration=3.0, workers=2))
    records = read_manifest(data / "manifest.jsonl")
    cfg = replace(cfg, data=replace(cfg.data, cache_in_memory=False, on_error="raise"))  # decode in the loop
    pipe = pipeline_for(cfg.method)
    ds = pipe.dataset(records, cfg, train=True)
    b = min(cfg.train.batch_size, len(records))
    loader = DataLoader(ds, batch_size=b, shuffle=False, num_workers=0, collate_fn=pipe.collate)
    t0 = time.perf_counter()
    n = sum(len(batch["id"]) for batch in loader)
    return (time.perf_counter() - t0) / n * cfg.train.batch_size


def check_method(method: str, args, device: torch.device, workdir: Path) -> list[dict]:
    cfg = method_config(method, args.smoke)
    batch = fake_batch(cfg)
    precisions = ["fp32", "fp16", "bf16"] if device.type == "cuda" else ["fp32", "bf16"]
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        precisions.remove("bf16")
    variants = [(p, False) for p in precisions] + ([(p, True) for p in precisions] if args.compile else [])
    rows, first = [], {}
    for precision, compiled in variants:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        step = Step(cfg, device, precision, compiled)
        losses, times = [], []
        for i in range(args.warmup + args.steps):
            loss, seconds = step(batch, i)
            losses.append(loss)
            if i >= args.warmup:
                times.append(seconds)
        name = precision + (" compiled" if compiled else "")
        first[name] = losses[0]
        ref = first.get("fp32 compiled" if compiled and "fp32 compiled" in first else "fp32", losses[0])
        rel = abs(losses[0] - ref) / max(abs(ref), 1e-12)
        median = statistics.median(times)
        rows.append({"method": method, "precision": name, "batch": cfg.train.batch_size,
                     "image": image_size(cfg), "samples_per_s": cfg.train.batch_size / median,
                     "step_s": median, "first_loss": losses[0], "rel_to_fp32": rel,
                     "finite": all(math.isfinite(x) for x in losses),
                     "ok": all(math.isfinite(x) for x in losses) and rel <= TOLERANCE[precision] + 1e-6,
                     "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None})
        del step
    if args.loader_clips:
        load = loader_seconds(cfg, args.loader_clips, workdir)
        step_s = rows[0]["step_s"]
        for r in rows:
            r["loader_s_per_batch"] = load
            r["loader_share"] = load / (load + r["step_s"])  # with num_workers=0 (no overlap)
            r["workers_to_keep_up"] = math.ceil(load / r["step_s"])
        print(f"{method}: decoding one batch of {cfg.train.batch_size} mp4 clips takes {load:.3f} s in one "
              f"process vs a {step_s:.3f} s fp32 step")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes (CI on the CPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--methods", default="ssltie,equiav")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 10; smoke 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 3; smoke 1)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd steps")
    p.add_argument("--loader-clips", type=int, default=None, help="mp4 clips for the loader share (0: skip)")
    p.add_argument("--out", default=None, help="write the rows as JSON")
    args = p.parse_args(argv)
    args.steps = args.steps or (2 if args.smoke else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 3)
    args.loader_clips = args.loader_clips if args.loader_clips is not None else (4 if args.smoke else 64)
    device = torch.device(args.device)
    print(f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", torch {torch.__version__}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            rows += check_method(method, args, device, Path(tmp))
    print("| method | precision | batch | px | samples/s | step (s) | peak GiB | first loss | vs fp32 | loader share |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "-"
        share = f"{r['loader_share']:.2f}" if "loader_share" in r else "-"
        print(f"| {r['method']} | {r['precision']} | {r['batch']} | {r['image']} | {r['samples_per_s']:.1f} | "
              f"{r['step_s']:.3f} | {peak} | {r['first_loss']:.5f} | {r['rel_to_fp32']:.1e}"
              f"{'' if r['ok'] else ' FAIL'} | {share} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
