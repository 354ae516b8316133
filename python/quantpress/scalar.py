"""Round-to-nearest scalar quantization of weight tensors: 1 to 8 bits, per tensor, per channel or
per group, affine or symmetric. Layout of every part in docs/format.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from . import _core
from ._arrays import as_float32, cast_output, importance_weights
from ._core import QuantpressError

SCHEMES = ("affine", "symmetric", "nf4")
SCALE_DTYPES = ("float16", "float32")
METHODS = ("rtn", "mse", "hqq")
#: Scales per second-level block of NF4 double quantization (bitsandbytes' blocksize 256).
DQ_BLOCK = 256


def _dynamic_map() -> np.ndarray:
    """bitsandbytes' signed 8-bit dynamic map (``create_dynamic_map(signed=True)``, float32,
    sorted) with entry 0 set to -1, as its CPU ``quantize_blockwise`` kernel sets it."""
    f32 = np.float32
    values = [np.array([0.0, 1.0], f32)]
    for i in range(7):
        steps = 2 ** i + 1
        k = np.arange(steps)
        step = (f32(1.0) - f32(0.1)) / f32(steps - 1)  # torch.linspace(0.1, 1, steps), float32
        b = np.where(k < steps // 2, f32(0.1) + step * k.astype(f32), f32(1.0) - step * (steps - 1 - k).astype(f32))
        means = (b[:-1] + b[1:]) / f32(2)
        v = f32(10 ** (-6 + i)) * means
        values += [v, -v]
    code = np.sort(np.concatenate(values).astype(f32))
    code[0] = f32(-1.0)
    return code


DYNAMIC_MAP = _dynamic_map()


def _double_quant(absmax: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NF4 double quantization of float32 scales (bitsandbytes' ``compress_statistics``, CPU
    rounding): ``offset = mean``, then per block of 256 of ``absmax - offset``: ``absmax2 =
    max|v|`` and the nearest dynamic-map entry to ``v * (1/absmax2)`` clamped to [-1, 1] (ties to
    the lower entry). Returns ``(uint8 codes, float32 absmax2, float32 offset of shape (1,))``."""
    a = absmax.astype(np.float32).reshape(-1)
    offset = np.float32(a.mean(dtype=np.float64))
    codes, absmax2 = _quantize_dynamic(a - offset)
    return codes, absmax2, np.array([offset], np.float32)


