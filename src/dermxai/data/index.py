"""Read a dataset into one table of images: HAM10000 layout, ISIC 2018 Task 3 CSV, or plain ``image_id,dx``.

Every reader returns a DataFrame with the columns in :data:`COLUMNS`, one row per image. Problems in the
input raise :class:`DatasetError` with a message that names the file and the first offending rows.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pandas as pd

from dermxai.data.errors import DatasetError
from dermxai.data.labels import CLASSES

COLUMNS = ["image_id", "path", "dx", "lesion_id", "dx_type", "age", "sex", "localization", "mask_path"]
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
MASK_SUFFIX = "_segmentation"
HAM_METADATA = "HAM10000_metadata.csv"
ISIC_LABEL_COLUMNS = {c.upper(): c for c in CLASSES}
SHOW = 5  # offending rows quoted in an error


def load_dataset(source: str | Path, images: str | Path | None = None) -> pd.DataFrame:
    """Index a dataset from a folder (HAM10000 layout) or a label CSV plus an image folder.

    ``source`` is a folder holding ``HAM10000_metadata.csv`` (images and masks anywhere below it), or a CSV
    file: the ISIC 2018 Task 3 ground truth (``image,MEL,NV,...``) or plain ``image_id,dx[,lesion_id,...]``.
    ``images`` is the folder searched for images; it defaults to the folder holding ``source``.
    """
    source = Path(source)
    if not source.exists():
        raise DatasetError(f"{source}: no such file or folder")
    if source.is_dir():
        csv_path = source / HAM_METADATA
        if not csv_path.is_file():
            found = sorted(p.name for p in source.glob("*.csv"))
            raise DatasetError(
                f"{source}: no {HAM_METADATA} in this folder"
                + (f" (CSV files here: {', '.join(found)}; pass one of them directly)" if found else "")
            )
        image_root = Path(images) if images else source
    else:
        csv_path = source
        image_root = Path(images) if images else source.parent
    labels = read_label_csv(csv_path)
    return attach_files(labels, csv_path, image_root)


def read_label_csv(path: Path) -> pd.DataFrame:
    """Read a label CSV of any supported layout into rows of ``image_id, dx`` and optional metadata."""
    raw = _read_csv(path)
    header = set(raw.columns)
    if "image" in header and set(ISIC_LABEL_COLUMNS) <= header:
        table = _from_one_hot(raw, path)
    elif {"image_id", "dx"} <= header:
        table = raw.copy()
        table["dx"] = table["dx"].str.lower()
        _check_rows(path, table, ~table["dx"].isin(CLASSES), "unknown diagnosis label", "dx")
    else:
        raise DatasetError(
            f"{path}: unrecognised CSV header {list(raw.columns)}; expected HAM10000 metadata "
            "(lesion_id,image_id,dx,...), ISIC 2018 Task 3 ground truth (image,MEL,NV,BCC,AKIEC,BKL,DF,VASC) "
            "or plain image_id,dx"
        )
    _check_rows(path, table, table["image_id"].eq(""), "empty image id", "image_id")
    _check_rows(path, table, table["image_id"].duplicated(keep="first"), "duplicate image id", "image_id")
    if "lesion_id" not in table:
        table["lesion_id"] = table["image_id"]
    missing_lesion = table["lesion_id"].eq("")
    table.loc[missing_lesion, "lesion_id"] = table.loc[missing_lesion, "image_id"]
    if "age" in table:
        age = pd.to_numeric(table["age"], errors="coerce")
        _check_rows(path, table, age.isna() & table["age"].ne(""), "age is not a number", "age")
        table["age"] = age
    for column in COLUMNS:
        if column not in table:
            table[column] = None
    return table[COLUMNS].reset_index(drop=True)


def attach_files(labels: pd.DataFrame, csv_path: Path, image_root: Path) -> pd.DataFrame:
    """Fill ``path`` and ``mask_path`` by finding each image id below ``image_root`` (any extension case)."""
    if not image_root.is_dir():
        raise DatasetError(f"{csv_path}: image folder {image_root} does not exist")
    images, masks = find_files(image_root)
    table = labels.copy()
    table["path"] = table["image_id"].map(images)
    table["mask_path"] = table["image_id"].map(masks)
    _check_rows(
        csv_path,
        table,
        table["path"].isna(),
        f"image not found under {image_root}",
        "image_id",
    )
    return table


def find_files(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Map image id to image path and to mask path for every image file below ``root``."""
    images: dict[str, str] = {}
    masks: dict[str, str] = {}
    for folder, _, names in os.walk(root):
        for name in names:
            stem, ext = os.path.splitext(name)
            if ext.lower() not in IMAGE_EXTENSIONS:
                continue
            path = os.path.join(folder, name)
            if stem.lower().endswith(MASK_SUFFIX):
                masks[stem[: -len(MASK_SUFFIX)]] = path
            elif stem in images:
                raise DatasetError(f"{root}: image id {stem} found twice: {images[stem]} and {path}")
            else:
                images[stem] = path
    return images, masks


def _read_csv(path: Path) -> pd.DataFrame:
    """Parse with the csv module so that every problem is reported with its line number."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle, strict=True))
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(f"{path}: not a readable CSV file ({error})") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise DatasetError(f"{path}: not a readable CSV file (it is empty)")
    header = [cell.strip() for cell in rows[0]]
    ragged = [(n + 2, len(row)) for n, row in enumerate(rows[1:]) if len(row) != len(header)]
    if ragged:
        quoted = ", ".join(f"line {line} has {count}" for line, count in ragged[:SHOW])
        raise DatasetError(f"{path}: not a readable CSV file (the header has {len(header)} fields; {quoted})")
    if len(rows) == 1:
        raise DatasetError(f"{path}: the CSV has a header but no rows")
    return pd.DataFrame(rows[1:], columns=header).apply(lambda column: column.str.strip())


def _from_one_hot(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    one_hot = raw[list(ISIC_LABEL_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    valid = one_hot.isin([0.0, 1.0]).all(axis=1) & one_hot.sum(axis=1).eq(1)
    _check_rows(path, raw, ~valid, "label columns are not one-hot (exactly one 1, others 0)", "image")
    table = pd.DataFrame({"image_id": raw["image"]})
    table["dx"] = one_hot.idxmax(axis=1).map(ISIC_LABEL_COLUMNS)
    return table


def _check_rows(path: Path, table: pd.DataFrame, bad: pd.Series, problem: str, column: str) -> None:
    """Raise one error quoting the first offending rows by CSV line number (header = line 1)."""
    if not bad.any():
        return
    rows = table.index[bad.to_numpy()]
    quoted = ", ".join(f"line {i + 2}: {column}={table.at[i, column]!r}" for i in rows[:SHOW])
    more = f" (and {len(rows) - SHOW} more)" if len(rows) > SHOW else ""
    expected = f"; expected one of {', '.join(CLASSES)}" if column == "dx" else ""
    raise DatasetError(f"{path}: {problem} in {len(rows)} row(s): {quoted}{more}{expected}")
