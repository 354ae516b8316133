"""Batched 1-D k-means (SqueezeLLM / Deep Compression weight sharing): every row of a tensor gets
its own small codebook of scalars, fitted exactly (dynamic programming) or by a fast sorted Lloyd
in the Rust core (``rust/vq/kmeans1d.rs``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _core
from ._arrays import as_float32, importance_weights
from ._core import QuantpressError


@dataclass(frozen=True, eq=False)
class KMeans1D:
    """The result of :func:`kmeans1d` for a tensor ``w`` with the clustered axis ``axis``.

    Attributes:
        codebook: ``(*other_dims, k)`` float32, each row's centroids in ascending order.
        codes: ``w.shape``, uint8 for ``k <= 256`` else uint16: the index of each element's
            centroid in its row's codebook.
        inertia: ``other_dims`` float64, each row's weighted sum of squared errors
            ``sum(weights * (w - dequantize())**2)`` (unit weights when none were given).
        axis: the clustered axis of ``w`` (normalised to ``0 .. w.ndim - 1``).

    Example:
        >>> import numpy as np, quantpress as qp
        >>> r = qp.kmeans1d(np.array([[0.0, 0.1, 5.0, 5.2]], np.float32), k=2)
        >>> r.dequantize()
        array([[0.05, 0.05, 5.1 , 5.1 ]], dtype=float32)
    """

    codebook: np.ndarray
    codes: np.ndarray
    inertia: np.ndarray
    axis: int

    def dequantize(self) -> np.ndarray:
        """Each element replaced by its centroid: a float32 array of ``w``'s shape."""
        codes = np.moveaxis(self.codes, self.axis, -1)
        out = np.take_along_axis(self.codebook, codes.astype(np.intp), axis=-1)
        return np.ascontiguousarray(np.moveaxis(out, -1, self.axis))


def kmeans1d(w: Any, k: int, weights: Any = None, axis: int = -1, exact: bool = True) -> KMeans1D:
    """Clusters the values of every 1-D slice of ``w`` along ``axis`` into ``k`` centroids that
    minimise the (weighted) sum of squared errors.

    ``exact=True`` finds the optimum: in 1-D the best clusters are contiguous runs of the sorted
    values, found by dynamic programming (divide and conquer on the monotone split point,
    O(k * n log n) per row, n the row length). ``exact=False`` runs the same DP on a coarse grid
    of candidate boundaries, again on a finer grid within bands around those boundaries, and
    refines the result by sorted Lloyd (O(k log n) per iteration): much faster and typically
    within a fraction of a percent of the optimum, never below it.
    Codes point to the nearest centroid of the stored float32 codebook (ties to the lower
    index). A row with fewer than ``k`` distinct values (say, constant) gets those values as
    centroids, the last one repeated to fill the codebook. Results are identical for any number
    of threads.

    Args:
        w: float32, float16, bfloat16 (``ml_dtypes``) or float64 array.
        k: centroids per row, 1 to 65536 and at most the length of ``axis``.
        weights: non-negative importance of each element (the shape of ``w``) or of each
            position along the last axis (shape ``(w.shape[-1],)``, broadcast over the other
            axes, like llama.cpp's imatrix). Zero-weight elements do not move the centroids
            (they still get codes); a row whose weights are all zero is fitted unweighted.
        axis: the axis along which each 1-D problem runs.
        exact: the optimum (``True``) or the fast coarse-DP + Lloyd fit (``False``).

    Returns:
        A :class:`KMeans1D` (codebook, codes, inertia; ``.dequantize()``).

    Raises:
        QuantpressError: empty input, NaN/Inf in ``w`` or ``weights``, negative weights, weights
            of another shape, ``k`` out of range, an axis out of range, or an exact fit whose
            backtracking table (``k * n`` entries a row) would exceed 2**27 entries.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> w = np.random.default_rng(0).standard_normal((64, 512)).astype(np.float32)
        >>> r = qp.kmeans1d(w, k=16)
        >>> r.codebook.shape, r.codes.dtype, r.inertia.shape
        ((64, 16), dtype('uint8'), (64,))
        >>> err = ((r.dequantize() - w).astype(np.float64) ** 2).sum(axis=1)
        >>> bool(np.allclose(err, r.inertia))
        True
        >>> fast = qp.kmeans1d(w, k=16, exact=False)
        >>> bool(np.all(fast.inertia >= r.inertia * (1 - 1e-9)))
        True
    """
    x, _ = as_float32(w)
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool) or not -x.ndim <= axis < x.ndim:
        raise QuantpressError(f"axis {axis!r} is out of range for a tensor of shape {x.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= 65536:
        raise QuantpressError(f"k must be an integer between 1 and 65536, got {k!r}")
    ax = int(axis) % x.ndim
    n = x.shape[ax]
    moved = np.ascontiguousarray(np.moveaxis(x, ax, -1))
    wv, _ = importance_weights(weights, x.shape, ax)
    cb, codes, inertia = _core.kmeans1d(moved.reshape(-1), n, int(k), wv, bool(exact))
    outer = moved.shape[:-1]
    return KMeans1D(
        codebook=cb.reshape(outer + (int(k),)),
        codes=np.ascontiguousarray(np.moveaxis(codes.reshape(moved.shape), -1, ax)),
        inertia=inertia.reshape(outer),
        axis=ax,
    )
