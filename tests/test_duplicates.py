"""Near-duplicate search: hash pairs against brute force, the fixture's known pair, reviewed file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dermxai.data import DatasetError
from dermxai.data.duplicates import (
    candidate_pairs,
    contact_sheet,
    hash_distance_pairs,
    perceptual_hashes,
    read_reviewed_pairs,
)

KNOWN_PAIR = ("ISIC_0030074", "ISIC_0025226")  # in the fixture, reviewed as one lesion under two ids


def test_hash_distance_pairs_match_brute_force():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=300, dtype=np.uint64)
    hashes[10] = hashes[20] ^ np.uint64(0b1011)  # distance 3
    found = hash_distance_pairs(hashes, 20, chunk=64)
    expected = {
        (i, j, bin(int(hashes[i]) ^ int(hashes[j])).count("1"))
        for i in range(300)
        for j in range(i + 1, 300)
        if bin(int(hashes[i]) ^ int(hashes[j])).count("1") <= 20
    }
    assert set(map(tuple, found.tolist())) == expected
    assert (10, 20, 3) in expected


def test_known_near_duplicate_is_a_candidate_and_unrelated_images_are_not(fixture_table):
    hashes = perceptual_hashes(fixture_table["path"].tolist())
    ids = fixture_table["image_id"].tolist()
    a, b = ids.index(KNOWN_PAIR[0]), ids.index(KNOWN_PAIR[1])
    assert np.bitwise_count(hashes[a] ^ hashes[b]) == 2
    pairs = candidate_pairs(fixture_table, hashes, None, rules=((2, 0.0),))
    assert KNOWN_PAIR in set(zip(pairs["image_a"], pairs["image_b"])) | set(zip(pairs["image_b"], pairs["image_a"]))
    assert (pairs["lesion_a"] != pairs["lesion_b"]).all()
    embeddings = np.eye(len(ids))  # every image unlike every other: the cosine rule must reject all pairs
    assert candidate_pairs(fixture_table, hashes, embeddings, rules=((2, 0.5),)).empty


def test_contact_sheet_draws_every_pair(tmp_path, fixture_table):
    from PIL import Image

    pairs = pd.DataFrame(
        [
            {
                "image_a": KNOWN_PAIR[0],
                "image_b": KNOWN_PAIR[1],
                "lesion_a": "a",
                "lesion_b": "b",
                "hash_distance": 2,
                "cosine": 0.93,
            }
        ]
        * 5
    )
    contact_sheet(pairs, fixture_table, tmp_path / "sheet.png", thumb=100)
    with Image.open(tmp_path / "sheet.png") as sheet:
        assert sheet.size == (4 * 210, 2 * (75 + 28))


def test_reviewed_ham10000_pairs_are_shipped():
    pairs = read_reviewed_pairs()
    assert len(pairs) >= 10 and KNOWN_PAIR in pairs


def test_reviewed_pairs_file_errors(tmp_path):
    bad = tmp_path / "pairs.csv"
    bad.write_text("a,b\nx,y\n")
    with pytest.raises(DatasetError, match="reviewed pairs need columns image_a,image_b"):
        read_reviewed_pairs(bad)
    with pytest.raises(DatasetError, match="cannot read reviewed duplicate pairs"):
        read_reviewed_pairs(tmp_path / "absent.csv")
