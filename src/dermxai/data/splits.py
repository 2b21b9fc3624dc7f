"""Train/val/test splits: lesion-grouped and stratified (honest), or random per image (the leaky baseline).

A split file is a CSV ``image_id,lesion_group,split`` with ``split`` in ``train``, ``val``, ``test``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dermxai.data.duplicates import hash_distance_pairs, perceptual_hashes, read_reviewed_pairs
from dermxai.data.index import DatasetError

SPLITS = ("train", "val", "test")
SPLIT_COLUMNS = ["image_id", "lesion_group", "split"]
DEFAULT_HASH_DISTANCE = 0  # pHash alone finds look-alikes on dermoscopy: 38 of 40 pairs at <= 2 were other lesions


def honest_groups(
    table: pd.DataFrame, hash_distance: int = DEFAULT_HASH_DISTANCE, reviewed: str | Path | None = None
) -> pd.Series:
    """The groups of the honest split: lesion ids joined by pHash twins (<= ``hash_distance``) and reviewed pairs.

    The one definition ``dermxai data split`` and ``dermxai leak`` share; ``reviewed`` defaults to the
    near-duplicate pairs reviewed for HAM10000 and shipped with the package.
    """
    ids = table["image_id"].to_numpy()
    hashes = perceptual_hashes(table["path"].tolist())
    pairs = [(ids[i], ids[j]) for i, j, _ in hash_distance_pairs(hashes, hash_distance)]
    return lesion_groups(table, pairs + read_reviewed_pairs(reviewed))


def lesion_groups(table: pd.DataFrame, duplicate_pairs: list[tuple[str, str]] = ()) -> pd.Series:
    """Group images that must share a split: same ``lesion_id``, or joined by a near-duplicate pair.

    Returns a Series (indexed like ``table``) naming each image's group by its smallest lesion id.
    """
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    def union(a: str, b: str) -> None:
        root_a, root_b = find(a), find(b)
        if root_a != root_b:
            parent[max(root_a, root_b)] = min(root_a, root_b)

    lesion_of = dict(zip(table["image_id"], table["lesion_id"]))
    for lesion in lesion_of.values():
        find(lesion)
    for image_a, image_b in duplicate_pairs:
        if image_a in lesion_of and image_b in lesion_of:
            union(lesion_of[image_a], lesion_of[image_b])
    return table["lesion_id"].map(find).rename("lesion_group")


def grouped_split(
    table: pd.DataFrame, groups: pd.Series, val: float = 0.15, test: float = 0.15, seed: int = 0
) -> pd.DataFrame:
    """Assign whole groups to splits so that each diagnosis is split in the requested proportions.

    Groups are stratified by their majority diagnosis. Within a diagnosis the groups are shuffled by
    ``seed``, ordered largest first, and each goes to the split furthest below its target image count.
    """
    fractions = _fractions(val, test)
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"group": groups.to_numpy(), "dx": table["dx"].to_numpy()})
    sizes = frame.groupby("group").size()
    majority = frame.groupby("group")["dx"].agg(lambda s: s.value_counts().index[0])
    assignment: dict[str, str] = {}
    for dx in sorted(majority.unique()):
        members = majority.index[majority.eq(dx)].to_numpy()
        members = members[rng.permutation(len(members))]
        members = sorted(members, key=lambda g: -sizes[g])  # stable: shuffled order breaks ties
        targets = fractions * sizes[members].sum()
        filled = np.zeros(len(SPLITS))
        for group in members:
            choice = int(np.argmax(targets - filled))
            assignment[group] = SPLITS[choice]
            filled[choice] += sizes[group]
    return pd.DataFrame(
        {
            "image_id": table["image_id"].to_numpy(),
            "lesion_group": groups.to_numpy(),
            "split": groups.map(assignment).to_numpy(),
        }
    )


def image_split(table: pd.DataFrame, val: float = 0.15, test: float = 0.15, seed: int = 0) -> pd.DataFrame:
    """Random per-image split, ignoring lesions: the leaky split many published projects use."""
    fractions = _fractions(val, test)
    order = np.random.default_rng(seed).permutation(len(table))
    bounds = np.round(np.cumsum(fractions) * len(table)).astype(int)
    split = np.empty(len(table), dtype=object)
    for name, start, stop in zip(SPLITS, np.r_[0, bounds[:-1]], bounds):
        split[order[start:stop]] = name
    return pd.DataFrame(
        {"image_id": table["image_id"].to_numpy(), "lesion_group": table["lesion_id"].to_numpy(), "split": split}
    )


def class_shares(table: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    """Share of each diagnosis overall and within each split (rows: diagnosis; columns: all + splits)."""
    merged = table[["image_id", "dx"]].merge(split[["image_id", "split"]], on="image_id")
    shares = pd.crosstab(merged["dx"], merged["split"], normalize="columns")
    shares.insert(0, "all", merged["dx"].value_counts(normalize=True))
    return shares[["all", *[s for s in SPLITS if s in shares]]].fillna(0.0)


def write_split(split: pd.DataFrame, path: str | Path) -> None:
    """Write a split file (CSV ``image_id,lesion_group,split``)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    split[SPLIT_COLUMNS].to_csv(path, index=False)


def read_split(path: str | Path, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Read and check a split file; with ``table``, also check it covers exactly the dataset's images."""
    path = Path(path)
    try:
        split = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such split file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: not a readable split CSV ({str(error).strip() or type(error).__name__})") from None
    missing = [c for c in SPLIT_COLUMNS if c not in split.columns]
    if missing:
        raise DatasetError(
            f"{path}: missing column(s) {', '.join(missing)}; a split file has {','.join(SPLIT_COLUMNS)}"
        )
    bad = split.index[~split["split"].isin(SPLITS)]
    if len(bad):
        rows = ", ".join(f"line {i + 2}: split={split.at[i, 'split']!r}" for i in bad[:5])
        raise DatasetError(f"{path}: split must be one of {', '.join(SPLITS)}; {len(bad)} row(s) are not: {rows}")
    dup = split.index[split["image_id"].duplicated()]
    if len(dup):
        rows = ", ".join(f"line {i + 2}: {split.at[i, 'image_id']}" for i in dup[:5])
        raise DatasetError(f"{path}: duplicate image id in {len(dup)} row(s): {rows}")
    if table is not None:
        unknown = sorted(set(split["image_id"]) - set(table["image_id"]))
        absent = sorted(set(table["image_id"]) - set(split["image_id"]))
        if unknown:
            raise DatasetError(f"{path}: {len(unknown)} image id(s) not in the dataset, e.g. {', '.join(unknown[:5])}")
        if absent:
            raise DatasetError(f"{path}: {len(absent)} dataset image(s) not in the split, e.g. {', '.join(absent[:5])}")
    return split[SPLIT_COLUMNS]


def _fractions(val: float, test: float) -> np.ndarray:
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"val ({val}) and test ({test}) must be fractions in [0, 1) with val + test < 1")
    return np.array([1 - val - test, val, test])
