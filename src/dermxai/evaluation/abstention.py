"""Fit the abstention thresholds on validation and measure how often the model abstains, and on what.

Out-of-distribution probes need no internet: synthetic non-dermoscopic images (solid colours, skin-toned
patches, noise, smooth noise, gradients, checkerboards, rendered text) and crops of the one natural photo
matplotlib ships (``grace_hopper.jpg``, a portrait), each resized exactly like an upload.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dermxai.evaluation.evaluate import from_split
from dermxai.evaluation.predict import load_images, predict_logits
from dermxai.inference.ood import abstain_reasons, fit_abstention
from dermxai.inference.predictor import Predictor
from dermxai.preprocessing import resize_cover

WORDS = ("invoice", "hello world", "Lorem ipsum dolor", "2026-11-27", "dermxai", "QWERTY 123", "sale -50%")


def _solid(rng: np.random.Generator) -> Image.Image:
    return Image.new("RGB", (200, 150), tuple(int(v) for v in rng.integers(0, 256, 3)))


def _skin(rng: np.random.Generator) -> Image.Image:
    base = np.array([224, 172, 140]) * rng.uniform(0.45, 1.1)
    return Image.new("RGB", (200, 150), tuple(int(v) for v in np.clip(base, 0, 255)))


def _noise(rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8))


def _smooth_noise(rng: np.random.Generator) -> Image.Image:
    return _noise(rng).filter(ImageFilter.GaussianBlur(float(rng.uniform(3, 12))))


def _gradient(rng: np.random.Generator) -> Image.Image:
    a, b = rng.integers(0, 256, (2, 3))
    t = np.linspace(0, 1, 200)[None, :, None] * np.ones((150, 1, 1))
    return Image.fromarray(np.uint8(a * (1 - t) + b * t))


def _checkerboard(rng: np.random.Generator) -> Image.Image:
    cell = int(rng.integers(5, 40))
    y, x = np.mgrid[:150, :200]
    board = ((y // cell + x // cell) % 2).astype(bool)
    a, b = rng.integers(0, 256, (2, 3))
    return Image.fromarray(np.where(board[..., None], a, b).astype(np.uint8))


def _text(rng: np.random.Generator) -> Image.Image:
    image = Image.new("RGB", (200, 150), "white")
    draw = ImageDraw.Draw(image)
    for line in range(int(rng.integers(2, 7))):
        draw.text(
            (int(rng.integers(2, 40)), 8 + 22 * line),
            str(rng.choice(WORDS)),
            fill=(0, 0, 0),
            font_size=float(rng.uniform(12, 20)),
        )
    return image


def _photo(rng: np.random.Generator) -> Image.Image:
    with Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg") as photo:
        photo = photo.convert("RGB")
    w, h = photo.size
    cw = int(rng.integers(w // 4, w))
    ch = int(cw * 0.75)
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, max(1, h - ch + 1)))
    return photo.crop((left, top, left + cw, top + ch))


PROBES = {
    "solid colour": _solid,
    "skin-tone patch": _skin,
    "uniform noise": _noise,
    "smooth noise": _smooth_noise,
    "gradient": _gradient,
    "checkerboard": _checkerboard,
    "rendered text": _text,
    "natural photo crop": _photo,
}
"""Non-dermoscopic image generators, by kind."""


def non_dermoscopic(n_per_kind: int = 16, seed: int = 0) -> dict[str, list[Image.Image]]:
    """``n_per_kind`` synthetic non-dermoscopic RGB images of every kind in ``PROBES``, reproducibly."""
    rng = np.random.default_rng(seed)
    return {kind: [make(rng) for _ in range(n_per_kind)] for kind, make in PROBES.items()}


def split_logits(predictor: Predictor, data: Path, split_path: Path, subset: str) -> np.ndarray:
    """Decision logits (the bundle's rule applied) of one split subset, preprocessed as in training."""
    rows = from_split(data, split_path, subset).table
    logits = predict_logits(predictor.model, predictor.config, load_images(rows, predictor.config.size))
    return predictor.config.decision_logits(logits)


def abstain_rate(logits: np.ndarray, temperature: float, params: dict) -> float:
    """Share of images whose predictions would be withheld under ``params``."""
    return float(np.mean([bool(abstain_reasons(row, temperature, params)) for row in logits]))


def abstention_report(
    predictor: Predictor, data: Path, split_path: Path, target_accept: float = 0.95, n_per_kind: int = 16, seed: int = 0
) -> dict:
    """Fit on the val split, then abstention rates on val, test and each kind of non-dermoscopic probe."""
    t = predictor.config.temperature
    params = fit_abstention(split_logits(predictor, data, split_path, "val"), t, target_accept)
    rates = {"val": (params["n_val"], 1 - params["val_accept_rate"])}
    test = split_logits(predictor, data, split_path, "test")
    rates["test"] = (len(test), abstain_rate(test, t, params))
    for kind, images in non_dermoscopic(n_per_kind, seed).items():
        pixels = np.stack([resize_cover(image, predictor.config.size) for image in images])
        logits = predictor.config.decision_logits(predict_logits(predictor.model, predictor.config, pixels))
        rates[kind] = (len(images), abstain_rate(logits, t, params))
    return {"abstain": params, "rates": {k: {"n": n, "abstain_rate": round(r, 4)} for k, (n, r) in rates.items()}}
