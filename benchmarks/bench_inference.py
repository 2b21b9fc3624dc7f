"""CPU inference speed per backbone: PyTorch eager variants vs ONNX Runtime, same images, same run.

Run: python benchmarks/bench_inference.py [--quick] [--sizes 150x200 224x224] [--arch resnet18 ...]
For each backbone (random weights: speed does not depend on them) it writes a temporary bundle, exports it
with `dermxai export` (which itself checks parity on the fixture), and times batch-1 latency and batch-32
throughput on real fixture images for each variant. Every variant's probabilities are compared with the
plain approach (eager fp32 under no_grad, torch's default threads). Prints Markdown for benchmarks/RESULTS.md.
Quantisation is not benchmarked: int8 would need a test-split accuracy check (within 0.5 points) first.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from timing import machine, repeat, spread

from dermxai.data.labels import CLASSES
from dermxai.export import check_images, export_onnx
from dermxai.inference.onnx_backend import OnnxBackend
from dermxai.models.bundle import BundleConfig, save_bundle
from dermxai.models.registry import create_model
from dermxai.preprocessing import to_batch
from dermxai.probabilities import softmax

ARCHS = ("resnet18", "densenet121", "efficientnet_b0", "efficientnet_lite0")
Logits = Callable[[np.ndarray], np.ndarray]


def eager(model: torch.nn.Module, threads: int, context, channels_last: bool = False) -> Callable[[], Logits]:
    """A setup function: sets torch's threads, returns a logits function using ``context`` (no_grad/inference_mode)."""

    def setup() -> Logits:
        torch.set_num_threads(threads)
        net = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

        def logits(batch: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(batch)
            with context():
                return net(x.contiguous(memory_format=torch.channels_last) if channels_last else x).numpy()

        return logits

    return setup


def onnx(path: Path, threads: int) -> Callable[[], Logits]:
    return lambda: OnnxBackend(path, threads).logits


def bundle_for(arch: str, size: tuple[int, int], folder: Path) -> tuple[torch.nn.Module, BundleConfig]:
    torch.manual_seed(0)
    model, entry = create_model(arch, weights="none", num_classes=len(CLASSES))
    config = BundleConfig(
        arch, tuple(CLASSES), *size, entry.mean, entry.std, weights="none", split_fingerprint="benchmark"
    )
    save_bundle(folder, model, config, note="random weights, for timing only")
    return model.eval(), config


def bench_arch(arch: str, size: tuple[int, int], args: argparse.Namespace, folder: Path) -> list[str]:
    model, config = bundle_for(arch, size, folder)
    start = time.perf_counter()
    export = export_onnx(folder)
    export_s = time.perf_counter() - start
    pixels, _ = check_images(None, size)
    batch = to_batch(np.resize(pixels, (args.batch, *pixels.shape[1:])), config).numpy()  # fixture, repeated
    cores, default_threads = os.cpu_count() or 1, torch.get_num_threads()
    variants = {
        f"eager fp32, no_grad, {default_threads} threads (plain)": eager(model, default_threads, torch.no_grad),
        f"eager + channels_last, {default_threads} threads": eager(model, default_threads, torch.no_grad, True),
        "eager + inference_mode, 1 thread": eager(model, 1, torch.inference_mode),
        f"eager + inference_mode, {cores} threads": eager(model, cores, torch.inference_mode),
        "ONNX Runtime (ORT_ENABLE_ALL), 1 thread": onnx(export.path, 1),
        f"ONNX Runtime (ORT_ENABLE_ALL), {cores} threads": onnx(export.path, cores),
    }
    rows, base = [], None
    for name, setup in variants.items():
        logits = setup()
        probs = softmax(logits(batch), 1.0)  # also the batch warm-up
        single = repeat(lambda: logits(batch[:1]), args.iterations, warmup=2)
        bulk = repeat(lambda: logits(batch), args.batch_iterations, warmup=0)
        torch.set_num_threads(default_threads)
        base = base or (probs, np.median(single), np.median(bulk))
        throughput = args.batch / bulk
        rows.append(
            f"| {arch} {size[0]}x{size[1]} | {name} | {spread(single)} | {base[1] / np.median(single):.2f}x | "
            f"{np.median(throughput):,.0f} ({throughput.min():,.0f}-{throughput.max():,.0f}) | "
            f"{base[2] / np.median(bulk):.2f}x | {np.abs(probs - base[0]).max():.1e} |"
        )
    print(
        f"<!-- {arch}: export + parity check {export_s:.1f} s, parity max |dp| {export.max_prob_diff:.1e} -->",
        flush=True,
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=list(ARCHS))
    parser.add_argument("--sizes", nargs="+", default=["150x200"], help="HxW input sizes, e.g. 150x200 224x224")
    parser.add_argument("--iterations", type=int, default=20, help="timed batch-1 calls per variant")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batch-iterations", type=int, default=3, help="timed batch calls per variant")
    parser.add_argument("--quick", action="store_true", help="5 batch-1 calls and 1 batch call per variant")
    args = parser.parse_args()
    if args.quick:
        args.iterations, args.batch_iterations = 5, 1
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    print(
        f"Machine: {machine()}. Random weights; inputs: the fixture's real images resized to the bundle size; "
        f"{args.iterations} batch-1 calls and {args.batch_iterations} batch-{args.batch} calls per variant.\n"
    )
    print(
        f"| backbone | variant | batch-1 latency ms, median (p5-p95) | latency speed-up | "
        f"batch-{args.batch} images/s, median (min-max) | throughput speed-up | max abs prob diff vs plain |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for size in sizes:
            for arch in args.arch:
                for row in bench_arch(arch, size, args, Path(folder) / f"{arch}_{size[0]}x{size[1]}"):
                    print(row, flush=True)


if __name__ == "__main__":
    main()
