"""The five legacy GGUF types: bytes identical to the ``gguf`` package, at every SIMD level."""

import gguf
import ml_dtypes
import numpy as np
import pytest

import quantpress as qp

TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]


def gguf_type(name):
    return getattr(gguf.GGMLQuantizationType, name)


def expected(w, name):
    with np.errstate(all="ignore"):
        return gguf.quants.quantize(np.asarray(w, np.float32), gguf_type(name))


def adversarial_blocks() -> np.ndarray:
    """One row of 32-value blocks, each a corner case of the block formats."""
    rng = np.random.default_rng(7)
    z = np.zeros(32, np.float32)
    blocks = [
        z, -z, np.where(rng.random(32) < 0.5, z, -z),  # ±0 in every arrangement
        np.full(32, 0.3, np.float32), np.full(32, -7.0, np.float32),  # constants
        np.r_[rng.standard_normal(31).astype(np.float32) * 1e-3, np.float32(5e3)],  # one huge outlier
        np.r_[np.float32(-5e3), rng.standard_normal(31).astype(np.float32)],
        np.full(32, 1e-39, np.float32) * rng.standard_normal(32).astype(np.float32),  # subnormals
        np.r_[np.float32(1e-39), np.float32(-5e-40), z[:30]],
        np.r_[np.float32(np.finfo(np.float32).smallest_subnormal), z[:31]],
        np.r_[np.float32(3e-38), np.float32(-1e-38), z[:30]],
        np.r_[np.float32(3e38), np.float32(-3e38), rng.standard_normal(30).astype(np.float32)],  # huge range
        np.r_[np.float32(7e4), np.float32(-1e5), z[:30]],  # beyond float16
        np.arange(-16, 16, dtype=np.float32) + np.float32(0.5),  # rounding ties
        np.arange(-16, 16, dtype=np.float32) * np.float32(127 / 16),
        np.r_[np.float32(-8), np.float32(8), np.arange(30, dtype=np.float32) * np.float32(0.5) - np.float32(7)],
        np.r_[np.float32(3), np.float32(-3), rng.standard_normal(30).astype(np.float32)],  # tied |max|
        np.r_[np.float32(-3), np.float32(3), rng.standard_normal(30).astype(np.float32)],
        np.linspace(-1, 1, 32, dtype=np.float32),
    ]
    return np.concatenate(blocks).astype(np.float32)


@pytest.mark.parametrize("name", TYPES)
def test_random_bytes_identical(simd, name, rng):
    for shape in [(1, 32), (3, 64), (17, 96), (64, 4096 + 32), (2, 3, 128)]:
        w = (rng.standard_normal(shape) * rng.choice([1e-3, 1.0, 50.0])).astype(np.float32)
        raw = qp.gguf_quantize(w, name)
        want = expected(w, name)
        assert raw.shape == want.shape and raw.dtype == np.uint8
        assert np.array_equal(raw, want), (name, shape)


@pytest.mark.parametrize("name", TYPES)
def test_adversarial_bytes_identical(simd, name):
    w = adversarial_blocks()
    raw = qp.gguf_quantize(w, name)
    want = expected(w, name)
    per_block = raw.size * 32 // w.size
    ours, theirs = raw.reshape(-1, per_block), want.reshape(-1, per_block)
    mismatched = [i for i in range(len(ours)) if not np.array_equal(ours[i], theirs[i])]
    assert mismatched == []


@pytest.mark.parametrize("name", TYPES)
def test_many_seeded_blocks_identical(simd, name):
    # Thousands of blocks mixing scales, signs, ties and zeros.
    rng = np.random.default_rng(99)
    n = 4000
    scale = (10.0 ** rng.uniform(-6, 4, size=(n, 1))).astype(np.float32)
    w = (rng.standard_normal((n, 32)) * scale).astype(np.float32)
    w[rng.random((n, 32)) < 0.1] = 0.0
    w[rng.random((n, 32)) < 0.05] *= -0.0
    ties = rng.random(n) < 0.2
    w[ties] = (rng.integers(-16, 16, size=(ties.sum(), 32)) + 0.5).astype(np.float32)
    assert np.array_equal(qp.gguf_quantize(w, name), expected(w, name))


