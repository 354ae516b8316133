"""Pruning: unstructured magnitude (per tensor or global, optionally Wanda-scored), structured
rows/columns by norm, and N:M semi-structured sparsity, each with a compressed form that really
stores fewer bytes (layouts in docs/format.md, "Sparse storage"). Selection and packing run in
the Rust core (``rust/prune/``), structured pruning's row/column norms too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from . import _core
from ._arrays import as_float32
from ._core import QuantpressError
from .scalar import QuantizedTensor, quantize as _quantize

METHODS = ("magnitude", "l1_rows", "l2_rows", "l1_cols", "l2_cols", "nm")
VALUE_DTYPES = ("float32", "float16")


@dataclass(frozen=True, eq=False)
class SparseTensor:
    """A pruned tensor in compressed form (see :func:`prune`).

    Attributes:
        format: ``"bitmask"`` (``mask``: 1 bit per element, LSB first, kept values in flat
            order), ``"nm"`` (``positions``: ``n`` in-group positions per group of ``m`` along
            the last axis, packed little-endian, 2 bits for ``m <= 4``, 3 for ``m <= 8``, 4 for
            ``m <= 16``) or ``"structured"`` (``index``: int32 kept rows or columns, ``values``
            holds them densely).
        values: the kept values: float32/float16 array, or a :class:`QuantizedTensor` of the
            1-D kept values zero-padded to a whole number of groups.
        shape: the dense shape.
        count: number of kept values (``values`` may be padded past it when quantized).
        mask, positions, index: the format's metadata (``None`` where it does not apply).
        n, m: the N:M pattern (``0`` otherwise); axis: the pruned axis for ``"structured"``.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> w = np.arange(1, 9, dtype=np.float32).reshape(2, 4)
        >>> s = qp.prune(w, sparsity=0.5)
        >>> s.dequantize()
        array([[0., 0., 0., 0.],
               [5., 6., 7., 8.]], dtype=float32)
        >>> s.nbytes, s.density
        (17, 0.5)
    """

    format: str
    values: Union[np.ndarray, QuantizedTensor]
    shape: tuple[int, ...]
    count: int
    mask: Optional[np.ndarray] = None
    positions: Optional[np.ndarray] = None
    index: Optional[np.ndarray] = None
    n: int = 0
    m: int = 0
    axis: int = 0

    def kept_values(self) -> np.ndarray:
        """The kept values as float32 (dequantized when quantized), in storage order."""
        if isinstance(self.values, QuantizedTensor):
            return np.ascontiguousarray(self.values.dequantize().reshape(-1)[: self.count])
        return np.ascontiguousarray(self.values, dtype=np.float32).reshape(-1)

    def dequantize(self) -> np.ndarray:
        """The dense float32 tensor: kept values in place, zeros elsewhere."""
        v = self.kept_values()
        size = int(np.prod(self.shape, dtype=np.int64))
        if self.format == "bitmask":
            assert self.mask is not None
            return _core.prune_expand(v, self.mask, size).reshape(self.shape)
        if self.format == "nm":
            assert self.positions is not None
            return _core.prune_nm_expand(v, self.positions, self.n, self.m, size).reshape(self.shape)
        assert self.index is not None
        out = np.zeros(self.shape, np.float32)
        kept_shape = list(self.shape)
        kept_shape[self.axis] = len(self.index)
        idx: list[Any] = [slice(None)] * len(self.shape)
        idx[self.axis] = self.index
        out[tuple(idx)] = v.reshape(kept_shape)
        return out

    @property
    def nbytes(self) -> int:
        """Every stored byte: values (codes, scales and zero points when quantized) and metadata."""
        meta = sum(a.nbytes for a in (self.mask, self.positions, self.index) if a is not None)
        return int(self.values.nbytes) + meta

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per dense element, metadata included."""
        return self.nbytes * 8 / int(np.prod(self.shape, dtype=np.int64))

    @property
    def density(self) -> float:
        """Fraction of elements kept."""
        return self.count / int(np.prod(self.shape, dtype=np.int64))


