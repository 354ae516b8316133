"""k-means over points that live in shards (arrays, ``np.memmap`` or ``.npy`` paths), in this
process or as Ray tasks, with the same centroids either way.

Each Lloyd iteration: every shard computes, in Rust, its assignment and float64 sums per chunk
of ``rows = kmeans_chunk_rows(n_total, k, d)`` points (counted from the shard's first row),
its points per cluster and its ``k`` farthest points (re-seeding candidates); the driver adds
the chunk sums of the shards **in shard order, chunk by chunk**, picks the re-seeding points
from the candidates (largest cost, then lowest global row) and finishes the iteration in Rust.
So:

* the local sharded fit and the Ray fit give bit-identical centroids, labels and inertia;
* both equal ``fit`` on the concatenated points bit for bit when every shard but the last holds
  a multiple of ``rows`` points (the chunks then coincide with the single-array ones); with other
  shard sizes the sums are grouped differently and results agree to float64 rounding.

Seeding (``k-means++``/``random``) and the ``tol`` variance read the points once on the driver
through the shards' memmaps (``np.concatenate``: the points must fit in the driver's memory once;
pass ``init=`` an array to avoid it); the Lloyd iterations never gather the points.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, Sequence

import numpy as np

from . import _core
from ._core import QuantpressError

Partial = tuple[Any, ...]


def _load(source: Any) -> np.ndarray:
    """A shard's points as float32 ``(n, d)``: a path is memory-mapped."""
    from .kmeans import as_points

    if isinstance(source, (str, os.PathLike)):
        source = np.load(os.fspath(source), mmap_mode="r")
    return as_points(source)


def shard_partial(source: Any, d: int, centroids: np.ndarray, metric: str, rows: int, weights: Optional[np.ndarray],
                  want_codes: bool, threads: int = 0) -> Partial:
    """One shard's :func:`quantpress._core.lloyd_partial` (run locally or as a Ray task)."""
    from .kmeans import unit_rows

    if threads:
        _core.set_num_threads(threads)
    x = _load(source)
    if metric == "cosine":
        x = unit_rows(x)
    coords, weight, inertia, members, far, codes = _core.lloyd_partial(x, d, centroids, metric, rows, weights)
    return coords, weight, inertia, members, far, codes if want_codes else None


class Shards:
    """The shards' sources, sizes and weights, checked once."""

    def __init__(self, shards: Sequence[Any], sample_weight: Any = None) -> None:
        if len(shards) == 0:
            raise QuantpressError("fit needs at least one shard of points")
        self.sources = [os.fspath(s) if isinstance(s, os.PathLike) else s for s in shards]
        shapes = [_load(s).shape for s in self.sources]
        self.d = shapes[0][1]
        if any(s[1] != self.d for s in shapes):
            raise QuantpressError(f"every shard needs the same number of columns, got {sorted({s[1] for s in shapes})}")
        self.sizes = [s[0] for s in shapes]
        self.offsets = np.cumsum([0] + self.sizes)[:-1].tolist()
        self.n = sum(self.sizes)
        self.weights = self._weights(sample_weight)

    def _weights(self, sample_weight: Any) -> list[Optional[np.ndarray]]:
        if sample_weight is None:
            return [None] * len(self.sizes)
        if len(sample_weight) != len(self.sizes):
            raise QuantpressError(f"sample_weight must be a list of {len(self.sizes)} arrays, one per shard")
        out = []
        for w, n in zip(sample_weight, self.sizes):
            a = np.ascontiguousarray(w, dtype=np.float32)
            if a.shape != (n,):
                raise QuantpressError(f"sample_weight must have shape ({n},) for its shard, got {a.shape}")
            out.append(a)
        return out

    def concat(self) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Every point (and weight) in one array, for seeding."""
        x = np.concatenate([_load(s) for s in self.sources])
        w = None if self.weights[0] is None else np.concatenate(self.weights)  # type: ignore[arg-type]
        return x, w


def reduce_partials(parts: list[Partial], offsets: list[int], k: int, d: int) -> tuple[np.ndarray, np.ndarray, float, np.ndarray, Any]:
    """Chunk sums added in shard order then chunk order (exactly as the single-array Rust loop
    adds its chunks), members summed, the re-seeding candidates merged (best first)."""
    coords, weight, inertia = np.zeros(k * d), np.zeros(k), 0.0
    members = np.zeros(k, dtype=np.uint64)
    cost, index, code, fw, pts = [], [], [], [], []
    for p, off in zip(parts, offsets):
        c, w, inert, m, far, _ = p
        for j in range(len(inert)):
            coords += c[j * k * d:(j + 1) * k * d]
            weight += w[j * k:(j + 1) * k]
            inertia += float(inert[j])
        members += m
        cost.append(far[0])
        index.append(far[1].astype(np.int64) + off)
        code.append(far[2])
        fw.append(far[3])
        pts.append(far[4].reshape(-1, d))
    cost_a, index_a = np.concatenate(cost), np.concatenate(index)
    order = np.lexsort((index_a, -cost_a))[: int(np.count_nonzero(weight == 0))]
    far_all = (np.ascontiguousarray(np.concatenate(code)[order]), np.ascontiguousarray(np.concatenate(fw)[order]),
               np.ascontiguousarray(np.concatenate(pts)[order].reshape(-1)))
    return coords, weight, inertia, members, far_all


class LocalBackend:
    """Runs every shard's partial in this process, one after the other."""

    def __init__(self, shards: Shards) -> None:
        self.shards = shards

    def partials(self, c: np.ndarray, metric: str, rows: int, want_codes: bool) -> list[Partial]:
        s = self.shards
        return [shard_partial(src, s.d, c, metric, rows, w, want_codes) for src, w in zip(s.sources, s.weights)]


