"""The demo report: the same numbers as JSON (``report.json``) and as an HTML page.

The report is a plain dict::

    {"title": str, "commands": [str], "data": {...},
     "localisation": {row name: scorer dict}, "audio_dependence": {row name: {measure: value}},
     "retrieval": {row name: {metric: value}},
     "probe": {row name: {metric: value}}, "figures": {caption: relative PNG path}, "notes": [str]}

Every section but the title is optional; tables list the rows in insertion order.
"""
from __future__ import annotations

import html
import json
import os
from pathlib import Path

LOCALISATION_COLUMNS = (
    ("ciou_at_0.5", "cIoU@0.5"),
    ("auc", "AUC"),
    ("mean_ciou", "mean cIoU"),
    ("adaptive_ciou_at_0.5", "adaptive cIoU@0.5"),
    ("pointing_accuracy", "pointing"),
    ("n_scored", "n"),
)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, dict) and "mean" in v:
        return f"{v['mean']:.3f} ± {v.get('std', 0.0):.3f}"
    return html.escape(str(v))


def _table(rows: dict[str, dict], columns: tuple[tuple[str, str], ...] | None = None) -> str:
    if not rows:
        return ""
    if columns is None:
        keys = list(dict.fromkeys(k for r in rows.values() for k in r))
        columns = tuple((k, k) for k in keys)
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in columns)
    body = "".join(
        "<tr><th>" + html.escape(name) + "</th>"
        + "".join(f"<td>{_fmt(r.get(k, ''))}</td>" for k, _ in columns) + "</tr>"
        for name, r in rows.items()
    )
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def render_html(report: dict) -> str:
    """The report as a self-contained HTML page (figures are linked relative PNGs)."""
    parts = [f"<h1>{html.escape(report.get('title', 'avssl report'))}</h1>"]
    if report.get("commands"):
        parts.append("<h2>Reproduce</h2><pre>" + html.escape("\n".join(report["commands"])) + "</pre>")
    if report.get("data"):
        parts.append("<h2>Data</h2>" + _table({k: {"value": v} for k, v in report["data"].items()}))
    if report.get("localisation"):
        parts.append("<h2>Sound localisation (test split)</h2>"
                     + _table(report["localisation"], LOCALISATION_COLUMNS))
    for key, title in (("audio_dependence", "Audio dependence: the maps with the own recording vs a replaced one"),
                       ("localisation_masks", "Localisation against the exact masks"), ("retrieval", "Retrieval"),
                       ("probe", "Linear probe")):
        if report.get(key):
            parts.append(f"<h2>{title}</h2>" + _table(report[key]))
    for caption, rel in (report.get("figures") or {}).items():
        parts.append(f"<figure><img src='{html.escape(rel)}' style='max-width:100%'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    if report.get("notes"):
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in report["notes"]) + "</ul>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "pre{background:#f4f4f4;padding:1em}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>avssl report</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"


def write_report(report: dict, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``out_dir``; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js, page = out / "report.json", out / "report.html"
    js.write_text(json.dumps(report, indent=2), encoding="utf-8")
    page.write_text(render_html(report), encoding="utf-8")
    return js, page
