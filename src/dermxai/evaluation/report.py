"""``report.md`` with plots (confusion matrices, ROC curves, reliability diagram, per-class bars) and tables."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dermxai.evaluation.metrics import ECE_BINS  # noqa: E402

PLOTS = {
    "confusion": "confusion_matrix.png",
    "roc": "roc_curves.png",
    "reliability": "reliability.png",
    "per_class": "per_class.png",
}
HEADLINE_ROWS = (
    ("accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced accuracy (mean recall)"),
    ("macro_precision", "Macro precision"),
    ("macro_recall", "Macro recall"),
    ("macro_f1", "Macro F1"),
    ("weighted_f1", "Weighted F1"),
    ("macro_auc", "Macro AUC (one-vs-rest)"),
    ("ece", "ECE (15 bins, at the bundle temperature)"),
    ("melanoma_recall", "Melanoma recall (argmax)"),
    ("malignant_sensitivity", "Malignant sensitivity"),
    ("malignant_specificity", "Malignant specificity"),
)


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def with_ci(metrics: dict, key: str, value: float | None = None) -> str:
    lo, hi = metrics["ci95"].get(key, [None, None])
    return f"{fmt(metrics.get(key) if value is None else value)} [{fmt(lo)}, {fmt(hi)}]"


def plot_confusion(matrix: np.ndarray, classes: list[str], path: Path) -> None:
    rows = matrix / np.clip(matrix.sum(1, keepdims=True), 1, None)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    panels = ((axes[0], matrix, "Counts", "{:d}"), (axes[1], rows, "Row-normalised (recall)", "{:.2f}"))
    for ax, values, title, text in panels:
        ax.imshow(values, cmap="Blues")
        ax.set(
            title=title,
            xticks=range(len(classes)),
            yticks=range(len(classes)),
            xticklabels=classes,
            yticklabels=classes,
            xlabel="predicted",
            ylabel="true",
        )
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(
                    j,
                    i,
                    text.format(values[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if values[i, j] > values.max() / 2 else "black",
                )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def roc_points(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every threshold (for plotting)."""
    order = np.argsort(-score, kind="stable")
    hits = positive[order]
    tpr = np.r_[0, np.cumsum(hits) / max(1, hits.sum())]
    fpr = np.r_[0, np.cumsum(~hits) / max(1, (~hits).sum())]
    return fpr, tpr


