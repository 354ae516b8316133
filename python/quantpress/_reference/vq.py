"""Vector quantization: nearest codeword, k-means, 1-D k-means, PQ / RVQ, ADC search, online codebooks.

Part of the test oracle (``quantpress._reference``): plain NumPy, never used for speed.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .scalar import F32

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
