"""Ray executor overhead: `qp.compress` of a synthetic sharded model and `KMeans.fit` over shards,
in one process against 2 local Ray workers (`ray.init(num_cpus=2)`), with the outputs checked
equal. Ray's start-up (a few seconds) is outside the timings: a cluster is started once.

    python benches/bench_ray.py            # ~512 MB model (float32), 1M x 16 points, k=256
    python benches/bench_ray.py --quick    # CI smoke run (~32 MB, 100k points)
    python benches/bench_ray.py --megabytes 2048 --only compress --rounds 5

Each job runs ``--rounds`` times, interleaved with the others, and the medians are printed
(the machine is shared: other processes' load hits every job alike).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import numpy as np
from safetensors.numpy import save_file

import quantpress as qp


def make_model(folder: str, megabytes: int, shards: int = 2) -> str:
    """float32 4096-column weights of 16 MiB each, split over ``shards`` files plus an index."""
    rng = np.random.default_rng(0)
    n = max(2, megabytes // 16)
    names = [f"layers.{i}.weight" for i in range(n)]
    weight_map = {}
    for s in range(shards):
        part = names[s::shards]
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        save_file({m: rng.standard_normal((1024, 4096), dtype=np.float32) for m in part}, os.path.join(folder, fname))
        weight_map.update((m, fname) for m in part)
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    return os.path.join(folder, "model.safetensors.index.json")


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def rounds(jobs: dict, n: int) -> dict:
    """Runs the jobs in turn ``n`` times (so load from other processes hits them alike);
    returns each job's median seconds and last output."""
    times: dict = {name: [] for name in jobs}
    outs: dict = {}
    for _ in range(n):
        for name, fn in jobs.items():
            t, outs[name] = timed(fn)
            times[name].append(t)
    return {name: (float(np.median(ts)), outs[name]) for name, ts in times.items()}


def same_files(a: str, b: str) -> bool:
    return all(open(os.path.join(a, n), "rb").read() == open(os.path.join(b, n), "rb").read() for n in os.listdir(a))


def bench_compress(tmp: str, megabytes: int, recipe: str, n: int) -> None:
    os.makedirs(os.path.join(tmp, "in"))
    src = make_model(os.path.join(tmp, "in"), megabytes)
    qp.compress(src, os.path.join(tmp, "warm"), recipe, max_shard_size="64MB")  # page cache, lazy init
    qp.compress(src, os.path.join(tmp, "warm-ray"), recipe, max_shard_size="64MB", executor="ray")  # worker imports

    def run(name: str, **kw) -> None:
        shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)
        qp.compress(src, os.path.join(tmp, name), recipe, max_shard_size="64MB", **kw)

    r = rounds({"local": lambda: run("local"), "ray": lambda: run("ray", executor="ray")}, n)
    t_local, t_ray = r["local"][0], r["ray"][0]
    assert same_files(os.path.join(tmp, "local"), os.path.join(tmp, "ray"))
    print(f"compress {megabytes} MB {recipe}: local {t_local:.2f} s, ray 2 workers {t_ray:.2f} s, "
          f"overhead {100 * (t_ray / t_local - 1):+.1f}%  (median of {n}; outputs byte-identical)")


def bench_kmeans(tmp: str, n: int, d: int, k: int, n_iter: int, reps: int) -> None:
    x = np.random.default_rng(1).standard_normal((n, d), dtype=np.float32)
    rows = qp._core.kmeans_chunk_rows(n, k, d)
    cut = (n // 2 + rows - 1) // rows * rows  # chunk-aligned: equal to the single-array fit
    paths = []
    for i, part in enumerate((x[:cut], x[cut:])):
        paths.append(os.path.join(tmp, f"p{i}.npy"))
        np.save(paths[-1], part)
    init = x[:k].copy()  # the same start for all: the timings are of the Lloyd iterations
    fit = lambda shards, ex="local": qp.KMeans(k, n_iter=n_iter, init=init).fit(shards, executor=ex)  # noqa: E731
    fit(x)
    fit(paths, "ray")  # worker start-up and imports
    r = rounds({"single": lambda: fit(x), "local": lambda: fit(paths), "ray": lambda: fit(paths, "ray")}, reps)
    (t_single, a), (t_local, b), (t_ray, c) = r["single"], r["local"], r["ray"]
    assert a.centroids.tobytes() == b.centroids.tobytes() == c.centroids.tobytes()
    print(f"k-means n={n} d={d} k={k} {n_iter} iterations: single array {t_single:.2f} s, "
          f"2 shards local {t_local:.2f} s, ray 2 workers {t_ray:.2f} s, overhead {100 * (t_ray / t_single - 1):+.1f}% "
          f"(median of {reps}; centroids bit-identical)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--megabytes", type=int, default=512)
    ap.add_argument("--recipe", default="int4")
    ap.add_argument("--rounds", type=int, default=3, help="timed runs of each job, interleaved; medians are printed")
    ap.add_argument("--only", choices=("compress", "kmeans"))
    args = ap.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    tmp = tempfile.mkdtemp(prefix="bench-ray-")
    try:
        if args.only != "kmeans":
            bench_compress(tmp, 32 if args.quick else args.megabytes, args.recipe, args.rounds)
        if args.only == "compress":
            pass
        elif args.quick:
            bench_kmeans(tmp, 100_000, 16, 64, 3, args.rounds)
        else:
            bench_kmeans(tmp, 1_000_000, 16, 256, 10, args.rounds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        ray.shutdown()


if __name__ == "__main__":
    main()
