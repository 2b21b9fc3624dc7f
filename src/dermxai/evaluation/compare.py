"""``compare``: one Markdown table of several evaluated runs, as in the source study plus honest extras."""

from __future__ import annotations

import json
from pathlib import Path

from dermxai.evaluation.report import fmt
from dermxai.models.bundle import is_bundle, read_config

EXPLAIN_FILE = "explain_metrics.json"


def find_metrics(run_dir: Path) -> Path | None:
    """``RUN_DIR/metrics.json``, else the single ``RUN_DIR/*/metrics.json``; None when there is none."""
    if (run_dir / "metrics.json").is_file():
        return run_dir / "metrics.json"
    found = sorted(run_dir.glob("*/metrics.json"))
    if len(found) > 1:
        raise ValueError(
            f"{run_dir}: several evaluations ({', '.join(str(f.parent) for f in found)}); pass the one to compare"
        )
    return found[0] if found else None


def load_run(run_dir: Path) -> dict:
    """Metrics (possibly empty), provenance and the optional explanation scores of one run folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: no such run folder")
    path = find_metrics(run_dir)
    metrics = json.loads(path.read_text()) if path else {}
    provenance = metrics.get("provenance")
    if provenance is None:
        if not is_bundle(run_dir / "bundle"):
            raise ValueError(f"{run_dir}: neither metrics.json (from `dermxai evaluate`) nor a bundle/ folder")
        config = read_config(run_dir / "bundle")
        provenance = {**config.to_dict(), "train_hardware": config.hardware}
    explain = next(
        (
            p
            for p in (run_dir / EXPLAIN_FILE, path.parent / EXPLAIN_FILE if path else None)
            if p is not None and p.is_file()
        ),
        None,
    )
    return {
        "name": run_dir.name,
        "metrics": metrics,
        "provenance": provenance,
        "explain": json.loads(explain.read_text()) if explain else None,
    }


def _cell(metrics: dict, key: str) -> str:
    if key not in metrics:
        return "not evaluated"
    lo, hi = metrics.get("ci95", {}).get(key, [None, None])
    return f"{fmt(metrics[key])} [{fmt(lo)}, {fmt(hi)}]"


def _energy(entry: dict | None) -> str:
    if not entry:
        return "n/a"
    lo, hi = entry.get("ci95", [None, None])
    return f"{fmt(entry.get('mean'))} [{fmt(lo)}, {fmt(hi)}]"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "not recorded"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def compare_table(run_dirs: list[Path]) -> str:
    """The Markdown table (and notes) for ``run_dirs``."""
    runs = [load_run(Path(d)) for d in run_dirs]
    for run in runs:
        m = run["metrics"]
        if m:
            m.setdefault("malignant_sensitivity", m["malignant"]["sensitivity"])
    columns = [
        "Model",
        "Accuracy",
        "Precision (macro)",
        "Recall (macro)",
        "F1 (macro)",
        "Training time",
        "Balanced accuracy",
        "Macro AUC",
        "ECE",
        "Malignant sensitivity",
        "Resolution",
        "Weights",
        "Epochs",
        "Training hardware",
    ]
    with_explain = any(r["explain"] for r in runs)
    if with_explain:
        columns.append("CAM in-mask energy (Gaussian baseline)")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for run in runs:
        m, p = run["metrics"], run["provenance"]
        cells = [
            f"{run['name']} ({p.get('arch')})",
            *[_cell(m, k) for k in ("accuracy", "macro_precision", "macro_recall", "macro_f1")],
            _duration(p.get("train_time_s")),
            *[_cell(m, k) for k in ("balanced_accuracy", "macro_auc", "ece", "malignant_sensitivity")],
            f"{p.get('height')}x{p.get('width')}",
            "each member's own" if p.get("arch") == "ensemble" else str(p.get("weights")),
            "per member" if p.get("arch") == "ensemble" else str(p.get("epochs_trained")),
            p.get("train_hardware") or "not recorded",
        ]
        if with_explain:
            e = run["explain"] or {}
            gaussian = e.get("baselines", {}).get("gaussian", {}).get("in_mask_energy")
            cells.append(f"{_energy(e.get('in_mask_energy'))} ({_energy(gaussian)})" if e else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Values: point estimate [95% bootstrap CI]. Precision, recall and F1 are macro averages; "
        "balanced accuracy = mean per-class recall; malignant = akiec+bcc+mel at each bundle's stored threshold.",
    ]
    for run in runs:
        p, m = run["provenance"], run["metrics"]
        if m:
            lines.append(
                f"- {run['name']}: {m['n']} images of {_where(p.get('evaluated_on', {}))}, "
                f"TTA {'on' if m.get('tta') else 'off'}; `{p.get('command', '')}`"
            )
    sources = {json.dumps(r["provenance"].get("evaluated_on"), sort_keys=True) for r in runs if r["metrics"]}
    if len(sources) > 1:
        lines.append("- **Warning: the rows were evaluated on different data; they are not directly comparable.**")
    return "\n".join(lines) + "\n"


def _where(source: dict) -> str:
    if "split" in source:
        return f"{source['data']} (split {source['split']}, subset {source['subset']})"
    return f"{source.get('labels')} (images {source.get('images')})"