class RayBackend:
    """Runs the shards' partials as Ray tasks (one CPU, one thread each); in-memory shards are
    put in the object store once, paths are memory-mapped by the workers."""

    def __init__(self, shards: Shards, address: Optional[str]) -> None:
        from .executor import MAX_RETRIES, ensure_ray

        self.ray = ensure_ray(address)
        self.shards = shards
        self.task = self.ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(shard_partial)
        self.sources = [s if isinstance(s, str) else self.ray.put(np.asarray(s)) for s in shards.sources]
        self.weights = [None if w is None else self.ray.put(w) for w in shards.weights]

    def partials(self, c: np.ndarray, metric: str, rows: int, want_codes: bool) -> list[Partial]:
        c_ref = self.ray.put(c)
        refs = [self.task.remote(src, self.shards.d, c_ref, metric, rows, w, want_codes, 1)
                for src, w in zip(self.sources, self.weights)]
        return list(self.ray.get(refs))  # in shard order, whatever order they finish in


def lloyd_sharded(backend: Any, shards: Shards, c: np.ndarray, k: int, metric: str, n_iter: int, stop: float,
                  progress: Optional[Callable[[int, int, float], Any]]) -> tuple[np.ndarray, float, np.ndarray, int, int]:
    """The Lloyd loop of ``KMeans._run`` over shards: ``(centroids, inertia, labels, n_iter, reseeds)``."""
    d = shards.d
    rows = _core.kmeans_chunk_rows(shards.n, k, d)
    reseeds = done = 0
    for it in range(n_iter):
        coords, weight, inertia, members, far = reduce_partials(backend.partials(c, metric, rows, False), shards.offsets, k, d)
        new, _cw, reseeded, shift = _core.lloyd_finish(c, d, metric, coords, weight, members, *far)
        c = new.reshape(c.shape)
        reseeds += reseeded
        done = it + 1
        if progress is not None:
            progress(done, n_iter, inertia)
        if shift <= stop and reseeded == 0:
            break
    parts = backend.partials(c, metric, rows, True)
    inertia = reduce_partials(parts, shards.offsets, k, d)[2]
    labels = np.concatenate([p[5] for p in parts])
    return c, inertia, labels, done, reseeds


__all__ = ["LocalBackend", "RayBackend", "Shards", "lloyd_sharded", "reduce_partials", "shard_partial"]
