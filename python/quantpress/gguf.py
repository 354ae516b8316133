"""GGUF block quantization: raw ggml block bytes in and out, byte-identical to the ``gguf`` package."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import _core
from ._arrays import as_float32, importance_weights
from ._core import QuantpressError

#: GGUF types this module quantizes, with (values per block, bytes per block).
GGUF_TYPES: dict[str, tuple[int, int]] = {
    "Q8_0": (32, 34),
    "Q4_0": (32, 18),
    "Q4_1": (32, 20),
    "Q5_0": (32, 22),
    "Q5_1": (32, 24),
    "Q2_K": (256, 84),
    "Q3_K": (256, 110),
    "Q4_K": (256, 144),
    "Q5_K": (256, 176),
    "Q6_K": (256, 210),
    "IQ4_NL": (32, 18),
    "IQ4_XS": (256, 136),
}

#: Types whose quantizer takes importance weights (llama.cpp's imatrix).
WEIGHTED_TYPES = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS")


def _type_name(qtype: Any) -> str:
    name = getattr(qtype, "name", qtype)  # accepts gguf.GGMLQuantizationType members too
    if not isinstance(name, str) or name.upper() not in GGUF_TYPES:
        raise QuantpressError(f"unknown GGUF type {qtype!r}: expected one of {', '.join(GGUF_TYPES)}")
    return name.upper()


def _check_out(out: np.ndarray, dtype: type, size: int, name: str) -> np.ndarray:
    if not isinstance(out, np.ndarray) or out.dtype != dtype or not out.flags.c_contiguous or not out.flags.writeable:
        raise QuantpressError(f"out must be a writeable, C-contiguous {np.dtype(dtype).name} array")
    if out.size != size:
        raise QuantpressError(f"out holds {out.size} elements, {name} needs {size}")
    return out


def gguf_quantize(
    w: Any, qtype: Any, *, weights: Any = None, dtype: str | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """Quantizes ``w`` into raw GGUF blocks, row by row along the last axis.

    For the legacy types the bytes equal ``gguf.quants.quantize(w.astype(np.float32), qtype)``
    exactly. The K-quants (``Q2_K`` … ``Q6_K``) and ``IQ4_NL``/``IQ4_XS``, which the ``gguf``
    package cannot make, follow ggml's reference quantizers (``ggml-quants.c``); their bytes
    decode with ``gguf.quants.dequantize`` to exactly what :func:`gguf_dequantize` gives.

    Args:
        w: float32/float16/bfloat16 array whose last dimension is a multiple of the block size
            (32, or 256 for the K-quants and IQ4_XS).
        qtype: a name in :data:`GGUF_TYPES` (or a ``gguf.GGMLQuantizationType``).
        weights: optional importance of each value (shape of ``w``) or of each column (shape
            ``(w.shape[-1],)``, like llama.cpp's imatrix); K-quant and IQ4 types only.
        dtype: ``"bfloat16"`` to read a uint16 array as bfloat16 bits.
        out: optional C-contiguous uint8 array of the result's size to write into (it is
            returned reshaped); saves an allocation when the same buffer is reused.

    Returns:
        uint8 array of shape ``(*w.shape[:-1], w.shape[-1] // 32 * bytes_per_block)``.

    Raises:
        QuantpressError: for a row length that is not a multiple of the block size, NaN/Inf,
            an empty or 0-d array, an unknown type, or weights of the wrong shape, negative
            or not finite.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> raw = qp.gguf_quantize(np.ones((2, 64), np.float32), "Q8_0")
        >>> raw.shape
        (2, 68)
    """
    name = _type_name(qtype)
    x, _ = as_float32(w, dtype)
    block, nbytes = GGUF_TYPES[name]
    row = x.shape[-1]
    if row % block:
        raise QuantpressError(f"row length {row} is not a multiple of the {name} block size {block}")
    if weights is not None and name not in WEIGHTED_TYPES:
        raise QuantpressError(f"importance weights apply to {', '.join(WEIGHTED_TYPES)}, not {name}")
    importance, _ = importance_weights(weights, x.shape, x.ndim - 1)
    size = x.size // block * nbytes
    out = np.empty(size, np.uint8) if out is None else _check_out(out, np.uint8, size, name)
    _core.gguf_quantize_into(x, row, name, out.reshape(-1), importance)
    return out.reshape(*x.shape[:-1], row // block * nbytes)


def gguf_dequantize(raw: Any, qtype: Any, shape: Sequence[int], *, out: np.ndarray | None = None) -> np.ndarray:
    """Decodes raw GGUF blocks into a float32 array of ``shape``.

    Equal to ``gguf.quants.dequantize(raw, qtype)`` reshaped to ``shape``.

    Args:
        raw: uint8 array (any shape, C-contiguous) or bytes-like holding the blocks.
        qtype: the GGUF type name (or a ``gguf.GGMLQuantizationType``).
        shape: the shape of the decoded tensor; its last dimension is a multiple of the block size.
        out: optional C-contiguous float32 array of ``shape``'s size to decode into (no
            allocation: inference servers reuse one buffer per thread).

    Returns:
        float32 array of ``shape``.

    Raises:
        QuantpressError: if the byte count does not match ``shape`` and ``qtype``.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> w = np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32)
        >>> y = qp.gguf_dequantize(qp.gguf_quantize(w, "Q8_0"), "Q8_0", w.shape)
        >>> bool(np.abs(y - w).max() < 0.01)
        True
    """
    name = _type_name(qtype)
    block, nbytes = GGUF_TYPES[name]
    shape = tuple(int(s) for s in shape)
    if not shape or any(s < 0 for s in shape) or shape[-1] % block:
        raise QuantpressError(f"shape {shape} is not a valid {name} shape (last dimension a multiple of {block})")
    data = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, (bytes, bytearray, memoryview)) else np.asarray(raw)
    if data.dtype != np.uint8:
        raise QuantpressError(f"raw must be uint8 bytes, got {data.dtype}")
    expected = int(np.prod(shape, dtype=np.int64)) // block * nbytes
    if data.size != expected:
        raise QuantpressError(f"{data.size} bytes given, a {name} tensor of shape {shape} needs {expected}")
    n = expected // nbytes * block
    out = np.empty(n, np.float32) if out is None else _check_out(out, np.float32, n, name)
    _core.gguf_dequantize_into(np.ascontiguousarray(data).reshape(-1), name, out.reshape(-1))
    return out.reshape(shape)
