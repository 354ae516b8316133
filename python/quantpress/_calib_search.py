"""Threshold searches over a calibration histogram: ONNX Runtime's KL-divergence (entropy) search,
vectorised over candidates, and quantpress' expected-squared-error (MSE) search.

The entropy search must pick the *same* bin as ORT's ``HistogramCollector.get_entropy_threshold``,
whose KL values are float32 sums whose rounding depends on each candidate's length. So it runs in
two stages: every candidate is scored at once in float64 (same integer arithmetic as ORT, float64
instead of float32 for the rest), then only the candidates that the float32 rounding could still
make the winner are re-scored by :func:`ort_kl` (ORT's float32 operations, one candidate at a time)
and ORT's ``argmin`` is taken over those.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

F32 = np.float32
F64 = np.float64
_EPS = 0.0001  # ORT's smooth_distribution eps
_CHUNK = 1 << 21  # elements per 2-D work array (candidates x bins): bounds memory to a few MB


def _smooth32(p: np.ndarray) -> Optional[np.ndarray]:
    """ORT's ``quant_utils.smooth_distribution`` (float32), or None for an all-zero ``p``."""
    is_zeros = (p == 0).astype(F32)
    is_nonzeros = (p != 0).astype(F32)
    n_zeros = is_zeros.sum()
    n_nonzeros = p.size - n_zeros
    if not n_nonzeros:
        return None
    eps1 = _EPS * float(n_zeros) / float(n_nonzeros)
    if eps1 >= 1.0:  # ORT asserts here; a candidate it cannot score is never the best
        return None
    hist = p.astype(F32)
    hist += _EPS * is_zeros + (-eps1) * is_nonzeros
    return hist


def _entropy32(p: np.ndarray, q: np.ndarray) -> F32:
    """ORT's ``calibrate.entropy`` (its scipy-free ``rel_entr`` sum), float32 throughout."""
    pk = 1.0 * p / np.sum(p, axis=0, keepdims=True)
    qk = 1.0 * q / np.sum(q, axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        res = pk * np.log(pk / qk)
    res[(pk == 0) & (qk >= 0)] = 0
    res[~((pk > 0) & (qk > 0))] = np.inf
    return F32(np.sum(res, axis=0))


def ort_kl(hist: np.ndarray, i: int, num_quantized_bins: int) -> float:
    """ORT's KL divergence for the candidate window ``[n//2 - i, min(n//2 + i + 1, n))`` of
    ``hist``, with its exact arithmetic (integer merges, truncating ``q`` assignment, float32
    smoothing and entropy). Loops over the quantized bins of ORT are vectorised (integer sums
    are exact, so the order does not matter)."""
    n, nq = hist.size, num_quantized_bins
    start, end = n // 2 - i, min(n // 2 + i + 1, n)
    sliced = hist[start:end]
    p = sliced.copy()
    p[0] += hist[:start].sum()
    p[-1] += hist[end:].sum()
    m = sliced.size // nq
    merged = sliced[: nq * m].reshape(nq, m).sum(axis=1)
    merged[-1] += sliced[nq * m:].sum()
    norm = (p[: nq * m] != 0).reshape(nq, m).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_bin = np.where(norm != 0, merged / norm, 0.0)
    q = np.zeros(p.size, dtype=np.int64)
    q[: nq * m] = np.repeat(per_bin.astype(np.int64), m)  # ORT assigns float into int64: truncates
    ps, qs = _smooth32(p), _smooth32(q)
    if ps is None or qs is None:
        return float("inf")
    return float(_entropy32(ps, qs))


def _prefix(a: np.ndarray) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(a)))


class _Prefix:
    """Prefix sums over the histogram bins that score a window in O(num_quantized_bins)."""

    def __init__(self, hist: np.ndarray) -> None:
        nz = hist != 0
        h = np.where(nz, hist, 1).astype(F64)
        self.hist, self.n = hist, hist.size
        self.cnt, self.nz = _prefix(hist), _prefix(nz.astype(np.int64))
        self.hlogh, self.logh = _prefix(np.where(nz, h * np.log(h), 0.0)), _prefix(np.where(nz, np.log(h), 0.0))
        self.inv = _prefix(np.where(nz, 1.0 / h, 0.0))


