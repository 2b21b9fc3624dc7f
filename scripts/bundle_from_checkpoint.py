"""Write a bundle from any checkpoint of a run (e.g. ``last.ckpt`` beside the ``best.ckpt`` the run shipped).

Usage: python scripts/bundle_from_checkpoint.py RUN_DIR/checkpoints/last.ckpt --out DIR
The weights are the EMA ones when the run kept an EMA (as the run's own bundle), else the trained model's;
config.json is the run's bundle config with the checkpoint's epoch. Loading never unpickles arbitrary
objects (``weights_only=True``). Choose between such bundles on validation only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dermxai.models.bundle import read_config, save_bundle
from dermxai.models.registry import create_model


def bundle_from_checkpoint(checkpoint: Path, out: Path) -> Path:
    run_bundle = checkpoint.parent.parent / "bundle"
    config = read_config(run_bundle)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    prefix = "ema.module." if any(k.startswith("ema.module.") for k in state) else "model."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    model, _ = create_model(config.arch, weights="none", num_classes=len(config.classes))
    model.load_state_dict(weights)
    epoch = int(torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"])
    return save_bundle(out, model, config.replace(best_epoch=epoch, checkpoint=checkpoint.name, val_bacc=None))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(f"wrote {bundle_from_checkpoint(args.checkpoint, args.out)}")
