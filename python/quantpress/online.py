"""Online (streaming) codebook updates: adapt a trained codebook batch by batch without keeping
the data, as in VQ-VAE training or when the vectors to compress drift.

Two rules, both on top of :func:`~quantpress.assign` (nearest codeword, float32, ties to the
lower index) and both computed in float64 before the codebook is stored as float32:

* competitive learning, :meth:`OnlineCodebook.update`: every codeword that wins at least one row
  of the batch moves a fraction ``lr`` of the way to the mean of its rows;
* exponential moving averages, :meth:`OnlineCodebook.update_ema` (van den Oord et al. 2017,
  appendix A.1): running cluster sizes ``N`` and sums ``M`` decay by ``decay`` and absorb the
  batch; the codeword is ``M / N'`` with Laplace-smoothed sizes
  ``N' = (N + eps) / (sum N + k eps) * sum N``, so a codeword that stops winning never divides
  by zero; it fades towards the origin once its ``N`` decays to the order of ``eps`` (re-seed
  dead codewords yourself if that matters).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._core import QuantpressError
from .pq import _finite32, _matrix
from .vq import assign

_METRICS = ("l2", "cosine")


def _unit_float(name: str, v: Any, lo_open: bool, hi_open: bool) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise QuantpressError(f"{name} must be a number, got {v!r}")
    f = float(v)
    ok = (0.0 < f if lo_open else 0.0 <= f) and (f < 1.0 if hi_open else f <= 1.0)
    if not ok:
        interval = ("(" if lo_open else "[") + "0, 1" + (")" if hi_open else "]")
        raise QuantpressError(f"{name} must lie in {interval}, got {v!r}")
    return f


class OnlineCodebook:
    """A codebook ``(k, d)`` updated online from batches of vectors.

    Args:
        codebook: ``(k, d)`` float array of starting codewords (e.g. ``qp.KMeans(...).centroids``);
            copied.
        metric: ``"l2"`` or ``"cosine"``: how rows pick their codeword (see :func:`~quantpress.assign`).
            Both update rules then move codewords towards means of their rows.

    Attributes:
        codebook: the current codewords, float32 ``(k, d)``.
        cluster_size: EMA cluster sizes ``N`` (float64 ``(k,)``), starting at 1 (each codeword
            counts as one point at its own position).
        embed_sum: EMA sums ``M`` (float64 ``(k, d)``), starting at the codebook.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> ob = qp.OnlineCodebook(np.array([[0, 0], [10, 10]], dtype=np.float32))
        >>> x = np.array([[1, 1], [1, 3], [9, 9]], dtype=np.float32)
        >>> ob.update(x, lr=0.5).tolist()
        [0, 0, 1]
        >>> ob.codebook.tolist()
        [[0.5, 1.0], [9.5, 9.5]]
        >>> ema = qp.OnlineCodebook(np.zeros((2, 2), np.float32) + [[0], [10]])
        >>> for _ in range(200):
        ...     _ = ema.update_ema(x, decay=0.9)
        >>> np.round(ema.codebook, 2).tolist()
        [[1.0, 2.0], [9.0, 9.0]]
    """

    def __init__(self, codebook: Any, metric: str = "l2") -> None:
        if metric not in _METRICS:
            raise QuantpressError(f"metric must be one of {_METRICS}, got {metric!r}")
        cb = _finite32(_matrix(codebook, "codebook"), "codebook")
        self.metric = metric
        self.codebook = np.array(cb, dtype=np.float32, order="C")
        self.cluster_size = np.ones(len(cb), dtype=np.float64)
        self.embed_sum = self.codebook.astype(np.float64)

    @property
    def k(self) -> int:
        """Number of codewords."""
        return self.codebook.shape[0]

    @property
    def d(self) -> int:
        """Codeword length."""
        return self.codebook.shape[1]

    def assign(self, x: Any) -> np.ndarray:
        """Nearest codeword of every row of ``x`` ``(n, d)`` (see :func:`~quantpress.assign`)."""
        xf = _finite32(_matrix(x, "x", self.d), "x")
        return np.asarray(assign(xf, self.codebook, metric=self.metric))

    def _batch(self, x: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(x float32, codes, per-codeword counts, per-codeword float64 sums)``; rows are added
        in row order."""
        xf = _finite32(_matrix(x, "x", self.d), "x")
        codes = np.asarray(assign(xf, self.codebook, metric=self.metric))
        idx = codes.astype(np.int64)
        counts = np.bincount(idx, minlength=self.k).astype(np.float64)
        sums = np.zeros((self.k, self.d), dtype=np.float64)
        np.add.at(sums, idx, xf.astype(np.float64))
        return xf, codes, counts, sums

    def update(self, x: Any, lr: float = 0.1) -> np.ndarray:
        """Competitive learning on one batch: every codeword ``c`` that wins rows moves to
        ``c + lr * (mean of its rows - c)``; the others stay. Returns the batch's codes (assigned
        before the update).

        Args:
            x: ``(n, d)`` float array.
            lr: step in ``(0, 1]``; ``1`` jumps to the mean (one Lloyd step on the batch).
        """
        lr = _unit_float("lr", lr, lo_open=True, hi_open=False)
        _, codes, counts, sums = self._batch(x)
        won = counts > 0
        cb = self.codebook[won].astype(np.float64)
        mean = sums[won] / counts[won, None]
        self.codebook[won] = (cb + lr * (mean - cb)).astype(np.float32)
        return codes

    def update_ema(self, x: Any, decay: float = 0.99, eps: float = 1e-5) -> np.ndarray:
        """VQ-VAE EMA update on one batch: ``N = decay N + (1 - decay) n``,
        ``M = decay M + (1 - decay) sum(x)``, codeword ``= M / N'`` with Laplace-smoothed
        ``N' = (N + eps) / (sum(N) + k eps) * sum(N)``. Returns the batch's codes (assigned
        before the update).

        Args:
            x: ``(n, d)`` float array.
            decay: in ``[0, 1)``; larger forgets more slowly.
            eps: Laplace smoothing, ``>= 0``.
        """
        decay = _unit_float("decay", decay, lo_open=False, hi_open=True)
        if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)) or not 0 <= float(eps) < np.inf:
            raise QuantpressError(f"eps must be a finite number >= 0, got {eps!r}")
        _, codes, counts, sums = self._batch(x)
        self.cluster_size = decay * self.cluster_size + (1 - decay) * counts
        self.embed_sum = decay * self.embed_sum + (1 - decay) * sums
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + eps) / (total + self.k * float(eps)) * total
        self.codebook = (self.embed_sum / smoothed[:, None]).astype(np.float32)
        return codes

    def __repr__(self) -> str:
        return f"OnlineCodebook(k={self.k}, d={self.d}, metric={self.metric!r})"
