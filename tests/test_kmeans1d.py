"""Batched 1-D k-means (``qp.kmeans1d``) against the brute-force DP of ``quantpress._reference``.

Tolerances: the kernel's DP runs on f64 prefix sums and rounds centroids to float32, the oracle
sums every run directly in float64, so optimal SSEs agree to ``SSE_RTOL`` (relative) rather than
bit for bit; codes are compared exactly with the oracle's nearest-centroid rule.
"""

import doctest
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import quantpress as qp
from quantpress import _reference as ref

from conftest import weight_like

SSE_RTOL = 1e-6
SSE_ATOL = 1e-12


def sse_close(got, want):
    return abs(got - want) <= SSE_RTOL * want + SSE_ATOL


def random_row(rng, n, kind):
    if kind == "dup":  # few levels: many equal values
        return rng.integers(-3, 4, size=n).astype(np.float32) / np.float32(4)
    return rng.standard_normal(n).astype(np.float32)


@pytest.mark.parametrize("kind", ["cont", "dup"])
@pytest.mark.parametrize("weighted", [False, True])
def test_exact_is_the_brute_force_optimum(rng, kind, weighted):
    for trial in range(60):
        n = int(rng.integers(1, 25))
        k = int(rng.integers(1, min(n, 6) + 1))
        x = random_row(rng, n, kind)
        w = None
        if weighted:
            w = rng.uniform(0, 3, size=n).astype(np.float32)
            w[rng.random(n) < 0.2] = 0  # some zero weights
        r = qp.kmeans1d(x, k, weights=w)
        want_sse, want_c = ref.kmeans1d_optimal(x, k, w)
        assert sse_close(float(r.inertia), want_sse), (trial, float(r.inertia), want_sse)
        # Continuous values and weights: the optimal partition is unique, so the centroids are too.
        if kind == "cont":
            m = len(want_c)
            np.testing.assert_allclose(r.codebook[:m], want_c.astype(np.float32), rtol=1e-6, atol=1e-7)
            assert np.all(r.codebook[m:] == r.codebook[m - 1])
        assert np.array_equal(r.codes, ref.kmeans1d_codes(x, r.codebook))


def test_lloyd_is_never_better_and_close(rng):
    w = weight_like(rng, (64, 512))
    exact = qp.kmeans1d(w, 16)
    fast = qp.kmeans1d(w, 16, exact=False)
    assert np.all(fast.inertia >= exact.inertia * (1 - 1e-9))
    assert fast.inertia.sum() <= exact.inertia.sum() * 1.01
    for r in (exact, fast):
        assert np.all(np.diff(r.codebook, axis=1) > 0)  # 512 distinct values: 16 distinct centroids


def test_exact_beats_scikit_learn(rng):
    from sklearn.cluster import KMeans

    w = weight_like(rng, (4, 300))
    r = qp.kmeans1d(w, 8)
    for row, inertia in zip(w, r.inertia):
        km = KMeans(n_clusters=8, n_init=1, random_state=0).fit(row.reshape(-1, 1).astype(np.float64))
        assert inertia <= km.inertia_ * (1 + 1e-9)


@pytest.mark.parametrize("exact", [True, False])
def test_codes_and_inertia_describe_the_reconstruction(rng, exact):
    w = weight_like(rng, (8, 700))
    imp = rng.uniform(0, 2, size=w.shape).astype(np.float32)
    r = qp.kmeans1d(w, 12, weights=imp, exact=exact)
    assert r.codes.dtype == np.uint8 and r.codes.shape == w.shape and r.codebook.dtype == np.float32
    for i in range(8):
        assert np.array_equal(r.codes[i], ref.kmeans1d_codes(w[i], r.codebook[i]))
    deq = r.dequantize()
    assert deq.shape == w.shape and deq.dtype == np.float32
    want = (imp.astype(np.float64) * (w.astype(np.float64) - deq) ** 2).sum(axis=1)
    np.testing.assert_allclose(r.inertia, want, rtol=1e-12)


