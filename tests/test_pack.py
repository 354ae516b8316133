import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import quantpress as qp
from quantpress import _reference as ref

from conftest import AWKWARD_LENGTHS


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("n", AWKWARD_LENGTHS)
def test_pack_matches_reference_bit_exact(simd, bits, n, rng):
    codes = rng.integers(0, 2**bits, size=n, dtype=np.uint8)
    packed = qp.pack_bits(codes, bits)
    assert np.array_equal(packed, ref.pack_bits(codes, bits))
    assert packed.size == (n * bits + 7) // 8
    assert np.array_equal(qp.unpack_bits(packed, bits, n), codes)


def test_documented_bit_order():
    # 4 bits: low nibble first; 3 bits: a little-endian bit stream crossing bytes.
    assert qp.pack_bits(np.array([1, 2, 3]), 4).tolist() == [0x21, 0x03]
    assert qp.pack_bits(np.array([5, 3, 7]), 3).tolist() == [0b11011101, 0b1]
    assert qp.pack_bits(np.array([1, 0, 1, 1, 0, 0, 0, 1, 1]), 1).tolist() == [0b10001101, 1]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8), st.data())
def test_pack_unpack_identity(bits, data):
    codes = data.draw(hnp.arrays(np.uint8, st.integers(0, 300), elements=st.integers(0, 2**bits - 1)))
    assert np.array_equal(qp.unpack_bits(qp.pack_bits(codes, bits), bits, codes.size), codes)


def test_pack_errors():
    with pytest.raises(qp.QuantpressError):
        qp.pack_bits(np.array([16]), 4)
    with pytest.raises(qp.QuantpressError):
        qp.pack_bits(np.array([1]), 0)
    with pytest.raises(qp.QuantpressError):
        qp.pack_bits(np.array([1]), 9)
    with pytest.raises(qp.QuantpressError):
        qp.pack_bits(np.array([-1]), 4)
    with pytest.raises(qp.QuantpressError):
        qp.unpack_bits(np.zeros(3, np.uint8), 4, 7)
    with pytest.raises(qp.QuantpressError):
        qp.unpack_bits(np.zeros(2, np.uint8), 4, -1)
