"""k-means against faiss and scikit-learn, same data, same iterations, same threads, one process.

    python benches/bench_kmeans.py            # the issue's three shapes, 2 threads
    python benches/bench_kmeans.py --quick    # smoke run (CI; faiss/scikit-learn used if present)

Every tool's final centroids are scored the same way (inertia per point of the whole data set,
computed by quantpress's own assign), so the quality column compares like with like. quantpress
is timed in total (k-means++ seeding included) and for its Lloyd iterations alone; faiss runs
its default (random seeding, no sub-sampling at these sizes because max_points_per_centroid is
raised); scikit-learn runs greedy k-means++ with n_init=1 and tol=0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import quantpress as qp
from quantpress import _core

sys.path.insert(0, str(Path(__file__).parent))
from _timing import median_and_result as timed  # noqa: E402

SHAPES = [(200_000, 8, 256, 25), (100_000, 64, 256, 25), (65_536, 8, 4096, 10)]


def data(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Clustered, anisotropic data: a mixture of 64 Gaussians with different scales per axis."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (64, d)) * rng.uniform(0.3, 2.0, d)
    return (centres[rng.integers(0, 64, n)] + rng.normal(0, 1, (n, d))).astype(np.float32)


def inertia_per_point(x: np.ndarray, c: np.ndarray) -> float:
    _, dist = qp.assign(x, np.ascontiguousarray(c, dtype=np.float32), return_distances=True)
    return float(dist.astype(np.float64).mean())



def run_quantpress(x: np.ndarray, k: int, it: int, runs: int) -> tuple[float, float, float]:
    t, km = timed(lambda: qp.KMeans(k, n_iter=it, seed=0).fit(x), runs)
    init = _core.kmeans_plusplus(x, x.shape[1], k, 0).reshape(k, -1)
    tl, _ = timed(lambda: qp.KMeans(k, n_iter=it, init=init).fit(x), runs)
    return t, tl, inertia_per_point(x, km.centroids)


def run_faiss(x: np.ndarray, k: int, it: int, runs: int, threads: int):
    try:
        import faiss
    except ImportError:
        return None
    faiss.omp_set_num_threads(threads)

    def fit():
        km = faiss.Kmeans(x.shape[1], k, niter=it, seed=1, max_points_per_centroid=10**9)
        km.train(x)
        return km.centroids

    t, c = timed(fit, runs)
    return t, inertia_per_point(x, c)


def run_sklearn(x: np.ndarray, k: int, it: int):
    try:
        from sklearn.cluster import KMeans
    except ImportError:
        return None
    t, km = timed(lambda: KMeans(k, n_init=1, max_iter=it, tol=0, random_state=0).fit(x), 1)
    return t, inertia_per_point(x, km.cluster_centers_)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-sklearn", action="store_true", help="skip scikit-learn (slow on big k)")
    args = ap.parse_args()
    shapes = [(4000, 8, 16, 5)] if args.quick else SHAPES
    runs = 1 if args.quick else args.runs
    qp.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(args.threads)
    except ImportError:
        limit = None
    print(f"# k-means, {args.threads} threads, SIMD={qp.simd_level()}, median of {runs}; inertia = mean squared distance per point")
    print(f"{'N':>8} {'d':>3} {'k':>5} {'it':>3} | {'qp s':>6} {'qp Lloyd s':>10} {'qp inertia':>10} | {'faiss s':>7} {'inertia':>8} {'speedup':>7} | {'sklearn s':>9} {'inertia':>8}")
    for n, d, k, it in shapes:
        x = data(n, d)
        t, tl, qi = run_quantpress(x, k, it, runs)
        f = run_faiss(x, k, it, runs, args.threads)
        s = None if args.no_sklearn else run_sklearn(x, k, it)
        fs = f"{f[0]:7.3f} {f[1]:8.3f} {f[0] / t:6.2f}x" if f else f"{'-':>7} {'-':>8} {'-':>7}"
        ss = f"{s[0]:9.2f} {s[1]:8.3f}" if s else f"{'-':>9} {'-':>8}"
        print(f"{n:8d} {d:3d} {k:5d} {it:3d} | {t:6.3f} {tl:10.3f} {qi:10.3f} | {fs} | {ss}")
    del limit


if __name__ == "__main__":
    main()
