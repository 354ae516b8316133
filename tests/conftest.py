"""Shared fixtures and the numeric tolerances of the whole suite (written down once, here).

* Packed bytes, codes and GGUF blocks: bit-exact (``np.array_equal``), never a tolerance.
* Floats produced by a Rust kernel vs ``quantpress._reference``: exact as well, because both do
  the same float32 operations in the same order; ``RTOL``/``ATOL`` below apply only where a test
  compares against a mathematical bound rather than the oracle.
* RTN reconstruction bound: ``|x - dequantize(quantize(x))| <= scale/2 * (1 + BOUND_RTOL)``
  (the slack covers the one rounding of ``x * (1/scale)``).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pytest

import quantpress as qp
from quantpress import _core

RTOL = 1e-6
ATOL = 0.0
BOUND_RTOL = 1e-5

# Every level this machine runs: an AVX-512 CPU runs the AVX2 kernels too.
_IMPLIED = {"avx512": ["avx2", "avx512"], "avx2": ["avx2"], "neon": ["neon"], "scalar": []}
LEVELS = ["scalar"] + _IMPLIED[_core.detected_simd_level()]
AWKWARD_LENGTHS = list(range(1, 34)) + [129, 8193]


@pytest.fixture(params=LEVELS)
def simd(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs the test once at every SIMD level this machine has, restoring the best one after."""
    _core._set_simd_level(request.param)
    assert qp.simd_level() == request.param
    yield request.param
    _core._set_simd_level(_core.detected_simd_level())


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def weight_like(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Heavy-tailed, weight-like float32 data: Student-t rows with a few outlier columns."""
    w = rng.standard_t(df=4, size=shape).astype(np.float32) * np.float32(0.02)
    if len(shape) == 2 and shape[1] >= 8:
        cols = rng.choice(shape[1], size=max(1, shape[1] // 64), replace=False)
        w[:, cols] *= np.float32(20)
    return w


def spin_while(call) -> tuple[float, int, float]:
    """Runs ``call()`` at the scalar level on one thread while a Python thread counts in a loop:
    ``(seconds the call took, counts during it, free-running counts per second)``. With the GIL
    held the counter could run for one switch interval (5 ms) at most; released, throughout."""
    import threading
    import time

    n0 = qp.get_num_threads()
    qp.set_num_threads(1)
    count, stop = [0], threading.Event()

    def spin() -> None:
        while not stop.is_set():
            count[0] += 1

    t = threading.Thread(target=spin, daemon=True)
    t.start()
    c0, t0 = count[0], time.perf_counter()
    time.sleep(0.1)  # sleeping releases the GIL: the spinner's free-running rate
    rate = (count[0] - c0) / (time.perf_counter() - t0)
    _core._set_simd_level("scalar")  # one call long enough to measure
    try:
        c0, t0 = count[0], time.perf_counter()
        call()
        elapsed, counted = time.perf_counter() - t0, count[0] - c0
    finally:
        _core._set_simd_level(_core.detected_simd_level())
        qp.set_num_threads(n0)
        stop.set()
        t.join()
    return elapsed, counted, rate
