"""Lesion-grouped stratified splits, the leaky image-level split, and split files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from dermxai.cli import app
from dermxai.data import DatasetError
from dermxai.data.splits import (
    class_shares,
    grouped_split,
    image_split,
    lesion_groups,
    read_split,
    write_split,
)

COUNTS = {"nv": 1340, "mel": 222, "bkl": 220, "bcc": 103, "akiec": 65, "vasc": 28, "df": 23}  # HAM10000 / 5


def synthetic_table(seed: int = 0) -> pd.DataFrame:
    """Images of lesions with 1-4 images each, in HAM10000's class proportions."""
    rng = np.random.default_rng(seed)
    rows, lesion = [], 0
    for dx, n in COUNTS.items():
        made = 0
        while made < n:
            k = min(int(rng.choice([1, 1, 1, 2, 2, 3, 4])), n - made)
            rows += [(f"img_{dx}_{made + i}", dx, f"les_{lesion}") for i in range(k)]
            made, lesion = made + k, lesion + 1
    return pd.DataFrame(rows, columns=["image_id", "dx", "lesion_id"])


def test_grouped_split_keeps_lesions_together_and_classes_balanced():
    table = synthetic_table()
    split = grouped_split(table, lesion_groups(table), val=0.15, test=0.15, seed=3)
    per_lesion = table.assign(split=split["split"]).groupby("lesion_id")["split"].nunique()
    assert per_lesion.max() == 1
    shares = class_shares(table, split)
    assert (shares.drop(columns="all").sub(shares["all"], axis=0).abs() <= 0.015).all().all()
    sizes = split["split"].value_counts(normalize=True)
    assert sizes["train"] == pytest.approx(0.70, abs=0.01) and sizes["test"] == pytest.approx(0.15, abs=0.01)


def test_grouped_split_is_deterministic_for_a_seed():
    table = synthetic_table()
    groups = lesion_groups(table)
    first = grouped_split(table, groups, seed=7)
    assert first.equals(grouped_split(table, groups, seed=7))
    assert not first["split"].equals(grouped_split(table, groups, seed=8)["split"])


def test_duplicate_pairs_merge_lesions_into_one_group():
    table = synthetic_table()
    a, b, c = table["image_id"].iloc[[0, 500, 900]]
    groups = lesion_groups(table, [(a, b), (b, c), ("not_in_table", a)])
    assert groups.iloc[0] == groups.iloc[500] == groups.iloc[900]
    assert groups.nunique() == table["lesion_id"].nunique() - 2
    split = grouped_split(table, groups, seed=0)
    assert split["split"].iloc[[0, 500, 900]].nunique() == 1


def test_image_split_sizes_and_leak():
    table = synthetic_table()
    split = image_split(table, val=0.15, test=0.15, seed=0)
    assert split["split"].value_counts().to_dict() == {"train": 1401, "val": 300, "test": 300}
    per_lesion = table.assign(split=split["split"]).groupby("lesion_id")["split"].nunique()
    assert per_lesion.max() > 1  # the leak this split is kept for


def test_bad_fractions_are_refused():
    with pytest.raises(ValueError, match="val \\+ test < 1"):
        grouped_split(synthetic_table(), lesion_groups(synthetic_table()), val=0.6, test=0.5)


def test_split_file_round_trip_and_errors(tmp_path):
    table = synthetic_table()
    split = grouped_split(table, lesion_groups(table), seed=0)
    path = tmp_path / "split.csv"
    write_split(split, path)
    assert read_split(path, table).equals(split)

    path.write_text("image_id,lesion_group,split\nimg_nv_0,les_0,training\n")
    with pytest.raises(
        DatasetError, match=r"split\.csv: split must be one of train, val, test; .*line 2: split='training'"
    ):
        read_split(path)
    path.write_text("image_id,split\nimg_nv_0,train\n")
    with pytest.raises(DatasetError, match="missing column\\(s\\) lesion_group"):
        read_split(path)
    write_split(split.iloc[:-3], path)
    with pytest.raises(DatasetError, match="3 dataset image\\(s\\) not in the split"):
        read_split(path, table)
    with pytest.raises(DatasetError, match="no such split file"):
        read_split(tmp_path / "absent.csv")


runner = CliRunner()


def test_cli_hash_distance_default_is_the_split_modules():
    from dermxai.cli import base as cli
    from dermxai.data import splits

    assert cli.DEFAULT_HASH_DISTANCE == splits.DEFAULT_HASH_DISTANCE


def test_data_split_and_leak_group_lesions_the_same_way(fixture_dir, fixture_table, tmp_path):
    from dermxai.data.splits import honest_groups, read_split
    from dermxai.evaluation.leak import prepare_arms

    result = runner.invoke(app, ["data", "split", "--data", str(fixture_dir), "--out", str(tmp_path / "cli.csv")])
    assert result.exit_code == 0, result.output
    arms = prepare_arms(fixture_dir, tmp_path / "leak", 0, {}, ["lesion"])
    assert read_split(arms["lesion"]["split"]).equals(read_split(tmp_path / "cli.csv"))
    assert read_split(tmp_path / "cli.csv")["lesion_group"].tolist() == honest_groups(fixture_table).tolist()
