"""Data-path throughput: decoding JPEGs every epoch (ImageFolder-style DataLoader) vs the uint8 memmap cache.

Run: python benchmarks/bench_cache.py --data ../shared/data/ham10000 [--repeats 3]
Prints one Markdown table (median and min-max over repeats, images/s, ratio) for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from dermxai.data import load_dataset
from dermxai.data.cache import build_cache


class DecodeEveryEpoch(Dataset):
    """The plain approach: open, decode and resize each JPEG whenever it is read."""

    def __init__(self, paths: list[str], size: tuple[int, int]) -> None:
        self.paths = paths
        self.transform = v2.Compose([v2.Resize(size), v2.PILToTensor()])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB"))


def plain_epoch(paths: list[str], size: tuple[int, int], batch: int, workers: int) -> int:
    seen = 0
    for images in DataLoader(DecodeEveryEpoch(paths, size), batch_size=batch, shuffle=True, num_workers=workers):
        seen += len(images)
    return seen


def cached_epoch(images: np.ndarray, batch: int) -> int:
    seen = 0
    for rows in torch.randperm(len(images)).split(batch):
        tensor = torch.from_numpy(images[np.sort(rows.numpy())]).permute(0, 3, 1, 2)
        seen += len(tensor)
    return seen


def timed(run, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="../shared/data/ham10000")
    parser.add_argument("--height", type=int, default=150)
    parser.add_argument("--width", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    size = (args.height, args.width)
    table = load_dataset(args.data)
    n = len(table)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        cache = build_cache(table, Path(folder), size)
        build = time.perf_counter() - start
        start = time.perf_counter()
        build_cache(table, Path(folder), size)
        reopen = time.perf_counter() - start
        plain = timed(lambda: plain_epoch(table["path"].tolist(), size, args.batch, args.workers), args.repeats)
        cached = timed(lambda: cached_epoch(cache.images, args.batch), args.repeats)
    rows = [(f"decode every epoch (DataLoader, {args.workers} workers)", plain), ("uint8 memmap cache", cached)]
    print(
        f"{n} images at {size[0]}x{size[1]}, batch {args.batch}, {args.repeats} epochs each; "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    )
    print(f"one-time cache build: {build:.1f} s; reopening with a matching fingerprint: {reopen:.2f} s\n")
    print("| data path | epoch s (median, min-max) | images/s (median) | speed-up |")
    print("|---|---|---|---|")
    for name, times in rows:
        median = statistics.median(times)
        print(
            f"| {name} | {median:.2f} ({min(times):.2f}-{max(times):.2f}) | {n / median:,.0f} | "
            f"{statistics.median(plain) / median:.1f}x |"
        )


if __name__ == "__main__":
    main()
