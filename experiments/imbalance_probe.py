"""Which class-imbalance recipe wins on validation? A cheap answer on frozen ImageNet features.

Trains a linear head on pooled EfficientNet-Lite0 ImageNet features (frozen backbone, 150x200 input) of
the train split with each recipe - sampler (balanced / shuffled) x loss (ce, class-weighted ce, focal,
class-weighted focal) x label smoothing (0, 0.1) - using dermxai's own losses and sampler, and reports
validation balanced accuracy (mean of 3 seeds). The test split is not read.

Run: python experiments/imbalance_probe.py --data ../shared/data/ham10000 --split SPLIT.csv [--features F.npy]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch

from dermxai.data import load_dataset
from dermxai.data.duplicates import cnn_embeddings
from dermxai.data.labels import CLASSES
from dermxai.data.splits import read_split
from dermxai.training.datamodule import EpochSampler
from dermxai.training.losses import build_loss


def balanced_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    predicted = logits.argmax(1)
    recalls = [(predicted[labels == c] == c).float().mean().item() for c in labels.unique()]
    return float(np.mean(recalls))


def fit_head(
    x: torch.Tensor,
    y: np.ndarray,
    xv: torch.Tensor,
    yv: torch.Tensor,
    *,
    balanced: bool,
    loss: str,
    weighted: bool,
    smoothing: float,
    seed: int,
    epochs: int = 15,
    lr: float = 1e-3,
) -> list[float]:
    """Train a linear head; returns validation balanced accuracy after each epoch."""
    torch.manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], len(CLASSES))
    criterion = build_loss(loss, torch.as_tensor(np.bincount(y, minlength=len(CLASSES))), weighted, smoothing)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    sampler, labels, history = EpochSampler(y, seed, balanced), torch.as_tensor(y), []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for rows in torch.tensor(list(sampler)).split(64):
            optimizer.zero_grad()
            criterion(head(x[rows]), labels[rows]).backward()
            optimizer.step()
        with torch.no_grad():
            history.append(balanced_accuracy(head(xv), yv))
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ham10000"))
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--features", type=Path, help="cached features (.npy, rows in dataset order)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny matrices: threads only add synchronisation
    table = load_dataset(args.data)
    split = read_split(args.split, table).set_index("image_id").loc[table["image_id"], "split"].to_numpy()
    if args.features and args.features.is_file():
        features = np.load(args.features)
    else:
        features = cnn_embeddings(table["path"].tolist())
        if args.features:
            np.save(args.features, features)
    features = torch.as_tensor(features, dtype=torch.float32)
    features = (features - features[split == "train"].mean(0)) / features[split == "train"].std(0).clamp(min=1e-6)
    labels = table["dx"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    x, y = features[split == "train"], labels[split == "train"]
    xv, yv = features[split == "val"], torch.as_tensor(labels[split == "val"])
    print("| sampler | loss | class weights | label smoothing | val balanced accuracy (best epoch, mean of 3 seeds) |")
    print("|---|---|---|---|---|")
    for balanced, loss, weighted, smoothing in itertools.product(
        (True, False), ("ce", "focal"), (False, True), (0.0, 0.1)
    ):
        runs = [
            fit_head(x, y, xv, yv, balanced=balanced, loss=loss, weighted=weighted, smoothing=smoothing, seed=s)
            for s in range(3)
        ]
        best = np.mean([max(r) for r in runs])
        print(
            f"| {'balanced' if balanced else 'shuffled'} | {loss} | {'yes' if weighted else 'no'} | {smoothing} | "
            f"{best:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
