"""Logits backends for serving: ONNX Runtime when the bundle holds a matching ``model.onnx``, else PyTorch.

Both take a normalised float32 batch (N, 3, H, W) and return float32 logits (N, classes) and, when the
bundle has an out-of-distribution gate layer, the gate's features (N, D) from the same pass. An exported graph
records the SHA-256 of the ``model.safetensors`` it came from and of the config fields that shape its input
and output; a stale ``model.onnx`` (weights or config changed since export) or an unreadable one is ignored
with a warning, and a graph whose outputs disagree with the bundle's classes is refused, so the two backends
can never disagree silently. An int8 graph is served only where ONNX Runtime's int8 kernels are exact (see
:func:`int8_kernels_exact`); elsewhere a float32 graph of the same weights, written once into the user's cache
(``inference/graph.py``), serves, and PyTorch only if that cannot be written.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dermxai.models.bundle import weights_digest

if TYPE_CHECKING:
    from torch import nn

    from dermxai.models.bundle import BundleConfig

ONNX_NAME = "model.onnx"
WEIGHTS_KEY = "dermxai.weights_sha256"
CONFIG_KEY = "dermxai.config_sha256"
PRECISION_KEY = "dermxai.precision"  # "int8" on a graph written by `dermxai export --int8`; absent: float32
GRAPH_FIELDS = ("arch", "classes", "height", "width", "mean", "std", "gate_layer")
X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def int8_kernels_exact(machine: str | None = None, cpuinfo: str | None = None) -> bool:
    """Whether ONNX Runtime's int8 (u8s8) kernels compute the quantized graph exactly on this CPU.

    On x86 without VNNI they can saturate 16-bit sums (ONNX Runtime's quantization guide); on a 2-core AMD EPYC
    without AVX-512 that moved the shipped int8 graph's logits by up to 3.6 and changed 1 label in 10. x86 with
    VNNI (``avx512_vnni`` or ``avx_vnni`` in /proc/cpuinfo) and non-x86 CPUs are exact; an x86 CPU whose flags
    cannot be read counts as inexact.
    """
    machine = (machine or platform.machine()).lower()
    if machine not in X86:
        return True
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    return "vnni" in cpuinfo


def config_digest(config: BundleConfig) -> str:
    """SHA-256 of the config fields an exported graph depends on (as stored: unset is null)."""
    fields = {key: getattr(config, key) for key in GRAPH_FIELDS}
    if config.members is not None:  # only where set, so the digests of single-model bundles stay as they were
        fields |= {"members": config.members, "flip_tta": bool(config.flip_tta)}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def graph_cache() -> Path:
    """Where float32 graphs written for serving live: ``$XDG_CACHE_HOME/dermxai/graphs`` (or ``~/.cache/...``)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dermxai" / "graphs"


def float_graph_path(bundle_dir: Path, config: BundleConfig) -> Path:
    """Where :func:`cached_float_graph` keeps the bundle's float32 graph: named by its weight and config digests,
    so changed weights or config get a new one."""
    return graph_cache() / f"{weights_digest(bundle_dir)[:16]}-{config_digest(config)[:16]}.onnx"


class OnnxBackend:
    """An ONNX Runtime session on the CPU, all graph optimisations on; ``name`` says "onnxruntime-int8" for an
    int8 graph (``dermxai export --int8``)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX model (write one with `dermxai export`)")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or 0  # 0: one per physical core
        options.inter_op_num_threads = 1
        # Idle worker threads sleep instead of spinning: a spinning pool holds the cores that a heatmap
        # (PyTorch) or another request needs, which is what made /predict's p99 rise beside /explain.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.metadata = self.session.get_modelmeta().custom_metadata_map
        self.precision = self.metadata.get(PRECISION_KEY, "float32")
        self.name = "onnxruntime-int8" if self.precision == "int8" else "onnxruntime"

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits (N, classes) and gate features (N, D) or None, of a normalised float32 batch (N, 3, H, W)."""
        results = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return results[0], (results[1] if len(results) > 1 else None)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Logits (N, classes) of a normalised float32 batch (N, 3, H, W)."""
        return self.outputs(batch)[0]


class TorchBackend:
    """PyTorch eager on the CPU, under ``inference_mode``; gate features when ``gate_layer`` is given."""

    name = "pytorch"

    def __init__(self, model: nn.Module, threads: int | None = None, gate_layer: str | None = None) -> None:
        import torch

        from dermxai.models.features import WithFeatures

        self.model = model.eval()
        self.with_features = WithFeatures(self.model, gate_layer).eval() if gate_layer else None
        if threads:
            torch.set_num_threads(threads)

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits (N, classes) and gate features (N, D) or None, of a normalised float32 batch (N, 3, H, W)."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            if self.with_features is None:
                return self.model(x).numpy(), None
            logits, features = self.with_features(x)
            return logits.numpy(), features.numpy()

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Logits (N, classes) of a normalised float32 batch (N, 3, H, W)."""
        return self.outputs(batch)[0]


def load_backend(
    bundle_dir: str | Path, threads: int | None = None, prefer_onnx: bool = True, model: nn.Module | None = None
) -> OnnxBackend | TorchBackend:
    """ONNX Runtime on ``bundle_dir/model.onnx`` when present and exported from these weights, else PyTorch eager.

    ``model``: the bundle's PyTorch model when the caller has already loaded it (it is then not loaded again).
    The PyTorch backend returns the gate features of the architecture's gate layer; the ONNX one those of
    the graph (none when it was exported without them). Only the PyTorch path imports torch.
    """
    from dermxai.models.bundle import BundleError, load_bundle, read_config

    bundle_dir = Path(bundle_dir)
    onnx_path = bundle_dir / ONNX_NAME
    if prefer_onnx and onnx_path.is_file():
        config = read_config(bundle_dir)
        try:
            backend = OnnxBackend(onnx_path, threads)
        except Exception as error:  # onnxruntime raises its own exception types for unreadable graphs
            warnings.warn(f"{onnx_path} cannot be read ({type(error).__name__}); using PyTorch instead", stacklevel=2)
        else:
            width = backend.session.get_outputs()[0].shape[-1]
            if isinstance(width, int) and width != len(config.classes):
                raise BundleError(
                    f"{onnx_path} outputs {width} classes but config.json names "
                    f"{len(config.classes)}; re-export the bundle with `dermxai export`"
                )
            matches = backend.metadata.get(WEIGHTS_KEY) == weights_digest(bundle_dir) and backend.metadata.get(
                CONFIG_KEY
            ) == config_digest(config)
            if not matches:
                warnings.warn(
                    f"{onnx_path} was not exported from this bundle's weights and config (re-run "
                    "`dermxai export`); using PyTorch instead",
                    stacklevel=2,
                )
            elif backend.precision == "int8" and not int8_kernels_exact():
                graph = float_graph_path(bundle_dir, config)
                if not graph.is_file():  # written once; torch is imported only then
                    from dermxai.inference.graph import cached_float_graph

                    if model is None:
                        model, config = load_bundle(bundle_dir)
                    graph = cached_float_graph(bundle_dir, model, config)
                if graph is not None:
                    try:
                        return OnnxBackend(graph, threads)
                    except Exception as error:  # a cached graph that ONNX Runtime cannot read
                        warnings.warn(f"{graph} cannot be read ({type(error).__name__})", stacklevel=2)
                warnings.warn(
                    f"{onnx_path} is int8 and this CPU has no VNNI, where ONNX Runtime's int8 kernels can "
                    "saturate; using the float weights in PyTorch instead",
                    stacklevel=2,
                )
            else:
                return backend
    if model is None:
        model, config = load_bundle(bundle_dir)
    else:
        config = read_config(bundle_dir)
    return TorchBackend(model, threads, config.feature_layer())
