"""One low-priority thread for heatmaps, so that a prediction never queues for the CPU behind one.

A heatmap is a forward and a backward pass on PyTorch (about ten predictions' worth of work); on a 2-core machine
it would take the cores that ``/predict`` needs. The worker thread lowers its own scheduling priority (Linux:
niceness is per thread, and the threads PyTorch starts from it inherit it), so the kernel gives predictions the
CPU first and heatmaps whatever is left. Heatmaps run one at a time; at most ``max_waiting`` wait for the worker,
and beyond that :meth:`HeatmapWorker.run` raises :class:`Busy` at once instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

HEATMAP_NICENESS = 10
"""How much lower than the server's the heatmap thread's priority is (Linux nice steps, 19 the lowest)."""
MAX_WAITING_HEATMAPS = 8

T = TypeVar("T")


class Busy(Exception):
    """Too many heatmaps are already waiting."""


def lower_priority(steps: int = HEATMAP_NICENESS) -> None:
    """Lower the calling thread's CPU priority by ``steps`` (Linux); a no-op where the OS does not allow it."""
    try:
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + steps))
    except (AttributeError, OSError):  # no per-thread priorities here (macOS, Windows): heatmaps share the CPU
        pass


class HeatmapWorker:
    """Runs heatmap jobs one at a time on a low-priority thread, with a bounded waiting line."""

    def __init__(self, max_waiting: int = MAX_WAITING_HEATMAPS) -> None:
        self.max_waiting = max_waiting
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="dermxai-heatmap", initializer=lower_priority)
        self._pending = 0  # running or waiting
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], object]) -> None:
        """Run ``job`` on the worker, in the background (start-up work such as loading the heatmap model)."""
        self._executor.submit(job)

    async def run(self, job: Callable[[], T]) -> T:
        """``job()`` on the worker thread; :class:`Busy` when ``max_waiting`` jobs are already waiting."""
        with self._lock:
            if self._pending > self.max_waiting:
                raise Busy(f"{self._pending} heatmaps are already being made or waiting")
            self._pending += 1
        try:
            return await asyncio.wrap_future(self._executor.submit(job))
        finally:
            with self._lock:
                self._pending -= 1
