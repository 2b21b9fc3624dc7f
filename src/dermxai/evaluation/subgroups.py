"""Metrics by patient subgroup: sex, age band and body site, with counts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from dermxai.evaluation.metrics import confusion, malignant_truth, operating_point, per_class_scores

AGE_BANDS = ((0, 30, "<30"), (30, 45, "30-44"), (45, 60, "45-59"), (60, 75, "60-74"), (75, 200, ">=75"))
UNKNOWN = "unknown"


def age_band(age: object) -> str:
    """The band of an age in years; ``unknown`` when missing."""
    try:
        value = float(age)
    except (TypeError, ValueError):
        return UNKNOWN
    if np.isnan(value):
        return UNKNOWN
    return next(name for low, high, name in AGE_BANDS if low <= value < high)


def _label(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() in ("", "nan"):
        return UNKNOWN
    return str(value)


def subgroup_table(
    meta: pd.DataFrame,
    y: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    threshold: float,
    predicted: np.ndarray | None = None,
) -> dict[str, list[dict]]:
    """For each of sex, age band, localization: one row per value with n, accuracy, balanced accuracy
    (when >= 2 diagnoses are present), malignant count and sensitivity (when any). ``meta`` aligns with ``y``."""
    columns = {
        "sex": meta["sex"].map(_label),
        "age_band": meta["age"].map(age_band),
        "localization": meta["localization"].map(_label),
    }
    predicted = probs.argmax(1) if predicted is None else predicted
    order = {"age_band": [name for *_, name in AGE_BANDS] + [UNKNOWN]}
    table: dict[str, list[dict]] = {}
    for name, values in columns.items():
        values = values.to_numpy()
        levels = [v for v in order.get(name, sorted(set(values))) if v in set(values)]
        rows = []
        for level in levels:
            pick = values == level
            rows.append(_row(level, y[pick], probs[pick], predicted[pick], list(classes), threshold))
        table[name] = rows
    return table


def _row(
    level: str, y: np.ndarray, probs: np.ndarray, predicted: np.ndarray, classes: list[str], threshold: float
) -> dict:
    scores = per_class_scores(confusion(y, predicted, len(classes)))
    present = scores["support"] > 0
    malignant = malignant_truth(y, classes)
    return {
        "group": level,
        "n": int(len(y)),
        "accuracy": float((predicted == y).mean()),
        "balanced_accuracy": float(scores["recall"][present].mean()) if present.sum() >= 2 else None,
        "n_malignant": int(malignant.sum()),
        "malignant_sensitivity": operating_point(y, probs, classes, threshold)["sensitivity"]
        if malignant.any()
        else None,
    }
