"""The exception type: importable, a ValueError, picklable, and raised (never a crash)."""

import pickle

import numpy as np
import pytest

import quantpress as qp
from quantpress import _core


def test_error_type():
    assert issubclass(qp.QuantpressError, ValueError)
    assert qp.QuantpressError is _core.QuantpressError
    assert qp.QuantpressError.__module__ == "quantpress"
    err = pickle.loads(pickle.dumps(qp.QuantpressError("boom")))
    assert isinstance(err, qp.QuantpressError) and str(err) == "boom"


def test_core_rejects_non_contiguous_arrays():
    x = np.zeros((64, 64), np.float32)[:, ::2]
    with pytest.raises(qp.QuantpressError, match="C-contiguous"):
        _core.gguf_quantize_into(x, 32, "Q8_0", np.empty(32 * 34, np.uint8))
    with pytest.raises(qp.QuantpressError, match="C-contiguous"):
        _core.gguf_dequantize_into(np.zeros(34, np.uint8), "Q8_0", np.empty((32, 2), np.float32)[:, 0])


def test_core_validates_lengths_before_allocating():
    # A huge claimed size with a tiny buffer must be refused, not allocated.
    with pytest.raises(qp.QuantpressError):
        _core.rtn_dequantize(np.zeros(4, np.uint8), np.zeros(1, np.float32), None, 2**60, 4, 8, "symmetric", "float32")
    with pytest.raises(qp.QuantpressError):
        _core.unpack_bits(np.zeros(4, np.uint8), 4, 2**60)
    with pytest.raises(qp.QuantpressError):
        _core.rtn_dequantize(np.zeros(4, np.uint8), np.zeros(3, np.float32), np.zeros(3, np.float32), 8, 4, 8, "affine", "float32")


def test_core_rejects_bad_names_and_levels():
    with pytest.raises(qp.QuantpressError):
        _core.rtn_quantize(np.zeros(8, np.float32), 4, 8, "sym", "float16")
    with pytest.raises(qp.QuantpressError):
        _core.rtn_quantize(np.zeros(8, np.float32), 4, 8, "affine", "int8")
    with pytest.raises(qp.QuantpressError):
        _core._set_simd_level("avx9000")
    with pytest.raises(qp.QuantpressError):
        _core._set_simd_level("neon" if _core.detected_simd_level() != "neon" else "avx2")


def test_a_rust_panic_becomes_quantpress_error():
    with pytest.raises(qp.QuantpressError, match="internal error.*deliberate test panic"):
        _core._panic_for_tests()
    # and the interpreter keeps working
    assert qp.gguf_quantize(np.ones(32, np.float32), "Q8_0").size == 34
