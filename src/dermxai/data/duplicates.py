"""Near-duplicate images: perceptual hashes, CNN-embedding similarity, candidate pairs and a contact sheet.

HAM10000 files some near-identical images of one lesion under different lesion ids. Candidates come from
two signals that must agree (64-bit pHash Hamming distance and cosine similarity of ImageNet
EfficientNet-Lite0 embeddings: on dermoscopy either alone mostly finds look-alike lesions, not copies); a
person confirms them on a contact sheet and keeps the confirmed pairs in a reviewed CSV.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from dermxai.data.index import DatasetError

PAIR_COLUMNS = ["image_a", "image_b", "lesion_a", "lesion_b", "hash_distance", "cosine"]
REVIEWED_HAM10000 = "ham10000_duplicates.csv"


def perceptual_hashes(paths: list[str], workers: int = 4) -> np.ndarray:
    """64-bit pHash of each image as ``uint64``."""

    def one(path: str) -> int:
        with Image.open(path) as image:
            bits = imagehash.phash(image.convert("RGB")).hash.flatten()
        return int("".join("1" if b else "0" for b in bits), 2)

    with ThreadPoolExecutor(workers) as pool:
        return np.fromiter(pool.map(one, paths), dtype=np.uint64, count=len(paths))


def hash_distance_pairs(hashes: np.ndarray, max_distance: int, chunk: int = 1024) -> np.ndarray:
    """All index pairs ``(i, j, distance)`` with ``i < j`` and Hamming distance ``<= max_distance``."""
    found = []
    for start in range(0, len(hashes), chunk):
        block = hashes[start : start + chunk]
        distance = np.bitwise_count(block[:, None] ^ hashes[None, :])
        i, j = np.nonzero(distance <= max_distance)
        keep = start + i < j
        found.append(np.stack([start + i[keep], j[keep], distance[i[keep], j[keep]]], axis=1))
    return np.concatenate(found) if found else np.empty((0, 3), dtype=np.int64)


def cnn_embeddings(paths: list[str], size: tuple[int, int] = (150, 200), batch: int = 64) -> np.ndarray:
    """Pooled ImageNet EfficientNet-Lite0 features (1280-d) of each image, resized to ``size`` (h, w)."""
    import timm
    import torch

    from dermxai.models.pretrained import load_lite_imagenet

    model = timm.create_model("tf_efficientnet_lite0", num_classes=0).eval()
    load_lite_imagenet(model)
    out = []
    with torch.inference_mode():
        for start in range(0, len(paths), batch):
            pixels = np.stack([_load_rgb(p, size) for p in paths[start : start + batch]])
            x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
            out.append(model(x).numpy())
    return np.concatenate(out)


CANDIDATE_RULES: tuple[tuple[int, float], ...] = ((16, 0.925), (6, 0.88))
"""(max pHash distance, min cosine) pairs; a pair meeting any rule is a candidate (chosen on HAM10000 review)."""


def candidate_pairs(
    table: pd.DataFrame,
    hashes: np.ndarray,
    embeddings: np.ndarray | None,
    rules: tuple[tuple[int, float], ...] = CANDIDATE_RULES,
) -> pd.DataFrame:
    """Pairs of images under *different* lesion ids that both signals call near-duplicate by some rule.

    Without ``embeddings`` the cosine part of each rule is dropped (pHash distance alone).
    """
    found = hash_distance_pairs(hashes, max(distance for distance, _ in rules))
    ids, lesions = table["image_id"].to_numpy(), table["lesion_id"].to_numpy()
    i, j, distance = found.T if len(found) else (np.empty(0, int),) * 3
    cosine = _cosine(embeddings, i, j) if embeddings is not None else np.full(len(i), np.nan)
    keep = np.zeros(len(i), dtype=bool)
    for max_distance, min_cosine in rules:
        keep |= (distance <= max_distance) & ((cosine >= min_cosine) if embeddings is not None else True)
    keep &= lesions[i] != lesions[j]
    pairs = pd.DataFrame(
        {
            "image_a": ids[i[keep]],
            "image_b": ids[j[keep]],
            "lesion_a": lesions[i[keep]],
            "lesion_b": lesions[j[keep]],
            "hash_distance": distance[keep].astype(int),
            "cosine": cosine[keep],
        }
    )
    return pairs.sort_values(["hash_distance", "cosine"], ascending=[True, False]).reset_index(drop=True)


def contact_sheet(pairs: pd.DataFrame, table: pd.DataFrame, out: str | Path, thumb: int = 160) -> None:
    """Draw each pair side by side with ids, lesion ids, diagnoses, hash distance and cosine."""
    rows = table.set_index("image_id")
    width, height, caption = 2 * thumb + 10, thumb * 3 // 4, 28
    sheet = Image.new("RGB", (width * 4, max(1, -(-len(pairs) // 4)) * (height + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    for n, pair in enumerate(pairs.itertuples()):
        x, y = (n % 4) * width, (n // 4) * (height + caption)
        for k, image_id in enumerate((pair.image_a, pair.image_b)):
            with Image.open(rows.at[image_id, "path"]) as image:
                sheet.paste(image.convert("RGB").resize((thumb, height)), (x + k * thumb, y))
        draw.text((x + 2, y + height), f"#{n} d={pair.hash_distance} cos={pair.cosine:.3f}", fill="black")
        draw.text(
            (x + 2, y + height + 13),
            f"{pair.image_a[-7:]} {rows.at[pair.image_a, 'dx']} | {pair.image_b[-7:]} {rows.at[pair.image_b, 'dx']}",
            fill="black",
        )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)


def read_reviewed_pairs(path: str | Path | None = None) -> list[tuple[str, str]]:
    """Confirmed near-duplicate pairs from a reviewed CSV (default: the one shipped for HAM10000)."""
    source = Path(path) if path else resources.files("dermxai.data").joinpath(REVIEWED_HAM10000)
    try:
        with source.open() as handle:  # type: ignore[union-attr]
            pairs = pd.read_csv(handle, dtype=str, comment="#")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DatasetError(f"{source}: cannot read reviewed duplicate pairs ({error})") from None
    if not {"image_a", "image_b"} <= set(pairs.columns):
        raise DatasetError(f"{source}: reviewed pairs need columns image_a,image_b; found {list(pairs.columns)}")
    return list(zip(pairs["image_a"], pairs["image_b"]))


def _cosine(embeddings: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    a, b = embeddings[i], embeddings[j]
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)).clip(min=1e-12)


def _load_rgb(path: str, size: tuple[int, int]) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((size[1], size[0]), Image.BILINEAR))
