"""k-means over points that live in shards (arrays, ``np.memmap``, ``.npy`` paths or the blocks
of a Ray Dataset), in this process or on Ray actors, with the same centroids either way.

Each Lloyd iteration: every shard computes, in Rust, its assignment and float64 sums per chunk
of ``rows = kmeans_chunk_rows(n_total, k, d)`` points (counted from the shard's first row),
its points per cluster and, when some of its clusters are empty, as many of its farthest points
(re-seeding candidates: a cluster empty overall is empty in every shard); the driver adds
the chunk sums of the shards **in shard order, chunk by chunk**, picks the re-seeding points
from the candidates (largest cost, then lowest global row) and finishes the iteration in Rust.
So:

* the local sharded fit and the Ray fit give bit-identical centroids, labels and inertia;
* both equal ``fit`` on the concatenated points bit for bit when every shard but the last holds
  a multiple of ``rows`` points (the chunks then coincide with the single-array ones); with other
  shard sizes the sums are grouped differently and results agree to float64 rounding.

On Ray the shards are cut into as many consecutive groups as the cluster has CPUs (at most one
per shard); each group is served by one long-lived actor of the pool (``executor.pool``, kept
across fits and shared with ``compress``) that opens its shards once per fit (memory maps, or
zero-copy views of object-store blocks) and answers one call per iteration with the partials of
its shards: only the centroids go out and the sums come back. The first group adds its own chunk
sums (exactly what the driver would do: its sum starts with them), so only the later groups
send per-chunk sums.

Seeding (``k-means++``/``random``) and the ``tol`` variance read the points once on the driver
(``np.concatenate``: the points must fit in the driver's memory once; pass ``init=`` an array to
avoid it); the Lloyd iterations never gather the points.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, Sequence

import numpy as np

from . import _core
from ._core import QuantpressError

Partial = tuple[Any, ...]


def block_points(block: Any) -> np.ndarray:
    """A Ray Dataset block as float32 ``(n, d)`` points: a ``{column: array}`` dict holding one
    ``(n, d)`` tensor column, or numeric ``(n,)`` columns taken in order as the coordinates."""
    from .kmeans import as_points

    if not isinstance(block, dict):
        return as_points(block)
    cols = [np.asarray(v) for v in block.values()]
    if len(cols) == 1:
        return as_points(cols[0])
    if any(c.ndim != 1 for c in cols):
        raise QuantpressError("a Dataset of points needs one (n, d) tensor column or numeric scalar columns")
    return as_points(np.column_stack(cols))


def _load(source: Any) -> np.ndarray:
    """A shard's points as float32 ``(n, d)``: a path is memory-mapped, an object reference
    (an array or a Dataset block) is read from the Ray object store."""
    if isinstance(source, (str, os.PathLike)):
        source = np.load(os.fspath(source), mmap_mode="r")
    elif type(source).__name__ == "ObjectRef":
        import ray

        source = ray.get(source)
    return block_points(source)


class ShardGroup:
    """Consecutive shards and their per-iteration partials: used in this process by the local
    fit, and kept by a pool actor for the Ray fit (:func:`actor_partials`). The shards are
    opened once."""

    def __init__(self, sources: Sequence[Any], weights: Sequence[Any], metric: str) -> None:
        self.points = [_load(s) for s in sources]
        self.weights = [None if w is None else np.asarray(_load_weight(w)) for w in weights]
        self.metric = metric
        # What each shard's Lloyd iterations carry over (a filtering tree or distance bounds,
        # the same results, faster), for shards held in memory: the state keeps a copy of its
        # shard's points, which a memory-mapped shard must not be turned into.
        mapped = [isinstance(s, (str, os.PathLike, np.memmap)) for s in sources]
        self.states = [_core.LloydState() if metric == "l2" and not m else None for m in mapped]

    def shapes(self) -> list[tuple[int, int]]:
        return [(int(p.shape[0]), int(p.shape[1])) for p in self.points]

    def partials(self, c: np.ndarray, rows: int, want_codes: bool, first: bool = False) -> list[Partial]:
        """Each shard's :func:`quantpress._core.lloyd_partial` from the centroids ``c``;
        ``first``: these are the first shards of all, so their chunk sums are folded here."""
        from .kmeans import unit_rows

        out = []
        for x, w, state in zip(self.points, self.weights, self.states):
            if self.metric == "cosine":
                x = unit_rows(x)  # per call: a memory-mapped shard is never held in memory
            coords, weight, inertia, members, far, codes = _core.lloyd_partial(x, x.shape[1], c, self.metric, rows, w, state)
            out.append((coords, weight, inertia, members, far, codes if want_codes else None))
        return fold_first(out, len(c), c.size // max(1, len(c))) if first else out


def fold_first(parts: list[Partial], k: int, d: int) -> list[Partial]:
    """The partials of the first shards with all their chunk sums added here, in order, from
    zero, as one chunk: exactly what :func:`reduce_partials` would have built from them (it
    starts from zero too), in ``1/chunks`` of the bytes to send.

    Example:
        >>> p = [(np.array([0.1, 0.2, 0.3]), np.array([1.0, 1.0, 1.0]), np.array([0.5, 0.25, 0.125]), None, None, None)]
        >>> q = fold_first(p, 1, 1)
        >>> float(q[0][0][0]) == (0.0 + 0.1) + 0.2 + 0.3, q[0][2].tolist()
        (True, [0.875])
    """
    coords, weight, inertia = add_chunks(parts, k, d)
    out = [(np.empty(0), np.empty(0), np.empty(0), *rest) for _c, _w, _i, *rest in parts]
    out[0] = (coords, weight, np.array([inertia]), *out[0][3:])
    return out


def add_chunks(parts: list[Partial], k: int, d: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The chunk sums of ``parts`` added from zero in shard order, then chunk order (exactly as
    the single-array Rust loop adds its chunks): ``(coords, weight, inertia)``."""
    coords, weight, inertia = np.zeros(k * d), np.zeros(k), 0.0
    for c, w, inert, *_ in parts:
        c, w = c.reshape(-1, k * d), w.reshape(-1, k)
        for j in range(len(inert)):
            coords += c[j]
            weight += w[j]
            inertia += float(inert[j])
    return coords, weight, inertia


