"""int8 serving: quantize a bundle's exported graph and prove on validation that it answers as float32 does.

ONNX Runtime's static quantization (QDQ format, per-channel int8 weights, uint8 activations, MinMax ranges from
training images) of the bundle's current float32 ``model.onnx``. The int8 graph replaces it only when, on the
validation images, its served label agrees with the float32 graph's on at least ``min_agreement`` of them and
its served balanced accuracy is at most ``max_drop`` below float32's; otherwise nothing is written. The record
(agreement, both balanced accuracies, the largest logit change, single-image latency of both graphs measured in
turns) joins the bundle's config as ``onnx_int8``. What is fitted afterwards (``calibrate``, ``gate``, ``index``)
and what is evaluated runs on this graph: the figures are those of what is served. A plain ``dermxai export``
writes float32 again and clears the record.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dermxai.evaluation.evaluate import from_split
from dermxai.evaluation.predict import load_images
from dermxai.inference import onnx_backend
from dermxai.inference.onnx_backend import ONNX_NAME, PRECISION_KEY, OnnxBackend, load_backend
from dermxai.models.bundle import read_config, update_config
from dermxai.preprocessing import to_batch
from dermxai.probabilities import balanced_accuracy_of

BATCH = 16


class QuantizationError(ValueError):
    """The int8 graph answers too differently from float32 (or there is no current float32 graph to quantize)."""


@dataclass(frozen=True)
class Agreement:
    """How the int8 graph's served answers compare with float32's on labelled images."""

    label_agreement: float
    bacc_float32: float
    bacc_int8: float
    max_abs_logit_change: float


def compare(config, float_logits: np.ndarray, int8_logits: np.ndarray, labels: np.ndarray) -> Agreement:
    """Served-label agreement, served balanced accuracy of each graph, largest logit change."""
    return Agreement(
        float(np.mean(config.served_labels(float_logits) == config.served_labels(int8_logits))),
        balanced_accuracy_of(config.decision_logits(float_logits), labels),
        balanced_accuracy_of(config.decision_logits(int8_logits), labels),
        float(np.abs(float_logits - int8_logits).max()),
    )


def check_agreement(agreement: Agreement, min_agreement: float, max_drop: float) -> None:
    """Raise ``QuantizationError`` (one line) when the int8 graph misses either bar."""
    if not agreement.label_agreement >= min_agreement:
        raise QuantizationError(
            f"the int8 graph's served label agrees with float32 on {agreement.label_agreement:.1%} of the "
            f"validation images (--min-agreement {min_agreement:.0%}); nothing written"
        )
    if not agreement.bacc_int8 >= agreement.bacc_float32 - max_drop:
        raise QuantizationError(
            f"the int8 graph's validation balanced accuracy {agreement.bacc_int8:.3f} is more than {max_drop} "
            f"below float32's {agreement.bacc_float32:.3f} (--max-drop); nothing written"
        )


def _logits(backend: OnnxBackend, images: np.ndarray) -> np.ndarray:
    return np.concatenate([backend.logits(images[i : i + 50]) for i in range(0, len(images), 50)])


def _p50_ms(backends: dict[str, OnnxBackend], image: np.ndarray, runs: int = 20, rounds: int = 3) -> dict[str, float]:
    """Single-image median latency of each backend, measured in turns so a change of load falls on all alike."""
    times: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(rounds):
        for name, backend in backends.items():
            backend.logits(image)  # warm-up
            for _ in range(runs):
                start = time.perf_counter()
                backend.logits(image)
                times[name].append(time.perf_counter() - start)
    return {name: round(1000 * float(np.median(values)), 2) for name, values in times.items()}


def quantize_graph(
    source: Path,
    target: Path,
    calibration: np.ndarray,
    input_name: str,
    reduce_range: bool = False,
    unsigned_weights: bool = False,
) -> None:
    """Static QDQ quantization of ``source`` into ``target``, activation ranges from ``calibration`` (normalised
    float32 NCHW batches under the graph input ``input_name``); ``reduce_range``: 7-bit weights (exact on every
    x86 CPU, less precise: `experiments/int8_probe.py --reduce-range`; `export --int8` uses 8 bits);
    ``unsigned_weights``: uint8 weights (u8u8 kernels, which widen to 16 bits before they multiply)."""
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as error:  # onnxruntime's quantization tools need the onnx package
        raise QuantizationError(
            f"int8 export needs onnx ({error.name} missing): pip install 'dermxai[export]'"
        ) from None

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.start = 0

        def get_next(self) -> dict | None:
            if self.start >= len(calibration):
                return None
            batch = {input_name: calibration[self.start : self.start + BATCH]}
            self.start += BATCH
            return batch

    prepared = target.with_name("prepared.onnx")
    quant_pre_process(str(source), str(prepared))
    quantize_static(
        str(prepared),
        str(target),
        Batches(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QUInt8 if unsigned_weights else QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        reduce_range=reduce_range,
    )


def _copy_metadata(source: Path, target: Path) -> None:
    """The float32 graph's dermxai metadata (weights and config digests) onto the int8 graph, marked int8."""
    import onnx

    metadata = {p.key: p.value for p in onnx.load(str(source), load_external_data=False).metadata_props}
    model = onnx.load(str(target))
    del model.metadata_props[:]
    for key, value in {**metadata, PRECISION_KEY: "int8"}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(target))


