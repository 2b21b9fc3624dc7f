"""Leakage audit and the split/audit commands on the committed fixture."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from dermxai.cli import app
from dermxai.data.audit import audit_split
from dermxai.data.splits import SPLITS

runner = CliRunner()


def split_of(table: pd.DataFrame, assign: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": table["image_id"],
            "lesion_group": table["lesion_id"],
            "split": table["image_id"].map(lambda image_id: assign.get(image_id, "train")),
        }
    )


def test_audit_finds_lesion_and_reviewed_duplicate_crossings(fixture_table):
    siblings = fixture_table[fixture_table["lesion_id"] == "HAM_0007409"]["image_id"].tolist()
    split = split_of(fixture_table, {siblings[0]: "test", "ISIC_0025226": "val"})
    report = audit_split(fixture_table, split, reviewed_pairs=[("ISIC_0030074", "ISIC_0025226")])
    assert not report["leak_free"]
    assert {r["image_id"] for r in report["lesion_crossings"]["train-test"]} == set(siblings)
    assert report["lesion_crossings"]["train-val"] == [] and report["lesion_crossings"]["val-test"] == []
    (pair,) = report["near_duplicate_crossings"]["train-val"]
    assert (pair["image_a"], pair["image_b"]) == ("ISIC_0030074", "ISIC_0025226")
    assert report["test_images_with_train_sibling"] == 1 and report["test_share_with_train_sibling"] == 1.0


def test_audit_of_a_clean_split_is_leak_free(fixture_table):
    report = audit_split(fixture_table, split_of(fixture_table, {}))
    assert report["leak_free"] and report["split_sizes"] == {"train": 35, "val": 0, "test": 0}


def test_split_then_audit_commands(tmp_path, fixture_dir):
    out = tmp_path / "split.csv"
    result = runner.invoke(
        app, ["data", "split", "--data", str(fixture_dir), "--out", str(out), "--val", "0.2", "--test", "0.2"]
    )
    assert result.exit_code == 0, result.output
    assert "33 lesion ids -> 32 groups (1 merged by near-duplicate pairs)" in result.output
    split = pd.read_csv(out)
    assert list(split.columns) == ["image_id", "lesion_group", "split"] and set(split["split"]) == set(SPLITS)
    groups = split.set_index("image_id")["lesion_group"]
    assert groups["ISIC_0030074"] == groups["ISIC_0025226"]
    result = runner.invoke(app, ["data", "audit", "--data", str(fixture_dir), "--split", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["leak_free"] is True


def test_audit_command_fails_on_a_leaky_split(tmp_path, fixture_dir, fixture_table):
    siblings = fixture_table[fixture_table["lesion_id"] == "HAM_0007409"]["image_id"].tolist()
    split_of(fixture_table, {siblings[0]: "test", siblings[1]: "val"}).to_csv(tmp_path / "s.csv", index=False)
    result = runner.invoke(app, ["data", "audit", "--data", str(fixture_dir), "--split", str(tmp_path / "s.csv")])
    assert result.exit_code == 1
    assert "1 of 1 test images (100.0%) have a same-lesion sibling in train" in result.output
    assert "LEAKAGE FOUND" in result.output


def test_commands_report_bad_input_without_a_traceback(tmp_path, fixture_dir):
    (tmp_path / "labels.csv").write_text("image_id,dx\nISIC_0024307,zebra\n")
    result = runner.invoke(
        app,
        [
            "data",
            "split",
            "--data",
            str(tmp_path / "labels.csv"),
            "--images",
            str(fixture_dir),
            "--out",
            str(tmp_path / "s.csv"),
        ],
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "unknown diagnosis label in 1 row(s): line 2: dx='zebra'" in " ".join(result.output.split())
    result = runner.invoke(app, ["data", "audit", "--data", str(fixture_dir), "--split", str(tmp_path / "none.csv")])
    assert result.exit_code == 2 and "no such split file" in " ".join(result.output.split())
