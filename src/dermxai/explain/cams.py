"""Class activation maps for any bundled model, on pytorch-grad-cam.

The CAM target layer comes from the bundle config (``cam_layer``) or the model registry, never from a
hard-coded list here. The prediction is read from the same forward pass that the CAM hooks record.
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_grad_cam import (EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM,
                              XGradCAM)
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from dermxai.models.registry import architecture

METHODS: dict[str, type[BaseCAM]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
    "xgradcam": XGradCAM,
    "eigencam": EigenCAM,
    "scorecam": ScoreCAM,
}


def target_layer(model: nn.Module, config_or_arch: dict | str) -> nn.Module:
    """The CAM target layer of ``model``: ``config["cam_layer"]`` of a bundle, or the registry's for an arch name."""
    if isinstance(config_or_arch, dict):
        path = config_or_arch.get("cam_layer") or architecture(config_or_arch["arch"]).cam_layer
    else:
        path = architecture(config_or_arch).cam_layer
    try:
        return model.get_submodule(path)
    except AttributeError as error:
        raise ValueError(f"CAM target layer {path!r} is not in {type(model).__name__}") from error


def _clone_output(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    """Hand the rest of the network a copy, so in-place ops after the layer (DenseNet's ReLU) spare the recorded one."""
    return output.clone()


def explain(model: nn.Module, config: dict | str, batch: torch.Tensor, method: str = "gradcam",
            target_classes: list[int] | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """CAMs (N, H, W) in [0, 1] for ``target_classes`` (default: each image's top class) and the logits (N, C).

    ``batch`` is the normalised (N, 3, H, W) float input. Both outputs come from one forward pass.
    """
    if method not in METHODS:
        raise ValueError(f"unknown CAM method {method!r}: use one of {', '.join(METHODS)}")
    if target_classes is not None and len(target_classes) != len(batch):
        raise ValueError(f"{len(target_classes)} target classes for {len(batch)} images")
    model.eval()
    layer = target_layer(model, config)
    targets = None if target_classes is None else [ClassifierOutputTarget(int(c)) for c in target_classes]
    with torch.enable_grad(), METHODS[method](model=model, target_layers=[layer]) as cam:
        if method == "scorecam":
            cam.batch_size = 64
        handle = layer.register_forward_hook(_clone_output)  # after the library's hooks: they record the original
        try:
            maps = cam(input_tensor=batch, targets=targets)
        finally:
            handle.remove()
        logits = cam.outputs.detach()
    return np.asarray(maps, dtype=np.float32), logits
