"""Checks on the full HAM10000 copy at ../shared/data/ham10000 (skipped when it is absent)."""

from __future__ import annotations

import pytest

from dermxai.data import load_dataset
from dermxai.data.audit import audit_split
from dermxai.data.duplicates import hash_distance_pairs, perceptual_hashes, read_reviewed_pairs
from dermxai.data.splits import class_shares, grouped_split, image_split, lesion_groups

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def ham(real_data):
    table = load_dataset(real_data)
    return table, perceptual_hashes(table["path"].tolist())


def test_full_dataset_is_indexed(ham):
    table, _ = ham
    assert len(table) == 10015 and table["lesion_id"].nunique() == 7470
    assert table["dx"].value_counts().to_dict() == {
        "nv": 6705,
        "mel": 1113,
        "bkl": 1099,
        "bcc": 514,
        "akiec": 327,
        "vasc": 142,
        "df": 115,
    }
    assert table["mask_path"].notna().all()


def test_reviewed_pairs_are_real_images_under_different_lesions(ham):
    table, _ = ham
    lesion = table.set_index("image_id")["lesion_id"]
    pairs = read_reviewed_pairs()
    assert all(lesion[a] != lesion[b] for a, b in pairs)


def test_honest_split_passes_the_audit_with_balanced_classes(ham):
    table, hashes = ham
    ids = table["image_id"].to_numpy()
    pairs = [(ids[i], ids[j]) for i, j, _ in hash_distance_pairs(hashes, 0)] + read_reviewed_pairs()
    split = grouped_split(table, lesion_groups(table, pairs), seed=0)
    report = audit_split(table, split, hashes, 0, read_reviewed_pairs())
    assert report["leak_free"], report["near_duplicate_crossings"]
    shares = class_shares(table, split)
    assert shares.drop(columns="all").sub(shares["all"], axis=0).abs().max().max() <= 0.015
    assert abs(report["split_sizes"]["test"] - 1502) <= 10


def test_random_image_split_leaks_about_a_third_of_test_images(ham):
    table, hashes = ham
    report = audit_split(table, image_split(table, seed=0), hashes, 0, read_reviewed_pairs())
    assert not report["leak_free"]
    assert 0.28 <= report["test_share_with_train_sibling"] <= 0.40
