"""Losses for class imbalance: (class-weighted) cross-entropy with label smoothing, and focal loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): cross-entropy scaled by ``(1 - p_true) ** gamma``."""

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.gamma, self.label_smoothing = gamma, label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, target, weight=self.weight, reduction="none", label_smoothing=self.label_smoothing)
        p_true = logits.softmax(1).gather(1, target[:, None]).squeeze(1)
        return ((1 - p_true) ** self.gamma * ce).mean()


def class_weights(counts: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """Inverse-frequency weights ``(total / count) ** power`` normalised to mean 1 (absent classes get 0)."""
    inverse = counts.sum() / counts.clamp(min=1)
    weights = torch.where(counts > 0, inverse**power, torch.zeros_like(counts, dtype=torch.float))
    return weights / weights[counts > 0].mean()


def build_loss(
    kind: str, counts: torch.Tensor, weighted: bool, label_smoothing: float, weight_power: float = 1.0
) -> nn.Module:
    """``kind`` is ``ce`` or ``focal``; ``weighted`` applies inverse-frequency class weights to ``weight_power``."""
    weight = class_weights(counts.float(), weight_power) if weighted else None
    if kind == "ce":
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
    if kind == "focal":
        return FocalLoss(weight=weight, label_smoothing=label_smoothing)
    raise ValueError(f"unknown loss {kind!r}: use ce or focal")
