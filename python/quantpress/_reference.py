"""Plain NumPy versions of the Rust kernels: the test oracle, never used for speed.

Each function states the exact float32 arithmetic the kernel performs, so the Rust results
(codes, packed bytes) must match bit for bit and floats exactly. The oracle for the GGUF block
types is the ``gguf`` package itself (``gguf.quants``), which the kernels reproduce byte for byte.
"""

from __future__ import annotations

from fractions import Fraction
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


#: bitsandbytes' NF4 codebook and the thresholds of its ``dQuantizeNF4`` decision tree.
NF4 = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0], dtype=F32)
#: The literals of bitsandbytes' ``dQuantizeNF4`` (csrc), low to high.
NF4_MID_LITERALS = (
    "-0.8480964004993439", "-0.6106329262256622", "-0.4599952697753906", "-0.33967943489551544",
    "-0.23460740596055984", "-0.13791173323988914", "-0.045525018125772476", "0.03979014977812767",
    "0.1202552504837513", "0.2035212516784668", "0.2920137718319893", "0.3893125355243683",
    "0.5016634166240692", "0.6427869200706482", "0.8614784181118011")


def f32_literal(text: str) -> np.float32:
    """A decimal literal rounded once to the nearest float32 (ties to even), as a C ``1.5f`` or a
    Rust ``f32`` literal is. ``np.float32(float(text))`` rounds twice, through float64, and the
    NF4 thresholds (midpoints of float32 values) are exactly where the two differ."""
    q = Fraction(text)
    a = np.float32(float(q))
    candidates = [np.nextafter(a, np.float32(-np.inf)), a, np.nextafter(a, np.float32(np.inf))]
    return min(candidates, key=lambda c: (abs(Fraction(float(c)) - q), int(np.float32(c).view(np.uint32)) & 1))


NF4_MID = np.array([f32_literal(t) for t in NF4_MID_LITERALS], dtype=F32)


def bnb_quantize_nf4(x: np.ndarray, blocksize: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A NumPy port of bitsandbytes' blockwise NF4 quantization (``kQuantizeBlockwise`` with
    ``dQuantizeNF4``): per block ``absmax = max|x|`` (float32), ``n = x * (1/absmax)`` in float32,
    code = the leaf of the threshold tree with strict ``>`` (NaN falls to code 0).

    Returns unpacked codes and float32 absmax. bitsandbytes then packs element ``2j`` into the
    *high* nibble of byte ``j`` (see :func:`bnb_pack`); quantpress packs it into the low one.
    """
    g = np.asarray(x, dtype=F32).reshape(-1, blocksize)
    absmax = np.abs(g).max(axis=1)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # 1/0 and 1/subnormal: inf
        n = g * (F32(1) / absmax)[:, None]
        codes = (n[..., None] > NF4_MID).sum(axis=-1).astype(np.uint8)
    return codes.reshape(-1), absmax.astype(F32)


def bnb_pack(codes: np.ndarray) -> np.ndarray:
    """bitsandbytes' nibble order: element ``2j`` in the high nibble of byte ``j``."""
    c = np.asarray(codes, dtype=np.uint8).reshape(-1, 2)
    return (c[:, 0] << 4) | (c[:, 1] & 0x0F)


# --- activation calibration ---


def fake_quantize(x: np.ndarray, scale: float, zero_point: int, qmin: int, qmax: int) -> np.ndarray:
    """ONNX QuantizeLinear then DequantizeLinear, float32: ``(clip(rint(x / s) + z) - z) * s``."""
    s = F32(scale)
    q = np.clip(np.rint(np.asarray(x, dtype=F32) / s) + F32(zero_point), qmin, qmax)
    return ((q - F32(zero_point)) * s).astype(F32)


def raw_mse(x: np.ndarray, scale: float, zero_point: int, qmin: int, qmax: int) -> float:
    """Mean squared quantize-dequantize error of the raw values (float64 accumulation)."""
    d = fake_quantize(x, scale, zero_point, qmin, qmax).astype(np.float64) - np.asarray(x, dtype=np.float64)
    return float(np.mean(d * d))


def histogram_sq_error_numeric(hist: np.ndarray, edges: np.ndarray, scale: float, zero_point: int,
                               qmin: int, qmax: int, points: int = 4096) -> float:
    """The expected squared error of the MSE method by brute force: every bin's mass spread over
    ``points`` equally spaced values (midpoint rule) and quantized one by one."""
    e = np.asarray(edges, dtype=np.float64)
    total = 0.0
    for j in np.flatnonzero(hist):
        u = e[j] + (np.arange(points) + 0.5) / points * (e[j + 1] - e[j])
        q = np.clip(np.rint(u / scale) + zero_point, qmin, qmax)
        total += hist[j] * float(np.mean((u - (q - zero_point) * scale) ** 2))
    return total / float(hist.sum())


def brute_force_mse_range(x: np.ndarray, candidates: np.ndarray, dtype: str, symmetric: bool) -> tuple[int, np.ndarray]:
    """Index of the ``(rmin, rmax)`` candidate row with the least raw-data MSE, and every MSE."""
    from .calibrate import compute_scale_zp, qrange  # the oracle reuses ORT's parameter rule only

    qmin, qmax = qrange(dtype, symmetric)
    errs = []
    for lo, hi in candidates:
        s, z = compute_scale_zp(lo, hi, dtype, symmetric)
        errs.append(raw_mse(x, float(s), int(z), qmin, qmax))
    errs_a = np.array(errs)
    return int(np.argmin(errs_a)), errs_a
