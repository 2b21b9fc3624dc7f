"""A short description of the machine a run used, recorded in bundles and evaluation provenance."""

from __future__ import annotations

import os
import platform

import torch


def describe_machine() -> str:
    """GPU name when CUDA is available, else the CPU and its logical core count."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA), {torch.cuda.device_count()} GPU(s)"
    model = _cpu_model() or platform.processor() or platform.machine()
    return f"CPU {model}, {os.cpu_count()} logical cores"


def _cpu_model() -> str | None:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None
