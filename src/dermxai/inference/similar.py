"""Similar confirmed cases: the training lesions whose features are nearest to an image's (the feature index).

The index holds, for every training image, its gate features (``models/features.py``: the pooled colour and
texture statistics the out-of-distribution gate reads, so a query costs no extra forward pass) standardised
and projected on their top principal axes, unit length, in float16, with its image id, lesion id and
diagnosis; and small JPEG thumbnails of the training images (HAM10000, CC BY-NC 4.0). A query returns the
``k`` most similar lesions by cosine similarity, one image per lesion. Stored in the bundle as
``similar_cases.npz`` (plain arrays, loaded without pickle) and ``thumbnails.zip``. numpy only.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dermxai.inference.feature_gate import standardisation

INDEX_NAME = "similar_cases.npz"
THUMBNAILS_NAME = "thumbnails.zip"
DEFAULT_K = 6
DEFAULT_COMPONENTS = 128
THUMBNAIL_SIZE = (80, 60)  # width, height: 200x150 frames at 0.4x, ~1.5 KB each as JPEG


@dataclass(frozen=True)
class SimilarCase:
    """One confirmed training lesion like the query: its image, lesion, diagnosis and cosine similarity."""

    image_id: str
    lesion_id: str
    dx: str
    similarity: float

    def to_dict(self) -> dict:
        return {"image_id": self.image_id, "lesion_id": self.lesion_id, "dx": self.dx, "similarity": self.similarity}


@dataclass(frozen=True)
class FeatureIndex:
    """Standardisation and principal axes of training features, and every training image's unit vector."""

    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    components: np.ndarray  # (k, D), orthonormal rows
    vectors: np.ndarray  # (N, k) float16, unit rows
    image_ids: np.ndarray  # (N,) str
    lesion_ids: np.ndarray  # (N,) str
    dx: np.ndarray  # (N,) str

    def __post_init__(self) -> None:
        object.__setattr__(self, "_unit", np.asarray(self.vectors, dtype=np.float32))  # float32 once, for queries

    @property
    def dimension(self) -> int:
        return int(self.mean.shape[0])

    def embed(self, features: np.ndarray) -> np.ndarray:
        """Unit vectors (M, k) of gate features (M, D)."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.dimension:
            raise ValueError(f"the index expects features of shape (M, {self.dimension}), got {features.shape}")
        projected = ((features - self.mean) / self.scale) @ self.components.T
        return projected / np.maximum(np.linalg.norm(projected, axis=1, keepdims=True), 1e-12)

    def nearest(self, features: np.ndarray, k: int = DEFAULT_K, exclude_lesions: Iterable[str] = ()) -> list:
        """The ``k`` most similar training lesions to each row of features (M, D), one image per lesion.

        ``exclude_lesions``: lesions left out (a query that is itself in the index, when measuring).
        """
        similarity = self.embed(features) @ self._unit.T
        excluded = set(exclude_lesions)
        answers = []
        for row in similarity:
            seen: set[str] = set()
            cases = []
            for n in np.argsort(-row):
                lesion = str(self.lesion_ids[n])
                if lesion in seen or lesion in excluded:
                    continue
                seen.add(lesion)
                cases.append(SimilarCase(str(self.image_ids[n]), lesion, str(self.dx[n]), round(float(row[n]), 4)))
                if len(cases) == k:
                    break
            answers.append(cases)
        return answers

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / INDEX_NAME
        partial = path.with_name(f"{INDEX_NAME}.partial.npz")
        np.savez_compressed(
            partial,
            mean=self.mean.astype(np.float32),
            scale=self.scale.astype(np.float32),
            components=self.components.astype(np.float32),
            vectors=self.vectors.astype(np.float16),
            image_ids=self.image_ids.astype(str),
            lesion_ids=self.lesion_ids.astype(str),
            dx=self.dx.astype(str),
        )
        partial.replace(path)
        return path


def fit_index(
    features: np.ndarray,
    image_ids: Sequence[str],
    lesion_ids: Sequence[str],
    dx: Sequence[str],
    components: int = DEFAULT_COMPONENTS,
) -> FeatureIndex:
    """An index of training features (N, D): standardised, projected on their top ``components`` axes."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2 or not len(x) == len(image_ids) == len(lesion_ids) == len(dx):
        raise ValueError("fit_index needs features (N, D) of at least two images and N ids, lesions and diagnoses")
    mean, scale = standardisation(x)
    z = (x - mean) / scale
    _, _, axes = np.linalg.svd(z, full_matrices=False)
    axes = axes[: min(components, len(axes))]
    index = FeatureIndex(
        mean.astype(np.float32),
        scale.astype(np.float32),
        axes.astype(np.float32),
        np.zeros((0, len(axes)), np.float16),
        np.asarray(image_ids, dtype=str),
        np.asarray(lesion_ids, dtype=str),
        np.asarray(dx, dtype=str),
    )
    fields = {name: getattr(index, name) for name in FeatureIndex.__dataclass_fields__}
    return FeatureIndex(**{**fields, "vectors": index.embed(x).astype(np.float16)})