def _quantize_dynamic(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """bitsandbytes' CPU ``quantize_blockwise`` of float32 ``a`` with :data:`DYNAMIC_MAP` in
    blocks of 256 (the last may be short): ``(uint8 codes, float32 absmax per block)``."""
    nb = -(-a.size // DQ_BLOCK)
    v = np.zeros(nb * DQ_BLOCK, np.float32)
    v[: a.size] = a
    blocks = v.reshape(nb, DQ_BLOCK)
    absmax2 = np.abs(blocks).max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        normed = blocks * (np.float32(1) / absmax2)[:, None]  # 0 * inf = NaN: an all-zero block
    nan = np.isnan(normed)
    c = np.clip(np.where(nan, np.float32(0), normed), np.float32(-1), np.float32(1))
    right = np.clip(np.searchsorted(DYNAMIC_MAP, c, side="left"), 1, DYNAMIC_MAP.size - 1)
    left = right - 1
    nearer_right = np.abs(DYNAMIC_MAP[right] - c) < np.abs(c - DYNAMIC_MAP[left])
    codes = np.where(nearer_right, right, left)
    codes[nan] = 0
    return codes.astype(np.uint8).reshape(-1)[: a.size], absmax2.astype(np.float32)


def _double_dequant(codes: np.ndarray, absmax2: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``map[code] * absmax2[block] + offset`` in float32 (bitsandbytes' ``dequantize_blockwise``
    and ``+= offset``)."""
    q = codes.reshape(-1)
    return DYNAMIC_MAP[q] * np.repeat(absmax2, DQ_BLOCK)[: q.size] + offset[0]


def _layout(shape: tuple[int, ...], axis: Optional[int], group_size: Optional[int]) -> tuple[int, int, tuple[int, ...]]:
    """Returns ``(normalised axis or -1 for per-tensor, group size, scales shape)``."""
    if axis is None:
        n = int(np.prod(shape, dtype=np.int64))
        if group_size not in (None, n):
            raise QuantpressError("per-tensor quantization (axis=None) takes group_size=None")
        return -1, n, (1,)
    if not isinstance(axis, (int, np.integer)) or not -len(shape) <= axis < len(shape):
        raise QuantpressError(f"axis {axis!r} is out of range for a tensor of shape {shape}")
    ax = int(axis) % len(shape)
    n = shape[ax]
    g = n if group_size is None else group_size
    if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g <= 0:
        raise QuantpressError(f"group_size must be a positive integer or None, got {group_size!r}")
    if n % g:
        raise QuantpressError(f"group_size {g} does not divide the length {n} of axis {ax} (shape {shape})")
    outer = tuple(s for i, s in enumerate(shape) if i != ax)
    return ax, int(g), outer + (n // int(g),)


@dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """A tensor quantized by :func:`quantize`: packed codes plus per-group scales and zero points.

    The value of element ``i`` of a group is ``(code[i] - zero) * scale`` (``zero`` is an integer
    for ``method="rtn"``, any float for ``"mse"`` and ``"hqq"``); for the symmetric
    scheme ``zero`` is the implicit ``2**(bits-1)`` and ``zeros`` is ``None``; for ``"nf4"`` it
    is ``NF4[code[i]] * scale`` with bitsandbytes' 16-value codebook. Double-quantized NF4
    (``double_quant=True``) stores the scales as uint8 codes of bitsandbytes' 8-bit dynamic map
    with ``scales_absmax`` (float32, one per 256 scales) and ``scales_offset`` (float32, shape
    ``(1,)``); :meth:`scale_values` decodes them. Codes run over the
    tensor with ``axis`` moved last, in C order, packed as a little-endian bit stream.
    All parts are plain NumPy arrays; ``QuantizedTensor(**qt.parts())`` rebuilds the tensor.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> w = np.random.default_rng(0).standard_normal((8, 128)).astype(np.float32)
        >>> qt = qp.quantize(w, bits=4, group_size=64)
        >>> qt.codes.nbytes, qt.scales.shape
        (512, (8, 2))
        >>> back = qp.QuantizedTensor(**qt.parts()).dequantize()
        >>> back.shape
        (8, 128)
    """

    codes: np.ndarray
    scales: np.ndarray
    zeros: Optional[np.ndarray]
    shape: tuple[int, ...]
    bits: int
    group_size: Optional[int]
    axis: Optional[int]
    scheme: str = "affine"
    dtype: str = "float32"
    method: str = "rtn"
    scales_absmax: Optional[np.ndarray] = None
    scales_offset: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        object.__setattr__(self, "shape", shape)
        if self.method not in METHODS:
            raise QuantpressError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.scheme not in SCHEMES:
            raise QuantpressError(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")
        if not 1 <= int(self.bits) <= 8:
            raise QuantpressError(f"bits must be between 1 and 8, got {self.bits}")
        if not shape or any(s <= 0 for s in shape):
            raise QuantpressError(f"shape {shape} must be non-empty with positive dimensions")
        ax, g, sshape = _layout(shape, self.axis, self.group_size)
        n = int(np.prod(shape, dtype=np.int64))
        codes, scales = np.asarray(self.codes), np.asarray(self.scales)
        if codes.dtype != np.uint8 or codes.size != (n * int(self.bits) + 7) // 8:
            raise QuantpressError(f"codes must be {(n * int(self.bits) + 7) // 8} uint8 bytes, got {codes.size} {codes.dtype}")
        if scales.dtype == np.uint8 or self.scales_absmax is not None or self.scales_offset is not None:
            self._check_double_quant(scales, int(np.prod(sshape)))
        elif scales.dtype.name not in SCALE_DTYPES or scales.size != int(np.prod(sshape)):
            raise QuantpressError(f"scales must be float16/float32 of shape {sshape}, got {scales.dtype} {scales.shape}")
        object.__setattr__(self, "codes", codes.reshape(-1))
        object.__setattr__(self, "scales", scales.reshape(sshape))
        if (self.zeros is None) != (self.scheme != "affine"):
            raise QuantpressError("zeros must be given for the affine scheme and None for the others")
        if self.zeros is not None:
            zeros = np.asarray(self.zeros)
            if zeros.dtype != scales.dtype or zeros.size != scales.size:
                raise QuantpressError(f"zeros must match scales ({scales.dtype} {sshape}), got {zeros.dtype} {zeros.shape}")
            object.__setattr__(self, "zeros", zeros.reshape(sshape))

    def _check_double_quant(self, scales: np.ndarray, n_scales: int) -> None:
        """Validates (and normalises) the parts of double-quantized NF4 scales."""
        if self.scheme != "nf4" or scales.dtype != np.uint8 or scales.size != n_scales:
            raise QuantpressError(f"double-quantized scales are {n_scales} uint8 codes of an nf4 tensor, got {scales.dtype} {scales.shape} ({self.scheme})")
        if self.scales_absmax is None or self.scales_offset is None:
            raise QuantpressError("double-quantized scales need both scales_absmax and scales_offset")
        absmax2, offset = np.asarray(self.scales_absmax), np.asarray(self.scales_offset)
        nb = -(-n_scales // DQ_BLOCK)
        if absmax2.dtype != np.float32 or absmax2.size != nb or offset.dtype != np.float32 or offset.size != 1:
            raise QuantpressError(f"scales_absmax must be {nb} float32 values and scales_offset one, got {absmax2.dtype} {absmax2.shape}, {offset.dtype} {offset.shape}")
        if not (np.all(np.isfinite(absmax2)) and np.all(absmax2 >= 0) and np.isfinite(offset).all()):
            raise QuantpressError("scales_absmax must be finite and non-negative, scales_offset finite")
        object.__setattr__(self, "scales_absmax", absmax2.reshape(-1))
        object.__setattr__(self, "scales_offset", offset.reshape(1))

    @property
    def double_quant(self) -> bool:
        """Whether the scales are double-quantized (NF4 only)."""
        return self.scales_absmax is not None

    def scale_values(self) -> np.ndarray:
        """The per-group scales as stored (float16/float32), or decoded to float32 from the 8-bit
        codes of a double-quantized tensor: ``map[code] * scales_absmax[i // 256] + offset``."""
        if self.scales_absmax is None or self.scales_offset is None:
            return self.scales
        return _double_dequant(self.scales, self.scales_absmax, self.scales_offset).reshape(self.scales.shape)

    @property
    def nbytes(self) -> int:
        """Every stored byte: packed codes, scales and zero points (and the second-level scales
        and offset of double-quantized NF4)."""
        extra = sum(a.nbytes for a in (self.zeros, self.scales_absmax, self.scales_offset) if a is not None)
        return self.codes.nbytes + self.scales.nbytes + extra

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per element, scales and zero points included."""
        return self.nbytes * 8 / int(np.prod(self.shape, dtype=np.int64))

    def parts(self) -> dict[str, Any]:
        """The arrays and parameters that rebuild this tensor with ``QuantizedTensor(**parts)``."""
        return {
            "codes": self.codes, "scales": self.scales, "zeros": self.zeros, "shape": self.shape,
            "bits": self.bits, "group_size": self.group_size, "axis": self.axis,
            "scheme": self.scheme, "dtype": self.dtype, "method": self.method,
            "scales_absmax": self.scales_absmax, "scales_offset": self.scales_offset,
        }

    def dequantize(self, dtype: Any = None) -> np.ndarray:
        """Reconstructs the tensor (float32 by default, or ``dtype``) in its original shape."""
        ax, g, _ = _layout(self.shape, self.axis, self.group_size)
        n = int(np.prod(self.shape, dtype=np.int64))
        stored = self.scale_values()
        scales = np.ascontiguousarray(stored).reshape(-1)
        zeros = None if self.zeros is None else np.ascontiguousarray(self.zeros, dtype=stored.dtype).reshape(-1)
        flat = _core.rtn_dequantize(self.codes, scales, zeros, n, int(self.bits), g, self.scheme, stored.dtype.name)
        if ax < 0:
            return cast_output(flat.reshape(self.shape), dtype)
        moved = tuple(s for i, s in enumerate(self.shape) if i != ax) + (self.shape[ax],)
        return cast_output(np.ascontiguousarray(np.moveaxis(flat.reshape(moved), -1, ax)), dtype)

    def __repr__(self) -> str:
        return (f"QuantizedTensor(shape={self.shape}, bits={self.bits}, scheme={self.scheme!r}, "
                f"method={self.method!r}, double_quant={self.double_quant}, group_size={self.group_size}, axis={self.axis}, bits_per_weight={self.bits_per_weight:.3f})")


def quantize(
    w: Any,
    bits: int = 4,
    group_size: Optional[int] = 64,
    scheme: str = "affine",
    axis: Optional[int] = -1,
    scale_dtype: str = "float16",
    *,
    dtype: Optional[str] = None,
    method: str = "rtn",
    weights: Any = None,
    double_quant: bool = False,
) -> QuantizedTensor:
    """Quantizes a tensor to ``bits``-bit integers, per group, by rounding to nearest (RTN) or
    with a searched scale / zero point (``method="mse"`` or ``"hqq"``).

    Groups of ``group_size`` consecutive elements along ``axis`` share a scale (and, for the
    affine scheme, an integer zero point). ``group_size=None`` makes one group of the whole axis
    (per-channel: one scale per row for ``axis=-1`` on an ``[out, in]`` matrix); ``axis=None``
    makes the whole tensor one group (per-tensor). Scales are rounded up to ``scale_dtype``, so
    every element is reconstructed within half a scale step.

    Args:
        w: float32, float16, bfloat16 (``ml_dtypes``) or float64 array, C- or F-ordered.
        bits: code width, 1 to 8 (symmetric needs at least 2).
        group_size: elements per group along ``axis``; must divide that axis. ``None``: whole axis.
        scheme: ``"affine"`` (range ``[min(x,0), max(x,0)]``, integer zero point),
            ``"symmetric"`` (codes ``-(2**(bits-1)-1) .. 2**(bits-1)-1`` times the scale) or
            ``"nf4"`` (bitsandbytes' 4-bit NormalFloat: scale = absmax of the group, codes
            bit-exact to bitsandbytes' ``quantize_4bit`` with float32 scales; bits must be 4).
        axis: the axis along which groups run; ``None`` for per-tensor.
        scale_dtype: ``"float16"`` or ``"float32"`` storage of scales and zero points.
        dtype: ``"bfloat16"`` to read a uint16 array as bfloat16 bits.
        method: ``"rtn"`` (round to nearest, above); ``"mse"``: per group, llama.cpp's scale
            search (``make_qkx2_quants`` for affine, ``make_qx_quants`` for symmetric) for the
            lowest (weighted) squared error, stored only where it beats RTN, so no group is worse
            (affine and symmetric; zero points become floats); ``"hqq"``: HQQ's half-quadratic
            optimisation of a float zero point (lp norm 0.7, 20 iterations; affine only).
            Scales and zero points are rounded to ``scale_dtype`` and the codes recomputed for
            the stored values. Layout in docs/format.md.
        weights: ``method="mse"`` only: non-negative importance of each element (shape of
            ``w``) or of each column (shape ``(w.shape[-1],)``, broadcast over rows, like
            llama.cpp's imatrix). Giving weights with ``"rtn"`` or ``"hqq"`` is an error.
        double_quant: ``scheme="nf4"`` only: bitsandbytes' double quantization
            (``compress_statistics=True``). The float32 absmax scales (codes are computed with
            them, as in bitsandbytes) are stored as 8-bit codes of its signed dynamic map per
            block of 256 scales, with a float32 absmax per block and one float32 offset (the
            mean of the scales); ``scale_dtype`` does not apply. 64-value groups: about 4.127
            bits per weight instead of 4.5.

    Returns:
        A :class:`QuantizedTensor`.

    Raises:
        QuantpressError: empty input, NaN/Inf, bits out of range, a group size that does not
            divide the axis, an unknown scheme or method, scales that overflow float16, weights
            with ``"rtn"``/``"hqq"``, bad weights (shape, NaN/Inf, negative), ``"hqq"`` with a
            scheme other than affine, ``"mse"`` with nf4, ``double_quant`` without nf4.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> w = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
        >>> qt = qp.quantize(w, bits=4, group_size=128)
        >>> round(qt.bits_per_weight, 3)
        4.25
        >>> err = np.abs(qt.dequantize() - w).max()
        >>> bool(err <= qt.scales.astype(np.float32).max() / 2 * 1.0001)
        True
        >>> nf = qp.quantize(w, scheme="nf4", group_size=64, double_quant=True)
        >>> nf.scales.dtype, nf.scales_absmax.shape, round(nf.bits_per_weight, 3)
        (dtype('uint8'), (1,), 4.129)
        >>> bool(np.abs(nf.dequantize() - w).max() < 0.2 * np.abs(w).max())
        True
    """
    if scheme not in SCHEMES:
        raise QuantpressError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if scale_dtype not in SCALE_DTYPES:
        raise QuantpressError(f"scale_dtype must be one of {SCALE_DTYPES}, got {scale_dtype!r}")
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise QuantpressError(f"bits must be an integer between 1 and 8, got {bits!r}")
    if method not in METHODS:
        raise QuantpressError(f"method must be one of {METHODS}, got {method!r}")
    if weights is not None and method != "mse":
        raise QuantpressError(f"importance weights apply to method='mse' only, not {method!r}")
    if method == "hqq" and scheme != "affine":
        raise QuantpressError(f"method='hqq' optimises an affine zero point: scheme must be 'affine', got {scheme!r}")
    if not isinstance(double_quant, (bool, np.bool_)) or (double_quant and (scheme, method) != ("nf4", "rtn")):
        raise QuantpressError(f"double_quant=True applies to scheme='nf4', method='rtn' only (got {double_quant!r}, {scheme!r}, {method!r})")
    x, original = as_float32(w, dtype)
    ax, g, sshape = _layout(x.shape, axis, group_size)
    moved = x.reshape(-1) if ax < 0 else np.ascontiguousarray(np.moveaxis(x, ax, -1)).reshape(-1)
    dq: dict[str, Any] = {}
    if double_quant:
        codes, absmax, zeros = _core.rtn_quantize(moved, int(bits), g, scheme, "float32")
        scales, dq["scales_absmax"], dq["scales_offset"] = _double_quant(absmax)
    elif method == "rtn":
        codes, scales, zeros = _core.rtn_quantize(moved, int(bits), g, scheme, scale_dtype)
    elif method == "hqq":
        codes, scales, zeros = _core.hqq_quantize(moved, int(bits), g, scheme, scale_dtype)
    else:
        wv, row_len = importance_weights(weights, x.shape, ax)
        codes, scales, zeros = _core.mse_quantize(moved, int(bits), g, scheme, scale_dtype, wv, row_len)
    return QuantizedTensor(
        codes=codes,
        scales=scales.reshape(sshape),
        zeros=None if zeros is None else zeros.reshape(sshape),
        shape=tuple(x.shape),
        bits=int(bits),
        group_size=None if axis is None else (None if group_size is None else g),
        axis=None if axis is None else int(axis),
        scheme=scheme,
        dtype=original,
        method=method,
        **dq,
    )


def pack_bits(codes: Any, bits: int) -> np.ndarray:
    """Packs integer codes (each below ``2**bits``) into bytes, little-endian bit stream.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> qp.pack_bits(np.array([1, 2, 3], np.uint8), 4)
        array([33,  3], dtype=uint8)
    """
    c = np.asarray(codes)
    if c.dtype.kind not in "iu" or (c.size and (c.min() < 0 or c.max() > 255)):
        raise QuantpressError("codes must be integers between 0 and 255")
    return _core.pack_bits(np.ascontiguousarray(c, dtype=np.uint8).reshape(-1), int(bits))


def unpack_bits(packed: Any, bits: int, n: int) -> np.ndarray:
    """Unpacks ``n`` codes of ``bits`` bits packed by :func:`pack_bits`.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> qp.unpack_bits(np.array([33, 3], np.uint8), 4, 3)
        array([1, 2, 3], dtype=uint8)
    """
    if int(n) < 0 or not 1 <= int(bits) <= 8:
        raise QuantpressError(f"cannot unpack {n} codes of {bits} bits")
    p = np.ascontiguousarray(np.asarray(packed), dtype=np.uint8).reshape(-1)
    return _core.unpack_bits(p, int(bits), int(n))
