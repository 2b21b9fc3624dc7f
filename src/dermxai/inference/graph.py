"""A bundle's model as an ONNX graph: write it (dynamic batch axis, the bundle's digests in its metadata) and prove
on real images that ONNX Runtime agrees with PyTorch.

`dermxai export` writes a bundle's own ``model.onnx`` with these. Where a bundle's graph is int8 but this CPU's int8
kernels are not exact (:func:`~dermxai.inference.onnx_backend.int8_kernels_exact`), :func:`cached_float_graph`
writes a float32 graph of the same weights once into the user's cache, so the bundle is served by ONNX Runtime
rather than PyTorch eager (v6 on a 2-core AMD EPYC without VNNI: p50 62 ms against 253 ms).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from dermxai.assets import EXAMPLES
from dermxai.inference.onnx_backend import CONFIG_KEY, WEIGHTS_KEY, OnnxBackend, config_digest, float_graph_path
from dermxai.models.bundle import BundleConfig, weights_digest
from dermxai.models.features import WithFeatures
from dermxai.preprocessing import load_resized, to_batch

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
TOLERANCE = 1e-4  # served probabilities, ONNX Runtime vs PyTorch
OPSET = 18


class ParityError(ValueError):
    """ONNX Runtime and PyTorch disagree on the exported model."""


def check_images(folder: Path | None, size: tuple[int, int], limit: int = 35) -> tuple[np.ndarray, str]:
    """Up to ``limit`` images from ``folder`` (default: the installed example images)."""
    folder = Path(folder) if folder else EXAMPLES
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not paths:
        raise ValueError(f"{folder}: no .jpg/.jpeg/.png images to check the export on")
    return np.stack([load_resized(str(p), size) for p in paths]), f"{len(paths)} image(s) from {folder}"


def served_graph(model: torch.nn.Module, config: BundleConfig) -> torch.nn.Module:
    """What the graph computes: the model, with the gate layer's features as a second output when it has one."""
    layer = config.feature_layer()
    return WithFeatures(model, layer).eval() if layer else model.eval()


def write_graph(graph: torch.nn.Module, config: BundleConfig, bundle_dir: Path, path: Path, opset: int = OPSET) -> None:
    """``graph`` (from :func:`served_graph`) as ONNX at ``path``, stamped with the bundle's weight and config digests."""
    if opset < 17:
        raise ValueError(f"--opset {opset}: use 17 or later")
    program = torch.onnx.export(
        graph,
        (torch.zeros(2, 3, *config.size),),
        input_names=["image"],
        output_names=["logits", "features"] if config.feature_layer() else ["logits"],
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
            "dermxai.input": f"float32 N x 3 x {config.size[0]} x {config.size[1]}, normalised",
        }
    )
    program.save(str(path))


def check_parity(
    graph: torch.nn.Module, config: BundleConfig, path: Path, folder: Path | None = None, tolerance: float = TOLERANCE
) -> tuple[str, int, float, float]:
    """Served probabilities (and gate features, relative to their scale) of ONNX Runtime at ``path`` vs PyTorch,
    at batch size 1 and the full batch; returns (source, images, max probability diff, max logit diff)."""
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


def cached_float_graph(bundle_dir: Path, model: torch.nn.Module, config: BundleConfig) -> Path | None:
    """The bundle's float32 graph at :func:`float_graph_path`, written and parity-checked on first use (one
    process at a time: others wait for it and reuse it); None, with a warning, if it cannot be written (the
    caller then serves PyTorch). Writing it needs the ``export`` extra (onnx, onnxscript)."""
    path = float_graph_path(bundle_dir, config)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(path.with_suffix(".lock")):
            if path.is_file():
                return path
            warnings.warn(
                f"this CPU does not serve int8: writing a float32 graph of {bundle_dir} to {path}, once", stacklevel=3
            )
            graph = served_graph(model, config)
            write_graph(graph, config, bundle_dir, partial)
            check_parity(graph, config, partial)
            os.replace(partial, path)
    except Exception as error:  # an unwritable cache, a missing exporter dependency, a failed parity check
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        warnings.warn(f"no float32 graph for {bundle_dir} ({type(error).__name__}: {error})", stacklevel=3)
        return None
    return path
