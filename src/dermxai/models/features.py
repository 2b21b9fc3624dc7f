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

from dermxai.models.bundle import gate_layers


def pooled_mean_std(activation: torch.Tensor) -> torch.Tensor:
    """Per-channel mean and standard deviation over space: (N, C, H, W) -> (N, 2C)."""
    flat = activation.float().flatten(2)
    return torch.cat([flat.mean(2), flat.std(2, correction=0)], 1)  # population std: defined for a 1x1 map


class WithFeatures(nn.Module):
    """Wraps ``model``: forward returns ``(logits, pooled mean/std of gate_layer)``, the features of several
    joined layers (:func:`gate_layers`) concatenated in the order named."""

    def __init__(self, model: nn.Module, gate_layer: str) -> None:
        super().__init__()
        self.model = model
        self.layers = gate_layers(gate_layer)
        self._activation: dict[str, torch.Tensor] = {}
        self._capturing = False  # the hook keeps nothing from forward passes not made through this wrapper (CAMs)
        for layer in self.layers:
            model.get_submodule(layer).register_forward_hook(
                lambda module, inputs, output, layer=layer: self._keep(layer, output)
            )

    def _keep(self, layer: str, output: torch.Tensor) -> None:
        if self._capturing:
            self._activation.setdefault(layer, output)  # the first pass: the image as given (not a TTA view)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._capturing = True
        try:
            logits = self.model(images)
        finally:
            self._capturing = False
        pooled = [pooled_mean_std(self._activation.pop(layer)) for layer in self.layers]
        return logits, pooled[0] if len(pooled) == 1 else torch.cat(pooled, 1)
