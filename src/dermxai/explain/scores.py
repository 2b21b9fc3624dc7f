"""Scores of a saliency map against a lesion mask, and chance baselines: pure numpy, no model inside.

A *map* is a non-negative (H, W) array; a *mask* a boolean (H, W) array of lesion pixels. A constant map
(including an all-zero CAM) scores exactly as the uniform baseline: it carries no information.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

GAUSSIAN_SIGMA = 0.25  # the centred Gaussian baseline's standard deviation, as a share of height and of width


def in_mask_energy(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's total mass that lies on mask pixels (mask area share for a constant map)."""
    saliency, mask = _check(saliency, mask)
    total = saliency.sum()
    if total <= 0:
        return float(mask.mean())
    return float(saliency[mask].sum() / total)


def pointing_game(saliency: np.ndarray, mask: np.ndarray) -> float:
    """1.0 when the map's maximum lies on the mask, 0.0 when not; for tied maxima, the share of them on it."""
    saliency, mask = _check(saliency, mask)
    top = saliency == saliency.max()
    return float(mask[top].mean())


def uniform_map(height: int, width: int) -> np.ndarray:
    """The uninformative map: every pixel equal."""
    return np.full((height, width), 1.0 / (height * width))


def gaussian_map(height: int, width: int, sigma: float = GAUSSIAN_SIGMA) -> np.ndarray:
    """A Gaussian centred on the image (pixel centres), standard deviation ``sigma`` x height / x width; sums to 1."""
    rows = _gauss_1d(height, sigma * height)
    cols = _gauss_1d(width, sigma * width)
    return np.outer(rows, cols)


def _gauss_1d(n: int, sd: float) -> np.ndarray:
    x = np.arange(n) - (n - 1) / 2
    g = np.exp(-0.5 * (x / sd) ** 2)
    return g / g.sum()


def removal_order(saliency: np.ndarray, seed: int = 0) -> np.ndarray:
    """Flat pixel indices, most salient first; ties in random order (a uniform map gives a random order)."""
    flat = saliency.ravel()
    tiebreak = np.random.default_rng(seed).random(flat.size)
    return np.lexsort((tiebreak, -flat))


def perturbation_series(
    image: np.ndarray, blank: np.ndarray, saliency: np.ndarray, steps: int = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion inputs, each (steps + 1, H, W, C): step k has the top k/steps of pixels changed.

    Deletion replaces the most salient pixels of ``image`` by ``blank``; insertion starts from ``blank`` and
    reveals them from ``image``.
    """
    height, width = saliency.shape
    if image.shape[:2] != (height, width) or blank.shape != image.shape:
        raise ValueError(f"image {image.shape}, blank {blank.shape} and map {saliency.shape} do not match")
    order = removal_order(saliency, seed)
    counts = np.round(np.linspace(0, order.size, steps + 1)).astype(int)
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    changed = (rank[None, :] < counts[:, None]).reshape(steps + 1, height, width, 1)
    deletion = np.where(changed, blank[None], image[None])
    insertion = np.where(changed, image[None], blank[None])
    return deletion, insertion


def curve_auc(values: np.ndarray) -> float:
    """Area under a curve sampled at equal steps of the changed-pixel share from 0 to 1 (trapezoid rule)."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.trapezoid(values, dx=1.0 / (len(values) - 1)))


def deletion_insertion_auc(
    probability: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    blank: np.ndarray,
    saliency: np.ndarray,
    steps: int = 16,
    seed: int = 0,
) -> tuple[float, float]:
    """Deletion and insertion AUCs; ``probability`` maps a batch of images to the explained class's probability.

    Both series go through ``probability`` in one batch. Lower deletion and higher insertion AUC mean the map
    ranks the pixels the model relies on first.
    """
    deletion, insertion = perturbation_series(image, blank, saliency, steps, seed)
    probs = np.asarray(probability(np.concatenate([deletion, insertion])), dtype=np.float64)
    return curve_auc(probs[: steps + 1]), curve_auc(probs[steps + 1 :])


TRANSFORMS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    # name: (transform, its inverse), acting on the first two axes (H, W)
    "hflip": (lambda a: a[:, ::-1], lambda a: a[:, ::-1]),
    "vflip": (lambda a: a[::-1], lambda a: a[::-1]),
    "rot180": (lambda a: a[::-1, ::-1], lambda a: a[::-1, ::-1]),
    "rot90": (lambda a: np.rot90(a, 1), lambda a: np.rot90(a, -1)),
    "rot270": (lambda a: np.rot90(a, -1), lambda a: np.rot90(a, 1)),
}


def stability_transforms(height: int, width: int) -> list[str]:
    """Transforms that keep the input size: flips and 180 degrees, plus 90/270 degrees for square inputs."""
    return ["hflip", "vflip", "rot180"] + (["rot90", "rot270"] if height == width else [])


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps; 1.0 for two identical constant maps, 0.0 when only one is constant."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    norm = np.sqrt((a @ a) * (b @ b))
    if norm == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(a @ b / norm)


def bootstrap_mean(values: np.ndarray, groups: np.ndarray | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean and percentile 95% CI; with ``groups`` (lesion ids) whole groups are resampled (cluster bootstrap)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"mean": None, "ci95": [None, None], "n": 0}
    groups = np.arange(values.size) if groups is None else np.asarray(groups)
    _, index = np.unique(groups, return_inverse=True)
    sums = np.bincount(index, weights=values)
    counts = np.bincount(index).astype(np.float64)
    draws = np.random.default_rng(seed).integers(0, len(sums), size=(n_boot, len(sums)))
    means = sums[draws].sum(1) / counts[draws].sum(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(values.mean()), "ci95": [float(low), float(high)], "n": int(values.size)}


def _check(saliency: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    saliency, mask = np.asarray(saliency, dtype=np.float64), np.asarray(mask, dtype=bool)
    if saliency.shape != mask.shape:
        raise ValueError(f"map {saliency.shape} and mask {mask.shape} differ in shape")
    if not mask.any():
        raise ValueError("the mask is empty")
    if (saliency < 0).any():
        raise ValueError("a saliency map must be non-negative")
    return saliency, mask
