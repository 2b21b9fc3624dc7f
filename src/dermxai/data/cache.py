"""One-time decode of a dataset into a memory-mapped ``uint8`` array (N, H, W, 3), reused while it matches.

The cache folder holds ``images.npy`` and ``cache.json`` (fingerprint, size, image ids). The fingerprint
covers the image ids, each file's size and modification time, the target size and the format version, so
a changed dataset or size triggers a rebuild and an unchanged one is opened instantly.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dermxai.preprocessing import load_resized

if TYPE_CHECKING:
    import pandas as pd

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ImageCache:
    """Resized images of a dataset, row ``k`` belonging to ``image_ids[k]``."""

    images: np.ndarray
    image_ids: list[str]
    fingerprint: str

    def rows(self, image_ids: list[str]) -> np.ndarray:
        """Row numbers of the given image ids."""
        lookup = {image_id: n for n, image_id in enumerate(self.image_ids)}
        return np.array([lookup[i] for i in image_ids], dtype=np.int64)


def fingerprint(paths: list[str], image_ids: list[str], size: tuple[int, int]) -> str:
    """Hash of what the cache depends on: ids, file sizes and mtimes, target size, format version."""
    digest = hashlib.sha256(f"v{FORMAT_VERSION}:{size[0]}x{size[1]}".encode())
    for image_id, path in zip(image_ids, paths):
        stat = os.stat(path)
        digest.update(f"{image_id}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


def build_cache(table: pd.DataFrame, cache_dir: str | Path, size: tuple[int, int], workers: int = 4) -> ImageCache:
    """Open the cache in ``cache_dir`` if its fingerprint matches ``table`` and ``size``; else (re)build it."""
    cache_dir = Path(cache_dir)
    ids, paths = table["image_id"].tolist(), table["path"].tolist()
    expected = fingerprint(paths, ids, size)
    meta_path, array_path = cache_dir / "cache.json", cache_dir / "images.npy"
    if meta_path.is_file() and array_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") == expected:
            return ImageCache(np.load(array_path, mmap_mode="r"), meta["image_ids"], expected)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cache_dir / f"images.npy.{os.getpid()}.partial"  # several processes (DDP ranks) may build at once
    array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(ids), *size, 3))

    def fill(n: int) -> None:
        array[n] = load_resized(paths[n], size)  # noqa: F821 (ruff misreads the later del)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(fill, range(len(ids))))
    array.flush()
    del array
    os.replace(partial, array_path)
    meta_partial = cache_dir / f"cache.json.{os.getpid()}.partial"
    meta_partial.write_text(json.dumps({"fingerprint": expected, "size": list(size), "image_ids": ids}))
    os.replace(meta_partial, meta_path)
    return ImageCache(np.load(array_path, mmap_mode="r"), ids, expected)
