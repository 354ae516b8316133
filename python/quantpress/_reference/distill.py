"""Distillation losses, one row at a time in float64.

Part of the test oracle (``quantpress._reference``): plain NumPy, never used for speed.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

# --- distillation ---
def _log_softmax_row(row: np.ndarray) -> np.ndarray:
    m = max(float(v) for v in row)
    lse = m + math.log(math.fsum(math.exp(float(v) - m) for v in row))
    return np.array([float(v) - lse for v in row])


def distillation_naive(s: np.ndarray, t: Optional[np.ndarray], y: Optional[np.ndarray], temperature: float,
                       alpha: float) -> np.ndarray:
    """Per-example ``alpha T^2 KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) CE(s, y)``, one row
    at a time in float64 (``t=None``: CE only; ``y=None``: the soft term with alpha 1)."""
    s2 = np.asarray(s, np.float64).reshape(-1, np.shape(s)[-1])
    out = []
    for i, row in enumerate(s2):
        total = 0.0
        a = 0.0 if t is None else (1.0 if y is None else alpha)
        if t is not None:
            logp = _log_softmax_row(np.asarray(t, np.float64).reshape(s2.shape)[i] / temperature)
            logq = _log_softmax_row(row / temperature)
            total += a * temperature ** 2 * math.fsum(math.exp(lp) * (lp - lq) for lp, lq in zip(logp, logq))
        if y is not None and a < 1.0:
            total += (1.0 - a) * -_log_softmax_row(row)[int(np.reshape(y, -1)[i])]
        out.append(total)
    return np.array(out).reshape(np.shape(s)[:-1])
