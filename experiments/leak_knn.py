"""The leak in its purest form: a 1-nearest-neighbour classifier on frozen ImageNet features.

A nearest neighbour answers with the label of the most similar training image; on an image-level split that
is often another photo of the same lesion. Same features, same classifier, two splits: the difference is the
leak. Features: pooled ImageNet EfficientNet-Lite0 (offline weights) of every image at 150x200, computed once
(`--features F.npy` caches them, rows in `load_dataset` order).

    python experiments/leak_knn.py --data ../shared/data/ham10000 \\
        --split honest=artifacts/real/split_seed0.csv --split leaky=artifacts/real/split_image.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dermxai.data.duplicates import cnn_embeddings
from dermxai.data.index import load_dataset
from dermxai.data.labels import CLASSES
from dermxai.data.splits import read_split


def nearest_neighbour(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Index of each test row's most cosine-similar training row."""
    a = train / np.linalg.norm(train, axis=1, keepdims=True)
    b = test / np.linalg.norm(test, axis=1, keepdims=True)
    return np.concatenate([np.argmax(b[i : i + 512] @ a.T, axis=1) for i in range(0, len(b), 512)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", action="append", required=True, help="NAME=SPLIT.csv, repeatable")
    parser.add_argument("--features", type=Path, default=Path("artifacts/leak_knn_features.npy"))
    args = parser.parse_args()
    table = load_dataset(args.data)
    if args.features.is_file():
        features = np.load(args.features)
    else:
        features = cnn_embeddings(table["path"].tolist())
        args.features.parent.mkdir(parents=True, exist_ok=True)
        np.save(args.features, features)
    labels = table["dx"].map(CLASSES.index).to_numpy()
    lesions = table["lesion_id"].to_numpy()
    print(
        "| split | test images | 1-NN accuracy | 1-NN balanced accuracy | nearest training image is the same lesion |"
    )
    print("|---|---|---|---|---|")
    for spec in args.split:
        name, path = spec.split("=", 1)
        split = read_split(path).set_index("image_id")["split"].reindex(table["image_id"]).to_numpy()
        train, test = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
        hit = train[nearest_neighbour(features[train], features[test])]
        predicted, truth = labels[hit], labels[test]
        recalls = [np.mean(predicted[truth == c] == c) for c in range(len(CLASSES)) if np.any(truth == c)]
        same = np.mean(lesions[hit] == lesions[test])
        print(f"| {name} | {len(test)} | {np.mean(predicted == truth):.3f} | {np.mean(recalls):.3f} | {same:.1%} |")


if __name__ == "__main__":
    main()
