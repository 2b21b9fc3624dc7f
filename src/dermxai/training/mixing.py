"""Mixing pairs of training images: mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019).

A mixed batch pairs every image with another of the same batch (a random permutation) and blends them:
mixup averages the two images with weight ``lam ~ Beta(alpha, alpha)``; CutMix pastes a box of the partner
covering ``1 - lam`` of the frame. The loss is then ``lam * loss(labels) + (1 - lam) * loss(partner's labels)``,
so any loss (class-weighted, focal, distillation with the partner's teacher targets) mixes the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Mix:
    """How a batch was mixed: the partner of each image and the weight of each image's own labels."""

    partner: torch.Tensor
    lam: float

    def combine(self, loss, logits: torch.Tensor, labels: torch.Tensor, *teacher: torch.Tensor) -> torch.Tensor:
        """``loss`` of the mixed batch: the two label sets weighted by ``lam`` and ``1 - lam``."""
        other = loss(logits, labels[self.partner], *(t[self.partner] for t in teacher))
        return self.lam * loss(logits, labels, *teacher) + (1 - self.lam) * other


def mix_batch(
    x: torch.Tensor, mixup_alpha: float, cutmix_alpha: float, prob: float, seed: int
) -> tuple[torch.Tensor, Mix | None]:
    """Mix a float batch (N, 3, H, W) with probability ``prob``; returns it and its :class:`Mix` (None: unmixed).

    With both alphas above 0, a mixed batch is mixup or CutMix at even odds. ``seed`` fixes every draw, so a
    resumed run mixes as the uninterrupted one did.
    """
    rng = np.random.default_rng(seed)
    kinds = [k for k, alpha in (("mixup", mixup_alpha), ("cutmix", cutmix_alpha)) if alpha > 0]
    if not kinds or len(x) < 2 or rng.random() >= prob:
        return x, None
    kind = kinds[rng.integers(len(kinds))]
    lam = float(rng.beta(*(2 * [mixup_alpha if kind == "mixup" else cutmix_alpha])))
    partner = torch.from_numpy(rng.permutation(len(x))).to(x.device)
    if kind == "mixup":
        return lam * x + (1 - lam) * x[partner], Mix(partner, lam)
    height, width = x.shape[-2:]
    box_h, box_w = round(height * (1 - lam) ** 0.5), round(width * (1 - lam) ** 0.5)
    top, left = int(rng.integers(height - box_h + 1)), int(rng.integers(width - box_w + 1))
    out = x.clone()
    out[..., top : top + box_h, left : left + box_w] = x[partner][..., top : top + box_h, left : left + box_w]
    return out, Mix(partner, 1 - box_h * box_w / (height * width))  # lam: the share of the frame left as it was
