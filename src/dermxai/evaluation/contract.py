"""The ``metrics.json`` contract other tools rely on, and a check that a metrics dict honours it."""

from __future__ import annotations

from numbers import Real

from dermxai.evaluation.metrics import SCALARS

REQUIRED = ("n", "classes", *SCALARS, "per_class", "confusion_matrix", "ci95", "malignant")
PER_CLASS = ("precision", "recall", "f1", "auc", "support")
MALIGNANT = ("threshold", "sensitivity", "specificity")


def check_metrics(metrics: dict) -> None:
    """Raise ValueError naming the first way ``metrics`` breaks the contract."""
    missing = [k for k in REQUIRED if k not in metrics]
    if missing:
        raise ValueError(f"metrics.json lacks {', '.join(missing)}")
    classes = metrics["classes"]
    if not (isinstance(metrics["n"], int) and isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise ValueError("metrics.json: n must be an int and classes a list of names")
    for key in SCALARS:
        if metrics[key] is not None and not isinstance(metrics[key], Real):
            raise ValueError(f"metrics.json: {key} must be a number or null")
    if list(metrics["per_class"]) != classes:
        raise ValueError("metrics.json: per_class must have one entry per class, in class order")
    for name, entry in metrics["per_class"].items():
        if set(entry) != set(PER_CLASS) or not isinstance(entry["support"], int):
            raise ValueError(f"metrics.json: per_class[{name}] must hold exactly {', '.join(PER_CLASS)}")
    matrix = metrics["confusion_matrix"]
    if (
        len(matrix) != len(classes)
        or any(len(r) != len(classes) or not all(isinstance(v, int) for v in r) for r in matrix)
        or sum(map(sum, matrix)) != metrics["n"]
    ):
        raise ValueError("metrics.json: confusion_matrix must be a CxC matrix of ints summing to n")
    for key, interval in metrics["ci95"].items():
        if not (isinstance(interval, list) and len(interval) == 2):
            raise ValueError(f"metrics.json: ci95[{key}] must be [lo, hi]")
    if set(metrics["ci95"]) < set(SCALARS):
        raise ValueError(f"metrics.json: ci95 lacks {', '.join(sorted(set(SCALARS) - set(metrics['ci95'])))}")
    if set(metrics["malignant"]) != set(MALIGNANT):
        raise ValueError(f"metrics.json: malignant must hold exactly {', '.join(MALIGNANT)}")
