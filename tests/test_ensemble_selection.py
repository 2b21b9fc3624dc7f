"""experiments/ensemble_selection.py: the fast subset search serves what `choose_tau` would, and the split-half
check scores each rule's pick on rows it did not see."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

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


@pytest.mark.parametrize("absent", [None, 3])
def test_search_agrees_with_choose_tau_on_every_subset(absent: int | None) -> None:
    logits, labels = members()
    if absent is not None:  # a class missing from the rows, as in a half of validation
        keep = labels != absent
        logits, labels = {name: value[keep] for name, value in logits.items()}, labels[keep]
    rows = selection.search(logits, labels, COUNTS)
    assert len(rows) == 2 ** len(logits) - 1
    assert [row["val_bacc_served"] for row in rows] == sorted((row["val_bacc_served"] for row in rows), reverse=True)
    for row in rows:
        tau, scores = choose_tau(np.mean([logits[m] for m in row["members"]], axis=0), labels, COUNTS)
        assert row["tau"] == tau
        assert abs(row["val_bacc_served"] - scores[tau]) < 1e-4


def test_a_tie_within_the_tolerance_goes_to_the_smaller_tau() -> None:
    labels = np.repeat(np.arange(7), 10)
    logits = {"m": 5.0 * np.eye(7)[labels]}  # every tau on the grid labels every image right
    row = selection.search(logits, labels, COUNTS)[0]
    assert (row["tau"], row["val_bacc_served"]) == (0.0, 1.0)


def test_rules_pick_the_strongest_members_alone_and_everyone() -> None:
    logits, labels = members()
    rules = selection.selection_rules(selection.search(logits, labels, COUNTS), list(logits))
    assert rules["all members"]["members"] == list(logits)
    assert set(rules["best 3 members alone"]["members"]) == {"m2", "m3", "m4"}  # the three largest strengths
    assert "best 6 members alone" not in rules  # not more than there are members


def test_halves_keep_lesions_whole_and_split_every_diagnosis() -> None:
    _, labels = members()
    groups = np.arange(len(labels)) // 3  # lesions of three images each, one diagnosis per lesion
    labels = labels[groups * 3]
    half = selection.lesion_halves(groups, labels, seed=0)
    assert not set(groups[half]) & set(groups[~half])
    for label in np.unique(labels):
        lesions = len(set(groups[labels == label]))
        assert len(set(groups[half & (labels == label)])) == lesions // 2
    assert not np.array_equal(half, selection.lesion_halves(groups, labels, seed=1))


def test_holdout_check_scores_each_pick_on_the_half_it_did_not_choose_on() -> None:
    logits, labels = members()
    groups = np.arange(len(labels)) // 2
    report = selection.holdout_check(logits, labels, groups, COUNTS, repeats=2)
    assert report["halves"] == 4 and len(report["trials"]) == 4 * 4  # four rules for five members
    half = selection.lesion_halves(groups, labels, seed=0)
    for trial, (pick, other) in zip(report["trials"][::4][:2], ((half, ~half), (~half, half)), strict=True):
        best = selection.search({name: value[pick] for name, value in logits.items()}, labels[pick], COUNTS)[0]
        assert (trial["rule"], trial["members"], trial["search_half"]) == (
            "subset search",
            best["members"],
            best["val_bacc_served"],
        )
        held = {name: value[other] for name, value in logits.items()}
        assert trial["other_half"] == pytest.approx(selection.served_score(held, best, labels[other], COUNTS), abs=1e-4)
    assert report["rules"]["all members"]["minus_all_members"] == 0.0
