"""Pruning masks and N:M selection.

Part of the test oracle (``quantpress._reference``): plain NumPy, never used for speed.
"""

from __future__ import annotations

import numpy as np

# --- pruning ---


def magnitude_mask(scores: np.ndarray, keep: int) -> np.ndarray:
    """Bitmask (LSB first) keeping the ``keep`` largest ``|scores|``, ties to the lower flat
    index (a stable sort on the sign-free float bits)."""
    key = np.ascontiguousarray(scores, dtype=np.float32).reshape(-1).view(np.uint32) & np.uint32(0x7FFFFFFF)
    order = np.argsort(-key.astype(np.int64), kind="stable")
    keep_flags = np.zeros(key.size, bool)
    keep_flags[order[:keep]] = True
    return np.packbits(keep_flags, bitorder="little")


def nm_select(scores: np.ndarray, values: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """N:M per group of ``m``: (kept values in position order, packed positions of
    ``max(2, ceil(log2 m))`` bits, little-endian bit stream)."""
    key = np.ascontiguousarray(scores, dtype=np.float32).reshape(-1, m).view(np.uint32) & np.uint32(0x7FFFFFFF)
    order = np.argsort(-key.astype(np.int64), axis=1, kind="stable")[:, :n]
    pos = np.sort(order, axis=1)
    vals = np.take_along_axis(np.asarray(values, np.float32).reshape(-1, m), pos, axis=1).reshape(-1)
    bits = max(2, int(np.ceil(np.log2(m))))
    stream = ((pos.reshape(-1, 1) >> np.arange(bits)) & 1).astype(bool).reshape(-1)
    return vals, np.packbits(stream, bitorder="little")


def structured_norms(scores: np.ndarray, method: str) -> np.ndarray:
    """The L1/L2 norms (float64) of every row (``"*_rows"``) or column of the 2-D ``scores``."""
    a = np.abs(np.asarray(scores, np.float32).astype(np.float64))
    axis = 1 if method.endswith("rows") else 0
    return a.sum(axis=axis) if method.startswith("l1") else np.sqrt((a * a).sum(axis=axis))


def structured_index(scores: np.ndarray, method: str, keep: int) -> np.ndarray:
    """The ``keep`` rows/columns with the largest norms, ascending (ties: lower index kept)."""
    norms = structured_norms(scores, method)
    return np.sort(np.argsort(-norms, kind="stable")[:keep])
