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
from . import _core
from ._core import QuantpressError
from .kmeans import KMeans, _check_int
from .vq import assign

ENCODE_BATCH = 65536  # rows per encoding batch
_SEARCH_ELEMS = 1 << 22  # float32 elements of one block of query distance tables
_BEAM_ELEMS = 1 << 22  # float64 candidate errors (rows x beam x codewords, scaled by d / 8) per batch


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


def _smallest(v: np.ndarray, keep: int) -> np.ndarray:
    """Per row of ``v`` (finite), the columns of its ``keep`` smallest values, smallest first, ties
    to the lower column: ``np.argsort(v, axis=1, kind="stable")[:, :keep]``, from a partition
    (linear time) and a sort of the ``keep`` kept only."""
    if keep >= v.shape[1]:
        return np.argsort(v, axis=1, kind="stable")
    kth = np.partition(v, keep - 1, axis=1)[:, keep - 1 : keep]
    below = v < kth
    at = v == kth
    take = below | at
    # Rows where more columns hold the keep-th value than places are left: the lowest fill them.
    tied = np.nonzero(take.sum(1) > keep)[0]
    if len(tied):
        left = keep - below[tied].sum(1, keepdims=True)
        take[tied] = below[tied] | (at[tied] & (np.cumsum(at[tied], axis=1) <= left))
    cols = np.nonzero(take)[1].reshape(len(v), keep)  # ascending columns per row
    picked = np.take_along_axis(v, cols, 1)
    return np.take_along_axis(cols, np.argsort(picked, axis=1, kind="stable"), 1)


def _stage_sum(cb: np.ndarray, codes: np.ndarray, skip: int = -1) -> np.ndarray:
    """The float64 sum, over every stage of ``cb`` but ``skip``, of the codewords of ``codes``."""
    out = np.zeros((len(codes), cb.shape[2]))
    for st in range(cb.shape[0]):
        if st != skip:
            out += cb[st][codes[:, st]]
    return out


def _kmeans(k: int, n_iter: int, seed: int, x: np.ndarray, init: Any = "k-means++") -> np.ndarray:
    c = KMeans(k, n_iter=n_iter, seed=seed, init=init).fit(x).centroids
    assert c is not None
    return c


