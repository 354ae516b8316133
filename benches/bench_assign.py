"""Nearest-codeword search (``qp.assign``) against faiss's exact flat index, in one process, on
the same data and thread count.

    python benches/bench_assign.py              # the issue's shapes, 2 threads
    python benches/bench_assign.py --quick      # smoke run (CI)

For each shape: throughput in Mvec/s (median of --runs), the ratio to faiss
(``IndexFlatL2.search(x, 1)``, or ``IndexFlatIP`` for ``ip``), the fraction of the
SGEMM-equivalent limit (``2*N*k*d`` flops at --gflops GFLOP/s), and the fraction of codes that
agree with faiss (faiss ranks by its own float order, so near-ties may differ). Memory: quantpress
never holds an N x k matrix, only O(batch) running minima; the peak-RSS growth of its calls is
printed (faiss's BLAS path allocates blocks of distances).
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

import numpy as np

import quantpress as qp

sys.path.insert(0, str(Path(__file__).parent))
import statistics  # noqa: E402
import time  # noqa: E402

SHAPES = [(1_000_000, 8, 256), (200_000, 8, 4096), (200_000, 64, 256), (50_000, 8, 65536)]
QUICK = [(2000, 8, 256), (500, 16, 1024)]


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def interleaved_medians(fns: list, runs: int) -> list[float]:
    """Median wall time of each function, the calls alternating (after one warm-up call each), so
    that a change in machine load during the run affects every contender alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def faiss_search(metric: str, codebook: np.ndarray):
    try:
        import faiss
    except ImportError:
        return None
    index = (faiss.IndexFlatL2 if metric == "l2" else faiss.IndexFlatIP)(codebook.shape[1])
    index.add(codebook)
    return lambda x: index.search(x, 1)[1][:, 0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--gflops", type=float, default=185.0, help="SGEMM-equivalent limit, GFLOP/s")
    ap.add_argument("--metrics", default="l2,ip")
    args = ap.parse_args()
    shapes, runs = (QUICK, 1) if args.quick else (SHAPES, args.runs)
    qp.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        print("# faiss is not installed: quantpress only")
    rng = np.random.default_rng(0)
    print(f"# {args.threads} threads, SIMD={qp.simd_level()}, median of {runs}, limit {args.gflops:.0f} GFLOP/s")
    print(f"{'metric':<6} {'N':>8} {'d':>3} {'k':>6} {'qp Mvec/s':>10} {'faiss':>8} {'ratio':>6} {'limit':>6} {'of lim':>7} {'agree':>7} {'+RSS MB':>8}")
    for metric in args.metrics.split(","):
        for n, d, k in shapes:
            x = rng.standard_normal((n, d)).astype(np.float32)
            codebook = rng.standard_normal((k, d)).astype(np.float32)
            search = faiss_search(metric, codebook)
            rss0 = maxrss_mb()
            ours = qp.assign(x, codebook, metric)
            rss = maxrss_mb() - rss0
            fns = [lambda: qp.assign(x, codebook, metric)] + ([lambda: search(x)] if search else [])
            times = interleaved_medians(fns, runs)
            t_qp = times[0]
            limit = args.gflops * 1e9 / (2.0 * k * d) / 1e6
            line = f"{metric:<6} {n:8d} {d:3d} {k:6d} {n / t_qp / 1e6:10.3f}"
            if search is not None:
                agree = float(np.mean(search(x) == ours.astype(np.int64)))
                line += f" {n / times[1] / 1e6:8.3f} {times[1] / t_qp:6.2f}"
            else:
                line += f" {'-':>8} {'-':>6}"
                agree = float("nan")
            line += f" {limit:6.2f} {n / t_qp / 1e6 / limit:6.0%} {agree:7.4f} {rss:8.1f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
