"""Augmentation of whole uint8 batches on the device, each image with its own random parameters.

Dermoscopy has no canonical orientation: every image gets a random flip, a random multiple of 90 degrees,
a small extra rotation, a random scale/translation (random resized crop) and colour jitter, all as one
affine resampling plus per-image colour factors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dermxai.training.config import AugmentConfig


def augment_batch(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Randomly transform a float batch (N, 3, H, W) in [0, 1]; returns a batch of the same shape."""
    n, device = images.shape[0], images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=generator, device=device) * (high - low) + low

    angle = torch.randint(0, 4, (n,), generator=generator, device=device) * (math.pi / 2)
    angle = angle + uniform(-1, 1) * math.radians(config.max_rotation_deg)
    scale = uniform(*config.scale)
    flip = torch.where(torch.rand(n, generator=generator, device=device) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, uniform(-1, 1) * config.max_translate], 1),
            torch.stack([sin * flip, cos, uniform(-1, 1) * config.max_translate], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def factor(strength: float) -> torch.Tensor:
        return uniform(1 - strength, 1 + strength).view(n, 1, 1, 1)

    out = out * factor(config.brightness)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * factor(config.contrast) + mean
    grey = out.mean(dim=1, keepdim=True)
    out = (out - grey) * factor(config.saturation) + grey
    return out.clamp(0, 1)
