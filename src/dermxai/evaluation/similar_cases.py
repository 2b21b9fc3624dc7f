"""Fit and measure a bundle's feature index of similar confirmed cases (``inference/similar.py``).

The index is fitted on the *training* images; its number of principal axes is chosen on *validation* by the
balanced accuracy of the majority vote of each image's ``k`` nearest training lesions (a second, explainable
classifier), and that figure is reported. The test split is not read.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

from dermxai.evaluation.evaluate import from_split
from dermxai.evaluation.gate import _open, features_of
from dermxai.evaluation.metrics import balanced_accuracy
from dermxai.inference.similar import DEFAULT_K, FeatureIndex, fit_index, majority_vote, write_thumbnails

COMPONENT_GRID = (32, 64, 128, 256)


def knn_balanced_accuracy(index: FeatureIndex, features: np.ndarray, labels: np.ndarray, classes: list[str], k: int):
    """Balanced accuracy of the majority vote of each image's ``k`` most similar training lesions."""
    votes = np.array([majority_vote(cases, classes) for cases in index.nearest(features, k)])
    return balanced_accuracy(labels, votes, len(classes))


def fit_bundle_index(
    predictor, data: Path, split: Path, *, images: Path | None = None, k: int = DEFAULT_K, folder: Path | None = None
) -> tuple[FeatureIndex, dict]:
    """The index of the training images with the validation-chosen number of axes, and a record of the choice.

    ``folder``: where to write the training thumbnails (the bundle), or None for none.
    """
    train = from_split(data, split, "train", images).table
    val = from_split(data, split, "val", images).table
    train_features = features_of(predictor, _open(train["path"].tolist()))
    val_features = features_of(predictor, _open(val["path"].tolist()))
    classes = list(predictor.classes)
    val_labels = val["dx"].map(classes.index).to_numpy()
    scores, indexes = {}, {}
    for components in COMPONENT_GRID:
        index = fit_index(train_features, train["image_id"], train["lesion_id"], train["dx"], components)
        indexes[components] = index
        scores[components] = knn_balanced_accuracy(index, val_features, val_labels, classes, k)
    best = max(COMPONENT_GRID, key=lambda c: (round(scores[c], 3), -c))  # ties to fewer axes
    index = indexes[best]
    start = time.perf_counter()
    for row in val_features[:200]:
        index.nearest(row[None], k)
    query_ms = (time.perf_counter() - start) / min(200, len(val_features)) * 1000
    if folder is not None:
        write_thumbnails(folder, ((i, Image.open(p)) for i, p in zip(train["image_id"], train["path"])))
    record = {
        "features": f"gate features of {predictor.config.feature_layer()} (pooled mean/std), standardised, PCA",
        "components": best,
        "k": k,
        "n_train": len(train),
        "n_val": len(val),
        "val_knn_balanced_accuracy": round(scores[best], 4),
        "val_knn_balanced_accuracy_by_components": {str(c): round(s, 4) for c, s in scores.items()},
        "query_ms": round(query_ms, 3),
        "split": str(split),
    }
    return index, record
