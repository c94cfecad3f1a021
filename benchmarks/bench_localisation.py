"""Benchmark: the vectorised localisation scorer vs a plain per-sample NumPy loop.

Scores N random 14x14 heatmaps (a Gaussian blob, on the first box for 70% of the samples and
anywhere for the rest, plus uniform noise) against random VGG-SS boxes (1-3 per sample) with the released protocol (bilinear upsampling to 224,
median threshold, cIoU), once with :func:`avssl.eval.localisation.score_arrays` and once with a
straightforward per-sample loop written here (NumPy bilinear, ``np.sort``, the two-step
threshold, the rasterised ground truth, cIoU). Checks that the per-sample cIoUs agree exactly
and prints both times and the speed ratio. The vectorised scorer additionally computes the
adaptive-threshold cIoU and the pointing hit of every sample; the loop does not.

    python benchmarks/bench_localisation.py [--n 5000] [--loop-n N] [--workers W]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

try:
    from avssl.eval.localisation import score_arrays
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from avssl.eval.localisation import score_arrays


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 14, 14) float32 heatmaps and (n, 3, 4) NaN-padded normalised boxes."""
    rng = np.random.default_rng(seed)
    wh = rng.uniform(0.2, 0.8, (n, 3, 2))  # box sides, as a share of the frame
    lo = rng.uniform(0, 1, (n, 3, 2)) * (1 - wh)
    boxes = np.concatenate([lo, lo + wh], axis=2)
    boxes[rng.random((n, 3)) < np.array([0.0, 0.5, 0.75])] = np.nan  # 1-3 boxes per sample
    on_box = rng.random(n) < 0.7
    centre = np.where(on_box[:, None], (boxes[:, 0, :2] + boxes[:, 0, 2:]) / 2, rng.random((n, 2))) * 14 - 0.5
    yy, xx = np.mgrid[0:14, 0:14].astype(np.float32)
    cx, cy = (centre[:, i, None, None].astype(np.float32) for i in (0, 1))
    sig = rng.uniform(1.5, 4.0, (n, 1, 1)).astype(np.float32)
    maps = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sig ** 2)) + 0.3 * rng.random((n, 14, 14), np.float32)
    return maps.astype(np.float32), boxes


def _coeffs(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV INTER_LINEAR taps: i0, i1 (dst,) and float32 weights w0, w1 (dst,)."""
    fx = ((np.arange(dst) + 0.5) * (1.0 / (dst / src)) - 0.5).astype(np.float32)
    sx = np.floor(fx).astype(np.int64)
    fx = fx - sx.astype(np.float32)
    edge = (sx < 0) | (sx >= src - 1)
    fx[edge] = 0
    sx = np.clip(sx, 0, src - 1)
    return sx, np.minimum(sx + 1, src - 1), (np.float32(1) - fx).astype(np.float32), fx


def loop_ciou(maps: np.ndarray, boxes: np.ndarray, size: int = 224) -> np.ndarray:
    """The released protocol, one sample at a time."""
    yi0, yi1, yw0, yw1 = _coeffs(maps.shape[1], size)
    xi0, xi1, xw0, xw1 = _coeffs(maps.shape[2], size)
    out = np.empty(len(maps))
    for i in range(len(maps)):
        v = maps[i][yi0] * yw0[:, None] + maps[i][yi1] * yw1[:, None]  # vertical pass first
        h = v[:, xi0] * xw0 + v[:, xi1] * xw1
        neg = -h
        lo, hi = neg.min(), neg.max()
        if hi - lo != 0:
            neg = (neg - lo) / (hi - lo)
        p = 1 - neg
        thr = np.sort(p.ravel())[size * size // 2]
        p[p > thr] = 1
        p[p < 1] = 0
        gt = np.zeros((size, size))
        for x0, y0, x1, y1 in boxes[i]:
            if not np.isnan(x0):
                gt[int(y0 * size):int(y1 * size), int(x0 * size):int(x1 * size)] = 1
        infer = (p >= 0.5).astype(np.float64)
        out[i] = np.sum(infer * gt) / (np.sum(gt) + np.sum(infer * (gt == 0)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="number of heatmaps (default 5000)")
    ap.add_argument("--loop-n", type=int, default=None, help="samples for the loop baseline (default: all)")
    ap.add_argument("--workers", type=int, default=None, help="threads of the vectorised scorer (default: min(2, CPUs))")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of the vectorised scorer (best is reported)")
    args = ap.parse_args(argv)
    maps, boxes = make_data(args.n)
    score_arrays(maps[:32], boxes[:32], workers=args.workers)  # warm-up (caches, allocator)
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        res = score_arrays(maps, boxes, workers=args.workers)
        times.append(time.perf_counter() - t)
    t1 = time.perf_counter()
    one = score_arrays(maps, boxes, workers=1)
    t_one = time.perf_counter() - t1
    m = args.n if args.loop_n is None else min(args.loop_n, args.n)
    t = time.perf_counter()
    ref = loop_ciou(maps[:m], boxes[:m])
    t_loop = (time.perf_counter() - t) * args.n / m
    same = np.array_equal(res["ciou"][:m], ref) and np.array_equal(one["ciou"], res["ciou"])
    best = min(times)
    print(f"bench_localisation: {args.n} random 14x14 maps -> 224x224, median protocol, VGG-SS boxes")
    print(f"  vectorised scorer            : {best:7.3f} s   (best of {args.repeat}; "
          f"runs {', '.join(f'{x:.3f}' for x in times)}; also adaptive cIoU + pointing)")
    print(f"  vectorised scorer, 1 thread  : {t_one:7.3f} s")
    print(f"  per-sample NumPy loop        : {t_loop:7.3f} s" + (f"   (timed on {m}, scaled)" if m < args.n else ""))
    print(f"  speed ratio loop / vectorised: {t_loop / best:7.1f}x   (1 thread: {t_loop / t_one:.1f}x)")
    print(f"  per-sample cIoU identical    : {same}   cIoU@0.5 = {np.mean(res['ciou'] >= 0.5):.4f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
