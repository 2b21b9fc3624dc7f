"""CAM latency on the CPU per method, and the app's predict + Grad-CAM path: one forward pass vs two.

Run: python benchmarks/bench_cams.py [--model BUNDLE] [--quick]
Batch 1, a real fixture image at the bundle's input size. Part 1 times every method of
`dermxai.inference.cams.explain`. Part 2 times what the app does per request: probabilities and a Grad-CAM
(a) from the one forward pass `explain` records, vs (b) a PyTorch prediction followed by a separate CAM,
vs (c) an ONNX Runtime prediction followed by a separate CAM. Prints Markdown for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from timing import machine, repeat, spread

from dermxai.export import export_onnx
from dermxai.inference.cams import METHODS, explain
from dermxai.inference.graph import check_images
from dermxai.inference.onnx_backend import OnnxBackend
from dermxai.models.bundle import BundleConfig, load_bundle
from dermxai.preprocessing import to_batch
from dermxai.probabilities import softmax


def app_paths(model: torch.nn.Module, config: BundleConfig, batch: torch.Tensor, onnx: OnnxBackend) -> dict:
    """Each path returns (probabilities, CAM) for one image."""
    temperature, layer = config.temperature, config.target_layer()

    def one_pass():
        cams, logits = explain(model, layer, batch, "gradcam")
        return softmax(logits.numpy(), temperature), cams

    def torch_then_cam():
        with torch.inference_mode():
            probs = softmax(model(batch).numpy(), temperature)
        return probs, explain(model, layer, batch, "gradcam", probs.argmax(1).tolist())[0]

    def onnx_then_cam():
        probs = softmax(onnx.logits(batch.numpy()), temperature)
        return probs, explain(model, layer, batch, "gradcam", probs.argmax(1).tolist())[0]

    return {
        "predict + Grad-CAM from one forward pass (explain)": one_pass,
        "PyTorch predict, then Grad-CAM (two passes)": torch_then_cam,
        "ONNX Runtime predict, then Grad-CAM": onnx_then_cam,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("src/dermxai/assets/default_model"), help="bundle folder")
    parser.add_argument("--iterations", type=int, default=10, help="timed calls per method (ScoreCAM: a fifth)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), help="default: all (--quick: all but ScoreCAM)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="3 timed calls per method, ScoreCAM left out")
    args = parser.parse_args()
    if args.quick:
        args.iterations = 3
    methods = args.methods or [m for m in METHODS if not (args.quick and m == "scorecam")]
    if args.threads:
        torch.set_num_threads(args.threads)
    model, config = load_bundle(args.model)
    layer = config.target_layer()
    pixels, source = check_images(None, config.size, limit=1)
    batch = to_batch(pixels, config)
    print(
        f"Machine: {machine()}. Model: {args.model} ({config.arch}, {config.height}x{config.width}); "
        f"input: {source}, batch 1.\n"
    )
    print("| CAM method | latency ms, median (p5-p95) | relative to Grad-CAM |\n|---|---|---|")
    medians = {}
    for method in ["gradcam", *(m for m in methods if m != "gradcam")]:
        slow = method == "scorecam"  # one forward pass per channel of the target layer
        calls = max(1, args.iterations // 5) if slow else args.iterations
        times = repeat(lambda: explain(model, layer, batch, method), calls, warmup=0 if slow else 1)
        medians[method] = np.median(times)
        print(f"| {method} | {spread(times)} | {medians[method] / medians['gradcam']:.2f}x |", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(shutil.copytree(args.model, Path(folder) / "bundle", ignore=shutil.ignore_patterns("*.onnx")))
        onnx = OnnxBackend(export_onnx(copy).path, threads=torch.get_num_threads())  # same threads as PyTorch
        paths = app_paths(model, config, batch, onnx)
        results = {name: (path(), repeat(path, args.iterations, warmup=1)) for name, path in paths.items()}
    (base_probs, base_cam), base_times = next(iter(results.values()))
    print(
        "\n| app path (probabilities + Grad-CAM of the top class) | latency ms, median (p5-p95) | speed-up vs "
        "two PyTorch passes | max abs prob diff | max abs CAM diff |\n|---|---|---|---|---|"
    )
    two_pass = np.median(results["PyTorch predict, then Grad-CAM (two passes)"][1])
    for name, ((probs, cam), times) in results.items():
        print(
            f"| {name} | {spread(times)} | {two_pass / np.median(times):.2f}x | "
            f"{np.abs(probs - base_probs).max():.1e} | {np.abs(cam - base_cam).max():.1e} |"
        )


if __name__ == "__main__":
    main()
