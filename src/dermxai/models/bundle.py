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


def read_config(folder: str | Path) -> dict:
    """A bundle's config (no weights loaded, no torch imported)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder}: not a model bundle (needs config.json and model.safetensors)")
    return json.loads((folder / "config.json").read_text())


def load_bundle(folder: str | Path) -> tuple[nn.Module, dict]:
    """The model (eval mode) and config of a bundle folder."""
    from safetensors.torch import load_file

    from dermxai.models.registry import create_model

    folder = Path(folder)
    config = read_config(folder)
    model, _ = create_model(config["arch"], weights="none", num_classes=len(config["classes"]))
    model.load_state_dict(load_file(folder / "model.safetensors"))
    return model.eval(), config
