"""Fit and measure the out-of-distribution gate (``inference/feature_gate.py``) of a bundle.

Fitting: the gate's Gaussian is fitted on the features of the *training* images and of one copy of each
under a random acquisition change that dermoscopy from another clinic or device shows (zoom, colour cast,
a dark circular vignette, JPEG compression, slight blur), so that such images stay inside; its thresholds are
fitted on the *validation* images' scores: 95% of them pass, with the classes the model answers less often than
naevi withholding only 2% of theirs (``inference/feature_gate.py``). ``fit_bundle_thresholds`` refits only
these. Measuring: the share withheld of test dermoscopy, of validation images under every shift of
``evaluation/shifts.py`` (acquisition changes, resampling, white balance), and of each kind of the offline
non-dermoscopic set (``evaluation/ood_set.py``), with the AUROC of test dermoscopy against all of it.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from dermxai.evaluation.evaluate import from_split
from dermxai.evaluation.metrics import binary_auc
from dermxai.evaluation.shifts import SHIFTS
from dermxai.inference.feature_gate import (
    DEFAULT_COMPONENTS,
    OTHER_CLASSES_WITHHELD,
    TARGET_ACCEPT,
    FeatureGate,
    fit_gate,
    fit_threshold,
)
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


def answers_and_features(predictor, images: Iterable[Image.Image], batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The class index the served decision rule answers (N,) and the gate features (N, D) of upright RGB images,
    preprocessed as the Predictor does, a batch at a time."""
    answers, parts, pixels = [], [], []

    def flush() -> None:
        logits, features = predictor.outputs(np.stack(pixels))
        if features is None:
            raise ValueError(
                f"{predictor.folder}: no gate features (its architecture has no gate layer, or its "
                "model.onnx was exported without them: load it with prefer_onnx=False)"
            )
        answers.append(predictor.config.decision_logits(logits).argmax(1))
        parts.append(features)
        pixels.clear()

    for image in images:
        pixels.append(resize_cover(image, predictor.config.size))
        if len(pixels) == batch:
            flush()
    if pixels:
        flush()
    return (np.concatenate(answers), np.concatenate(parts)) if parts else (np.zeros(0, int), np.zeros((0, 0)))


def features_of(predictor, images: Iterable[Image.Image], batch: int = 64) -> np.ndarray:
    """Gate features (N, D) of upright RGB images, preprocessed as the Predictor does, a batch at a time."""
    return answers_and_features(predictor, images, batch)[1]


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
    gate, record = fit_bundle_thresholds(predictor, gate, data, split, images=images, target_accept=target_accept)
    record = {
        "method": "Mahalanobis distance to the nearest class mean (tied probabilistic PCA covariance) of pooled "
        "mean/std features, each class's distance over its median training distance",
        "gate_layer": predictor.config.feature_layer(),
        "components": int(gate.components.shape[0]),
        "n_train": len(train),
        "n_train_variants": len(variants),
        **record,
    }
    return gate, record


def fit_bundle_thresholds(
    predictor,
    gate: FeatureGate,
    data: Path,
    split: Path,
    *,
    images: Path | None = None,
    target_accept: float = TARGET_ACCEPT,
) -> tuple[FeatureGate, dict]:
    """``gate`` (fitted on train) with its thresholds refitted on val, per answered class; and their record."""
    val_answers, val = answers_and_features(
        predictor, _open(from_split(data, split, "val", images).table["path"].tolist())
    )
    gate = fit_threshold(gate, val, target_accept, answered=val_answers, n_classes=len(predictor.classes))
    record = {
        "n_val": len(val),
        "target_accept": target_accept,
        "val_accept_rate": round(float(np.mean(~gate.withheld(val, val_answers))), 4),
        "threshold": gate.threshold,
        "class_thresholds": dict(zip(predictor.classes, map(float, gate.class_thresholds))),
        "other_classes_withheld": OTHER_CLASSES_WITHHELD,
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
    read_test: bool = True,
) -> dict:
    """Shares withheld by the gate: test, shifted validation images (a seeded random ``n_shifted`` of them, so
    every diagnosis is there), each non-dermoscopic kind; AUROC of test dermoscopy against the non-dermoscopic set.
    ``read_test=False`` (a candidate not yet chosen): the test split is not opened, and the AUROC is validation's."""
    val_table = from_split(data, split, "val", images).table
    val = answers_and_features(predictor, _open(val_table["path"].tolist()))
    if read_test:
        test_table = from_split(data, split, "test", images).table
        test = answers_and_features(predictor, _open(test_table["path"].tolist()))
    shifted_table = val_table.sample(min(n_shifted, len(val_table)), random_state=0)
    val_images = list(_open(shifted_table["path"].tolist()))

    def withheld(answers_features: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        answers, features = answers_features
        return gate.withheld(features, answers)

    rows = {"dermoscopy: val split": (len(val[1]), float(np.mean(withheld(val))))}
    by_class = {"val": withheld_by_class(withheld(val), val_table["dx"])}
    if read_test:
        rows["dermoscopy: test split"] = (len(test[1]), float(np.mean(withheld(test))))
        by_class["test"] = withheld_by_class(withheld(test), test_table["dx"])
    shifted_withheld = []
    for name, shift in SHIFTS.items():
        shifted_withheld.append(withheld(answers_and_features(predictor, [shift(image) for image in val_images])))
        rows[f"dermoscopy, val: {name}"] = (len(shifted_withheld[-1]), float(np.mean(shifted_withheld[-1])))
    by_class["val, every shift"] = withheld_by_class(
        np.concatenate(shifted_withheld), np.tile(shifted_table["dx"].to_numpy(), len(shifted_withheld))
    )
    scores, outside = [], []
    for kind, kind_images in non_dermoscopic.items():
        answers, features = answers_and_features(predictor, kind_images)
        scores.append(gate.scores(features))
        outside.append(gate.withheld(features, answers))
        rows[f"not dermoscopy: {kind}"] = (len(features), float(np.mean(outside[-1])))
    rows["not dermoscopy: all"] = (sum(map(len, outside)), float(np.mean(np.concatenate(outside))))
    inside_scores, outside_scores = gate.scores((test if read_test else val)[1]), np.concatenate(scores)
    auroc = binary_auc(
        np.r_[np.zeros(len(inside_scores), bool), np.ones(len(outside_scores), bool)],
        np.r_[inside_scores, outside_scores],
    )
    return {
        "withheld": {name: {"n": n, "share": round(share, 4)} for name, (n, share) in rows.items()},
        "withheld_by_class": by_class,
        f"auroc_{'test' if read_test else 'val'}_vs_not_dermoscopy": round(float(auroc), 4),
        "threshold": gate.threshold,
        **(
            {}
            if gate.class_thresholds is None
            else {"class_thresholds": dict(zip(predictor.classes, map(float, gate.class_thresholds)))}
        ),
    }
