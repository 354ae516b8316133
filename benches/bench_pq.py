"""Product quantization against faiss: train, encode and ADC search, same data, same threads.

    python benches/bench_pq.py            # d=128, m=16, 8 bits, 100k vectors, 100 queries, 2 threads
    python benches/bench_pq.py --quick    # smoke run (CI; faiss used if installed, else skipped)

Search is compared on the SAME codes and codebooks: quantpress's trained codebooks are copied
into a ``faiss.IndexPQ`` and quantpress's codes added as its database, so both tools scan the same
lookup tables; the ``same ids`` column is the fraction of identical neighbour ids. faiss trains
each sub-space's k-means on at most 256 points per centroid (its default sub-sampling);
quantpress trains on every vector. ``ratio`` is faiss time / quantpress time (> 1: quantpress
faster). OPQ training (alternating Procrustes) is timed too, against ``faiss.OPQMatrix``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import quantpress as qp

sys.path.insert(0, str(Path(__file__).parent))
from _timing import median_and_result as timed  # noqa: E402


def data(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Clustered data with correlated dimensions (a random linear mix of a Gaussian mixture)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, (64, d))
    z = centres[rng.integers(0, 64, n)] + rng.normal(0, 1, (n, d))
    return (z @ rng.normal(0, 1 / np.sqrt(d), (d, d))).astype(np.float32)



def faiss_index(faiss, pq: qp.ProductQuantizer, codes: np.ndarray):
    """A faiss IndexPQ holding quantpress's codebooks and codes."""
    index = faiss.IndexPQ(pq.d, pq.m, pq.bits)
    faiss.copy_array_to_vector(pq.codebooks.ravel(), index.pq.centroids)
    index.pq.sync_transposed_centroids()
    index.is_trained = True
    faiss.copy_array_to_vector(np.ascontiguousarray(codes).ravel(), index.codes)
    index.ntotal = len(codes)
    return index


def row(name: str, t_qp: float, t_f) -> None:
    fs = f"{t_f:9.4f} {t_f / t_qp:6.2f}x" if t_f is not None else f"{'-':>9} {'-':>7}"
    print(f"{name:<22} {t_qp:9.4f} {fs}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    n, d, m, bits, nq, it = (4000, 32, 4, 8, 10, 5) if args.quick else (100_000, 128, 16, 8, 100, 25)
    runs = 1 if args.quick else args.runs
    qp.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        faiss = None
    x = data(n, d)
    q = data(nq, d, seed=1)
    print(f"# PQ n={n} d={d} m={m} bits={bits} iters={it}, {nq} queries, k={args.k}, {args.threads} threads, "
          f"SIMD={qp.simd_level()}, median of {runs}; ratio = faiss / quantpress")
    print(f"{'step':<22} {'qp s':>9} {'faiss s':>9} {'ratio':>7}")
    t_train, pq = timed(lambda: qp.ProductQuantizer(m, bits, n_iter=it).train(x), runs)
    f_train = f_enc = f_search = None
    if faiss is not None:
        def ftrain():
            fpq = faiss.ProductQuantizer(d, m, bits)
            fpq.cp.niter = it
            fpq.train(x)
            return fpq
        f_train, fpq = timed(ftrain, runs)
        f_enc, _ = timed(lambda: fpq.compute_codes(x), runs)
    row("train", t_train, f_train)
    t_enc, codes = timed(lambda: pq.encode(x), runs)
    row("encode", t_enc, f_enc)
    t_search, (dist, idx) = timed(lambda: pq.search(q, codes, k=args.k), runs)
    same = None
    if faiss is not None:
        index = faiss_index(faiss, pq, codes)
        f_search, (fd, fi) = timed(lambda: index.search(q, args.k), runs)
        same = float(np.mean(fi == idx))
    row("search (ADC top-k)", t_search, f_search)
    if same is not None:
        print(f"# same ids as faiss on the same codes: {same:.4f}")
    o_iter = 2 if args.quick else 10
    t_opq, opq = timed(lambda: qp.ProductQuantizer(m, bits, n_iter=it, opq=True, opq_iter=o_iter).train(x), 1)
    f_opq = None
    if faiss is not None:
        def fopq():
            mat = faiss.OPQMatrix(d, m)
            mat.niter = o_iter
            mat.train(x)
            return mat
        f_opq, _ = timed(fopq, 1)
    row(f"OPQ rotation+PQ ({o_iter} it)", t_opq, None if f_opq is None else f_opq + (f_train or 0))
    err = lambda p: float(((p.decode(p.encode(x)) - x) ** 2).mean())  # noqa: E731
    print(f"# reconstruction MSE: PQ {err(pq):.5f}, OPQ {err(opq):.5f}")
    residual(faiss, args.quick, it, runs)


def residual(faiss, quick: bool, it: int, runs: int) -> None:
    """Residual quantization, beam 5 (faiss's default ``max_beam_size``): training time and the
    training vectors' reconstruction MSE, quantpress without and with codebook refinement."""
    n, d, stages, bits, beam = (4000, 16, 2, 6, 5) if quick else (20_000, 32, 4, 8, 5)
    x = data(n, d, seed=2)
    print(f"# RQ n={n} d={d} stages={stages} bits={bits} iters={it} beam={beam}: train time, MSE of encode+decode")
    print(f"{'variant':<22} {'train s':>9} {'MSE':>9}")
    mse = lambda rec: float(((rec - x) ** 2).sum(1).mean())  # noqa: E731
    for refine in (0, 3):
        t, rq = timed(lambda: qp.ResidualQuantizer(stages, bits, n_iter=it, beam=beam, refine=refine).train(x), runs)
        print(f"{f'quantpress refine={refine}':<22} {t:9.3f} {mse(rq.decode(rq.encode(x))):9.4f}")
    if faiss is not None:
        def ftrain():
            frq = faiss.ResidualQuantizer(d, stages, bits)
            frq.max_beam_size = beam
            frq.cp.niter = it
            frq.train(x)
            return frq
        t, frq = timed(ftrain, runs)
        print(f"{'faiss':<22} {t:9.3f} {mse(frq.decode(frq.compute_codes(x))):9.4f}")


if __name__ == "__main__":
    main()
