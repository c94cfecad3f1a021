"""EquiAV pre-training step at paper size: samples/s, peak memory, and the cost of the centroid.

One step = forward + loss (:meth:`avssl.methods.equiav.EquiAV.loss`) + backward + AdamW step, on
random inputs of the recipe's shapes: two ViT-B/16 encoders, audio (B, 3, 1024, 128), frames
(B, 3, 224, 224), heads 2048 -> 512. The same model is timed in three settings, interleaved
step by step so that machine noise hits them alike:

* ``S=16``  the invariant centroid over 16 parameter vectors per clip (the recipe),
* ``S=1``   the centroid over one vector (``t_a_list``/``t_v_list`` of one vector),
* ``off``   ``cfg.centroid=False`` (the token mean; reference only).

The centroid cost is the ratio of the median step times S=16 / S=1 (target: at most 1.10).
Warm-up steps are excluded; the median over ``--steps`` steps is reported. The script also
times the centroid parts alone (augmentation encoder + cross-attention predictor, forward +
backward, on fixed encoder tokens) so that a ratio above target can be attributed.

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` per setting; on the CPU, the process's
peak resident set size (``resource.getrusage``, ``ru_maxrss``), one number for the whole run.

CPU (batch 2, fp32; a few minutes per thread setting)::

    python benchmarks/bench_equiav_step.py --threads 1
    python benchmarks/bench_equiav_step.py --threads 2

GPU (batch 16, AMP fp16 with a GradScaler, as the recipe)::

    python benchmarks/bench_equiav_step.py --device cuda --batch 16 --steps 20 --warmup 3

Quick smoke run at the golden tiny size (``run_all.py`` uses this; a few seconds)::

    python benchmarks/bench_equiav_step.py --tiny
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

try:
    from avssl.augment.params import sample_audio_params, sample_param_lists, sample_visual_params
    from avssl.methods.equiav import EquiAV, equiav_tiny_config, equiav_vit_b16_config
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from avssl.augment.params import sample_audio_params, sample_param_lists, sample_visual_params
    from avssl.methods.equiav import EquiAV, equiav_tiny_config, equiav_vit_b16_config

Batch = dict[str, torch.Tensor]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_inputs(model: EquiAV, batch: int, num_centroid: int, device: torch.device, seed: int = 0
                ) -> dict[str, Batch]:
    """Random views of the model's input shapes and real sampled parameter vectors.

    Returns ``{setting: kwargs of EquiAV.loss}`` for the settings ``S=<num_centroid>``, ``S=1``
    and ``off`` (the same views and t in all three; only the centroid lists differ).
    """
    c = model.cfg
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, 3, c.audio_length, c.num_mel_bins, generator=gen)
    v = torch.randn(batch, 3, c.img_size, c.img_size, generator=gen)
    base = {
        "a": a, "v": v, "a_aug": torch.randn(a.shape, generator=gen), "v_aug": torch.randn(v.shape, generator=gen),
        "t_a": sample_audio_params(batch, gen, frames=c.audio_length, bins=c.num_mel_bins),
        "t_v": sample_visual_params(batch, gen, c.img_size, c.img_size),
    }
    base = {k: x.to(device) for k, x in base.items()}
    settings: dict[str, Batch] = {}
    for s in dict.fromkeys((num_centroid, 1)):
        t_a_list, t_v_list = sample_param_lists(batch, s, gen, device, c.img_size, c.img_size)
        settings[f"S={s}"] = {**base, "t_a_list": t_a_list, "t_v_list": t_v_list}
    settings["off"] = dict(base)
    return settings


class Stepper:
    """One training step of ``model`` on given inputs; ``centroid`` toggles ``cfg.centroid``."""

    def __init__(self, model: EquiAV, device: torch.device, amp: bool) -> None:
        self.model, self.device, self.amp = model, device, amp
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=1e-5)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp)
        self.cfg_on, self.cfg_off = replace(model.cfg, centroid=True), replace(model.cfg, centroid=False)

    def __call__(self, inputs: Batch, centroid: bool) -> float:
        """Run one step; returns its wall time in seconds (device synchronised)."""
        self.model.cfg = self.cfg_on if centroid else self.cfg_off
        _sync(self.device)
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            loss = self.model.loss(**inputs)["loss"]
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        _sync(self.device)
        return time.perf_counter() - t0


def time_steps(stepper: Stepper, settings: dict[str, Batch], warmup: int, steps: int
               ) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Interleaved timing: ``warmup`` then ``steps`` rounds, each running every setting once.

    Returns per-setting step times (s) and, on CUDA, peak allocated memory (GiB) per setting.
    """
    times: dict[str, list[float]] = {k: [] for k in settings}
    peak: dict[str, float] = {k: 0.0 for k in settings}
    cuda = stepper.device.type == "cuda"
    for r in range(warmup + steps):
        for name, inputs in settings.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            dt = stepper(inputs, centroid=name != "off")
            if cuda:
                peak[name] = max(peak[name], torch.cuda.max_memory_allocated() / 2**30)
            if r >= warmup:
                times[name].append(dt)
        done = "warm-up" if r < warmup else f"step {r - warmup + 1}/{steps}"
        print(f"  round {r + 1}: {done} " + " ".join(f"{k} {times[k][-1]:.3f}s" if r >= warmup else k
                                                   for k in settings), flush=True)
    return times, peak


