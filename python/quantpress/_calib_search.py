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


def _kl64_block(hist: np.ndarray, cs: np.ndarray, nzcs: np.ndarray, ii: np.ndarray, nq: int) -> tuple[np.ndarray, np.ndarray]:
    """float64 KL (ORT's formula) and a bound of ORT's float32 rounding error, for candidates ``ii``."""
    n = hist.size
    start = n // 2 - ii
    end = np.minimum(n // 2 + ii + 1, n)
    length = end - start
    k = np.arange(int(length.max()))
    valid = k[None, :] < length[:, None]
    idx = np.minimum(start[:, None] + k[None, :], n - 1)
    p = np.where(valid, hist[idx], 0)
    rows = np.arange(ii.size)
    p[rows, 0] += cs[start]
    p[rows, length - 1] += cs[n] - cs[end]
    m = length // nq
    # integer merge of the sliced (outlier-free) histogram into nq bins; the rest goes to the last
    j = np.arange(nq)
    lo = start[:, None] + j[None, :] * m[:, None]
    merged = cs[lo + m[:, None]] - cs[lo]
    merged[:, -1] += cs[end] - cs[start + nq * m]
    norm = nzcs[lo + m[:, None]] - nzcs[lo]  # nonzero bins of the sliced part ...
    first_fix = (p[rows, 0] != 0).astype(np.int64) - (hist[start] != 0)  # ... corrected to p's ends
    norm[:, 0] += np.where(m > 0, first_fix, 0)
    last = length - 1
    in_chunks = last < nq * m
    last_fix = (p[rows, last] != 0).astype(np.int64) - (hist[end - 1] != 0)
    norm[rows, np.minimum(last // np.maximum(m, 1), nq - 1)] += np.where(in_chunks & (length > 1), last_fix, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_bin = np.where(norm != 0, merged / norm, 0.0).astype(np.int64)
    chunk = np.minimum(k[None, :] // np.maximum(m, 1)[:, None], nq - 1)
    q = np.where(k[None, :] < (nq * m)[:, None], np.take_along_axis(per_bin, chunk, axis=1), 0)
    return _kl64_smoothed(p, q, valid, length)


def _kl64_smoothed(p: np.ndarray, q: np.ndarray, valid: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    def smooth(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nz = ((a != 0) & valid).sum(axis=1)
        zeros = length - nz
        with np.errstate(divide="ignore", invalid="ignore"):
            eps1 = _EPS * zeros / nz
        s = np.where(a != 0, a - eps1[:, None], _EPS)
        ok = (nz > 0) & (eps1 < 1.0)
        return np.where(valid, s, 0.0), ok

    ps, okp = smooth(p)
    qs, okq = smooth(q)
    pk = ps / ps.sum(axis=1, keepdims=True)
    qk = qs / qs.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        lg = np.where(valid, np.log(np.where(valid, pk / qk, 1.0)), 0.0)
    kl = (pk * lg).sum(axis=1)
    # ORT's float32 error: per-term relative error times the term size, plus the summations.
    bound = 256 * float(np.finfo(F32).eps) * (1.0 + (pk * np.abs(lg)).sum(axis=1))
    kl = np.where(okp & okq, kl, np.inf)
    return kl, bound


def entropy_window(hist: np.ndarray, num_quantized_bins: int) -> tuple[int, int]:
    """ORT's entropy threshold as histogram edge indices ``(start, end)``: the argmin, over
    ``i = nq//2 .. n//2``, of the KL divergence between the clipped histogram and its
    ``nq``-bin quantized version (first minimum wins, as ``np.argmin``)."""
    n, nq = hist.size, num_quantized_bins
    hist = hist.astype(np.int64, copy=False)
    cs = np.concatenate(([0], np.cumsum(hist)))
    nzcs = np.concatenate(([0], np.cumsum(hist != 0)))
    cand = np.arange(nq // 2, n // 2 + 1)
    per = max(1, _CHUNK // max(n, 1))
    kl, bound = np.empty(cand.size), np.empty(cand.size)
    for b in range(0, cand.size, per):
        kl[b:b + per], bound[b:b + per] = _kl64_block(hist, cs, nzcs, cand[b:b + per], nq)
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
    return n * s**3 / 12.0 + r**3 / 3.0 + (x - c) ** 3 / 3.0


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
