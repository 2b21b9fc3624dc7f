"""Copy a trained bundle into ``src/dermxai/assets/default_model`` with float16 weights (half the file; loads into float32).

Usage: python scripts/ship_default.py RUN_DIR/bundle [--out src/dermxai/assets/default_model]
Calibrate, evaluate and export the shipped copy afterwards, so every reported figure is of the shipped weights.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dermxai.models.bundle import read_config, weights_metadata, write_config


def ship(bundle: Path, out: Path) -> None:
    """Write ``out`` as a float16 copy of ``bundle`` (config, card and gate copied; ONNX export not carried over)."""
    state = load_file(bundle / "model.safetensors")
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    config = read_config(bundle)
    save_file(half, out / "model.safetensors", metadata=weights_metadata(config))
    storage = "float16 weights (cast after training by scripts/ship_default.py)"
    write_config(out, config.replace(storage=storage, onnx_int8=None))  # no graph is carried over
    shutil.copy(bundle / "MODEL_CARD.md", out / "MODEL_CARD.md")
    if (bundle / "ood_gate.npz").is_file():  # the gate reads features, which float16 weights barely change
        shutil.copy(bundle / "ood_gate.npz", out / "ood_gate.npz")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--out", type=Path, default=Path("src/dermxai/assets/default_model"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    ship(args.bundle, args.out)
    print(f"wrote {args.out}")
