"""A classifier that also returns image features for the out-of-distribution gate: ``(logits, features)``.

The features are the per-channel mean and standard deviation over space of one intermediate layer (the
architecture's ``gate_layer``): colour and texture statistics at a middle depth, which separate dermoscopy
from photographs, documents, screenshots and other medical images far better than the penultimate layer,
whose fine-tuned features only need to separate the seven classes (measured in docs/ood.md). They come from
the same forward pass (a forward hook), so serving costs nothing extra, and the wrapper exports to ONNX as
one graph with two outputs.
"""

from __future__ import annotations

import torch
from torch import nn


def pooled_mean_std(activation: torch.Tensor) -> torch.Tensor:
    """Per-channel mean and standard deviation over space: (N, C, H, W) -> (N, 2C)."""
    flat = activation.float().flatten(2)
    return torch.cat([flat.mean(2), flat.std(2)], 1)


class WithFeatures(nn.Module):
    """Wraps ``model``: forward returns ``(logits, pooled mean/std of gate_layer)``."""

    def __init__(self, model: nn.Module, gate_layer: str) -> None:
        super().__init__()
        self.model = model
        self._activation: dict[str, torch.Tensor] = {}  # one slot: holds only the latest forward pass
        model.get_submodule(gate_layer).register_forward_hook(
            lambda module, inputs, output: self._activation.__setitem__("gate", output)
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(images)
        return logits, pooled_mean_std(self._activation.pop("gate"))