def test_axis_moves_the_problem(rng):
    x = rng.standard_normal((3, 40, 5)).astype(np.float32)
    r = qp.kmeans1d(x, 4, axis=1)
    last = qp.kmeans1d(np.moveaxis(x, 1, -1), 4)
    assert r.codebook.shape == (3, 5, 4) and r.codes.shape == x.shape and r.axis == 1
    assert np.array_equal(r.codebook, last.codebook)
    assert np.array_equal(r.codes, np.moveaxis(last.codes, -1, 1))
    assert np.array_equal(r.dequantize(), np.moveaxis(last.dequantize(), -1, 1))
    assert np.array_equal(qp.kmeans1d(x, 4, axis=-2).codes, r.codes)


def test_per_column_weights_broadcast(rng):
    x = rng.standard_normal((6, 50)).astype(np.float32)
    col = rng.uniform(0, 1, size=50).astype(np.float32)
    a = qp.kmeans1d(x, 5, weights=col)
    b = qp.kmeans1d(x, 5, weights=np.broadcast_to(col, x.shape))
    assert np.array_equal(a.codebook, b.codebook) and np.array_equal(a.codes, b.codes)
    # Along axis 0, per-column weights are one weight a problem: the fit is the unweighted one.
    c = qp.kmeans1d(x, 3, weights=col, axis=0)
    d = qp.kmeans1d(x, 3, axis=0)
    assert np.array_equal(c.codebook, d.codebook)
    np.testing.assert_allclose(c.inertia, d.inertia * col, rtol=1e-6)


def test_thread_count_does_not_change_results(rng):
    w = weight_like(rng, (300, 512))  # several parallel chunks
    n = qp.get_num_threads()
    try:
        out = []
        for t in (1, 2):
            qp.set_num_threads(t)
            out.append([qp.kmeans1d(w, 16, exact=e) for e in (True, False)])
    finally:
        qp.set_num_threads(n)
    for a, b in zip(*out):
        for f in ("codebook", "codes", "inertia"):
            assert np.array_equal(getattr(a, f).view(np.uint8), getattr(b, f).view(np.uint8))


@pytest.mark.parametrize("exact", [True, False])
def test_edge_cases(exact):
    # Constant and all-zero rows: one centroid repeated, codes 0, no error.
    r = qp.kmeans1d(np.array([[2.0] * 5, [0.0] * 5], np.float32), 4, exact=exact)
    assert np.array_equal(r.codebook, [[2.0] * 4, [0.0] * 4])
    assert not r.codes.any() and not r.inertia.any()
    # Fewer distinct values than k: those values, then the last one repeated; -0.0 equals 0.0.
    r = qp.kmeans1d(np.array([3.0, 1.0, -0.0, 0.0, 1.0], np.float32), 4, exact=exact)
    assert np.array_equal(r.codebook, [0.0, 1.0, 3.0, 3.0]) and np.array_equal(r.codes, [2, 1, 0, 0, 1])
    # k = 1: the weighted mean; k = n: every value its own centroid.
    r = qp.kmeans1d(np.array([1.0, 2.0, 6.0], np.float32), 1, weights=np.array([1, 1, 2], np.float32), exact=exact)
    assert r.codebook.tolist() == [3.75]
    x = np.array([5.0, -1.0, 2.5, 0.25], np.float32)
    r = qp.kmeans1d(x, 4, exact=exact)
    assert np.array_equal(r.codebook, np.sort(x)) and r.inertia == 0 and np.array_equal(r.dequantize(), x)
    # All-zero weights: fitted unweighted, weighted SSE 0.
    r = qp.kmeans1d(np.array([0.0, 1.0, 10.0, 11.0], np.float32), 2, weights=np.zeros(4), exact=exact)
    assert r.codebook.tolist() == [0.5, 10.5] and r.inertia == 0
    # Zero-weight values get codes but do not move the centroids.
    r = qp.kmeans1d(np.array([0.0, 1.0, 10.0, 100.0], np.float32), 2, weights=np.array([1, 1, 1, 0]), exact=exact)
    assert r.codebook.tolist() == [0.5, 10.0] and r.codes.tolist() == [0, 0, 1, 1]


