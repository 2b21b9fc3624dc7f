"""Helpers shared by the benchmarks: timing loops, percentiles, a one-line machine description."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Callable

import numpy as np
import torch


def cpu_model() -> str:
    """``lscpu``'s model name (falls back to the platform's processor string)."""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")]
        return names[0] if names else platform.processor()
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()


def machine() -> str:
    """CPU model and cores, torch threads, and the GPU when there is one."""
    text = f"{cpu_model()}, {os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name()}"
    return text


def repeat(call: Callable[[], object], iterations: int, warmup: int = 1) -> np.ndarray:
    """Wall-clock seconds of ``iterations`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return np.array(times)


def spread(times: np.ndarray, scale: float = 1000.0, digits: int = 1) -> str:
    """``median (p5-p95)`` of ``times`` multiplied by ``scale`` (milliseconds by default)."""
    p5, p50, p95 = np.percentile(times * scale, [5, 50, 95])
    return f"{p50:,.{digits}f} ({p5:,.{digits}f}-{p95:,.{digits}f})"
