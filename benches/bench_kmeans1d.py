"""Batched 1-D k-means (``qp.kmeans1d``) against a scikit-learn per-row loop, the way weight
sharing (SqueezeLLM, Deep Compression) is usually done today.

    python benches/bench_kmeans1d.py            # 4096 x 4096 Student-t weights, k=16
    python benches/bench_kmeans1d.py --quick    # smoke run (CI, seconds)

quantpress fits every row, exact (DP) and fast (coarse DP + Lloyd), on --threads threads.
scikit-learn's ``KMeans(n_clusters=k, n_init=1)`` (k-means++ init, Lloyd; sklearn's default
``n_init="auto"`` is also one run for k-means++), on one OpenMP/BLAS thread (its fastest
setting for these small fits), is timed on --sk-rows rows and scaled to the whole matrix. Inertia is the mean per-row sum of squared errors of each method's codes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import quantpress as qp

sys.path.insert(0, str(Path(__file__).parent))
from _timing import median_seconds  # noqa: E402


def sklearn_rows(w: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """Seconds and per-row inertia of one KMeans fit per row."""
    from sklearn.cluster import KMeans

    KMeans(n_clusters=k, n_init=1, random_state=0).fit(w[0].reshape(-1, 1))  # warm-up (imports, threads)
    inertia = []
    t0 = time.perf_counter()
    for row in w:
        km = KMeans(n_clusters=k, n_init=1, random_state=0).fit(row.reshape(-1, 1))
        c = km.cluster_centers_.astype(np.float64).reshape(-1)
        inertia.append(float(((row.astype(np.float64) - c[km.labels_]) ** 2).sum()))
    return time.perf_counter() - t0, np.array(inertia)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--sk-rows", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    rows, cols, sk_rows, runs = (32, 512, 4, 1) if args.quick else (args.rows, args.cols, args.sk_rows, args.runs)
    rng = np.random.default_rng(0)
    w = (rng.standard_t(df=4, size=(rows, cols)) * 0.02).astype(np.float32)
    qp.set_num_threads(args.threads)
    print(f"# {rows}x{cols} Student-t(4) float32, k={args.k}, quantpress on {args.threads} threads "
          f"(median of {runs}); sklearn KMeans(n_init=1), 1 thread, on {sk_rows} rows, scaled")
    sample = rng.choice(rows, size=min(sk_rows, rows), replace=False)
    from threadpoolctl import threadpool_limits

    # One OpenMP/BLAS thread: sklearn's fastest setting for one small fit (about 5 ms a 4096-value
    # row); its threads only synchronise, and on a busy machine 2 threads run 10-20x slower.
    with threadpool_limits(1):
        t_sk, e_sk = sklearn_rows(w[sample], args.k)
    t_sk *= rows / len(sample)
    print(f"{'method':<22} {'seconds':>9} {'vs sklearn':>11} {'mean inertia/row':>17} {'rows <= sklearn':>15}")
    print(f"{'sklearn loop (scaled)':<22} {t_sk:9.3f} {'1x':>11} {e_sk.mean():17.6e} {'':>15}")
    for exact in (True, False):
        t = median_seconds(lambda: qp.kmeans1d(w, args.k, exact=exact), runs)
        r = qp.kmeans1d(w, args.k, exact=exact)
        better = int(np.sum(r.inertia[sample] <= e_sk * (1 + 1e-12)))
        name = "quantpress exact" if exact else "quantpress fast"
        print(f"{name:<22} {t:9.3f} {t_sk / t:10.0f}x {r.inertia.mean():17.6e} {better:>9}/{len(sample)}", flush=True)


if __name__ == "__main__":
    main()
