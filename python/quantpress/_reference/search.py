"""Searched scales: MSE (llama.cpp's make_qkx2/make_qx search generalised) and HQQ.

Part of the test oracle (``quantpress._reference``): plain NumPy, never used for speed.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .scalar import F32, rtn_quantize, _round_up

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
