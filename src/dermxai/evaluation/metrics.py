"""Classification metrics from labels and probabilities, with lesion-level bootstrap confidence intervals.

Every metric is computed from integer labels ``y`` (N,) and probabilities ``probs`` (N, C). Macro averages
run over the classes present in ``y`` (so balanced accuracy = macro recall = mean per-class recall, as ISIC
2018 scored); precision of a class never predicted is 0. AUCs are one-vs-rest (Mann-Whitney, ties halved).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import rankdata

from dermxai.data.labels import MALIGNANT

ECE_BINS = 15
SCALARS = (
    "accuracy",
    "balanced_accuracy",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "weighted_f1",
    "macro_auc",
    "ece",
)
"""The whole-set figures every ``metrics.json`` holds (see ``evaluation.contract``)."""
HEADLINE = (*SCALARS, "melanoma_recall", "malignant_sensitivity", "malignant_specificity")


def confusion(y: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts: row = true class, column = predicted class."""
    return np.bincount(y * n_classes + predicted, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_scores(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    hits = np.diag(matrix).astype(float)
    support, predicted = matrix.sum(1), matrix.sum(0)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (NaN when only one class is present)."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def expected_calibration_error(
    y: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS, class_balanced: bool = False
) -> float:
    """Top-label ECE: bins (a, b] of equal width on confidence, |accuracy - confidence| weighted by bin share.

    ``class_balanced`` weights each image by 1 / (K * n_class), so every true class counts equally.
    """
    confidence = probs.max(1)
    correct = probs.argmax(1) == y
    weight = np.ones(len(y))
    if class_balanced:
        present, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
        weight = len(y) / (len(present) * counts[inverse])
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    gap = np.bincount(which, weights=weight * (correct - confidence), minlength=bins)
    return float(np.abs(gap).sum() / weight.sum())


def negative_log_likelihood(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log probability of the true class."""
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())


def malignant_scores(probs: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Sum of the probabilities of the malignant classes (akiec, bcc, mel)."""
    return probs[:, [classes.index(c) for c in MALIGNANT if c in classes]].sum(1)


def malignant_truth(y: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    return np.isin(y, [classes.index(c) for c in MALIGNANT if c in classes])


def operating_point(y: np.ndarray, probs: np.ndarray, classes: Sequence[str], threshold: float) -> dict[str, float]:
    """Malignant-vs-benign sensitivity and specificity when flagging malignant score >= threshold."""
    flagged = malignant_scores(probs, classes) >= threshold
    truth = malignant_truth(y, classes)
    sensitivity = flagged[truth].mean() if truth.any() else float("nan")
    specificity = (~flagged[~truth]).mean() if (~truth).any() else float("nan")
    return {"threshold": float(threshold), "sensitivity": float(sensitivity), "specificity": float(specificity)}


def balanced_accuracy(y: np.ndarray, predicted: np.ndarray, n_classes: int) -> float:
    """Mean recall over the classes present in ``y``."""
    scores = per_class_scores(confusion(y, predicted, n_classes))
    return float(scores["recall"][scores["support"] > 0].mean())


def scalar_metrics(
    y: np.ndarray, probs: np.ndarray, classes: Sequence[str], threshold: float, predicted: np.ndarray | None = None
) -> dict[str, float]:
    """The headline numbers (see :data:`HEADLINE`) for one set of predictions.

    ``predicted``: the served labels (default: the most probable class); ranking and calibration use ``probs``.
    """
    n_classes = len(classes)
    matrix = confusion(y, probs.argmax(1) if predicted is None else predicted, n_classes)
    scores = per_class_scores(matrix)
    present = scores["support"] > 0
    aucs = np.array([binary_auc(y == k, probs[:, k]) for k in range(n_classes)])
    point = operating_point(y, probs, classes, threshold)
    mel = classes.index("mel") if "mel" in classes else None
    return {
        "accuracy": float(np.trace(matrix) / len(y)),
        "balanced_accuracy": float(scores["recall"][present].mean()),
        "macro_precision": float(scores["precision"][present].mean()),
        "macro_recall": float(scores["recall"][present].mean()),
        "macro_f1": float(scores["f1"][present].mean()),
        "weighted_f1": float((scores["f1"] * scores["support"]).sum() / scores["support"].sum()),
        "macro_auc": float(np.nanmean(aucs)) if not np.isnan(aucs).all() else float("nan"),
        "ece": expected_calibration_error(y, probs),
        "melanoma_recall": float(scores["recall"][mel]) if mel is not None and present[mel] else float("nan"),
        "malignant_sensitivity": point["sensitivity"],
        "malignant_specificity": point["specificity"],
    }


def classification_report(
    y: np.ndarray, probs: np.ndarray, classes: Sequence[str], threshold: float, predicted: np.ndarray | None = None
) -> dict:
    """Headline metrics plus per-class scores and the confusion matrix (JSON-ready, NaN as None)."""
    classes = list(classes)
    predicted = probs.argmax(1) if predicted is None else predicted
    matrix = confusion(y, predicted, len(classes))
    scores = per_class_scores(matrix)
    headline = scalar_metrics(y, probs, classes, threshold, predicted)
    per_class = {
        name: {
            "precision": float(scores["precision"][k]),
            "recall": float(scores["recall"][k]),
            "f1": float(scores["f1"][k]),
            "auc": _none(binary_auc(y == k, probs[:, k])),
            "support": int(scores["support"][k]),
        }
        for k, name in enumerate(classes)
    }
    return {
        **{k: _none(v) for k, v in headline.items()},
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "malignant": {k: _none(v) for k, v in operating_point(y, probs, classes, threshold).items()},
    }


def bootstrap_ci(
    statistic: Callable[[np.ndarray], dict[str, float]],
    groups: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, list[float | None]]:
    """Percentile intervals of every value ``statistic(indices)`` returns, resampling whole groups.

    ``groups`` (N,) names each item's unit of resampling (lesion id; the image id when lesions are
    unknown): a resample draws as many groups as there are, with replacement, and keeps all their items.
    """
    _, group_index = np.unique(groups, return_inverse=True)
    order = np.argsort(group_index, kind="stable")
    starts = np.r_[0, np.cumsum(np.bincount(group_index))]
    members = [order[a:b] for a, b in zip(starts[:-1], starts[1:])]
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(n_resamples):
        chosen = rng.integers(0, len(members), len(members))
        for key, value in statistic(np.concatenate([members[g] for g in chosen])).items():
            draws.setdefault(key, []).append(value)
    tail = 100 * (1 - level) / 2
    out = {}
    for key, values in draws.items():
        values = np.asarray(values, dtype=float)
        values = values[~np.isnan(values)]
        out[key] = (
            [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]
            if len(values)
            else [None, None]
        )
    return out


def _none(value: float) -> float | None:
    return None if value is None or np.isnan(value) else float(value)
