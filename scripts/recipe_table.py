"""The recipe study's table (validation only): one row per calibrated bundle, with the command that trained it.

Usage: python scripts/recipe_table.py NAME=BUNDLE[,VAL_DIR[,TTA_DIR[,SHIFTED_JSON]]] ... --out results/recipe_study.md

BUNDLE is a calibrated bundle or its committed config.json copy (results/study/NAME/bundle_config.json): it holds
the recipe, the training time and the calibration. VAL_DIR and TTA_DIR are `dermxai evaluate --subset val` outputs
(without and with --tta); SHIFTED_JSON is `dermxai shifted --out`. Nothing here reads the test split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dermxai.models.bundle import BundleConfig, read_config
from dermxai.training.config import AUGMENT_PRESETS, TrainConfig


def augment_name(recipe_augment: dict) -> str:
    """The --augment preset a recorded augmentation equals, or its fields when it matches none.

    Fields added after a bundle was trained take their defaults (off), as when the bundle is loaded.
    """
    recorded = TrainConfig.from_dict({"augment": recipe_augment}).augment
    for name, preset in AUGMENT_PRESETS.items():
        if preset == recorded:
            return name
    return json.dumps(recipe_augment)


def option(key: str, value: object) -> str:
    """One `dermxai train` option as typed: booleans as --flag / --no-flag."""
    flag = key.replace("_", "-")
    return (f"--{flag}" if value else f"--no-{flag}") if isinstance(value, bool) else f"--{flag} {value}"


def train_command(recipe: dict | None) -> str:
    """The `dermxai train` options that differ from today's defaults (data, split and out left out)."""
    if not recipe:
        return "(not trained by `dermxai train`: see its config)"
    default = TrainConfig().to_dict()
    words = []
    for key, value in recipe.items():
        if key == "augment":
            words.append("--augment " + augment_name(value))
        elif key in default and value != default[key] and key != "limit_train_batches":
            words.append(option(key, value))
    return "dermxai train " + " ".join(words)


def cell(metrics: dict | None, key: str) -> str:
    """``value [low, high]`` of a metrics.json figure, or - when the evaluation is missing."""
    if not metrics:
        return "-"
    low, high = metrics.get("ci95", {}).get(key, [None, None])
    return f"{metrics[key]:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None else "")


def read_json(path: str | None, name: str = "") -> dict | None:
    return json.loads((Path(path) / name if name else Path(path)).read_text()) if path else None


def bundle_config(path: str) -> BundleConfig:
    """The config of a bundle folder, or of a committed config.json copy (the weights need not be here)."""
    return BundleConfig.from_dict(json.loads(Path(path).read_text())) if Path(path).is_file() else read_config(path)


def row(name: str, paths: list[str]) -> str:
    bundle, val_dir, tta_dir, shifted_file = (paths + [None] * 4)[:4]
    config = bundle_config(bundle)
    val, tta = read_json(val_dir, "metrics.json"), read_json(tta_dir, "metrics.json")
    shifted = read_json(shifted_file)
    shift_cell = "-"
    if shifted:
        rows = {n: r["balanced_accuracy"] for n, r in shifted["shifts"].items() if n != "unchanged"}
        worst = min(rows, key=rows.get)
        shift_cell = f"{sum(rows.values()) / len(rows):.3f} (worst {rows[worst]:.3f}: {worst})"
    model = f"ensemble of {', '.join(m['source'] for m in config.members)}" if config.members else config.arch
    cells = [
        name,
        f"{model} {config.height}x{config.width}",
        f"`{train_command(config.recipe)}`" if not config.members else "`dermxai ensemble`",
        f"{config.train_time_s / 3600:.2f} h" if config.train_time_s else "-",
        "-" if config.best_epoch is None else str(config.best_epoch),
        f"{val['balanced_accuracy_argmax']:.3f}" if val else "-",
        str(config.calibration.get("tau", "-")),
        cell(val, "balanced_accuracy"),
        cell(val, "macro_auc"),
        f"{val['ece']:.3f} / {config.calibration.get('balanced_ece_after', float('nan')):.3f}" if val else "-",
        f"{tta['balanced_accuracy']:.3f}" if tta else "-",
        shift_cell,
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+", help="NAME=BUNDLE[,VAL_DIR[,TTA_DIR[,SHIFTED_JSON]]]")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    lines = [
        "| run | model | command (beyond --data, --split, --out) | training time | best epoch | val bal. acc, argmax "
        "| tau | val bal. acc, served [95% CI] | val macro AUC | val ECE natural / class-balanced | "
        "val bal. acc, flip TTA | shifted val bal. acc, mean of 10 shifts |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for spec in args.rows:
        name, _, paths = spec.partition("=")
        lines.append(row(name, paths.split(",")))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
