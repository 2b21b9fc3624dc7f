"""Training throughput (images/s): the plain approach vs this project's data path, in one run.

Run (CPU):  python benchmarks/bench_train.py --data ../shared/data/ham10000 [--quick]
Run (GPU):  python benchmarks/bench_train.py --data ../shared/data/ham10000 --device cuda
Run (precision): python benchmarks/bench_train.py --precision-compare --data ../shared/data/ham10000
    prints one JSON line: today's fp32 channels-first step vs the default step of `dermxai train`
    (``--precision auto`` + channels_last), full step with augmentation on real images, chunks interleaved.
Two parts, each with its ratio:
1. Data path alone: decode every JPEG each epoch (DataLoader) vs the uint8 memmap cache (bench_cache.py).
2. Full training step (augment + forward + backward + AdamW) on a bounded number of batches:
   - plain: ImageFolder-style DataLoader decoding and augmenting each JPEG on the CPU, batches copied to the device;
   - resident: the whole uint8 dataset on the device, batches drawn and augmented there (training/augment.py).
   CPU default: efficientnet_lite0 at 150x200, batch 32, fp32. GPU default: resnet18, densenet121 and
   efficientnet_b0 at 224x224, batch 256, AMP (fp16 + GradScaler) and channels_last, compared with timm's
   published RTX 3090 training figures. Random weights: speed does not depend on them.
Prints Markdown for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from bench_cache import cached_epoch, plain_epoch
from PIL import Image
from timing import machine, repeat, spread
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision.transforms import v2

from dermxai.data import load_dataset
from dermxai.data.cache import build_cache
from dermxai.data.labels import CLASSES
from dermxai.models.registry import create_model
from dermxai.training.augment import augment_batch
from dermxai.training.config import AugmentConfig
from dermxai.training.precision import resolve_precision

AUTOCAST = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}

# timm's published training throughput (img/s), RTX 3090, AMP, channels_last, 224 px, synthetic data on the GPU,
# batch 512 (densenet121: 256): huggingface/pytorch-image-models results/benchmark-train-amp-nhwc-pt112-cu113-rtx3090.csv
TIMM_RTX3090 = {"resnet18": 3482, "efficientnet_b0": 1752, "densenet121": 914}


class DecodeAndAugment(Dataset):
    """The plain approach: open, decode, randomly crop/flip/jitter each JPEG whenever it is read."""

    def __init__(self, paths: list[str], labels: np.ndarray, size: tuple[int, int]) -> None:
        self.paths, self.labels = paths, labels
        self.transform = v2.Compose(
            [
                v2.RandomResizedCrop(size, scale=(0.64, 1.0), antialias=True),
                v2.RandomHorizontalFlip(),
                v2.RandomVerticalFlip(),
                v2.ColorJitter(0.2, 0.2, 0.2),
                v2.PILToTensor(),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB")), int(self.labels[index])


class Stepper:
    """One optimisation step on a uint8 batch: to float, augment (resident only), normalise, AMP forward/backward."""

    def __init__(
        self, arch: str, device: torch.device, amp: bool, channels_last: bool, autocast: torch.dtype | None = None
    ) -> None:
        torch.manual_seed(0)
        model, entry = create_model(arch, weights="none", num_classes=len(CLASSES))
        self.format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(device, memory_format=self.format).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.autocast = torch.float16 if amp else autocast
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.autocast == torch.float16)
        self.device = device
        self.mean = torch.tensor(entry.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(entry.std, device=device).view(1, 3, 1, 1)
        self.generator = torch.Generator(device=device).manual_seed(0)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, augment: bool) -> None:
        """``images``: uint8 (N, 3, H, W) on the device."""
        x = images.float().div_(255)
        if augment:
            x = augment_batch(x, AugmentConfig(), self.generator)
        x = ((x - self.mean) / self.std).contiguous(memory_format=self.format)
        with torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            loss = F.cross_entropy(self.model(x), labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()


def timed_steps(batches, step, chunks: int, steps: int, warmup: int, sync) -> np.ndarray:
    """Seconds per chunk of ``steps // chunks`` steps after ``warmup`` steps (synchronised at chunk ends only)."""
    for _ in range(warmup):
        step(*next(batches))
    sync()
    times = []
    for _ in range(chunks):
        start = time.perf_counter()
        for _ in range(steps // chunks):
            step(*next(batches))
        sync()
        times.append(time.perf_counter() - start)
    return np.array(times)


def resident_batches(images: torch.Tensor, labels: torch.Tensor, batch: int):
    """Random batches indexed on the device from the whole uint8 dataset held there (N, 3, H, W)."""
    generator = torch.Generator(device=images.device).manual_seed(1)
    while True:
        rows = torch.randint(0, len(images), (batch,), device=images.device, generator=generator)
        yield images[rows], labels[rows]


def loader_batches(dataset: Dataset, batch: int, total: int, workers: int, device: torch.device):
    """Random batches from a worker DataLoader, copied to the device (pinned memory on a GPU)."""
    sampler = RandomSampler(
        dataset, replacement=True, num_samples=total * batch, generator=torch.Generator().manual_seed(1)
    )
    loader = DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    for images, labels in loader:
        yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


def data_path(table, size: tuple[int, int], cache_images: np.ndarray, args: argparse.Namespace) -> None:
    n = len(table)
    plain = repeat(lambda: plain_epoch(table["path"].tolist(), size, 64, args.workers), args.repeats, warmup=0)
    cached = repeat(lambda: cached_epoch(cache_images, 64), args.repeats, warmup=0)
    print(f"### Data path alone ({n} images at {size[0]}x{size[1]}, batch 64, {args.repeats} epoch(s) each)\n")
    print("| data path | epoch s, median (p5-p95) | images/s (median) | speed-up |\n|---|---|---|---|")
    for name, times in (
        (f"decode every epoch (DataLoader, {args.workers} workers)", plain),
        ("uint8 memmap cache", cached),
    ):
        median = np.median(times)
        print(f"| {name} | {spread(times, 1.0, 2)} | {n / median:,.0f} | {np.median(plain) / median:.1f}x |")
    print(flush=True)


def training(
    table, labels: np.ndarray, cache_images: np.ndarray, args: argparse.Namespace, device: torch.device
) -> None:
    size, cuda = (args.height, args.width), device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    resident = torch.from_numpy(np.array(cache_images)).to(device).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
    resident_labels = torch.as_tensor(labels, device=device)
    dataset = DecodeAndAugment(table["path"].tolist(), labels, size)
    print(
        f"### Training step ({args.steps} timed steps after {args.warmup} warm-up, batch {args.batch}, "
        f"{size[0]}x{size[1]}, {'AMP fp16 + channels_last' if cuda else 'fp32'}, AdamW, {device.type})\n"
    )
    header = "| backbone | data path | images/s, median over chunks (min-max) | speed-up |"
    print(header + (" timm RTX 3090 img/s | ours / timm |" if cuda else "") + "\n" + "|---" * (6 if cuda else 4) + "|")
    for arch in args.arch:
        results = {}
        for name in (
            "plain DataLoader (decode + CPU augment per image)",
            "device-resident uint8 + batch augment on device",
        ):
            step = Stepper(arch, device, amp=cuda, channels_last=cuda)
            if name.startswith("plain"):
                batches = loader_batches(dataset, args.batch, args.steps + args.warmup, args.workers, device)
                run = lambda images, y: step(images, y, augment=False)  # noqa: E731, F821 - augmented by the workers
            else:
                batches = resident_batches(resident, resident_labels, args.batch)
                run = lambda images, y: step(images, y, augment=True)  # noqa: E731, F821
            chunk_s = timed_steps(batches, run, args.chunks, args.steps, args.warmup, sync)
            results[name] = args.batch * (args.steps // args.chunks) / chunk_s
            del step, batches
            if cuda:
                torch.cuda.empty_cache()
        base = np.median(next(iter(results.values())))
        for name, rate in results.items():
            median = np.median(rate)
            row = f"| {arch} | {name} | {median:,.0f} ({rate.min():,.0f}-{rate.max():,.0f}) | {median / base:.2f}x |"
            if cuda:
                ref = TIMM_RTX3090.get(arch)
                row += f" {ref:,} | {median / ref:.2f}x |" if ref else " - | - |"
            print(row, flush=True)
    if cuda:
        print(
            f"\nPeak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB (dataset resident: "
            f"{resident.numel() / 2**30:.2f} GiB uint8)"
        )


def precision_compare(cache_images: np.ndarray, labels: np.ndarray, args: argparse.Namespace) -> dict:
    """fp32 channels-first vs the default precision + channels_last, augmented steps, chunks interleaved."""
    images = torch.from_numpy(np.array(cache_images)).permute(0, 3, 1, 2).contiguous()
    targets = torch.as_tensor(labels)
    fast_precision = resolve_precision("auto", gpu=False)
    variants = {
        "fp32": Stepper(args.arch[0], torch.device("cpu"), False, channels_last=False),
        "fast": Stepper(args.arch[0], torch.device("cpu"), False, True, AUTOCAST[fast_precision]),
    }
    batches = resident_batches(images, targets, args.batch)
    per_chunk = max(1, args.steps // args.chunks)
    for step in variants.values():
        timed_steps(batches, lambda x, y: step(x, y, augment=True), 1, 0, args.warmup, lambda: None)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.chunks):
        for name, step in variants.items():
            seconds = timed_steps(batches, lambda x, y: step(x, y, augment=True), 1, per_chunk, 0, lambda: None)
            rates[name].append(args.batch * per_chunk / float(seconds[0]))
    fp32, fast = float(np.median(rates["fp32"])), float(np.median(rates["fast"]))
    return {
        "fp32_img_s": round(fp32, 1),
        "fast_img_s": round(fast, 1),
        "speedup": round(fast / fp32, 2),
        "fast_precision": fast_precision,
        "arch": args.arch[0],
        "size": [args.height, args.width],
        "batch": args.batch,
        "steps_per_variant": per_chunk * args.chunks,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ham10000")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--arch", nargs="+", help="default: efficientnet_lite0 (cpu); resnet18 densenet121 efficientnet_b0 (cuda)"
    )
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--batch", type=int, help="default 32 (cpu), 256 (cuda)")
    parser.add_argument("--steps", type=int, help="timed training steps per variant (default 10 cpu, 100 cuda)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 2 cpu, 15 cuda)")
    parser.add_argument(
        "--chunks", type=int, default=5, help="timed steps are split into this many chunks for the spread"
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers of the plain paths"
    )
    parser.add_argument("--limit", type=int, help="use only the first N images (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="epochs per data path in part 1")
    parser.add_argument("--quick", action="store_true", help="256 images, 1 data-path epoch, 2 timed steps")
    parser.add_argument(
        "--precision-compare",
        action="store_true",
        help="only fp32 channels-first vs the default fast step (CPU); one JSON line",
    )
    args = parser.parse_args()
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU visible to torch")
    defaults = dict(
        arch=["resnet18", "densenet121", "efficientnet_b0"] if cuda else ["efficientnet_lite0"],
        height=224 if cuda else 150,
        width=224 if cuda else 200,
        batch=256 if cuda else 32,
        steps=100 if cuda else 10,
        warmup=15 if cuda else 2,
    )
    if args.quick:
        defaults.update(steps=2, warmup=1, limit=256)
        args.repeats, args.chunks = 1, 1
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.chunks = max(1, min(args.chunks, args.steps))
    device = torch.device(args.device)
    if cuda:
        torch.backends.cudnn.benchmark = True
    table = load_dataset(args.data)
    if args.limit:
        table = table.iloc[: args.limit]
    labels = np.array(table["dx"].map({c: i for i, c in enumerate(CLASSES)}), dtype=np.int64)
    size = (args.height, args.width)
    if args.precision_compare:
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps(precision_compare(build_cache(table, Path(folder), size).images, labels, args)))
        return
    print(f"Machine: {machine()}. Data: {args.data} ({len(table)} images).\n")
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        cache = build_cache(table, Path(folder), size)
        print(f"One-time cache build at {size[0]}x{size[1]}: {time.perf_counter() - start:.1f} s\n")
        data_path(table, size, cache.images, args)
        training(table, labels, cache.images, args, device)


if __name__ == "__main__":
    main()
