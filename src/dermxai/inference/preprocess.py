"""The model input, defined once from a bundle's config: uint8 RGB (N, H, W, 3) -> normalised float (N, 3, H, W)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def to_array(images: np.ndarray, config: dict) -> np.ndarray:
    """Scale uint8 images to [0, 1] and normalise with the bundle's mean and std (as in training): float32 NCHW."""
    if images.ndim == 3:
        images = images[None]
    expected = (config["height"], config["width"], 3)
    if images.dtype != np.uint8 or images.shape[1:] != expected:
        raise ValueError(
            f"expected uint8 images of shape (N, {expected[0]}, {expected[1]}, 3), got {images.dtype} {images.shape}"
        )
    batch = images.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    mean = np.asarray(config["mean"], dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(config["std"], dtype=np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((batch - mean) / std)


def to_batch(images: np.ndarray, config: dict) -> torch.Tensor:
    """:func:`to_array` as a torch tensor."""
    import torch

    return torch.from_numpy(to_array(images, config))
