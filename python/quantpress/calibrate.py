"""Activation calibration for static quantization: an :class:`Observer` watches batches of
activations and turns them into a scale and zero point, by ONNX Runtime's methods (min-max,
percentile, entropy) or by minimising the expected quantization error (MSE).

ONNX Runtime (``onnxruntime.quantization.calibrate`` + ``quant_utils.compute_scale_zp``) is the
anchor: for the same batches, min-max, percentile and entropy give ORT's thresholds and
parameters, quirks included (see :class:`Observer`). Histograms are merged batch by batch as ORT's
``HistogramCollector`` does, so memory does not grow with the number of batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from . import _calib_search
from ._arrays import as_float32
from ._core import QuantpressError

F32 = np.float32
METHODS = ("minmax", "percentile", "entropy", "mse")
DTYPES = {"int8": np.int8, "uint8": np.uint8}
# ORT's quant_utils tables: ONNX_INT_TYPE_RANGE, _SYMMETRIC_RANGE and _REDUCED_RANGE.
_RANGE = {"int8": (-128, 127), "uint8": (0, 255)}
_SYMMETRIC_RANGE = {"int8": (-127, 127)}
_REDUCED_RANGE = {"int8": (-64, 64), "uint8": (0, 127)}

MAX_BINS = 1 << 22  # widening a histogram past this many bins is refused (ORT would allocate them)


def qrange(dtype: str, symmetric: bool = False, reduce_range: bool = False) -> tuple[int, int]:
    """``(qmin, qmax)`` as ORT's ``get_qmin_qmax_for_qType``: reduced range first, then the
    symmetric int8 range ``[-127, 127]``, else the full range of the type.

    Example:
        >>> import quantpress as qp
        >>> qp.qrange("int8", symmetric=True), qp.qrange("uint8", reduce_range=True)
        ((-127, 127), (0, 127))
    """
    if dtype not in DTYPES:
        raise QuantpressError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
    if reduce_range:
        return _REDUCED_RANGE[dtype]
    if symmetric and dtype in _SYMMETRIC_RANGE:
        return _SYMMETRIC_RANGE[dtype]
    return _RANGE[dtype]


def compute_scale_zp(rmin: Any, rmax: Any, dtype: str = "int8", symmetric: bool = False,
                     reduce_range: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, zero_point)`` for the range ``[rmin, rmax]``, as ORT's ``compute_scale_zp``.

    The range is widened to contain 0 (and made ``[-a, a]`` with ``a = max|r|`` if symmetric);
    ``scale = (rmax - rmin) / (qmax - qmin)`` in float64, stored as float32; the zero point is
    ``round(qmin - rmin / scale)`` (half to even), or ``round((qmin + qmax) / 2)`` if symmetric.
    A scale below the smallest normal float32 becomes ``1.0`` with zero point 0. Works
    elementwise on arrays (per channel); returns float32 scales and ``dtype`` zero points.

    Example:
        >>> import quantpress as qp
        >>> s, z = qp.compute_scale_zp(-1.0, 3.0, "uint8")
        >>> float(s), int(z)
        (0.01568627543747425, 64)
    """
    qmin, qmax = qrange(dtype, symmetric, reduce_range)
    lo = np.minimum(np.asarray(rmin, dtype=F32), F32(0))
    hi = np.maximum(np.asarray(rmax, dtype=F32), F32(0))
    if symmetric:
        hi = np.maximum(np.abs(lo), np.abs(hi))
        lo = -hi
    scale = (hi.astype(np.float64) - lo.astype(np.float64)) / (float(qmax) - float(qmin))
    if symmetric:
        zp = np.full(scale.shape, np.round((qmin + qmax) / 2.0))
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            zp = np.round(qmin - lo / scale)
    tiny = scale < np.finfo(F32).tiny
    scale = np.where(tiny, 1.0, scale).astype(F32)
    zp = np.where(tiny, 0, zp).astype(DTYPES[dtype])
    return scale, zp


