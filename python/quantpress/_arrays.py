"""Input conversion shared by the user API: any float array in, C-contiguous float32 out."""

from __future__ import annotations

from typing import Any, Optional

import ml_dtypes
import numpy as np

from ._core import QuantpressError

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
_FLOATS = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.float64), BFLOAT16)


def dtype_name(dtype: np.dtype) -> str:
    return "bfloat16" if dtype == BFLOAT16 else dtype.name


def as_float32(w: Any, dtype: str | None = None, name: str = "w") -> tuple[np.ndarray, str]:
    """Returns ``(C-contiguous float32 copy or view of w, name of w's original dtype)``.

    ``dtype="bfloat16"`` reinterprets a uint16 array as bfloat16 bits. Empty arrays and
    non-float dtypes are refused with a ``QuantpressError``.
    """
    a = np.asarray(w)
    if dtype is not None:
        if dtype != "bfloat16":
            raise QuantpressError(f"dtype= only reinterprets uint16 as 'bfloat16', got {dtype!r}")
        if a.dtype != np.uint16:
            raise QuantpressError(f"dtype='bfloat16' needs a uint16 array of raw bits, got {a.dtype}")
        a = a.view(BFLOAT16)
    if a.dtype not in _FLOATS:
        raise QuantpressError(
            f"{name} must be float32, float16, bfloat16 or float64, got {a.dtype}"
        )
    if a.size == 0:
        raise QuantpressError(f"{name} is empty (shape {a.shape})")
    if a.ndim == 0:  # checked here: np.ascontiguousarray below would make it 1-d
        raise QuantpressError(f"{name} must have at least one dimension (got a 0-d array)")
    original = dtype_name(a.dtype)
    if a.dtype == BFLOAT16:
        # bfloat16 -> float32 is exact: the bits move to the top half of a 32-bit word.
        bits = np.ascontiguousarray(a).view(np.uint16)
        return (bits.astype(np.uint32) << 16).view(np.float32), original
    out = np.ascontiguousarray(a, dtype=np.float32)
    # A memory-mapped member of a zip (npz) can sit at any byte offset: the kernels need aligned data.
    return (out if out.flags.aligned else out.copy()), original


def cast_output(x: np.ndarray, dtype: Any) -> np.ndarray:
    """Casts a float32 result to ``dtype`` ("float32", "float16", "bfloat16" or a NumPy dtype)."""
    if dtype is None:
        return x
    target = BFLOAT16 if dtype == "bfloat16" else np.dtype(dtype)
    if target not in _FLOATS:
        raise QuantpressError(f"cannot dequantize to {target}: choose a float dtype")
    return x if target == np.float32 else x.astype(target)


def importance_weights(weights: Any, shape: tuple[int, ...], ax: int) -> tuple[Optional[np.ndarray], int]:
    """Importance weights (the shape of ``w``, or one per column: ``(shape[-1],)``) in the layout of
    the tensor with ``ax`` moved last and flattened: ``(per-value array, 0)``, or ``(per-column
    array, row length)`` when columns stay the last axis; ``(None, 0)`` for none. Finiteness and
    signs are checked by the Rust core, once."""
    if weights is None:
        return None, 0
    wt = np.asarray(weights)
    if wt.dtype.kind not in "fiu":
        raise QuantpressError(f"weights must be a real array, got {wt.dtype}")
    wt = wt.astype(np.float32)
    if wt.shape != shape and wt.shape != shape[-1:]:
        raise QuantpressError(f"weights must have the shape of w {shape} or ({shape[-1]},), got {wt.shape}")
    if wt.ndim == 1 and (ax < 0 or ax == len(shape) - 1):
        return np.ascontiguousarray(wt), shape[-1]
    full = np.broadcast_to(wt, shape)
    moved = full.reshape(-1) if ax < 0 else np.moveaxis(full, ax, -1).reshape(-1)
    return np.ascontiguousarray(moved, dtype=np.float32), 0
