"""Plain NumPy versions of the Rust kernels: the test oracle, never used for speed.

Each function states the exact float32 arithmetic the kernel performs, so the Rust results
(codes, packed bytes) must match bit for bit and floats exactly. The oracle for the GGUF block
types is the ``gguf`` package itself (``gguf.quants``), which the kernels reproduce byte for byte.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

F32 = np.float32


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Little-endian bit stream: code i at stream bits [i*bits, (i+1)*bits), LSB first."""
    c = np.asarray(codes, dtype=np.uint8).reshape(-1, 1)
    stream = np.unpackbits(c, axis=1, bitorder="little")[:, :bits].reshape(-1)
    return np.packbits(stream, bitorder="little")


def unpack_bits(packed: np.ndarray, bits: int, n: int) -> np.ndarray:
    stream = np.unpackbits(np.asarray(packed, dtype=np.uint8), bitorder="little")[: n * bits]
    weights = (1 << np.arange(bits)).astype(np.uint16)
    return (stream.reshape(n, bits).astype(np.uint16) @ weights).astype(np.uint8)


def _round_up(s: np.ndarray, scale_dtype: str) -> np.ndarray:
    """The smallest scale_dtype value >= max(s, float32 tiny) for s > 0, as float32."""
    tiny = np.finfo(F32).tiny
    s = np.where((s > 0) & (s < tiny), tiny, s).astype(F32)
    if scale_dtype == "float32":
        return s.astype(F32)
    h = s.astype(np.float16)
    bump = h.astype(F32) < s
    h = np.where(bump, (h.view(np.uint16) + np.uint16(1)).view(np.float16), h)
    return h.astype(F32)


def rtn_quantize(x: np.ndarray, bits: int, group_size: int, scheme: str, scale_dtype: str
                 ) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Unpacked codes, scales and zeros (float32) of a flat float32 array; see rust/scalar/rtn.rs."""
    g = np.asarray(x, dtype=F32).reshape(-1, group_size)
    top = F32(2**bits - 1)
    gmin, gmax = g.min(axis=1), g.max(axis=1)
    if scheme == "affine":
        mn = np.where(gmin < 0, gmin, F32(0)).astype(F32)
        mx = np.where(gmax > 0, gmax, F32(0)).astype(F32)
        scale = _round_up((mx - mn) / top, scale_dtype)
        with np.errstate(divide="ignore", invalid="ignore"):
            zero = np.where(scale > 0, np.clip(np.rint(-mn / scale), 0, top), F32(0)).astype(F32) + F32(0)
        lo = F32(0)
    else:
        amax = np.maximum(np.abs(gmin), np.abs(gmax))
        qm = F32(2 ** (bits - 1) - 1)
        scale = _round_up(amax / qm, scale_dtype)
        zero = np.full_like(scale, F32(2 ** (bits - 1)))
        lo = F32(1)
    with np.errstate(divide="ignore"):
        inv = np.where(scale > 0, F32(1) / scale, F32(0)).astype(F32)
    codes = np.clip(np.rint(g * inv[:, None]) + zero[:, None], lo, top).astype(np.uint8)
    return codes.reshape(-1), scale, (zero if scheme == "affine" else None)


def rtn_dequantize(codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray, group_size: int) -> np.ndarray:
    """``(code - zero) * scale`` per group, float32 (zeros: the per-group zero point, float32)."""
    c = np.asarray(codes).reshape(-1, group_size).astype(F32)
    return ((c - zeros.astype(F32)[:, None]) * scales.astype(F32)[:, None]).reshape(-1)
