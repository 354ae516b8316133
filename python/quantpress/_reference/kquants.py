"""GGUF K-quants and IQ4: NumPy ports of ggml's reference quantizers.

Part of the test oracle (``quantpress._reference``): plain NumPy, never used for speed.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .scalar import F32

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
