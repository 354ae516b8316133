"""End-to-end speed and memory of `qp.compress` and of `qp.load` + decoding, on a synthetic
float32 safetensors model (issue 6 targets: compress at >= 1 GB/s of input with peak RSS under
3x the largest tensor + 200 MB; decoding at >= 50% of memcpy bandwidth, both on 2 threads).

    python benches/bench_compress.py                  # ~1 GB model, largest tensor 64 MiB
    python benches/bench_compress.py --size-gb 2      # the issue's 2 GB model
    python benches/bench_compress.py --quick          # ~40 MB, 1 run (CI smoke)

Each compress runs in a fresh subprocess (`--threads` Rust threads) after one warm-up run that
brings the input into the page cache; the figure is the median of `--runs` runs. Peak RSS is the
child's `VmHWM` (/proc/self/status; `ru_maxrss` would include the parent's RSS at fork). It counts
the pages of the memory-mapped input the child touched: page-cache pages shared with the kernel
and dropped under memory pressure, but resident in the process while mapped. Decoding: `qp.load(path)` then every tensor decoded once (fresh output arrays, as users
get them), in GB/s of float32 output, against copying the same bytes with NumPy on `--threads`
Python threads (into a preallocated buffer, and into fresh arrays like `x.copy()`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import median_seconds  # noqa: E402

#: One "layer" of a transformer-like model: (name, shape). 4096 x 4096 float32 = 64 MiB.
LAYER = [("attn.qkv.weight", (3072, 4096)), ("attn.o.weight", (4096, 4096)),
         ("mlp.up.weight", (2048, 4096)), ("mlp.down.weight", (4096, 2048)),
         ("norm.weight", (4096,)), ("mlp.up.bias", (2048,))]
QUICK_LAYER = [("attn.qkv.weight", (384, 512)), ("attn.o.weight", (512, 512)),
               ("mlp.up.weight", (1024, 512)), ("mlp.down.weight", (512, 1024)),
               ("norm.weight", (512,)), ("mlp.up.bias", (1024,))]


def write_model(path: str, size_gb: float, quick: bool, seed: int = 0) -> tuple[int, int, int]:
    """Writes a safetensors file of float32 layers until ``size_gb`` (one tensor at a time);
    returns ``(bytes of tensor data, largest tensor bytes, tensor count)``."""
    layer = QUICK_LAYER if quick else LAYER
    per_layer = sum(4 * int(np.prod(s)) for _, s in layer)
    n_layers = max(1, round(size_gb * 1e9 / per_layer))
    header, offset = {}, 0
    items = [(f"layers.{i}.{n}", s) for i in range(n_layers) for n, s in layer]
    for name, shape in items:
        nbytes = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for _, shape in items:
            f.write((rng.standard_normal(shape, np.float32) * np.float32(0.02)).data)
    largest = max(4 * int(np.prod(s)) for _, s in items)
    return offset, largest, len(items)


CHILD = r"""
import json, os, resource, sys, time
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
import quantpress as qp
qp.set_num_threads(int(sys.argv[4]))
def status():
    return {k: int(v.split()[0]) * 1024 for k, v in (l.split(":", 1) for l in open("/proc/self/status"))
            if k in ("VmHWM", "RssFile", "RssAnon")}
base = status()["VmHWM"]
c0, t0 = cpu(), time.perf_counter()
rep = qp.compress(sys.argv[1], sys.argv[2], sys.argv[3])
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "cpu": cpu() - c0, "input": rep.input_bytes, "output": rep.output_bytes,
                  "maxrss": status()["VmHWM"], "base": base}))
"""


def run_compress(src: str, dst: str, recipe: str, threads: int) -> dict:
    env = dict(os.environ, QUANTPRESS_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", CHILD, src, dst, recipe, str(threads)], env=env,
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_compress(src: str, folder: str, recipe: str, runs: int, threads: int, largest: int) -> str:
    dst = os.path.join(folder, f"out-{recipe}.safetensors")
    run_compress(src, dst, recipe, threads)  # warm-up: the input into the page cache
    results = [run_compress(src, dst, recipe, threads) for _ in range(runs)]
    sec = statistics.median(r["seconds"] for r in results)
    cpu = statistics.median(r["cpu"] for r in results)
    r = results[-1]
    peak, limit = r["maxrss"], 3 * largest + 200 * 2**20
    return (f"compress {recipe:<5} {r['input'] / 1e9 / sec:6.2f} GB/s of input ({sec:.2f} s, "
            f"{cpu:.2f} s CPU, {r['input'] / 1e9:.2f} GB -> {r['output'] / 1e9:.3f} GB)  peak RSS {peak / 2**20:.0f} MiB "
            f"(python+imports {r['base'] / 2**20:.0f} MiB)"
            f"  target < {limit / 2**20:.0f} MiB: {'ok' if peak < limit else 'OVER'}")


def parallel_copy(chunks: list[tuple[np.ndarray, np.ndarray]], pool: ThreadPoolExecutor) -> None:
    list(pool.map(lambda p: np.copyto(p[0], p[1]), chunks))


def bench_decode(path: str, runs: int, threads: int) -> list[str]:
    import quantpress as qp

    qp.set_num_threads(threads)
    c = qp.load(path)
    names = list(c)

    def decode() -> int:
        return sum(c[n].nbytes for n in names)

    decode()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        nbytes = decode()
        times.append(time.perf_counter() - t0)
    dec = nbytes / statistics.median(times) / 1e9
    return [f"decode  {os.path.basename(path):<22} {dec:6.2f} GB/s of float32 output ({nbytes / 1e9:.2f} GB)"] + \
        [f"        vs memcpy {k}: {v:6.2f} GB/s -> {dec / v:5.0%}" for k, v in memcpy_gbps(nbytes, runs, threads).items()]


def memcpy_gbps(nbytes: int, runs: int, threads: int) -> dict[str, float]:
    """NumPy copies of ``nbytes`` in 64 MiB pieces on ``threads`` Python threads (``np.copyto``
    releases the GIL): into a preallocated buffer, and into fresh arrays (``x.copy()``)."""
    piece = 16 * 2**20
    n = max(1, nbytes // (4 * piece))
    src = [np.ones(piece, np.float32) for _ in range(n)]
    dst = [np.empty(piece, np.float32) for _ in range(n)]
    out = {}
    with ThreadPoolExecutor(threads) as pool:
        for label, fn in (("preallocated", lambda: parallel_copy(list(zip(dst, src)), pool)),
                          ("fresh arrays", lambda: list(pool.map(np.copy, src)))):
            out[label] = n * piece * 4 / median_seconds(fn, runs) / 1e9
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gb", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--recipes", default="int8,int4")
    ap.add_argument("--quick", action="store_true", help="~40 MB model, 1 run (smoke test)")
    ap.add_argument("--dir", default=None, help="folder for the model files (default: a temp dir)")
    args = ap.parse_args()
    if args.quick:
        args.size_gb, args.runs = 0.04, 1
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        src = os.path.join(folder, "model.safetensors")
        total, largest, count = write_model(src, args.size_gb, args.quick)
        print(f"model: {count} float32 tensors, {total / 1e9:.2f} GB, largest {largest / 2**20:.0f} MiB; "
              f"{args.threads} threads, median of {args.runs}")
        for recipe in args.recipes.split(","):
            print(bench_compress(src, folder, recipe, args.runs, args.threads, largest), flush=True)
        for recipe in args.recipes.split(","):
            for line in bench_decode(os.path.join(folder, f"out-{recipe}.safetensors"), args.runs, args.threads):
                print(line, flush=True)


if __name__ == "__main__":
    main()
