"""Activation calibration: ONNX Runtime's range rules and brute-force error checks.

Part of the test oracle (``quantpress._reference``): plain NumPy, never used for speed.
"""

from __future__ import annotations

import numpy as np

from .scalar import F32

# --- activation calibration ---


def fake_quantize(x: np.ndarray, scale: float, zero_point: int, qmin: int, qmax: int) -> np.ndarray:
    """ONNX QuantizeLinear then DequantizeLinear, float32: ``(clip(rint(x / s) + z) - z) * s``."""
    s = F32(scale)
    q = np.clip(np.rint(np.asarray(x, dtype=F32) / s) + F32(zero_point), qmin, qmax)
    return ((q - F32(zero_point)) * s).astype(F32)


def raw_mse(x: np.ndarray, scale: float, zero_point: int, qmin: int, qmax: int) -> float:
    """Mean squared quantize-dequantize error of the raw values (float64 accumulation)."""
    d = fake_quantize(x, scale, zero_point, qmin, qmax).astype(np.float64) - np.asarray(x, dtype=np.float64)
    return float(np.mean(d * d))


def histogram_sq_error_numeric(hist: np.ndarray, edges: np.ndarray, scale: float, zero_point: int,
                               qmin: int, qmax: int, points: int = 4096) -> float:
    """The expected squared error of the MSE method by brute force: every bin's mass spread over
    ``points`` equally spaced values (midpoint rule) and quantized one by one."""
    e = np.asarray(edges, dtype=np.float64)
    total = 0.0
    for j in np.flatnonzero(hist):
        u = e[j] + (np.arange(points) + 0.5) / points * (e[j + 1] - e[j])
        q = np.clip(np.rint(u / scale) + zero_point, qmin, qmax)
        total += hist[j] * float(np.mean((u - (q - zero_point) * scale) ** 2))
    return total / float(hist.sum())


def brute_force_mse_range(x: np.ndarray, candidates: np.ndarray, dtype: str, symmetric: bool) -> tuple[int, np.ndarray]:
    """Index of the ``(rmin, rmax)`` candidate row with the least raw-data MSE, and every MSE."""
    from ..calibrate import compute_scale_zp, qrange  # the oracle reuses ORT's parameter rule only

    qmin, qmax = qrange(dtype, symmetric)
    errs = []
    for lo, hi in candidates:
        s, z = compute_scale_zp(lo, hi, dtype, symmetric)
        errs.append(raw_mse(x, float(s), int(z), qmin, qmax))
    errs_a = np.array(errs)
    return int(np.argmin(errs_a)), errs_a
