"""Acquisition shifts: what dermoscopy from another clinic, device or pipeline looks like, applied to images.

``ACQUISITION_SHIFTS`` are the gate's fixed changes (JPEG, colour cast, zoom, vignette, square crop, blur);
``SHIFTS`` adds resampling and white-balance changes that external test sets show (another source and
resolution). ``shifted_report`` scores a bundle's served answer on validation under each (validation only:
choices may be made on it).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

Shift = Callable[[Image.Image], Image.Image]


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    """``image`` after a round trip through JPEG at ``quality``."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(buffer).convert("RGB")


def vignette(image: Image.Image) -> Image.Image:
    """Black outside the inscribed ellipse, as round dermatoscope fields look."""
    w, h = image.size
    y, x = np.mgrid[:h, :w]
    pixels = np.asarray(image).copy()
    pixels[np.hypot((x - w / 2) / (w / 2), (y - h / 2) / (h / 2)) > 1.0] = 0
    return Image.fromarray(pixels)


def grey_world(image: Image.Image) -> Image.Image:
    """White balance by the grey-world rule: every channel scaled to the same mean."""
    pixels = np.asarray(image, dtype=np.float32)
    means = pixels.reshape(-1, 3).mean(0)
    return Image.fromarray(np.uint8((pixels * (means.mean() / np.maximum(means, 1e-6))).clip(0, 255)))


def resampled(image: Image.Image, factor: float) -> Image.Image:
    """Resized by ``factor`` (another camera's resolution), as the model would then receive it."""
    return image.resize((max(1, round(image.width * factor)), max(1, round(image.height * factor))), Image.BICUBIC)


ACQUISITION_SHIFTS: dict[str, Shift] = {
    "JPEG quality 30": lambda im: jpeg(im, 30),
    "warm colour cast": lambda im: Image.fromarray(np.uint8((np.asarray(im) * [1.1, 1.0, 0.85]).clip(0, 255))),
    "zoomed in 1.5x": lambda im: im.crop(
        (im.width // 6, im.height // 6, im.width - im.width // 6, im.height - im.height // 6)
    ),
    "black circular vignette": vignette,
    "square crop": lambda im: im.crop(((im.width - im.height) // 2, 0, (im.width + im.height) // 2, im.height)),
    "blurred (sigma 1 px)": lambda im: im.filter(ImageFilter.GaussianBlur(1)),
}
"""Acquisition changes applied to validation images to measure how the gate treats shifted dermoscopy."""

SHIFTS: dict[str, Shift] = {
    **ACQUISITION_SHIFTS,
    "downsampled 0.5x": lambda im: resampled(im, 0.5),
    "upsampled 3x (600x450, the originals' size)": lambda im: resampled(im, 3),
    "squashed to a square": lambda im: im.resize((im.height, im.height), Image.BICUBIC),
    "grey-world white balance": grey_world,
}
"""Every shift the served model is scored under on validation."""


def shifted_report(predictor, data: Path, split: Path, *, images: Path | None = None, limit: int | None = None) -> dict:
    """Balanced accuracy (and accuracy) of the served label on validation images, unchanged and under each shift.

    The served label is the argmax of the served probabilities (decision rule and temperature), before any
    withholding; ``limit`` takes the first images only (a quick look).
    """
    from dermxai.evaluation.evaluate import from_split
    from dermxai.evaluation.metrics import balanced_accuracy
    from dermxai.preprocessing import resize_cover

    table = from_split(data, split, "val", images).table
    if limit:
        table = table.head(limit)
    originals = []
    for path in table["path"]:
        with Image.open(path) as image:
            originals.append(image.convert("RGB"))
    labels = table["dx"].map(predictor.classes.index).to_numpy()
    rows = {}
    for name, shift in {"unchanged": None, **SHIFTS}.items():
        pixels = np.stack([resize_cover(shift(im) if shift else im, predictor.config.size) for im in originals])
        logits = np.concatenate([predictor.logits(pixels[i : i + 64]) for i in range(0, len(pixels), 64)])
        served = predictor.config.served_labels(logits)
        rows[name] = {
            "balanced_accuracy": round(balanced_accuracy(labels, served, len(predictor.classes)), 4),
            "accuracy": round(float((served == labels).mean()), 4),
        }
    return {"model_id": predictor.model_id, "n": len(labels), "split": str(split), "subset": "val", "shifts": rows}
