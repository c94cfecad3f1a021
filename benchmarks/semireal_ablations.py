"""The papers' ablations on a semi-real set (issue 10): arms x seeds x budgets, scored on its test split.

Each arm is the demo preset (``synthetic/ssltie`` or ``synthetic/equiav``; ``--preset`` another one)
plus its overrides. Every trained model is also scored with the audio controls (each clip's
recording swapped for another class's, or silence; ``avssl.data.controls``): a score the control
also reaches is not evidence of listening.
For every (arm, seed) the budgets are trained in increasing order: with a constant learning rate
(SSL-TIE's multistep schedule whose first milestone lies beyond the largest budget) a budget
continues the previous one's run (``--resume`` with more epochs, the same as a fresh run of that
length); otherwise (EquiAV's cosine schedule) each budget is its own fresh run. After each budget
the checkpoint chosen on the val split (``best.pt``) is scored on the test split: the
localisation measures against the boxes and the exact masks, retrieval, the linear probe.
Results go to ``OUT/results.json`` (rewritten atomically after every stage: a killed study
resumes where it stopped); ``--report`` aggregates them (mean, std over seeds) into
``OUT/study.json``, ``OUT/study.md`` and a plot of each measure against the budget.

    python benchmarks/semireal_ablations.py --data DATA --out OUT --method ssltie \\
        --arm full --arm noequi:ssltie.equivariance=false --arm noinv:ssltie.invariance=false \\
        --seeds 0,1,2 --budgets 10,20,40 [--budgets-seeds 0]
    python benchmarks/semireal_ablations.py --out OUT --report

``--budgets-seeds`` restricts the budgets beyond the first to those seeds (the rest stop at the
first budget), to fit a CPU's time.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("semireal_ablations")

LOC = ("ciou_at_0.5", "auc", "adaptive_ciou_at_0.5", "pointing_accuracy")
MASK = ("mask_ciou_at_0.5", "mask_adaptive_ciou_at_0.5", "mask_pointing_accuracy")
RET = ("a2v_instance R1", "a2v_instance R5", "v2a_instance R1", "a2v_class R1", "a2a_class R1")
# the audio controls (avssl.data.controls): the same model on the same frames, the recording replaced
CTRL = ("pointing_accuracy", "swap pointing_accuracy", "silent pointing_accuracy", "adaptive_ciou_at_0.5",
        "swap adaptive_ciou_at_0.5", "swap map_correlation", "swap peak_moved", "a2v_class R1", "swap a2v_class R1")


def _arm(text: str) -> tuple[str, list[str]]:
    name, _, rest = text.partition(":")
    return name, [o for o in rest.split(",") if o]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _save(path: Path, obj) -> None:
    from avssl.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=1))


def _constant_lr(cfg, budget: int) -> bool:
    o = cfg.optim
    return o.schedule == "multistep" and not o.warmup_epochs and min(o.milestones, default=budget + 1) > budget


def _score(cfg, data: Path, run_dir: Path | None, test_records, train_records, datasets: dict) -> dict:
    """Scores of ``run_dir/best.pt`` (None: the untrained model of ``cfg``'s seed) on the test split."""
    from avssl.data.controls import AUDIO_CONTROLS
    from avssl.data.datasets import class_list
    from avssl.demo import _evaluate, _probe, _row, control_rows
    from avssl.eval.masks import mask_scores_by_id
    from avssl.eval.references import load_masks
    from avssl.registry import build_method, load_method, pipeline_for

    if run_dir is None:
        torch.manual_seed(cfg.train.seed)
        model, ckpt = build_method(cfg.method, cfg.method_config).eval(), {"extra": {"classes": class_list(train_records)}}
    else:
        model, ckpt = load_method(run_dir / "best.pt")
    classes = (ckpt.get("extra") or {}).get("classes")
    if "test" not in datasets:
        pipe = pipeline_for(cfg.method)
        datasets["test"] = pipe.dataset(test_records, cfg, train=False, classes=classes)
        datasets["train"] = pipe.dataset(train_records, cfg, train=False, classes=classes)
        datasets["masks"] = load_masks(data, test_records)
    scores, out = _evaluate(model, cfg, data, test_records, datasets["test"], AUDIO_CONTROLS)
    row = _row(scores)
    row.update({f"{c} {k}": v for c, r in control_rows(scores).items() for k, v in r.items()})
    masks = datasets["masks"]
    m = mask_scores_by_id({k: v for k, v in out.heatmaps.items() if k in masks}, masks)
    row.update({k: m[k] for k in MASK})
    row["probe accuracy"] = _probe(model, cfg, datasets["train"], out)
    row["best_epoch"] = ckpt.get("epoch")
    return row


def run_study(args) -> None:
    from avssl.data.manifest import read_manifest
    from avssl.demo import demo_config
    from avssl.engine.train import fit

    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {"method": args.method, "data": str(data), "rows": []}
    done = {(r["arm"], r["seed"], r["budget"]) for r in results["rows"]}
    test_records = read_manifest(data / "manifest.jsonl", split="test")
    train_records = read_manifest(data / "manifest.jsonl", split="train")
    datasets: dict = {}
    extra = list(args.overrides)
    if args.untrained:  # the same architecture untrained, per seed (budget 0)
        for seed in args.seeds:
            if ("untrained", seed, 0) not in done:
                cfg = demo_config(data, out / "runs" / "untrained", seed, 1, extra, args.method, args.preset)
                results["rows"].append({"arm": "untrained", "seed": seed, "budget": 0, "overrides": extra,
                                        **_score(cfg, data, None, test_records, train_records, datasets)})
                _save(path, results)
    arms = [_arm(a) for a in args.arm]
    for budget in args.budgets:  # every arm and seed at one budget before the next budget
        for arm, overrides in arms:
            for seed in args.seeds:
                if (arm, seed, budget) in done or (budget != args.budgets[0] and args.budgets_seeds is not None
                                                   and seed not in args.budgets_seeds):
                    continue
                probe_cfg = demo_config(data, out, seed, budget, [*overrides, *extra], args.method, args.preset)
                chained = _constant_lr(probe_cfg, max(args.budgets))
                run_dir = out / "runs" / (f"{arm}_seed{seed}" if chained else f"{arm}_seed{seed}_e{budget}")
                cfg = demo_config(data, run_dir, seed, budget, [*overrides, *extra], args.method, args.preset)
                t0 = time.perf_counter()
                resume = (run_dir / "last.pt").is_file()
                log.info("%s seed %d: training to %d epochs in %s%s", arm, seed, budget, run_dir,
                         " (continuing)" if resume else "")
                summary = fit(cfg, resume=resume)
                seconds = time.perf_counter() - t0
                row = {"arm": arm, "seed": seed, "budget": budget, "overrides": overrides + extra,
                       "train_seconds": round(seconds, 1), "chained": chained,
                       **_score(cfg, data, run_dir, test_records, train_records, datasets)}
                row["history"] = summary.get("history")
                results["rows"].append(row)
                _save(path, results)
                log.info("%s seed %d budget %d: %s", arm, seed, budget,
                         {k: round(v, 3) for k, v in row.items() if k in (*LOC, *MASK, "a2v_class R1")})


def _stats(values) -> dict:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}


