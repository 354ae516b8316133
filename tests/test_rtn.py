"""Round-to-nearest group quantization: Rust vs the NumPy oracle, layouts, dtypes, bounds."""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import quantpress as qp
from quantpress import _core
from quantpress import _reference as ref

from conftest import AWKWARD_LENGTHS, BOUND_RTOL, weight_like

SCHEMES = [("affine", b) for b in range(1, 9)] + [("symmetric", b) for b in range(2, 9)]


def bits_of(a):
    return a.view(np.uint16 if a.dtype == np.float16 else np.uint32)


def oracle_zero(scheme, bits, z, scales):
    return z if scheme == "affine" else np.full_like(scales, 2 ** (bits - 1))


@pytest.mark.parametrize("scheme,bits", SCHEMES)
@pytest.mark.parametrize("scale_dtype", ["float16", "float32"])
def test_kernels_match_reference(simd, scheme, bits, scale_dtype, rng):
    for g in AWKWARD_LENGTHS:
        groups = max(1, 600 // g)
        x = (rng.standard_normal(g * groups) * rng.choice([1e-4, 1.0, 300.0])).astype(np.float32)
        if g > 3:
            x[: g // 3] = np.abs(x[: g // 3])  # some all-positive stretches
        codes, scales, zeros = _core.rtn_quantize(x, bits, g, scheme, scale_dtype)
        rc, rs, rz = ref.rtn_quantize(x, bits, g, scheme, scale_dtype)
        assert np.array_equal(codes, ref.pack_bits(rc, bits)), (g, bits)
        assert np.array_equal(bits_of(scales), bits_of(rs.astype(scales.dtype)))
        if scheme == "affine":
            assert np.array_equal(bits_of(zeros), bits_of(rz.astype(zeros.dtype)))  # +0, never -0
        else:
            assert zeros is None
        y = _core.rtn_dequantize(codes, scales, zeros, x.size, bits, g, scheme, scale_dtype)
        assert np.array_equal(y, ref.rtn_dequantize(rc, rs, oracle_zero(scheme, bits, rz, rs), g))


@pytest.mark.parametrize("scheme,bits", [("affine", 4), ("symmetric", 4), ("affine", 3), ("affine", 8)])
def test_adversarial_groups_match_reference(simd, scheme, bits):
    tiny = np.float32(1e-39)
    blocks = [
        np.zeros(32, np.float32),
        -np.zeros(32, np.float32),
        np.full(32, 3.5, np.float32),
        np.full(32, -2.0, np.float32),
        np.r_[np.full(31, 0.01, np.float32), np.float32(1e4)],
        np.full(32, tiny, np.float32) * np.arange(32, dtype=np.float32),
        np.linspace(-7.5, 7.5, 32, dtype=np.float32),  # values on rounding ties
        np.r_[np.float32(-3e38), np.zeros(31, np.float32)],
    ]
    x = np.concatenate(blocks)
    codes, scales, zeros = _core.rtn_quantize(x, bits, 32, scheme, "float32")
    rc, rs, rz = ref.rtn_quantize(x, bits, 32, scheme, "float32")
    assert np.array_equal(codes, ref.pack_bits(rc, bits))
    assert np.array_equal(scales, rs)
    assert zeros is None or np.array_equal(zeros, rz)


@pytest.mark.parametrize("scheme,bits", SCHEMES)
@pytest.mark.parametrize("group_size", [8, 32, 128])
def test_error_within_half_step(scheme, bits, group_size, rng):
    w = weight_like(rng, (16, 256))
    qt = qp.quantize(w, bits=bits, group_size=group_size, scheme=scheme)
    err = np.abs(qt.dequantize() - w).reshape(16, -1, group_size)
    half_step = qt.scales.astype(np.float32)[..., None] / 2
    assert np.all(err <= half_step * (1 + BOUND_RTOL))


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    bits=st.integers(1, 8),
    scheme=st.sampled_from(["affine", "symmetric"]),
    scale_dtype=st.sampled_from(["float16", "float32"]),
)
def test_roundtrip_property(data, bits, scheme, scale_dtype):
    if scheme == "symmetric" and bits == 1:
        bits = 2
    g = data.draw(st.sampled_from([1, 2, 3, 7, 16, 33]))
    rows = data.draw(st.integers(1, 5))
    x = data.draw(hnp.arrays(np.float32, (rows, g * data.draw(st.integers(1, 4))),
                             elements=st.floats(-1e4, 1e4, width=32)))
    qt = qp.quantize(x, bits=bits, group_size=g, scheme=scheme, scale_dtype=scale_dtype)
    y = qt.dequantize()
    half_step = np.repeat(qt.scales.astype(np.float32), g, axis=-1) / 2
    assert np.all(np.abs(y - x) <= half_step * (1 + BOUND_RTOL) + 1e-30)
    assert np.array_equal(qp.QuantizedTensor(**qt.parts()).dequantize(), y)


def test_per_channel_any_axis_and_per_tensor(rng):
    w = weight_like(rng, (6, 10, 12))
    for axis in (0, 1, 2, -1):
        qt = qp.quantize(w, bits=8, group_size=None, axis=axis)
        moved = np.moveaxis(w, axis, -1)
        assert qt.scales.shape == moved.shape[:-1] + (1,)
        ref_codes, ref_scales, _ = ref.rtn_quantize(moved.reshape(-1), 8, w.shape[axis], "affine", "float16")
        assert np.array_equal(qt.scales.reshape(-1).astype(np.float32), ref_scales)
        assert np.array_equal(qp.unpack_bits(qt.codes, 8, w.size), ref_codes)
        assert qt.dequantize().shape == w.shape
    qt = qp.quantize(w, bits=8, group_size=None, axis=None)
    assert qt.scales.shape == (1,)
    assert np.abs(qt.dequantize() - w).max() <= qt.scales.astype(np.float32)[0] / 2 * (1 + BOUND_RTOL)


def test_group_along_first_axis(rng):
    w = weight_like(rng, (64, 5))
    qt = qp.quantize(w, bits=4, group_size=16, axis=0)
    assert qt.scales.shape == (5, 4)
    direct = qp.quantize(np.ascontiguousarray(w.T), bits=4, group_size=16, axis=-1)
    assert np.array_equal(qt.codes, direct.codes)
    assert np.array_equal(qt.dequantize(), direct.dequantize().T)


def test_input_dtypes_and_orders(rng):
    w = weight_like(rng, (8, 64))
    base = qp.quantize(w, bits=4, group_size=32)
    fortran = qp.quantize(np.asfortranarray(w), bits=4, group_size=32)
    assert np.array_equal(fortran.codes, base.codes)
    h = w.astype(np.float16)
    assert np.array_equal(qp.quantize(h, bits=4, group_size=32).codes,
                          qp.quantize(h.astype(np.float32), bits=4, group_size=32).codes)
    b = w.astype(ml_dtypes.bfloat16)
    from_bf16 = qp.quantize(b, bits=4, group_size=32)
    assert from_bf16.dtype == "bfloat16"
    assert np.array_equal(from_bf16.codes, qp.quantize(b.astype(np.float32), bits=4, group_size=32).codes)
    raw = qp.quantize(b.view(np.uint16), bits=4, group_size=32, dtype="bfloat16")
    assert np.array_equal(raw.codes, from_bf16.codes)
    assert from_bf16.dequantize(dtype="bfloat16").dtype == ml_dtypes.bfloat16
    strided = qp.quantize(w[:, ::2], bits=4, group_size=32)
    assert np.array_equal(strided.codes, qp.quantize(np.ascontiguousarray(w[:, ::2]), bits=4, group_size=32).codes)


def test_sizes_and_bits_per_weight(rng):
    w = weight_like(rng, (64, 256))
    qt = qp.quantize(w, bits=4, group_size=128, scale_dtype="float16")
    assert qt.codes.nbytes == 64 * 256 // 2
    assert qt.nbytes == 64 * 256 // 2 + 2 * (64 * 2 * 2)
    assert qt.bits_per_weight == pytest.approx(4.25)
    sym = qp.quantize(w, bits=4, group_size=128, scheme="symmetric", scale_dtype="float32")
    assert sym.zeros is None and sym.bits_per_weight == pytest.approx(4.25)
    assert qp.quantize(w, bits=3, group_size=64).codes.nbytes == 64 * 256 * 3 // 8


def test_more_bits_less_error(rng):
    w = weight_like(rng, (32, 256))
    errors = [np.mean((qp.quantize(w, bits=b, group_size=64).dequantize() - w) ** 2) for b in range(1, 9)]
    assert all(a > b for a, b in zip(errors, errors[1:]))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bits": 0}, {"bits": 9}, {"bits": 2.5}, {"bits": 1, "scheme": "symmetric"},
        {"group_size": 48}, {"group_size": 0}, {"group_size": -4}, {"scheme": "nf5"},
        {"scale_dtype": "bfloat16"}, {"axis": 5}, {"axis": None, "group_size": 16},
        {"bits": True}, {"group_size": True}, {"axis": 1.0},
    ],
)
def test_bad_parameters_raise(kwargs, rng):
    with pytest.raises(qp.QuantpressError):
        qp.quantize(weight_like(rng, (4, 64)), **kwargs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_raises(bad, rng):
    w = weight_like(rng, (4, 64))
    w[2, 17] = bad
    with pytest.raises(qp.QuantpressError, match="non-finite.*index 145"):
        qp.quantize(w, bits=4, group_size=32)


def test_bad_inputs_raise():
    for w in [np.zeros((0, 64), np.float32), np.arange(64), np.array(["a"]), np.zeros(64, np.complex64),
              np.float32(1.5)]:
        with pytest.raises(qp.QuantpressError):
            qp.quantize(w, group_size=None)
    with pytest.raises(qp.QuantpressError, match="0-d"):
        qp.quantize(np.float32(1.5), group_size=None)
    with pytest.raises(qp.QuantpressError, match="scale_dtype='float32'"):
        qp.quantize(np.array([-6e4, 6e4] * 16, np.float32), bits=1, group_size=32)
    with pytest.raises(qp.QuantpressError):
        qp.quantize(np.zeros(64, np.float32), dtype="bfloat16")


def test_rebuild_validates_parts(rng):
    parts = qp.quantize(weight_like(rng, (4, 64)), bits=4, group_size=32).parts()
    for key, value in [("codes", parts["codes"][:-1]), ("scales", parts["scales"][:, :1]),
                       ("zeros", None), ("bits", 9), ("shape", (4, 63)), ("scheme", "x")]:
        with pytest.raises(qp.QuantpressError):
            qp.QuantizedTensor(**{**parts, key: value})