@pytest.mark.parametrize("name", TYPES)
def test_dequantize_equals_gguf(simd, name, rng):
    w = np.concatenate([rng.standard_normal(64 * 32).astype(np.float32), adversarial_blocks()]).reshape(-1, 32)
    raw = expected(w, name)
    ours = qp.gguf_dequantize(raw, name, w.shape)
    with np.errstate(all="ignore"):  # the adversarial blocks hold infinite scales: inf * 0
        theirs = gguf.quants.dequantize(raw, gguf_type(name))
    assert ours.dtype == np.float32
    assert np.array_equal(ours.view(np.uint32), theirs.astype(np.float32).view(np.uint32))
    # random bytes (any bit pattern, including NaN/Inf scales) decode identically too; where both
    # d*q and m are NaN, which NaN payload an addition returns is the compiler's choice, so NaNs
    # compare as NaNs and every other value bit for bit
    junk = rng.integers(0, 256, size=raw.shape, dtype=np.uint8)
    with np.errstate(all="ignore"):
        theirs = gguf.quants.dequantize(junk, gguf_type(name)).astype(np.float32)
    ours = qp.gguf_dequantize(junk, name, w.shape)
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    finite = ~np.isnan(ours)
    assert np.array_equal(ours[finite].view(np.uint32), theirs[finite].view(np.uint32))


def test_inputs_dtypes_and_type_objects(rng):
    w = rng.standard_normal((4, 64)).astype(np.float32)
    assert np.array_equal(qp.gguf_quantize(w, gguf.GGMLQuantizationType.Q4_0), expected(w, "Q4_0"))
    assert np.array_equal(qp.gguf_quantize(np.asfortranarray(w), "q4_0"), expected(w, "Q4_0"))
    h = w.astype(np.float16)
    assert np.array_equal(qp.gguf_quantize(h, "Q8_0"), expected(h.astype(np.float32), "Q8_0"))
    b = w.astype(ml_dtypes.bfloat16)
    assert np.array_equal(qp.gguf_quantize(b.view(np.uint16), "Q8_0", dtype="bfloat16"),
                          expected(b.astype(np.float32), "Q8_0"))
    raw = qp.gguf_quantize(w, "Q5_1")
    assert np.array_equal(qp.gguf_dequantize(raw.tobytes(), "Q5_1", w.shape), qp.gguf_dequantize(raw, "Q5_1", w.shape))


@pytest.mark.parametrize("name", TYPES)
def test_errors(name):
    with pytest.raises(qp.QuantpressError, match="multiple of"):
        qp.gguf_quantize(np.ones((2, 48), np.float32), name)
    w = np.ones((2, 64), np.float32)
    w[1, 5] = np.nan
    with pytest.raises(qp.QuantpressError, match="non-finite"):
        qp.gguf_quantize(w, name)
    with pytest.raises(qp.QuantpressError):
        qp.gguf_quantize(np.ones((0, 32), np.float32), name)
    with pytest.raises(qp.QuantpressError, match="0-d"):
        qp.gguf_quantize(np.float32(1.0), name)
    with pytest.raises(qp.QuantpressError):
        qp.gguf_dequantize(np.zeros(33, np.uint8), name, (1, 32))
    with pytest.raises(qp.QuantpressError):
        qp.gguf_dequantize(np.zeros(34, np.uint8), name, (1, 33))
    with pytest.raises(qp.QuantpressError):
        qp.gguf_dequantize(np.zeros(34, np.int8), name, (1, 32))
    with pytest.raises(qp.QuantpressError, match="unknown GGUF type"):
        qp.gguf_quantize(np.ones(32, np.float32), "Q7_K")


@pytest.mark.parametrize("name", TYPES)
def test_out_buffers(name, rng):
    w = rng.standard_normal((8, 128)).astype(np.float32)
    raw_buf = np.empty(8 * 4 * qp.GGUF_TYPES[name][1], np.uint8)
    raw = qp.gguf_quantize(w, name, out=raw_buf)
    assert np.shares_memory(raw, raw_buf) and np.array_equal(raw, expected(w, name))
    buf = np.full(w.size, np.nan, np.float32)
    y = qp.gguf_dequantize(raw, name, w.shape, out=buf)
    assert np.shares_memory(y, buf) and np.array_equal(y, qp.gguf_dequantize(raw, name, w.shape))
    for bad in [np.empty(w.size - 1, np.float32), np.empty(w.size, np.float64), np.empty((w.size, 2), np.float32)[:, 0]]:
        with pytest.raises(qp.QuantpressError):
            qp.gguf_dequantize(raw, name, w.shape, out=bad)
    with pytest.raises(qp.QuantpressError):
        qp.gguf_quantize(w, name, out=np.empty(raw_buf.size + 1, np.uint8))
