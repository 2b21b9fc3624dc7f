"""The model input, defined once for training, serving, export, CAMs and tests.

An image becomes a model input in two steps: **resize** (``resize_cover``: cover the bundle's input size,
centre-crop the excess; ``load_resized`` from a file, EXIF orientation applied), then **normalise**
(uint8 -> [0, 1] -> the bundle's colour constancy, if any -> ``(x - mean) / std`` with the bundle's mean and
std). Training splits the second step around its augmentation (``to_unit``, ``colour_correct``, augment,
``standardise``); serving does it in one go (``to_array`` in numpy for ONNX Runtime, ``to_batch`` for PyTorch).
``tests/test_training.py`` checks that both agree.

Colour constancy (``colour_constancy: "shades_of_gray"``) is Finlayson & Trezzi's Shades of Gray (2004), as
strong ISIC pipelines use it (Barata et al. 2015): each image's illuminant is estimated per channel as the
Minkowski p-norm mean of its pixels (p = 6) and divided out, so the three estimates become their mean (each
channel's gain kept within [1/4, 4]); it removes a camera's or a lamp's colour cast before the model sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image, ImageOps

if TYPE_CHECKING:
    import torch


COLOUR_CONSTANCY = ("shades_of_gray",)
"""The colour-constancy steps a bundle may declare (``None``: the image as it is)."""

SHADES_OF_GRAY_POWER = 6
"""Minkowski norm of the Shades of Gray illuminant estimate (1: grey world; infinity: max-RGB)."""

SHADES_OF_GRAY_MAX_GAIN = 4.0
"""A channel's correction stays within [1/4, 4]: a nearly empty channel is not amplified into noise."""


class InputFormat(Protocol):
    """The model input a bundle declares (``dermxai.models.bundle.BundleConfig`` is one)."""

    @property
    def height(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def mean(self) -> Sequence[float]: ...
    @property
    def std(self) -> Sequence[float]: ...
    @property
    def colour_constancy(self) -> str | None: ...


def load_resized(path: str, size: tuple[int, int]) -> np.ndarray:
    """Decode an image file as RGB (EXIF orientation applied) and resize it to cover ``size`` (h, w), centre-cropping the excess."""
    with Image.open(path) as image:
        return resize_cover(ImageOps.exif_transpose(image).convert("RGB"), size)


def resize_cover(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB image to cover ``size`` (h, w), centre-crop the excess: the training preprocessing.

    The centred box is cut in the source's coordinates and resampled straight to ``size``, so no
    intermediate larger than the output is ever allocated (a 20000x1 image would otherwise be scaled up to
    3,000,000x150 before the crop).
    """
    height, width = size
    box = cover_box((image.width, image.height), size)
    left, top = box[:2]
    if (box[2] - left, box[3] - top) == (width, height) and left == int(left) and top == int(top):
        return np.array(image.crop((int(left), int(top), int(left) + width, int(top) + height)))
    return np.array(image.resize((width, height), Image.BILINEAR, box=box))


def cover_box(image_size: tuple[int, int], size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The centred (left, top, right, bottom) box of an image (w, h) that :func:`resize_cover` keeps for (h, w)."""
    image_w, image_h = image_size
    height, width = size
    scale = max(height / image_h, width / image_w)
    box_w, box_h = min(image_w, width / scale), min(image_h, height / scale)
    left, top = max(0.0, (image_w - box_w) / 2), max(0.0, (image_h - box_h) / 2)
    return left, top, min(float(image_w), left + box_w), min(float(image_h), top + box_h)


def to_array(images: np.ndarray, config: InputFormat) -> np.ndarray:
    """Scale uint8 images to [0, 1] and normalise with the bundle's mean and std (as in training): float32 NCHW."""
    if images.ndim == 3:
        images = images[None]
    expected = (config.height, config.width, 3)
    if images.dtype != np.uint8 or images.shape[1:] != expected:
        raise ValueError(
            f"expected uint8 images of shape (N, {expected[0]}, {expected[1]}, 3), got {images.dtype} {images.shape}"
        )
    batch = images.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    if getattr(config, "colour_constancy", None):
        batch = colour_correct_array(batch, config.colour_constancy)
    mean = np.asarray(config.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(config.std, dtype=np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((batch - mean) / std)


def colour_correct_array(batch: np.ndarray, method: str) -> np.ndarray:
    """:func:`colour_correct` in numpy (for ONNX Runtime): float images (N, 3, H, W) in [0, 1]."""
    _check_method(method)
    power = SHADES_OF_GRAY_POWER
    illuminant = np.mean(np.maximum(batch, 0) ** power, axis=(2, 3), keepdims=True) ** (1 / power)
    gain = illuminant.mean(axis=1, keepdims=True) / np.maximum(illuminant, 1e-6)
    gain = np.clip(gain, 1 / SHADES_OF_GRAY_MAX_GAIN, SHADES_OF_GRAY_MAX_GAIN)
    return np.clip(batch * gain, 0, 1).astype(np.float32)


def colour_correct(x: torch.Tensor, method: str | None) -> torch.Tensor:
    """Colour constancy ``method`` (see :data:`COLOUR_CONSTANCY`) of float images (N, 3, H, W) in [0, 1]; ``x``
    itself when ``method`` is None. Traceable: an ensemble member's correction is part of the ONNX graph."""
    if method is None:
        return x
    _check_method(method)
    power = SHADES_OF_GRAY_POWER
    illuminant = x.clamp(min=0).pow(power).mean(dim=(2, 3), keepdim=True).pow(1 / power)
    gain = illuminant.mean(dim=1, keepdim=True) / illuminant.clamp(min=1e-6)
    gain = gain.clamp(1 / SHADES_OF_GRAY_MAX_GAIN, SHADES_OF_GRAY_MAX_GAIN)
    return (x * gain).clamp(0, 1)


def _check_method(method: str) -> None:
    if method not in COLOUR_CONSTANCY:
        raise ValueError(f"colour constancy must be one of {', '.join(COLOUR_CONSTANCY)}, not {method!r}")


def to_batch(images: np.ndarray, config: InputFormat) -> torch.Tensor:
    """:func:`to_array` as a torch tensor."""
    import torch

    return torch.from_numpy(to_array(images, config))


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [0, 1]: what training augments."""
    return images.permute(0, 3, 1, 2).float().div(255)


def standardise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std per channel (``mean``, ``std`` shaped (1, 3, 1, 1)), channels_last for the convolutions."""
    import torch

    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)
