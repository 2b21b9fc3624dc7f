"""Served answers from logits, shared by evaluation, calibration, export and the Predictor (numpy only).

A bundle's **label** is ``argmax(logits + logit_bias)``: ``logit_bias`` is the decision rule fitted on validation
(logit adjustment, ``-tau * log(train prior)``; absent means plain argmax), chosen for balanced accuracy.
Its **probabilities** are ``softmax((logits + logit_bias) / temperature + probability_bias)``: the temperature
and the per-class ``probability_bias`` are fitted together on validation NLL, so they are calibrated for images
drawn like the validation set. The bias undoes the decision rule's shift towards rare classes for the
probabilities only, so a label may be a rare class that is not the most probable one; without a
``probability_bias`` (older bundles) the label is also the most probable class. A bundle's ``BundleConfig``
applies its own (``config.served_labels``, ``config.served_probabilities``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Calibrated probabilities of logits (N, C): softmax(logits / temperature)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def decision_logits(logits: np.ndarray, logit_bias: Sequence[float] | None = None) -> np.ndarray:
    """Logits shifted by a decision rule's ``logit_bias`` (unchanged when there is none)."""
    logits = np.asarray(logits, dtype=np.float64)
    return logits + np.asarray(logit_bias, dtype=np.float64) if logit_bias is not None else logits


def served_labels(logits: np.ndarray, logit_bias: Sequence[float] | None = None) -> np.ndarray:
    """The served class index of each row of logits (N, C): ``argmax(logits + logit_bias)``."""
    return decision_logits(logits, logit_bias).argmax(1)


def served_probabilities(
    logits: np.ndarray,
    logit_bias: Sequence[float] | None = None,
    temperature: float = 1.0,
    probability_bias: Sequence[float] | None = None,
) -> np.ndarray:
    """What a bundle serves for logits (N, C): ``softmax((logits + logit_bias) / temperature + probability_bias)``."""
    scaled = decision_logits(logits, logit_bias) / temperature
    return softmax(decision_logits(scaled, probability_bias))


def logit_adjustment(train_counts: np.ndarray, tau: float) -> np.ndarray:
    """The bias ``-tau * log(prior)`` of logit adjustment (Menon et al., ICLR 2021), centred to mean 0."""
    prior = np.asarray(train_counts, dtype=np.float64)
    if (prior <= 0).any():
        raise ValueError("logit adjustment needs at least one training image of every class")
    bias = -tau * np.log(prior / prior.sum())
    return bias - bias.mean()


TAU_GRID = (0.0, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0, 1.25, 1.5)
"""Coarse grid of logit-adjustment strengths: one scalar, not per-class biases, which overfit ~1,500 images."""
TAU_TOLERANCE = 0.005
"""A larger tau must beat every smaller one by more than this much validation balanced accuracy to be chosen."""


def balanced_accuracy_of(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean per-class recall of argmax(logits) over the classes present in ``labels``."""
    predicted = np.asarray(logits).argmax(1)
    labels = np.asarray(labels)
    return float(np.mean([(predicted[labels == c] == c).mean() for c in np.unique(labels)]))


def choose_tau(
    logits: np.ndarray, labels: np.ndarray, train_counts: np.ndarray, grid: Sequence[float] = TAU_GRID
) -> tuple[float, dict[float, float]]:
    """The logit-adjustment strength with the best balanced accuracy on these (validation) logits.

    Ties (within :data:`TAU_TOLERANCE`) go to the smaller tau; returns it and the score of every tau tried.
    """
    scores = {
        tau: balanced_accuracy_of(decision_logits(logits, logit_adjustment(train_counts, tau)), labels) for tau in grid
    }
    best = max(scores.values())
    return min(tau for tau, score in scores.items() if score >= best - TAU_TOLERANCE), scores
