"""Product and residual quantization of vectors (embeddings, KV entries, weight sub-vectors).

Built from the existing pieces: :class:`~quantpress.KMeans` trains each codebook and
:func:`~quantpress.assign` (the SIMD nearest-codeword kernel) encodes. Everything that may touch
many rows (encoding, decoding, search) streams over the input in fixed-size batches, so memory
stays bounded whatever the number of vectors.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from . import _codebook_io
from ._arrays import as_float32
from ._core import QuantpressError
from .kmeans import KMeans, _check_int
from .vq import assign

ENCODE_BATCH = 65536  # rows per encoding batch
_SEARCH_ELEMS = 1 << 22  # float32 elements of one (queries x database) distance block


def _check_bits(bits: Any) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16:
        raise QuantpressError(f"bits must be an integer from 1 to 16, got {bits!r}")
    return int(bits)


def _matrix(x: Any, name: str, d: Optional[int] = None) -> np.ndarray:
    """``x`` as a 2-D float array (not yet converted; its dtype is checked on a one-row slice)."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise QuantpressError(f"{name} must be a 2-D array (n, d), got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise QuantpressError(f"{name} is empty (shape {a.shape})")
    if d is not None and a.shape[1] != d:
        raise QuantpressError(f"{name} has rows of {a.shape[1]} values, the quantizer was trained on d={d}")
    as_float32(a[:1], name=name)  # the float dtype policy, without converting everything
    return a


def _finite32(a: np.ndarray, name: str) -> np.ndarray:
    f, _ = as_float32(a, name=name)
    if not np.isfinite(f).all():
        raise QuantpressError(f"{name} holds NaN or infinity")
    return f


def _check_codes(codes: Any, m: int, k: int) -> np.ndarray:
    c = np.asarray(codes)
    if c.ndim != 2 or c.shape[1] != m:
        raise QuantpressError(f"codes must have shape (n, {m}), got {c.shape}")
    if c.dtype.kind not in "ui":
        raise QuantpressError(f"codes must be an integer array, got {c.dtype}")
    if c.size and (int(c.min()) < 0 or int(c.max()) >= k):
        raise QuantpressError(f"codes must lie in [0, {k}), got values in [{int(c.min())}, {int(c.max())}]")
    return c


def _code_dtype(bits: int) -> np.dtype:
    return np.dtype(np.uint8 if bits <= 8 else np.uint16)


def _kmeans(k: int, n_iter: int, seed: int, x: np.ndarray) -> np.ndarray:
    c = KMeans(k, n_iter=n_iter, seed=seed).fit(x).centroids
    assert c is not None
    return c


