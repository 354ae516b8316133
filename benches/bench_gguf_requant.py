"""End-to-end GGUF re-quantization: file in, file out, in MB/s of input.

    python benches/bench_gguf_requant.py            # ~200 MB synthetic llama-shaped F16 file
    python benches/bench_gguf_requant.py --quick    # ~10 MB smoke run

Makes a llama-shaped F16 file (token_embd, per-layer attn_q/k/v/output, ffn_up/gate/down,
norms, output) in a temporary folder, then times ``qp.gguf_requantize``:
  * F16 -> Q8_0 and Q8_0 -> Q4_K (pure) and F16 -> Q4_K_M (llama.cpp's mix);
  * the ``gguf`` package path where one exists: reading every tensor with ``gguf.GGUFReader``,
    ``gguf.quants.quantize(..., Q8_0)`` and writing with ``gguf.GGUFWriter``. The gguf package
    cannot make K-quants (``Q4_K`` raises NotImplementedError), so Q4_K/Q4_K_M have no baseline.
Each figure is the best of --runs (page cache warm), plus the peak-RSS growth of the process.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import gguf
import numpy as np

import quantpress as qp


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_model(path: str, d: int, ff: int, n_layer: int, vocab: int) -> None:
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(n_layer)
    w.add_head_count(max(1, d // 128))
    w.add_head_count_kv(max(1, d // 128))
    w.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(vocab)])

    def t(shape: tuple[int, ...]) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)

    w.add_tensor("token_embd.weight", t((vocab, d)))
    for i in range(n_layer):
        for name, shape in [("attn_q", (d, d)), ("attn_k", (d, d)), ("attn_v", (d, d)), ("attn_output", (d, d)),
                            ("ffn_up", (ff, d)), ("ffn_gate", (ff, d)), ("ffn_down", (d, ff))]:
            w.add_tensor(f"blk.{i}.{name}.weight", t(shape))
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(d, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(d, np.float32))
    w.add_tensor("output_norm.weight", np.ones(d, np.float32))
    w.add_tensor("output.weight", t((vocab, d)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gguf_package_q8_0(src: str, dst: str) -> None:
    """The gguf package's path: read, quantize 2-D weights to Q8_0, write."""
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, "llama")
    for t in r.tensors:
        shape = tuple(int(x) for x in reversed(t.shape))
        data = np.asarray(t.data).reshape(shape)
        if len(shape) >= 2 and shape[-1] % 32 == 0:
            q = gguf.quants.quantize(data.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(t.name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(t.name, data.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def best(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    d, ff, n_layer, vocab = (256, 768, 4, 2000) if args.quick else (1024, 2816, 6, 16000)
    with tempfile.TemporaryDirectory() as tmp:
        f16, q8 = os.path.join(tmp, "f16.gguf"), os.path.join(tmp, "q8.gguf")
        make_model(f16, d, ff, n_layer, vocab)
        qp.gguf_requantize(f16, q8, "Q8_0")
        mb16, mb8 = os.path.getsize(f16) / 1e6, os.path.getsize(q8) / 1e6
        print(f"model: d={d} ff={ff} layers={n_layer} vocab={vocab}; F16 {mb16:.0f} MB, Q8_0 {mb8:.0f} MB; "
              f"threads={qp.get_num_threads()} simd={qp.simd_level()}")
        rss0 = maxrss_mb()
        cases = [("F16 -> Q8_0", f16, "Q8_0", mb16), ("Q8_0 -> Q4_K", q8, "Q4_K", mb8),
                 ("F16 -> Q4_K_M", f16, "Q4_K_M", mb16)]
        out = os.path.join(tmp, "out.gguf")
        for label, src, qtype, mb in cases:
            s = best(lambda: qp.gguf_requantize(src, out, qtype), args.runs)
            print(f"quantpress {label:14s} {s:7.3f} s  {mb / s:8.1f} MB/s in  -> {os.path.getsize(out) / 1e6:6.1f} MB")
        print(f"quantpress peak RSS growth: {maxrss_mb() - rss0:.0f} MB (largest tensor {vocab * d * 4 / 1e6:.0f} MB as float32)")
        s = best(lambda: gguf_package_q8_0(f16, out), args.runs)
        print(f"gguf pkg   {'F16 -> Q8_0':14s} {s:7.3f} s  {mb16 / s:8.1f} MB/s in  -> {os.path.getsize(out) / 1e6:6.1f} MB")
        print("gguf pkg   Q4_K / Q4_K_M: not possible (gguf.quants has no K-quant quantizer)")


if __name__ == "__main__":
    main()