def _parts_step(model: EquiAV, call: tuple, device: torch.device, amp: bool) -> None:
    """Forward + backward of ``model._predict(*call)`` (the centroid and the prediction for t)."""
    with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        cen, equi = model._predict(*call)
        total = equi.float().sum() + (cen.float().sum() if cen is not None else 0.0)
    total.backward()


def time_centroid_parts(model: EquiAV, settings: dict[str, Batch], device: torch.device, amp: bool,
                        repeat: int) -> dict[str, dict[str, float]]:
    """Median ms of augmentation encoder + predictor forward + backward alone, per modality and
    setting, on fixed (detached, grad-requiring) encoder-shaped tokens."""
    c, out = model.cfg, {}
    b = next(iter(settings.values()))["a"].shape[0]
    n = {"audio": model.audio_encoder.num_patches, "visual": model.visual_encoder.num_patches}
    parts = {"audio": (model.predictor_a, model.aug_encoder_a, "t_a"),
             "visual": (model.predictor_v, model.aug_encoder_v, "t_v")}
    for mod, (pred, enc, key) in parts.items():
        tokens = torch.randn(b, n[mod], c.embed_dim, device=device, requires_grad=True)
        out[mod] = {}
        for name, inputs in settings.items():
            call = (pred, enc, tokens, inputs.get(f"{key}_list") if name != "off" else None, inputs[key])
            _parts_step(model, call, device, amp)  # warm-up
            ts = []
            for _ in range(repeat):
                _sync(device)
                t0 = time.perf_counter()
                _parts_step(model, call, device, amp)
                _sync(device)
                ts.append(time.perf_counter() - t0)
            out[mod][name] = statistics.median(ts) * 1e3
    model.zero_grad(set_to_none=True)
    return out


def _fmt_mem(device: torch.device, peak: dict[str, float], name: str) -> str:
    return f", peak {peak[name]:.2f} GiB allocated" if device.type == "cuda" else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="the golden tiny size (a few seconds)")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    ap.add_argument("--batch", type=int, default=None, help="default: 16 on CUDA, 2 on the CPU (8 with --tiny)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per setting (median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per setting first")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--num-centroid", type=int, default=16, help="S of the recipe")
    ap.add_argument("--no-amp", action="store_true", help="fp32 on CUDA (AMP fp16 is the default there)")
    ap.add_argument("--no-parts", action="store_true", help="skip timing the centroid parts alone")
    args = ap.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    amp = cuda and not args.no_amp
    batch = args.batch or (16 if cuda else 8 if args.tiny else 2)
    steps = args.steps or (20 if cuda else 5 if args.tiny else 3)
    cfg = (equiav_tiny_config if args.tiny else equiav_vit_b16_config)(num_centroid=args.num_centroid)

    torch.manual_seed(0)
    model = EquiAV(cfg).to(device).train()
    settings = make_inputs(model, batch, args.num_centroid, device)
    stepper = Stepper(model, device, amp)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    where = torch.cuda.get_device_name(device) if cuda else f"cpu, {torch.get_num_threads()} threads"
    size = "tiny (golden)" if args.tiny else "paper (ViT-B/16 x2)"
    print(f"[equiav {size}] {params:.1f}M params, batch {batch}, audio {cfg.audio_length}x{cfg.num_mel_bins}, "
          f"frames {cfg.img_size}px, {'AMP fp16' if amp else 'fp32'} on {where}; "
          f"{args.warmup} warm-up + median of {steps} steps", flush=True)

    times, peak = time_steps(stepper, settings, args.warmup, steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    for name in settings:
        print(f"  step {name:5s}: {batch / med[name]:8.2f} samples/s ({med[name] * 1e3:.0f} ms/step, "
              f"min {min(times[name]) * 1e3:.0f}, max {max(times[name]) * 1e3:.0f}{_fmt_mem(device, peak, name)})")
    s_name = f"S={args.num_centroid}"
    ratio = med[s_name] / med["S=1"]
    verdict = "" if args.tiny else f" ({'within' if ratio <= 1.10 else 'ABOVE'} the 1.10 target at paper size)"
    print(f"  centroid cost: step({s_name}) / step(S=1) = {ratio:.3f}{verdict}; "
          f"step({s_name}) / step(off) = {med[s_name] / med['off']:.3f}")
    if not cuda:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
        print(f"  peak memory: process peak RSS {rss:.2f} GiB (resource.getrusage ru_maxrss, whole run)")

    if not args.no_parts:
        parts = time_centroid_parts(model, settings, device, amp, repeat=max(3, steps))
        for mod, row in parts.items():
            cells = ", ".join(f"{k} {ms:.1f} ms" for k, ms in row.items())
            extra = row[s_name] - row["S=1"]
            print(f"  centroid parts alone ({mod}, aug encoder + predictor fwd+bwd): {cells}; "
                  f"S={args.num_centroid} - S=1 = {extra:.1f} ms = {100 * extra / 1e3 / med['S=1']:.2f}% of a step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
