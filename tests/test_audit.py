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


def test_audit_flags_a_notebook_split_made_after_oversampling(tmp_path, fixture_dir, fixture_table):
    """Copies written before a random split: flagged by their bytes even when the CSV forgets lesion ids."""
    from dermxai.data import load_dataset
    from dermxai.data.oversample import oversample
    from dermxai.data.splits import image_split, write_split

    kept = fixture_table[fixture_table["dx"].eq("nv") | ~fixture_table["dx"].duplicated()]  # 5 nv, 1 of the rest
    folder = oversample(kept, tmp_path / "o", "plain")
    table = load_dataset(folder)
    write_split(image_split(table, seed=0), tmp_path / "split.csv")
    table[["image_id", "dx"]].to_csv(folder / "labels.csv", index=False)  # no lesion ids, as in a notebook
    result = runner.invoke(
        app,
        ["data", "audit", "--data", str(folder / "labels.csv"), "--split", str(tmp_path / "split.csv"), "--json"],
    )
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert not any(report["lesion_crossings"].values())  # every image is its own "lesion" here
    twins = report["twin_crossings"]["train-test"]
    assert report["test_images_with_train_twin"] > 0 and {t["kind"] for t in twins} == {"byte-identical"}
    assert all(t["image_a"].split("_copy")[0] == t["image_b"].split("_copy")[0] for t in twins)
    shown = runner.invoke(
        app, ["data", "audit", "--data", str(folder / "labels.csv"), "--split", str(tmp_path / "split.csv")]
    )
    assert "have a copy of themselves in train" in " ".join(shown.output.split()) and "LEAKAGE FOUND" in shown.output


def test_copy_counts_reach_the_majority_or_a_factor():
    from dermxai.data.oversample import copy_counts

    dx = pd.Series(["nv"] * 10 + ["mel"] * 4 + ["df"])
    assert copy_counts(dx).to_dict() == {"nv": 0, "mel": 6, "df": 9}
    assert copy_counts(dx, factor=3).to_dict() == {"nv": 0, "mel": 6, "df": 2}
