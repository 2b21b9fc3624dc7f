"""Image cache: contents, reuse while the fingerprint matches, rebuild when data or size change."""

from __future__ import annotations

import os

import numpy as np
import pytest

from dermxai.data.cache import build_cache
from dermxai.preprocessing import load_resized


@pytest.fixture()
def small_table(fixture_table, tmp_path):
    import shutil

    table = fixture_table.head(6).copy()
    for n, path in enumerate(table["path"]):
        table.loc[table.index[n], "path"] = shutil.copy(path, tmp_path)
    return table


def test_cache_holds_resized_images_in_table_order(small_table, tmp_path):
    cache = build_cache(small_table, tmp_path / "cache", (64, 80))
    assert cache.images.shape == (6, 64, 80, 3) and cache.images.dtype == np.uint8
    assert isinstance(cache.images, np.memmap)
    for n, path in enumerate(small_table["path"]):
        np.testing.assert_array_equal(cache.images[n], load_resized(path, (64, 80)))
    assert cache.rows(small_table["image_id"].tolist()[::-1]).tolist() == [5, 4, 3, 2, 1, 0]


def test_cache_is_reused_and_rebuilt_when_data_or_size_change(small_table, tmp_path):
    folder = tmp_path / "cache"
    first = build_cache(small_table, folder, (32, 40))
    built = os.stat(folder / "images.npy").st_mtime_ns
    again = build_cache(small_table, folder, (32, 40))
    assert again.fingerprint == first.fingerprint and os.stat(folder / "images.npy").st_mtime_ns == built

    changed = small_table["path"].iloc[0]
    stat = os.stat(changed)
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert build_cache(small_table, folder, (32, 40)).fingerprint != first.fingerprint
    assert build_cache(small_table, folder, (48, 64)).images.shape == (6, 48, 64, 3)
    assert not list(folder.glob("*.partial"))


def test_load_resized_covers_then_centre_crops(fixture_table):
    image = load_resized(fixture_table["path"].iloc[0], (100, 100))  # 200x150 frame -> 133x100 -> crop
    assert image.shape == (100, 100, 3)
