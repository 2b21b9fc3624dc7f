"""The out-of-distribution gate: is this a dermoscopic image of one lesion, as the model knows them?

Gaussians fitted to the model's features of the *training* images (see ``models/features.py``): one mean per
diagnosis and one covariance tied across them, of probabilistic-PCA form: the top ``k`` principal axes of the
standardised, class-centred features keep their own variances, the rest share one (Tipping & Bishop 1999).
The score is the Mahalanobis distance to the nearest class mean (Lee et al., NeurIPS 2018), divided by the
number of features and by that class's own scale (the median distance of its training images to its mean), so a
diagnosis whose lesions vary more (vascular lesions, bcc) is not withheld more often for it; images far from every
diagnosis score high. (Gates fitted before this have a single mean, or no class scales.) The threshold is fitted on
*validation* images so that a chosen share of dermoscopy (default 95%) passes. Even so the rarer diagnoses are more
varied and were withheld two to four times as often as the overall share; so the threshold may depend on the
class the model answers: images answered with another class than the most common one (naevi) withhold at most
``OTHER_CLASSES_WITHHELD`` of their validation images, and those answered with the common class take the rest of
the budget (``fit_threshold(..., answered=...)``). Stored in the bundle as ``ood_gate.npz`` (plain arrays, loaded
without pickle). numpy only.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

GATE_NAME = "ood_gate.npz"
DEFAULT_COMPONENTS = 64
TARGET_ACCEPT = 0.95
OTHER_CLASSES_WITHHELD = 0.02  # chosen on validation: experiments/gate_class_thresholds.py, docs/ood.md


@dataclass(frozen=True)
class FeatureGate:
    """Mean, scale and PPCA axes of standardised training features, and the validation threshold."""

    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    components: np.ndarray  # (k, D), orthonormal rows
    variances: np.ndarray  # (k,)
    residual_variance: float
    threshold: float = float("inf")  # scores above it are withheld; inf until fitted on validation
    class_means: np.ndarray | None = None  # (C, D) standardised class means: distance to the nearest class
    class_scales: np.ndarray | None = None  # (C,) median training distance of each class to its own mean
    class_thresholds: np.ndarray | None = None  # (C,) threshold by the class the model answers (replaces threshold)

    @property
    def dimension(self) -> int:
        return int(self.mean.shape[0])

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance per feature dimension of features (N, D): higher is less like training."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != self.dimension:
            raise ValueError(f"the gate expects features of shape (N, {self.dimension}), got {features.shape}")
        z = (features - self.mean) / self.scale
        if self.class_means is not None:  # (N, C, D): the distance to each class's mean, the nearest one kept
            return np.min(self.class_distances(z), axis=1)
        return self._distance(z)

    def class_distances(self, z: np.ndarray) -> np.ndarray:
        """(N, C) distance of standardised features to each class mean, over that class's scale when it has one."""
        distances = self._distance(z[:, None, :] - self.class_means[None])
        return distances if self.class_scales is None else distances / self.class_scales

    def _distance(self, z: np.ndarray) -> np.ndarray:
        """Mahalanobis distance per dimension of standardised, centred features (..., D) under the PPCA covariance."""
        projected = z @ self.components.T
        residual = np.maximum((z * z).sum(-1) - (projected * projected).sum(-1), 0.0)
        return ((projected**2 / self.variances).sum(-1) + residual / self.residual_variance) / self.dimension

    def withheld(self, features: np.ndarray, answered: np.ndarray | None = None) -> np.ndarray:
        """True where an image should be withheld: its score is above the threshold, or, for a gate with class
        thresholds, above that of the class the model answered (``answered``: class indices, one per image)."""
        scores = self.scores(features)
        if self.class_thresholds is None:
            return scores > self.threshold
        if answered is None or np.shape(answered) != scores.shape:
            raise ValueError("this gate's threshold depends on the class the model answered: pass one per image")
        return scores > self.class_thresholds[np.asarray(answered, dtype=int)]

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / GATE_NAME
        partial = path.with_name(f"{GATE_NAME}.partial.npz")
        np.savez(
            partial,
            mean=self.mean.astype(np.float32),
            scale=self.scale.astype(np.float32),
            components=self.components.astype(np.float32),
            variances=self.variances.astype(np.float32),
            residual_variance=np.float64(self.residual_variance),
            threshold=np.float64(self.threshold),
            **({} if self.class_means is None else {"class_means": self.class_means.astype(np.float32)}),
            **({} if self.class_scales is None else {"class_scales": self.class_scales.astype(np.float64)}),
            **({} if self.class_thresholds is None else {"class_thresholds": self.class_thresholds.astype(np.float64)}),
        )
        partial.replace(path)
        return path


