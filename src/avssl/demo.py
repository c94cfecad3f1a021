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

from avssl.data.controls import AUDIO_CONTROLS

log = logging.getLogger(__name__)

METRICS = ("ciou_at_0.5", "auc", "mean_ciou", "adaptive_ciou_at_0.5", "pointing_accuracy")
RETRIEVAL = (("a2v_instance", "R1"), ("a2v_instance", "R5"), ("v2a_instance", "R1"), ("a2v_class", "R1"),
             ("a2a_class", "R1"))
RETRIEVAL_KEYS = tuple(f"{name} {k}" for name, k in RETRIEVAL)
PROBE_KEYS = ("probe accuracy",)


def _demo_methods() -> dict[str, str]:
    """Method -> its demo preset, for the registered methods that have one."""
    from avssl.registry import METHODS

    return {name: spec.preset for name, spec in METHODS.items() if spec.demo}


def _title(method: str) -> str:
    from avssl.registry import METHODS

    return METHODS[method].title if method in METHODS else method


def demo_config(data: Path, run_dir: Path, seed: int, epochs: int | None = None, overrides=(),
                method: str = "ssltie", preset: str | None = None):
    """The packaged ``synthetic/<method>`` preset (or ``preset``) pointed at ``data``."""
    from avssl.config import load_config
    from avssl.train_config import TrainConfig

    ann = data / "annotations" / "vggss.json"
    paths = [f"data.train_manifest={data / 'manifest.jsonl'}", f"data.val_manifest={data / 'manifest.jsonl'}",
             f"data.test_manifest={data / 'manifest.jsonl'}", f"data.annotations={ann}",
             f"train.out_dir={run_dir}", f"train.seed={seed}", "train.progress=false"]
    if epochs is not None:
        paths.append(f"train.epochs={epochs}")
    return load_config(TrainConfig, [preset or _demo_methods()[method]], [*paths, *overrides])


#: The audio controls (every trained model is scored with all of them): how the report names them.
CONTROL_TITLES = {"swap": "another clip's recording", "silent": "silence"}
DEPENDENCE_KEYS = ("map_correlation", "peak_moved")


def _evaluate(model, cfg, data: Path, records, dataset, controls=()) -> tuple[dict, object]:
    from avssl.engine.evaluate import evaluate_localisation

    return evaluate_localisation(model, records, cfg, data / "annotations" / "vggss.json", "vggss",
                                 num_workers=0, dataset=dataset, audio_controls=controls)


def _row(scores: dict) -> dict:
    row = {m: scores[m] for m in METRICS if m in scores}
    for name, k in RETRIEVAL:
        if name in scores.get("retrieval", {}):
            row[f"{name} {k}"] = scores["retrieval"][name][k]
    return row


def control_rows(scores: dict) -> dict[str, dict]:
    """{control: its score row, plus ``map_correlation`` and ``peak_moved``} of scores with audio controls."""
    rows = {}
    for name, c in (scores.get("audio_control") or {}).items():
        dep = scores["audio_dependence"][name]
        rows[name] = {**_row(c), **{k: dep[k] for k in DEPENDENCE_KEYS}}
    return rows


def _probe(model, cfg, train_ds, test_out) -> float:
    """Linear-probe accuracy: logistic regression on the frozen [audio, visual] evaluation
    embeddings of the training split, scored on the test split's."""
    from avssl.engine.evaluate import evaluate_localisation
    from avssl.eval.probe import linear_probe_accuracy

    _, train_out = evaluate_localisation(model, train_ds.records, cfg, None, with_retrieval=False,
                                         num_workers=0, dataset=train_ds)
    feats = lambda o: torch.cat([o.audio, o.visual], dim=1)  # noqa: E731
    return linear_probe_accuracy(feats(train_out), train_out.labels, feats(test_out), test_out.labels)


def _only(rows: list[dict], keys) -> list[dict]:
    return [{k: r[k] for k in keys if k in r} for r in rows]


def _aggregate(rows: list[dict]) -> dict:
    if len(rows) == 1:
        return rows[0]
    return {k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows])),
                "runs": [r[k] for r in rows]} for k in rows[0]}


