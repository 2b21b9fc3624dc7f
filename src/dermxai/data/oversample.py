"""Oversample-then-split, the mistake many public HAM10000 notebooks make, materialised as a dataset folder.

Minority classes are copied up to the majority count (or ``factor`` times their size) **before** any split,
as plain byte copies or as augmented copies written to disk the way notebooks write them. The result is an
ordinary HAM10000-layout folder (``HAM10000_metadata.csv`` + images, copies keeping their lesion id), so
every dermxai command runs on it unchanged; ``copies.csv`` records which original each copy came from.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance

from dermxai.data.index import HAM_METADATA

MODES = ("plain", "augmented")
METADATA = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
COPIES_CSV = "copies.csv"
COPY_TAG = "_copy"


def copy_counts(dx: pd.Series, factor: float | None = None) -> pd.Series:
    """Copies to add per class: up to the majority count, or ``factor`` times the class size (capped there)."""
    sizes = dx.value_counts()
    target = sizes.max() if factor is None else np.minimum(sizes.max(), np.round(sizes * factor)).astype(int)
    return (target - sizes).clip(lower=0)


def oversample(table: pd.DataFrame, out: Path, mode: str, seed: int = 0, factor: float | None = None) -> Path:
    """Write ``out``: every image of ``table`` plus minority-class copies; skipped when already complete."""
    if mode not in MODES:
        raise ValueError(f"oversampling mode must be one of {', '.join(MODES)}, not {mode!r}")
    out = Path(out)
    if (out / HAM_METADATA).is_file():
        return out
    rng = np.random.default_rng(seed)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows, copies = [], []
    for row in table.itertuples(index=False):
        _link_or_copy(Path(row.path), images / Path(row.path).name)
        rows.append({column: getattr(row, column) for column in METADATA})
    for dx, extra in copy_counts(table["dx"], factor).items():
        members = table[table["dx"] == dx]
        picks = np.resize(rng.permutation(len(members)), extra)  # each original copied as evenly as possible
        seen: dict[str, int] = {}
        for position in picks:
            source = members.iloc[position]
            seen[source.image_id] = seen.get(source.image_id, 0) + 1
            image_id = f"{source.image_id}{COPY_TAG}{seen[source.image_id]}"
            target = images / f"{image_id}.jpg"
            if mode == "plain":
                _link_or_copy(Path(source.path), target)
            else:
                with Image.open(source.path) as image:
                    augmented_copy(image.convert("RGB"), rng).save(target, quality=90)
            rows.append({**{column: source[column] for column in METADATA}, "image_id": image_id})
            copies.append({"image_id": image_id, "source_image_id": source.image_id})
    pd.DataFrame(copies, columns=["image_id", "source_image_id"]).to_csv(out / COPIES_CSV, index=False)
    pd.DataFrame(rows, columns=METADATA).to_csv(out / (HAM_METADATA + ".tmp"), index=False)
    os.replace(out / (HAM_METADATA + ".tmp"), out / HAM_METADATA)  # written last: marks the folder complete
    return out


def augmented_copy(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A notebook-style augmented copy: flips, rotation, zoom and brightness (Keras ImageDataGenerator-like)."""
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    width, height = image.size
    image = image.rotate(float(rng.uniform(-30, 30)), resample=Image.Resampling.BILINEAR)
    zoom = float(rng.uniform(0.8, 1.0))
    w, h = round(width * zoom), round(height * zoom)
    left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    image = image.crop((left, top, left + w, top + h)).resize((width, height), Image.Resampling.BILINEAR)
    return ImageEnhance.Brightness(image).enhance(float(rng.uniform(0.8, 1.2)))


def read_copies(folder: Path) -> dict[str, str]:
    """Map each copy's image id to its original's (empty for a folder that is not oversampled)."""
    path = Path(folder) / COPIES_CSV
    if not path.is_file():
        return {}
    frame = pd.read_csv(path, dtype=str)
    return dict(zip(frame["image_id"], frame["source_image_id"]))


def _link_or_copy(source: Path, target: Path) -> None:
    if target.exists():
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
