"""Served probabilities from logits, shared by evaluation, calibration, export and the Predictor (numpy only).

A bundle serves ``softmax((logits + logit_bias) / temperature)``: ``logit_bias`` is the decision rule
fitted on validation (logit adjustment, ``-tau * log(train prior)``; absent means none) and ``temperature``
the calibration fitted on validation after it. The served label is the argmax of the served probabilities,
so the probabilities shown always rank the shown label first. A bundle's ``BundleConfig`` applies its own
(``config.served_probabilities``).
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


def served_probabilities(
    logits: np.ndarray, logit_bias: Sequence[float] | None = None, temperature: float = 1.0
) -> np.ndarray:
    """What a bundle serves for logits (N, C): ``softmax((logits + logit_bias) / temperature)``."""
    return softmax(decision_logits(logits, logit_bias), temperature)


def logit_adjustment(train_counts: np.ndarray, tau: float) -> np.ndarray:
    """The bias ``-tau * log(prior)`` of logit adjustment (Menon et al., ICLR 2021), centred to mean 0."""
    prior = np.asarray(train_counts, dtype=np.float64)
    if (prior <= 0).any():
        raise ValueError("logit adjustment needs at least one training image of every class")
    bias = -tau * np.log(prior / prior.sum())
    return bias - bias.mean()
