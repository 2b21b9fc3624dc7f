"""Export a bundle to ONNX (dynamic batch axis) and prove, at export time, that ONNX Runtime agrees with PyTorch.

The parity check (``inference/graph.py``) runs both on real images (the installed examples by default) at batch
size 1 and at the full batch, and compares served probabilities (decision rule and temperature of the bundle). A
graph that disagrees by more than the tolerance is deleted and the export fails.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dermxai.inference.graph import OPSET, TOLERANCE, check_parity, served_graph, write_graph
from dermxai.inference.onnx_backend import ONNX_NAME
from dermxai.models.bundle import load_bundle, update_config


@dataclass(frozen=True)
class ExportReport:
    """What was exported and how closely ONNX Runtime matched PyTorch."""

    path: Path
    checked_on: str  # where the parity images came from
    images: int
    max_prob_diff: float
    max_logit_diff: float


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
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f"{out.name}.{os.getpid()}.partial")
    graph = served_graph(model, config)
    write_graph(graph, config, bundle_dir, partial, opset)
    try:
        report = check_parity(graph, config, partial, images, tolerance)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, out)
    if out == bundle_dir / ONNX_NAME and config.onnx_int8 is not None:
        update_config(bundle_dir, onnx_int8=None)  # the served graph is float32 again
    return ExportReport(out, *report)
