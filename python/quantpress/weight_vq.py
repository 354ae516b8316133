"""Vector quantization of weight matrices (AQLM/QuIP#-style codebooks, trained per tensor).

Consecutive groups of ``dim`` weights along the last axis are quantized together as one vector
against learned codebooks, so a 2-bit-per-weight budget buys ``2**(2 * dim)`` shapes of vectors
instead of 4 levels per value. Rows are first normalised by a float16 RMS scale so that rows of
different magnitude share one codebook.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ._arrays import as_float32
from ._core import QuantpressError
from .kmeans import KMeans, _check_int
from .vq import assign, code_dtype

F16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class VQTensor:
    """A weight tensor quantized by :func:`vq_quantize`.

    Attributes:
        codes: ``(n_vectors, stages)`` uint8 or uint16; vector ``i`` is elements
            ``i*dim .. (i+1)*dim - 1`` of the tensor flattened in C order (``dim`` divides the
            last axis, so a vector never crosses a row).
        codebooks: ``(stages, k, dim)`` float16.
        scales: ``(rows,)`` float16 RMS of each row (``rows`` = product of all but the last
            axis), or ``None`` without row scaling.
        shape: the original shape.

    Value of vector ``i`` in row ``r``: ``scale[r] * sum_s float32(codebooks[s, codes[i, s]])``,
    summed in stage order in float32.
    """

    codes: np.ndarray
    codebooks: np.ndarray
    scales: Optional[np.ndarray]
    shape: tuple[int, ...]

    @property
    def dim(self) -> int:
        return int(self.codebooks.shape[2])

    @property
    def nbytes(self) -> int:
        """Every stored byte: codes, codebooks and scales."""
        return self.codes.nbytes + self.codebooks.nbytes + (0 if self.scales is None else self.scales.nbytes)

    @property
    def bits_per_weight(self) -> float:
        """``nbytes * 8`` over the number of weights."""
        return self.nbytes * 8 / int(np.prod(self.shape, dtype=np.int64))

    def dequantize(self) -> np.ndarray:
        """The float32 tensor the codes stand for, of the original shape."""
        cb = self.codebooks.astype(np.float32)
        v = cb[0][self.codes[:, 0]]
        for s in range(1, cb.shape[0]):
            v += cb[s][self.codes[:, s]]
        rows = v.reshape(-1, self.shape[-1])
        if self.scales is not None:
            rows *= self.scales.astype(np.float32)[:, None]
        return rows.reshape(self.shape)


def _row_scales(w2: np.ndarray) -> np.ndarray:
    rms = np.sqrt(np.mean(np.square(w2, dtype=np.float64), axis=1))
    if rms.max() > F16_MAX:
        raise QuantpressError(f"a row's RMS ({rms.max():.6g}) overflows the float16 scale")
    return rms.astype(np.float16)


def _vector_weights(weights: Any, shape: tuple[int, ...], dim: int) -> np.ndarray:
    wt = np.asarray(weights)
    if wt.dtype.kind not in "fiu":
        raise QuantpressError(f"weights must be a real array, got {wt.dtype}")
    if wt.shape != shape and wt.shape != shape[-1:]:
        raise QuantpressError(f"weights must have the shape of w {shape} or ({shape[-1]},), got {wt.shape}")
    wt = np.broadcast_to(wt.astype(np.float64), shape).reshape(-1, dim)
    if not np.isfinite(wt).all() or (wt < 0).any():
        raise QuantpressError("weights must be finite and non-negative")
    return wt.sum(axis=1)


def _codebook_size(dim: int, bits_per_weight: Any, stages: int) -> int:
    total = dim * bits_per_weight
    if isinstance(bits_per_weight, bool) or not isinstance(bits_per_weight, (int, float, np.integer, np.floating)) \
            or bits_per_weight <= 0 or total != int(total) or int(total) % stages:
        raise QuantpressError(f"dim * bits_per_weight ({dim} * {bits_per_weight!r}) must be a positive integer "
                              f"divisible by residual_stages={stages}")
    bits = int(total) // stages
    if bits > 16:
        raise QuantpressError(f"each stage would need 2**{bits} codewords; at most 2**16: lower dim or bits, or add stages")
    return 1 << bits


def vq_quantize(
    w: Any,
    dim: int = 8,
    bits_per_weight: float = 2,
    row_scale: bool = True,
    residual_stages: int = 1,
    weights: Any = None,
    seed: int = 0,
    n_iter: int = 10,
) -> VQTensor:
    """Vector-quantizes a weight tensor with k-means codebooks learned on it.

    Each stage's codebook has ``k = 2**(dim * bits_per_weight / residual_stages)`` codewords
    (at most 65536), so the codes cost ``bits_per_weight`` bits per weight when ``log2 k`` is 8
    or 16; other widths are stored unpacked in uint8/uint16 (and :attr:`VQTensor.bits_per_weight`
    counts those bytes). Stages are greedy residual quantization: stage ``s`` trains on what stages
    ``< s`` left. Codebooks are stored as float16, and the codes are chosen against the rounded
    codebooks.

    Args:
        w: float array, last axis divisible by ``dim``; ``prod(shape) / dim >= k`` vectors.
        dim: weights per vector.
        bits_per_weight: code bits per weight (codebooks and scales come on top).
        row_scale: divide each row (last axis) by its RMS first, stored as float16 (RMS rather
            than max-abs: heavy-tailed rows keep their bulk away from zero).
        residual_stages: number of codebooks added together.
        weights: optional non-negative per-element importance (shape of ``w``, or ``(cols,)``
            broadcast over rows). Each vector's k-means sample weight is the sum of its elements'
            importance (``dim`` without weights), times its row scale squared, so k-means
            minimises the weighted squared error of the original weights. Assignment to the
            nearest codeword is plain L2 (per-element importance steers only the codebooks).
        seed: stage ``s`` uses k-means seed ``seed + s``.
        n_iter: Lloyd iterations per stage.

    Returns:
        A :class:`VQTensor`.

    Raises:
        QuantpressError: empty, non-float or non-finite ``w``, a last axis not divisible by
            ``dim``, a codebook size that is not a power of two up to 65536, fewer vectors than
            codewords, bad ``weights``, or a row RMS beyond float16.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> w = np.random.default_rng(0).standard_normal((128, 256)).astype(np.float32)
        >>> vq = qp.vq_quantize(w, dim=4, bits_per_weight=2)
        >>> vq.codes.shape, vq.codebooks.shape, vq.scales.dtype
        ((8192, 1), (1, 256, 4), dtype('float16'))
        >>> round(vq.bits_per_weight, 3)  # 2 (codes) + 0.5 (a 2 KiB codebook on 32768 weights) + 0.062
        2.562
        >>> bool(((vq.dequantize() - w) ** 2).mean() < 0.2)
        True
    """
    wf, _ = as_float32(w, name="w")
    if not np.isfinite(wf).all():
        raise QuantpressError("w holds NaN or infinity")
    dim = _check_int("dim", dim, 1)
    stages = _check_int("residual_stages", residual_stages, 1)
    k = _codebook_size(dim, bits_per_weight, stages)
    shape = tuple(wf.shape)
    if shape[-1] % dim:
        raise QuantpressError(f"the last axis ({shape[-1]}) is not divisible by dim={dim}")
    w2 = wf.reshape(-1, shape[-1])
    if w2.size // dim < k:
        raise QuantpressError(f"{w2.size // dim} vectors of {dim} cannot train {k} codewords: lower bits_per_weight or dim")
    scales = _row_scales(w2) if row_scale else None
    r = w2.copy()
    sw = np.full(w2.size // dim, float(dim)) if weights is None else _vector_weights(weights, shape, dim)
    if scales is not None:
        s32 = scales.astype(np.float32)
        r /= np.where(s32 > 0, s32, 1)[:, None]
        sw *= np.repeat(s32.astype(np.float64) ** 2, shape[-1] // dim)
    r = r.reshape(-1, dim)
    codes = np.empty((len(r), stages), dtype=code_dtype(k))
    books = np.empty((stages, k, dim), dtype=np.float16)
    for s in range(stages):
        centroids = KMeans(k, n_iter=n_iter, seed=seed + s).fit(r, sample_weight=sw if sw.any() else None).centroids
        assert centroids is not None
        books[s] = centroids.astype(np.float16)
        if not np.isfinite(books[s]).all():
            raise QuantpressError("a codeword overflows float16: use row_scale=True")
        c = books[s].astype(np.float32)
        codes[:, s] = assign(r, c)
        r -= c[codes[:, s]]
    return VQTensor(codes=codes, codebooks=books, scales=scales, shape=shape)
