"""Export a bundle to ONNX (dynamic batch axis) and prove, at export time, that ONNX Runtime agrees with PyTorch.

The parity check runs both on real images (the committed HAM10000 fixture by default) at batch size 1 and
at the full batch, and compares served probabilities (decision rule and temperature of the bundle). A graph that
disagrees by more than the tolerance is deleted and the export fails.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dermxai.assets import EXAMPLES
from dermxai.inference.onnx_backend import (
    CONFIG_KEY,
    ONNX_NAME,
    WEIGHTS_KEY,
    OnnxBackend,
    config_digest,
)
from dermxai.models.bundle import BundleConfig, load_bundle, update_config, weights_digest
from dermxai.models.features import WithFeatures
from dermxai.preprocessing import load_resized, to_batch

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
TOLERANCE = 1e-4
OPSET = 18


class ParityError(ValueError):
    """ONNX Runtime and PyTorch disagree on the exported model."""


@dataclass(frozen=True)
class ExportReport:
    """What was exported and how closely ONNX Runtime matched PyTorch."""

    path: Path
    checked_on: str  # where the parity images came from
    images: int
    max_prob_diff: float
    max_logit_diff: float


def check_images(folder: Path | None, size: tuple[int, int], limit: int = 35) -> tuple[np.ndarray, str]:
    """Up to ``limit`` images from ``folder`` (default: the installed example images)."""
    folder = Path(folder) if folder else EXAMPLES
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not paths:
        raise ValueError(f"{folder}: no .jpg/.jpeg/.png images to check the export on")
    return np.stack([load_resized(str(p), size) for p in paths]), f"{len(paths)} image(s) from {folder}"


def export_onnx(
    bundle_dir: str | Path,
    out: str | Path | None = None,
    images: Path | None = None,
    opset: int = OPSET,
    tolerance: float = TOLERANCE,
) -> ExportReport:
    """Write ``out`` (default ``bundle_dir/model.onnx``) after a passing parity check; raise ``ParityError`` otherwise."""
    bundle_dir = Path(bundle_dir)
    model, config = load_bundle(bundle_dir)
    out = Path(out) if out else bundle_dir / ONNX_NAME
    if opset < 17:
        raise ValueError(f"--opset {opset}: use 17 or later")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f"{out.name}.{os.getpid()}.partial")
    size = config.size
    example = torch.zeros(2, 3, *size)
    layer = config.feature_layer()
    graph = WithFeatures(model, layer).eval() if layer else model
    program = torch.onnx.export(
        graph,
        (example,),
        input_names=["image"],
        output_names=["logits", "features"] if layer else ["logits"],
        opset_version=opset,
        dynamo=True,
        verbose=False,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    program.model.metadata_props.update(
        {
            WEIGHTS_KEY: weights_digest(bundle_dir),
            CONFIG_KEY: config_digest(config),
            "dermxai.arch": config.arch,
            "dermxai.input": f"float32 N x 3 x {size[0]} x {size[1]}, normalised",
        }
    )
    program.save(str(partial))
    try:
        report = _parity(graph, config, partial, images, tolerance)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, out)
    if out == bundle_dir / ONNX_NAME and config.onnx_int8 is not None:
        update_config(bundle_dir, onnx_int8=None)  # the served graph is float32 again
    return ExportReport(out, *report)


def _parity(
    graph: torch.nn.Module, config: BundleConfig, path: Path, folder: Path | None, tolerance: float
) -> tuple[str, int, float, float]:
    """Served probabilities (and gate features, relative to their scale) of ONNX Runtime vs PyTorch."""
    pixels, source = check_images(folder, config.size)
    batch = to_batch(pixels, config).numpy()
    with torch.inference_mode():
        outputs = graph(torch.from_numpy(batch))
    expected, expected_features = (
        (outputs[0].numpy(), outputs[1].numpy()) if isinstance(outputs, tuple) else (outputs.numpy(), None)
    )
    session = OnnxBackend(path)
    parts = [session.outputs(batch[:1]), session.outputs(batch[1:])] if len(batch) > 1 else [session.outputs(batch)]
    got = np.concatenate([logits for logits, _ in parts])
    if expected_features is not None:
        features = np.concatenate([f for _, f in parts])
        feature_diff = float(np.abs(features - expected_features).max() / (np.abs(expected_features).max() + 1e-12))
        if not feature_diff <= 1e-3:
            raise ParityError(
                f"ONNX Runtime and PyTorch gate features disagree on {source}: relative difference "
                f"{feature_diff:.2e} > 1e-3; nothing written"
            )
    prob_diff = float(np.abs(config.served_probabilities(got) - config.served_probabilities(expected)).max())
    logit_diff = float(np.abs(got - expected).max())
    if not prob_diff <= tolerance:  # also catches NaN
        raise ParityError(
            f"ONNX Runtime and PyTorch disagree on {source}: max probability difference "
            f"{prob_diff:.2e} > {tolerance:.0e} (max logit difference {logit_diff:.2e}); nothing written"
        )
    return source, len(batch), prob_diff, logit_diff
