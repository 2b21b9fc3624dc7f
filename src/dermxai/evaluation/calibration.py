"""Calibration on the validation split: decision rule, temperature, malignant threshold, abstention.

``calibrate_bundle`` computes validation logits once and runs each step of :data:`CALIBRATION_STEPS` on them
in order; a step returns the ``BundleConfig`` fields it sets (and may record figures in ``calibration``).
The first step fits the decision rule (logit adjustment towards balanced accuracy); every later step works
on the adjusted logits, so temperature, threshold and abstention are fitted on what is served.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dermxai.data.errors import DatasetError
from dermxai.data.labels import CLASSES
from dermxai.evaluation.metrics import (
    expected_calibration_error,
    malignant_scores,
    malignant_truth,
    negative_log_likelihood,
    operating_point,
)
from dermxai.models.bundle import BundleConfig, load_bundle, write_config
from dermxai.probabilities import choose_tau, logit_adjustment, softmax

ECE_BAR = 0.04
"""Validation ECE after temperature above which the bundle's card carries a warning (it no longer vetoes tau)."""

DEFAULT_TARGET_SENSITIVITY = 0.90
BIAS_MIN_IMAGES = 10
"""Validation images every class needs for a probability bias to be fitted (else the temperature alone)."""


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature T > 0 minimising the NLL of softmax(logits / T) (LBFGS on log T)."""
    return fit_temperature_and_bias(logits, labels, with_bias=False)[0]


def fit_temperature_and_bias(
    logits: np.ndarray, labels: np.ndarray, with_bias: bool = True
) -> tuple[float, np.ndarray | None]:
    """T > 0 and a per-class bias c (mean 0) minimising the NLL of softmax(logits / T + c) (LBFGS).

    The bias is what a temperature cannot do: undo a shift of the class prior (the decision rule's, or class
    weights' in training), so the probabilities match the frequencies of the data they were fitted on.
    Eight numbers fitted on ~1,500 validation images by a smooth objective (unlike tau, chosen on a noisy one).
    """
    z = torch.tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.tensor(np.asarray(labels), dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=with_bias)
    parameters = [log_t, bias] if with_bias else [log_t]
    optimiser = torch.optim.LBFGS(parameters, lr=0.5, max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp() + bias, y)
        loss.backward()
        return loss

    optimiser.step(closure)
    fitted = bias.detach().numpy()
    return float(log_t.exp().item()), (fitted - fitted.mean()) if with_bias else None


def malignant_threshold(
    probs: np.ndarray, labels: np.ndarray, target: float = DEFAULT_TARGET_SENSITIVITY, classes: Sequence[str] = CLASSES
) -> float:
    """The highest threshold on the malignant score whose sensitivity on these data is >= ``target``."""
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1], not {target}")
    truth = malignant_truth(np.asarray(labels), list(classes))
    if not truth.any():
        raise ValueError("no malignant (akiec, bcc, mel) images to choose a malignant threshold on")
    scores = np.sort(malignant_scores(np.asarray(probs), list(classes))[truth])[::-1]
    return float(scores[math.ceil(target * len(scores) - 1e-9) - 1])


@dataclass
class ValidationSet:
    """What every calibration step sees: validation logits (uncalibrated), labels, ids, and the options."""

    logits: np.ndarray
    labels: np.ndarray
    image_ids: list[str]
    classes: list[str]
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY
    train_counts: np.ndarray | None = None  # training images per class (the prior of logit adjustment)


def decision_step(val: ValidationSet, config: BundleConfig) -> dict:
    """Choose the logit-adjustment strength tau on validation balanced accuracy (none without train counts).

    The grid is coarse and ties go to the smaller tau (:func:`dermxai.probabilities.choose_tau`). The ECE does
    not veto tau: the temperature fitted after the rule restores most of the calibration, and the
    temperature step reports what is left (natural and class-balanced ECE).
    """
    if val.train_counts is None or (np.asarray(val.train_counts) <= 0).any():
        return {}  # no prior to adjust for (e.g. a class absent from training): plain argmax
    tau, scores = choose_tau(val.logits, val.labels, val.train_counts)
    record = {
        "decision_rule": "logit adjustment: argmax(logits - tau * log train prior)",
        "tau": tau,
        "val_bacc_by_tau": {str(t): round(v, 4) for t, v in scores.items()},
        "train_counts": [int(c) for c in val.train_counts],
    }
    return {
        "logit_bias": tuple(float(b) for b in logit_adjustment(val.train_counts, tau)),
        "calibration": {**config.calibration, **record},
    }


CalibrationStep = Callable[[ValidationSet, BundleConfig], dict]


def temperature_step(val: ValidationSet, config: BundleConfig) -> dict:
    """Fit the temperature and per-class probability bias; record validation ECE and NLL before and after."""
    logits = config.decision_logits(val.logits)
    before = softmax(logits)
    counts = np.bincount(val.labels, minlength=logits.shape[1])
    temperature, bias = fit_temperature_and_bias(logits, val.labels, with_bias=bool(counts.min() >= BIAS_MIN_IMAGES))
    fitted = config.replace(
        temperature=temperature, probability_bias=None if bias is None else tuple(float(b) for b in bias)
    )
    after = fitted.served_probabilities(val.logits)
    record = {
        "probabilities": "softmax((logits + logit_bias) / temperature + probability_bias), fitted on val NLL",
        "ece_before": expected_calibration_error(val.labels, before),
        "ece_after": expected_calibration_error(val.labels, after),
        "balanced_ece_after": expected_calibration_error(val.labels, after, class_balanced=True),
        "nll_before": negative_log_likelihood(val.labels, before),
        "nll_after": negative_log_likelihood(val.labels, after),
        "label_is_most_probable": float((fitted.served_labels(val.logits) == after.argmax(1)).mean()),
    }
    return {
        "temperature": temperature,
        "probability_bias": fitted.probability_bias,
        "calibration": {**config.calibration, **record},
    }


def threshold_step(val: ValidationSet, config: BundleConfig) -> dict:
    """Choose the malignant threshold on calibrated probabilities for the target sensitivity."""
    probs = config.served_probabilities(val.logits)
    threshold = malignant_threshold(probs, val.labels, val.target_sensitivity, val.classes)
    point = operating_point(val.labels, probs, val.classes, threshold)
    record = {
        "target_sensitivity": val.target_sensitivity,
        "val_sensitivity": point["sensitivity"],
        "val_specificity": point["specificity"],
    }
    return {
        "thresholds": {**config.thresholds, "malignant": threshold},
        "calibration": {**config.calibration, **record},
    }


def abstention_step(val: ValidationSet, config: BundleConfig) -> dict:
    """The app's abstention thresholds (``dermxai.inference.ood``), accepting 95% of validation images."""
    from dermxai.inference.ood import fit_abstention

    return {"abstain": fit_abstention(config.decision_logits(val.logits), config.temperature)}


CALIBRATION_STEPS: list[CalibrationStep] = [decision_step, temperature_step, threshold_step, abstention_step]
"""Run in order by :func:`calibrate_config`; append a step to fit more parameters on the same logits."""


def calibrate_config(
    val: ValidationSet, config: BundleConfig, steps: Sequence[CalibrationStep] | None = None
) -> BundleConfig:
    """A copy of ``config`` with every step's fields applied in turn (each step sees the previous ones)."""
    updated = config.replace(
        calibration={"n_val": len(val.labels)}, temperature=1.0, logit_bias=None, probability_bias=None
    )
    for step in CALIBRATION_STEPS if steps is None else steps:
        updated = updated.replace(**step(val, updated))
    return updated


def train_counts(data: Path, split: Path, classes: list[str], images: Path | None = None) -> np.ndarray | None:
    """Training images per class in ``split`` (the prior the model was trained towards)."""
    from dermxai.evaluation.evaluate import from_split

    try:
        dx = from_split(data, split, "train", images).table["dx"]
    except DatasetError:
        return None  # a split without training images (e.g. a val/test-only split): no prior to adjust for
    return np.array([int((dx == c).sum()) for c in classes])


def calibrate_bundle(
    bundle: Path,
    data: Path,
    split: Path,
    target: float = DEFAULT_TARGET_SENSITIVITY,
    *,
    images: Path | None = None,
    cache_dir: Path | None = None,
    batch_size: int = 64,
    steps: Sequence[CalibrationStep] | None = None,
) -> BundleConfig:
    """Fit every calibration step on the ``val`` subset of ``split`` and rewrite the bundle's config.json."""
    from dermxai.evaluation.evaluate import from_split
    from dermxai.evaluation.predict import load_images, predict_logits, served_scorer

    if not 0 < target <= 1:
        raise ValueError(f"--target-sensitivity must be in (0, 1], not {target}")
    model, config = load_bundle(bundle)
    scorer = served_scorer(Path(bundle), model)  # fitted on what is served (an int8 graph answers differently)
    val_set = from_split(data, split, "val", images)
    classes = list(config.classes)
    pixels = load_images(val_set.table, config.size, cache_dir, val_set.full_table)
    val = ValidationSet(
        predict_logits(scorer, config, pixels, batch_size=batch_size),
        val_set.table["dx"].map(classes.index).to_numpy(),
        val_set.table["image_id"].tolist(),
        classes,
        target,
        train_counts(data, split, classes, images),
    )
    updated = calibrate_config(val, config, steps)
    scored_by = "pytorch-cuda" if isinstance(scorer, torch.nn.Module) else scorer.name
    updated = updated.replace(calibration={**updated.calibration, "split": str(split), "scored_by": scored_by})
    write_config(bundle, updated)
    mark_card(Path(bundle) / "MODEL_CARD.md", calibration_warning(updated.calibration))
    return updated


CARD_WARNING = "**Calibration warning.**"


def calibration_warning(calibration: dict) -> str | None:
    """The model card's warning when validation ECE after the temperature exceeds :data:`ECE_BAR` (else None)."""
    ece = calibration.get("ece_after")
    if ece is None or ece <= ECE_BAR:
        return None
    return (
        f"{CARD_WARNING} On validation, the served probabilities' ECE after calibration is {ece:.3f} "
        f"(class-balanced {calibration.get('balanced_ece_after', float('nan')):.3f}), above {ECE_BAR}: "
        "read them as scores, not as frequencies."
    )


def mark_card(card: Path, warning: str | None) -> None:
    """Replace the calibration warning at the end of a model card (add, update or remove it)."""
    if not card.is_file():
        return
    text = "\n".join(line for line in card.read_text().splitlines() if not line.startswith(CARD_WARNING))
    card.write_text(text.rstrip() + "\n" + (f"\n{warning}\n" if warning else ""))
