"""When to abstain: low confidence, or an input unlike the training data (out-of-distribution).

Two scores of the logits, both at the bundle's temperature ``T``:

- confidence, the largest calibrated probability ``max softmax(logits / T)`` (Hendrycks & Gimpel 2017);
- the energy ``-T * logsumexp(logits / T)`` (Liu et al., NeurIPS 2020): low for inputs like the training
  data, higher for unfamiliar ones, and less fooled than the softmax by confidently wrong extrapolation.

A prediction abstains when its confidence is below the bundle's ``abstain["min_confidence"]`` or its energy
above ``abstain["max_energy"]`` (``BundleConfig.abstain``). ``fit_abstention`` sets both on validation logits
so that a chosen share (default 95%) of validation images is accepted, each score taking half of the
rejections.
"""

from __future__ import annotations

import numpy as np

from dermxai.probabilities import softmax

TARGET_ACCEPT = 0.95


def calibrated_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(logits / T)`` of one image's logits (C,) or a batch (N, C)."""
    logits = np.asarray(logits)
    return softmax(logits.reshape(-1, logits.shape[-1]), temperature).reshape(logits.shape)


def energy(logits: np.ndarray, temperature: float) -> np.ndarray:
    """The energy score ``-T * logsumexp(logits / T)``: higher means less like the training data."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    peak = scaled.max(axis=-1)
    return -temperature * (peak + np.log(np.exp(scaled - peak[..., None]).sum(axis=-1)))


def fit_abstention(val_logits: np.ndarray, temperature: float, target_accept: float = TARGET_ACCEPT) -> dict:
    """Thresholds accepting ``target_accept`` of the validation images: ``BundleConfig.abstain``.

    Each score first rejects half of the ``1 - target_accept`` share (jointly at most that share); as the two
    rejected sets overlap, both quantiles are then moved together as far as the joint acceptance allows.
    """
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be between 0 and 1, not {target_accept}")
    if len(val_logits) < 2:
        raise ValueError("fit_abstention needs the logits of at least two validation images")
    confidence = calibrated_probabilities(val_logits, temperature).max(axis=1)
    energies = energy(val_logits, temperature)
    min_confidence, max_energy, accepted = float(confidence.min()), float(energies.max()), 1.0
    for reject in np.linspace((1 - target_accept) / 2, 1 - target_accept, 101):
        candidate = (
            float(np.quantile(confidence, reject, method="lower")),
            float(np.quantile(energies, 1 - reject, method="higher")),
        )
        share = float(np.mean((confidence >= candidate[0]) & (energies <= candidate[1])))
        if share < target_accept:
            break
        (min_confidence, max_energy), accepted = candidate, share
    return {
        "min_confidence": min_confidence,
        "max_energy": max_energy,
        "target_accept": target_accept,
        "val_accept_rate": round(accepted, 4),
        "n_val": int(len(val_logits)),
        "temperature": temperature,
        "method": "max-softmax and energy score",
    }


def abstain_reasons(logits: np.ndarray, temperature: float, params: dict | None) -> list[str]:
    """Why a prediction (one image's logits) should be withheld; empty when it should not, or when unfitted."""
    if not params:
        return []
    reasons = []
    confidence = float(calibrated_probabilities(logits, temperature).max())
    if confidence < params["min_confidence"]:
        reasons.append("the model is unsure which of the seven classes it is")
    score = float(energy(logits, temperature))
    if score > params["max_energy"]:
        reasons.append("the model's outputs for it are weak, as they are for images unlike its training images")
    return reasons
