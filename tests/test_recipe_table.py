"""scripts/recipe_table.py: each row names the command that trained it, read from committed configs alone."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from dermxai.training.config import TrainConfig, augment_preset

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("recipe_table", ROOT / "scripts" / "recipe_table.py")
recipe_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipe_table)


def recipe(**changes: object) -> dict:
    return TrainConfig(**changes).to_dict()


@pytest.mark.parametrize("preset", ["full", "light", "medium", "robust", "none"])
def test_each_augment_preset_is_named_as_typed(preset: str) -> None:
    command = recipe_table.train_command(recipe(augment=augment_preset(preset)))
    assert f"--augment {preset}" in command


def test_a_config_written_before_later_augment_fields_still_names_its_preset() -> None:
    augment = recipe(augment=augment_preset("light"))["augment"]
    for later_field in ("jpeg_probability", "jpeg_quality", "noise_std"):
        del augment[later_field]
    assert "--augment light" in recipe_table.train_command(recipe() | {"augment": augment})


def test_booleans_read_as_flags_and_defaults_are_left_out() -> None:
    command = recipe_table.train_command(recipe(teacher="runs/ens", teacher_flips=False, epochs=8))
    assert "--teacher runs/ens" in command and "--no-teacher-flips" in command and "--epochs 8" in command
    assert "--lr" not in command and "False" not in command


def test_a_row_comes_from_a_committed_config_copy_without_weights(tmp_path: Path) -> None:
    config = json.loads((ROOT / "src" / "dermxai" / "assets" / "default_model" / "config.json").read_text())
    copy = tmp_path / "bundle_config.json"
    copy.write_text(json.dumps(config))
    line = recipe_table.row("shipped", [str(copy)])
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells[0] == "shipped" and len(cells) == 12
    assert cells[6] == str(config["calibration"]["tau"])
