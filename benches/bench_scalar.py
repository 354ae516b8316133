"""Side-by-side speed of scalar quantization: quantpress vs ggml's C (optional), the `gguf`
package's NumPy quantizers and plain NumPy, in one process, on the same data.

    python benches/bench_scalar.py                 # 4096 x 4096 float32 (64 MiB): memory-bound
    python benches/bench_scalar.py --rows 160      # 160 x 4096 (2.5 MiB): cache-resident
    python benches/bench_scalar.py --quick         # small smoke run (CI)

Figures are GB/s of float32 (input for quantize, output for dequantize), median of --runs.
"quantpress" writes into a preallocated output (`out=`), as ggml's C does; "qp alloc" is the
plain call that allocates its result. quantpress runs on one thread unless --threads is given (the
targets are per thread); the gguf package and NumPy are single-threaded NumPy (for NF4, the NumPy port of bitsandbytes in quantpress._reference,
since bitsandbytes itself needs torch). ggml's C quantizers
are timed through ctypes when QUANTPRESS_GGML_LIB points at a ggml build (see benches/_ggml.py);
otherwise those columns are left out. Ratios are quantpress (out=) over each other column.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import quantpress as qp
from quantpress._reference import bnb_quantize_nf4

sys.path.insert(0, str(Path(__file__).parent))
import _ggml  # noqa: E402
from _timing import MEMORY_GBPS, median_seconds  # noqa: E402

LEGACY_TYPES = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")  # K-quants: bench_kquants.py

def numpy_int4_g128(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a NumPy user writes: affine int4, groups of 128, nibbles packed two to a byte."""
    g = w.reshape(-1, 128)
    mn = np.minimum(g.min(axis=1, keepdims=True), 0)
    mx = np.maximum(g.max(axis=1, keepdims=True), 0)
    scale = (mx - mn) / 15
    inv = np.divide(1, scale, out=np.zeros_like(scale), where=scale > 0)
    zero = np.round(-mn * inv)
    q = np.clip(np.round(g * inv) + zero, 0, 15).astype(np.uint8)
    packed = q[:, 0::2] | (q[:, 1::2] << 4)
    return packed, scale.astype(np.float16), zero.astype(np.float16)


def row(name: str, gbps: dict[str, float], ours: str = "quantpress") -> str:
    cells = [f"{name:<22}"] + [f"{gbps[k]:8.2f}" if k in gbps else f"{'-':>8}" for k in COLUMNS]
    base = gbps[ours]
    ratios = [f"{base / gbps[k]:6.1f}x" if k in gbps and k != ours else f"{'-':>7}" for k in COLUMNS[1:]]
    return " ".join(cells) + "  " + " ".join(ratios) + f"  {base / MEMORY_GBPS:5.0%}"


COLUMNS = ["quantpress", "qp alloc", "ggml C", "ggml ref", "gguf py", "numpy"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes, 2 runs (smoke test)")
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    rows, runs = (64, 2) if args.quick else (args.rows, args.runs)
    qp.set_num_threads(args.threads)
    try:
        import gguf
    except ImportError:
        gguf = None
    ggml = _ggml.load()

    w = (np.random.default_rng(0).standard_normal((rows, args.cols)) * 0.02).astype(np.float32)
    gb = w.nbytes / 1e9
    print(f"# {rows}x{args.cols} float32 ({w.nbytes / 2**20:.0f} MiB), median of {runs}, "
          f"quantpress {qp.__version__} SIMD={qp.simd_level()} threads={qp.get_num_threads()}, "
          f"ggml={'commit ' + ggml.commit if ggml else 'not loaded'}")
    header = f"{'GB/s of float32':<22} " + " ".join(f"{c:>8}" for c in COLUMNS)
    header += "  " + " ".join(f"{'vs ' + c[:4]:>7}" for c in COLUMNS[1:]) + "  of mem BW"
    print(header)
    for t in LEGACY_TYPES:
        out = np.empty(qp.gguf_quantize(w[:1], t).size * rows, np.uint8)
        gbps = {"quantpress": gb / median_seconds(lambda: qp.gguf_quantize(w, t, out=out), runs),
                "qp alloc": gb / median_seconds(lambda: qp.gguf_quantize(w, t), runs)}
        if ggml:
            gbps["ggml C"] = gb / median_seconds(lambda: ggml.quantize_into(w, out, t), runs)
            gbps["ggml ref"] = gb / median_seconds(lambda: ggml.quantize_into(w, out, t, ref=True), runs)
        if gguf:
            gt = getattr(gguf.GGMLQuantizationType, t)
            gbps["gguf py"] = gb / median_seconds(lambda: gguf.quants.quantize(w, gt), max(1, runs // 2))
        print(row(f"quantize {t}", gbps))
    for t in LEGACY_TYPES:
        raw = qp.gguf_quantize(w, t)
        out32 = np.empty(w.size, np.float32)
        gbps = {"quantpress": gb / median_seconds(lambda: qp.gguf_dequantize(raw, t, w.shape, out=out32), runs),
                "qp alloc": gb / median_seconds(lambda: qp.gguf_dequantize(raw, t, w.shape), runs)}
        if ggml:
            gbps["ggml C"] = gb / median_seconds(lambda: ggml.dequantize_into(raw, out32, t), runs)
        if gguf:
            gt = getattr(gguf.GGMLQuantizationType, t)
            gbps["gguf py"] = gb / median_seconds(lambda: gguf.quants.dequantize(raw, gt), max(1, runs // 2))
        print(row(f"dequantize {t}", gbps))
    gbps = {
        "qp alloc": gb / median_seconds(lambda: qp.quantize(w, bits=4, group_size=128), runs),
        "numpy": gb / median_seconds(lambda: numpy_int4_g128(w), runs),
    }
    print(row("int4 g128 quant+pack", gbps, ours="qp alloc"))
    qt = qp.quantize(w, bits=4, group_size=128)
    print(row("int4 g128 dequantize", {"qp alloc": gb / median_seconds(qt.dequantize, runs)}, ours="qp alloc"))
    # NF4: bitsandbytes needs torch, so its NumPy port (quantpress._reference) stands in
    gbps = {
        "qp alloc": gb / median_seconds(lambda: qp.quantize(w, scheme="nf4", group_size=64, scale_dtype="float32"), runs),
        "numpy": gb / median_seconds(lambda: bnb_quantize_nf4(w.reshape(-1), 64), max(1, runs // 4)),
    }
    print(row("nf4 g64 quantize", gbps, ours="qp alloc"))
    qt = qp.quantize(w, scheme="nf4", group_size=64, scale_dtype="float32")
    print(row("nf4 g64 dequantize", {"qp alloc": gb / median_seconds(qt.dequantize, runs)}, ours="qp alloc"))


if __name__ == "__main__":
    main()