def _curve(histories: dict[str, dict[int, list[dict]]], path: Path) -> Path:
    """One row per method: training loss, and the val metrics per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    val_keys = {"ssltie": ("val/adaptive_ciou_at_0.5", "val/pointing_accuracy"),
                "equiav": ("val/a2v_class_R1", "val/a2v_instance_R5")}
    fig = Figure(figsize=(10, 3.5 * len(histories)))
    axes = fig.subplots(len(histories), 2, squeeze=False)
    for (ax1, ax2), (method, per_seed) in zip(axes, histories.items(), strict=True):
        name = _title(method)
        for seed, hist in per_seed.items():
            ep = [h["epoch"] for h in hist]
            ax1.plot(ep, [h["train/loss"] for h in hist], label=f"seed {seed}")
            for key, style in zip(val_keys.get(method, ()), ("-", "--"), strict=False):
                if all(key in h for h in hist):
                    ax2.plot(ep, [h[key] for h in hist], style, label=f"{key[4:]} (seed {seed})")
        ax1.set(xlabel="epoch", ylabel="training loss", title=f"{name} training loss")
        ax2.set(xlabel="epoch", ylabel="val score", title=f"{name} validation")
        ax1.legend(fontsize=7)
        ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _train_and_score(method: str, data: Path, out: Path, seeds, epochs, overrides, test_records,
                     timings: dict) -> dict:
    """Train ``method`` per seed (a rerun reuses finished runs), score trained and untrained
    models on the test split: localisation, retrieval and the linear probe."""
    from avssl.data.manifest import read_manifest
    from avssl.engine.train import fit
    from avssl.registry import build_method, load_method, pipeline_for

    res: dict = {"trained": [], "untrained": [], "histories": {}, "cfg": None, "ds": None, "heatmaps": None,
                 **{f"trained, {c}": [] for c in AUDIO_CONTROLS}}
    train_records = read_manifest(data / "manifest.jsonl", split="train")
    train_ds = None
    for seed in seeds:
        run_dir = out / "runs" / f"{method}_seed{seed}"
        cfg = demo_config(data, run_dir, seed, epochs, overrides, method)
        t0 = time.perf_counter()
        if (run_dir / "summary.json").is_file():
            summary = json.loads((run_dir / "summary.json").read_text())
        else:
            log.info("demo: training %s, seed %d -> %s", _title(method), seed, run_dir)
            summary = fit(cfg, resume=(run_dir / "last.pt").is_file())
            (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        timings[f"{_title(method)} training, seed {seed} (s)"] = round(time.perf_counter() - t0, 1)
        res["histories"][seed] = summary["history"]
        if res["ds"] is None:
            pipe = pipeline_for(cfg.method)
            res["cfg"] = cfg
            res["ds"] = pipe.dataset(test_records, cfg, train=False, classes=summary.get("classes"))
            train_ds = pipe.dataset(train_records, cfg, train=False, classes=summary.get("classes"))
        torch.manual_seed(cfg.train.seed)
        models = {"untrained": build_method(cfg.method, cfg.method_config).eval(),
                  "trained": load_method(run_dir / "best.pt")[0]}
        for kind in ("trained", "untrained"):
            scores, outputs = _evaluate(models[kind], cfg, data, test_records, res["ds"],
                                        AUDIO_CONTROLS if kind == "trained" else ())
            row = _row(scores)
            row["probe accuracy"] = _probe(models[kind], cfg, train_ds, outputs)
            res[kind].append(row)
            for c, c_row in control_rows(scores).items():
                res[f"trained, {c}"].append(c_row)
            if kind == "trained" and res["heatmaps"] is None:
                res["heatmaps"], res["control_heatmaps"] = outputs.heatmaps, outputs.controls
    return res


def _source_flags(source, backgrounds, exclude) -> str:
    if not source:
        return ""
    return (f" --data semireal --source cutouts:{source}" + (f" --backgrounds {backgrounds}" if backgrounds else "")
            + (f" --exclude {','.join(exclude)}" if exclude else ""))


def _mask_table(data: Path, results: dict, refs: dict, seed: int) -> dict:
    """Rows of the trained models' (first seed) and the references' scores against the masks."""
    from avssl.data.manifest import read_manifest
    from avssl.eval.masks import mask_scores_by_id
    from avssl.eval.references import load_masks

    masks = load_masks(data, read_manifest(data / "manifest.jsonl", split="test"))
    keep = ("mask_ciou_at_0.5", "mask_auc", "mask_adaptive_ciou_at_0.5", "mask_pointing_accuracy", "n_scored")
    rows = {}
    for m, r in results.items():
        maps = {"": r["heatmaps"], **{f", {CONTROL_TITLES[c]}": h for c, h in (r.get("control_heatmaps") or {}).items()}}
        for suffix, heatmaps in maps.items():
            scores = mask_scores_by_id({k: v for k, v in heatmaps.items() if k in masks}, masks)
            rows[f"{_title(m)} trained (seed {seed}){suffix}"] = {k: scores[k] for k in keep}
    rows.update({f"reference: {k.replace('_', ' ')}": {m: v["mask"][m] for m in keep}
                 for k, v in refs.items() if "mask" in v})
    return rows


def run_demo(out: str | os.PathLike, clips: int = 600, data_seed: int = 0, seeds=(0,), epochs: int | None = None,
             workers: int | None = None, size: int = 128, overrides=(), methods=("ssltie", "equiav"),
             source: str | None = None, backgrounds: str | None = None, exclude=()) -> dict:
    """Run the demo into ``out``; returns the report dict (also written as report.json/html).

    With ``source`` (a folder or ``.deb`` of cut-outs, :mod:`avssl.data.semireal`) the data are
    semi-real scenes (in ``out/data_semireal``; ``backgrounds``: photographs, ``exclude``:
    source folders left out) and the report adds the scores against the exact masks."""
    from avssl.data.manifest import read_manifest
    from avssl.data.synthetic import SynthConfig, generate
    from avssl.engine.evaluate import best_worst_sheet, load_annotations
    from avssl.eval.references import reference_scores
    from avssl.report import write_report

    demos = _demo_methods()
    unknown = [m for m in methods if m not in demos]
    if unknown or not methods:
        raise ValueError(f"demo methods must be among {sorted(demos)}, got {list(methods)}")
    out = Path(out)
    data = out / ("data_semireal" if source else "data")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if not (data / "reference_scores.json").is_file():
        log.info("demo: generating %d %s clips (%d px) into %s", clips, "semi-real" if source else "synthetic",
                 size, data)
        if source:
            from avssl.data.semireal import SemiRealConfig, generate_semireal

            generate_semireal(data, source, clips=clips, seed=data_seed, backgrounds=backgrounds,
                              config=SemiRealConfig(size=size, workers=workers, exclude=tuple(exclude)))
        else:
            generate(data, clips=clips, seed=data_seed, config=SynthConfig(size=size, workers=workers))
        reference_scores(data, seed=data_seed)
    timings[f"{'semi-real' if source else 'synthetic'} data (s)"] = round(time.perf_counter() - t0, 1)
    refs = json.loads((data / "reference_scores.json").read_text())
    test_records = read_manifest(data / "manifest.jsonl", split="test")
    boxes = load_annotations(data / "annotations" / "vggss.json", "vggss")

    n = f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
    results = {m: _train_and_score(m, data, out, seeds, epochs, overrides, test_records, timings) for m in methods}
    localisation, retrieval, probe, figures, details, dependence = {}, {}, {}, {}, {}, {}
    for m, r in results.items():
        name = _title(m)
        zs = " (zero-shot)" if m == "equiav" else ""
        localisation[f"{name} trained{zs} ({n})"] = _aggregate(_only(r["trained"], METRICS))
        for c in AUDIO_CONTROLS:  # the control rows: the same trained models, the recording replaced
            localisation[f"{name} trained{zs}, {CONTROL_TITLES[c]} ({n})"] = _aggregate(
                _only(r[f"trained, {c}"], METRICS))
            dependence[f"{name} trained, {CONTROL_TITLES[c]} ({n})"] = _aggregate(
                _only(r[f"trained, {c}"], DEPENDENCE_KEYS))
        localisation[f"{name} untrained{zs}"] = _aggregate(_only(r["untrained"], METRICS))
        for kind in ("trained", "untrained"):
            retrieval[f"{name} {kind}"] = _aggregate(_only(r[kind], RETRIEVAL_KEYS))
            probe[f"{name} {kind}"] = _aggregate(_only(r[kind], PROBE_KEYS))
        for c in AUDIO_CONTROLS:
            retrieval[f"{name} trained, {CONTROL_TITLES[c]}"] = _aggregate(_only(r[f"trained, {c}"], RETRIEVAL_KEYS))
        c = r["cfg"]
        details[f"{name} epochs"] = c.train.epochs
        details[f"{name} model"] = (f"ResNet-18 width {c.ssltie.width}, {c.ssltie.image_size} px" if m == "ssltie"
                                    else f"ViT width {c.equiav.embed_dim}, depth {c.equiav.depth}, patch "
                                         f"{c.equiav.patch_size}, {c.equiav.img_size} px, centroid S={c.equiav.num_centroid}")
        sheet = best_worst_sheet(r["ds"], r["heatmaps"], boxes, "vggss", out / f"best_worst_{m}.png")
        if sheet is not None:
            figures[f"{name}: best and worst test clips by cIoU (seed {seeds[0]}; boxes in green)"] = sheet.name
    localisation.update({f"reference: {k.replace('_', ' ')}": {m: v[m] for m in (*METRICS, "n_scored")}
                         for k, v in refs.items()})
    masks_table = _mask_table(data, results, refs, seeds[0]) if source else {}
    curve = _curve({m: r["histories"] for m, r in results.items()}, out / "training_curve.png")
    figures = {"Training loss and validation scores per epoch": curve.name, **figures}

    seed_txt = ",".join(str(s) for s in seeds)
    report = {
        "title": "avssl demo: " + " and ".join(_title(m) for m in methods)
                 + (" on semi-real scenes (real cut-outs and recordings)" if source
                    else " on the synthetic audio-visual benchmark"),
        "commands": [f"avssl demo {out} --clips {clips} --seeds {seed_txt} --methods {','.join(methods)}"
                     + (f" --epochs {epochs}" if epochs else "") + _source_flags(source, backgrounds, exclude)
                     + "".join(f" {o}" for o in overrides)],
        "data": {"clips": clips, "frame size": size, "data seed": data_seed, "training seeds": seed_txt,
                 **details, **timings},
        "localisation": localisation,
        "audio_dependence": dependence,
        **({"localisation_masks": masks_table} if masks_table else {}),
        "retrieval": retrieval,
        "probe": probe,
        "figures": figures,
        "notes": [
            "Each checkpoint is the best epoch on the validation split; every score here is on the test split.",
            "Audio controls: the rows 'another clip's recording' and 'silence' score the same trained models on the "
            "same frames with each clip's recording replaced by another clip's (of another class; a fixed "
            "derangement) or by zeros. A score the control also reaches is visual saliency, not listening. Audio "
            "dependence: the mean per-clip correlation of the maps with the own and the replaced recording, and "
            "the share of clips whose peak moves.",
            "cIoU@0.5 uses the released median rule, which caps cIoU at twice the box's share of the image; "
            "adaptive cIoU@0.5 and pointing accuracy have no such cap.",
            "EquiAV's maps are zero-shot: the audio inter-modal embedding against every visual patch token "
            "through the visual inter head (docs/methods.md §2.7); EquiAV is not trained to localise.",
            "Retrieval R1/R5: a2v_instance = the paired clip ranks in the top 1/5; a2v/a2a_class = a clip of the "
            "same class ranks first (a2a excludes the query).",
            "Linear probe: logistic regression on the frozen [audio, visual] evaluation embeddings of the "
            "training split, accuracy on the test split's classes.",
        ],
    }
    write_report(report, out)
    return report
