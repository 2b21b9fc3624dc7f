"""Which out-of-distribution score is fair to every diagnosis? A probe on one bundle's gate features, run once to choose.

    python experiments/gate_fairness.py BUNDLE [--cache runs/gate_features.npz]   # e.g. src/dermxai/assets/default_model

Features (the bundle's gate layer, as the Predictor computes them) of the training images and one acquisition
variant of each, of every validation image, of every validation image under each shift of
``evaluation/shifts.py`` and of the offline non-dermoscopic set, cached in one npz. Test images are not read:
the choice is made on validation. For each candidate score (the threshold always at 95% of validation):
the share withheld of validation, the largest share of one diagnosis over the overall one (validation, and
validation under every shift together), the share withheld under shift and of the non-dermoscopic set.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dermxai.evaluation.evaluate import from_split
from dermxai.evaluation.gate import _open, acquisition_variant, features_of, withheld_by_class
from dermxai.evaluation.ood_set import non_dermoscopic_set
from dermxai.evaluation.shifts import SHIFTS
from dermxai.inference.feature_gate import fit_gate, standardisation
from dermxai.inference.predictor import Predictor

DATA, SPLIT = Path("../shared/data/ham10000"), Path("splits/ham10000_seed0.csv")


def compute(bundle: Path, cache: Path) -> dict[str, np.ndarray]:
    if cache.exists():
        with np.load(cache, allow_pickle=False) as arrays:
            return dict(arrays)
    predictor = Predictor(bundle)
    rng = np.random.default_rng(0)
    train = from_split(DATA, SPLIT, "train").table
    val = from_split(DATA, SPLIT, "val").table
    out = {
        "train": features_of(predictor, _open(train["path"])),
        "train_variants": features_of(predictor, _open(train["path"], lambda im: acquisition_variant(im, rng))),
        "train_dx": train["dx"].to_numpy().astype(str),
        "val": features_of(predictor, _open(val["path"])),
        "val_dx": val["dx"].to_numpy().astype(str),
    }
    for name, shift in SHIFTS.items():
        out[f"shift:{name}"] = features_of(predictor, _open(val["path"], shift))
    for kind, images in non_dermoscopic_set().items():
        out[f"ood:{kind}"] = features_of(predictor, images)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def mahalanobis_gate(f: dict, labels: np.ndarray):
    gate = fit_gate(np.concatenate([f["train"], f["train_variants"]]), labels=np.r_[labels, labels])
    return gate.scores, gate


def per_class_distances(gate, x: np.ndarray) -> np.ndarray:
    """(N, C) PPCA Mahalanobis distance of x to each class mean."""
    z = (np.asarray(x, np.float64) - gate.mean) / gate.scale
    return gate._distance(z[:, None, :] - gate.class_means[None])


def candidates(f: dict) -> dict:
    classes = sorted(set(f["train_dx"]))
    labels = np.searchsorted(classes, f["train_dx"])
    both = np.concatenate([f["train"], f["train_variants"]])
    both_labels = np.r_[labels, labels]
    nearest, gate = mahalanobis_gate(f, labels)
    train_d = per_class_distances(gate, both)
    own = train_d[np.arange(len(both)), both_labels]
    median = np.array([np.median(own[both_labels == c]) for c in range(len(classes))])
    q90 = np.array([np.quantile(own[both_labels == c], 0.9) for c in range(len(classes))])

    mean, scale = standardisation(both)
    unit = (both - mean) / scale
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)

    def knn(x: np.ndarray, k: int = 10) -> np.ndarray:
        q = (np.asarray(x, np.float64) - mean) / scale
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        similarity = q @ unit.T
        return 1 - np.sort(similarity, axis=1)[:, -k]

    def knn_by_class(x: np.ndarray, k: int = 5) -> np.ndarray:
        q = (np.asarray(x, np.float64) - mean) / scale
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        similarity = q @ unit.T
        per_class = np.stack(
            [1 - np.sort(similarity[:, both_labels == c], axis=1)[:, -k] for c in range(len(classes))], 1
        )
        return per_class

    # per-class kNN distance normalised by the class's own leave-one-out kNN distance (median)
    own_knn = np.zeros(len(both))
    for c in range(len(classes)):
        members = unit[both_labels == c]
        similarity = members @ members.T
        np.fill_diagonal(similarity, -np.inf)
        own_knn[both_labels == c] = 1 - np.sort(similarity, axis=1)[:, -5]
    knn_median = np.array([np.median(own_knn[both_labels == c]) for c in range(len(classes))])
    return {
        "mahalanobis, nearest class (today)": nearest,
        "mahalanobis / class median": lambda x: np.min(per_class_distances(gate, x) / median, axis=1),
        "mahalanobis / class 90th pct": lambda x: np.min(per_class_distances(gate, x) / q90, axis=1),
        "kNN k=10 cosine": knn,
        "kNN k=5 by class / class median": lambda x: np.min(knn_by_class(x) / knn_median, axis=1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--cache", type=Path, default=Path("runs/gate_features.npz"))
    parser.add_argument("--out", type=Path, default=Path("results/study/gate_fairness.json"))
    args = parser.parse_args()
    f = compute(args.bundle, args.cache)
    shifts = [key for key in f if key.startswith("shift:")]
    kinds = [key for key in f if key.startswith("ood:")]
    rows = {}
    for name, score in candidates(f).items():
        val_scores = score(f["val"])
        threshold = float(np.quantile(val_scores, 0.95))
        shifted = np.concatenate([score(f[key]) for key in shifts]) > threshold
        outside = np.concatenate([score(f[key]) for key in kinds]) > threshold
        by_class = withheld_by_class(val_scores > threshold, f["val_dx"])
        shifted_by_class = withheld_by_class(shifted, np.tile(f["val_dx"], len(shifts)))
        rows[name] = {
            "val": by_class,
            "val, every shift": shifted_by_class,
            "not dermoscopy withheld": round(float(outside.mean()), 4),
        }
        print(
            f"{name:40s} val worst/all {by_class['worst_over_all']:5.2f} | shifted {shifted_by_class['all']['share']:.3f}"
            f" worst/all {shifted_by_class['worst_over_all']:5.2f} | not derm {outside.mean():.3f} | "
            + " ".join(
                f"{c} {by_class[c]['share']:.2f}/{shifted_by_class[c]['share']:.2f}" for c in sorted(set(f["val_dx"]))
            )
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
