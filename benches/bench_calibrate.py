"""Speed of activation calibration (qp.Observer) against NumPy's histogram and ONNX Runtime.

    PYTHONPATH=python:/path/to/onnxruntime python benches/bench_calibrate.py [--size 16777216]

* update(): one batch of --size float32 values, against the np.histogram call ORT makes for it.
* symmetric percentile, second batch: our O(n) binning on the widened edges against the
  np.histogram(bins=edges) of ORT (NumPy sorts the data for explicit edges).
* compute(): entropy search against ORT's HistogramCollector.compute_entropy on the same
  histogram (num_bins=2048, 128 quantized bins), and the MSE search. Medians of --runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time
from typing import Callable

import numpy as np

import quantpress as qp


def bench(f: Callable[..., object], runs: int, setup: Callable[[], tuple] = tuple) -> float:
    times = []
    for _ in range(runs):
        state = setup()
        t = time.perf_counter()
        f(*state)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def observer_after(method: str, batches: list[np.ndarray], **kw) -> qp.Observer:
    obs = qp.Observer(method, **kw)
    for b in batches:
        obs.update(b)
    return obs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1 << 24)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(args.size, dtype=np.float32)
    wider = x * np.float32(1.5)
    t = np.float32(np.abs(x).max())

    from onnxruntime.quantization.calibrate import HistogramCollector

    def ort_after(method: str, batches: list[np.ndarray], symmetric: bool = False) -> HistogramCollector:
        col = HistogramCollector(method, symmetric, 2048, 128, 99.999, "same")
        with contextlib.redirect_stdout(io.StringIO()):
            for b in batches:
                col.collect({"x": b})
        return col

    def ort_update(col: HistogramCollector, batch: np.ndarray) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            col.collect({"x": batch})

    row = "{:<46} {:>9.1f} ms {:>9.1f} ms {:>7.2f}x"
    print(f"{'':<46} {'quantpress':>12} {'reference':>12} {'ratio':>8}")
    ours = bench(lambda: qp.Observer("entropy").update(x), args.runs)
    ref = bench(lambda: np.histogram(x, 2048, range=(-t, t)), args.runs)
    print(row.format(f"update, 1st batch ({args.size}) / np.histogram", ours * 1e3, ref * 1e3, ref / ours))
    ref = bench(lambda: ort_update(ort_after("entropy", []), x), args.runs)
    print(row.format("update, 1st batch / ORT collect", ours * 1e3, ref * 1e3, ref / ours))
    ours = bench(lambda o: o.update(wider), args.runs, lambda: (observer_after("entropy", [x]),))
    ref = bench(lambda c: ort_update(c, wider), args.runs, lambda: (ort_after("entropy", [x]),))
    print(row.format("update, widening 2nd batch / ORT collect", ours * 1e3, ref * 1e3, ref / ours))
    ours = bench(lambda o: o.update(wider), args.runs, lambda: (observer_after("percentile", [x], symmetric=True),))
    ref = bench(lambda c: ort_update(c, wider), args.runs, lambda: (ort_after("percentile", [x], True),))
    print(row.format("update |x|, widening 2nd batch / ORT collect", ours * 1e3, ref * 1e3, ref / ours))

    small = x[: 1 << 20]
    col = HistogramCollector("entropy", False, 2048, 128, 99.999, "same")
    with contextlib.redirect_stdout(io.StringIO()):
        col.collect({"x": small})
        ref = bench(col.compute_entropy, 1)
    obs = observer_after("entropy", [small])
    ours = bench(obs.compute, args.runs)
    print(row.format("entropy compute (2048 bins) / ORT compute_entropy", ours * 1e3, ref * 1e3, ref / ours))
    obs = observer_after("mse", [small])
    ours = bench(obs.compute, args.runs)
    print(f"{'mse compute (2048 bins)':<44} {ours * 1e3:>10.1f} ms")


if __name__ == "__main__":
    main()
