"""qp.assign (nearest-codeword search) against the NumPy oracle ``_reference.assign``, at every
SIMD level. The oracle does the core's float32 operations in the same order (its FMA is exact,
see ``_reference.fma32``), so codes and distances are compared exactly, bit for bit."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import quantpress as qp
from quantpress import _core
from quantpress import _reference as ref

from conftest import spin_while

METRICS = ["l2", "ip", "cosine", "l1"]


def check(x, codebook, metric):
    codes, dist = qp.assign(x, codebook, metric, return_distances=True)
    want_codes, want_dist = ref.assign(x, codebook, metric)
    assert codes.shape == (len(x),) and dist.dtype == np.float32
    assert np.array_equal(codes.astype(np.int64), want_codes), metric
    assert np.array_equal(dist.view(np.uint32), want_dist.view(np.uint32)), metric
    assert np.array_equal(qp.assign(x, codebook, metric), codes)


@pytest.mark.parametrize("metric", METRICS)
def test_matches_oracle_for_awkward_dims(simd, rng, metric):
    for d in list(range(1, 34)) + [129]:
        k = int(rng.integers(1, 300))
        n = int(rng.integers(1, 40))
        x = rng.standard_normal((n, d)).astype(np.float32)
        check(x, rng.standard_normal((k, d)).astype(np.float32), metric)


@pytest.mark.parametrize("metric", METRICS)
def test_matches_oracle_for_large_codebooks(simd, rng, metric):
    for d, k, n in [(8, 4096, 20), (4, 65536, 3), (3, 70000, 2)]:
        x = rng.standard_normal((n, d)).astype(np.float32)
        check(x, rng.standard_normal((k, d)).astype(np.float32), metric)


@pytest.mark.parametrize("metric", METRICS)
def test_ties_go_to_the_lowest_index(simd, rng, metric):
    base = rng.integers(-2, 3, (40, 5)).astype(np.float32)
    codebook = np.concatenate([base, base, rng.integers(-2, 3, (60, 5)).astype(np.float32)])
    x = rng.integers(-2, 3, (200, 5)).astype(np.float32)
    check(x, codebook, metric)
    codes = qp.assign(x, codebook, metric)
    assert not ((codes >= 40) & (codes < 80)).any()  # codewords 40..79 each have a lower twin


def test_code_dtype_follows_k(rng):
    x = rng.standard_normal((5, 2)).astype(np.float32)
    for k, dtype in [(1, np.uint8), (256, np.uint8), (257, np.uint16), (65536, np.uint16), (65537, np.uint32)]:
        codes = qp.assign(x, rng.standard_normal((k, 2)).astype(np.float32))
        assert codes.dtype == dtype


def test_heavy_tailed_data(simd, rng):
    from conftest import weight_like

    w = weight_like(rng, (300, 16))
    check(w[:200], w[200:], "l2")


def test_other_float_dtypes_and_layouts_match_float32(rng):
    x = rng.standard_normal((50, 8)).astype(np.float32)
    c = rng.standard_normal((70, 8)).astype(np.float32)
    want = qp.assign(x, c)
    assert np.array_equal(qp.assign(x.astype(np.float64), c.astype(np.float64)), want)
    xf = np.asfortranarray(x)
    assert not xf.flags.c_contiguous
    assert np.array_equal(qp.assign(xf, c[::1]), want)
    wide = np.zeros((50, 16), np.float32)
    wide[:, ::2] = x
    assert np.array_equal(qp.assign(wide[:, ::2], c), want)
    assert np.array_equal(qp.assign(x.astype(np.float16), c), qp.assign(x.astype(np.float16).astype(np.float32), c))


def test_empty_x_gives_empty_codes(rng):
    c = rng.standard_normal((300, 4)).astype(np.float32)
    codes, dist = qp.assign(np.zeros((0, 4), np.float32), c, return_distances=True)
    assert codes.shape == (0,) and codes.dtype == np.uint16 and dist.shape == (0,)


def test_bad_input_is_refused(rng):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    c = rng.standard_normal((5, 3)).astype(np.float32)
    bad = [
        (x[:, :2], c),  # d mismatch
        (x[0], c),  # 1-D
        (x[None], c),  # 3-D
        (x, c[0]),
        (x, np.zeros((0, 3), np.float32)),  # empty codebook
        (x.astype(np.int32), c),
        (x, c.astype(np.int64)),
        (np.zeros((0, 3), np.int32), c),
        (x.astype(complex), c),
    ]
    for a, b in bad:
        with pytest.raises(qp.QuantpressError):
            qp.assign(a, b)
    for v in (np.nan, np.inf, -np.inf):
        xb = x.copy()
        xb[2, 1] = v
        with pytest.raises(qp.QuantpressError, match="flat index 7"):
            qp.assign(xb, c)
        cb = c.copy()
        cb[1, 0] = v
        with pytest.raises(qp.QuantpressError):
            qp.assign(x, cb)
    with pytest.raises(qp.QuantpressError):
        qp.assign(x, c, metric="hamming")
    with pytest.raises(qp.QuantpressError):  # the core itself refuses strided input
        _core.vq_assign(np.zeros((4, 6), np.float32)[:, ::2], c, 3, "l2", False)


def test_fma32_is_exact():
    rng = np.random.default_rng(7)

    def exact(a, b, c):
        v = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
        r = np.float32(float(v))
        cands = [np.nextafter(r, np.float32(-np.inf)), r, np.nextafter(r, np.float32(np.inf))]
        errs = [abs(Fraction(float(t)) - v) for t in cands]
        best = min(errs)
        ties = [t for t, e in zip(cands, errs) if e == best]
        return min(ties, key=lambda t: int(t.view(np.uint32)) & 1)  # ties to even

    a = rng.standard_normal(3000).astype(np.float32)
    b = rng.standard_normal(3000).astype(np.float32)
    c = rng.standard_normal(3000).astype(np.float32)
    # Midpoint cases: c = 1 + 2^-24 (between two floats next to 1) and a tiny product.
    a[:1000] = np.float32(2.0**-30) * rng.choice([-1, 1], 1000).astype(np.float32)
    c[:1000] = np.float32(1.0) + np.float32(2.0**-23)
    b[:1000] = np.float32(1.0) + np.float32(2.0**-23) * rng.integers(0, 8, 1000).astype(np.float32)
    got = ref.fma32(a, b, c)
    want = np.array([exact(*t) for t in zip(a, b, c)], np.float32)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


@settings(max_examples=60, deadline=None)
@given(
    d=st.integers(1, 20),
    k=st.integers(1, 80),
    n=st.integers(1, 20),
    metric=st.sampled_from(METRICS),
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([1e-20, 1e-3, 1.0, 1e3, 1e15]),
)
def test_property_matches_oracle(d, k, n, metric, seed, scale):
    r = np.random.default_rng(seed)
    x = (r.standard_normal((n, d)) * scale).astype(np.float32)
    c = (r.standard_normal((k, d)) * scale).astype(np.float32)
    for level in ["scalar", _core.detected_simd_level()]:
        _core._set_simd_level(level)
        check(x, c, metric)
    _core._set_simd_level(_core.detected_simd_level())


@given(x=hnp.arrays(np.float32, (3, 4), elements=st.floats(width=32, allow_nan=False, allow_infinity=False)))
@settings(max_examples=40, deadline=None)
def test_property_codes_are_in_range(x):
    c = np.linspace(-1, 1, 24, dtype=np.float32).reshape(6, 4)
    for metric in METRICS:
        codes = qp.assign(x, c, metric)
        assert codes.shape == (3,) and (codes < 6).all()


def test_thread_count_invariance(rng):
    n0 = qp.get_num_threads()
    x = rng.standard_normal((30000, 8)).astype(np.float32)
    c = rng.standard_normal((256, 8)).astype(np.float32)
    try:
        out = []
        for n in (1, 2, 5):
            qp.set_num_threads(n)
            codes, dist = qp.assign(x, c, return_distances=True)
            out.append((codes, dist.view(np.uint32)))
    finally:
        qp.set_num_threads(n0)
    for codes, dist in out[1:]:
        assert np.array_equal(codes, out[0][0]) and np.array_equal(dist, out[0][1])


def test_gil_is_released(rng):
    # As in test_threads.py: a Python thread spins while the main thread runs a long search.
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    c = rng.standard_normal((4096, 16)).astype(np.float32)
    elapsed, counted, rate = spin_while(lambda: qp.assign(x, c))
    assert elapsed > 0.05, "the call was too short to tell"
    assert counted > rate * elapsed * 0.25, (counted, rate, elapsed)
