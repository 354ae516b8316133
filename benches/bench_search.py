"""Searched scales (``qp.quantize(method="mse" | "hqq")``): speed against the NumPy port of HQQ and
error against round-to-nearest, on weight-like data, in one process.

    python benches/bench_search.py                 # 4096 x 4096, group 64, 4 bits
    python benches/bench_search.py --quick         # smoke run (CI)

HQQ's own code needs torch (absent here), so its NumPy port in ``quantpress._reference`` (the
same algorithm, vectorised over groups) stands in for it; it runs on --ref-rows rows and is
reported as GB/s. quantpress is timed at 1 thread and at all threads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import quantpress as qp
from quantpress import _reference as ref
from quantpress.demo import example_weights

sys.path.insert(0, str(Path(__file__).parent))
from _timing import median_seconds  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--ref-rows", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    rows, ref_rows, runs = (64, 16, 1) if args.quick else (args.rows, args.ref_rows, args.runs)
    w = example_weights(rows, args.cols)
    gb = w.nbytes / 1e9
    print(f"# {rows}x{args.cols} weight-like float32, group 64, SIMD={qp.simd_level()}, median of {runs}")
    print(f"{'4-bit g64':<10} {'1 thread s':>10} {'all thr s':>10} {'GB/s 1t':>8} {'NumPy GB/s':>10} {'ratio 1t':>9}")
    threads = qp.get_num_threads()
    for method in ("rtn", "mse", "hqq"):
        qp.set_num_threads(1)
        t1 = median_seconds(lambda: qp.quantize(w, 4, 64, method=method), runs)
        qp.set_num_threads(threads)
        tn = median_seconds(lambda: qp.quantize(w, 4, 64, method=method), runs)
        line = f"{method:<10} {t1:10.3f} {tn:10.3f} {gb / t1:8.3f}"
        if method == "hqq":
            part = w[:ref_rows].reshape(-1)
            tr = median_seconds(lambda: ref.hqq_quantize(part, 4, 64, "float16"), 1)
            line += f" {part.nbytes / 1e9 / tr:10.4f} {gb / t1 / (part.nbytes / 1e9 / tr):8.0f}x"
        print(line, flush=True)
    print(f"{'MSE':<10} " + " ".join(f"{m:>10}" for m in ("rtn", "mse", "hqq")))
    for bits in (2, 3, 4):
        errs = []
        for method in ("rtn", "mse", "hqq"):
            e = (qp.quantize(w, bits, 64, method=method).dequantize() - w).astype(np.float64)
            errs.append(float(np.mean(e * e)))
        print(f"{bits}-bit g64  " + " ".join(f"{v:10.3e}" for v in errs))


if __name__ == "__main__":
    main()