def load_index(folder: str | Path) -> FeatureIndex | None:
    """The bundle's feature index, or None when it has none; a malformed file raises ValueError."""
    path = Path(folder) / INDEX_NAME
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            index = FeatureIndex(
                *(np.asarray(arrays[key], dtype=np.float32) for key in ("mean", "scale", "components")),
                np.asarray(arrays["vectors"], dtype=np.float16),
                *(np.asarray(arrays[key]).astype(str) for key in ("image_ids", "lesion_ids", "dx")),
            )
    except (OSError, EOFError, KeyError, ValueError, TypeError, AttributeError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a valid feature index ({type(error).__name__}: {error})") from None
    d, n = index.mean.shape[0] if index.mean.ndim == 1 else -1, len(index.vectors)
    if (
        d < 1
        or index.scale.shape != (d,)
        or index.components.ndim != 2
        or index.components.shape[1] != d
        or index.vectors.shape != (n, index.components.shape[0])
        or not len(index.image_ids) == len(index.lesion_ids) == len(index.dx) == n
    ):
        raise ValueError(f"{path}: arrays of inconsistent shapes")
    arrays = (index.mean, index.scale, index.components, index.vectors)
    if not all(np.isfinite(a).all() for a in arrays) or (index.scale <= 0).any():
        raise ValueError(f"{path}: the index holds NaN, infinite or non-positive scale values")
    return index


def majority_vote(cases: Sequence[SimilarCase], classes: Sequence[str]) -> int:
    """The class most of ``cases`` have (ties: the larger summed similarity), as an index into ``classes``."""
    votes = np.zeros(len(classes))
    weight = np.zeros(len(classes))
    for case in cases:
        votes[classes.index(case.dx)] += 1
        weight[classes.index(case.dx)] += case.similarity
    return int(np.lexsort((weight, votes))[-1])


def write_thumbnails(folder: str | Path, images: Iterable[tuple[str, Image.Image]]) -> Path:
    """``thumbnails.zip`` in ``folder``: one small JPEG per (image id, image)."""
    path = Path(folder) / THUMBNAILS_NAME
    partial = path.with_name(f"{THUMBNAILS_NAME}.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as archive:
        for image_id, image in images:
            buffer = io.BytesIO()
            image.convert("RGB").resize(THUMBNAIL_SIZE, Image.BILINEAR).save(buffer, "JPEG", quality=70)
            archive.writestr(f"{image_id}.jpg", buffer.getvalue())
    partial.replace(path)
    return path


def read_thumbnail(folder: str | Path, image_id: str) -> bytes | None:
    """The JPEG thumbnail of a training image, or None when the bundle has none for it."""
    path = Path(folder) / THUMBNAILS_NAME
    if not path.is_file():
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.read(f"{image_id}.jpg")
    except (KeyError, OSError, zipfile.BadZipFile):
        return None
