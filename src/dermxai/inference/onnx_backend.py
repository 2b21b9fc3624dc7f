"""Logits backends for serving: ONNX Runtime when the bundle holds a matching ``model.onnx``, else PyTorch.

Both take a normalised float32 batch (N, 3, H, W) and return float32 logits (N, classes). An exported graph
records the SHA-256 of the ``model.safetensors`` it came from; a stale ``model.onnx`` (weights changed since
export) is ignored, so the two backends can never disagree silently.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import nn

ONNX_NAME = "model.onnx"
WEIGHTS_KEY = "dermxai.weights_sha256"


def weights_digest(bundle_dir: str | Path) -> str:
    """SHA-256 of a bundle's ``model.safetensors``."""
    digest = hashlib.sha256()
    with open(Path(bundle_dir) / "model.safetensors", "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class OnnxBackend:
    """An ONNX Runtime session on the CPU, all graph optimisations on."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX model (write one with `dermxai export`)")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or 0  # 0: one per physical core
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.metadata = self.session.get_modelmeta().custom_metadata_map

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Logits (N, classes) of a normalised float32 batch (N, 3, H, W)."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


class TorchBackend:
    """PyTorch eager on the CPU, under ``inference_mode``."""

    name = "pytorch"

    def __init__(self, model: nn.Module, threads: int | None = None) -> None:
        import torch

        self.model = model.eval()
        if threads:
            torch.set_num_threads(threads)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Logits (N, classes) of a normalised float32 batch (N, 3, H, W)."""
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()


def load_backend(bundle_dir: str | Path, threads: int | None = None, prefer_onnx: bool = True,
                 model: nn.Module | None = None) -> OnnxBackend | TorchBackend:
    """ONNX Runtime on ``bundle_dir/model.onnx`` when present and exported from these weights, else PyTorch eager.

    ``model``: the bundle's PyTorch model when the caller has already loaded it (it is then not loaded again).
    """
    from dermxai.models.bundle import load_bundle

    bundle_dir = Path(bundle_dir)
    onnx_path = bundle_dir / ONNX_NAME
    if prefer_onnx and onnx_path.is_file():
        backend = OnnxBackend(onnx_path, threads)
        if backend.metadata.get(WEIGHTS_KEY) == weights_digest(bundle_dir):
            return backend
        warnings.warn(f"{onnx_path} was not exported from this bundle's weights (re-run `dermxai export`); "
                      "using PyTorch instead", stacklevel=2)
    return TorchBackend(model if model is not None else load_bundle(bundle_dir)[0], threads)
