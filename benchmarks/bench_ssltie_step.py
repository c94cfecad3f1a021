"""SSL-TIE training-step throughput: batched input transform vs a per-sample loop, model step,
and (with --loader) data loading from real mp4 files vs the model.

    python benchmarks/bench_ssltie_step.py                 # demo configuration
    python benchmarks/bench_ssltie_step.py --paper         # + paper configuration (batch 32, 224 px, 10 s)
    python benchmarks/bench_ssltie_step.py --loader        # + decoding throughput on synthetic clips

Prints samples/s for each part and the ratio of the batched transform to the same transform
applied one sample at a time (what a per-sample Dataset transform does). Runs on CUDA when
available (the transforms then run on the GPU), else on the CPU.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from avssl.methods.ssltie import SSLTIE, SSLTIEConfig
from avssl.methods.ssltie.pipeline import SSLTIEBatchTransform


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, repeat: int) -> float:
    fn()  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / repeat


def bench(name: str, width: int, size: int, seconds: float, batch: int, device: torch.device, repeat: int) -> None:
    sr = 16000
    gen = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    waves = torch.randn(batch, int(seconds * sr)) * 0.1
    tf = SSLTIEBatchTransform(size, seconds, invariance=True, device=device)
    cpu_batch = {"image": images, "wave": waves, "sample_rate": torch.tensor(sr)}

    def batched():
        return tf(cpu_batch, gen, train=True)

    def per_sample():
        outs = [tf({"image": images[i:i + 1], "wave": waves[i:i + 1], "sample_rate": torch.tensor(sr)}, gen, True)
                for i in range(batch)]
        return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}

    t_batched = _time(batched, device, repeat)
    t_loop = _time(per_sample, device, max(1, repeat // 2))
    model = SSLTIE(SSLTIEConfig(width=width, image_size=size, heatmap_size=size // 16)).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-4)
    inputs = batched()

    def step():
        opt.zero_grad(set_to_none=True)
        model(inputs, gen)["loss"].backward()
        opt.step()

    t_step = _time(step, device, repeat)
    mem = f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == "cuda" else ""
    print(f"[{name}] width {width}, {size}px, {seconds:g} s audio, batch {batch} on {device}")
    print(f"  input transform batched : {batch / t_batched:9.1f} samples/s ({t_batched * 1e3:.0f} ms/batch)")
    print(f"  input transform per-sample: {batch / t_loop:7.1f} samples/s ({t_loop * 1e3:.0f} ms/batch)"
          f"  -> batched is {t_loop / t_batched:.1f}x faster")
    print(f"  model step (fwd+bwd+Adam): {batch / t_step:8.1f} samples/s ({t_step:.2f} s/step{mem})")


def bench_loader(clips: int, size: int, seconds: float) -> None:
    from torch.utils.data import DataLoader

    from avssl.data.datasets import AVFrameAudioDataset, collate
    from avssl.data.manifest import read_manifest
    from avssl.data.synthetic import SynthConfig, generate

    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp, clips=clips, seed=0, config=SynthConfig(size=size, duration=seconds))
        records = read_manifest(Path(tmp) / "manifest.jsonl")
        for workers in (0, 2):
            ds = AVFrameAudioDataset(records, image_size=size, seconds=seconds)
            loader = DataLoader(ds, batch_size=32, num_workers=workers, collate_fn=collate)
            t0 = time.perf_counter()
            n = sum(len(b["id"]) for b in loader)
            dt = time.perf_counter() - t0
            print(f"[loader] decode mp4 -> frame + audio, {workers} workers: {n / dt:.1f} clips/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paper", action="store_true", help="also the paper configuration (slow on a CPU)")
    ap.add_argument("--loader", action="store_true", help="also data loading from mp4")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bench("demo", 16, 128, 3.0, 32, device, args.repeat)
    if args.paper:
        bench("paper", 64, 224, 10.0, 32, device, max(1, args.repeat // 3))
    if args.loader:
        bench_loader(128, 128, 3.0)


if __name__ == "__main__":
    main()