def _load_weight(w: Any) -> Any:
    if type(w).__name__ == "ObjectRef":
        import ray

        return ray.get(w)
    return w


class Shards:
    """The shards' sources, sizes and weights, checked once (``shapes``: the ``(n_i, d)`` of
    each shard when the driver does not hold them, e.g. Dataset blocks)."""

    def __init__(self, shards: Sequence[Any], sample_weight: Any = None, shapes: Optional[list[tuple[int, int]]] = None) -> None:
        if len(shards) == 0:
            raise QuantpressError("fit needs at least one shard of points")
        self.sources = [os.fspath(s) if isinstance(s, os.PathLike) else s for s in shards]
        shapes = shapes if shapes is not None else [_load(s).shape for s in self.sources]
        self.d = shapes[0][1]
        if any(s[1] != self.d for s in shapes):
            raise QuantpressError(f"every shard needs the same number of columns, got {sorted({s[1] for s in shapes})}")
        self.sizes = [int(s[0]) for s in shapes]
        self.offsets = np.cumsum([0] + self.sizes)[:-1].tolist()
        self.n = sum(self.sizes)
        self.weights = self._weights(sample_weight)

    def _weights(self, sample_weight: Any) -> list[Optional[np.ndarray]]:
        if sample_weight is None:
            return [None] * len(self.sizes)
        if len(sample_weight) != len(self.sizes):
            raise QuantpressError(f"sample_weight must be a list of {len(self.sizes)} arrays, one per shard")
        out: list[Optional[np.ndarray]] = []
        for w, n in zip(sample_weight, self.sizes):
            a = np.ascontiguousarray(w, dtype=np.float32)
            if a.shape != (n,):
                raise QuantpressError(f"sample_weight must have shape ({n},) for its shard, got {a.shape}")
            out.append(a)
        return out

    def concat(self) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Every point (and weight) in one array."""
        x = np.concatenate([_load(s) for s in self.sources])
        w: Optional[np.ndarray] = None if self.weights[0] is None else np.concatenate(self.weights)  # type: ignore[arg-type]
        return x, w

    def sample(self, m: int, seed: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """``m`` of the points (and their weights), drawn uniformly without replacement over all
        shards (``np.random.default_rng(seed).choice(n, m, replace=False)``, sorted), read shard
        by shard: only the drawn rows of a memory-mapped shard are read."""
        idx = np.sort(np.random.default_rng(seed).choice(self.n, m, replace=False))
        xs, ws = [], []
        for src, off, size, w in zip(self.sources, self.offsets, self.sizes, self.weights):
            lo, hi = np.searchsorted(idx, [off, off + size])
            if hi > lo:
                rows = idx[lo:hi] - off
                xs.append(np.ascontiguousarray(_load(src)[rows]))
                if w is not None:
                    ws.append(w[rows])
        return np.concatenate(xs), (np.concatenate(ws) if ws else None)

    def mean_variance(self, unit: bool = False) -> float:
        """:func:`quantpress.kmeans.mean_variance` of all the points (``unit``: scaled to unit
        length), one shard at a time (float64; shards
        merged by Chan's pairwise rule)."""
        from .kmeans import unit_rows

        n, mean, m2 = 0, np.zeros(self.d), np.zeros(self.d)
        for src in self.sources:
            x = _load(src)
            x = (unit_rows(x) if unit else x).astype(np.float64)
            k = len(x)
            if k == 0:
                continue
            mu = x.mean(0)
            delta = mu - mean
            m2 += ((x - mu) ** 2).sum(0) + delta**2 * n * k / (n + k)
            mean += delta * k / (n + k)
            n += k
        return float(np.mean(m2 / max(n, 1)))


def reduce_partials(parts: list[Partial], offsets: list[int], k: int, d: int) -> tuple[np.ndarray, np.ndarray, float, np.ndarray, Any]:
    """Chunk sums added (:func:`add_chunks`), members summed, the re-seeding candidates merged
    (best first)."""
    coords, weight, inertia = add_chunks(parts, k, d)
    members = np.zeros(k, dtype=np.uint64)
    cost, index, code, fw, pts = [], [], [], [], []
    for p, off in zip(parts, offsets):
        _c, _w, _i, m, far, _ = p
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

    def __init__(self, shards: Shards, metric: str) -> None:
        self.group = ShardGroup(shards.sources, shards.weights, metric)

    def partials(self, c: np.ndarray, rows: int, want_codes: bool) -> list[Partial]:
        return self.group.partials(c, rows, want_codes)

    def close(self) -> None:
        self.group = None  # type: ignore[assignment]


def groups(sizes: list[int], workers: int) -> list[range]:
    """Consecutive shard ranges, at most ``workers`` of them, of about equal points.

    Example:
        >>> groups([10, 10, 10, 10], 2), groups([5, 1], 4)
        ([range(0, 2), range(2, 4)], [range(0, 1), range(1, 2)])
    """
    workers = max(1, min(workers, len(sizes)))
    ends = np.cumsum(sizes)
    cuts = [0]
    for j in range(1, workers):
        cut = int(np.searchsorted(ends, ends[-1] * j / workers, side="left")) + 1
        if cuts[-1] < cut < len(sizes):
            cuts.append(cut)
    cuts.append(len(sizes))
    return [range(a, b) for a, b in zip(cuts, cuts[1:])]


def actor_partials(cache: dict[str, Any], key: str, sources: list[Any], weights: list[Any], metric: str, threads: int,
                   c: np.ndarray, rows: int, want_codes: bool, first: bool) -> list[Partial]:
    """Run by a pool actor (:class:`quantpress.executor.PoolWorker`): the partials of one fit's
    group of shards, opened on the fit's (``key``) first call and kept in the actor until
    :func:`actor_release`. Every call carries the sources, so a restarted actor (its worker
    died) re-opens them."""
    if cache.get("kmeans_key") != key:
        cache.pop("kmeans", None)
        cache["kmeans"], cache["kmeans_key"] = ShardGroup(sources, weights, metric), key
    if _core.get_num_threads() != threads:
        _core.set_num_threads(threads)
    return cache["kmeans"].partials(c, rows, want_codes, first)


def actor_release(cache: dict[str, Any], key: str) -> None:
    """Run by a pool actor at the end of a fit: drops its shards."""
    if cache.get("kmeans_key") == key:
        cache.pop("kmeans", None)
        cache.pop("kmeans_key", None)


class RayBackend:
    """The shards' partials on Ray: the shards are cut into consecutive groups, at most one per
    CPU of the cluster, each served by one pool actor (see the module doc). In-memory shards are
    put in the object store once; paths are memory-mapped by the actors."""

    def __init__(self, shards: Shards, metric: str, address: Optional[str]) -> None:
        from .executor import ensure_ray, pool, task_cpus

        ray = self.ray = ensure_ray(address)
        parts = groups(shards.sizes, max(1, int(ray.cluster_resources().get("CPU", 1))))
        self.threads = task_cpus(ray, len(parts))
        src = [s if isinstance(s, str) or _is_ref(s) else ray.put(np.asarray(s)) for s in shards.sources]
        wts = [None if w is None else ray.put(w) for w in shards.weights]
        self.jobs = [([src[i] for i in g], [wts[i] for i in g]) for g in parts]
        self.actors = pool(ray, len(parts))
        self.key = os.urandom(8).hex()
        self.metric = metric

    def partials(self, c: np.ndarray, rows: int, want_codes: bool) -> list[Partial]:
        refs = [a.call.remote(actor_partials, self.key, src, wts, self.metric, self.threads, c, rows, want_codes, i == 0)
                for i, (a, (src, wts)) in enumerate(zip(self.actors, self.jobs))]
        from .executor import ray_get

        return [p for group in ray_get(self.ray, refs) for p in group]  # in shard order, whatever order they finish in

    def close(self) -> None:
        self.ray.get([a.call.remote(actor_release, self.key) for a in self.actors])
        self.actors, self.jobs = [], []


def _is_ref(x: Any) -> bool:
    return type(x).__name__ == "ObjectRef"


def dataset_blocks(ds: Any) -> tuple[list[Any], list[tuple[int, int]]]:
    """A Ray Dataset's blocks (object references, in the dataset's order) and their ``(n, d)``,
    computed next to the blocks (one small task each)."""
    import ray

    from .executor import ray_get

    refs = list(ds.to_numpy_refs())
    shape: Any = ray.remote(num_cpus=0)(lambda b: block_points(b).shape)
    return refs, [tuple(s) for s in ray_get(ray, [shape.remote(r) for r in refs])]


def is_dataset(x: Any) -> bool:
    """Whether ``x`` is a Ray Dataset, or anything else whose ``to_numpy_refs()`` lists its
    blocks as object references (checked without importing Ray)."""
    return callable(getattr(type(x), "to_numpy_refs", None))


def lloyd_sharded(backend: Any, shards: Shards, c: np.ndarray, k: int, metric: str, n_iter: int, stop: float,
                  progress: Optional[Callable[[int, int, float], Any]]) -> tuple[np.ndarray, float, np.ndarray, int, int]:
    """The Lloyd loop of ``KMeans._run`` over shards: ``(centroids, inertia, labels, n_iter, reseeds)``."""
    d = shards.d
    rows = _core.kmeans_chunk_rows(shards.n, k, d)
    reseeds = done = 0
    for it in range(n_iter):
        coords, weight, inertia, members, far = reduce_partials(backend.partials(c, rows, False), shards.offsets, k, d)
        new, _cw, reseeded, shift = _core.lloyd_finish(c, d, metric, coords, weight, members, *far)
        c = new.reshape(c.shape)
        reseeds += reseeded
        done = it + 1
        if progress is not None:
            progress(done, n_iter, inertia)
        if shift <= stop and reseeded == 0:
            break
    parts = backend.partials(c, rows, True)
    inertia = reduce_partials(parts, shards.offsets, k, d)[2]
    labels = np.concatenate([p[5] for p in parts])
    return c, inertia, labels, done, reseeds


__all__ = ["LocalBackend", "RayBackend", "ShardGroup", "Shards", "actor_partials", "actor_release", "block_points", "dataset_blocks", "groups",
           "is_dataset", "lloyd_sharded", "reduce_partials"]
