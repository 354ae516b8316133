"""Plain NumPy versions of the Rust kernels: the test oracle, never used for speed.

Each function states the exact float32 arithmetic the kernel performs, so the Rust results
(codes, packed bytes) must match bit for bit and floats exactly. The oracle for the GGUF block
types is the ``gguf`` package itself (``gguf.quants``), which the kernels reproduce byte for byte.
"""

from __future__ import annotations

import math
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


# --- K-quants: Q4_K, Q5_K, Q2_K ---
# A vectorized port of ggml's Q4_K quantizer (quantize_row_q4_K_ref, and quantize_row_q4_K_impl
# with importance weights). Every float32 operation is done in the same order as the C (and as
# quantpress' scalar kernel): sums run sequentially over a sub-block's values, vectorized across
# sub-blocks, so the bytes are identical.


def _kq_nearest(v: np.ndarray) -> np.ndarray:
    """ggml's ``nearest_int`` bit trick (round half to even for |v| <= 2^22)."""
    b = (np.asarray(v, dtype=F32) + F32(12582912.0)).view(np.int32)
    return (b & 0x007FFFFF) - 0x00400000


def _kq_search(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int) -> tuple:
    """``make_qkx2_quants`` (squared error) on each row of ``x``: (codes, scale, the_min)."""
    s, n = x.shape
    mn, mx = x.min(axis=1), x.max(axis=1)
    sum_w, sum_x = w[:, 0].copy(), w[:, 0] * x[:, 0]
    for i in range(1, n):
        sum_w = sum_w + w[:, i]
        sum_x = sum_x + w[:, i] * x[:, i]
    mn = np.where(mn > 0, F32(0), mn)
    flat = mx == mn
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = F32(nmax) / (mx - mn)
        scale = F32(1) / iscale
        L = np.clip(_kq_nearest(iscale[:, None] * (x - mn[:, None])), 0, nmax)
        best = np.zeros(s, F32)
        for i in range(n):
            best = best + w[:, i] * np.square(scale * F32(L[:, i]) + mn - x[:, i])
        for st in range(nstep + 1):
            num = F32(rmin) + F32(rdelta) * F32(st) + F32(nmax)
            q = np.clip(_kq_nearest((num / (mx - mn))[:, None] * (x - mn[:, None])), 0, nmax)
            qf = q.astype(F32)
            sl, sl2, sxl = (np.zeros(s, F32) for _ in range(3))
            for i in range(n):
                wq = w[:, i] * qf[:, i]
                sl, sl2, sxl = sl + wq, sl2 + wq * qf[:, i], sxl + wq * x[:, i]
            d = sum_w * sl2 - sl * sl
            t_scale = (sum_w * sxl - sum_x * sl) / d
            t_min = (sl2 * sum_x - sl * sxl) / d
            pos = t_min > 0
            t_min = np.where(pos, F32(0), t_min)
            t_scale = np.where(pos, sxl / sl2, t_scale)
            cur = np.zeros(s, F32)
            for i in range(n):
                cur = cur + w[:, i] * np.square(t_scale * qf[:, i] + t_min - x[:, i])
            better = (d > 0) & (cur < best)
            L = np.where(better[:, None], q, L)
            best, scale, mn = (np.where(better, a, b) for a, b in ((cur, best), (t_scale, scale), (t_min, mn)))
    L = np.where(flat[:, None], 0, L)
    scale = np.where(flat, F32(0), scale)
    return L, scale.astype(F32), (-mn).astype(F32)


def _kq_qp(x: np.ndarray, nmax: int, qw: np.ndarray) -> tuple:
    """``make_qp_quants`` on each row of ``x`` (non-negative): (codes, scale)."""
    b, n = x.shape
    mx = np.zeros(b, F32)
    for i in range(n):
        mx = np.where(mx > x[:, i], mx, x[:, i])
    zero = mx < F32(1e-15)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = F32(nmax) / mx
        L = (_kq_nearest(iscale[:, None] * x) & 0xFF).astype(F32)
        sc = F32(1) / iscale
        best = np.zeros(b, F32)
        for i in range(n):
            best = best + qw[:, i] * np.square(x[:, i] - sc * L[:, i])
        for st in (-4, -3, -2, -1, 1, 2, 3, 4):
            isc = (F32(0.1) * F32(st) + F32(nmax)) / mx
            sc_is = F32(1) / isc
            q = np.minimum(_kq_nearest(isc[:, None] * x), nmax).astype(F32)
            mse = np.zeros(b, F32)
            for i in range(n):
                mse = mse + qw[:, i] * np.square(x[:, i] - sc_is * q[:, i])
            better = mse < best
            best, iscale = np.where(better, mse, best), np.where(better, isc, iscale)
        qi = np.minimum(_kq_nearest(iscale[:, None] * x), nmax)
        L = qi & 0xFF
        slx, sl2 = np.zeros(b, F32), np.zeros(b, F32)
        for i in range(n):
            slx = slx + qw[:, i] * x[:, i] * F32(qi[:, i])
            sl2 = sl2 + qw[:, i] * F32(qi[:, i]) * F32(qi[:, i])
        for _ in range(5):  # a round that changes nothing leaves the state as it was
            for i in range(n):
                w, li = qw[:, i], L[:, i].astype(F32)
                a, c = slx - w * x[:, i] * li, sl2 - w * li * li
                new = np.minimum(_kq_nearest(x[:, i] * c / a), nmax)
                nf = new.astype(F32)
                a2, c2 = a + w * x[:, i] * nf, c + w * nf * nf
                take = (a > 0) & (c > 0) & (new != L[:, i]) & (a2 * a2 * sl2 > slx * slx * c2)
                L[:, i] = np.where(take, new & 0xFF, L[:, i])
                slx, sl2 = np.where(take, a2, slx), np.where(take, c2, sl2)
        scale = np.where(sl2 > 0, slx / sl2, F32(0))
    return np.where(zero[:, None], 0, L).astype(np.uint8), np.where(zero, F32(0), scale).astype(F32)


