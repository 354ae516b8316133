"""OnlineCodebook against the NumPy oracle (quantpress._reference, "online codebook").

Codes come from qp.assign, checked bit-exact against ``ref.assign``; the updates are float64
arithmetic in the same order as the oracle (rows summed one at a time in row order), so the
codebooks must match exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

import quantpress as qp
from quantpress import _reference as ref


def _setup(seed=0, n=500, k=12, d=6):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, d)) + 4 * rng.standard_normal((k, d))[rng.integers(0, k, n)]).astype(np.float32)
    return x, x[rng.choice(n, k, replace=False)].copy()


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_competitive_update_matches_oracle_over_several_batches(metric):
    x, cb = _setup()
    ob = qp.OnlineCodebook(cb, metric=metric)
    want = cb.copy()
    for b in range(5):
        batch = x[b * 100:(b + 1) * 100]
        want_codes, _ = ref.assign(batch, want, metric)
        codes = ob.update(batch, lr=0.3)
        assert np.array_equal(codes.astype(np.int64), want_codes)
        want = ref.online_competitive(want, batch, want_codes, 0.3)
        assert np.array_equal(ob.codebook, want)
    assert not np.array_equal(ob.codebook, cb)


def test_lr_one_is_a_lloyd_step_and_losers_stay():
    x, cb = _setup(seed=1)
    far = np.full((1, 6), 1e3, np.float32)  # never wins
    ob = qp.OnlineCodebook(np.concatenate([cb, far]))
    codes = ob.update(x, lr=1.0)
    for c in range(len(cb)):
        if np.any(codes == c):
            np.testing.assert_allclose(ob.codebook[c], x[codes == c].astype(np.float64).mean(0), rtol=1e-6)
    assert np.array_equal(ob.codebook[-1], far[0])
    before = float(((x - cb[ref.assign(x, cb)[0]]) ** 2).sum())
    after = float(((x - ob.codebook[ob.assign(x).astype(np.int64)]) ** 2).sum())
    assert after < before


def test_ema_update_matches_oracle_and_converges_to_cluster_means():
    x, cb = _setup(seed=2)
    ob = qp.OnlineCodebook(cb)
    assert np.array_equal(ob.cluster_size, np.ones(12)) and np.array_equal(ob.embed_sum, cb.astype(np.float64))
    size, sums, want = np.ones(12), cb.astype(np.float64), cb.copy()
    for b in range(5):
        batch = x[b * 100:(b + 1) * 100]
        want_codes, _ = ref.assign(batch, want)
        codes = ob.update_ema(batch, decay=0.8, eps=1e-3)
        assert np.array_equal(codes.astype(np.int64), want_codes)
        size, sums, want = ref.online_ema(size, sums, batch, want_codes, 0.8, 1e-3)
        assert np.array_equal(ob.codebook, want)
        assert np.array_equal(ob.cluster_size, size) and np.array_equal(ob.embed_sum, sums)
    # Same batch over and over: codewords settle on the means of their rows (eps=0).
    fixed = qp.OnlineCodebook(cb)
    for _ in range(300):
        codes = fixed.update_ema(x[:200], decay=0.9, eps=0.0)
    for c in np.unique(codes):
        np.testing.assert_allclose(fixed.codebook[c], x[:200][codes == c].mean(0), rtol=1e-4, atol=1e-4)


def test_ema_keeps_unused_codewords_finite():
    x, cb = _setup(seed=3)
    far = np.full((1, 6), 50.0, np.float32)
    ob = qp.OnlineCodebook(np.concatenate([cb, far]))
    for _ in range(10):
        codes = ob.update_ema(x[:50], decay=0.5)
        assert not np.any(codes == 12)
    assert np.isfinite(ob.codebook).all()
    # N = 0.5**10 is still well above eps: the unused codeword has barely moved (no blow-up).
    assert ob.cluster_size[-1] == 0.5 ** 10
    assert 0.95 < np.linalg.norm(ob.codebook[-1]) / np.linalg.norm(far) <= 1.0


def test_bad_input():
    x, cb = _setup()
    ob = qp.OnlineCodebook(cb)
    err = qp.QuantpressError
    for lr in (0, -0.1, 1.5, True, "a"):
        with pytest.raises(err, match="lr"):
            ob.update(x, lr=lr)
    for decay in (1.0, -0.1, None):
        with pytest.raises(err, match="decay"):
            ob.update_ema(x, decay=decay)
    with pytest.raises(err, match="eps"):
        ob.update_ema(x, eps=-1)
    with pytest.raises(err, match="d=6"):
        ob.update(x[:, :5])
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(err, match="NaN"):
        ob.update(bad)
    with pytest.raises(err, match="NaN"):
        qp.OnlineCodebook(bad)
    with pytest.raises(err, match="metric"):
        qp.OnlineCodebook(cb, metric="l1")
    with pytest.raises(err, match="2-D"):
        qp.OnlineCodebook(cb[0])
    assert np.array_equal(ob.codebook, cb)  # failed calls change nothing
    assert repr(ob) == "OnlineCodebook(k=12, d=6, metric='l2')"