@dataclass(frozen=True, eq=False)
class QuantParams:
    """Calibrated quantization parameters: ``x ≈ (q - zero_point) * scale``.

    ``rmin``/``rmax`` are the calibrated thresholds (ORT's ``TensorData`` range) before
    :func:`compute_scale_zp` widens them to contain 0 or symmetrises them. Per-tensor fields are
    NumPy scalars (``np.float32``, ``np.int8``/``np.uint8``); per-channel ones are 1-d arrays.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> p = qp.QuantParams(np.float32(0.5), np.uint8(10), np.float32(-5), np.float32(100))
        >>> p.quantize(np.array([-5.0, 1.26, 1000.0], dtype=np.float32))
        array([  0,  13, 255], dtype=uint8)
        >>> p.dequantize(np.array([0, 13, 255], dtype=np.uint8))
        array([ -5. ,   1.5, 122.5], dtype=float32)
    """

    scale: Any
    zero_point: Any
    rmin: Any
    rmax: Any

    @property
    def dtype(self) -> str:
        """The integer type of the codes: ``"int8"`` or ``"uint8"``."""
        return np.asarray(self.zero_point).dtype.name

    def quantize(self, x: Any, axis: Optional[int] = None) -> np.ndarray:
        """ONNX ``QuantizeLinear``: ``saturate(round_half_even(x / scale) + zero_point)`` in
        float32. ``axis`` is the channel axis of ``x`` for per-channel parameters."""
        s, z = self._broadcast(np.asarray(x), axis)
        info = np.iinfo(self.dtype)
        q = np.rint(np.asarray(x, dtype=F32) / s) + z
        return np.clip(q, info.min, info.max).astype(self.dtype)

    def dequantize(self, q: Any, axis: Optional[int] = None) -> np.ndarray:
        """ONNX ``DequantizeLinear``: ``(q - zero_point) * scale`` in float32."""
        s, z = self._broadcast(np.asarray(q), axis)
        return ((np.asarray(q).astype(F32) - z) * s).astype(F32)

    def _broadcast(self, x: np.ndarray, axis: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
        s, z = np.asarray(self.scale, dtype=F32), np.asarray(self.zero_point).astype(F32)
        if s.ndim == 0:
            return s, z
        if axis is None or not -x.ndim <= axis < x.ndim or x.shape[axis] != s.size:
            raise QuantpressError(f"per-channel parameters ({s.size} channels) need the channel axis of x")
        shape = [1] * x.ndim
        shape[axis] = s.size
        return s.reshape(shape), z.reshape(shape)


class Observer:
    """Accumulates activation batches and computes quantization parameters, as ONNX Runtime's
    calibrators do.

    Each :meth:`update` plays the role of one ORT ``collect_data`` call with one batch, and
    :meth:`compute` that of ``compute_data`` followed by ``compute_scale_zp`` with
    ``get_qmin_qmax_for_qType(dtype, reduce_range, symmetric)``; ``symmetric`` is used both for
    the calibration range (ORT's ``CalibTensorRangeSymmetric``) and for the quantizer
    (``ActivationSymmetric``).

    Methods:

    * ``"minmax"`` (ORT ``MinMaxCalibrater``): global min and max; with ``symmetric`` each batch's
      range becomes ``[-a, a]``, ``a = max|x|``; with ``moving_average`` the first batch sets the
      range and later ones move it by ``averaging_constant * (batch - range)`` (float32).
      ``axis`` gives one range per channel along that axis (ORT: axis 1).
    * ``"percentile"`` (ORT ``PercentileCalibrater``): the histogram edge where the cumulative
      mass reaches ``percentile`` (symmetric: of ``|x|``) or ``(100 - percentile)/200`` from each
      side; note ORT returns the *left* edge of the bin holding the right percentile. Clipped to
      the observed ``[min, max]`` (so constant data can give ``rmin > rmax``, as in ORT). ORT
      quirk kept: the ``|x|`` histogram starts at the first batch's smallest ``|x|``, so smaller
      values of later batches are not counted.
    * ``"entropy"`` (ORT ``EntropyCalibrater``, TensorRT-style): the window of
      ``2i+1`` central bins (``i >= num_quantized_bins // 2``) whose clipped distribution has the
      smallest KL divergence from its ``num_quantized_bins``-level quantization, clipped to
      ``[min, max]``. ORT's arithmetic is reproduced (truncating integer expansion of the
      quantized bins, float32 smoothing with eps 1e-4), so the chosen bin is ORT's.
    * ``"mse"`` (quantpress): over the symmetric windows ``[-t, t]`` at histogram edges, clipped
      to ``[min, max]``, the range whose :func:`compute_scale_zp` quantizer has the smallest
      expected squared error ``E[(x - dequantize(quantize(x)))^2]``, with the histogram mass
      spread uniformly inside each bin and the clipping error of the tails included.

    Histogram methods keep ORT's signed histogram over ``[-T, T]``: ``num_bins`` bins at first,
    widened by whole bins on each side when a later batch exceeds ``T`` (counts never re-binned).

    Args:
        method: ``"minmax"``, ``"percentile"``, ``"entropy"`` or ``"mse"``.
        dtype: ``"int8"`` or ``"uint8"``.
        symmetric: symmetric range and quantizer.
        reduce_range: 7-bit ranges (ORT's ``reduce_range``).
        num_bins: histogram bins for the histogram methods.
        num_quantized_bins: quantized levels of the entropy search (at most ``num_bins``).
        percentile: percentage of the mass to keep, in ``[0, 100]``.
        moving_average, averaging_constant: min-max moving average (constant in ``[0, 1]``).
        axis: per-channel min-max along this axis of every batch (``None``: per tensor).

    Example:
        >>> import numpy as np, quantpress as qp
        >>> obs = qp.Observer("entropy", dtype="uint8")
        >>> rng = np.random.default_rng(0)
        >>> for _ in range(3):
        ...     obs.update(rng.standard_normal((64, 256)).astype(np.float32))
        >>> p = obs.compute()
        >>> p.zero_point.dtype, bool(p.rmax < 4.5), bool(p.quantize(np.float32(0.0)) == p.zero_point)
        (dtype('uint8'), True, True)
    """

    def __init__(self, method: str = "minmax", dtype: str = "int8", symmetric: bool = False, *,
                 reduce_range: bool = False, num_bins: int = 2048, num_quantized_bins: int = 128,
                 percentile: float = 99.999, moving_average: bool = False,
                 averaging_constant: float = 0.01, axis: Optional[int] = None) -> None:
        if method not in METHODS:
            raise QuantpressError(f"method must be one of {METHODS}, got {method!r}")
        qrange(dtype)
        for name, v in (("num_bins", num_bins), ("num_quantized_bins", num_quantized_bins)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise QuantpressError(f"{name} must be a positive integer, got {v!r}")
        if method == "entropy" and num_quantized_bins > num_bins:
            raise QuantpressError(f"num_quantized_bins ({num_quantized_bins}) exceeds num_bins ({num_bins})")
        if not 0.0 <= float(percentile) <= 100.0:
            raise QuantpressError(f"percentile must be in [0, 100], got {percentile}")
        if not 0.0 <= float(averaging_constant) <= 1.0:
            raise QuantpressError(f"averaging_constant must be in [0, 1], got {averaging_constant}")
        if axis is not None and method != "minmax":
            raise QuantpressError("per-channel calibration (axis=) is only available for method='minmax'")
        self.method, self.dtype, self.symmetric = method, dtype, bool(symmetric)
        self.reduce_range, self.num_bins = bool(reduce_range), int(num_bins)
        self.num_quantized_bins, self.percentile = int(num_quantized_bins), float(percentile)
        self.moving_average, self.averaging_constant = bool(moving_average), float(averaging_constant)
        self.axis = axis
        # None until the first update (Any: mypy cannot follow the method-dependent state)
        self._range: Any = None  # minmax: (lo, hi) arrays
        self._hist: Any = None  # histogram methods: int64 counts, float32 edges
        self._edges: Any = None
        self._threshold: Any = None  # the signed histogram covers [-threshold, threshold]
        self._minmax: Any = None  # observed data range (histogram methods)

    @property
    def histogram(self) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """``(counts int64, edges float32)`` accumulated so far (histogram methods), else None."""
        return None if self._hist is None else (self._hist, self._edges)

    def update(self, batch: Any) -> None:
        """Adds one batch of activations (any shape, float; NaN/Inf, empty or 0-d rejected).

        Example:
            >>> import numpy as np, quantpress as qp
            >>> obs = qp.Observer("minmax")
            >>> obs.update(np.array([[-1.0, 2.0]])); obs.update(np.array([3.0], dtype=np.float32))
            >>> p = obs.compute(); float(p.rmin), float(p.rmax)
            (-1.0, 3.0)
        """
        x, _ = as_float32(batch, name="batch")
        if self.method == "minmax":
            self._update_minmax(x)
            return
        x = x.reshape(-1)
        lo, hi = x.min(), x.max()  # NaN propagates, so one check covers NaN and Inf
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise QuantpressError("batch contains NaN or Inf")
        if self.method == "percentile" and self.symmetric:
            self._collect_absolute(x, lo, hi)
        else:
            self._collect_value(x, lo, hi)

    def _update_minmax(self, x: np.ndarray) -> None:
        if self.axis is None:
            lo, hi = np.atleast_1d(x.min()), np.atleast_1d(x.max())
        else:
            if not -x.ndim <= self.axis < x.ndim:
                raise QuantpressError(f"axis {self.axis} is out of range for a batch of shape {x.shape}")
            other = tuple(i for i in range(x.ndim) if i != self.axis % x.ndim)
            lo, hi = x.min(axis=other), x.max(axis=other)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise QuantpressError("batch contains NaN or Inf")
        if self.symmetric:
            hi = np.maximum(np.abs(lo), np.abs(hi))
            lo = -hi
        if self._range is None:
            self._range = (lo, hi)
            return
        old_lo, old_hi = self._range
        if old_lo.shape != lo.shape:
            raise QuantpressError(f"batch has {lo.size} channels along axis {self.axis}, earlier ones {old_lo.size}")
        if self.moving_average:
            c = F32(self.averaging_constant)
            self._range = (old_lo + c * (lo - old_lo), old_hi + c * (hi - old_hi))
        else:
            self._range = (np.minimum(old_lo, lo), np.maximum(old_hi, hi))

    def _collect_value(self, x: np.ndarray, lo: F32, hi: F32) -> None:
        """ORT's ``HistogramCollector.collect_value`` + ``merge_histogram``. The float32 range
        bounds matter: NumPy then computes the edges and bin indices in float32, as for ORT."""
        threshold = F32(max(abs(lo), abs(hi)))
        if self._hist is None:
            self._hist, self._edges = _histogram(x, self.num_bins, -threshold, threshold)
            self._threshold, self._minmax = threshold, (lo, hi)
            return
        old_t, old_hist = self._threshold, self._hist
        if threshold <= old_t:
            self._hist = old_hist + _histogram(x, old_hist.size, -old_t, old_t)[0]
        elif old_t == 0:
            hist, self._edges = _histogram(x, old_hist.size, -threshold, threshold)
            self._hist, self._threshold = hist + old_hist, threshold
        else:
            stride = F32(2) * old_t / F32(old_hist.size)
            with np.errstate(over="ignore", invalid="ignore"):  # inf/nan: refused just below
                half = (threshold - old_t) // stride + F32(1)
            if not old_hist.size + 2 * float(half) <= max(MAX_BINS, old_hist.size):
                raise QuantpressError(
                    f"batch range {float(threshold):g} is too wide for the histogram of bin width "
                    f"{float(stride):g} set by the first batch (over {MAX_BINS} bins); start with a wider batch")
            half = int(half)
            new_t = F32(F32(half) * stride + old_t)
            hist, self._edges = _histogram(x, old_hist.size + 2 * half, -new_t, new_t)
            hist[half:half + old_hist.size] += old_hist
            self._hist, self._threshold = hist, new_t
        self._minmax = (min(self._minmax[0], lo), max(self._minmax[1], hi))

    def _collect_absolute(self, x: np.ndarray, lo: F32, hi: F32) -> None:
        """ORT's ``HistogramCollector.collect_absolute_value`` (symmetric percentile)."""
        a = np.abs(x)
        if self._hist is None:
            self._hist, self._edges = np.histogram(a, bins=self.num_bins)
            self._edges = self._edges.astype(F32)
            self._minmax = (lo, hi)
            return
        edges = self._edges
        amax = max(abs(lo), abs(hi))  # = a.max(), from the extremes update() already found
        if amax > edges[-1]:
            width = edges[1] - edges[0]
            # ORT's np.arange may add one bin past the one holding amax; kept as is.
            edges = np.hstack((edges, np.arange(edges[-1] + width, amax + width, width)))
        hist = np.histogram(a, bins=edges)[0]
        hist[: self._hist.size] += self._hist
        self._hist, self._edges = hist, edges.astype(F32)
        self._minmax = (min(self._minmax[0], lo), max(self._minmax[1], hi))

    def compute(self) -> QuantParams:
        """The calibrated :class:`QuantParams` from every batch seen so far (more batches may follow).

        Example:
            >>> import numpy as np, quantpress as qp
            >>> obs = qp.Observer("percentile", dtype="int8", symmetric=True, percentile=99.0)
            >>> obs.update(np.linspace(-1, 1, 10001, dtype=np.float32))
            >>> p = obs.compute(); round(float(p.rmax), 3), int(p.zero_point)
            (0.99, 0)
        """
        if self._range is None and self._hist is None:
            raise QuantpressError("compute() needs at least one update() first")
        if self.method == "minmax":
            lo, hi = self._range
            if self.axis is None:
                lo, hi = lo[0], hi[0]
        elif self.method == "percentile":
            lo, hi = self._percentile_range()
        elif self.method == "entropy":
            start, end = _calib_search.entropy_window(self._hist, self.num_quantized_bins)
            lo, hi = self._clip_to_data(self._edges[start], self._edges[end])
        else:
            lo, hi = self._mse_range()
        scale, zp = compute_scale_zp(lo, hi, self.dtype, self.symmetric, self.reduce_range)
        if scale.ndim == 0:
            scale, zp = scale[()], zp[()]
        return QuantParams(scale=scale, zero_point=zp, rmin=lo, rmax=hi)

    def _clip_to_data(self, lo: F32, hi: F32) -> tuple[F32, F32]:
        dmin, dmax = self._minmax
        return (dmin if lo < dmin else F32(lo)), (dmax if hi > dmax else F32(hi))

    def _percentile_range(self) -> tuple[F32, F32]:
        """ORT's ``compute_percentile``."""
        hist, edges = self._hist, self._edges
        cdf = np.cumsum(hist / hist.sum())
        if self.symmetric:
            right = edges[np.searchsorted(cdf, self.percentile / 100.0)]
            return self._clip_to_data(-right, right)
        cut = (100.0 - self.percentile) / 200.0
        return self._clip_to_data(edges[np.searchsorted(cdf, cut)], edges[np.searchsorted(cdf, 1.0 - cut)])

    def _mse_range(self) -> tuple[F32, F32]:
        """The candidate window ``[edges[n - j], edges[j]]`` (clipped to the data) with the least
        expected squared error; the first one on ties (the narrowest). A histogram widened past
        4096 bins is scored on 2048 candidates and on bins merged ``f`` at a time (cost bound)."""
        hist, edges = self._hist, self._edges
        n = hist.size
        j = np.arange(n // 2 + 1, n + 1)[:: max(1, -(-(n - n // 2) // 2048))]
        dmin, dmax = self._minmax
        lo = np.maximum(edges[n - j], dmin).astype(F32)
        hi = np.minimum(edges[j], dmax).astype(F32)
        f = max(1, -(-n // 4096))
        if f > 1:
            hist = np.add.reduceat(hist, np.arange(0, n, f))
            edges = np.append(edges[:-1:f], edges[-1])
        scale, zp = compute_scale_zp(lo, hi, self.dtype, self.symmetric, self.reduce_range)
        qmin, qmax = qrange(self.dtype, self.symmetric, self.reduce_range)
        per = max(1, (1 << 21) // edges.size)
        err = np.concatenate([
            _calib_search.expected_sq_error(hist, edges, scale[b:b + per], zp[b:b + per], qmin, qmax)
            for b in range(0, j.size, per)
        ])
        best = int(np.argmin(err))
        return lo[best], hi[best]


def _histogram(x: np.ndarray, bins: int, lo: Any, hi: Any) -> tuple[np.ndarray, np.ndarray]:
    """``np.histogram`` with float32 range bounds (typed loosely: NumPy's stubs want floats)."""
    return np.histogram(x, bins, range=(lo, hi))