def plot_roc(y: np.ndarray, probs: np.ndarray, metrics: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 6))
    for k, name in enumerate(metrics["classes"]):
        positive = y == k
        if positive.any() and not positive.all():
            fpr, tpr = roc_points(positive, probs[:, k])
            ax.plot(fpr, tpr, label=f"{name} (AUC {fmt(metrics['per_class'][name]['auc'])})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="One-vs-rest ROC")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reliability(y: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin (a, b] of top-label confidence: mean confidence, accuracy, count."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == y
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    safe = np.clip(count, 1, None)
    return (np.bincount(which, confidence, bins) / safe, np.bincount(which, correct, bins) / safe, count)


def plot_reliability(y: np.ndarray, probs: np.ndarray, raw: np.ndarray, metrics: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 6))
    for values, label, marker in (
        (raw, f"T=1 (ECE {fmt(metrics['ece_uncalibrated'])})", "s"),
        (probs, f"T={metrics['temperature']:.2f} (ECE {fmt(metrics['ece'])})", "o"),
    ):
        confidence, accuracy, count = reliability(y, values)
        used = count > 0
        ax.plot(confidence[used], accuracy[used], marker=marker, label=label)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(
        xlabel="confidence (top label)",
        ylabel="accuracy",
        title=f"Reliability ({ECE_BINS} bins)",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_per_class(metrics: dict, path: Path) -> None:
    classes = metrics["classes"]
    x = np.arange(len(classes))
    fig, ax = plt.subplots(figsize=(9, 4))
    for n, key in enumerate(("precision", "recall", "f1")):
        ax.bar(x + (n - 1) * 0.27, [metrics["per_class"][c][key] for c in classes], 0.27, label=key)
    ax.set_xticks(x, [f"{c}\n(n={metrics['per_class'][c]['support']})" for c in classes])
    ax.set(ylim=(0, 1), title="Per-class scores")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(metrics: dict) -> str:
    """The report text (plots referenced by file name)."""
    p, boot = metrics["provenance"], metrics["bootstrap"]
    source = p["evaluated_on"]
    where = (
        f"`{source['data']}`, split `{source['split']}`, subset **{source['subset']}**"
        if "split" in source
        else f"labels `{source['labels']}`, images `{source['images']}`"
    )
    lines = [
        *(
            [f"**LEAKY SPLIT: these figures are not honest** ({metrics['leaky_split']}).", ""]
            if metrics.get("leaky_split")
            else []
        ),
        f"# Evaluation of {p['arch']} ({p['height']}x{p['width']}, {p['weights']} weights)",
        "",
        f"- Data: {where}; {metrics['n']} images, {boot['n_units']} {boot['unit']}s.",
        f"- Bundle: `{p['bundle']}` (epochs trained {p['epochs_trained']}, temperature {metrics['temperature']:.3f}, "
        f"malignant threshold {metrics['malignant']['threshold']:.3f}: {metrics['malignant_threshold_source']}).",
        f"- Test-time augmentation: {'on, ' + str(metrics['tta_views']) + ' views' if metrics['tta'] else 'off'}.",
        f"- 95% intervals: percentile bootstrap, {boot['resamples']} resamples of {boot['unit']}s, seed {boot['seed']}.",
        f"- Command: `{p['command']}` on {p['eval_hardware']}, {p['date']}.",
        "",
        "| Metric | Value [95% CI] |",
        "|---|---|",
        *[f"| {label} | {with_ci(metrics, key)} |" for key, label in HEADLINE_ROWS],
        f"| NLL (calibrated / T=1) | {fmt(metrics['nll'])} / {fmt(metrics['nll_uncalibrated'])} |",
        f"| ECE at T=1 | {fmt(metrics['ece_uncalibrated'])} |",
        "",
        "## Per class",
        "",
        "| Class | Precision | Recall | F1 | AUC | Support |",
        "|---|---|---|---|---|---|",
        *[
            f"| {c} | {fmt(v['precision'])} | {fmt(v['recall'])} | {fmt(v['f1'])} | {fmt(v['auc'])} | {v['support']} |"
            for c, v in metrics["per_class"].items()
        ],
        "",
        f"![per-class scores]({PLOTS['per_class']})",
        "",
        "## Confusion matrix",
        "",
        f"![confusion matrix]({PLOTS['confusion']})",
        "",
        "## ROC curves",
        "",
        f"![ROC curves]({PLOTS['roc']})",
        "",
        "## Calibration",
        "",
        f"![reliability diagram]({PLOTS['reliability']})",
        "",
        "## Subgroups",
        "",
        "Balanced accuracy only where at least two diagnoses are present; malignant sensitivity at the stored "
        "threshold. Small groups have wide uncertainty.",
        "",
    ]
    for name, rows in metrics["subgroups"].items():
        lines += [
            f"### {name.replace('_', ' ')}",
            "",
            "| Group | n | Accuracy | Balanced acc. | Malignant n | Malignant sensitivity |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['group']} | {r['n']} | {fmt(r['accuracy'])} | {fmt(r['balanced_accuracy'])} | "
            f"{r['n_malignant']} | {fmt(r['malignant_sensitivity'])} |"
            for r in rows
        ]
        lines.append("")
    return "\n".join(lines)


def write_report(metrics: dict, y: np.ndarray, probs: np.ndarray, raw: np.ndarray, out: Path) -> Path:
    """Draw the plots into ``out`` and write ``out/report.md`` referencing them."""
    plot_confusion(np.array(metrics["confusion_matrix"]), metrics["classes"], out / PLOTS["confusion"])
    plot_roc(y, probs, metrics, out / PLOTS["roc"])
    plot_reliability(y, probs, raw, metrics, out / PLOTS["reliability"])
    plot_per_class(metrics, out / PLOTS["per_class"])
    (out / "report.md").write_text(markdown(metrics))
    return out / "report.md"
