"""Does the class bias that `dermxai calibrate` fits after the temperature generalise? A validation-only probe.

    python experiments/calibration_holdout.py MEMBER [MEMBER ...] [--repeats 50] [--out FILE.json]

The ensemble of the members' cached validation logits (experiments/ensemble_selection.py's cache), logit-adjusted
at the tau chosen on all of validation (the label rule; calibration does not change labels). Validation is then
halved by lesion, ``--repeats`` times at random: each way of calibrating is fitted on one half and its natural ECE
and NLL measured on the other (both directions). Ways: temperature only; temperature + per-class bias (what
calibrate fits today). The test split is not read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dermxai.evaluation.calibration import fit_temperature_and_bias, train_counts
from dermxai.evaluation.evaluate import from_split
from dermxai.evaluation.metrics import expected_calibration_error, negative_log_likelihood
from dermxai.probabilities import choose_tau, logit_adjustment, softmax

DATA, SPLIT = Path("../shared/data/ham10000"), Path("splits/ham10000_seed0.csv")
CACHE = Path("runs/member_val_logits.npz")
CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def calibrated(logits: np.ndarray, temperature: float, bias: np.ndarray | None) -> np.ndarray:
    """softmax(logits / T + bias), as the bundle serves it."""
    return softmax(logits / temperature + (0 if bias is None else bias))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("members", nargs="+")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    stored = np.load(CACHE)
    val = from_split(DATA, SPLIT, "val").table
    labels = val["dx"].map(CLASSES.index).to_numpy()
    counts = train_counts(DATA, SPLIT, CLASSES)
    raw = np.mean([stored[m] for m in args.members], axis=0)
    tau, _ = choose_tau(raw, labels, counts)
    logits = raw + logit_adjustment(counts, tau)
    lesions = val["lesion_id"].to_numpy()
    unique = np.unique(lesions)
    rng = np.random.default_rng(0)
    figures: dict[str, dict[str, list[float]]] = {"temperature": {}, "temperature + class bias": {}}
    for _ in range(args.repeats):
        half = np.isin(lesions, rng.choice(unique, len(unique) // 2, replace=False))
        for fit, held in ((half, ~half), (~half, half)):
            for name, with_bias in (("temperature", False), ("temperature + class bias", True)):
                temperature, bias = fit_temperature_and_bias(logits[fit], labels[fit], with_bias=with_bias)
                probs = calibrated(logits[held], temperature, bias)
                figures[name].setdefault("ece", []).append(expected_calibration_error(labels[held], probs))
                figures[name].setdefault("nll", []).append(negative_log_likelihood(labels[held], probs))
    summary = {
        "members": args.members,
        "tau": tau,
        "repeats": args.repeats,
        "held_out_half": {
            name: {key: {"mean": round(float(np.mean(v)), 4), "sd": round(float(np.std(v)), 4)} for key, v in f.items()}
            for name, f in figures.items()
        },
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
