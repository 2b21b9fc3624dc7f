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


def test_committed_split_is_the_one_the_split_command_makes(ham, tmp_path, real_data):
    """Every committed figure rests on splits/ham10000_seed0.csv: `dermxai data split` rebuilds it exactly."""
    from pathlib import Path

    from typer.testing import CliRunner

    from dermxai.cli import app

    out = tmp_path / "split.csv"
    result = CliRunner().invoke(app, ["data", "split", "--data", str(real_data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    committed = Path(__file__).resolve().parents[1] / "splits" / "ham10000_seed0.csv"
    assert out.read_bytes() == committed.read_bytes()


def test_default_model_metrics_are_reproduced_by_evaluate(real_data, tmp_path):
    """Re-running `dermxai evaluate` on the committed split gives the shipped metrics.json (on ONNX Runtime, what
    is served, about 2.5x faster than the PyTorch pass that wrote it)."""
    import json
    from pathlib import Path

    from dermxai.assets import DEFAULT_MODEL
    from dermxai.evaluation.evaluate import evaluate, from_split
    from dermxai.inference.onnx_backend import int8_kernels_exact

    if not int8_kernels_exact():
        pytest.skip("metrics.json comes from the int8 graph; this x86 CPU has no VNNI, so the float weights serve")
    root = Path(__file__).resolve().parents[1]
    shipped = json.loads((DEFAULT_MODEL / "metrics.json").read_text())
    split = root / "splits" / "ham10000_seed0.csv"
    again = evaluate(DEFAULT_MODEL, from_split(real_data, split, "test"), tmp_path, n_bootstrap=10, report=False)
    assert again["backend"] == "onnxruntime-int8"  # what is served: the default ships its int8 graph
    for key in ("accuracy", "balanced_accuracy", "balanced_accuracy_argmax", "macro_auc", "ece"):
        assert again[key] == pytest.approx(shipped[key], abs=2e-3), key  # other CPUs may round a borderline logit
    changed = sum(
        abs(a - b)
        for row_a, row_b in zip(again["confusion_matrix"], shipped["confusion_matrix"])
        for a, b in zip(row_a, row_b)
    )
    assert changed <= 4, changed
