"""Q6_K, Q3_K, IQ4_NL, IQ4_XS against ggml in one process: single-thread GB/s of float32 (input
for quantize, output for dequantize) on 4096x4096 Student-t data, and RMSE / byte equality on
Gaussian and weight-like data with and without an imatrix.

    OPENBLAS_NUM_THREADS=1 QUANTPRESS_NUM_THREADS=1 PYTHONPATH=python \
        python benches/kquants_symmetric_vs_ggml.py /work/ggml-build/lib
"""
import sys
import time

import numpy as np

sys.path.insert(0, "benches")
sys.path.insert(0, "tests")
import _ggml  # noqa: E402
import quantpress as qp  # noqa: E402
from conftest import weight_like  # noqa: E402

TYPES = ["Q6_K", "Q3_K", "IQ4_NL", "IQ4_XS"]
g = _ggml.load(sys.argv[1] if len(sys.argv) > 1 else "/work/ggml-build/lib")
qp.set_num_threads(1)


def ggml_quantize(x, t, w=None):
    # ggml's own entry points: the _ref row quantizers for Q6_K/Q3_K without weights,
    # ggml_quantize_chunk otherwise (IQ4 has no weight-free reference path with ntry 7).
    if w is None and t in ("Q6_K", "Q3_K"):
        return np.frombuffer(bytes(g.quantize(x.reshape(-1), t, ref=True)), np.uint8)
    return np.frombuffer(bytes(g.quantize_chunk(x, t, imatrix=w)), np.uint8)


def best(f, n=3):
    return min(_t(f) for _ in range(n))


def _t(f):
    s = time.perf_counter()
    f()
    return time.perf_counter() - s
rng = np.random.default_rng(42)
data = {"gauss": rng.standard_normal((256, 4096)).astype(np.float32), "weight_like": weight_like(rng, (256, 4096))}
imat = (rng.standard_normal((512, 4096)).astype(np.float32) ** 2).mean(0).astype(np.float32)
for t in TYPES:
    for dn, x in data.items():
        for w in [None, imat]:
            ours = qp.gguf_quantize(x, t, weights=w)

            ref = ggml_quantize(x, t, w)
            yo = qp.gguf_dequantize(ours, t, x.shape); yg = g.dequantize(ref, t).reshape(x.shape)
            r = lambda y: np.sqrt(np.mean((x - y) ** 2))
            print(f"{t:7s} {dn:11s} {'imatrix' if w is not None else 'none':8s} ours {r(yo):.6g} ggml {r(yg):.6g} identical_bytes={np.array_equal(ours.reshape(-1), ref)}")

x = (rng.standard_t(4, size=(4096, 4096)) * 0.02).astype(np.float32)
xs = x[:256]  # ggml's IQ4 search is slow: time it on a slice
for t in TYPES:
    q = best(lambda: qp.gguf_quantize(x, t))
    raw = qp.gguf_quantize(x, t)
    dq = best(lambda: qp.gguf_dequantize(raw, t, x.shape))
    gq = best(lambda: ggml_quantize(xs, t), 1)
    gd = best(lambda: g.dequantize(raw.reshape(-1), t))
    print(f"{t}: quantize ours {x.nbytes / 1e9 / q:.3f} GB/s, ggml {xs.nbytes / 1e9 / gq:.3f} GB/s; "
          f"dequantize ours {x.nbytes / 1e9 / dq:.2f} GB/s, ggml {x.nbytes / 1e9 / gd:.2f} GB/s")
