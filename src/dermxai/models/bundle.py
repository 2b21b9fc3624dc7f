"""Model bundles: ``model.safetensors`` + ``config.json`` + ``MODEL_CARD.md``; loading never unpickles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

CARD = """# {arch} for HAM10000 diagnosis ({note})

- Architecture: `{arch}` ({weights} initialisation), input {height}x{width}, classes {classes}.
- Trained by `dermxai train` for {epochs_trained} epoch(s) (best validation epoch {best_epoch}, validation
  balanced accuracy {val_bacc}), seed {seed}, training time {train_time_s:.0f} s (sum of training epochs).
- Data: HAM10000 (CC BY-NC 4.0; Tschandl et al., Sci. Data 5, 180161, 2018), split fingerprint
  `{split_fingerprint}`. Non-commercial use only, with attribution.
- Not a medical device: for research and teaching. Phone photos are not dermoscopy.
"""


def save_bundle(folder: str | Path, model: nn.Module, config: dict, note: str = "research model") -> Path:
    """Write the bundle folder; ``config`` holds architecture, classes, input size, normalisation, provenance."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(config, indent=2, default=str))
    (folder / "MODEL_CARD.md").write_text(CARD.format(note=note, **config))
    return folder


class BundleError(ValueError):
    """A bundle folder that cannot be used: a malformed config, or weights that do not fit it."""


REQUIRED_KEYS = {"arch": str, "classes": list, "height": int, "width": int, "mean": list, "std": list}


def read_config(folder: str | Path) -> dict:
    """A bundle's config, checked for the keys every reader needs (no weights loaded, no torch imported)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder}: not a model bundle (needs config.json and model.safetensors)")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{folder}/config.json is not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise BundleError(f"{folder}/config.json must hold a JSON object")
    for key, kind in REQUIRED_KEYS.items():
        if not isinstance(config.get(key), kind) or isinstance(config.get(key), bool):
            raise BundleError(f"{folder}/config.json: '{key}' is missing or not a {kind.__name__}")
    if config["height"] < 8 or config["width"] < 8 or len(config["mean"]) != 3 or len(config["std"]) != 3:
        raise BundleError(f"{folder}/config.json: height and width must be >= 8, mean and std 3 values each")
    if len(config["classes"]) < 2 or len(set(map(str, config["classes"]))) != len(config["classes"]):
        raise BundleError(f"{folder}/config.json: 'classes' must name at least two distinct classes")
    bias = config.get("logit_bias")
    if bias is not None and (not isinstance(bias, list) or len(bias) != len(config["classes"])):
        raise BundleError(f"{folder}/config.json: 'logit_bias' must have one value per class")
    return config


def cam_method(config: dict) -> str:
    """The bundle's default heatmap method (chosen on validation by ``explain-score``), else Grad-CAM."""
    return config.get("cam_method") or "gradcam"


def gate_layer(config: dict) -> str | None:
    """The layer feeding the out-of-distribution gate: the bundle's own, else its architecture's default."""
    if config.get("gate_layer"):
        return config["gate_layer"]
    from dermxai.models.registry import REGISTRY

    entry = REGISTRY.get(config.get("arch", ""))
    return entry.gate_layer if entry else None


def load_bundle(folder: str | Path) -> tuple[nn.Module, dict]:
    """The model (eval mode) and config of a bundle folder; BundleError when the weights do not fit it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from dermxai.models.registry import create_model

    folder = Path(folder)
    config = read_config(folder)
    model, _ = create_model(config["arch"], weights="none", num_classes=len(config["classes"]))
    try:
        model.load_state_dict(load_file(folder / "model.safetensors"))
    except (SafetensorError, RuntimeError, OSError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise BundleError(
            f"{folder}/model.safetensors does not fit {config['arch']} with {len(config['classes'])} classes: {first}"
        ) from None
    return model.eval(), config
