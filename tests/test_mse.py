"""MSE scale search (``qp.quantize(method="mse", weights=...)``): Rust vs the NumPy oracle (exact,
at every SIMD level), never worse than RTN per group, weights, threads, bad input."""

import numpy as np
import pytest

import quantpress as qp
from quantpress import _core
from quantpress import _reference as ref

from conftest import weight_like


def f32_bits(a):
    return np.asarray(a, dtype=np.float32).view(np.uint32)


def check_exact(x, bits, g, scheme, scale_dtype, weights=None):
    codes, scales, zeros = _core.mse_quantize(x, bits, g, scheme, scale_dtype, weights)
    rc, rs, rz = ref.mse_quantize(x, bits, g, scheme, scale_dtype, weights)
    assert np.array_equal(codes, ref.pack_bits(rc, bits)), (scheme, bits, g)
    assert np.array_equal(f32_bits(scales), f32_bits(rs))
    assert (zeros is None) == (rz is None)
    if zeros is not None:
        assert np.array_equal(f32_bits(zeros), f32_bits(rz))


@pytest.mark.parametrize("scheme,bits", [("affine", b) for b in (1, 2, 3, 4, 8)] + [("symmetric", b) for b in (2, 3, 4, 8)])
@pytest.mark.parametrize("scale_dtype", ["float16", "float32"])
def test_matches_reference(simd, scheme, bits, scale_dtype, rng):
    w = weight_like(rng, (8, 384)).reshape(-1)
    iw = rng.exponential(size=w.size).astype(np.float32)
    for g in (5, 32, 64, 128):
        n = w.size // g * g
        check_exact(w[:n], bits, g, scheme, scale_dtype)
        check_exact(w[:n], bits, g, scheme, scale_dtype, iw[:n])


def test_adversarial_groups_match_reference(simd):
    blocks = [np.zeros(16, np.float32), np.full(16, -2.0, np.float32), np.full(16, 3.5, np.float32),
              np.r_[np.full(15, 0.01, np.float32), np.float32(1e4)], np.linspace(-7.5, 7.5, 16, dtype=np.float32),
              np.full(16, 1e-39, np.float32) * np.arange(16, dtype=np.float32)]
    x = np.concatenate(blocks)
    zero_w = np.where(np.arange(x.size) < 48, 0, 1).astype(np.float32)
    for scheme in ("affine", "symmetric"):
        for sd in ("float16", "float32"):
            check_exact(x, 4, 16, scheme, sd)
            check_exact(x, 4, 16, scheme, sd, zero_w)


def group_sq_error(w, qt, g, weights=None):
    e = (qt.dequantize() - w).astype(np.float64) ** 2
    if weights is not None:
        e = e * np.broadcast_to(weights, w.shape)
    return e.reshape(-1, g).sum(axis=1)


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("g", [32, 64, 128])
@pytest.mark.parametrize("scheme", ["affine", "symmetric"])
def test_lowers_rtn_error_on_every_group(bits, g, scheme, rng):
    w = weight_like(rng, (64, 512))
    rtn = group_sq_error(w, qp.quantize(w, bits, g, scheme), g)
    mse = group_sq_error(w, qp.quantize(w, bits, g, scheme, method="mse"), g)
    assert np.all(mse <= rtn * (1 + 1e-6))  # float64 re-evaluation of float32 decisions
    assert mse.mean() < rtn.mean()


@pytest.mark.parametrize("per_column", [False, True])
def test_weights_lower_the_weighted_error(per_column, rng):
    w = weight_like(rng, (64, 256))
    shape = (256,) if per_column else w.shape
    iw = (rng.exponential(size=shape) ** 3).astype(np.float32)
    plain = qp.quantize(w, 3, 64, method="mse")
    weighted = qp.quantize(w, 3, 64, method="mse", weights=iw)
    assert group_sq_error(w, weighted, 64, iw).sum() < group_sq_error(w, plain, 64, iw).sum()
    # per-column weights equal their broadcast per-element array
    if per_column:
        full = qp.quantize(w, 3, 64, method="mse", weights=np.broadcast_to(iw, w.shape).copy())
        assert full.codes.tobytes() == weighted.codes.tobytes()


def test_axis_and_per_tensor_weights(rng):
    w = weight_like(rng, (32, 48))
    iw = rng.random(48).astype(np.float32)
    qt = qp.quantize(w, 4, 16, axis=0, method="mse", weights=iw)
    moved = np.ascontiguousarray(w.T).reshape(-1)
    full = np.ascontiguousarray(np.broadcast_to(iw, w.shape).T).reshape(-1)
    codes, scales, _ = _core.mse_quantize(moved, 4, 16, "affine", "float16", full)
    assert np.array_equal(qt.codes, codes) and np.array_equal(qt.scales.reshape(-1), scales)
    qt = qp.quantize(w, 4, None, axis=None, method="mse", weights=iw)
    check_exact(w.reshape(-1), 4, w.size, "affine", "float16", np.broadcast_to(iw, w.shape).reshape(-1).copy())
    assert qp.QuantizedTensor(**qt.parts()).method == "mse"


def test_threads_give_identical_bytes(rng):
    w = weight_like(rng, (64, 2048))
    iw = rng.random(2048).astype(np.float32)
    before = qp.get_num_threads()
    try:
        out = []
        for n in (1, 2):
            qp.set_num_threads(n)
            qt = qp.quantize(w, 3, 64, method="mse", weights=iw)
            out.append((qt.codes.tobytes(), qt.scales.tobytes(), qt.zeros.tobytes()))
        assert out[0] == out[1]
    finally:
        qp.set_num_threads(before)


@pytest.mark.parametrize("weights", [
    np.full(64, np.nan, np.float32), -np.ones(64, np.float32), np.ones(63, np.float32),
    np.ones((3, 64), np.float32), np.array(["a"] * 64),
])
def test_bad_weights(weights):
    with pytest.raises(qp.QuantpressError):
        qp.quantize(np.ones((2, 64), np.float32), 4, 64, method="mse", weights=weights)


def test_bad_input():
    w = np.ones((2, 64), np.float32)
    with pytest.raises(qp.QuantpressError):
        qp.quantize(w, 4, 64, weights=np.ones(64, np.float32))  # rtn takes no weights
    with pytest.raises(qp.QuantpressError):
        qp.quantize(w, 4, 64, scheme="nf4", method="mse")
    w[0, 0] = np.inf
    with pytest.raises(qp.QuantpressError):
        qp.quantize(w, 4, 64, method="mse")
    with pytest.raises(qp.QuantpressError):
        _core.mse_quantize(np.ones(64, np.float32), 4, 64, "affine", "float16", np.ones(32, np.float32), 0)
    with pytest.raises(qp.QuantpressError):
        _core.mse_quantize(np.ones(64, np.float32), 4, 64, "affine", "float16", np.ones(48, np.float32), 48)
