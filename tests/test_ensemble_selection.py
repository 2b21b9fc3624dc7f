"""experiments/ensemble_selection.py: the fast subset search serves what `choose_tau` would, and the split-half
check scores each rule's pick on rows it did not see."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from dermxai.probabilities import choose_tau

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("ensemble_selection", ROOT / "experiments" / "ensemble_selection.py")
selection = importlib.util.module_from_spec(spec)
spec.loader.exec_module(selection)

COUNTS = np.array([230, 360, 770, 80, 780, 4700, 100])


def members(n_images: int = 600, strengths: tuple[float, ...] = (0.4, 0.8, 1.2, 1.6, 2.0)) -> tuple[dict, np.ndarray]:
    """Noisy members of growing skill on a skewed label set (so tau matters)."""
    rng = np.random.default_rng(0)
    labels = rng.choice(7, size=n_images, p=COUNTS / COUNTS.sum())
    logits = {
        f"m{i}": rng.normal(size=(n_images, 7)) + strength * np.eye(7)[labels] + np.log(COUNTS / COUNTS.sum())
        for i, strength in enumerate(strengths)
    }
    return logits, labels


def test_search_agrees_with_choose_tau_on_every_subset() -> None:
    logits, labels = members()
    rows = selection.search(logits, labels, COUNTS)
    assert len(rows) == 2 ** len(logits) - 1
    assert [row["val_bacc_served"] for row in rows] == sorted((row["val_bacc_served"] for row in rows), reverse=True)
    for row in rows:
        tau, scores = choose_tau(np.mean([logits[m] for m in row["members"]], axis=0), labels, COUNTS)
        assert row["tau"] == tau
        assert abs(row["val_bacc_served"] - scores[tau]) < 1e-4


def test_rules_pick_the_best_members_alone_and_everyone() -> None:
    logits, labels = members()
    rows = selection.search(logits, labels, COUNTS)
    rules = selection.selection_rules(rows, list(logits))
    assert rules["subset search"] is rows[0]
    assert rules["all members"]["members"] == list(logits)
    singles = sorted(logits, key=lambda m: -next(r for r in rows if r["members"] == [m])["val_bacc_served"])
    assert set(rules["best 3 members alone"]["members"]) == set(singles[:3])


def test_holdout_check_scores_each_pick_on_the_other_half() -> None:
    logits, labels = members()
    groups = np.arange(len(labels)) // 2  # lesions of two images each
    report = selection.holdout_check(logits, labels, groups, COUNTS, repeats=2)
    assert report["halves"] == 4 and len(report["trials"]) == 4 * 6
    trial = report["trials"][0]
    half = np.isin(groups, np.random.default_rng(0).permutation(np.unique(groups))[: len(np.unique(groups)) // 2])
    held = {name: value[~half] for name, value in logits.items()}
    assert abs(trial["other_half"] - selection.served_score(held, trial, labels[~half], COUNTS)) < 1e-4
    picked = selection.search({name: value[half] for name, value in logits.items()}, labels[half], COUNTS)[0]
    assert trial["members"] == picked["members"] and trial["search_half"] == picked["val_bacc_served"]
    assert set(report["rules"]) == {t["rule"] for t in report["trials"]}