def load_gate(folder: str | Path) -> FeatureGate | None:
    """The bundle's gate, or None when it has none; a malformed file raises ValueError naming what is wrong."""
    path = Path(folder) / GATE_NAME
    if not path.exists():
        return None
    if not path.is_file():
        raise ValueError(f"{path}: not a valid out-of-distribution gate (not a file)")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            values = {
                key: np.asarray(arrays[key], dtype=np.float64)
                for key in ("mean", "scale", "components", "variances", "residual_variance", "threshold")
            }
            class_means = np.asarray(arrays["class_means"], np.float64) if "class_means" in arrays else None
            class_scales = np.asarray(arrays["class_scales"], np.float64) if "class_scales" in arrays else None
            class_thresholds = (
                np.asarray(arrays["class_thresholds"], np.float64) if "class_thresholds" in arrays else None
            )
    except (OSError, EOFError, KeyError, ValueError, TypeError, AttributeError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a valid out-of-distribution gate ({type(error).__name__}: {error})") from None
    if values["residual_variance"].shape != () or values["threshold"].shape != ():
        raise ValueError(f"{path}: residual_variance and threshold must be single numbers")
    gate = FeatureGate(
        values["mean"],
        values["scale"],
        values["components"],
        values["variances"],
        float(values["residual_variance"]),
        float(values["threshold"]),
        class_means,
        class_scales,
        class_thresholds,
    )
    d = gate.dimension if gate.mean.ndim == 1 else -1
    if (
        d < 1
        or gate.scale.shape != (d,)
        or gate.components.ndim != 2
        or gate.components.shape[1] != d
        or gate.variances.shape != (gate.components.shape[0],)
        or (gate.class_means is not None and (gate.class_means.ndim != 2 or gate.class_means.shape[1] != d))
        or (
            gate.class_scales is not None
            and (gate.class_means is None or gate.class_scales.shape != (gate.class_means.shape[0],))
        )
        or (gate.class_thresholds is not None and gate.class_thresholds.ndim != 1)
    ):
        raise ValueError(f"{path}: arrays of inconsistent shapes")
    arrays = (gate.mean, gate.scale, gate.components, gate.variances, np.array([gate.residual_variance]))
    arrays += tuple(a for a in (gate.class_means, gate.class_scales) if a is not None)
    if not all(np.isfinite(a).all() for a in arrays):
        raise ValueError(f"{path}: the gate holds NaN or infinite values")
    if not np.isfinite(gate.threshold):  # +inf would switch the gate off, -inf withhold everything
        raise ValueError(f"{path}: the gate's threshold is {gate.threshold}, not a number fitted on validation")
    if gate.class_thresholds is not None and not np.isfinite(gate.class_thresholds).all():
        raise ValueError(f"{path}: the gate's class thresholds hold NaN or infinite values")
    if (gate.scale <= 0).any() or (gate.variances <= 0).any() or gate.residual_variance <= 0:
        raise ValueError(f"{path}: scale and variances must be above 0")
    if gate.class_scales is not None and (gate.class_scales <= 0).any():
        raise ValueError(f"{path}: class scales must be above 0")
    return gate


def fit_gate(
    train_features: np.ndarray, components: int = DEFAULT_COMPONENTS, labels: np.ndarray | None = None
) -> FeatureGate:
    """A gate (threshold not yet set) from the features (N, D) of training images.

    With ``labels``, class-conditional (Lee et al., NeurIPS 2018): one mean per class and a covariance tied
    across classes (of the features minus their class's mean); an image scores its distance to the nearest
    class over that class's scale (the median distance of the class's training images to its mean), so the
    rare classes are not judged by a mean that is two-thirds naevi, nor the more varied ones by a tighter class.
    """
    x = np.asarray(train_features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError("fit_gate needs features (N, D) of at least two images")
    mean, scale = standardisation(x)
    z = (x - mean) / scale
    class_means = None
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(x),):
            raise ValueError(f"fit_gate needs one label per image, got {labels.shape} for {len(x)} images")
        present = np.unique(labels)
        class_means = np.stack([z[labels == c].mean(0) for c in present])
        z = z - class_means[np.searchsorted(present, labels)]
    k = min(components, min(z.shape) - 1)
    _, singular, axes = np.linalg.svd(z, full_matrices=False)
    eigen = singular**2 / (len(z) - 1)
    residual = float(eigen[k:].sum() / max(1, z.shape[1] - k)) if z.shape[1] > k else float(eigen[-1])
    gate = FeatureGate(
        mean, scale, axes[:k], np.maximum(eigen[:k], residual), max(residual, 1e-12), class_means=class_means
    )
    if class_means is None:
        return gate
    own = gate._distance(z)  # z is class-centred here: each image's distance to its own class mean
    scales = np.array([np.median(own[labels == c]) for c in present])
    return replace(gate, class_scales=np.maximum(scales, 1e-12))


def standardisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale (standard deviation, floored above 0) of features (N, D): shared by the gate and the index."""
    return x.mean(0), x.std(0) + 1e-6 * (x.std(0).max() + 1e-12)


def fit_threshold(
    gate: FeatureGate,
    val_features: np.ndarray,
    target_accept: float = TARGET_ACCEPT,
    answered: np.ndarray | None = None,
    n_classes: int = 0,
    other_withheld: float = OTHER_CLASSES_WITHHELD,
) -> FeatureGate:
    """The gate with its threshold at the ``target_accept`` quantile of validation scores.

    With ``answered`` (the index, below ``n_classes``, of the class the model answers for each validation image),
    also one threshold per answered class within the same budget: every class but the most often answered one
    withholds ``other_withheld`` of its validation images, that one the rest of the ``1 - target_accept``.
    """
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be between 0 and 1, not {target_accept}")
    scores = gate.scores(val_features)
    gate = replace(gate, threshold=float(np.quantile(scores, target_accept)), class_thresholds=None)
    if answered is None:
        return gate
    answered = np.asarray(answered, dtype=int)
    if answered.shape != scores.shape or not ((0 <= answered) & (answered < n_classes)).all():
        raise ValueError(f"class thresholds need one answered class (0 to {n_classes - 1}) per validation image")
    if not 0 <= other_withheld < 1 - target_accept:
        raise ValueError(f"other_withheld must be between 0 and {1 - target_accept:.2f}, not {other_withheld}")
    common = np.bincount(answered, minlength=n_classes).argmax()
    others = answered != common
    other = float(np.quantile(scores[others], 1 - other_withheld)) if others.any() else gate.threshold
    left = (1 - target_accept) * len(scores) - np.sum(scores[others] > other)
    share = float(np.clip(left / max(1, np.sum(~others)), 0, 1))
    thresholds = np.full(n_classes, other)
    thresholds[common] = np.quantile(scores[~others], 1 - share)  # share 0: its largest score, none withheld
    return replace(gate, class_thresholds=thresholds)
