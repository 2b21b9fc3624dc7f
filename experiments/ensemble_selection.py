"""Which members make the best ensemble? Every subset of the member bundles, scored on validation only.

    python experiments/ensemble_selection.py members/* [--cache runs/member_val_logits.npz] [--out FILE.json]

Each member's validation logits are computed once (PyTorch, as `dermxai ensemble` serves them: the images at the
first member's input size, upsampled inside for a member trained larger) and cached. A subset's figure is what
`dermxai calibrate` would serve: the mean of the members' logits, the logit-adjustment strength tau chosen on
validation balanced accuracy (ties to the smaller tau), then its balanced accuracy. Calibration (temperature and
class bias) does not change the label, so it is left to `dermxai calibrate` on the subset chosen here. The test
split is not read.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dermxai.evaluation.calibration import train_counts
from dermxai.evaluation.evaluate import from_split
from dermxai.evaluation.predict import load_images
from dermxai.models.bundle import load_bundle
from dermxai.preprocessing import to_batch
from dermxai.probabilities import choose_tau

DATA, SPLIT = Path("../shared/data/ham10000"), Path("splits/ham10000_seed0.csv")


def member_logits(members: list[Path], cache: Path) -> dict[str, np.ndarray]:
    """Validation logits of each member (cached by member name), the images at the first member's size."""
    stored = dict(np.load(cache)) if cache.is_file() else {}
    missing = [m for m in members if m.name not in stored]
    if missing:
        first = load_bundle(members[0])[1]
        val = from_split(DATA, SPLIT, "val").table
        pixels = load_images(val, first.size)
        for member in missing:
            model, config = load_bundle(member)
            model.eval()
            out = []
            with torch.inference_mode():
                for start in range(0, len(pixels), 64):
                    own = {"mean": config.mean, "std": config.std, "colour_constancy": config.colour_constancy}
                    batch = to_batch(pixels[start : start + 64], first.replace(**own))
                    if config.size != first.size:
                        batch = F.interpolate(batch, size=config.size, mode="bilinear", align_corners=False)
                    out.append(model(batch).float())
            stored[member.name] = torch.cat(out).numpy()
            print(f"{member.name}: logits of {len(pixels)} validation images", flush=True)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **stored)
    return {m.name: stored[m.name] for m in members}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("members", nargs="+", type=Path)
    parser.add_argument("--cache", type=Path, default=Path("runs/member_val_logits.npz"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logits = member_logits(args.members, args.cache)
    classes = list(load_bundle(args.members[0])[1].classes)
    val = from_split(DATA, SPLIT, "val").table
    labels = val["dx"].map(classes.index).to_numpy()
    counts = train_counts(DATA, SPLIT, classes)
    rows = []
    for size in range(1, len(logits) + 1):
        for subset in itertools.combinations(logits, size):
            tau, scores = choose_tau(np.mean([logits[m] for m in subset], axis=0), labels, counts)
            rows.append({"members": list(subset), "tau": tau, "val_bacc_served": round(scores[tau], 4)})
    rows.sort(key=lambda row: -row["val_bacc_served"])
    print("| members | tau | val bal. acc, served |\n|---|---|---|")
    for row in rows:
        print(f"| {' + '.join(row['members'])} | {row['tau']} | {row['val_bacc_served']:.3f} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
