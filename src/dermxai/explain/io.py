"""Dataset images and lesion masks at a model's input size, for the explanation commands and scores.

Images and masks go through the training preprocessing (``load_resized``: cover-resize, centre-crop), so a
mask lines up with the image pixels the model saw.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import UnidentifiedImageError

from dermxai.data.index import MASK_SUFFIX
from dermxai.preprocessing import load_resized


def read_model_input(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """The image as the model sees it: uint8 (H, W, 3) at the bundle's input ``size`` (h, w)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        return load_resized(str(path), size)
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image (use a JPEG or PNG file)") from None


def read_mask(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """A lesion mask (white = lesion) as a boolean (H, W) array, resized exactly like the image."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such mask file")
    return read_model_input(path, size)[..., 0] > 127


def image_id_of(path: str | Path) -> str:
    """The dataset id of an image file: the ISIC id inside its name (``mel_ISIC_0024313.jpg``), else its stem."""
    found = re.search(r"ISIC_\d+", Path(path).stem)
    return found.group(0) if found else Path(path).stem


def mask_next_to(image: str | Path) -> Path | None:
    """``<id>_segmentation.png`` beside the image, if there is one."""
    image = Path(image)
    candidate = image.with_name(f"{image.stem}{MASK_SUFFIX}.png")
    return candidate if candidate.is_file() else None
