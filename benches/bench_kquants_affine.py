"""Q4_K, Q5_K, Q2_K: quantpress vs ggml's C in one process, on the same data: speed (GB/s of
float32, best of --runs, quantpress on one thread unless QUANTPRESS_NUM_THREADS says otherwise)
and reconstruction RMSE without weights (ggml's ``quantize_row_*_ref``) and with an imatrix
(``ggml_quantize_chunk``), on Gaussian and weight-like Student-t data. quantpress dequantizes
into a preallocated ``out=``; the ggml bridge allocates its output on every call (page faults
included), so its dequantize figure is a lower bound on ggml's kernel.

    QUANTPRESS_NUM_THREADS=1 python benches/bench_kquants_affine.py --lib /work/ggml-build/lib
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
import _ggml  # noqa: E402
from conftest import weight_like  # noqa: E402

import quantpress as qp  # noqa: E402


def gbps(nbytes: int, f: Callable[[], object], runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return nbytes / best / 1e9


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a.astype(np.float64) - b.reshape(a.shape)) ** 2)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default="/work/ggml-build/lib")
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--types", default="Q4_K,Q5_K,Q2_K")
    a = ap.parse_args()
    g = _ggml.load(a.lib)
    rng = np.random.default_rng(0)
    x = (rng.standard_t(5, size=(a.rows, 4096)) * 0.02).astype(np.float32)
    imatrix = np.mean(rng.standard_normal((64, 4096)).astype(np.float32) ** 2, axis=0).astype(np.float32)
    print(f"speed on {a.rows}x4096 Student-t, threads={qp.get_num_threads()}, simd={qp.simd_level()}")
    for t in a.types.split(","):
        raw = qp.gguf_quantize(x, t)
        same = np.array_equal(raw.reshape(-1), np.asarray(g.quantize(x, t, ref=True)).view(np.uint8).reshape(-1))
        q = gbps(x.nbytes, lambda: qp.gguf_quantize(x, t), a.runs)
        qg = gbps(x.nbytes, lambda: g.quantize(x, t, ref=True), 1)
        qi = gbps(x.nbytes, lambda: qp.gguf_quantize(x, t, weights=imatrix), a.runs)
        qgi = gbps(x.nbytes, lambda: g.quantize_chunk(x, t, imatrix=imatrix), 1)
        out = np.empty(x.shape, np.float32)
        d = gbps(x.nbytes, lambda: qp.gguf_dequantize(raw, t, x.shape, out=out), a.runs + 2)
        dg = gbps(x.nbytes, lambda: g.dequantize(raw, t), a.runs + 2)
        print(f"{t}: quantize {q:.3f} vs ggml {qg:.3f} GB/s ({q / qg:.1f}x); with imatrix {qi:.3f} vs {qgi:.3f}"
              f" ({qi / qgi:.1f}x); dequantize {d:.2f} vs {dg:.2f} GB/s; bytes equal ggml: {same}")
    data = {"gaussian": rng.standard_normal((256, 4096)).astype(np.float32), "weight_like": weight_like(rng, (256, 4096))}
    print("RMSE (1M values)            ours        ggml")
    for t in a.types.split(","):
        for name, v in data.items():
            for im in (None, imatrix):
                ours = qp.gguf_dequantize(qp.gguf_quantize(v, t, weights=im), t, v.shape)
                gr = g.quantize(v, t, ref=True) if im is None else g.quantize_chunk(v, t, imatrix=im)
                theirs = np.asarray(g.dequantize(gr, t))
                tag = f"{t} {name}{' imatrix' if im is not None else ''}"
                print(f"{tag:27s} {rmse(v, ours):.6e} {rmse(v, theirs):.6e}")


if __name__ == "__main__":
    main()