def _topk_rows(dist: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` smallest ``dist`` ordered by (distance, index). Rows of ``idx`` must be
    ascending, so that on ties at the k-th value the first positions are the lowest indices."""
    if dist.shape[1] > k:
        kth = np.partition(dist, k - 1, axis=1)[:, k - 1 : k]
        less = dist < kth
        eq = dist == kth
        room = k - less.sum(axis=1, keepdims=True)
        keep = less | (eq & (np.cumsum(eq, axis=1) <= room))
        dist = dist[keep].reshape(-1, k)  # row-major: per row, ascending positions
        idx = idx[keep].reshape(-1, k)
    order = np.argsort(dist, axis=1, kind="stable")
    return np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)


def _merge(best: Optional[tuple[np.ndarray, np.ndarray]], new: tuple[np.ndarray, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    if best is None:
        return new
    d = np.concatenate([best[0], new[0]], axis=1)
    i = np.concatenate([best[1], new[1]], axis=1)
    order = np.lexsort((i, d), axis=-1)[:, :k]
    return np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)


class ProductQuantizer:
    """Product quantization (Jégou et al. 2011): ``d`` dimensions split into ``m`` sub-spaces of
    ``d / m``, each with its own ``2**bits``-codeword k-means codebook; a vector is stored as ``m``
    codes (``m * bits`` bits).

    Args:
        m: number of sub-spaces; must divide ``d``.
        bits: bits per code, 1 to 16 (``2**bits`` codewords per sub-space).
        n_iter: Lloyd iterations of each k-means.
        seed: seed of sub-space ``j``'s k-means is ``seed + j``.

    After :meth:`train`: ``codebooks``, float32 ``(m, 2**bits, d / m)``.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> x = np.random.default_rng(0).standard_normal((2000, 16)).astype(np.float32)
        >>> pq = qp.ProductQuantizer(m=4, bits=4).train(x)
        >>> codes = pq.encode(x)
        >>> codes.shape, codes.dtype
        ((2000, 4), dtype('uint8'))
        >>> bool(((pq.decode(codes) - x) ** 2).mean() < 0.5 * (x ** 2).mean())
        True
        >>> dist, idx = pq.search(x[:3], codes, k=5)
        >>> dist.shape, idx.dtype
        ((3, 5), dtype('int64'))
        >>> bool(np.all(np.diff(dist, axis=1) >= 0))
        True
    """

    def __init__(self, m: int, bits: int = 8, n_iter: int = 25, seed: int = 0) -> None:
        self.m = _check_int("m", m, 1)
        self.bits = _check_bits(bits)
        self.n_iter = _check_int("n_iter", n_iter, 0)
        self.seed = _check_int("seed", seed, 0)
        self.codebooks: Optional[np.ndarray] = None

    @property
    def k(self) -> int:
        """Codewords per sub-space, ``2**bits``."""
        return 1 << self.bits

    @property
    def d(self) -> int:
        """Vector length (after training)."""
        cb = self._trained()
        return cb.shape[0] * cb.shape[2]

    def _trained(self) -> np.ndarray:
        if self.codebooks is None:
            raise QuantpressError("this ProductQuantizer is not trained yet: call train() or load() first")
        return self.codebooks

    def train(self, x: Any) -> "ProductQuantizer":
        """Trains one k-means per sub-space on ``x`` ``(n, d)``, ``n >= 2**bits``; returns ``self``."""
        xf = _finite32(_matrix(x, "x"), "x")
        n, d = xf.shape
        if d % self.m:
            raise QuantpressError(f"d={d} is not divisible by m={self.m}")
        if n < self.k:
            raise QuantpressError(f"training needs at least 2**bits = {self.k} vectors, got {n}")
        ds = d // self.m
        cbs = [_kmeans(self.k, self.n_iter, self.seed + j, xf[:, j * ds : (j + 1) * ds]) for j in range(self.m)]
        self.codebooks = np.ascontiguousarray(np.stack(cbs), dtype=np.float32)
        return self

    def encode(self, x: Any) -> np.ndarray:
        """Codes ``(n, m)`` of the nearest codeword per sub-space (uint8 for ``bits <= 8``, else
        uint16); ties go to the lower codeword index."""
        cb = self._trained()
        xa = _matrix(x, "x", self.d)
        ds = cb.shape[2]
        out = np.empty((len(xa), self.m), dtype=_code_dtype(self.bits))
        for s in range(0, len(xa), ENCODE_BATCH):
            xb, _ = as_float32(xa[s : s + ENCODE_BATCH], name="x")
            for j in range(self.m):
                out[s : s + len(xb), j] = assign(xb[:, j * ds : (j + 1) * ds], cb[j])
        return out

    def decode(self, codes: Any) -> np.ndarray:
        """The vectors ``(n, d)`` float32 that ``codes`` ``(n, m)`` stand for."""
        cb = self._trained()
        c = _check_codes(codes, self.m, self.k)
        ds = cb.shape[2]
        out = np.empty((len(c), self.m * ds), dtype=np.float32)
        for j in range(self.m):
            out[:, j * ds : (j + 1) * ds] = cb[j][c[:, j]]
        return out

    def distance_tables(self, queries: Any) -> np.ndarray:
        """Squared L2 distance of each query's sub-vectors to every codeword: ``(nq, m, 2**bits)``
        float32 (the lookup tables of asymmetric distance computation)."""
        cb = self._trained()
        q = _finite32(_matrix(queries, "queries", self.d), "queries")
        m, k, ds = cb.shape
        out = np.empty((len(q), m, k), dtype=np.float32)
        step = max(1, _SEARCH_ELEMS // (k * ds))
        # Straight differences rather than |q|^2 - 2 q.c + |c|^2: no cancellation near a codeword.
        for s in range(0, len(q), step):
            for j in range(m):
                diff = q[s : s + step, None, j * ds : (j + 1) * ds] - cb[j][None]
                out[s : s + step, j] = np.einsum("qkd,qkd->qk", diff, diff)
        return out

    def search(self, queries: Any, codes: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` database vectors nearest to each query by asymmetric distance computation
        (ADC): the query stays exact, the database is its codes. Distance = sum over the ``m``
        sub-spaces of the table entry (:meth:`distance_tables`) of the stored code, summed in
        float32 in sub-space order.

        Args:
            queries: ``(nq, d)`` float array.
            codes: ``(n, m)`` codes from :meth:`encode`.
            k: neighbours per query, ``1 <= k <= n``.

        Returns:
            ``(distances (nq, k) float32, indices (nq, k) int64)``, ascending distance per query;
            equal distances are ordered by the lower database index.
        """
        cb = self._trained()
        c = _check_codes(codes, self.m, self.k)
        k = _check_int("k", k, 1)
        if k > len(c):
            raise QuantpressError(f"k={k} is larger than the number of database vectors ({len(c)})")
        q = _matrix(queries, "queries", self.d)
        # Blocks of qb queries x cb_rows database rows bound the memory of tables and distances.
        qb = max(1, min(len(q), _SEARCH_ELEMS // (self.m * cb.shape[1]), 256))
        nb = max(k, _SEARCH_ELEMS // qb)
        dist_out = np.empty((len(q), k), dtype=np.float32)
        idx_out = np.empty((len(q), k), dtype=np.int64)
        for s in range(0, len(q), qb):
            tables = self.distance_tables(q[s : s + qb])
            best = None
            for t in range(0, len(c), nb):
                block = c[t : t + nb]
                dist = np.take(tables[:, 0], block[:, 0], axis=1)
                for j in range(1, self.m):
                    dist += np.take(tables[:, j], block[:, j], axis=1)
                idx = np.broadcast_to(np.arange(t, t + len(block), dtype=np.int64), dist.shape)
                best = _merge(best, _topk_rows(dist, idx, k), k)
            assert best is not None
            dist_out[s : s + len(tables)], idx_out[s : s + len(tables)] = best
        return dist_out, idx_out

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the codebooks and parameters to a small safetensors file (atomically)."""
        params = {"m": self.m, "bits": self.bits, "n_iter": self.n_iter, "seed": self.seed}
        _codebook_io.save(path, "ProductQuantizer", {"codebooks": self._trained()}, params)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "ProductQuantizer":
        """Reads a file written by :meth:`save`."""
        arrays, params = _codebook_io.load(path, "ProductQuantizer")
        cb = _codebook_io.require(arrays, "codebooks", np.float32, 3, path)
        try:
            pq = cls(int(params["m"]), bits=int(params["bits"]), n_iter=int(params["n_iter"]), seed=int(params["seed"]))
        except (KeyError, TypeError, ValueError) as e:
            raise QuantpressError(f"{os.fspath(path)}: bad ProductQuantizer parameters ({e})") from None
        if cb.shape[:2] != (pq.m, pq.k) or cb.shape[2] == 0:
            raise QuantpressError(f"{os.fspath(path)}: codebooks of shape {cb.shape} do not match m={pq.m}, bits={pq.bits}")
        pq.codebooks = np.ascontiguousarray(cb)
        return pq

    def __repr__(self) -> str:
        state = "untrained" if self.codebooks is None else f"d={self.d}"
        return f"ProductQuantizer(m={self.m}, bits={self.bits}, {state})"


class ResidualQuantizer:
    """Residual (multi-stage) vector quantization, greedy: stage ``s`` is a ``2**bits``-codeword
    k-means codebook trained on what stages ``< s`` left over; a vector is the sum of one codeword
    per stage and is stored as ``stages`` codes. Encoding is greedy too (nearest codeword of the
    current residual, stage by stage; no beam search).

    Args:
        stages: number of codebooks.
        bits: bits per code, 1 to 16.
        n_iter: Lloyd iterations of each k-means.
        seed: stage ``s``'s k-means uses ``seed + s``.

    After :meth:`train`: ``codebooks``, float32 ``(stages, 2**bits, d)``.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> x = np.random.default_rng(0).standard_normal((2000, 8)).astype(np.float32)
        >>> rq = qp.ResidualQuantizer(stages=2, bits=4).train(x)
        >>> codes = rq.encode(x)
        >>> codes.shape
        (2000, 2)
        >>> one = ((rq.decode(codes, stages=1) - x) ** 2).mean()
        >>> two = ((rq.decode(codes) - x) ** 2).mean()
        >>> bool(two < one)
        True
    """

    def __init__(self, stages: int, bits: int = 8, n_iter: int = 25, seed: int = 0) -> None:
        self.stages = _check_int("stages", stages, 1)
        self.bits = _check_bits(bits)
        self.n_iter = _check_int("n_iter", n_iter, 0)
        self.seed = _check_int("seed", seed, 0)
        self.codebooks: Optional[np.ndarray] = None

    @property
    def k(self) -> int:
        """Codewords per stage, ``2**bits``."""
        return 1 << self.bits

    @property
    def d(self) -> int:
        """Vector length (after training)."""
        return self._trained().shape[2]

    def _trained(self) -> np.ndarray:
        if self.codebooks is None:
            raise QuantpressError("this ResidualQuantizer is not trained yet: call train() or load() first")
        return self.codebooks

    def train(self, x: Any) -> "ResidualQuantizer":
        """Trains the stages one after the other on ``x`` ``(n, d)``, ``n >= 2**bits``; returns ``self``."""
        r = _finite32(_matrix(x, "x"), "x").copy()
        if len(r) < self.k:
            raise QuantpressError(f"training needs at least 2**bits = {self.k} vectors, got {len(r)}")
        cbs = []
        for s in range(self.stages):
            c = _kmeans(self.k, self.n_iter, self.seed + s, r)
            r -= c[assign(r, c)]
            cbs.append(c)
        self.codebooks = np.ascontiguousarray(np.stack(cbs), dtype=np.float32)
        return self

    def encode(self, x: Any) -> np.ndarray:
        """Codes ``(n, stages)`` (uint8 for ``bits <= 8``, else uint16), chosen greedily."""
        cb = self._trained()
        xa = _matrix(x, "x", self.d)
        out = np.empty((len(xa), self.stages), dtype=_code_dtype(self.bits))
        for s in range(0, len(xa), ENCODE_BATCH):
            xb, _ = as_float32(xa[s : s + ENCODE_BATCH], name="x")
            r = xb.copy()
            for st in range(self.stages):
                codes = assign(r, cb[st])
                r -= cb[st][codes]
                out[s : s + len(r), st] = codes
        return out

    def decode(self, codes: Any, stages: Optional[int] = None) -> np.ndarray:
        """The vectors ``(n, d)`` float32 that ``codes`` stand for: the sum of the codewords of the
        first ``stages`` stages (all by default), added in stage order."""
        cb = self._trained()
        c = _check_codes(codes, self.stages, self.k)
        use = self.stages if stages is None else _check_int("stages", stages, 1)
        if use > self.stages:
            raise QuantpressError(f"stages={use} but this quantizer has {self.stages}")
        out = cb[0][c[:, 0]].copy()
        for st in range(1, use):
            out += cb[st][c[:, st]]
        return out

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the codebooks and parameters to a small safetensors file (atomically)."""
        params = {"stages": self.stages, "bits": self.bits, "n_iter": self.n_iter, "seed": self.seed}
        _codebook_io.save(path, "ResidualQuantizer", {"codebooks": self._trained()}, params)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "ResidualQuantizer":
        """Reads a file written by :meth:`save`."""
        arrays, params = _codebook_io.load(path, "ResidualQuantizer")
        cb = _codebook_io.require(arrays, "codebooks", np.float32, 3, path)
        try:
            rq = cls(int(params["stages"]), bits=int(params["bits"]), n_iter=int(params["n_iter"]), seed=int(params["seed"]))
        except (KeyError, TypeError, ValueError) as e:
            raise QuantpressError(f"{os.fspath(path)}: bad ResidualQuantizer parameters ({e})") from None
        if cb.shape[:2] != (rq.stages, rq.k) or cb.shape[2] == 0:
            raise QuantpressError(f"{os.fspath(path)}: codebooks of shape {cb.shape} do not match stages={rq.stages}, bits={rq.bits}")
        rq.codebooks = np.ascontiguousarray(cb)
        return rq

    def __repr__(self) -> str:
        state = "untrained" if self.codebooks is None else f"d={self.d}"
        return f"ResidualQuantizer(stages={self.stages}, bits={self.bits}, {state})"
