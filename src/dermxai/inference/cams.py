"""Class activation maps for any bundled model, on pytorch-grad-cam.

The CAM target layer is a module path: the bundle's (``BundleConfig.target_layer()``: its ``cam_layer``,
else the model registry's), never a hard-coded list here. The prediction is read from the same forward pass
that the CAM hooks record (Score-CAM adds one forward pass per channel of the target layer to weigh the
channels).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction
from torch import nn

from dermxai.models.ensemble import plain_views


class QuietScoreCAM(ScoreCAM):
    """Score-CAM that masks one image at a time in chunks of channels, without a progress bar.

    The library builds all (N, C, 3, H, W) masked inputs at once (about 260 MB per image for a
    1280-channel layer at 112x150); this keeps at most ``batch_size`` of them.
    """

    batch_size = 64

    def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads) -> np.ndarray:
        with torch.no_grad():
            maps = F.interpolate(
                torch.from_numpy(activations).to(self.device),
                size=input_tensor.shape[-2:],
                mode="bilinear",
                align_corners=False,
            )
            flat = maps.flatten(2)
            low, high = flat.min(-1).values[..., None, None], flat.max(-1).values[..., None, None]
            maps = (maps - low) / (high - low + 1e-8)
            scores = torch.empty(maps.shape[:2])
            for n, (target, image) in enumerate(zip(targets, input_tensor)):
                for start in range(0, maps.shape[1], self.batch_size):
                    masked = image[None] * maps[n, start : start + self.batch_size, None]
                    scores[n, start : start + len(masked)] = torch.stack([target(o) for o in self.model(masked)]).cpu()
            return torch.softmax(scores, dim=-1).numpy()


class SignedEigenCAM(EigenCAM):
    """EigenCAM with the first principal component's sign chosen so that its largest magnitude is positive.

    An SVD's sign is arbitrary; uncorrected, about half the maps come out inverted (background lit).
    """

    def get_cam_image(self, input_tensor, target_layer, target_category, activations, grads, eigen_smooth):
        return get_2d_projection_with_sign_correction(activations)


METHODS: dict[str, type[BaseCAM]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
    "xgradcam": XGradCAM,
    "eigencam": SignedEigenCAM,
    "scorecam": QuietScoreCAM,
}


def check_method(method: str) -> str:
    """``method`` if it is a known CAM method; else a ValueError listing them."""
    if method not in METHODS:
        raise ValueError(f"unknown CAM method {method!r}: use one of {', '.join(METHODS)}")
    return method


def target_layer(model: nn.Module, path: str) -> nn.Module:
    """The module of ``model`` at ``path`` (such as ``blocks.4``); a ValueError when there is none."""
    try:
        return model.get_submodule(path)
    except AttributeError as error:
        raise ValueError(f"CAM target layer {path!r} is not in {type(model).__name__}") from error


def _start_graph(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    """Make the layer's output a leaf of the autograd graph: backward then runs through the head only."""
    return output.detach().requires_grad_(True)


def _clone_output(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    """Hand the rest of the network a copy, so in-place ops after the layer (DenseNet's ReLU) spare the recorded one."""
    return output.clone()


def explain(
    model: nn.Module,
    layer_path: str,
    batch: torch.Tensor,
    method: str = "gradcam",
    target_classes: list[int] | None = None,
) -> tuple[np.ndarray, torch.Tensor]:
    """CAMs (N, H, W) in [0, 1] for ``target_classes`` (default: each image's top class) and the logits (N, C).

    ``layer_path`` names the target layer (``BundleConfig.target_layer()``); ``batch`` is the normalised
    (N, 3, H, W) float input. Both outputs come from one forward pass, whose gradients are taken from the
    target layer on (the layers below it need none); for an ensemble that serves flip TTA, of its plain view.
    """
    check_method(method)
    if target_classes is not None and len(target_classes) != len(batch):
        raise ValueError(f"{len(target_classes)} target classes for {len(batch)} images")
    model.eval()
    layer = target_layer(model, layer_path)
    targets = None if target_classes is None else [ClassifierOutputTarget(int(c)) for c in target_classes]
    # an ensemble serving flip TTA explains its plain view: one activation per image at the target layer
    with torch.enable_grad(), plain_views(model), METHODS[method](model=model, target_layers=[layer]) as cam:
        handles = [
            layer.register_forward_hook(_start_graph, prepend=True),  # before the library's hooks
            layer.register_forward_hook(_clone_output),
        ]  # after them: they record the original
        try:
            maps = cam(input_tensor=batch, targets=targets)
        finally:
            for handle in handles:
                handle.remove()
        logits = cam.outputs.detach()
    return np.asarray(maps, dtype=np.float32), logits
