"""The demo job: synthetic data -> SSL-TIE training -> test-split evaluation -> report.

Every number in the report is computed in the run that writes it: the trained model (its
checkpoint chosen on the *val* split), the same architecture untrained, and the reference maps
(centre prior, perfect box, random), all scored on the *test* split with the standard
scorer. Over several seeds the report gives mean and standard deviation.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

METRICS = ("ciou_at_0.5", "auc", "mean_ciou", "adaptive_ciou_at_0.5", "pointing_accuracy")
RETRIEVAL = (("a2v_instance", "R1"), ("a2v_class", "R1"), ("a2a_class", "R1"))
RETRIEVAL_KEYS = tuple(f"{name} {k}" for name, k in RETRIEVAL)


def demo_config(data: Path, run_dir: Path, seed: int, epochs: int | None = None, overrides=()):
    """The packaged ``synthetic/ssltie`` preset pointed at ``data``."""
    from avssl.config import load_config
    from avssl.train_config import TrainConfig

    ann = data / "annotations" / "vggss.json"
    paths = [f"data.train_manifest={data / 'manifest.jsonl'}", f"data.val_manifest={data / 'manifest.jsonl'}",
             f"data.test_manifest={data / 'manifest.jsonl'}", f"data.annotations={ann}",
             f"train.out_dir={run_dir}", f"train.seed={seed}", "train.progress=false"]
    if epochs is not None:
        paths.append(f"train.epochs={epochs}")
    return load_config(TrainConfig, ["synthetic/ssltie"], [*paths, *overrides])


def _evaluate(model, cfg, data: Path, records, dataset) -> tuple[dict, object]:
    from avssl.engine.evaluate import evaluate_localisation

    return evaluate_localisation(model, records, cfg, data / "annotations" / "vggss.json", "vggss",
                                 num_workers=0, dataset=dataset)


def _row(scores: dict) -> dict:
    row = {m: scores[m] for m in METRICS if m in scores}
    for name, k in RETRIEVAL:
        if name in scores.get("retrieval", {}):
            row[f"{name} {k}"] = scores["retrieval"][name][k]
    return row


def _only(rows: list[dict], keys) -> list[dict]:
    return [{k: r[k] for k in keys if k in r} for r in rows]


def _aggregate(rows: list[dict]) -> dict:
    if len(rows) == 1:
        return rows[0]
    return {k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows])),
                "runs": [r[k] for r in rows]} for k in rows[0]}


def _curve(histories: dict[int, list[dict]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.5))
    ax1, ax2 = fig.subplots(1, 2)
    for seed, hist in histories.items():
        ep = [h["epoch"] for h in hist]
        ax1.plot(ep, [h["train/loss"] for h in hist], label=f"seed {seed}")
        for key, style in (("val/adaptive_ciou_at_0.5", "-"), ("val/pointing_accuracy", "--")):
            if all(key in h for h in hist):
                ax2.plot(ep, [h[key] for h in hist], style, label=f"{key[4:]} (seed {seed})")
    ax1.set(xlabel="epoch", ylabel="training loss", title="SSL-TIE training loss")
    ax2.set(xlabel="epoch", ylabel="val score", title="validation localisation")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def run_demo(out: str | os.PathLike, clips: int = 600, data_seed: int = 0, seeds=(0,), epochs: int | None = None,
             workers: int | None = None, size: int = 128, overrides=()) -> dict:
    """Run the demo into ``out``; returns the report dict (also written as report.json/html)."""
    from avssl.data.manifest import read_manifest
    from avssl.data.synthetic import SynthConfig, generate
    from avssl.engine.evaluate import best_worst_sheet, load_annotations
    from avssl.engine.pipelines import pipeline_for
    from avssl.engine.train import fit
    from avssl.registry import build_method, load_method
    from avssl.report import write_report

    out = Path(out)
    data = out / "data"
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if not (data / "reference_scores.json").is_file():
        log.info("demo: generating %d synthetic clips (%d px) into %s", clips, size, data)
        generate(data, clips=clips, seed=data_seed, config=SynthConfig(size=size, workers=workers))
    timings["synthetic data (s)"] = round(time.perf_counter() - t0, 1)
    refs = json.loads((data / "reference_scores.json").read_text())

    test_records = read_manifest(data / "manifest.jsonl", split="test")
    trained, untrained, histories, cfg0, ds = [], [], {}, None, None
    for seed in seeds:
        run_dir = out / "runs" / f"ssltie_seed{seed}"
        cfg = demo_config(data, run_dir, seed, epochs, overrides)
        t0 = time.perf_counter()
        if (run_dir / "summary.json").is_file():
            summary = json.loads((run_dir / "summary.json").read_text())
        else:
            log.info("demo: training SSL-TIE, seed %d -> %s", seed, run_dir)
            summary = fit(cfg, resume=(run_dir / "last.pt").is_file())
            (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        timings[f"training seed {seed} (s)"] = round(time.perf_counter() - t0, 1)
        histories[seed] = summary["history"]
        model, _ = load_method(run_dir / "best.pt")
        if ds is None:
            cfg0 = cfg
            ds = pipeline_for(cfg.method).dataset(test_records, cfg, train=False, classes=summary.get("classes"))
        scores, outputs = _evaluate(model, cfg, data, test_records, ds)
        trained.append(_row(scores))
        if seed == seeds[0]:
            heatmaps = outputs.heatmaps
        torch.manual_seed(cfg.train.seed)
        scores_u, _ = _evaluate(build_method(cfg.method, cfg.method_config).eval(), cfg, data, test_records, ds)
        untrained.append(_row(scores_u))

    figures = {}
    curve = _curve(histories, out / "training_curve.png")
    figures["Training loss and validation localisation per epoch"] = curve.name
    sheet = best_worst_sheet(ds, heatmaps, load_annotations(data / "annotations" / "vggss.json", "vggss"),
                             "vggss", out / "best_worst.png")
    if sheet is not None:
        figures[f"Best and worst test clips by cIoU (seed {seeds[0]}; boxes in green)"] = sheet.name

    seed_txt = ",".join(str(s) for s in seeds)
    report = {
        "title": "avssl demo: SSL-TIE on the synthetic audio-visual benchmark",
        "commands": [f"avssl demo {out} --clips {clips} --seeds {seed_txt}"
                     + (f" --epochs {epochs}" if epochs else "")],
        "data": {"clips": clips, "frame size": size, "data seed": data_seed, "training seeds": seed_txt,
                 "epochs": cfg0.train.epochs, "ResNet width": cfg0.ssltie.width,
                 "image size": cfg0.ssltie.image_size, **timings},
        "localisation": {
            f"SSL-TIE trained ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})": _aggregate(_only(trained, METRICS)),
            "SSL-TIE untrained": _aggregate(_only(untrained, METRICS)),
            **{f"reference: {k.replace('_', ' ')}": {m: v[m] for m in (*METRICS, "n_scored")} for k, v in refs.items()},
        },
        "retrieval": {"SSL-TIE trained": _aggregate(_only(trained, RETRIEVAL_KEYS)),
                      "SSL-TIE untrained": _aggregate(_only(untrained, RETRIEVAL_KEYS))},
        "figures": figures,
        "notes": [
            "The checkpoint is the best epoch on the validation split; every score here is on the test split.",
            "cIoU@0.5 uses the released median rule, which caps cIoU at twice the box's share of the image; "
            "adaptive cIoU@0.5 and pointing accuracy have no such cap.",
            "Retrieval R1: a2v_instance = the paired clip ranks first; a2v/a2a_class = a clip of the same class does.",
        ],
    }
    write_report(report, out)
    return report
