"""k-means clustering: greedy k-means++ or random seeding, parallel Lloyd iterations in Rust.

The iterations run in Rust with the GIL released, one call per iteration, so this loop can
report progress and stop on the tolerance. Results depend only on the data, the parameters and
the seed, never on the number of threads.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Optional, Union

import numpy as np

from . import _codebook_io, _core
from ._arrays import as_float32
from ._core import QuantpressError

ProgressFn = Callable[[int, int, float], Any]


def as_points(x: Any, name: str = "x") -> np.ndarray:
    """``x`` as a C-contiguous float32 ``(n, d)`` array (a 1-D array is one column of points)."""
    a, _ = as_float32(x, name=name)
    if a.ndim == 1:
        a = a.reshape(-1, 1)
    if a.ndim != 2 or a.shape[1] == 0:
        raise QuantpressError(f"{name} must be a 2-D (n, d) array of points, got shape {np.shape(x)}")
    return a


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), for spherical (cosine) k-means."""
    n = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64)).astype(np.float32)
    return np.ascontiguousarray(x / np.where(n > 0, n, 1)[:, None], dtype=np.float32)


def mean_variance(x: np.ndarray) -> float:
    """The mean over dimensions of the points' variance (float64): the scale of ``tol``."""
    return float(np.mean(np.var(x, axis=0, dtype=np.float64)))


SEED_POINTS_PER_CENTROID = 256
"""A fit over shards seeds from all points up to ``max(this * k, SEED_POINTS_MIN)``, else from a
uniform sample of that many (faiss samples 256 points per centroid for its whole training)."""
SEED_POINTS_MIN = 1 << 18


def _sample_weight(sample_weight: Any, n: int) -> Optional[np.ndarray]:
    if sample_weight is None:
        return None
    w = np.ascontiguousarray(sample_weight, dtype=np.float32)
    if w.shape != (n,):
        raise QuantpressError(f"sample_weight must have shape ({n},), got {w.shape}")
    return w