def quantize_bundle(
    bundle: str | Path,
    calibration: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    *,
    min_agreement: float = 0.9,
    max_drop: float = 0.01,
    source: dict | None = None,
) -> dict:
    """Replace ``bundle/model.onnx`` by its int8 graph when it passes the agreement bars; the record written.

    ``calibration`` and ``val_images``: normalised float32 batches (N, 3, H, W) of training and validation images;
    ``val_labels``: class indices of the validation images; ``source``: where they came from (recorded).
    """
    bundle = Path(bundle)
    if not 0 <= min_agreement <= 1 or not 0 <= max_drop <= 1:
        raise QuantizationError("--min-agreement and --max-drop must be between 0 and 1")
    if len(calibration) == 0 or len(val_images) == 0:
        raise QuantizationError("int8 export needs training images (ranges) and validation images (the check)")
    if not onnx_backend.int8_kernels_exact():  # the check would measure saturation, not the graph
        raise QuantizationError(
            "this CPU's int8 kernels can saturate (x86 without VNNI), so the int8 graph cannot be checked here: "
            "export --int8 on a CPU with VNNI (avx512_vnni or avx_vnni) or off x86"
        )
    float_graph = load_backend(bundle)
    if not isinstance(float_graph, OnnxBackend):
        raise QuantizationError(f"{bundle} has no current model.onnx: run `dermxai export` first")
    if float_graph.precision == "int8":
        raise QuantizationError(f"{bundle}/{ONNX_NAME} is already int8: run `dermxai export` to write float32 again")
    config = read_config(bundle)
    with tempfile.TemporaryDirectory(dir=bundle) as folder:
        quantized = Path(folder) / ONNX_NAME
        start = time.perf_counter()
        quantize_graph(bundle / ONNX_NAME, quantized, calibration, float_graph.input_name)
        _copy_metadata(bundle / ONNX_NAME, quantized)
        quantize_s = time.perf_counter() - start
        int8_graph = OnnxBackend(quantized)
        agreement = compare(config, _logits(float_graph, val_images), _logits(int8_graph, val_images), val_labels)
        check_agreement(agreement, min_agreement, max_drop)
        latency = _p50_ms({"float32": float_graph, "int8": int8_graph}, val_images[:1])
        record = {
            "method": "ONNX Runtime static quantization: QDQ, per-channel int8 weights, uint8 activations, MinMax",
            "calibration_images": len(calibration),
            "val_images": len(val_images),
            "val_label_agreement": round(agreement.label_agreement, 4),
            "val_bacc_served": {"float32": round(agreement.bacc_float32, 4), "int8": round(agreement.bacc_int8, 4)},
            "max_abs_logit_change": round(agreement.max_abs_logit_change, 3),
            "p50_ms_graph_single_image": latency,
            "onnx_mib": {
                "float32": round((bundle / ONNX_NAME).stat().st_size / 2**20, 1),
                "int8": round(quantized.stat().st_size / 2**20, 1),
            },
            "min_agreement": min_agreement,
            "max_drop": max_drop,
            "quantize_s": round(quantize_s, 1),
            **({"source": source} if source else {}),
        }
        del float_graph, int8_graph
        os.replace(quantized, bundle / ONNX_NAME)
    update_config(bundle, onnx_int8=record)
    return record


def quantize_on_split(
    bundle: str | Path,
    data: Path,
    split: Path,
    *,
    images: Path | None = None,
    calibration_images: int = 128,
    min_agreement: float = 0.9,
    max_drop: float = 0.01,
) -> dict:
    """:func:`quantize_bundle` with ranges from ``calibration_images`` training images of ``split`` (a fixed
    sample) and the agreement checked on all its validation images; the test images are not read."""
    if calibration_images < 1:
        raise QuantizationError("--calibration-images must be at least 1")
    config = read_config(bundle)
    train = from_split(data, split, "train", images).table
    train = train.sample(min(calibration_images, len(train)), random_state=0)
    val = from_split(data, split, "val", images).table
    unknown = sorted(set(val["dx"]) - set(config.classes))
    if unknown:
        raise QuantizationError(f"validation labels {', '.join(unknown)} are not among the model's classes")
    return quantize_bundle(
        bundle,
        to_batch(load_images(train, config.size), config).numpy(),
        to_batch(load_images(val, config.size), config).numpy(),
        val["dx"].map(list(config.classes).index).to_numpy(),
        min_agreement=min_agreement,
        max_drop=max_drop,
        source={"data": str(data), "split": str(split), "calibration_subset": "train", "checked_on": "val"},
    )