def test_code_dtype_follows_k(rng):
    x = rng.standard_normal((2, 600)).astype(np.float32)
    assert qp.kmeans1d(x, 256, exact=False).codes.dtype == np.uint8
    r = qp.kmeans1d(x, 257)  # exact: 257 distinct centroids
    assert r.codes.dtype == np.uint16 and r.codes.max() > 255
    assert np.array_equal(r.codes[0], ref.kmeans1d_codes(x[0], r.codebook[0]))


def test_input_dtypes(rng):
    x = rng.standard_normal((4, 64))
    a = qp.kmeans1d(x, 8)  # float64 is cast to float32
    b = qp.kmeans1d(x.astype(np.float32), 8)
    assert np.array_equal(a.codebook, b.codebook)
    f = qp.kmeans1d(np.asfortranarray(x.astype(np.float32)), 8)
    assert np.array_equal(f.codes, b.codes)


@pytest.mark.parametrize(
    "args",
    [
        dict(w=np.array([1.0, np.nan], np.float32), k=1),
        dict(w=np.array([1.0, np.inf], np.float32), k=1),
        dict(w=np.ones(4, np.float32), k=2, weights=np.array([1, -1, 1, 1], np.float32)),
        dict(w=np.ones(4, np.float32), k=2, weights=np.array([1, np.nan, 1, 1], np.float32)),
        dict(w=np.ones(4, np.float32), k=2, weights=np.ones(3, np.float32)),
        dict(w=np.ones(4, np.float32), k=0),
        dict(w=np.ones(4, np.float32), k=5),
        dict(w=np.ones(4, np.float32), k=2.0),
        dict(w=np.ones(4, np.float32), k=True),
        dict(w=np.ones(4, np.float32), k=70000),
        dict(w=np.ones((2, 4), np.float32), k=2, axis=2),
        dict(w=np.ones((2, 4), np.float32), k=2, axis=1.0),
        dict(w=np.ones(0, np.float32), k=1),
        dict(w=np.ones(4, np.int32), k=2),
        dict(w=np.ones((1, 1 << 17), np.float32), k=1 << 12),  # exact table too large
    ],
)
def test_bad_input_is_an_error(args):
    with pytest.raises(qp.QuantpressError):
        qp.kmeans1d(**args)


@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(np.float32, st.integers(1, 20), elements=st.floats(-100, 100, width=32)),
    k=st.integers(1, 6),
    data=st.data(),
)
def test_property_optimal_and_consistent(x, k, data):
    k = min(k, len(x))
    w = data.draw(st.none() | hnp.arrays(np.float32, len(x), elements=st.floats(0, 10, width=32)))
    check_optimal_and_consistent(x, k, w)


