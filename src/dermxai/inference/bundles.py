"""Where models live: the installed default bundle (``dermxai/assets/default_model``), overridable by
``$DERMXAI_MODEL``, plus any bundle under ``./models`` of the folder you run from."""

from __future__ import annotations

import os
from pathlib import Path

from dermxai.assets import DEFAULT_MODEL
from dermxai.models.bundle import is_bundle

ENV = "DERMXAI_MODEL"
MODELS_DIR = Path("models")
"""Extra bundles: every bundle folder under ``./models`` (relative to the working folder)."""


def default_bundle() -> Path:
    """``$DERMXAI_MODEL`` when set, else the installed default model."""
    folder = Path(os.environ[ENV]) if os.environ.get(ENV) else DEFAULT_MODEL
    if not is_bundle(folder):
        source = f"${ENV}" if os.environ.get(ENV) else "the default model"
        raise FileNotFoundError(
            f"{source} {folder} is not a model bundle (needs config.json and "
            f"model.safetensors); pass --model BUNDLE or set {ENV}"
        )
    return folder


def installed_bundles(extra: list[Path] | None = None) -> dict[str, Path]:
    """Bundles to choose from, by display name: the default, every bundle under ``./models``, and ``extra``."""
    found: dict[str, Path] = {}
    candidates = list(extra or [])
    try:
        candidates.insert(0, default_bundle())
    except FileNotFoundError:
        pass
    if MODELS_DIR.is_dir():
        candidates += sorted(p for p in MODELS_DIR.iterdir() if p.is_dir())
    for folder in candidates:
        if is_bundle(folder) and folder.resolve() not in {p.resolve() for p in found.values()}:
            name = folder.name if folder.name not in found else str(folder)
            found[name] = folder
    return found