def _flogf(x: np.ndarray, e1: np.ndarray) -> np.ndarray:
    """``(x - e1) log(x - e1)`` for the nonzero ``x`` (0 elsewhere)."""
    y = np.where(x != 0, x - e1, 1.0)
    return np.where(x != 0, y * np.log(y), 0.0)


def _kl64_block(pre: _Prefix, ii: np.ndarray, nq: int) -> tuple[np.ndarray, np.ndarray]:
    """float64 KL (ORT's formula) and a bound of its distance to ORT's float32 value, for the
    candidate windows ``ii``, in O(nq) each: ``q`` is constant on each merged chunk, so
    ``KL = (sum p' log p' - sum p' log q') / S + log(Sq / S)`` with the first sum taken from prefix
    sums through ``(h-e) log(h-e) = h log h - e (log h + 1) + e^2/(2h) + R``, ``0 <= R <= e^3/(6(1-e))``."""
    n, h, cnt = pre.n, pre.hist, pre.cnt
    s = n // 2 - ii
    e = np.minimum(n // 2 + ii + 1, n)
    length, total = e - s, cnt[n]
    m = length // nq
    left, right = cnt[s], total - cnt[e]
    h0, h1 = h[s], h[e - 1]
    p0, p1 = h0 + left, h1 + right
    nzp = pre.nz[e] - pre.nz[s] - (h0 != 0) - (h1 != 0) + (p0 != 0) + (p1 != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        e1p = _EPS * (length - nzp) / nzp
    # chunks of m bins; the position of the last bin when it lies in a chunk
    lo = s[:, None] + np.arange(nq)[None, :] * m[:, None]
    hi = lo + m[:, None]
    last_in = (length - 1) < nq * m
    jl = np.where(last_in, (length - 1) // np.maximum(m, 1), 0)
    rows = np.arange(ii.size)
    psum = (cnt[hi] - cnt[lo]).astype(F64)
    norm = pre.nz[hi] - pre.nz[lo]
    norm[:, 0] += (p0 != 0).astype(np.int64) - (h0 != 0)
    norm[rows, jl] += np.where(last_in, (p1 != 0).astype(np.int64) - (h1 != 0), 0)
    psum[:, 0] += left
    psum[rows, jl] += np.where(last_in, right, 0)
    merged = cnt[hi] - cnt[lo]
    merged[:, -1] += cnt[e] - cnt[s + nq * m]
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(norm != 0, merged / norm, 0.0).astype(np.int64)
        nzq = m * (v != 0).sum(axis=1)
        e1q = _EPS * (length - nzq) / nzq
        qs = np.where(v != 0, v - e1q[:, None], _EPS)
        p_chunks = psum + _EPS * (m[:, None] - norm) - e1p[:, None] * norm
        nz_rem = nzp - norm.sum(axis=1)
        p_rem = (cnt[e] - cnt[s + nq * m]) + np.where(last_in, 0, right) + _EPS * (length - nq * m - nz_rem) - e1p * nz_rem
        t2 = (p_chunks * np.log(qs)).sum(axis=1) + p_rem * np.log(_EPS)
        a, b = s + 1, e - 1  # interior bins: the end bins carry the outliers
        d = pre.nz[b] - pre.nz[a]
        t1 = ((length - nzp) * _EPS * np.log(_EPS) + pre.hlogh[b] - pre.hlogh[a]
              - e1p * (pre.logh[b] - pre.logh[a] + d) + e1p**2 / 2 * (pre.inv[b] - pre.inv[a])
              + _flogf(p0, e1p) + _flogf(p1, e1p))
        series = d * e1p**3 / (6 * (1 - e1p))
        kl = (t1 + series / 2 - t2) / total + np.log(m * v.sum(axis=1) / total)
    ok = (nzp > 0) & (e1p < 1) & (nzq > 0) & (e1q < 1) & (length >= 2)
    # ORT's float32 error is below 49 eps32 (1 + sum p|log(p/q)|) <= 49 eps32 (3 + KL); x5 margin.
    bound = (256 * float(np.finfo(F32).eps) * (3 + np.abs(kl)) + series / (2 * total)
             + 1e-12 * (1 + (np.abs(t1) + np.abs(t2) + abs(pre.hlogh[n])) / total))
    kl = np.where(ok, kl, np.inf)
    return kl, np.where(ok, bound, 0.0)


def entropy_window(hist: np.ndarray, num_quantized_bins: int) -> tuple[int, int]:
    """ORT's entropy threshold as histogram edge indices ``(start, end)``: the argmin, over
    ``i = nq//2 .. n//2``, of the KL divergence between the clipped histogram and its
    ``nq``-bin quantized version (first minimum wins, as ``np.argmin``)."""
    n, nq = hist.size, num_quantized_bins
    hist = hist.astype(np.int64, copy=False)
    pre = _Prefix(hist)
    cand = np.arange(nq // 2, n // 2 + 1)
    per = max(1, _CHUNK // nq)
    kl, bound = np.empty(cand.size), np.empty(cand.size)
    for b in range(0, cand.size, per):
        kl[b:b + per], bound[b:b + per] = _kl64_block(pre, cand[b:b + per], nq)
    if np.all(np.isinf(kl)):
        best = 0  # every candidate is inf in ORT as well: np.argmin takes the first
    else:
        ceiling = np.min(kl + bound)
        close = np.flatnonzero(kl - bound <= ceiling)
        exact = np.array([ort_kl(hist, int(cand[c]), nq) for c in close], dtype=F64)
        best = int(close[np.argmin(exact)])
    i = int(cand[best])
    return n // 2 - i, min(n // 2 + i + 1, n)


# --- MSE ------------------------------------------------------------------------------------


def _cum_sq_error(x: np.ndarray, s: np.ndarray, lo_level: np.ndarray, hi_level: np.ndarray) -> np.ndarray:
    """``G(x) = integral from 0 to x of (u - Q(u))^2 du`` for the uniform quantizer with step ``s``
    whose levels ``k*s`` (``k`` integer) run from ``lo_level`` to ``hi_level`` (0 among them).

    Inside the levels the error is a sawtooth: ``G = n s^3/12 + r^3/3`` with ``n = round(x/s)``,
    ``r = x - n s``; beyond the last level the error grows linearly: ``+ (x - level)^3/3``.
    Rows are candidates (``s`` etc. are column vectors), columns are points ``x``.
    """
    c = np.clip(x, lo_level, hi_level)
    n = np.rint(c / s)
    r = c - n * s
    out = x - c
    out *= out * out
    out += r * r * r
    out *= 1.0 / 3.0
    out += n * (s * s * s / 12.0)
    return out


def expected_sq_error(hist: np.ndarray, edges: np.ndarray, scale: np.ndarray, zero_point: np.ndarray,
                      qmin: int, qmax: int) -> np.ndarray:
    """Expected squared quantize-dequantize error per value, for each (scale, zero point) row,
    with the histogram mass spread uniformly inside each bin (clipping error included)."""
    s = np.asarray(scale, dtype=F64).reshape(-1, 1)
    z = np.asarray(zero_point, dtype=F64).reshape(-1, 1)
    e = np.asarray(edges, dtype=F64)[None, :]
    g = _cum_sq_error(e, s, (qmin - z) * s, (qmax - z) * s)
    width = np.diff(e, axis=1)
    per_bin = np.diff(g, axis=1) / np.where(width > 0, width, 1.0)
    return (per_bin * hist[None, :]).sum(axis=1) / hist.sum()
