"""Timing and table helpers shared by the Python benchmarks."""

from __future__ import annotations

import statistics
import time
from typing import Callable

MEMORY_GBPS = 15.0  # memory copy, each way, on the reference machine (DESIGN.md)


def median_seconds(fn: Callable[[], object], runs: int) -> float:
    """Median wall time of ``runs`` calls after one warm-up call (page faults, lazy init)."""
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)



def median_and_result(fn: Callable[[], object], runs: int) -> tuple[float, object]:
    """Median wall time of ``runs`` calls (no warm-up: the first call may be the only one) and
    the last call's result."""
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out
