"""Does a member change its answer under noise no one can see? Validation only; the test split is not read.

    python experiments/noise_stability.py members/NAME [members/NAME ...] [--images 96] [--levels 1 3]

The first ``--images`` validation images, at each member's input size, are given uniform integer noise of
±level grey levels (a new draw per level, seeded). For each level the script prints the share of images whose
predicted class (argmax of the logits) changes, the mean absolute change of the logits and the argmax balanced
accuracy, clean and noisy (``--images 0``: all of validation). Files from another
source carry their own sensor noise and JPEG artefacts, so a member that flips here is exposed on external data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from ensemble_selection import DATA, SPLIT

from dermxai.evaluation.evaluate import from_split
from dermxai.evaluation.predict import load_images
from dermxai.models.bundle import load_bundle
from dermxai.preprocessing import to_batch
from dermxai.probabilities import balanced_accuracy_of


def stability(member: Path, table, levels: list[int], seed: int) -> list[tuple[int, float, float, float, float]]:
    """(level, share of changed answers, mean |logit change|, balanced accuracy clean, noisy) for each level."""
    model, config = load_bundle(member)
    model.eval()
    pixels = load_images(table, config.size)
    labels = table["dx"].map(list(config.classes).index).to_numpy()
    rng = np.random.default_rng(seed)
    rows = []
    with torch.inference_mode():
        clean = logits(model, pixels, config)
        for level in levels:
            noise = rng.integers(-level, level + 1, pixels.shape)
            noisy = logits(model, np.clip(pixels.astype(int) + noise, 0, 255).astype(np.uint8), config)
            changed = float((noisy.argmax(1) != clean.argmax(1)).mean())
            accuracy = (balanced_accuracy_of(clean, labels), balanced_accuracy_of(noisy, labels))
            rows.append((level, changed, float(np.abs(noisy - clean).mean()), *accuracy))
    return rows


def logits(model: torch.nn.Module, pixels: np.ndarray, config) -> np.ndarray:
    """The model's logits of uint8 images, in batches of 64."""
    batches = [model(to_batch(pixels[i : i + 64], config)).float() for i in range(0, len(pixels), 64)]
    return torch.cat(batches).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("members", nargs="+", type=Path)
    parser.add_argument("--images", type=int, default=96, help="the first N validation images")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 3], help="noise amplitudes in grey levels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    table = from_split(DATA, SPLIT, "val").table
    table = table.iloc[: args.images] if args.images else table
    print(
        "| member | noise (grey levels) | answers changed | mean abs. logit change | bal. acc. (argmax), clean -> noisy |"
        "\n|---|---|---|---|---|"
    )
    for member in args.members:
        for level, changed, shift, clean, noisy in stability(member, table, args.levels, args.seed):
            print(
                f"| {member.name} | ±{level} | {changed:.1%} | {shift:.3f} | {clean:.3f} -> {noisy:.3f} |", flush=True
            )


if __name__ == "__main__":
    main()
