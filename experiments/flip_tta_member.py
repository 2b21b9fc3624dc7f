"""How much does flip TTA add to one member? Validation only; the test split is not read.

    python experiments/flip_tta_member.py members/NAME [members/NAME ...] [--cache runs/member_val_flip_logits.npz]

Each member's validation logits under the four flips (identity, left-right, upside-down, both), averaged as
`dermxai ensemble --flips` serves them; for 1, 2 (identity + left-right) and 4 views, tau is chosen on
validation (ties to the smaller tau) and the served balanced accuracy printed. The four views' logits are cached
by member name, so a later run (or an ensemble of flipped members) does not recompute them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from ensemble_selection import DATA, SPLIT, served_scores

from dermxai.evaluation.calibration import train_counts
from dermxai.evaluation.evaluate import from_split
from dermxai.evaluation.predict import load_images
from dermxai.models.bundle import load_bundle
from dermxai.preprocessing import to_batch
from dermxai.probabilities import TAU_GRID, TAU_TOLERANCE, logit_adjustment


def flip_logits(member: Path, table) -> np.ndarray:
    """Logits (4, N, classes) of the validation images under the four flips."""
    model, config = load_bundle(member)
    model.eval()
    pixels, out = load_images(table, config.size), []
    with torch.inference_mode():
        for start in range(0, len(pixels), 64):
            batch = to_batch(pixels[start : start + 64], config)
            out.append(torch.stack([model(v).float() for v in (batch, batch.flip(3), batch.flip(2), batch.flip(2, 3))]))
    return torch.cat(out, 1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("members", nargs="+", type=Path)
    parser.add_argument("--cache", type=Path, default=Path("runs/member_val_flip_logits.npz"))
    args = parser.parse_args()
    val = from_split(DATA, SPLIT, "val")
    stored = dict(np.load(args.cache)) if args.cache.is_file() else {}
    for member in args.members:
        classes = list(load_bundle(member)[1].classes)
        labels = val.table["dx"].map(classes.index).to_numpy()
        biases = np.stack([logit_adjustment(train_counts(DATA, SPLIT, classes), tau) for tau in TAU_GRID])
        if member.name not in stored:
            stored[member.name] = flip_logits(member, val.table)
            args.cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(args.cache, **stored)
        views = stored[member.name]
        for name, logits in (("1 view", views[0]), ("2 views", views[:2].mean(0)), ("4 flips", views.mean(0))):
            scores = served_scores(logits, labels, biases)
            best = int(np.flatnonzero(scores >= scores.max() - TAU_TOLERANCE)[0])
            print(f"{member.name}: {name}, tau {TAU_GRID[best]}, val served {scores[best]:.4f}", flush=True)


if __name__ == "__main__":
    main()