def _check_int(name: str, v: Any, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise QuantpressError(f"{name} must be an integer >= {low}, got {v!r}")
    return int(v)


class KMeans:
    """k-means with greedy k-means++ seeding (as scikit-learn) and deterministic parallel Lloyd.

    Args:
        k: number of clusters (1 <= k <= number of points).
        n_iter: Lloyd iterations (at most; fewer when the tolerance stops it).
        init: ``"k-means++"`` (greedy, ``2 + ln k`` candidates per centre), ``"random"``
            (k distinct points) or a ``(k, d)`` array of starting centroids.
        n_init: runs from different seeds (``seed``, ``seed + 1``, ...); the lowest inertia wins.
        tol: stop when the squared centroid shift is at most ``tol`` times the mean per-dimension
            variance of the data (scikit-learn's rule); ``0`` stops only when nothing moves.
        seed: seed of the initialisation and of any sub-sampling.
        max_points_per_centroid: if set and there are more than ``k *`` this many points, train on
            a random sample of that many (faiss's rule); a ``UserWarning`` says so and
            ``subsampled_`` holds the sample size.
        metric: ``"l2"``, or ``"cosine"`` (spherical k-means: points and centroids on the unit
            sphere; inertia is ``sum w (1 - cos)``).
        progress: called as ``progress(iteration, n_iter, inertia)`` after every iteration.

    After ``fit``: ``centroids`` ``(k, d)`` float32, ``inertia_`` (weighted cost of the final
    centroids on the training points), ``labels_``, ``n_iter_``, ``reseeds_`` (empty clusters
    re-seeded on far points, over all iterations) and ``subsampled_``. A fit over shards seeds
    from every point up to ``max(256 k, 2**18)`` of them and from a uniform sample of that many
    beyond (a ``UserWarning`` says so; ``seed_sample_`` holds the sample size), so the driver never
    holds all the shards at once.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> rng = np.random.default_rng(0)
        >>> x = np.concatenate([rng.normal(c, 0.1, (100, 2)) for c in (0, 5, 10)]).astype(np.float32)
        >>> km = qp.KMeans(3, seed=0).fit(x)
        >>> [int(v) for v in np.sort(km.centroids[:, 0]).round(0)]
        [0, 5, 10]
        >>> int(km.predict(np.array([[9.8, 10.1]], dtype=np.float32))[0]) == int(np.argmax(km.centroids[:, 0]))
        True
    """

    def __init__(
        self,
        k: int,
        n_iter: int = 25,
        init: Union[str, np.ndarray] = "k-means++",
        n_init: int = 1,
        tol: float = 0.0,
        seed: int = 0,
        max_points_per_centroid: Optional[int] = None,
        metric: str = "l2",
        progress: Optional[ProgressFn] = None,
    ) -> None:
        self.k = _check_int("k", k, 1)
        self.n_iter = _check_int("n_iter", n_iter, 0)
        self.n_init = _check_int("n_init", n_init, 1)
        self.seed = _check_int("seed", seed, 0)
        if max_points_per_centroid is not None:
            max_points_per_centroid = _check_int("max_points_per_centroid", max_points_per_centroid, 1)
        self.max_points_per_centroid = max_points_per_centroid
        if not np.isfinite(tol) or tol < 0:
            raise QuantpressError(f"tol must be a finite number >= 0, got {tol!r}")
        self.tol = float(tol)
        if metric not in ("l2", "cosine"):
            raise QuantpressError(f"metric must be 'l2' or 'cosine', got {metric!r}")
        self.metric = metric
        if isinstance(init, str) and init not in ("k-means++", "random"):
            raise QuantpressError(f"init must be 'k-means++', 'random' or an array, got {init!r}")
        self.init = init
        self.progress = progress
        self.centroids: Optional[np.ndarray] = None
        self.inertia_: Optional[float] = None
        self.labels_: Optional[np.ndarray] = None
        self.n_iter_ = 0
        self.reseeds_ = 0
        self.subsampled_: Optional[int] = None
        self.seed_sample_: Optional[int] = None
        self._counts: Optional[np.ndarray] = None

    # -- training ---------------------------------------------------------------------------

    def fit(self, x: Any, sample_weight: Any = None, *, executor: str = "local", ray_address: Optional[str] = None) -> "KMeans":
        """Trains on the points ``x`` ``(n, d)`` (optionally weighted); returns ``self``.

        ``x`` may also be a list of shards (arrays, ``np.memmap`` or ``.npy`` paths, each
        ``(n_i, d)``; ``sample_weight`` then a list of per-shard arrays) or a Ray Dataset (its
        blocks are the shards, in order; one ``(n, d)`` tensor column or numeric columns): the
        iterations run shard by shard, or on Ray actors with ``executor="ray"``
        (``ray_address``: the cluster),
        and the driver reduces the shards' sums in shard order, so both give the same
        centroids, and the same as ``fit`` on the concatenation when the shards are cut at
        multiples of ``_core.kmeans_chunk_rows(n, k, d)`` rows (quantpress/kmeans_shards.py).
        """
        from .kmeans_shards import is_dataset

        if isinstance(x, (list, tuple)) or is_dataset(x):
            return self._fit_shards(x, sample_weight, executor, ray_address)
        if executor != "local":
            raise QuantpressError("executor='ray' needs the points as a list of shards")
        x = as_points(x)
        w = _sample_weight(sample_weight, len(x))
        if self.k > len(x):
            raise QuantpressError(f"k={self.k} is larger than the number of points ({len(x)})")
        if self.metric == "cosine":
            x = unit_rows(x)
        x, w = self._subsample(x, w)
        best = None
        for run in range(self.n_init):
            result = self._run(x, w, self.seed + run)
            if best is None or result[1] < best[1]:
                best = result
        assert best is not None
        self.centroids, self.inertia_, self.labels_, self.n_iter_, self.reseeds_ = best
        self._counts = None
        return self

    def _fit_shards(self, shards: Any, sample_weight: Any, executor: str, address: Optional[str]) -> "KMeans":
        from .executor import check_executor, require_ray
        from .kmeans_shards import LocalBackend, RayBackend, Shards, dataset_blocks, is_dataset, lloyd_sharded

        if check_executor(executor) == "ray" or is_dataset(shards):
            require_ray()
        if self.max_points_per_centroid is not None:
            raise QuantpressError("max_points_per_centroid is not supported with shards: sample the shards first")
        if is_dataset(shards):
            if sample_weight is not None:
                raise QuantpressError("sample_weight is not supported with a Ray Dataset: pass the blocks as shards")
            refs, shapes = dataset_blocks(shards)
            s = Shards(refs, shapes=shapes)
        else:
            s = Shards(shards, sample_weight)
        if self.k > s.n:
            raise QuantpressError(f"k={self.k} is larger than the number of points ({s.n})")
        held, w = (None, None)
        self.seed_sample_ = None
        if isinstance(self.init, str):
            # Seeding reads the points in this process: all of them up to a bound, else a
            # uniform sample (the shards may not fit in memory together).
            cap = max(SEED_POINTS_PER_CENTROID * self.k, SEED_POINTS_MIN)
            if s.n > cap:
                held, w = s.sample(cap, self.seed)
                self.seed_sample_ = cap
                warnings.warn(f"KMeans: seeding on a uniform sample of {cap} of the {s.n} points across the shards",
                              stacklevel=3)
            else:
                held, w = s.concat()
        if held is not None and self.metric == "cosine":
            held = unit_rows(held)
        stop = 0.0
        if self.tol > 0:
            # The single fit's rule on every point: from the points held when they all are,
            # else shard by shard.
            if held is not None and self.seed_sample_ is None:
                stop = self.tol * mean_variance(held)
            else:
                stop = self.tol * s.mean_variance(self.metric == "cosine")
        backend = RayBackend(s, self.metric, address) if executor == "ray" else LocalBackend(s, self.metric)
        best = None
        try:
            for run in range(self.n_init):
                c = self._initial(held if held is not None else np.empty((0, s.d), np.float32), w, self.seed + run)
                result = lloyd_sharded(backend, s, c, self.k, self.metric, self.n_iter, stop, self.progress)
                if best is None or result[1] < best[1]:
                    best = result
        finally:
            backend.close()
        del held
        assert best is not None
        self.subsampled_ = None
        self.centroids, self.inertia_, self.labels_, self.n_iter_, self.reseeds_ = best
        self._counts = None
        return self

    def _subsample(self, x: np.ndarray, w: Optional[np.ndarray]) -> tuple[np.ndarray, Optional[np.ndarray]]:
        self.subsampled_ = None
        cap = self.max_points_per_centroid
        if cap is None or len(x) <= self.k * cap:
            return x, w
        m = self.k * cap
        idx = np.sort(np.random.default_rng(self.seed).choice(len(x), m, replace=False))
        warnings.warn(f"KMeans: training on a random sample of {m} of the {len(x)} points (max_points_per_centroid={cap})", stacklevel=3)
        self.subsampled_ = m
        return np.ascontiguousarray(x[idx]), None if w is None else np.ascontiguousarray(w[idx])

    def _initial(self, x: np.ndarray, w: Optional[np.ndarray], seed: int) -> np.ndarray:
        k, d = self.k, x.shape[1]
        if not isinstance(self.init, str):
            c = as_points(self.init, name="init")
            if c.shape != (k, d):
                raise QuantpressError(f"init must have shape ({k}, {d}), got {c.shape}")
            return unit_rows(c) if self.metric == "cosine" else c.copy()
        if self.init == "random":
            p = None if w is None else w / w.sum(dtype=np.float64)
            if p is not None and np.count_nonzero(p) < k:
                raise QuantpressError(f"random init needs at least k={k} points with non-zero weight")
            idx = np.random.default_rng(seed).choice(len(x), k, replace=False, p=p)
            return np.ascontiguousarray(x[np.sort(idx)])
        c = _core.kmeans_plusplus(x, d, k, seed, w)
        return c.reshape(k, d)

    def _run(self, x: np.ndarray, w: Optional[np.ndarray], seed: int) -> tuple[np.ndarray, float, np.ndarray, int, int]:
        d = x.shape[1]
        c = self._initial(x, w, seed)
        stop = self.tol * mean_variance(x) if self.tol > 0 else 0.0
        reseeds, done = 0, 0
        # What the iterations on this x carry over (exact: the same result): a filtering tree
        # or distance bounds where they pay, chosen (and dropped) by the Rust side.
        state = _core.LloydState() if self.metric == "l2" else None
        for it in range(self.n_iter):
            new, _codes, inertia, _cw, reseeded, shift = _core.lloyd_iteration(x, d, c, self.metric, w, state)
            c = new.reshape(c.shape)
            reseeds += reseeded
            done = it + 1
            if self.progress is not None:
                self.progress(done, self.n_iter, inertia)
            if shift <= stop and reseeded == 0:
                break
        # Labels and inertia of the final centroids (the update computed here is discarded).
        _new, codes, inertia, _cw, _r, _s = _core.lloyd_iteration(x, d, c, self.metric, w, state)
        return c, inertia, codes, done, reseeds

    def partial_fit(self, x: Any, sample_weight: Any = None) -> "KMeans":
        """Mini-batch update with one batch (out-of-core training over slices of a
        ``np.memmap`` or any iterator of batches).

        The first batch (at least ``k`` points) is clustered in full, as by :meth:`fit`; every
        later batch moves each centroid to the running weighted mean of all points assigned to
        it so far (MacQueen's update; learning rate ``1 / count``). Returns ``self``.

        Example:
            >>> import numpy as np, quantpress as qp
            >>> x = np.random.default_rng(1).normal(size=(10_000, 4)).astype(np.float32)
            >>> km = qp.KMeans(16)
            >>> for batch in np.array_split(x, 5):
            ...     _ = km.partial_fit(batch)
            >>> km.centroids.shape
            (16, 4)
        """
        x = as_points(x)
        w = _sample_weight(sample_weight, len(x))
        if self.metric == "cosine":
            x = unit_rows(x)
        if self.centroids is None:
            # The first batch is clustered in full (seeding + Lloyd); later ones refine it.
            if self.k > len(x):
                raise QuantpressError(f"the first batch needs at least k={self.k} points, got {len(x)}")
            best = min((self._run(x, w, self.seed + r) for r in range(self.n_init)), key=lambda r: r[1])
            self.centroids, self.inertia_ = best[0], best[1]
            self._counts = np.bincount(best[2], weights=w, minlength=self.k).astype(np.float64)
            self.n_iter_ = 1
            return self
        if self._counts is None:
            self._counts = np.zeros(self.k, dtype=np.float64)
        c = self.centroids
        if x.shape[1] != c.shape[1]:
            raise QuantpressError(f"batch has d={x.shape[1]}, the centroids have d={c.shape[1]}")
        means, _codes, inertia, cw, _r, _s = _core.lloyd_iteration(x, c.shape[1], c, self.metric, w)
        means = means.reshape(c.shape)
        total = self._counts + cw
        hit = cw > 0
        mixed = (self._counts[hit, None] * c[hit] + cw[hit, None] * means[hit]) / total[hit, None]
        c = c.copy()
        c[hit] = mixed.astype(np.float32)
        self.centroids = unit_rows(c) if self.metric == "cosine" else c
        self._counts = total
        self.inertia_ = inertia
        self.n_iter_ += 1
        return self

    # -- use ---------------------------------------------------------------------------------

    def _fitted(self) -> np.ndarray:
        if self.centroids is None:
            raise QuantpressError("this KMeans is not fitted yet: call fit() or partial_fit() first")
        return self.centroids

    def predict(self, x: Any) -> np.ndarray:
        """Index of the nearest centroid of each point (uint8/uint16/uint32 by ``k``)."""
        centroids = self._fitted()
        from .vq import assign

        return assign(x, centroids, metric=self.metric)

    # -- files -------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the centroids and parameters to a small safetensors file (atomically)."""
        arrays = {"centroids": self._fitted()}
        if self._counts is not None:
            arrays["counts"] = self._counts
        params = {"k": self.k, "metric": self.metric, "n_iter": self.n_iter, "seed": self.seed, "inertia": self.inertia_}
        _codebook_io.save(path, "KMeans", arrays, params)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "KMeans":
        """Reads a file written by :meth:`save`."""
        arrays, params = _codebook_io.load(path, "KMeans")
        c = _codebook_io.require(arrays, "centroids", np.float32, 2, path)
        km = _codebook_io.build(path, "KMeans", lambda: cls(int(params["k"]), n_iter=int(params["n_iter"]),
                                                           seed=int(params["seed"]), metric=str(params["metric"])))
        if c.shape[0] != km.k or c.shape[1] == 0:
            raise QuantpressError(f"{os.fspath(path)}: centroids of shape {c.shape} do not match k={km.k}")
        km.centroids = np.ascontiguousarray(c)
        km.inertia_ = params.get("inertia")
        if "counts" in arrays:
            km._counts = _codebook_io.require(arrays, "counts", np.float64, 1, path).copy()
        return km

    def __repr__(self) -> str:
        if self.centroids is None:
            return f"KMeans(k={self.k}, metric={self.metric!r}, unfitted)"
        state = f"d={self.centroids.shape[1]}" + ("" if self.inertia_ is None else f", inertia={self.inertia_:.6g}")
        return f"KMeans(k={self.k}, metric={self.metric!r}, {state})"