def keep_count(size: int, sparsity: float) -> int:
    """Elements kept at ``sparsity``: ``round(size * (1 - sparsity))``, halves rounded up."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.floating, np.integer)) or not 0 <= float(sparsity) < 1:
        raise QuantpressError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    return min(size, int(np.floor(size * (1.0 - float(sparsity)) + 0.5)))


def wanda_scores(w: Any, act_norms: Any) -> np.ndarray:
    """Wanda importance ``|w| * ||x||``: each weight's magnitude times the L2 norm of its input
    feature's activations (``act_norms``, one per column of an ``[out, in]`` weight, measured
    by the caller on calibration data).

    Args:
        w: weight of shape ``(..., in_features)``.
        act_norms: ``(in_features,)`` non-negative finite activation norms.

    Returns:
        float32 scores of ``w``'s shape, for ``prune(w, scores=...)``.

    Raises:
        QuantpressError: a shape mismatch, negative or non-finite norms.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> w = np.array([[1.0, -2.0], [3.0, 0.5]], np.float32)
        >>> qp.wanda_scores(w, np.array([10.0, 1.0]))
        array([[10. ,  2. ],
               [30. ,  0.5]], dtype=float32)
    """
    x, _ = as_float32(w)
    a = np.asarray(act_norms, dtype=np.float32)
    if a.shape != (x.shape[-1],):
        raise QuantpressError(f"act_norms must have shape ({x.shape[-1]},) (one per input feature), got {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise QuantpressError("act_norms must be finite and non-negative")
    return np.abs(x) * a


def _scores(x: np.ndarray, scores: Any) -> np.ndarray:
    if scores is None:
        return x
    s, _ = as_float32(scores, name="scores")
    if s.shape != x.shape:
        raise QuantpressError(f"scores must have the shape of w {x.shape}, got {s.shape}")
    return s


def _store(packed: np.ndarray, dtype: str, quantize: Optional[dict[str, Any]]) -> Union[np.ndarray, QuantizedTensor]:
    """The kept values as stored: cast to ``dtype``, or quantized (padded to whole groups)."""
    if quantize is None:
        if dtype not in VALUE_DTYPES:
            raise QuantpressError(f"dtype must be one of {VALUE_DTYPES}, got {dtype!r}")
        return packed if dtype == "float32" else packed.astype(np.float16)
    if not isinstance(quantize, dict):
        raise QuantpressError(f"quantize must be a dict of qp.quantize arguments, got {type(quantize).__name__}")
    opts = dict(quantize)
    if "axis" in opts:
        raise QuantpressError("quantize= groups run over the 1-D kept values: do not pass axis")
    g = opts.get("group_size", 64)
    if len(packed) == 0:
        raise QuantpressError("nothing is kept: there are no values to quantize")
    if g is not None and len(packed) % int(g):
        packed = np.concatenate([packed, np.zeros(int(g) - len(packed) % int(g), np.float32)])
    return _quantize(packed, axis=-1, **opts)


def _check_finite(x: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(x)):
        raise QuantpressError(f"{what} contains NaN or infinity")


def _structured(x: np.ndarray, s: np.ndarray, method: str, sparsity: float) -> tuple[np.ndarray, np.ndarray, int]:
    if x.ndim != 2:
        raise QuantpressError(f"method={method!r} needs a 2-D weight, got shape {x.shape}")
    if s is not x:
        _check_finite(x, "w")
    axis = 0 if method.endswith("rows") else 1
    # Norms of every row (axis 0) or column in Rust: f64 sums in a fixed order (checks finiteness).
    norms = _core.prune_norms(s, s.shape[1], 1 if method.startswith("l1") else 2, axis == 0)
    keep = keep_count(len(norms), sparsity)
    order = np.argsort(-norms, kind="stable")  # ties: lower index first
    index = np.sort(order[:keep]).astype(np.int32)
    kept = np.take(x, index, axis=axis)
    return kept.reshape(-1), index, axis


def prune(
    w: Any,
    sparsity: float = 0.5,
    method: str = "magnitude",
    n: int = 2,
    m: int = 4,
    scores: Any = None,
    quantize: Optional[dict[str, Any]] = None,
    dtype: str = "float32",
) -> SparseTensor:
    """Prunes ``w`` and returns it in compressed form.

    * ``"magnitude"``: keeps exactly ``round(size * (1 - sparsity))`` elements (halves up) with
      the largest ``|scores|`` (``|w|`` by default); among equal magnitudes the lower flat
      (C-order) index is kept. The exact threshold comes from an O(n) selection in Rust (one
      pass with a sampled bracket; no sort). Stored as a bitmask plus the kept values.
    * ``"l1_rows"``, ``"l2_rows"``, ``"l1_cols"``, ``"l2_cols"``: drops whole rows (output
      channels of an ``[out, in]`` weight) or columns with the smallest L1/L2 norm of
      ``scores`` (ties: lower index kept; norms summed in float64 in Rust, in an order fixed by
      the shape); stored as the kept rows/columns plus their indices.
    * ``"nm"``: in every group of ``m`` consecutive elements along the last axis keeps the
      ``n`` largest ``|scores|`` (ties to the lower position); ``sparsity`` is ignored
      (it is ``1 - n/m``). Stored as values plus packed in-group positions.

    Args:
        w: float array (float32/float16/bfloat16/float64).
        sparsity: fraction to remove, in ``[0, 1)``.
        method: one of ``METHODS``.
        n, m: the N:M pattern, ``1 <= n < m <= 16``; ``m`` must divide the last axis.
        scores: importance of each element (the shape of ``w``), e.g. :func:`wanda_scores`.
        quantize: arguments for :func:`quantpress.quantize` applied to the 1-D kept values
            (zero-padded to a whole number of groups), e.g. ``dict(bits=8, group_size=64)``.
        dtype: storage of unquantized values, ``"float32"`` (exact) or ``"float16"``.

    Returns:
        A :class:`SparseTensor`.

    Raises:
        QuantpressError: sparsity outside ``[0, 1)``, an unknown method, N:M with ``n >= m``
            or ``m`` not dividing the last axis, NaN/Inf in ``w`` or ``scores``, bad shapes.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> w = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
        >>> s = qp.prune(w, sparsity=0.5)
        >>> s.density, round(s.bits_per_weight, 2)
        (0.5, 17.0)
        >>> bool(np.array_equal(s.dequantize() != 0, np.abs(w) >= np.median(np.abs(w))))
        True
        >>> t = qp.prune(w, method="nm", n=2, m=4, quantize=dict(bits=8, group_size=64))
        >>> round(t.bits_per_weight, 2)
        5.25
        >>> r = qp.prune(w, sparsity=0.25, method="l2_rows")
        >>> r.values.shape, r.index.shape
        ((12288,), (48,))
    """
    if method not in METHODS:
        raise QuantpressError(f"method must be one of {METHODS}, got {method!r}")
    x, _ = as_float32(w)
    s = _scores(x, scores)
    if method == "nm":
        for v, name in ((n, "n"), (m, "m")):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise QuantpressError(f"{name} must be an integer, got {v!r}")
        if not 1 <= n < m <= 16:
            raise QuantpressError(f"N:M sparsity needs 1 <= N < M <= 16, got {n}:{m}")
        if x.shape[-1] % m:
            raise QuantpressError(f"the last axis ({x.shape[-1]}) is not divisible by M={m}")
        vals, pos = _core.prune_nm(s.reshape(-1), x.reshape(-1), int(n), int(m))
        return SparseTensor("nm", _store(vals, dtype, quantize), x.shape, len(vals), positions=pos, n=int(n), m=int(m))
    if method == "magnitude":
        keep = keep_count(x.size, sparsity)
        if s is not x:
            _check_finite(x, "w")
        mask = _core.prune_magnitude_masks([s.reshape(-1)], keep)[0]
        vals = _core.prune_compress(x.reshape(-1), mask)
        return SparseTensor("bitmask", _store(vals, dtype, quantize), x.shape, len(vals), mask=mask)
    keep_count(1, sparsity)  # validates sparsity
    vals, index, axis = _structured(x, s, method, sparsity)
    return SparseTensor("structured", _store(vals, dtype, quantize), x.shape, len(vals), index=index, axis=axis)


def prune_global(
    tensors: dict[str, Any],
    sparsity: float = 0.5,
    scores: Optional[dict[str, Any]] = None,
    quantize: Optional[dict[str, Any]] = None,
    dtype: str = "float32",
) -> dict[str, SparseTensor]:
    """Magnitude pruning with one threshold across all tensors: keeps exactly
    ``round(total * (1 - sparsity))`` elements of the concatenation of the flattened tensors
    (in dict order), largest ``|scores|`` first, ties to the lower index of that concatenation.

    Args:
        tensors: name -> float array.
        sparsity: fraction to remove over all tensors, in ``[0, 1)``.
        scores: optional name -> importance array of the same shape (all names, or ``None``).
        quantize, dtype: as in :func:`prune`.

    Returns:
        name -> bitmask :class:`SparseTensor`.

    Raises:
        QuantpressError: as :func:`prune`, an empty dict, or ``scores`` with other names.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> t = {"a": np.array([1.0, 2.0], np.float32), "b": np.array([3.0, 4.0], np.float32)}
        >>> out = qp.prune_global(t, sparsity=0.5)
        >>> out["a"].density, out["b"].density
        (0.0, 1.0)
    """
    if not tensors:
        raise QuantpressError("prune_global needs at least one tensor")
    if scores is not None and set(scores) != set(tensors):
        raise QuantpressError("scores must have exactly the names of tensors")
    xs = {k: as_float32(v, name=k)[0] for k, v in tensors.items()}
    ss = {k: (x if scores is None else _scores(x, scores[k])) for k, x in xs.items()}
    for k, x in xs.items():
        if ss[k] is not x:
            _check_finite(x, k)
    total = sum(x.size for x in xs.values())
    masks = _core.prune_magnitude_masks([s.reshape(-1) for s in ss.values()], keep_count(total, sparsity))
    out = {}
    for (k, x), mask in zip(xs.items(), masks):
        vals = _core.prune_compress(x.reshape(-1), mask)
        out[k] = SparseTensor("bitmask", _store(vals, dtype, quantize), x.shape, len(vals), mask=mask)
    return out
