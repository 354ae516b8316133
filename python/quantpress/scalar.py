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
    is ``NF4[code[i]] * scale`` with bitsandbytes' 16-value codebook. Codes run over the
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
        if scales.dtype.name not in SCALE_DTYPES or scales.size != int(np.prod(sshape)):
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

    @property
    def nbytes(self) -> int:
        """Every stored byte: packed codes, scales and zero points."""
        return self.codes.nbytes + self.scales.nbytes + (0 if self.zeros is None else self.zeros.nbytes)

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
        }

    def dequantize(self, dtype: Any = None) -> np.ndarray:
        """Reconstructs the tensor (float32 by default, or ``dtype``) in its original shape."""
        ax, g, _ = _layout(self.shape, self.axis, self.group_size)
        n = int(np.prod(self.shape, dtype=np.int64))
        scales = np.ascontiguousarray(self.scales).reshape(-1)
        zeros = None if self.zeros is None else np.ascontiguousarray(self.zeros, dtype=self.scales.dtype).reshape(-1)
        flat = _core.rtn_dequantize(
            self.codes, scales, zeros, n, int(self.bits), g, self.scheme, self.scales.dtype.name
        )
        if ax < 0:
            return cast_output(flat.reshape(self.shape), dtype)
        moved = tuple(s for i, s in enumerate(self.shape) if i != ax) + (self.shape[ax],)
        return cast_output(np.ascontiguousarray(np.moveaxis(flat.reshape(moved), -1, ax)), dtype)

    def __repr__(self) -> str:
        return (f"QuantizedTensor(shape={self.shape}, bits={self.bits}, scheme={self.scheme!r}, "
                f"method={self.method!r}, group_size={self.group_size}, axis={self.axis}, bits_per_weight={self.bits_per_weight:.3f})")


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

    Returns:
        A :class:`QuantizedTensor`.

    Raises:
        QuantpressError: empty input, NaN/Inf, bits out of range, a group size that does not
            divide the axis, an unknown scheme or method, scales that overflow float16, weights
            with ``"rtn"``/``"hqq"``, bad weights (shape, NaN/Inf, negative), ``"hqq"`` with a
            scheme other than affine, ``"mse"`` with nf4.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> w = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
        >>> qt = qp.quantize(w, bits=4, group_size=128)
        >>> round(qt.bits_per_weight, 3)
        4.25
        >>> err = np.abs(qt.dequantize() - w).max()
        >>> bool(err <= qt.scales.astype(np.float32).max() / 2 * 1.0001)
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
    x, original = as_float32(w, dtype)
    ax, g, sshape = _layout(x.shape, axis, group_size)
    moved = x.reshape(-1) if ax < 0 else np.ascontiguousarray(np.moveaxis(x, ax, -1)).reshape(-1)
    if method == "rtn":
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
