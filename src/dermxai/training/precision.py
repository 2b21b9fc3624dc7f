"""Which numeric precision a run trains in: Lightning's names, ``auto`` resolved from the hardware.

``auto`` is ``bf16-mixed`` on CPUs with native bfloat16 arithmetic (AVX512-BF16 or AMX) and on GPUs that
support it, ``16-mixed`` on older GPUs, and ``32-true`` elsewhere (emulated bfloat16 would be slower).
"""

from __future__ import annotations

from pathlib import Path

import torch

from dermxai.training.config import PRECISIONS

CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU advertises native bfloat16 instructions."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(
        bool(CPU_BF16_FLAGS & set(line.split(":", 1)[1].split()))
        for line in text.splitlines()
        if line.startswith("flags")
    )


def resolve_precision(requested: str, gpu: bool, cpu_bf16: bool | None = None) -> str:
    """``requested`` unless it is ``auto``; raises ValueError for an unknown name."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}: use one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    if gpu:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if (cpu_has_bf16() if cpu_bf16 is None else cpu_bf16) else "32-true"
