"""Choose a bundle's heatmap (layer and method) from validation scores and store the choice in the bundle.

    python scripts/choose_cam.py BUNDLE runs/cam_select/v6 [--write]

Reads ``FOLDER/LAYER/explain_metrics.json`` as written by scripts/cam_select.sh (validation, localisation only) and
applies README's rule: the highest in-mask energy, and among the pairs within 0.01 of it the best pointing game.
With ``--write`` sets ``cam_layer``, ``cam_method`` and ``cam_choice`` (every pair's figures, the rule, the subset)
in BUNDLE/config.json; the app then names the method as validated.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dermxai.models.bundle import update_config

TIE = 0.01


def candidates(folder: Path) -> list[dict]:
    """One row per (layer, method) scored under ``folder``."""
    rows = []
    for metrics in sorted(folder.glob("*/explain_metrics.json")):
        scored = json.loads(metrics.read_text())
        if scored.get("provenance", {}).get("subset") != "val":
            raise SystemExit(f"{metrics}: not scored on the validation subset; choose on validation")
        for method, figures in scored["per_method"].items():
            rows.append(
                {
                    "layer": metrics.parent.name,
                    "method": method,
                    "in_mask_energy": round(figures["in_mask_energy"]["mean"], 4),
                    "minus_gaussian": round(figures["minus_gaussian"]["in_mask_energy"]["mean"], 4),
                    "pointing_game": round(figures["pointing_game"]["mean"], 4),
                    "n_images": figures["n_images"],
                }
            )
    if not rows:
        raise SystemExit(f"no */explain_metrics.json under {folder}: run scripts/cam_select.sh first")
    return rows


def choose(rows: list[dict]) -> dict:
    """The rule: best in-mask energy; among pairs within TIE of it, the best pointing game."""
    best = max(row["in_mask_energy"] for row in rows)
    return max((row for row in rows if row["in_mask_energy"] >= best - TIE), key=lambda row: row["pointing_game"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("scores", type=Path)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    rows = sorted(candidates(args.scores), key=lambda row: -row["in_mask_energy"])
    chosen = choose(rows)
    print("| layer | method | in-mask energy | minus Gaussian | pointing game |\n|---|---|---|---|---|")
    for row in rows:
        mark = "**" if row is chosen else ""
        print(
            f"| {mark}`{row['layer']}`{mark} | {row['method']} | {row['in_mask_energy']:.3f} | "
            f"{row['minus_gaussian']:+.3f} | {row['pointing_game']:.3f} |"
        )
    if args.write:
        record = {
            "rule": f"highest validation in-mask energy; among pairs within {TIE} of it, the best pointing game",
            "subset": "val",
            "scored_by": "scripts/cam_select.sh (dermxai explain-score --localisation-only --limit 500)",
            "candidates": rows,
            "beats_gaussian": chosen["minus_gaussian"] > 0,  # in-mask energy above a centred Gaussian's
        }
        update_config(args.bundle, cam_layer=chosen["layer"], cam_method=chosen["method"], cam_choice=record)
        print(f"{args.bundle}: heatmap {chosen['method']} at {chosen['layer']}")


if __name__ == "__main__":
    main()
