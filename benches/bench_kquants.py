"""Side-by-side K-quant and IQ4 GGUF types: quantpress vs ggml's C, speed and error, in one process.

    python benches/bench_kquants.py                # 1024 x 4096 weight-like float32 (16 MiB)
    python benches/bench_kquants.py --types Q4_K Q6_K --rows 4096
    python benches/bench_kquants.py --quick        # small smoke run (CI): quantpress only

ggml's C is reached through benches/_ggml.py when QUANTPRESS_GGML_LIB points at a ggml build;
without it the ggml columns are left out. Both run on one thread unless --threads is given (the
issue's targets are per thread). Columns:

* quantize, GB/s of float32 input: quantpress (``gguf_quantize(out=)``) and ggml's reference
  quantizer (``from_float_ref``, what ``test-quantize-perf`` and ``quantize_row_*`` run); with
  ``--imatrix``, ``ggml_quantize_chunk`` with an importance matrix (llama-quantize's path) against
  ``gguf_quantize(weights=imatrix)``.
* RMSE of the round trip for each, and its ratio (quantpress / ggml: <= 1 means no worse); with
  an imatrix, the imatrix-weighted RMSE, the quantity both algorithms minimise; and whether the
  two produced identical bytes.
* dequantize, GB/s of float32 output: quantpress (``out=``), ggml's ``to_float``, the ``gguf``
  package's NumPy.

Data: Student-t (df=4) rows with 1/64 outlier columns (×20), like trained weights. The imatrix is
the per-column mean of squared activations whose scale varies by column, as llama-imatrix collects.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import quantpress as qp

sys.path.insert(0, str(Path(__file__).parent))
import _ggml  # noqa: E402
from _timing import median_seconds  # noqa: E402
from quantpress.demo import example_weights  # noqa: E402

K_TYPES = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS")


def imatrix_for(cols: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    act = rng.standard_normal((512, cols)).astype(np.float32) * rng.lognormal(0, 1, cols).astype(np.float32)
    return np.mean(act * act, axis=0).astype(np.float32)


def rmse(a: np.ndarray, b: np.ndarray, weights: np.ndarray | None = None) -> float:
    d = (a.astype(np.float64) - b) ** 2
    return float(np.sqrt(np.mean(d if weights is None else d * weights) / (1 if weights is None else np.mean(weights))))


def bench_quantize(w: np.ndarray, t: str, ggml: _ggml.Ggml | None, runs: int, imatrix: np.ndarray | None) -> str:
    gb = w.nbytes / 1e9
    out = np.empty(qp.gguf_quantize(w[:1], t).size * w.shape[0], np.uint8)
    ours = gb / median_seconds(lambda: qp.gguf_quantize(w, t, weights=imatrix, out=out), runs)
    err = rmse(qp.gguf_dequantize(out, t, w.shape), w, imatrix)
    line = f"{t:<7} {ours:8.3f}"
    if ggml is None:
        return line + f" {err:10.3e}"
    if imatrix is None:
        raw = ggml.quantize(w, t, ref=True)
        theirs = gb / median_seconds(lambda: ggml.quantize_into(w, raw, t, ref=True), runs)
    else:
        theirs = gb / median_seconds(lambda: ggml.quantize_chunk(w, t, imatrix), max(1, runs // 2))
        raw = ggml.quantize_chunk(w, t, imatrix)
    gerr = rmse(ggml.dequantize(raw, t).reshape(w.shape), w, imatrix)
    same = "yes" if np.array_equal(raw.reshape(-1), out) else "no"
    return line + f" {theirs:8.3f} {ours / theirs:7.1f}x {err:10.3e} {gerr:10.3e} {err / gerr:8.4f} {same:>6}"


def bench_dequantize(w: np.ndarray, t: str, ggml: _ggml.Ggml | None, runs: int) -> str:
    gb = w.nbytes / 1e9
    raw = qp.gguf_quantize(w, t)
    out = np.empty(w.size, np.float32)
    ours = gb / median_seconds(lambda: qp.gguf_dequantize(raw, t, w.shape, out=out), runs)
    line = f"{t:<7} {ours:8.2f}"
    if ggml is not None:
        theirs = gb / median_seconds(lambda: ggml.dequantize_into(raw, out, t), runs)
        line += f" {theirs:8.2f} {ours / theirs:7.1f}x"
    try:
        import gguf

        gt = getattr(gguf.GGMLQuantizationType, t)
        numpy_gbps = gb / median_seconds(lambda: gguf.quants.dequantize(raw, gt), 1)
        line += f" {numpy_gbps:8.3f} {ours / numpy_gbps:7.0f}x"
    except ImportError:
        pass
    return line


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes, 1 run, no ggml (smoke test)")
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--types", nargs="+", default=list(K_TYPES))
    ap.add_argument("--imatrix", action="store_true", help="quantize with an importance matrix")
    args = ap.parse_args()
    rows, runs = (16, 1) if args.quick else (args.rows, args.runs)
    qp.set_num_threads(args.threads)
    ggml = None if args.quick else _ggml.load()
    w = example_weights(rows, args.cols)
    imatrix = imatrix_for(args.cols) if args.imatrix else None
    print(f"# {rows}x{args.cols} weight-like float32 ({w.nbytes / 2**20:.0f} MiB), median of {runs}, "
          f"quantpress {qp.__version__} SIMD={qp.simd_level()} threads={qp.get_num_threads()}, "
          f"ggml={'commit ' + ggml.commit if ggml else 'not loaded'}, imatrix={'yes' if args.imatrix else 'no'}")
    print(f"{'quantize':<7} {'qp GB/s':>8} {'ggml':>8} {'ratio':>8} {'qp RMSE':>10} {'ggml RMSE':>10} {'RMSE q/g':>8} {'bytes=':>6}")
    for t in args.types:
        print(bench_quantize(w, t, ggml, runs, imatrix), flush=True)
    print(f"{'dequant':<7} {'qp GB/s':>8} {'ggml':>8} {'ratio':>8} {'gguf py':>8} {'ratio':>8}")
    for t in args.types:
        print(bench_dequantize(w, t, ggml, runs), flush=True)


if __name__ == "__main__":
    main()
