"""Benchmark: batched MoCoV2Transform vs torchvision's per-sample PIL pipeline (SSL-TIE frames).

Augments B random 256x256 RGB frames to 224x224 (docs/methods.md §1.1: RandomResizedCrop scale (0.3, 1),
ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale p 0.2, PIL GaussianBlur radius U(0.1, 2) p 0.5,
horizontal flip, ToTensor, ImageNet normalisation), once with
:class:`avssl.augment.recipes.MoCoV2Transform` on a (B, 3, 256, 256) uint8 tensor (on the CPU, and
on CUDA when available) and once with a torchvision ``Compose`` applied to each PIL image in a
Python loop (the usual Dataset path, one process). Prints the median time of ``--repeats`` runs.
Then the same on ORIGINAL frames of ``--original HxW`` (``data.train_crop=original``): the PIL
loop on those frames vs the batched transform with the antialiased (PIL-style) crop on their
zero-padded canvas, half of them at half the width (mixed sizes).

    python benchmarks/bench_augment.py [--batch 32] [--repeats 5] [--threads N] [--original 360x640]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T

try:
    from avssl.augment.image import IMAGENET_MEAN, IMAGENET_STD
    from avssl.augment.recipes import MoCoV2Transform
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from avssl.augment.image import IMAGENET_MEAN, IMAGENET_STD
    from avssl.augment.recipes import MoCoV2Transform


class PILGaussianBlur:
    """MoCo-v2's blur: PIL GaussianBlur with radius U(sigma)."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


def pil_pipeline(size: int = 224) -> T.Compose:
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.3, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([PILGaussianBlur()], p=0.5),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def timed(fn, repeats: int, sync: bool = False) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave default)")
    ap.add_argument("--original", default="360x640", help="HxW of the original frames ('' to skip)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, (args.batch, args.size, args.size, 3), dtype=np.uint8)
    pils = [Image.fromarray(a) for a in arrays]
    batch = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()
    moco = MoCoV2Transform()
    gen = torch.Generator().manual_seed(0)
    pipe = pil_pipeline()

    t_pil = timed(lambda: torch.stack([pipe(p) for p in pils]), args.repeats)
    t_cpu = timed(lambda: moco(batch, gen), args.repeats)
    print(f"batch {args.batch} x 3 x {args.size} x {args.size} -> 224, torch threads {torch.get_num_threads()}")
    print(f"torchvision PIL per-sample loop : {t_pil * 1000:8.1f} ms")
    print(f"MoCoV2Transform batched (CPU)   : {t_cpu * 1000:8.1f} ms   ({t_pil / t_cpu:.1f}x)")
    if torch.cuda.is_available():
        gb = batch.cuda()
        ggen = torch.Generator(device="cuda").manual_seed(0)
        t_gpu = timed(lambda: moco(gb, ggen), args.repeats, sync=True)
        print(f"MoCoV2Transform batched (CUDA)  : {t_gpu * 1000:8.1f} ms   ({t_pil / t_gpu:.1f}x)")
    if args.original:
        h, w = (int(v) for v in args.original.lower().split("x"))
        sizes = torch.tensor([[h, w] if i % 2 == 0 else [h, w // 2] for i in range(args.batch)])
        frames = [rng.integers(0, 256, (int(a), int(b), 3), dtype=np.uint8) for a, b in sizes.tolist()]
        canvas = torch.zeros(args.batch, 3, h, w, dtype=torch.uint8)
        for i, f in enumerate(frames):
            canvas[i, :, : f.shape[0], : f.shape[1]] = torch.from_numpy(f).permute(2, 0, 1)
        pils = [Image.fromarray(f) for f in frames]
        orig = MoCoV2Transform(antialias=True)
        t_pil_o = timed(lambda: torch.stack([pipe(p) for p in pils]), args.repeats)
        t_cpu_o = timed(lambda: orig(canvas, gen, sizes=sizes), args.repeats)
        print(f"original frames {h}x{w} and {h}x{w // 2} -> 224 (data.train_crop=original)")
        print(f"torchvision PIL per-sample loop : {t_pil_o * 1000:8.1f} ms")
        print(f"MoCoV2Transform antialiased crop: {t_cpu_o * 1000:8.1f} ms   ({t_pil_o / t_cpu_o:.1f}x)")
        if torch.cuda.is_available():
            gc, gs = canvas.cuda(), sizes.cuda()
            ggen = torch.Generator(device="cuda").manual_seed(0)
            t_gpu_o = timed(lambda: orig(gc, ggen, sizes=gs), args.repeats, sync=True)
            print(f"MoCoV2Transform antialiased CUDA: {t_gpu_o * 1000:8.1f} ms   ({t_pil_o / t_gpu_o:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