def q4_k_quantize(x: np.ndarray, weights: Optional[np.ndarray] = None) -> np.ndarray:
    """ggml's Q4_K quantization of ``x`` (a multiple of 256 values; ``weights``: one importance
    weight per value, or None for the reference path). Returns the raw 144-byte blocks."""
    xb = np.asarray(x, dtype=F32).reshape(-1, 256)
    nb = xb.shape[0]
    xs = xb.reshape(-1, 32)
    if weights is None:
        sx2 = np.zeros(xs.shape[0], F32)
        for i in range(32):
            sx2 = sx2 + xs[:, i] * xs[:, i]
        w = np.sqrt(sx2 / F32(32))[:, None] + np.abs(xs)
        L, scales, mins = _kq_search(xs, w, 15, -1.0, 0.1, 20)
        scales, mins = scales.reshape(nb, 8), mins.reshape(nb, 8)
        ms = np.zeros(nb, F32)
        mm = np.zeros(nb, F32)
        for j in range(8):
            ms, mm = np.where(scales[:, j] > ms, scales[:, j], ms), np.where(mins[:, j] > mm, mins[:, j], mm)
        with np.errstate(divide="ignore"):
            inv_s = np.where(ms > 0, F32(63) / ms, F32(0))
            inv_m = np.where(mm > 0, F32(63) / mm, F32(0))
        ls = np.minimum(_kq_nearest(inv_s[:, None] * scales) & 0xFF, 63).astype(np.uint8)
        lm = np.minimum(_kq_nearest(inv_m[:, None] * mins) & 0xFF, 63).astype(np.uint8)
        d, dmin = ms / F32(63), mm / F32(63)
    else:
        qw = np.asarray(weights, dtype=F32).reshape(-1, 256)
        sx2 = np.zeros(nb, F32)
        for i in range(256):
            sx2 = sx2 + xb[:, i] * xb[:, i]
        sigma2 = F32(2) * sx2 / F32(256)
        w = (qw * np.sqrt(sigma2[:, None] + xb * xb)).reshape(-1, 32)
        sw = np.zeros(xs.shape[0], F32)
        for i in range(32):
            sw = sw + w[:, i]
        L, scales, mins = _kq_search(xs, w, 15, -0.9, 0.05, 36)
        sw = sw.reshape(nb, 8)
        ls, d = _kq_qp(scales.reshape(nb, 8), 63, sw)
        lm, dmin = _kq_qp(mins.reshape(nb, 8), 63, sw)
        ls, lm = np.minimum(ls, 63), np.minimum(lm, 63)
    return _q4_k_finish(xb, L.reshape(nb, 256), ls, lm, d, dmin)


