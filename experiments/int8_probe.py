"""Would int8 ONNX buy the latency an ensemble needs? A probe on validation only.

    python experiments/int8_probe.py BUNDLE [--calibration-images 128] [--reduce-range] [--unsigned-weights]
        [--out FILE.json]

Quantizes the bundle's ``model.onnx`` statically (ONNX Runtime, QDQ, per-channel int8 weights, uint8
activations) with ranges from training images, then compares it with the float32 graph on every validation
image: the served label's agreement, the served balanced accuracy of each (the bundle's decision rule on each
graph's logits, its calibration left as fitted on float32), the largest logit change, and the single-image
latency of the two sessions measured in turns in one run. The test split is not read. ``--reduce-range``:
7-bit weights, whose u8s8 sums cannot saturate on x86 without VNNI (`dermxai export --int8` uses 8 bits);
``--unsigned-weights``: uint8 weights, served by u8u8 kernels that cannot saturate either.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from dermxai.evaluation.evaluate import from_split
from dermxai.evaluation.metrics import balanced_accuracy
from dermxai.evaluation.predict import load_images
from dermxai.inference.onnx_backend import ONNX_NAME
from dermxai.models.bundle import read_config
from dermxai.preprocessing import to_batch
from dermxai.quantize import quantize_graph


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def logits(graph: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
    name = graph.get_inputs()[0].name
    return np.concatenate([graph.run(None, {name: images[i : i + 50]})[0] for i in range(0, len(images), 50)])


def p50_ms(graph: ort.InferenceSession, image: np.ndarray, runs: int) -> float:
    name = graph.get_inputs()[0].name
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        graph.run(None, {name: image})
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ham10000"))
    parser.add_argument("--split", type=Path, default=Path("splits/ham10000_seed0.csv"))
    parser.add_argument("--calibration-images", type=int, default=128)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--reduce-range", action="store_true", help="7-bit weights")
    parser.add_argument("--unsigned-weights", action="store_true", help="uint8 weights (u8u8 kernels)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    config = read_config(args.bundle)
    size = (config.height, config.width)
    train = from_split(args.data, args.split, "train").table.sample(args.calibration_images, random_state=0)
    val = from_split(args.data, args.split, "val").table
    calibration = to_batch(load_images(train, size), config).numpy()
    images = to_batch(load_images(val, size), config).numpy()
    labels = np.array([config.classes.index(dx) for dx in val["dx"]])

    float_graph = session(args.bundle / ONNX_NAME)
    with tempfile.TemporaryDirectory() as folder:
        quantized = Path(folder) / "int8.onnx"
        start = time.perf_counter()
        input_name = float_graph.get_inputs()[0].name
        quantize_graph(
            args.bundle / ONNX_NAME, quantized, calibration, input_name, args.reduce_range, args.unsigned_weights
        )
        quantize_s = time.perf_counter() - start
        int8_graph = session(quantized)
        int8_mib = quantized.stat().st_size / 2**20
    float_logits, int8_logits = logits(float_graph, images), logits(int8_graph, images)
    float_labels, int8_labels = config.served_labels(float_logits), config.served_labels(int8_logits)
    latency = {"float32": [], "int8": []}
    for _ in range(3):  # in turns, so load on the machine falls on both alike
        latency["float32"].append(p50_ms(float_graph, images[:1], args.runs))
        latency["int8"].append(p50_ms(int8_graph, images[:1], args.runs))
    report = {
        "bundle": str(args.bundle),
        "method": "minmax",
        "reduce_range": args.reduce_range,
        "unsigned_weights": args.unsigned_weights,
        "calibration_images": args.calibration_images,
        "val_images": len(images),
        "quantize_s": round(quantize_s, 1),
        "onnx_mib": {"float32": round((args.bundle / ONNX_NAME).stat().st_size / 2**20, 1), "int8": round(int8_mib, 1)},
        "served_label_agreement": round(float((float_labels == int8_labels).mean()), 4),
        "val_bacc_served": {
            "float32": round(balanced_accuracy(labels, float_labels, len(config.classes)), 4),
            "int8": round(balanced_accuracy(labels, int8_labels, len(config.classes)), 4),
        },
        "max_abs_logit_change": round(float(np.abs(float_logits - int8_logits).max()), 3),
        "p50_ms_single_image": {name: round(min(values), 1) for name, values in latency.items()},
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
