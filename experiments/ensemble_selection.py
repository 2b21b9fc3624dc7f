"""Which members make the best ensemble? Every subset of the member bundles, scored on validation only.

    python experiments/ensemble_selection.py members/* [--cache runs/member_val_logits.npz] [--out FILE.json]
        [--keep 200] [--holdout-repeats 5]

Each member's validation logits are computed once (PyTorch, as `dermxai ensemble` serves them: the images at the
first member's input size, upsampled inside for a member trained larger) and cached. A subset's figure is what
`dermxai calibrate` would serve: the mean of the members' logits, the logit-adjustment strength tau chosen on
validation balanced accuracy (ties to the smaller tau), then its balanced accuracy. Calibration (temperature and
class bias) does not change the label, so it is left to `dermxai calibrate` on the subset chosen here. The test
split is not read.

The best of thousands of subsets on ~1,500 images flatters itself. ``--holdout-repeats R`` measures by how much:
R times, validation is cut into two halves of whole lesions (stratified by diagnosis); on one half each
selection rule picks its subset and tau (the searched best subset, all members, the k best members alone),
and its pick is scored on the other half, beside the all-members pick on the same half (a paired difference).
The 2R halves overlap, so their spread understates the uncertainty; the members' checkpoints were chosen on
all of validation, so even the other half is not unseen. The console shows the top 20 subsets; the JSON keeps
the top ``--keep``, the best of every size, the all-members row and this check.
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
from dermxai.probabilities import (
    TAU_GRID,
    TAU_TOLERANCE,
    balanced_accuracy_of,
    decision_logits,
    logit_adjustment,
)

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


def served_scores(mean_logits: np.ndarray, labels: np.ndarray, biases: np.ndarray) -> np.ndarray:
    """Balanced accuracy at every tau of the grid at once (``biases``: one logit-adjustment row per tau)."""
    classes = biases.shape[1]
    predicted = (mean_logits[None] + biases[:, None]).argmax(2)
    hits = np.stack([np.bincount(labels[p == labels], minlength=classes) for p in predicted])
    present = np.bincount(labels, minlength=classes)
    return (hits[:, present > 0] / present[present > 0]).mean(1)


def search(logits: dict[str, np.ndarray], labels: np.ndarray, counts: np.ndarray) -> list[dict]:
    """Every subset with its served validation balanced accuracy (tau chosen on these rows as
    :func:`choose_tau` does: ties within its tolerance to the smaller tau), best first."""
    biases = np.stack([logit_adjustment(counts, tau) for tau in TAU_GRID])
    rows = []
    for size in range(1, len(logits) + 1):
        for subset in itertools.combinations(logits, size):
            scores = served_scores(np.mean([logits[m] for m in subset], axis=0), labels, biases)
            index = int(np.flatnonzero(scores >= scores.max() - TAU_TOLERANCE)[0])
            rows.append(
                {"members": list(subset), "tau": TAU_GRID[index], "val_bacc_served": round(float(scores[index]), 4)}
            )
    rows.sort(key=lambda row: -row["val_bacc_served"])
    return rows


def served_score(logits: dict[str, np.ndarray], row: dict, labels: np.ndarray, counts: np.ndarray) -> float:
    """Balanced accuracy of one subset at its tau (chosen elsewhere) on these rows."""
    mean = np.mean([logits[m] for m in row["members"]], axis=0)
    return balanced_accuracy_of(decision_logits(mean, logit_adjustment(counts, row["tau"])), labels)


def selection_rules(rows: list[dict], names: list[str]) -> dict[str, dict]:
    """The choices each rule makes from one ranking: the searched best subset, all members, the best k alone."""
    singles = [row["members"][0] for row in rows if len(row["members"]) == 1]
    by_members = {tuple(row["members"]): row for row in rows}
    rules = {"subset search": rows[0], "all members": by_members[tuple(names)]}
    for k in (k for k in (3, 4, 5, 6) if k < len(names)):
        rules[f"best {k} members alone"] = by_members[tuple(m for m in names if m in singles[:k])]
    return rules


def lesion_halves(groups: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """A random half of the lesions of every diagnosis (a lesion's first image gives its diagnosis), as a row mask."""
    first = {group: label for group, label in zip(groups[::-1], labels[::-1], strict=True)}
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        lesions = rng.permutation(sorted(g for g, lab in first.items() if lab == label))
        chosen.extend(lesions[: len(lesions) // 2])
    return np.isin(groups, chosen)


def holdout_check(
    logits: dict[str, np.ndarray], labels: np.ndarray, groups: np.ndarray, counts: np.ndarray, repeats: int
) -> dict:
    """Each selection rule chosen on one half of validation (subset and tau), scored on the other half."""
    trials = []
    for seed in range(repeats):
        half = lesion_halves(groups, labels, seed)
        for pick, other in ((half, ~half), (~half, half)):
            rows = search({name: value[pick] for name, value in logits.items()}, labels[pick], counts)
            held = {name: value[other] for name, value in logits.items()}
            for rule, row in selection_rules(rows, list(logits)).items():
                trial = {"seed": seed, "rule": rule, "members": row["members"], "tau": row["tau"]}
                trial["search_half"] = row["val_bacc_served"]
                trial["other_half"] = round(served_score(held, row, labels[other], counts), 4)
                trials.append(trial)
    everyone = np.array([t["other_half"] for t in trials if t["rule"] == "all members"])
    summary = {}
    for rule in dict.fromkeys(t["rule"] for t in trials):
        mine = [t for t in trials if t["rule"] == rule]
        other = np.array([t["other_half"] for t in mine])
        gain = other - everyone
        summary[rule] = {
            "search_half": round(float(np.mean([t["search_half"] for t in mine])), 4),
            "other_half": round(float(other.mean()), 4),
            "minus_all_members": round(float(gain.mean()), 4),
            "minus_all_members_spread": round(float(gain.std(ddof=1) / np.sqrt(len(gain))), 4),
        }
    return {"repeats": repeats, "halves": 2 * repeats, "rules": summary, "trials": trials}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("members", nargs="+", type=Path)
    parser.add_argument("--cache", type=Path, default=Path("runs/member_val_logits.npz"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", type=int, default=200, help="rows of the ranking kept in --out (best first)")
    parser.add_argument("--holdout-repeats", type=int, default=0, help="split-half checks of the search (0: none)")
    args = parser.parse_args()
    logits = member_logits(args.members, args.cache)
    classes = list(load_bundle(args.members[0])[1].classes)
    val = from_split(DATA, SPLIT, "val")
    labels = val.table["dx"].map(classes.index).to_numpy()
    counts = train_counts(DATA, SPLIT, classes)
    rows = search(logits, labels, counts)
    print("| members | tau | val bal. acc, served |\n|---|---|---|")
    for row in rows[:20]:
        print(f"| {' + '.join(row['members'])} | {row['tau']} | {row['val_bacc_served']:.3f} |")
    best_by_size: dict[int, dict] = {}
    for row in rows:
        best_by_size.setdefault(len(row["members"]), row)
    report = {
        "subsets": len(rows),
        "top": rows[: args.keep],
        "best_by_size": [best_by_size[size] for size in sorted(best_by_size)],
        "all_members": best_by_size[len(logits)],
    }
    if args.holdout_repeats:
        report["holdout_check"] = holdout_check(logits, labels, val.groups, counts, args.holdout_repeats)
        print("| rule | on its search half | on the other half | minus all members, same half (spread) |")
        print("|---|---|---|---|")
        for rule, row in report["holdout_check"]["rules"].items():
            print(
                f"| {rule} | {row['search_half']:.3f} | {row['other_half']:.3f} | "
                f"{row['minus_all_members']:+.3f} ({row['minus_all_members_spread']:.3f}) |"
            )
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
