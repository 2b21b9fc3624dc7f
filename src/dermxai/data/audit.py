"""Leakage audit: lesions, near-duplicates and copies of one image that cross between train, val and test."""

from __future__ import annotations

import hashlib
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from dermxai.data.duplicates import hash_distance_pairs
from dermxai.data.splits import SPLITS


def audit_split(
    table: pd.DataFrame,
    split: pd.DataFrame,
    hashes: np.ndarray | None = None,
    max_distance: int = 0,
    reviewed_pairs: list[tuple[str, str]] = (),
) -> dict:
    """Report every lesion id, near-duplicate pair and twin that spans two splits (JSON-ready dict).

    Near-duplicates are image pairs of different lesions with pHash distance ``<= max_distance`` (when
    ``hashes`` is given, aligned with ``table``) plus the ``reviewed_pairs``. Twins are copies of one image,
    whatever their lesion ids say: byte-identical files, or an identical pHash (what oversampling before the
    split produces). ``leak_free`` is true when nothing crosses.
    """
    frame = table[["image_id", "lesion_id", "path"]].merge(split[["image_id", "split"]], on="image_id", validate="1:1")
    lesion_splits = frame.groupby("lesion_id")["split"].agg(lambda s: set(s))
    crossings: dict[str, list[dict]] = {}
    for a, b in combinations(SPLITS, 2):
        shared = lesion_splits.index[lesion_splits.map(lambda s: {a, b} <= s)]
        rows = frame[frame["lesion_id"].isin(shared) & frame["split"].isin([a, b])].sort_values(
            ["lesion_id", "image_id"]
        )
        crossings[f"{a}-{b}"] = rows[["image_id", "lesion_id", "split"]].to_dict("records")

    near = _near_duplicate_crossings(frame, hashes, max_distance, reviewed_pairs)
    twins = twin_crossings(frame, hashes)
    test_lesions = frame[frame["split"] == "test"]
    in_train = lesion_splits.map(lambda s: "train" in s)
    with_sibling = int(test_lesions["lesion_id"].isin(in_train.index[in_train.astype(bool)]).sum())
    report = {
        "n_images": len(frame),
        "split_sizes": {s: int((frame["split"] == s).sum()) for s in SPLITS},
        "lesion_crossings": crossings,
        "near_duplicate_crossings": near,
        "near_duplicate_max_hash_distance": max_distance if hashes is not None else None,
        "twin_crossings": twins,
        "test_images_with_train_twin": len({row["image_b"] for row in twins["train-test"]}),
        "test_images_with_train_sibling": with_sibling,
        "test_share_with_train_sibling": with_sibling / max(1, len(test_lesions)),
    }
    report["leak_free"] = not any(crossings.values()) and not any(near.values()) and not any(twins.values())
    return report


def twin_crossings(frame: pd.DataFrame, hashes: np.ndarray | None = None) -> dict[str, list[dict]]:
    """Pairs of copies of one image in two splits: same file bytes, or (with ``hashes``) the same pHash."""
    keys = {"byte-identical": [_file_digest(p) for p in frame["path"]]}
    if hashes is not None:
        keys["pHash twin"] = [int(h) for h in hashes]
    ids, split_of = frame["image_id"].to_numpy(), frame["split"].to_numpy()
    out: dict[str, list[dict]] = {f"{a}-{b}": [] for a, b in combinations(SPLITS, 2)}
    seen: set[tuple[int, int]] = set()
    for kind, values in keys.items():
        by_key: dict[object, list[int]] = {}
        for n, key in enumerate(values):
            by_key.setdefault(key, []).append(n)
        for members in by_key.values():
            for i, j in combinations(members, 2):
                if split_of[i] == split_of[j] or (i, j) in seen:
                    continue
                seen.add((i, j))
                first, second = sorted((i, j), key=lambda k: SPLITS.index(split_of[k]))
                out[f"{split_of[first]}-{split_of[second]}"].append(
                    {"image_a": ids[first], "image_b": ids[second], "kind": kind}
                )
    return out


def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _near_duplicate_crossings(
    frame: pd.DataFrame, hashes: np.ndarray | None, max_distance: int, reviewed_pairs: list[tuple[str, str]]
) -> dict[str, list[dict]]:
    ids = frame["image_id"].to_numpy()
    position = {image_id: n for n, image_id in enumerate(ids)}
    pairs: dict[tuple[int, int], int | None] = {}
    if hashes is not None:
        for i, j, d in hash_distance_pairs(hashes, max_distance):
            pairs[(int(i), int(j))] = int(d)
    for a, b in reviewed_pairs:
        if a in position and b in position:
            i, j = sorted((position[a], position[b]))
            pairs.setdefault((i, j), int(np.bitwise_count(hashes[i] ^ hashes[j])) if hashes is not None else None)
    split_of = frame["split"].to_numpy()
    lesion_of = frame["lesion_id"].to_numpy()
    out: dict[str, list[dict]] = {f"{a}-{b}": [] for a, b in combinations(SPLITS, 2)}
    for (i, j), distance in sorted(pairs.items()):
        if split_of[i] == split_of[j] or lesion_of[i] == lesion_of[j]:
            continue  # same split, or already counted as a lesion crossing
        first, second = sorted((i, j), key=lambda k: SPLITS.index(split_of[k]))
        out[f"{split_of[first]}-{split_of[second]}"].append(
            {
                "image_a": ids[first],
                "image_b": ids[second],
                "lesion_a": lesion_of[first],
                "lesion_b": lesion_of[second],
                "hash_distance": distance,
            }
        )
    return out


def leak_finding(table: pd.DataFrame, split: pd.DataFrame) -> str | None:
    """One line naming what crosses between the subsets of ``split`` (lesions, lesion groups, identical
    files), or None when nothing does. Cheap enough to run before every training and evaluation."""
    report = audit_split(table, split)
    lesions = {pair: len({row["lesion_id"] for row in rows}) for pair, rows in report["lesion_crossings"].items()}
    groups = split.groupby("lesion_group")["split"].nunique() if "lesion_group" in split.columns else pd.Series()
    twins = {pair: len(rows) for pair, rows in report["twin_crossings"].items()}
    parts = [f"{n} lesion(s) span {pair}" for pair, n in lesions.items() if n]
    parts += [f"{int((groups > 1).sum())} lesion group(s) span two subsets"] if (groups > 1).any() else []
    parts += [f"{n} copy pair(s) of one image span {pair}" for pair, n in twins.items() if n]
    return "; ".join(parts) or None