class ProductQuantizer:
    """Product quantization (Jégou et al. 2011): ``d`` dimensions split into ``m`` sub-spaces of
    ``d / m``, each with its own ``2**bits``-codeword k-means codebook; a vector is stored as ``m``
    codes (``m * bits`` bits).

    Args:
        m: number of sub-spaces; must divide ``d``.
        bits: bits per code, 1 to 16 (``2**bits`` codewords per sub-space).
        n_iter: Lloyd iterations of each k-means.
        seed: seed of sub-space ``j``'s k-means is ``seed + j``.
        opq: learn an orthogonal rotation ``R`` first (optimized PQ, Ge et al. 2013): vectors are
            quantized as ``x @ R``, which spreads correlated dimensions evenly over the
            sub-spaces. Training alternates PQ on ``x @ R`` (k-means warm-started from the
            previous codebooks, ``min(n_iter, 4)`` iterations) with the orthogonal Procrustes
            solution ``R = U V^T`` of ``x^T decode(encode(x @ R)) = U S V^T``; then a final PQ
            with ``n_iter`` iterations. Encode, decode and search apply ``R`` themselves.
        opq_iter: alternations of the OPQ training.

    After :meth:`train`: ``codebooks``, float32 ``(m, 2**bits, d / m)``, and ``rotation``,
    float32 ``(d, d)`` orthogonal (``None`` without ``opq``).

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

        OPQ on correlated data:

        >>> z = np.random.default_rng(1).standard_normal((2000, 16)).astype(np.float32)
        >>> xc = z @ np.random.default_rng(2).standard_normal((16, 16)).astype(np.float32)
        >>> opq = qp.ProductQuantizer(m=4, bits=4, opq=True, opq_iter=5).train(xc)
        >>> bool(np.allclose(opq.rotation @ opq.rotation.T, np.eye(16), atol=1e-5))
        True
        >>> plain = qp.ProductQuantizer(m=4, bits=4).train(xc)
        >>> err = lambda q: float(((q.decode(q.encode(xc)) - xc) ** 2).mean())
        >>> bool(err(opq) < err(plain))
        True
    """

    def __init__(self, m: int, bits: int = 8, n_iter: int = 25, seed: int = 0, opq: bool = False, opq_iter: int = 10) -> None:
        self.m = _check_int("m", m, 1)
        self.bits = _check_bits(bits)
        self.n_iter = _check_int("n_iter", n_iter, 0)
        self.seed = _check_int("seed", seed, 0)
        if not isinstance(opq, (bool, np.bool_)):
            raise QuantpressError(f"opq must be True or False, got {opq!r}")
        self.opq = bool(opq)
        self.opq_iter = _check_int("opq_iter", opq_iter, 1)
        self.codebooks: Optional[np.ndarray] = None
        self.rotation: Optional[np.ndarray] = None

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
        self.rotation = None
        if not self.opq:
            self.codebooks = self._fit_codebooks(xf, self.n_iter, None)
            return self
        x64 = xf.astype(np.float64)
        rot = np.eye(d)
        cbs = None
        for _ in range(self.opq_iter):
            xr = (x64 @ rot).astype(np.float32)
            cbs = self._fit_codebooks(xr, min(self.n_iter, 4), cbs)
            self.codebooks = cbs
            y = self._decode_rotated(self._encode_rotated(xr)).astype(np.float64)
            u, _, vt = np.linalg.svd(x64.T @ y)  # orthogonal Procrustes: argmin_R |x R - y|
            rot = u @ vt
        self.codebooks = self._fit_codebooks((x64 @ rot).astype(np.float32), self.n_iter, cbs)
        self.rotation = np.ascontiguousarray(rot, dtype=np.float32)
        return self

    def _fit_codebooks(self, xf: np.ndarray, n_iter: int, init: Optional[np.ndarray]) -> np.ndarray:
        ds = xf.shape[1] // self.m
        cbs = [
            _kmeans(self.k, n_iter, self.seed + j, xf[:, j * ds : (j + 1) * ds], "k-means++" if init is None else init[j])
            for j in range(self.m)
        ]
        return np.ascontiguousarray(np.stack(cbs), dtype=np.float32)

    def _rotate(self, x: np.ndarray) -> np.ndarray:
        """``x @ R`` in float32 (``x`` itself without OPQ)."""
        return x if self.rotation is None else np.ascontiguousarray(x @ self.rotation, dtype=np.float32)

    def encode(self, x: Any) -> np.ndarray:
        """Codes ``(n, m)`` of the nearest codeword per sub-space (uint8 for ``bits <= 8``, else
        uint16); ties go to the lower codeword index."""
        self._trained()
        xa = _matrix(x, "x", self.d)
        out = np.empty((len(xa), self.m), dtype=_code_dtype(self.bits))
        for s in range(0, len(xa), ENCODE_BATCH):
            xb, _ = as_float32(xa[s : s + ENCODE_BATCH], name="x")
            if self.rotation is not None:
                xb = self._rotate(_finite32(xb, "x"))
            out[s : s + len(xb)] = self._encode_rotated(xb)
        return out

    def _encode_rotated(self, xb: np.ndarray) -> np.ndarray:
        cb = self._trained()
        ds = cb.shape[2]
        out = np.empty((len(xb), self.m), dtype=_code_dtype(self.bits))
        for j in range(self.m):
            out[:, j] = assign(xb[:, j * ds : (j + 1) * ds], cb[j])
        return out

    def decode(self, codes: Any) -> np.ndarray:
        """The vectors ``(n, d)`` float32 that ``codes`` ``(n, m)`` stand for."""
        c = _check_codes(codes, self.m, self.k)
        out = self._decode_rotated(c)
        return out if self.rotation is None else np.ascontiguousarray(out @ self.rotation.T, dtype=np.float32)

    def _decode_rotated(self, c: np.ndarray) -> np.ndarray:
        cb = self._trained()
        ds = cb.shape[2]
        out = np.empty((len(c), self.m * ds), dtype=np.float32)
        for j in range(self.m):
            out[:, j * ds : (j + 1) * ds] = cb[j][c[:, j]]
        return out

    def distance_tables(self, queries: Any) -> np.ndarray:
        """Squared L2 distance of each query's sub-vectors to every codeword: ``(nq, m, 2**bits)``
        float32 (the lookup tables of asymmetric distance computation). With OPQ the queries are
        rotated first (distances are unchanged by the orthogonal ``R``)."""
        cb = self._trained()
        q = self._rotate(_finite32(_matrix(queries, "queries", self.d), "queries"))
        m, k, ds = cb.shape
        # Straight differences rather than |q|^2 - 2 q.c + |c|^2: no cancellation near a codeword;
        # each entry sums (q_t - c_t)^2 over t in order, in float32, in Rust over all threads.
        return _core.pq_distance_tables(np.ascontiguousarray(q), np.ascontiguousarray(cb), m, k, ds).reshape(len(q), m, k)

    def search(self, queries: Any, codes: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` database vectors nearest to each query by asymmetric distance computation
        (ADC): the query stays exact, the database is its codes. Distance = sum over the ``m``
        sub-spaces of the table entry (:meth:`distance_tables`) of the stored code, summed in
        float32 in sub-space order starting from 0.0 (``((0 + T[0][c0]) + T[1][c1]) + ...``).
        The scan runs in Rust over all threads with the GIL released, keeping only a bounded
        heap per query; results do not depend on the thread count.

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
        codes_c = np.ascontiguousarray(c, dtype=_code_dtype(self.bits))
        # Tables for a block of queries at a time bound their memory; the Rust scan keeps only a
        # k-heap per query, never the (queries x database) distances.
        qb = max(1, min(len(q), _SEARCH_ELEMS // (self.m * self.k)))
        dist_out = np.empty((len(q), k), dtype=np.float32)
        idx_out = np.empty((len(q), k), dtype=np.int64)
        for s in range(0, len(q), qb):
            tables = self.distance_tables(q[s : s + qb])
            d, i = _core.pq_adc_search(tables.ravel(), len(tables), self.m, self.k, codes_c.ravel(), k)
            dist_out[s : s + len(tables)] = d.reshape(-1, k)
            idx_out[s : s + len(tables)] = i.reshape(-1, k)
        return dist_out, idx_out

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the codebooks and parameters to a small safetensors file (atomically)."""
        params = {"m": self.m, "bits": self.bits, "n_iter": self.n_iter, "seed": self.seed, "opq": self.opq, "opq_iter": self.opq_iter}
        arrays = {"codebooks": self._trained()}
        if self.rotation is not None:
            arrays["rotation"] = self.rotation
        _codebook_io.save(path, "ProductQuantizer", arrays, params)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "ProductQuantizer":
        """Reads a file written by :meth:`save`."""
        arrays, params = _codebook_io.load(path, "ProductQuantizer")
        cb = _codebook_io.require(arrays, "codebooks", np.float32, 3, path)
        pq = _codebook_io.build(path, "ProductQuantizer", lambda: cls(
            int(params["m"]), bits=int(params["bits"]), n_iter=int(params["n_iter"]), seed=int(params["seed"]),
            opq=bool(params.get("opq", False)), opq_iter=int(params.get("opq_iter", 10))))
        if cb.shape[:2] != (pq.m, pq.k) or cb.shape[2] == 0:
            raise QuantpressError(f"{os.fspath(path)}: codebooks of shape {cb.shape} do not match m={pq.m}, bits={pq.bits}")
        pq.codebooks = np.ascontiguousarray(cb)
        if pq.opq:
            rot = _codebook_io.require(arrays, "rotation", np.float32, 2, path)
            if rot.shape != (pq.d, pq.d) or not np.isfinite(rot).all():
                raise QuantpressError(f"{os.fspath(path)}: rotation of shape {rot.shape} does not match d={pq.d}")
            pq.rotation = np.ascontiguousarray(rot)
        return pq

    def __repr__(self) -> str:
        state = "untrained" if self.codebooks is None else f"d={self.d}"
        return f"ProductQuantizer(m={self.m}, bits={self.bits}, {'opq=True, ' if self.opq else ''}{state})"


class ResidualQuantizer:
    """Residual (multi-stage) vector quantization, greedy: stage ``s`` is a ``2**bits``-codeword
    k-means codebook trained on what stages ``< s`` left over; a vector is the sum of one codeword
    per stage and is stored as ``stages`` codes. Encoding is greedy by default (nearest codeword
    of the current residual, stage by stage), or a beam search.

    Args:
        stages: number of codebooks.
        bits: bits per code, 1 to 16.
        n_iter: Lloyd iterations of each k-means.
        seed: stage ``s``'s k-means uses ``seed + s``.
        beam: encoding beam width (faiss's ``max_beam_size``). ``1`` is greedy (the nearest-codeword
            kernel). Above 1, each stage extends each of the ``beam`` best partial encodings by
            every codeword and keeps the ``beam`` with the smallest squared error (float64; ties
            to the lower ``(beam, code)``); the best final one wins. With
            ``beam >= 2**(bits * (stages - 1))`` the search is exhaustive.
        refine: rounds of codebook refinement after the greedy stage-wise training (``0``: none).
            Each round encodes the training vectors with the beam (a vector keeps its previous
            codes where they were better) and then refits the codebooks one stage after the
            other, each codeword the mean of what the other stages leave of its vectors: the
            exact least-squares codebook for those codes (an empty codeword stays). Neither
            step can raise the training error, so it never increases; with ``beam > 1`` the
            codebooks learn to work with the encoder that will use them (faiss trains its
            residual quantizer with beam search too).

    After :meth:`train`: ``codebooks``, float32 ``(stages, 2**bits, d)``; ``train_errors``, the
    training mean squared error after the greedy stages and after each refinement round.

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
        >>> rq.beam = 8
        >>> bool(((rq.decode(rq.encode(x)) - x) ** 2).mean() <= two)
        True
    """

    def __init__(self, stages: int, bits: int = 8, n_iter: int = 25, seed: int = 0, beam: int = 1,
                 refine: int = 0) -> None:
        self.beam = _check_int("beam", beam, 1)
        self.refine = _check_int("refine", refine, 0)
        self.train_errors: list[float] = []
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
        x32 = _finite32(_matrix(x, "x"), "x")  # never written: the residuals are a copy
        if len(x32) < self.k:
            raise QuantpressError(f"training needs at least 2**bits = {self.k} vectors, got {len(x32)}")
        r = x32.copy()
        cbs, codes = [], np.empty((len(r), self.stages), dtype=np.int64)
        for s in range(self.stages):
            c = _kmeans(self.k, self.n_iter, self.seed + s, r)
            codes[:, s] = assign(r, c)
            r -= c[codes[:, s]]
            cbs.append(c)
        self.codebooks = np.ascontiguousarray(np.stack(cbs), dtype=np.float32)
        x64 = x32.astype(np.float64)
        err = self._row_errors(x64, codes)
        self.train_errors = [float(err.mean())]
        for _ in range(self.refine):
            new = self.encode(x32).astype(np.int64)
            new_err = self._row_errors(x64, new)
            better = new_err < err
            codes[better] = new[better]
            self._refit(x64, codes)
            err = self._row_errors(x64, codes)
            self.train_errors.append(float(err.mean()))
        return self

    def _row_errors(self, x64: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Squared reconstruction error of every row of ``x64`` (float64)."""
        return ((x64 - _stage_sum(self._trained(), codes)) ** 2).sum(1)

    def _refit(self, x64: np.ndarray, codes: np.ndarray) -> None:
        """Refits each stage's codebook in turn, given every stage's codes (float64 means; the
        stages before it already refitted)."""
        cb = self._trained().copy()
        for st in range(self.stages):
            target = x64 - _stage_sum(cb, codes, skip=st)
            count = np.bincount(codes[:, st], minlength=self.k)
            sums = np.zeros((self.k, target.shape[1]))
            np.add.at(sums, codes[:, st], target)
            used = count > 0
            cb[st][used] = (sums[used] / count[used, None]).astype(np.float32)
        self.codebooks = np.ascontiguousarray(cb)

    def encode(self, x: Any) -> np.ndarray:
        """Codes ``(n, stages)`` (uint8 for ``bits <= 8``, else uint16), chosen greedily or by beam
        search (``beam``)."""
        cb = self._trained()
        xa = _matrix(x, "x", self.d)
        out = np.empty((len(xa), self.stages), dtype=_code_dtype(self.bits))
        if self.beam > 1:
            step = max(1, _BEAM_ELEMS // (self.beam * self.k * max(1, self.d // 8)))
            for s in range(0, len(xa), step):
                out[s : s + step] = self._encode_beam(_finite32(xa[s : s + step], "x"))
            return out
        for s in range(0, len(xa), ENCODE_BATCH):
            xb, _ = as_float32(xa[s : s + ENCODE_BATCH], name="x")
            r = xb.copy()
            for st in range(self.stages):
                codes = assign(r, cb[st])
                r -= cb[st][codes]
                out[s : s + len(r), st] = codes
        return out

    def _encode_beam(self, xb: np.ndarray) -> np.ndarray:
        """Beam search over stages for the rows of ``xb`` (float64 residuals and errors)."""
        cb = self._trained().astype(np.float64)
        n = len(xb)
        norms = (cb**2).sum(-1)
        r = xb.astype(np.float64)[:, None, :]  # (n, beams, d) residuals
        err = (r**2).sum(-1)  # (n, beams)
        codes = np.zeros((n, 1, 0), dtype=np.int64)
        for st in range(self.stages):
            cand = (err[:, :, None] - 2 * (r @ cb[st].T) + norms[st]).reshape(n, -1)  # (n, beams * k)
            order = _smallest(cand, min(self.beam, cand.shape[1]))  # ties: lower (beam, code)
            src, code = np.divmod(order, self.k)
            r = np.take_along_axis(r, src[:, :, None], 1) - cb[st][code]
            err = (r**2).sum(-1)  # exact errors of the kept encodings
            codes = np.concatenate([np.take_along_axis(codes, src[:, :, None], 1), code[:, :, None]], axis=2)
        best = np.argmin(err, axis=1)
        return codes[np.arange(n), best]

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
        params = {"stages": self.stages, "bits": self.bits, "n_iter": self.n_iter, "seed": self.seed, "beam": self.beam,
                  "refine": self.refine}
        _codebook_io.save(path, "ResidualQuantizer", {"codebooks": self._trained()}, params)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "ResidualQuantizer":
        """Reads a file written by :meth:`save`."""
        arrays, params = _codebook_io.load(path, "ResidualQuantizer")
        cb = _codebook_io.require(arrays, "codebooks", np.float32, 3, path)
        rq = _codebook_io.build(path, "ResidualQuantizer", lambda: cls(
            int(params["stages"]), bits=int(params["bits"]), n_iter=int(params["n_iter"]), seed=int(params["seed"]),
            beam=int(params.get("beam", 1)), refine=int(params.get("refine", 0))))
        if cb.shape[:2] != (rq.stages, rq.k) or cb.shape[2] == 0:
            raise QuantpressError(f"{os.fspath(path)}: codebooks of shape {cb.shape} do not match stages={rq.stages}, bits={rq.bits}")
        rq.codebooks = np.ascontiguousarray(cb)
        return rq

    def __repr__(self) -> str:
        state = "untrained" if self.codebooks is None else f"d={self.d}"
        refine = f"refine={self.refine}, " if self.refine else ""
        return f"ResidualQuantizer(stages={self.stages}, bits={self.bits}, beam={self.beam}, {refine}{state})"
