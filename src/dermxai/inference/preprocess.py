"""The model input, defined once from a bundle's config: uint8 RGB (N, H, W, 3) -> normalised float (N, 3, H, W)."""

from __future__ import annotations

import numpy as np
import torch


def to_batch(images: np.ndarray, config: dict) -> torch.Tensor:
    """Scale uint8 images to [0, 1] and normalise with the bundle's mean and std (as in training)."""
    if images.ndim == 3:
        images = images[None]
    expected = (config["height"], config["width"], 3)
    if images.dtype != np.uint8 or images.shape[1:] != expected:
        raise ValueError(f"expected uint8 images of shape (N, {expected[0]}, {expected[1]}, 3), "
                         f"got {images.dtype} {images.shape}")
    batch = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255)
    mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["std"]).view(1, 3, 1, 1)
    return (batch - mean) / std
