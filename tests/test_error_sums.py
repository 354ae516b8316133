"""The error figures of compress reports (``pipeline.error_stats``, ``pipeline.entry_error``,
Rust ``error_sums`` / ``rtn_error_sums``) against float64 NumPy. Tolerance 1e-6 relative: the
Rust sums are float32 over runs of 256 values, float64 across runs."""

import math

import numpy as np
import pytest

import quantpress as qp
from conftest import weight_like
from quantpress.pipeline import entry_error, error_stats


def _oracle(x, y):
    x, y = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
    sig, err = (x * x).sum(), ((x - y) ** 2).sum()
    return math.sqrt(err / sig), 10 * math.log10(sig / err), (x * y).sum() / math.sqrt(sig * (y * y).sum())


@pytest.mark.parametrize("kw", [dict(bits=4, group_size=128), dict(bits=8, group_size=None, scheme="symmetric"),
                                dict(bits=4, group_size=64, axis=0), dict(bits=3, group_size=None, axis=None),
                                dict(bits=4, scheme="nf4", group_size=64, double_quant=True, scale_dtype="float32"),
                                dict(bits=4, group_size=64, method="mse"), dict(bits=4, group_size=64, method="hqq")])
def test_entry_error_matches_a_full_decode(rng, kw):
    w = weight_like(rng, (192, 384))
    qt = qp.quantize(w, **kw)
    want = _oracle(w, qt.dequantize())
    got = entry_error(w, qt)
    assert got == pytest.approx(want, rel=1e-6)
    assert error_stats(w, qt.dequantize()) == pytest.approx(want, rel=1e-6)


def test_error_stats_edge_cases(rng):
    x = rng.standard_normal(1001).astype(np.float32)
    assert error_stats(x, x) == (0.0, float("inf"), pytest.approx(1.0))
    assert error_stats(np.zeros(5, np.float32), np.zeros(5, np.float32)) == (0.0, float("inf"), 1.0)
    assert error_stats(x.astype(np.float16), x)[0] < 1e-3  # any float dtype, read as float32
    with pytest.raises(qp.QuantpressError, match="shapes differ"):
        error_stats(x, x[:-1])


def test_error_figures_do_not_depend_on_the_thread_count(rng):
    w = weight_like(rng, (512, 1024))
    qt = qp.quantize(w, bits=4, group_size=128)
    before = qp.get_num_threads()
    try:
        qp.set_num_threads(1)
        one = entry_error(w, qt), error_stats(w, qt.dequantize())
        qp.set_num_threads(3)
        assert (entry_error(w, qt), error_stats(w, qt.dequantize())) == one
    finally:
        qp.set_num_threads(before)
