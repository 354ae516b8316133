"""Vector quantization: nearest-codeword search over a codebook (the step PQ and weight VQ
encode with, and k-means repeats)."""

from __future__ import annotations

from typing import Any, Union

import numpy as np

from . import _core
from ._arrays import as_float32
from ._core import QuantpressError

METRICS = ("l2", "ip", "cosine", "l1")


def code_dtype(k: int) -> np.dtype:
    """The smallest unsigned dtype that holds every code of a ``k``-codeword codebook."""
    return np.dtype(np.uint8 if k <= 256 else np.uint16 if k <= 65536 else np.uint32)


def _matrix(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise QuantpressError(f"{name} must be a 2-D array (n, d), got shape {arr.shape}")
    return arr


def assign(
    x: Any, codebook: Any, metric: str = "l2", return_distances: bool = False
) -> Union[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Finds the nearest codeword of every row of ``x``.

    Exact brute force, computed in float32 with the same operations at every SIMD level and
    thread count, so results are reproducible bit for bit; ties go to the lowest codeword index.
    Memory use is independent of ``n * k``.

    Args:
        x: ``(n, d)`` float array (float32, float16, bfloat16 or float64; converted to float32).
        codebook: ``(k, d)`` float array of codewords, ``k >= 1``.
        metric: ``"l2"`` (squared Euclidean distance, smallest wins), ``"ip"`` (inner product,
            largest wins), ``"cosine"`` (cosine similarity, largest wins; zero vectors score 0) or
            ``"l1"`` (sum of absolute differences, smallest wins).
        return_distances: also return each row's distance (L2: squared distance, clamped at 0;
            IP: the inner product; cosine: the similarity; L1: the sum) as float32.

    Returns:
        ``codes``, shape ``(n,)``, of dtype uint8 for ``k <= 256``, uint16 for ``k <= 65536``,
        else uint32; or ``(codes, distances)``.

    Raises:
        QuantpressError: ``x`` or ``codebook`` is not 2-D, not a float array, holds NaN or
            infinity, their ``d`` differ, the codebook is empty, or ``metric`` is unknown.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> codebook = np.array([[0, 0], [1, 1], [4, 0]], dtype=np.float32)
        >>> x = np.array([[0.9, 1.2], [3, 0.5], [-1, 0]], dtype=np.float32)
        >>> qp.assign(x, codebook)
        array([1, 2, 0], dtype=uint8)
        >>> codes, dist = qp.assign(x, codebook, return_distances=True)
        >>> dist.round(2)
        array([0.05, 1.25, 1.  ], dtype=float32)
    """
    if metric not in METRICS:
        raise QuantpressError(f"metric must be one of {METRICS}, got {metric!r}")
    cb, _ = as_float32(_matrix(codebook, "codebook"), name="codebook")
    k, d = cb.shape
    xa = _matrix(x, "x")
    if xa.shape[1] != d:
        raise QuantpressError(f"x has rows of {xa.shape[1]} values but the codewords have {d}")
    dtype = code_dtype(k)
    if xa.shape[0] == 0:
        as_float32(np.zeros((1, d), dtype=xa.dtype), name="x")  # the same dtype policy, then nothing
        codes0 = np.zeros(0, dtype=dtype)
        return (codes0, np.zeros(0, dtype=np.float32)) if return_distances else codes0
    xf, _ = as_float32(xa, name="x")
    codes, dists = _core.vq_assign(xf, cb, d, metric, bool(return_distances))
    codes = codes.astype(dtype, copy=False)
    return (codes, dists) if return_distances else codes
