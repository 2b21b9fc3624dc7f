"""Fit and measure the out-of-distribution gate (``inference/feature_gate.py``) of a bundle.

Fitting: the gate's Gaussian is fitted on the features of the *training* images and of one copy of each
under a random acquisition change that dermoscopy from another clinic or device shows (zoom, colour cast,
a dark circular vignette, JPEG compression, slight blur), so that such images stay inside; its threshold is
the 95th percentile of the *validation* images' scores. Measuring: the share withheld of test dermoscopy,
of validation images under fixed acquisition changes, and of each kind of the offline non-dermoscopic set
(``evaluation/ood_set.py``), with the AUROC of test dermoscopy against all of it.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from dermxai.evaluation.evaluate import from_split
from dermxai.evaluation.metrics import binary_auc
from dermxai.evaluation.shifts import ACQUISITION_SHIFTS
from dermxai.inference.feature_gate import DEFAULT_COMPONENTS, TARGET_ACCEPT, FeatureGate, fit_gate, fit_threshold
from dermxai.preprocessing import resize_cover


def acquisition_variant(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """``image`` as another dermatoscope or clinic might have taken it (random zoom, cast, vignette, JPEG, blur)."""
    image = image.convert("RGB")
    w, h = image.size
    if rng.random() < 0.5:
        f = rng.uniform(0.6, 1.0)
        cw, ch = int(w * f), int(h * f)
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        image = image.crop((left, top, left + cw, top + ch)).resize((w, h), Image.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32) * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    if rng.random() < 0.4:
        y, x = np.mgrid[:h, :w]
        radius = np.hypot((x - w / 2) / (w / 2), (y - h / 2) / (h / 2))
        edge, softness = rng.uniform(0.85, 1.3), rng.uniform(0.01, 0.15)
        pixels = pixels * np.clip((edge - radius) / softness, 0, 1)[..., None]
    image = Image.fromarray(np.uint8(pixels.clip(0, 255)))
    if rng.random() < 0.5:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(rng.integers(30, 90)))
        image = Image.open(buffer).convert("RGB")
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2))))
    return image


def features_of(predictor, images: Iterable[Image.Image], batch: int = 64) -> np.ndarray:
    """Gate features (N, D) of upright RGB images, preprocessed as the Predictor does, a batch at a time."""
    parts, pixels = [], []

    def flush() -> None:
        features = predictor.outputs(np.stack(pixels))[1]
        if features is None:
            raise ValueError(
                f"{predictor.folder}: no gate features (its architecture has no gate layer, or its "
                "model.onnx was exported without them: load it with prefer_onnx=False)"
            )
        parts.append(features)
        pixels.clear()

    for image in images:
        pixels.append(resize_cover(image, predictor.config.size))
        if len(pixels) == batch:
            flush()
    if pixels:
        flush()
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def _open(paths: Iterable[str], transform: Callable[[Image.Image], Image.Image] | None = None):
    """Upright RGB images of ``paths``, one at a time (never all decoded at once)."""
    for path in paths:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        yield transform(rgb) if transform else rgb


def fit_bundle_gate(
    predictor,
    data: Path,
    split: Path,
    *,
    images: Path | None = None,
    components: int = DEFAULT_COMPONENTS,
    target_accept: float = TARGET_ACCEPT,
    seed: int = 0,
) -> tuple[FeatureGate, dict]:
    """Fit the gate on train (+ one acquisition variant each) and its threshold on val; return it and a record."""
    rng = np.random.default_rng(seed)
    table = from_split(data, split, "train", images).table
    train_paths = table["path"].tolist()
    train = features_of(predictor, _open(train_paths))
    variants = features_of(predictor, _open(train_paths, lambda image: acquisition_variant(image, rng)))
    labels = table["dx"].map(list(predictor.classes).index).to_numpy()
    gate = fit_gate(np.concatenate([train, variants]), components, np.r_[labels, labels])
    val = features_of(predictor, _open(from_split(data, split, "val", images).table["path"].tolist()))
    gate = fit_threshold(gate, val, target_accept)
    record = {
        "method": "Mahalanobis distance to the nearest class mean (tied probabilistic PCA covariance) of pooled "
        "mean/std features, each class's distance over its median training distance",
        "gate_layer": predictor.config.feature_layer(),
        "components": int(gate.components.shape[0]),
        "n_train": len(train),
        "n_train_variants": len(variants),
        "n_val": len(val),
        "target_accept": target_accept,
        "val_accept_rate": round(float(np.mean(~gate.withheld(val))), 4),
        "threshold": gate.threshold,
        "split": str(split),
    }
    return gate, record


def withheld_by_class(withheld: np.ndarray, dx) -> dict[str, dict]:
    """The share withheld of each diagnosis (n and share), and the largest share over the overall one."""
    dx = np.asarray(dx)
    rows = {c: {"n": int((dx == c).sum()), "share": round(float(withheld[dx == c].mean()), 4)} for c in np.unique(dx)}
    overall = float(np.mean(withheld))
    worst = max(row["share"] for row in rows.values())
    return {
        **rows,
        "all": {"n": len(dx), "share": round(overall, 4)},
        "worst_over_all": round(worst / max(overall, 1e-9), 2),
    }


def gate_report(
    predictor,
    gate: FeatureGate,
    data: Path,
    split: Path,
    non_dermoscopic: dict[str, list[Image.Image]],
    *,
    images: Path | None = None,
    n_shifted: int = 600,
) -> dict:
    """Shares withheld by the gate: test, shifted validation images (a seeded random ``n_shifted`` of them, so
    every diagnosis is there), each non-dermoscopic kind; AUROC."""
    test_table = from_split(data, split, "test", images).table
    val_table = from_split(data, split, "val", images).table
    test = features_of(predictor, _open(test_table["path"].tolist()))
    val = features_of(predictor, _open(val_table["path"].tolist()))
    shifted_table = val_table.sample(min(n_shifted, len(val_table)), random_state=0)
    val_images = list(_open(shifted_table["path"].tolist()))
    rows = {
        "dermoscopy: val split": (len(val), float(np.mean(gate.withheld(val)))),
        "dermoscopy: test split": (len(test), float(np.mean(gate.withheld(test)))),
    }
    by_class = {
        "val": withheld_by_class(gate.withheld(val), val_table["dx"]),
        "test": withheld_by_class(gate.withheld(test), test_table["dx"]),
    }
    shifted_withheld = []
    for name, shift in ACQUISITION_SHIFTS.items():
        shifted = features_of(predictor, [shift(image) for image in val_images])
        shifted_withheld.append(gate.withheld(shifted))
        rows[f"dermoscopy, val: {name}"] = (len(shifted), float(np.mean(shifted_withheld[-1])))
    by_class["val, every shift"] = withheld_by_class(
        np.concatenate(shifted_withheld), np.tile(shifted_table["dx"].to_numpy(), len(shifted_withheld))
    )
    scores = []
    for kind, kind_images in non_dermoscopic.items():
        features = features_of(predictor, kind_images)
        scores.append(gate.scores(features))
        rows[f"not dermoscopy: {kind}"] = (len(features), float(np.mean(gate.withheld(features))))
    outside = np.concatenate(scores)
    rows["not dermoscopy: all"] = (len(outside), float(np.mean(outside > gate.threshold)))
    test_scores = gate.scores(test)
    auroc = binary_auc(
        np.r_[np.zeros(len(test_scores), bool), np.ones(len(outside), bool)], np.r_[test_scores, outside]
    )
    return {
        "withheld": {name: {"n": n, "share": round(share, 4)} for name, (n, share) in rows.items()},
        "withheld_by_class": by_class,
        "auroc_test_vs_not_dermoscopy": round(float(auroc), 4),
        "threshold": gate.threshold,
    }
