"""Timing and table helpers shared by the Python benchmarks."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import numpy as np

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


def weight_like(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Heavy-tailed, weight-like float32 data: Student-t rows with a few outlier columns."""
    rng = np.random.default_rng(seed)
    w = rng.standard_t(df=4, size=(rows, cols)).astype(np.float32) * np.float32(0.02)
    w[:, rng.choice(cols, size=max(1, cols // 64), replace=False)] *= np.float32(20)
    return w
