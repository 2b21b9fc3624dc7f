"""Could a cascade cut an ensemble's p50? The first members answer alone when they are confident; validation only.

    python experiments/cascade_probe.py --voters members/A members/B ... --first members/A [members/B ...]
        [--cache runs/member_val_logits.npz] [--agreement 0.99]

The full ensemble serves the mean of its voters' logits with the logit adjustment tau chosen on validation (as
`dermxai calibrate` does). The cascade runs the ``--first`` members, and stops there when the top probability of
their mean (adjusted by the same tau) reaches a threshold; otherwise it runs the rest and serves the full answer.
For each threshold: the share of validation images that stop early, how often the cascade's label is the full
ensemble's, and its balanced accuracy. The p50 falls to the first stage's cost only when more than half of the
images stop early; the line at the end names the lowest threshold that keeps ``--agreement`` of the labels and
the share that stops there. Logits come from (and are cached like) `experiments/ensemble_selection.py`. The test
split is not read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from ensemble_selection import DATA, SPLIT, member_logits

from dermxai.evaluation.calibration import train_counts
from dermxai.evaluation.evaluate import from_split
from dermxai.models.bundle import load_bundle
from dermxai.probabilities import balanced_accuracy_of, choose_tau, decision_logits, logit_adjustment, softmax

THRESHOLDS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voters", nargs="+", type=Path, required=True)
    parser.add_argument("--first", nargs="+", type=Path, required=True, help="the members that run first")
    parser.add_argument("--cache", type=Path, default=Path("runs/member_val_logits.npz"))
    parser.add_argument("--agreement", type=float, default=0.99, help="share of full-ensemble labels to keep")
    args = parser.parse_args()
    if not {m.name for m in args.first} < {m.name for m in args.voters}:
        parser.error("--first must name some, not all, of the --voters")

    logits = member_logits(args.voters, args.cache)
    classes = list(load_bundle(args.voters[0])[1].classes)
    labels = from_split(DATA, SPLIT, "val").table["dx"].map(classes.index).to_numpy()
    counts = train_counts(DATA, SPLIT, classes)
    full = np.mean(list(logits.values()), axis=0)
    tau, _ = choose_tau(full, labels, counts)
    bias = logit_adjustment(counts, tau)
    full_labels = decision_logits(full, bias).argmax(1)
    first = softmax(decision_logits(np.mean([logits[m.name] for m in args.first], axis=0), bias))
    print(f"full ensemble: tau {tau}, val served {balanced_accuracy_of(decision_logits(full, bias), labels):.4f}")
    print("| threshold | stop early | labels as the full ensemble | val served |\n|---|---|---|---|")
    chosen = None
    for threshold in THRESHOLDS:
        early = first.max(1) >= threshold
        served = np.where(early, first.argmax(1), full_labels)
        agreement = float(np.mean(served == full_labels))
        score = balanced_accuracy_of(np.eye(len(classes))[served], labels)
        print(f"| {threshold} | {early.mean():.1%} | {agreement:.1%} | {score:.4f} |")
        if chosen is None and agreement >= args.agreement:
            chosen = (threshold, float(early.mean()))
    if chosen is None:
        print(f"no threshold keeps {args.agreement:.0%} of the labels")
    else:
        print(f"lowest threshold keeping {args.agreement:.0%} of the labels: {chosen[0]}, {chosen[1]:.1%} stop early")


if __name__ == "__main__":
    main()
