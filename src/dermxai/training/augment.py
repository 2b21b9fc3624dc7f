"""Augmentation of whole uint8 batches on the device, each image with its own random parameters.

Dermoscopy has no canonical orientation: every image gets a random flip, a random multiple of 90 degrees
(only 0 or 180 for a non-square image, which a quarter turn would stretch), a small extra rotation, a random
scale/translation (random resized crop) and colour jitter, all as one affine resampling plus per-image colour
factors; optionally JPEG re-encoding and sensor noise, which files from other sources carry. A rigid config
(flips and turns only) skips the resampling: exact pixels, and faster.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg

from dermxai.training.config import AugmentConfig


def augment_batch(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Randomly transform a float batch (N, 3, H, W) in [0, 1]; returns a batch of the same shape."""
    n, device = images.shape[0], images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=generator, device=device) * (high - low) + low

    square = images.shape[-1] == images.shape[-2]
    if config.rigid:
        out = _flips_and_turns(images, square, generator)
    else:
        quarter = torch.randint(0, 4, (n,), generator=generator, device=device)
        quarter = quarter if square else quarter // 2 * 2
        angle = quarter * (math.pi / 2) + uniform(-1, 1) * math.radians(config.max_rotation_deg)
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

    if config.brightness:
        out = out * factor(config.brightness)
    if config.contrast:
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * factor(config.contrast) + mean
    if config.saturation:
        grey = out.mean(dim=1, keepdim=True)
        out = (out - grey) * factor(config.saturation) + grey
    out = out.clamp(0, 1)
    if config.jpeg_probability:
        out = _jpeg_reencoded(out, config, generator)
    if config.noise_std:
        sigma = uniform(0, config.noise_std).view(n, 1, 1, 1)
        out = (out + sigma * torch.randn(out.shape, generator=generator, device=device)).clamp(0, 1)
    return out


def _jpeg_reencoded(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Each image, with probability ``config.jpeg_probability``, saved and decoded as a JPEG of a random quality
    in ``config.jpeg_quality``: the block and ringing artefacts of files from other sources."""
    n, device = images.shape[0], images.device
    chosen = torch.rand(n, generator=generator, device=device) < config.jpeg_probability
    low, high = config.jpeg_quality
    qualities = torch.randint(low, high + 1, (n,), generator=generator, device=device)
    out = images.clone()
    for i in chosen.nonzero().flatten().tolist():
        pixels = (images[i] * 255).round().to(torch.uint8).cpu()
        out[i] = decode_jpeg(encode_jpeg(pixels, quality=int(qualities[i]))).to(images) / 255
    return out


def _flips_and_turns(images: torch.Tensor, square: bool, generator: torch.Generator) -> torch.Tensor:
    """Each image flipped left-right and/or upside down at random (and transposed, when square): every
    symmetry of the frame, no resampling."""
    n, device = images.shape[0], images.device

    def coin() -> torch.Tensor:
        return (torch.rand(n, generator=generator, device=device) < 0.5).view(n, 1, 1, 1)

    out = torch.where(coin(), images.flip(-1), images)
    out = torch.where(coin(), out.flip(-2), out)
    return torch.where(coin(), out.transpose(-1, -2), out) if square else out
