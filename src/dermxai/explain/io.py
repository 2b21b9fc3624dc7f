"""Inputs of the explanation commands: the default bundle, images and lesion masks at a model's input size.

Images and masks go through the training preprocessing (``load_resized``: cover-resize, centre-crop), so a
mask lines up with the image pixels the model saw.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import UnidentifiedImageError

from dermxai.data.cache import load_resized
from dermxai.data.index import MASK_SUFFIX

ENV = "DERMXAI_MODEL"
DEFAULT_BUNDLE = Path(__file__).resolve().parents[3] / "models" / "default"


def default_bundle() -> Path:
    """``$DERMXAI_MODEL`` when set, else ``models/default`` at the repository root."""
    folder = Path(os.environ[ENV]) if os.environ.get(ENV) else DEFAULT_BUNDLE
    if not (folder / "config.json").is_file():
        source = f"${ENV}" if os.environ.get(ENV) else "the default model"
        raise FileNotFoundError(f"{source} {folder} is not a model bundle; pass --model BUNDLE or set {ENV}")
    return folder


def read_image(path: str | Path, config: dict) -> np.ndarray:
    """The image as the model sees it: uint8 (H, W, 3) at the bundle's input size."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        return np.array(load_resized(str(path), (config["height"], config["width"])))  # writable
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image (use a JPEG or PNG file)") from None


def read_mask(path: str | Path, config: dict) -> np.ndarray:
    """A lesion mask (white = lesion) as a boolean (H, W) array, resized exactly like the image."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such mask file")
    return read_image(path, config)[..., 0] > 127


def mask_next_to(image: str | Path) -> Path | None:
    """``<id>_segmentation.png`` beside the image, if there is one."""
    image = Path(image)
    candidate = image.with_name(f"{image.stem}{MASK_SUFFIX}.png")
    return candidate if candidate.is_file() else None
