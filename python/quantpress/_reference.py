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


# --- K-quants: Q6_K, Q3_K, IQ4_NL, IQ4_XS ---
# Vectorized NumPy ports of ggml's quantize_row_q6_K_ref / quantize_row_q6_K_impl and
# quantize_iq4_nl (rust/scalar/kquants/q6_k.rs, iq4_nl.rs). Every sum runs over the values of a
# sub-block in ggml's sequential order (vectorized across sub-blocks), in float32, so the bytes
# equal the Rust (and ggml's) exactly.

KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)
_IQ4_MID2 = (KVALUES_IQ4NL[:-1].astype(np.int32) + KVALUES_IQ4NL[1:]).astype(F32)  # doubled midpoints
_GROUP_MAX_EPS = F32(1e-15)


def _signed_max(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the first value of largest magnitude (with its sign) and that magnitude."""
    i = np.argmax(np.abs(x), axis=1)
    m = x[np.arange(x.shape[0]), i]
    return m, np.abs(m)


def _make_qx_quants(x: np.ndarray, nmax: int, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml's make_qx_quants (rmse_type 1) on rows of ``x`` with weights ``w``: (scales, codes)."""
    mx, amax = _signed_max(x)
    lo, hi = F32(-nmax), F32(nmax - 1)

    def sums(iscale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sumlx = np.zeros(x.shape[0], F32)
        suml2 = np.zeros(x.shape[0], F32)
        for i in range(x.shape[1]):
            lv = np.rint(np.clip(iscale * x[:, i], lo, hi))
            sumlx = sumlx + (w[:, i] * x[:, i]) * lv
            suml2 = suml2 + (w[:, i] * lv) * lv
        return sumlx, suml2

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # all-zero rows: masked
        best_iscale = F32(-nmax) / mx
        sumlx, suml2 = sums(best_iscale)
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0))
        best = scale * sumlx
        for k in [k for k in range(-9, 10) if k != 0]:
            iscale = -(F32(nmax) + F32(0.1) * F32(k)) / mx
            sumlx, suml2 = sums(iscale)
            better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            s = sumlx / suml2
            scale, best = np.where(better, s, scale), np.where(better, s * sumlx, best)
            best_iscale = np.where(better, iscale, best_iscale)
        codes = np.rint(np.clip(best_iscale[:, None] * x, lo, hi)) + F32(nmax)
    live = amax >= _GROUP_MAX_EPS
    return np.where(live, scale, F32(0)), np.where(live[:, None], codes, 0).astype(np.uint8)


def gguf_quantize_q6_k(x: np.ndarray, weights: Optional[np.ndarray] = None) -> np.ndarray:
    """Q6_K blocks (210 bytes per 256 values) of float32 ``x``; ``weights`` one per value."""
    xb = np.asarray(x, F32).reshape(-1, 16)
    w = xb * xb if weights is None else np.asarray(weights, F32).reshape(-1, 16)
    scales, codes = _make_qx_quants(xb, 32, w)
    scales = scales.reshape(-1, 16)
    nb = scales.shape[0]
    ms, mabs = _signed_max(scales)
    live = mabs >= _GROUP_MAX_EPS
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = F32(-128) / ms
        d16 = np.where(live, F32(1) / iscale, F32(0)).astype(np.float16)
        sc = np.minimum(np.where(live[:, None], np.rint(iscale[:, None] * scales), 0), 127).astype(np.int8)
        dsub = (d16.astype(F32)[:, None] * sc.astype(F32)).reshape(-1)
        req = np.clip(np.rint(xb / dsub[:, None]), -32, 31) + 32
    codes = np.where((dsub != 0)[:, None], req, codes).astype(np.uint8).reshape(nb, 2, 4, 32)
    ql = (codes[:, :, 0:2] & 0xF) | ((codes[:, :, 2:4] & 0xF) << 4)  # (nb, half, 2, 32)
    qh = sum(((codes[:, :, k] >> 4) << (2 * k)) for k in range(4))
    out = np.concatenate([ql.reshape(nb, 128), qh.astype(np.uint8).reshape(nb, 64), sc.view(np.uint8), d16.view(np.uint8).reshape(nb, 2)], axis=1)
    return np.where(live[:, None], out, 0).astype(np.uint8).reshape(-1)


def _iq4_index(v: np.ndarray) -> np.ndarray:
    """ggml's best_index_int8 on the IQ4 levels, as the midpoint rule (equal, see the Rust tests)."""
    return np.searchsorted(_IQ4_MID2, v + v, side="right").astype(np.uint8)


def gguf_quantize_iq4_nl(x: np.ndarray, weights: Optional[np.ndarray] = None) -> np.ndarray:
    """IQ4_NL blocks (18 bytes per 32 values) of float32 ``x``; ``weights`` one per value."""
    xb = np.asarray(x, F32).reshape(-1, 32)
    if weights is None:
        w = xb * xb
    else:
        sigma2 = np.zeros(xb.shape[0], F32)
        for j in range(32):
            sigma2 = sigma2 + xb[:, j] * xb[:, j]
        sigma2 = sigma2 * (F32(2) / F32(32))
        w = np.asarray(weights, F32).reshape(-1, 32) * np.sqrt(sigma2[:, None] + xb * xb)
    mx, amax = _signed_max(xb)
    v0 = F32(-127)
    lv = KVALUES_IQ4NL.astype(F32)

    def sums(idv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = lv[_iq4_index(idv[:, None] * xb)]
        sumqx = np.zeros(xb.shape[0], F32)
        sumq2 = np.zeros(xb.shape[0], F32)
        for j in range(32):
            wq = w[:, j] * q[:, j]
            sumqx, sumq2 = sumqx + wq * xb[:, j], sumq2 + wq * q[:, j]
        return sumqx, sumq2

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # all-zero blocks: masked
        sumqx, sumq2 = sums(F32(1) / (-mx / v0))
        d = np.where(sumq2 > 0, sumqx / sumq2, F32(0))
        best = d * sumqx
        for itry in range(-7, 8):
            sumqx, sumq2 = sums((F32(itry) + v0) / mx)
            better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
            s = sumqx / sumq2
            d, best = np.where(better, s, d), np.where(better, s * sumqx, best)
        d = np.where(amax >= _GROUP_MAX_EPS, d, F32(0))
        idv = np.where(d != 0, F32(1) / d, F32(0))
        codes = _iq4_index(idv[:, None] * xb)
    qs = codes[:, :16] | (codes[:, 16:] << 4)
    return np.concatenate([d.astype(np.float16).view(np.uint8).reshape(-1, 2), qs], axis=1).reshape(-1)
