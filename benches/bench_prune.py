"""Pruning speed on a 4096 x 4096 float32 matrix against NumPy equivalents, in one process:
magnitude threshold + bitmask (np.partition on |w| + packbits), the whole ``qp.prune`` (mask,
packed kept values, SparseTensor; NumPy: partition + mask + ``w[mask]`` + packbits), N:M 2:4
selection (a stable argsort per group of 4) and structured row pruning by L2 norm
(``np.linalg.norm(w, axis=1)`` + argsort + take).

    python benches/bench_prune.py            # 4096 x 4096
    python benches/bench_prune.py --quick    # smoke run (CI)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import quantpress as qp
from quantpress import _core
from quantpress.demo import example_weights

sys.path.insert(0, str(Path(__file__).parent))
from _timing import median_seconds  # noqa: E402


def numpy_magnitude(w: np.ndarray, keep: int) -> np.ndarray:
    a = np.abs(w).reshape(-1)
    t = np.partition(a, a.size - keep)[a.size - keep]
    return np.packbits(a >= t, bitorder="little")


def numpy_prune(w: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    flat = w.reshape(-1)
    a = np.abs(flat)
    t = np.partition(a, a.size - keep)[a.size - keep]
    m = a >= t
    return np.packbits(m, bitorder="little"), flat[m]


def numpy_rows(w: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    norms = np.linalg.norm(w, axis=1)
    index = np.sort(np.argsort(-norms, kind="stable")[:keep])
    return np.take(w, index, axis=0), index


def numpy_nm(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    g = np.abs(w).reshape(-1, 4)
    pos = np.sort(np.argsort(-g, axis=1, kind="stable")[:, :2], axis=1)
    return np.take_along_axis(w.reshape(-1, 4), pos, axis=1), pos.astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    rows, runs = (256, 1) if args.quick else (args.rows, args.runs)
    w = example_weights(rows, args.cols)
    keep = w.size // 2
    gb = w.nbytes / 1e9
    print(f"# {rows}x{args.cols} float32, 50% sparsity, SIMD={qp.simd_level()}, threads={qp.get_num_threads()}, median of {runs}")
    print(f"{'op':<22} {'quantpress s':>12} {'GB/s':>7} {'NumPy s':>9} {'GB/s':>7} {'ratio':>7}")
    cases = [
        ("magnitude mask", lambda: _core.prune_magnitude_masks([w.reshape(-1)], keep), lambda: numpy_magnitude(w, keep)),
        ("N:M 2:4 select+pack", lambda: _core.prune_nm(w.reshape(-1), w.reshape(-1), 2, 4), lambda: numpy_nm(w)),
        ("qp.prune magnitude", lambda: qp.prune(w, 0.5), lambda: numpy_prune(w, keep)),
        ("qp.prune l2_rows", lambda: qp.prune(w, 0.5, method="l2_rows"), lambda: numpy_rows(w, rows // 2)),
    ]
    for name, ours, theirs in cases:
        t = median_seconds(ours, runs)
        line = f"{name:<22} {t:12.4f} {gb / t:7.2f}"
        if theirs is not None:
            tn = median_seconds(theirs, runs)
            line += f" {tn:9.4f} {gb / tn:7.2f} {tn / t:6.1f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
