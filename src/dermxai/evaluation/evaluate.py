"""``evaluate``: a bundle on a labelled image set -> metrics.json, predictions.csv and report.md with plots."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dermxai import __version__
from dermxai.data import load_dataset
from dermxai.data.index import DatasetError
from dermxai.data.splits import read_split
from dermxai.evaluation.contract import check_metrics
from dermxai.evaluation.metrics import (
    balanced_accuracy,
    bootstrap_ci,
    classification_report,
    expected_calibration_error,
    malignant_scores,
    negative_log_likelihood,
    scalar_metrics,
)
from dermxai.evaluation.predict import load_images, predict_logits, served_scorer
from dermxai.evaluation.subgroups import subgroup_table
from dermxai.machine import describe_machine
from dermxai.models.bundle import BundleConfig, load_bundle
from dermxai.probabilities import softmax

DEFAULT_MALIGNANT_THRESHOLD = 0.5  # used only when the bundle was never calibrated (said so in the report)


@dataclass
class EvalSet:
    """Images to evaluate on: their table rows, resampling groups, and where they came from."""

    table: pd.DataFrame
    groups: np.ndarray
    source: dict
    full_table: pd.DataFrame


def from_split(data: Path, split: Path, subset: str, images: Path | None = None) -> EvalSet:
    """The ``subset`` rows of a split file; lesion groups (near-duplicates merged) from the split."""
    table = load_dataset(data, images)
    assignment = read_split(split, table)
    rows = table.merge(assignment[["image_id", "lesion_group", "split"]], on="image_id")
    rows = rows[rows["split"] == subset].reset_index(drop=True)
    if rows.empty:
        present = sorted(assignment["split"].unique())
        raise DatasetError(f"{split}: no images in subset {subset!r} (subsets present: {', '.join(present)})")
    return EvalSet(
        rows, rows["lesion_group"].to_numpy(), {"data": str(data), "split": str(split), "subset": subset}, table
    )


def from_labels(labels: Path, images: Path | None = None) -> EvalSet:
    """All images of a label CSV (ISIC 2018 one-hot or ``image_id,dx``); lesions resampled when known."""
    table = load_dataset(labels, images)
    source = {"labels": str(labels), "images": str(images or labels.parent)}
    return EvalSet(table, table["lesion_id"].to_numpy(), source, table)


def provenance(bundle: Path, config: BundleConfig, command: str, eval_set: EvalSet) -> dict:
    """What a comparison table needs to know about the model and this evaluation."""
    return {
        "bundle": str(bundle),
        "arch": config.arch,
        "height": config.height,
        "width": config.width,
        "weights": config.weights,
        "epochs_trained": config.epochs_trained,
        "best_epoch": config.best_epoch,
        "val_bacc": config.val_bacc,
        "train_time_s": config.train_time_s,
        "train_hardware": config.hardware,
        "seed": config.seed,
        "split_fingerprint": config.split_fingerprint,
        "temperature": config.temperature,
        "logit_bias": None if config.logit_bias is None else list(config.logit_bias),
        "thresholds": config.thresholds,
        "eval_hardware": describe_machine(),
        "command": command,
        "evaluated_on": eval_set.source,
        "dermxai_version": __version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def evaluate(
    bundle: Path,
    eval_set: EvalSet,
    out: Path,
    *,
    tta: bool = False,
    n_bootstrap: int = 1000,
    seed: int = 0,
    batch_size: int = 64,
    cache_dir: Path | None = None,
    command: str = "",
    report: bool = True,
    leak: str | None = None,
) -> dict:
    """Predict, score, bootstrap and write ``metrics.json``, ``predictions.csv`` (and ``report.md``) in ``out``.

    ``leak``: the audit's finding when the split is knowingly leaky (recorded, and the report's first line).
    """
    model, config = load_bundle(bundle)
    scorer = served_scorer(bundle, model)
    classes = list(config.classes)
    unknown = sorted(set(eval_set.table["dx"]) - set(classes))
    if unknown:
        raise DatasetError(f"labels {', '.join(unknown)} are not among the model's classes {', '.join(classes)}")
    images = load_images(eval_set.table, config.size, cache_dir, eval_set.full_table)
    start = time.perf_counter()
    logits = predict_logits(scorer, config, images, tta=tta, batch_size=batch_size)
    seconds = time.perf_counter() - start
    y = eval_set.table["dx"].map(classes.index).to_numpy()
    calibrated = config.malignant_threshold is not None
    threshold = config.malignant_threshold if calibrated else DEFAULT_MALIGNANT_THRESHOLD
    threshold_source = (
        "bundle (chosen on validation)"
        if calibrated
        else f"default {DEFAULT_MALIGNANT_THRESHOLD} (bundle not calibrated)"
    )
    raw, probs, labels = softmax(logits), config.served_probabilities(logits), config.served_labels(logits)

    metrics = {"n": int(len(y)), "classes": classes, **classification_report(y, probs, classes, threshold, labels)}
    metrics["ci95"] = bootstrap_ci(
        lambda i: scalar_metrics(y[i], probs[i], classes, threshold, labels[i]), eval_set.groups, n_bootstrap, seed
    )
    metrics.update(
        {
            "balanced_accuracy_argmax": balanced_accuracy(y, raw.argmax(1), len(classes)),
            "decision_rule": "argmax(logits + logit_bias)" if config.logit_bias else "argmax",
            "probabilities": "softmax((logits + logit_bias) / T + probability_bias)"
            if config.probability_bias
            else "softmax((logits + logit_bias) / T)",
            "label_is_most_probable": float((labels == probs.argmax(1)).mean()),
            "ece_uncalibrated": expected_calibration_error(y, raw),
            "nll": negative_log_likelihood(y, probs),
            "nll_uncalibrated": negative_log_likelihood(y, raw),
            "temperature": config.temperature,
            "malignant_threshold_source": threshold_source,
            "tta": tta,
            "tta_views": (8 if config.height == config.width else 4) if tta else 1,
            "inference_s": round(seconds, 2),
            "backend": "pytorch-cuda" if isinstance(scorer, torch.nn.Module) else scorer.name,
            "bootstrap": {
                "resamples": n_bootstrap,
                "seed": seed,
                "level": 0.95,
                "unit": "lesion" if len(set(eval_set.groups)) < len(y) else "image",
                "n_units": int(len(set(eval_set.groups))),
            },
            "subgroups": subgroup_table(eval_set.table, y, probs, classes, threshold, labels),
            "provenance": provenance(bundle, config, command, eval_set),
            **({"leaky_split": leak} if leak else {}),
        }
    )
    check_metrics(metrics)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False))
    predictions = pd.DataFrame(
        {
            "image_id": eval_set.table["image_id"],
            "dx": eval_set.table["dx"],
            "predicted": [classes[k] for k in labels],
        }
    )
    for k, name in enumerate(classes):
        predictions[f"prob_{name}"] = probs[:, k].round(6)
    predictions["malignant_score"] = malignant_scores(probs, classes).round(6)
    predictions["lesion_id"] = eval_set.groups
    predictions.to_csv(out / "predictions.csv", index=False)
    if report:
        from dermxai.evaluation.report import write_report

        write_report(metrics, y, probs, raw, out)
    return metrics
