"""Lightning DataModule over the uint8 image cache: batches of raw uint8 images and labels."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from dermxai.data.cache import build_cache
from dermxai.data.labels import CLASSES


class CachedImages(Dataset):
    """Rows of the cache with their class index (and soft targets, when given); images stay uint8 (N, H, W, 3)
    until the device."""

    def __init__(
        self, images: np.ndarray, rows: np.ndarray, labels: np.ndarray, targets: np.ndarray | None = None
    ) -> None:
        self.images, self.rows, self.labels, self.targets = images, rows, labels, targets

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple:
        image = torch.from_numpy(np.array(self.images[self.rows[index]]))
        if self.targets is None:
            return image, int(self.labels[index])
        return image, int(self.labels[index]), torch.from_numpy(self.targets[index])


class EpochSampler(Sampler[int]):
    """Shuffles (or draws class-balanced with replacement) from ``seed`` and the epoch number alone,

    so that a resumed run sees exactly the batches the uninterrupted run would have seen.
    """

    def __init__(self, labels: np.ndarray, seed: int, balanced: bool, rank: int = 0, world: int = 1) -> None:
        self.labels, self.seed, self.balanced, self.rank, self.world = labels, seed, balanced, rank, world
        self.epoch = 0
        counts = np.bincount(labels, minlength=len(CLASSES))
        self.weights = torch.as_tensor(1.0 / np.maximum(counts[labels], 1), dtype=torch.double)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels) // self.world

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.balanced:
            order = torch.multinomial(self.weights, len(self.labels), replacement=True, generator=generator)
        else:
            order = torch.randperm(len(self.labels), generator=generator)
        return iter(order[self.rank : len(self) * self.world : self.world].tolist())


class CachedDataModule(L.LightningDataModule):
    """Train/val/test loaders from a dataset table, a split and a cache folder."""

    def __init__(
        self,
        table: pd.DataFrame,
        split: pd.DataFrame,
        cache_dir: Path,
        size: tuple[int, int],
        batch_size: int,
        seed: int,
        balanced: bool,
    ) -> None:
        super().__init__()
        self.table, self.split, self.cache_dir, self.size = table, split, cache_dir, size
        self.batch_size, self.seed, self.balanced = batch_size, seed, balanced
        self.cache = None
        self.train_targets: np.ndarray | None = None  # a teacher's soft targets, in the train subset's order

    def setup(self, stage: str | None = None) -> None:
        if self.cache is None:  # run.py sets up early to count classes; Lightning calls setup again
            self.cache = build_cache(self.table, self.cache_dir, self.size)

    def subset(self, name: str) -> CachedImages:
        ids = self.split.loc[self.split["split"] == name, "image_id"].tolist()
        dx = self.table.set_index("image_id").loc[ids, "dx"]
        labels = dx.map({c: i for i, c in enumerate(CLASSES)}).to_numpy(dtype=np.int64)
        return CachedImages(self.cache.images, self.cache.rows(ids), labels)

    def train_counts(self) -> torch.Tensor:
        """Images per class in the training split."""
        return torch.as_tensor(np.bincount(self.subset("train").labels, minlength=len(CLASSES)))

    def train_dataloader(self) -> DataLoader:
        data = self.subset("train")
        data.targets = self.train_targets
        trainer = self.trainer
        sampler = EpochSampler(
            data.labels,
            self.seed,
            self.balanced,
            trainer.global_rank if trainer else 0,
            trainer.world_size if trainer else 1,
        )
        return DataLoader(data, batch_size=self.batch_size, sampler=sampler, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.subset("val"), batch_size=self.batch_size * 2)