def report(args) -> None:
    out = Path(args.out)
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    refs = json.loads((Path(results["data"]) / "reference_scores.json").read_text())
    keys = [k for k in dict.fromkeys((*LOC, *MASK, *RET, "probe accuracy", *CTRL)) if all(k in r for r in rows)]
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    budgets = sorted({r["budget"] for r in rows})
    table = {a: {b: {k: _stats([r[k] for r in rows if r["arm"] == a and r["budget"] == b]) for k in keys}
                 for b in budgets if any(r["arm"] == a and r["budget"] == b for r in rows)} for a in arms}
    ref = {name: {**{k: v[k] for k in LOC if k in v}, **{k: v["mask"][k] for k in MASK if "mask" in v}}
           for name, v in refs.items() if name in ("centre_prior", "random", "perfect", "perfect_mask")}
    _save(out / "study.json", {"table": table, "references": ref, "data": results["data"]})
    lines = []
    for group in ([k for k in (*LOC, *MASK) if k in keys], [k for k in (*RET, "probe accuracy") if k in keys],
                  [k for k in CTRL if k in keys and (k.startswith(("swap", "silent")) or k in ("pointing_accuracy",))]):
        if group:
            lines += _table(table, ref, group) + [""]
    (out / "study.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    # the budget curves: per arm, only the seeds trained at every budget (the same runs continued)
    curves = {}
    for a in arms:
        mine = [r for r in rows if r["arm"] == a]
        top = max(r["budget"] for r in mine)
        seeds = {r["seed"] for r in mine if r["budget"] == top}
        curves[a] = {b: {k: _stats([r[k] for r in mine if r["budget"] == b and r["seed"] in seeds]) for k in keys}
                     for b in sorted({r["budget"] for r in mine})}
    _plot(out / "study_budget.png", curves, table, ref,
          [k for k in (*LOC[2:], *MASK[1:], "a2v_class R1", "probe accuracy") if k in keys])


SHORT = {"ciou_at_0.5": "cIoU@0.5", "auc": "AUC", "adaptive_ciou_at_0.5": "adaptive cIoU@0.5",
         "pointing_accuracy": "pointing", "mask_ciou_at_0.5": "mask cIoU@0.5",
         "mask_adaptive_ciou_at_0.5": "mask adaptive cIoU@0.5", "mask_pointing_accuracy": "mask pointing",
         "probe accuracy": "probe", "swap pointing_accuracy": "pointing, swapped recording",
         "silent pointing_accuracy": "pointing, silence", "swap adaptive_ciou_at_0.5": "adaptive cIoU@0.5, swapped",
         "swap map_correlation": "map corr. own vs swapped", "swap peak_moved": "peaks moved (swap)",
         "swap a2v_class R1": "a2v_class R1, swapped"}


def _table(table: dict, ref: dict, keys) -> list[str]:
    """Markdown rows: mean ± std over seeds per (arm, budget), then the reference maps."""
    lines = [f"| arm | epochs | seeds | {' | '.join(SHORT.get(k, k) for k in keys)} |", "|" + "---|" * (len(keys) + 3)]
    for a, cells in table.items():
        for b, cell in cells.items():
            n = next(iter(cell.values()))["n"]
            lines.append(f"| {a} | {b or '-'} | {n} | " + " | ".join(
                f"{cell[k]['mean']:.3f} ± {cell[k]['std']:.3f}" if n > 1 else f"{cell[k]['mean']:.3f}" for k in keys)
                + " |")
    for name, v in ref.items():
        if any(k in v for k in keys):
            lines.append(f"| reference: {name.replace('_', ' ')} | | | " + " | ".join(
                f"{v[k]:.3f}" if k in v else "" for k in keys) + " |")
    return lines


def _plot(path: Path, curves: dict, table: dict, ref: dict, keys) -> None:
    """Each measure against the budget: per arm a line through the seeds trained at every budget,
    and at each budget the mean ± std over all its seeds (error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, k in zip(axes.flat, keys, strict=False):
        for i, (a, cells) in enumerate(curves.items()):
            if sorted(cells) == [0]:  # the untrained model: a level, not a curve
                ax.axhline(cells[0][k]["mean"], color="black", ls=":", lw=1, label=a)
                continue
            b = sorted(x for x in cells if x > 0)
            line, = ax.plot(b, [cells[x][k]["mean"] for x in b], marker="o", label=a)
            full = [x for x in b if table[a][x][k]["n"] > 1]
            ax.errorbar([x * (1 + 0.03 * (i - 1)) for x in full], [table[a][x][k]["mean"] for x in full],
                        yerr=[table[a][x][k]["std"] for x in full], fmt="none", capsize=3, color=line.get_color())
        if "centre_prior" in ref and k in ref["centre_prior"]:
            ax.axhline(ref["centre_prior"][k], color="grey", ls="--", lw=1, label="centre prior")
        ax.set_xscale("log", base=2)
        budgets = sorted({x for cells in curves.values() for x in cells if x > 0})
        ax.set_xticks(budgets, [str(x) for x in budgets])
        ax.set_xlabel("epochs")
        ax.set_title(SHORT.get(k, k), fontsize=9)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("lines: the seeds trained at every budget; error bars: mean ± std over all seeds of a budget",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot: {path}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="a semi-real set (avssl synth ... --source cutouts:PATH)")
    p.add_argument("--out", required=True)
    p.add_argument("--method", default="ssltie", choices=("ssltie", "equiav"))
    p.add_argument("--preset", default=None,
                   help="the preset every arm starts from (default: the method's demo preset, synthetic/<method>)")
    p.add_argument("--arm", action="append", default=[], help="NAME[:key=value,...] (repeatable)")
    p.add_argument("--seeds", type=_ints, default=[0])
    p.add_argument("--budgets", type=_ints, default=[10])
    p.add_argument("--budgets-seeds", type=_ints, default=None)
    p.add_argument("--untrained", action="store_true", help="also score the untrained model of each seed")
    p.add_argument("--report", action="store_true", help="aggregate OUT/results.json and plot")
    p.add_argument("overrides", nargs="*", help="key=value overrides for every arm")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.report:
        report(args)
        return 0
    if not args.data or not (args.arm or args.untrained):
        p.error("--data and at least one --arm (or --untrained) are needed (or --report)")
    run_study(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