def check_optimal_and_consistent(x, k, w):
    r = qp.kmeans1d(x, k, weights=w)
    want, _ = ref.kmeans1d_optimal(x, k, w)
    # Rounding a centroid to float32 moves the SSE by (total weight) * delta^2 (the error of the
    # mean is orthogonal to the residuals); among subnormals delta reaches 2^-150 however small
    # the SSE, so that term is allowed on top of the relative tolerance (e.g. x = [1.05e-43, 0]).
    # The DP's run costs are differences of float64 prefix sums, off by about
    # n * eps * (total weight) * max|x|^2 whatever the run (far below the 1e-9 * max|x|^2 term
    # for these weights), so the optimum is found up to that, not relative to a tiny SSE.
    total = len(x) if w is None else float(np.asarray(w, np.float64).sum())
    tol = 1e-6 * want + 1e-9 * float(np.abs(x).max()) ** 2 + total * 2.0**-298
    assert abs(float(r.inertia) - want) <= tol, (float(r.inertia), want)
    assert np.all(np.diff(r.codebook) >= 0)
    assert np.array_equal(r.codes, ref.kmeans1d_codes(x, r.codebook))
    fast = qp.kmeans1d(x, k, weights=w, exact=False)
    assert float(fast.inertia) >= float(r.inertia) * (1 - 1e-9) - 1e-9 * float(np.abs(x).max()) ** 2
    return r


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("t", [1e-3, 1e-8, 2.0**-52, 2.0**-53, 1e-20, 1e-45])
def test_weight_below_an_ulp_of_the_prefix_sum(t, exact):
    # Sorted -1, 0, 1 weighted 1, 1, t: for t = 2^-52 the prefix weight 2 + t rounded to 2, the
    # run {1} got weight 0 and an SSE of -inf, and the fit returned {-1, 0}, {1} (SSE 0.5)
    # instead of {-1}, {0, 1} (SSE ~ t).
    x, w = np.array([0, -1, 1], np.float32), np.array([1, 1, t], np.float32)
    r = qp.kmeans1d(x, 2, weights=w, exact=exact)
    want, cent = ref.kmeans1d_optimal(x, 2, w)
    assert r.codes.tolist() == [1, 0, 1] and r.codebook[0] == -1
    np.testing.assert_allclose(r.codebook, cent.astype(np.float32), rtol=1e-6)
    assert abs(float(r.inertia) - want) <= 1e-6 * want
    # k = 3: every value its own centroid (Lloyd's mean of {1} was 2^-52 / 0 = inf).
    r = qp.kmeans1d(x, 3, weights=w, exact=exact)
    assert r.codebook.tolist() == [-1, 0, 1] and r.inertia == 0


@settings(max_examples=100, deadline=None)
@given(
    x=hnp.arrays(np.float32, st.integers(2, 16), elements=st.floats(-100, 100, width=32)),
    k=st.integers(2, 5),
    data=st.data(),
)
def test_property_weights_spanning_thirty_decades(x, k, data):
    # Weights 1e-30 .. 1 (and zeros): runs whose weight is below an ulp of the prefix sums.
    exps = data.draw(hnp.arrays(np.float64, len(x), elements=st.floats(-30, 0)))
    w = (10.0**exps).astype(np.float32) * data.draw(hnp.arrays(np.bool_, len(x))).astype(np.float32)
    check_optimal_and_consistent(x, min(k, len(x)), w)


def test_weights_spanning_thirty_decades_seeded(rng):
    for _ in range(300):
        n = int(rng.integers(2, 21))
        x = random_row(rng, n, ["cont", "dup"][int(rng.integers(2))]) * np.float32(10.0 ** rng.uniform(-3, 3))
        w = (10.0 ** rng.uniform(-30, 0, n)).astype(np.float32)
        w[rng.random(n) < 0.1] = 0
        w[rng.integers(n)] = 10.0 ** rng.uniform(-30, 0)  # at least one positive weight
        check_optimal_and_consistent(x, min(int(rng.integers(2, 7)), n), w)


def test_docstring_examples():
    module = sys.modules["quantpress.kmeans1d"]
    failed, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert attempted > 0 and failed == 0


def test_rounded_distance_tie_goes_to_the_lower_code():
    # 1.0 is as far from 0 as from 1e-30 in float64: the oracle's rule gives code 0 (the zero
    # weight keeps 1.0 from moving the centroids).
    x = np.array([1e-30, 0.0, 1.0], np.float32)
    r = qp.kmeans1d(x, 2, weights=np.array([1, 1, 0], np.float32))
    assert np.array_equal(r.codes, ref.kmeans1d_codes(x, r.codebook))
    assert r.codes.tolist() == [1, 0, 0]