def _q4_k_finish(xb, L, ls, lm, d, dmin) -> np.ndarray:
    """Header bytes, the requantization with the stored scales, and the nibble packing."""
    nb = xb.shape[0]
    out = np.zeros((nb, 144), np.uint8)
    with np.errstate(over="ignore"):
        d16, m16 = d.astype(np.float16), dmin.astype(np.float16)
    out[:, 0:2] = d16.reshape(-1, 1).view(np.uint8)
    out[:, 2:4] = m16.reshape(-1, 1).view(np.uint8)
    out[:, 4:8] = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    out[:, 8:12] = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    out[:, 12:16] = (ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4)
    dj = d16.astype(F32)[:, None] * ls.astype(F32)
    mj = m16.astype(F32)[:, None] * lm.astype(F32)
    xs = xb.reshape(nb, 8, 32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = np.clip(_kq_nearest((xs + mj[..., None]) / dj[..., None]), 0, 15)
    L = np.where((dj != 0)[..., None], q, L.reshape(nb, 8, 32)).reshape(nb, 4, 2, 32).astype(np.uint8)
    out[:, 16:] = (L[:, :, 0] | (L[:, :, 1] << 4)).reshape(nb, 128)
    return out.reshape(-1)
# --- MSE and HQQ scale search ---
# Every sum below runs in the order of the Rust kernels (rust/scalar/search.rs): eight lane
# accumulators starting at +0.0, value i added to lane i % 8, then ((l0+l4)+(l2+l6))+((l1+l5)+(l3+l7)).
# Products and sums are separate float32 operations (no fused multiply-add anywhere).

#: Polynomials of the shared fast ``|x|^(p-1)``: log2(1+t) = t*P(t) on [0, 1), 2^f = Q(f) on [0, 1).
FAST_LOG2 = np.array([1.4418257474899292, -0.708682119846344, 0.4154219627380371,
                      -0.1944226771593094, 0.04588552564382553], dtype=F32)
FAST_EXP2 = np.array([0.9999997615814209, 0.6931567788124084, 0.2401316910982132,
                      0.055876556783914566, 0.008940582163631916, 0.0018943793838843703], dtype=F32)
HQQ_P = F32(0.7)
HQQ_ITERS = 20


def lane_sum(v: np.ndarray) -> np.ndarray:
    """Sums the last axis of a float32 array in the kernels' eight-lane order."""
    v = np.asarray(v, dtype=F32)
    pad = (-v.shape[-1]) % 8
    if pad:
        v = np.concatenate([v, np.zeros(v.shape[:-1] + (pad,), F32)], axis=-1)
    v = v.reshape(v.shape[:-1] + (-1, 8))
    acc = np.zeros(v.shape[:-2] + (8,), F32)
    for k in range(v.shape[-2]):
        acc = acc + v[..., k, :]
    h = acc[..., :4] + acc[..., 4:]
    q = h[..., :2] + h[..., 2:]
    return (q[..., 0] + q[..., 1]).astype(F32)


def _horner(c: np.ndarray, t: np.ndarray) -> np.ndarray:
    r = np.full_like(t, c[-1])
    for coef in c[-2::-1]:
        r = r * t + coef
    return r


def fast_pow(a: np.ndarray, p_minus_1: np.float32 = HQQ_P - F32(1)) -> np.ndarray:
    """``a ** p_minus_1`` for ``a >= 0`` as exp2(p_minus_1 * log2(a)) with the kernels' polynomials
    (relative error about 2e-5; zero gives a large finite value, never inf or NaN)."""
    a = np.asarray(a, dtype=F32)
    bits = a.view(np.uint32)
    e = ((bits >> np.uint32(23)).astype(np.int32) - np.int32(127)).astype(F32)
    t = ((bits & np.uint32(0x7FFFFF)) | np.uint32(0x3F800000)).view(F32) - F32(1)
    y = (e + t * _horner(FAST_LOG2, t)) * p_minus_1
    fl = np.floor(y)
    q = _horner(FAST_EXP2, y - fl)
    return (q.view(np.int32) + (fl.astype(np.int32) << np.int32(23))).view(F32)


def _round_nearest(v: np.ndarray, scale_dtype: str) -> np.ndarray:
    return (v.astype(np.float16) if scale_dtype == "float16" else v).astype(F32)


def zero_codes(g: np.ndarray, inv: np.ndarray, zero: np.ndarray, top: np.float32) -> np.ndarray:
    """Affine codes for a float zero point: ``clamp(round_half_even(x*inv + zero), 0, top)``."""
    return np.clip(np.rint(g * inv[:, None] + zero[:, None]), F32(0), top).astype(F32)


def hqq_rbetas(iters: int = HQQ_ITERS, beta: float = 10.0, kappa: float = 1.01) -> np.ndarray:
    """``1/beta`` of each iteration: beta grows by ``kappa`` in float64 (Python floats, as HQQ)."""
    out = []
    for _ in range(iters):
        out.append(F32(1.0 / beta))
        beta *= kappa
    return np.array(out, dtype=F32)


def hqq_quantize(x: np.ndarray, bits: int, group_size: int, scale_dtype: str
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HQQ (half-quadratic zero-point optimisation, lp norm p=0.7) per group; see rust/scalar/hqq.rs.

    Returns unpacked codes, scales and float zero points (float32 holding scale_dtype values).
    """
    g = np.asarray(x, dtype=F32).reshape(-1, group_size)
    top = F32(2**bits - 1)
    mn, mx = g.min(axis=1), g.max(axis=1)
    flat = mn == mx  # a constant group: the RTN range, which includes zero
    mn = np.where(flat, np.minimum(mn, F32(0)), mn).astype(F32)
    mx = np.where(flat, np.maximum(mx, F32(0)), mx).astype(F32)
    s = _round_up((mx - mn) / top, scale_dtype)
    with np.errstate(divide="ignore"):
        inv = np.where(s > 0, F32(1) / s, F32(0)).astype(F32)
    z = np.where(s > 0, -mn * inv, F32(0)).astype(F32)
    best, best_z, active = np.full_like(s, np.inf), z.copy(), s > 0
    with np.errstate(over="ignore"):
        for rb in hqq_rbetas():
            q = zero_codes(g, inv, z, top)
            d = g - (q - z[:, None]) * s[:, None]
            err = lane_sum(np.abs(d))
            active &= err < best
            best = np.where(active, err, best)
            best_z = np.where(active, z, best_z)
            if not active.any():
                break
            a = np.abs(d)
            t = a - rb * fast_pow(a)
            we = np.where(t > 0, np.copysign(t, d), F32(0)).astype(F32)
            z = np.where(active, lane_sum(q - (g - we) * inv[:, None]) / F32(group_size), z).astype(F32)
    zst = (_round_nearest(best_z, scale_dtype) + F32(0)).astype(F32)
    codes = zero_codes(g, inv, zst, top)
    # Groups where RTN's grid has the lower squared error keep RTN's (rust: keep_better_than_rtn).
    rcodes, rs, rz = rtn_quantize(g.reshape(-1), bits, group_size, "affine", scale_dtype)
    rcodes = rcodes.reshape(g.shape).astype(F32)
    ones = np.ones_like(g)
    with np.errstate(over="ignore", invalid="ignore"):
        rtn_wins = _sq_error(g, ones, rcodes, rs, rz) < _sq_error(g, ones, codes, s, zst)
    codes = np.where(rtn_wins[:, None], rcodes, codes)
    s, zst = np.where(rtn_wins, rs, s).astype(F32), np.where(rtn_wins, rz, zst).astype(F32)
    return codes.astype(np.uint8).reshape(-1), s, zst


def _sq_error(g: np.ndarray, w: np.ndarray, codes: np.ndarray, s: np.ndarray, z: np.ndarray) -> np.ndarray:
    d = (codes - z[:, None]) * s[:, None] - g
    return lane_sum((w * d) * d)


def _mse_affine(g: np.ndarray, w: np.ndarray, top: np.float32) -> tuple[np.ndarray, np.ndarray]:
    """llama.cpp's make_qkx2_quants (rmin=-1, rdelta=0.1, nstep=20): scale and min (<= 0)."""
    mn = np.minimum(g.min(axis=1), F32(0)).astype(F32)
    mx = g.max(axis=1)
    rng = (mx - mn).astype(F32)
    valid = rng > 0
    sum_w, sum_x = lane_sum(w), lane_sum(w * g)
    xm = g - mn[:, None]
    iscale = top / rng
    scale = F32(1) / iscale
    lv = np.clip(np.rint(iscale[:, None] * xm), F32(0), top)
    diff = (scale[:, None] * lv + mn[:, None]) - g
    best = lane_sum(w * (diff * diff))
    best_s, best_m = scale, mn
    for i in range(21):
        iscale = ((F32(-1) + F32(0.1) * F32(i)) + top) / rng
        lv = np.clip(np.rint(iscale[:, None] * xm), F32(0), top)
        wl = w * lv
        sl, sl2, sxl = lane_sum(wl), lane_sum(wl * lv), lane_sum(wl * g)
        det = sum_w * sl2 - sl * sl
        ts = (sum_w * sxl - sum_x * sl) / det
        tm = (sl2 * sum_x - sl * sxl) / det
        pos = tm > 0
        tm = np.where(pos, F32(0), tm).astype(F32)
        ts = np.where(pos, sxl / sl2, ts).astype(F32)
        diff = (ts[:, None] * lv + tm[:, None]) - g
        cur = lane_sum(w * (diff * diff))
        take = valid & (det > 0) & (cur < best)
        best = np.where(take, cur, best)
        best_s, best_m = np.where(take, ts, best_s), np.where(take, tm, best_m)
    return np.where(valid, best_s, F32(0)).astype(F32), best_m.astype(F32)


def _mse_symmetric(g: np.ndarray, w: np.ndarray, qm: np.float32) -> np.ndarray:
    """llama.cpp's make_qx_quants (iscale (qm + 0.1*is)/max|x|, is = 0, -9..9): the scale."""
    amax = np.abs(g).max(axis=1)
    scale, best = np.zeros_like(amax), np.zeros_like(amax)
    for i in [0] + [i for i in range(-9, 10) if i]:
        iscale = (qm + F32(0.1) * F32(i)) / amax
        lv = np.clip(np.rint(iscale[:, None] * g), -qm, qm)
        wl = w * lv
        slx, sl2 = lane_sum(wl * g), lane_sum(wl * lv)
        if i == 0:
            scale = np.where(sl2 != 0, slx / sl2, F32(0)).astype(F32)
            best = scale * slx
        else:
            take = (sl2 > 0) & (slx * slx > best * sl2)
            scale = np.where(take, slx / sl2, scale).astype(F32)
            best = np.where(take, scale * slx, best).astype(F32)
    return np.where(amax > 0, scale, F32(0)).astype(F32)


def mse_quantize(x: np.ndarray, bits: int, group_size: int, scheme: str, scale_dtype: str,
                 weights: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Weighted-MSE scale search per group, kept only where it beats RTN; see rust/scalar/mse.rs."""
    g = np.asarray(x, dtype=F32).reshape(-1, group_size)
    w = np.ones_like(g) if weights is None else np.asarray(weights, dtype=F32).reshape(g.shape)
    top = F32(2**bits - 1)
    rc, rs, rz = rtn_quantize(x, bits, group_size, scheme, scale_dtype)
    rc = rc.reshape(g.shape).astype(F32)
    affine = scheme == "affine"
    off = F32(2 ** (bits - 1))
    rz_full = rz if affine else np.full_like(rs, off)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if affine:
            cs, cm = _mse_affine(g, w, top)
        else:
            cs = _mse_symmetric(g, w, F32(2 ** (bits - 1) - 1))
        s = _round_nearest(cs, scale_dtype)
        ok = np.isfinite(s) & (s >= np.finfo(F32).tiny)
        inv = np.where(ok, F32(1) / s, F32(0)).astype(F32)
        if affine:
            z = (_round_nearest(-cm * inv, scale_dtype) + F32(0)).astype(F32)
            ok &= np.isfinite(z)
            codes = zero_codes(g, inv, np.where(ok, z, F32(0)).astype(F32), top)
        else:
            z = np.full_like(s, off)
            codes = np.clip(np.rint(g * inv[:, None]) + off, F32(1), top)
        take = ok & (_sq_error(g, w, codes, s, z) < _sq_error(g, w, rc, rs, rz_full))
    codes = np.where(take[:, None], codes, rc).astype(np.uint8).reshape(-1)
    scales = np.where(take, s, rs).astype(F32)
    zeros = np.where(take, z, rz_full).astype(F32) if affine else None
    return codes, scales, zeros
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


# --- k-means ---


def kmeans_lloyd(x: np.ndarray, centroids: np.ndarray, n_iter: int, weights: np.ndarray | None = None) -> tuple[np.ndarray, list[float], int]:
    """Plain Lloyd iterations (float64 sums) from ``centroids``: ``(centroids, inertia per
    iteration, empty clusters re-seeded)``. An empty cluster (in index order) takes the point
    farthest from its own centroid (weight > 0, cost > 0; lowest index on ties), and that point's
    weight leaves its old cluster, as ``quantpress.KMeans`` does."""
    x = np.asarray(x, dtype=np.float32)
    c = np.array(centroids, dtype=np.float32)
    w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64)
    k, d = c.shape
    history, reseeded = [], 0
    for _ in range(n_iter):
        d2 = ((x[:, None, :].astype(np.float64) - c[None].astype(np.float64)) ** 2).sum(-1)
        codes = np.argmin(d2, axis=1)
        cost = d2[np.arange(len(x)), codes]
        history.append(float((w * cost).sum()))
        sums = np.zeros((k, d))
        np.add.at(sums, codes, w[:, None] * x)
        cw = np.bincount(codes, weights=w, minlength=k).astype(np.float64)
        members = np.bincount(codes, minlength=k)
        empty = np.flatnonzero(cw == 0)
        far = [i for i in sorted(range(len(x)), key=lambda i: (-cost[i], i)) if w[i] > 0 and cost[i] > 0][: len(empty)]
        for j, i in zip(empty, far):
            old = codes[i]
            sums[old] -= w[i] * x[i]
            cw[old] -= w[i]
            members[old] -= 1
            if members[old] == 0:
                cw[old] = 0
            sums[j], cw[j] = w[i] * x[i], w[i]
        reseeded += len(far)
        hit = cw > 0
        c[hit] = (sums[hit] / cw[hit, None]).astype(np.float32)
    return c, history, reseeded


def kmeans_inertia(x: np.ndarray, centroids: np.ndarray, weights: np.ndarray | None = None) -> float:
    """``sum w_i min_j |x_i - c_j|^2`` in float64."""
    x = np.asarray(x, dtype=np.float64)
    c = np.asarray(centroids, dtype=np.float64)
    d2 = ((x[:, None, :] - c[None]) ** 2).sum(-1).min(axis=1)
    return float(d2.sum() if weights is None else (np.asarray(weights, dtype=np.float64) * d2).sum())
# --- nf4 double quant ---
# bitsandbytes' ``quantize_4bit(..., compress_statistics=True)``: the float32 absmax of every NF4
# block is quantized again, ``offset = absmax.mean()`` and ``quantize_blockwise(absmax - offset,
# blocksize=256)`` with the signed 8-bit dynamic map. The port follows bitsandbytes' CPU kernel
# (csrc/cpu_ops.cpp ``quantize_cpu`` with ``lookup_code_index``, 2025-12 .. 2026-06), element by
# element, deliberately unvectorised so that it shares no code with quantpress' own version.


def _torch_linspace_f32(start: float, end: float, steps: int) -> list[np.float32]:
    """``torch.linspace(start, end, steps, dtype=torch.float32)`` on CPU: ``step = (end -
    start) / (steps - 1)`` in float32, the first half ``start + step*i``, the rest ``end -
    step*(steps-1-i)``."""
    s, e = F32(start), F32(end)
    step = (e - s) / F32(steps - 1)
    return [s + step * F32(i) if i < steps // 2 else e - step * F32(steps - 1 - i) for i in range(steps)]


def bnb_dynamic_map() -> np.ndarray:
    """``create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`` in float32 (the
    ``10**k * means`` products rounded to float32, as torch multiplies a float32 tensor by a
    Python scalar), sorted; 256 values from -0.99296875 to 1."""
    data: list[float] = []
    for i in range(7):
        b = _torch_linspace_f32(0.1, 1.0, 2 ** i + 1)
        means = [(b[k] + b[k + 1]) / F32(2) for k in range(len(b) - 1)]
        scale = F32(10 ** (-6 + i))
        data += [float(scale * m) for m in means] + [float(-(scale * m)) for m in means]
    data += [0.0, 1.0]
    return np.array(sorted(data), dtype=F32)


def bnb_lookup_code_index(code: np.ndarray, value: np.float32) -> int:
    """bitsandbytes' ``lookup_code_index``: clamp to [-1, 1], ``std::lower_bound``, then the nearer
    of the two neighbours (ties to the lower index). NaN (only from ``0 * inf``) gives index 0,
    where ``lower_bound`` puts it."""
    import bisect

    if value != value:
        return 0
    v = min(max(float(value), -1.0), 1.0)
    right = bisect.bisect_left([float(c) for c in code], v)
    if right == 0:
        return 0
    if right == len(code):
        return len(code) - 1
    dist_left = abs(F32(v) - code[right - 1])
    dist_right = abs(code[right] - F32(v))
    return right if dist_right < dist_left else right - 1


def bnb_quantize_blockwise_cpu(a: np.ndarray, code: np.ndarray, blocksize: int) -> tuple[np.ndarray, np.ndarray]:
    """bitsandbytes' CPU ``quantize_blockwise`` (float32): per block (the last may be short)
    ``absmax = max|a|``; an all-zero block gets codes 0, otherwise ``code index of a * (1/absmax)``.
    The kernel first sets ``code[0] = -1`` in place (so the map stored for decoding has it too):
    pass the map with that change made."""
    a = np.asarray(a, dtype=F32).reshape(-1)
    out = np.zeros(a.size, np.uint8)
    absmax = np.zeros(-(-a.size // blocksize), F32)
    for b in range(absmax.size):
        block = a[b * blocksize:(b + 1) * blocksize]
        m = F32(0)
        for v in block:
            m = max(m, abs(v))
        absmax[b] = m
        if m == 0:
            continue
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            inv = F32(1) / m
            for k, v in enumerate(block):
                out[b * blocksize + k] = bnb_lookup_code_index(code, F32(v * inv))
    return out, absmax


def bnb_double_quant(absmax: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.float32, np.ndarray]:
    """``compress_statistics=True`` on NF4's float32 absmax: ``offset`` = the mean (here the float64
    mean rounded to float32; torch's float32 reduction order may differ in the last bit, and the
    offset is stored, so decoding does not depend on it), then blockwise quantization of ``absmax
    - offset`` in blocks of 256 with the CPU map. Returns ``(codes, absmax2, offset, code_map)``."""
    a = np.asarray(absmax, dtype=F32).reshape(-1)
    offset = F32(np.mean(a.astype(np.float64)))
    code = bnb_dynamic_map()
    code[0] = F32(-1.0)
    codes, absmax2 = bnb_quantize_blockwise_cpu(a - offset, code, 256)
    return codes, absmax2, offset, code


def bnb_double_dequant(codes: np.ndarray, absmax2: np.ndarray, offset: np.float32, code: np.ndarray) -> np.ndarray:
    """``dequantize_blockwise`` then ``+= offset``: ``code[q] * absmax2[block] + offset`` in float32."""
    q = np.asarray(codes, dtype=np.uint8).reshape(-1)
    blocks = np.arange(q.size) // 256
    return (code[q] * absmax2[blocks] + F32(offset)).astype(F32)
# --- kmeans1d ---


def kmeans1d_optimal(x: np.ndarray, k: int, weights: Optional[np.ndarray] = None) -> tuple[float, np.ndarray]:
    """The optimal weighted SSE of at most ``k`` clusters of the 1-D values ``x`` and their
    centroids (ascending, float64), by the plain O(k n^2) DP in float64 with every run's SSE
    computed directly (no prefix sums). Like the kernel: zero-weight values are left out, a row
    whose weights are all zero is clustered unweighted (its weighted SSE is 0), equal values are
    merged."""
    xv = np.asarray(x, dtype=np.float64).reshape(-1)
    wv = np.ones_like(xv) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    all_zero = not np.any(wv > 0)
    if all_zero:
        wv = np.ones_like(xv)
    keep = wv > 0
    u, inv = np.unique(xv[keep], return_inverse=True)
    c = np.bincount(inv, weights=wv[keep], minlength=len(u))
    n = len(u)

    def cost(i: int, j: int) -> float:
        mean = float(np.dot(c[i:j], u[i:j]) / c[i:j].sum())
        return float(np.dot(c[i:j], (u[i:j] - mean) ** 2))

    costs = {(i, j): cost(i, j) for j in range(1, n + 1) for i in range(j)}
    best = [[np.inf] * (n + 1) for _ in range(k + 1)]
    split = [[0] * (n + 1) for _ in range(k + 1)]
    best[0][0] = 0.0
    for r in range(1, k + 1):
        for j in range(1, n + 1):
            for i in range(j):
                v = best[r - 1][i] + costs[(i, j)]
                if v < best[r][j]:
                    best[r][j], split[r][j] = v, i
    r = min(range(1, k + 1), key=lambda t: best[t][n])
    sse, bounds, j = best[r][n], [n], n
    for t in range(r, 0, -1):
        j = split[t][j]
        bounds.append(j)
    bounds = bounds[::-1]
    cent = np.array([np.dot(c[a:b], u[a:b]) / c[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:])])
    return 0.0 if all_zero else float(sse), cent


def kmeans1d_codes(x: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Index of the nearest entry of ``codebook`` for every value of ``x``: ``|x - c|`` in float64,
    ties to the lowest index (the kernel's rule)."""
    d = np.abs(np.asarray(x, np.float64).reshape(-1, 1) - np.asarray(codebook, np.float64).reshape(1, -1))
    return np.argmin(d, axis=1)


# --- product / residual quantization ---


def pq_encode(x: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """Brute-force PQ codes: per sub-space, argmin over codewords of the float64 squared distance
    (``np.argmin`` takes the first, i.e. lowest, index on ties)."""
    m, _k, ds = codebooks.shape
    out = np.empty((len(x), m), dtype=np.int64)
    for j in range(m):
        sub = x[:, j * ds : (j + 1) * ds].astype(np.float64)
        dist = ((sub[:, None, :] - codebooks[j][None].astype(np.float64)) ** 2).sum(-1)
        out[:, j] = np.argmin(dist, axis=1)
    return out


def pq_decode(codes: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """Concatenation of each sub-space's codeword."""
    return np.concatenate([codebooks[j][codes[:, j]] for j in range(codebooks.shape[0])], axis=1).astype(F32)


def knn_brute(queries: np.ndarray, database: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of ``database`` by float64 squared L2, ordered by (distance, index)."""
    dist = ((queries[:, None, :].astype(np.float64) - database[None].astype(np.float64)) ** 2).sum(-1)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, 1), order
# --- assign ---


def fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``a * b + c`` rounded once to float32, as ``f32::mul_add``: the product is exact in float64,
    the sum's rounding error is recovered exactly (Knuth's TwoSum), and the one case where
    rounding the float64 sum to float32 differs from rounding the exact sum (a float32 midpoint
    with a nonzero error) is corrected. Exact for finite inputs whose result does not overflow."""
    p = np.asarray(a, np.float32).astype(np.float64) * np.asarray(b, np.float32).astype(np.float64)
    c64 = np.asarray(c, np.float32).astype(np.float64)
    s = p + c64
    bp = s - p
    err = (p - (s - bp)) + (c64 - bp)
    r = s.astype(np.float32)
    r64 = r.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        other = np.nextafter(r, np.where(s > r64, np.float32(np.inf), np.float32(-np.inf)))
        mid = (s != r64) & (2 * s == r64 + other.astype(np.float64)) & (err != 0)
        beyond = mid & (np.sign(err) == np.sign(s - r64))
    return np.where(beyond, other, r).astype(np.float32)


def _dot_chain(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``x[:, None] . c[None, :]`` for every pair, as a sequential float32 FMA chain from 0 over
    the dimensions (the order of the Rust ``vq::assign::dot``): an ``(n, k)`` array."""
    acc = np.zeros((x.shape[0], c.shape[0]), np.float32)
    for t in range(x.shape[1]):
        acc = fma32(x[:, t, None], c[None, :, t], acc)
    return acc


def _self_dot(v: np.ndarray) -> np.ndarray:
    """``v_i . v_i`` per row, as the sequential float32 FMA chain."""
    acc = np.zeros(v.shape[0], np.float32)
    for t in range(v.shape[1]):
        acc = fma32(v[:, t], v[:, t], acc)
    return acc


def assign(x: np.ndarray, codebook: np.ndarray, metric: str = "l2") -> tuple[np.ndarray, np.ndarray]:
    """Brute-force nearest codewords ``(codes as int64, distances as float32)`` with the float32
    operations of the Rust core in the same order: ranking scores ``fma(-2, x.c, |c|^2)`` (L2),
    ``-x.c`` (IP, cosine with unit-scaled codewords) or the in-order sum of ``|x - c|`` (L1);
    the first index of the smallest score wins (NaN never wins; all NaN/inf gives code 0).
    O(n * k) memory: for tests only."""
    x = np.asarray(x, np.float32)
    c = np.asarray(codebook, np.float32)
    if metric == "cosine":
        n = np.sqrt(_self_dot(c))
        with np.errstate(divide="ignore"):
            inv = np.where(n > 0, np.float32(1) / n, np.float32(0)).astype(np.float32)
        c = np.where((n > 0)[:, None], c * inv[:, None], c).astype(np.float32)
    if metric == "l1":
        score = np.zeros((x.shape[0], c.shape[0]), np.float32)
        for t in range(x.shape[1]):
            score = score + np.abs(x[:, t, None] - c[None, :, t])
    elif metric == "l2":
        norms = _self_dot(c)
        score = fma32(np.float32(-2), _dot_chain(x, c), norms[None, :])
    else:
        score = -_dot_chain(x, c)
    score = np.where(np.isnan(score), np.float32(np.inf), score)
    codes = np.argmin(score, axis=1)
    best = score[np.arange(x.shape[0]), codes]
    xx = _self_dot(x)
    if metric == "l2":
        dist = np.fmax(best + xx, np.float32(0))
    elif metric == "ip":
        dist = -best
    elif metric == "cosine":
        nx = np.sqrt(xx)
        with np.errstate(divide="ignore", invalid="ignore"):
            dist = np.where(nx > 0, -best / nx, np.float32(0))
    else:
        dist = best
    return codes.astype(np.int64), dist.astype(np.float32)


# --- pq adc search ---


def adc_search(tables: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """ADC top-k: ``dist[q, i] = ((0 + T[q,0,c_i0]) + T[q,1,c_i1]) + ...`` in float32, sub-spaces in
    order (the Rust scan's documented sum order), then ordered by (distance, index)."""
    nq, m, _ = tables.shape
    idx = codes.astype(np.int64)
    dist = np.zeros((nq, len(codes)), dtype=F32)
    for j in range(m):
        dist = dist + tables[:, j, :][:, idx[:, j]]  # one float32 addition per element
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, 1), order


# --- online codebook ---


def _batch_sums(x: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-codeword counts and float64 sums, rows added one at a time in row order."""
    counts = np.zeros(k, dtype=np.float64)
    sums = np.zeros((k, x.shape[1]), dtype=np.float64)
    for row, c in zip(np.asarray(x, np.float32).astype(np.float64), codes):
        counts[c] += 1
        sums[c] = sums[c] + row
    return counts, sums


def online_competitive(codebook: np.ndarray, x: np.ndarray, codes: np.ndarray, lr: float) -> np.ndarray:
    """Each codeword with rows moves ``lr`` of the way to their mean (float64, stored float32)."""
    counts, sums = _batch_sums(x, codes, len(codebook))
    out = np.array(codebook, dtype=F32)
    for c in range(len(codebook)):
        if counts[c] > 0:
            cur = out[c].astype(np.float64)
            out[c] = (cur + lr * (sums[c] / counts[c] - cur)).astype(F32)
    return out


def online_ema(size: np.ndarray, total_sum: np.ndarray, x: np.ndarray, codes: np.ndarray, decay: float,
               eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """VQ-VAE EMA step: ``(new sizes, new sums, codebook float32)`` with Laplace smoothing."""
    counts, sums = _batch_sums(x, codes, len(size))
    size = decay * size + (1 - decay) * counts
    total_sum = decay * total_sum + (1 - decay) * sums
    n = size.sum()
    smoothed = (size + eps) / (n + len(size) * eps) * n
    return size, total_sum, (total_sum / smoothed[:, None]).astype(F32)


# --- distillation ---
def _log_softmax_row(row: np.ndarray) -> np.ndarray:
    m = max(float(v) for v in row)
    lse = m + math.log(math.fsum(math.exp(float(v) - m) for v in row))
    return np.array([float(v) - lse for v in row])


def distillation_naive(s: np.ndarray, t: Optional[np.ndarray], y: Optional[np.ndarray], temperature: float,
                       alpha: float) -> np.ndarray:
    """Per-example ``alpha T^2 KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) CE(s, y)``, one row
    at a time in float64 (``t=None``: CE only; ``y=None``: the soft term with alpha 1)."""
    s2 = np.asarray(s, np.float64).reshape(-1, np.shape(s)[-1])
    out = []
    for i, row in enumerate(s2):
        total = 0.0
        a = 0.0 if t is None else (1.0 if y is None else alpha)
        if t is not None:
            logp = _log_softmax_row(np.asarray(t, np.float64).reshape(s2.shape)[i] / temperature)
            logq = _log_softmax_row(row / temperature)
            total += a * temperature ** 2 * math.fsum(math.exp(lp) * (lp - lq) for lp, lq in zip(logp, logq))
        if y is not None and a < 1.0:
            total += (1.0 - a) * -_log_softmax_row(row)[int(np.reshape(y, -1)[i])]
        out.append(total)
    return np.array(out).reshape(np.shape(s)[:-1])

# --- pruning ---


def magnitude_mask(scores: np.ndarray, keep: int) -> np.ndarray:
    """Bitmask (LSB first) keeping the ``keep`` largest ``|scores|``, ties to the lower flat
    index (a stable sort on the sign-free float bits)."""
    key = np.ascontiguousarray(scores, dtype=np.float32).reshape(-1).view(np.uint32) & np.uint32(0x7FFFFFFF)
    order = np.argsort(-key.astype(np.int64), kind="stable")
    keep_flags = np.zeros(key.size, bool)
    keep_flags[order[:keep]] = True
    return np.packbits(keep_flags, bitorder="little")


def nm_select(scores: np.ndarray, values: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """N:M per group of ``m``: (kept values in position order, packed positions of
    ``max(2, ceil(log2 m))`` bits, little-endian bit stream)."""
    key = np.ascontiguousarray(scores, dtype=np.float32).reshape(-1, m).view(np.uint32) & np.uint32(0x7FFFFFFF)
    order = np.argsort(-key.astype(np.int64), axis=1, kind="stable")[:, :n]
    pos = np.sort(order, axis=1)
    vals = np.take_along_axis(np.asarray(values, np.float32).reshape(-1, m), pos, axis=1).reshape(-1)
    bits = max(2, int(np.ceil(np.log2(m))))
    stream = ((pos.reshape(-1, 1) >> np.arange(bits)) & 1).astype(bool).reshape(-1)
    return vals, np.packbits(stream, bitorder="little")
