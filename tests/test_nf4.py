"""NF4: codes bit-exact to a NumPy port of bitsandbytes' blockwise quantizer, at every SIMD level."""

import numpy as np
import pytest

import quantpress as qp
from quantpress import _core
from quantpress import _reference as ref

from conftest import AWKWARD_LENGTHS, weight_like


def tree(x: float) -> int:
    """bitsandbytes' dQuantizeNF4 decision tree, transcribed branch for branch."""
    t = [float(v) for v in ref.NF4_MID]
    if x > t[7]:
        if x > t[11]:
            return (15 if x > t[14] else 14) if x > t[13] else (13 if x > t[12] else 12)
        return (11 if x > t[10] else 10) if x > t[9] else (9 if x > t[8] else 8)
    if x > t[3]:
        return (7 if x > t[6] else 6) if x > t[5] else (5 if x > t[4] else 4)
    return (3 if x > t[2] else 2) if x > t[1] else (1 if x > t[0] else 0)


def test_thresholds_are_the_c_literals():
    # the Rust constants must equal bitsandbytes' C literals rounded once to float32; four of
    # them differ by one ulp from a rounding through float64
    once = np.array([ref.f32_literal(t) for t in ref.NF4_MID_LITERALS], np.float32)
    twice = np.array([np.float32(float(t)) for t in ref.NF4_MID_LITERALS], np.float32)
    assert np.array_equal(ref.NF4_MID.view(np.uint32), once.view(np.uint32))
    assert np.flatnonzero(once != twice).tolist() == [0, 8, 12, 14]
    x = np.repeat(once, 2)  # exactly on each threshold: the lower code
    x[1::2] = np.nextafter(once, np.float32(2))  # one ulp above: the next code
    block = np.r_[x, np.float32(1.0), np.float32(0.0)].astype(np.float32)  # absmax 1: n == x
    codes, _, _ = _core.rtn_quantize(block, 4, 32, "nf4", "float32")
    got = qp.unpack_bits(codes, 4, 32)
    assert got.tolist() == [c for i in range(15) for c in (i, i + 1)] + [15, 7]
    assert np.array_equal(got, ref.bnb_quantize_nf4(block, 32)[0])


def test_reference_is_the_bitsandbytes_tree():
    rng = np.random.default_rng(3)
    probes = np.concatenate([rng.uniform(-1.1, 1.1, 5000).astype(np.float32), ref.NF4_MID,
                             np.nextafter(ref.NF4_MID, np.float32(2)), np.nextafter(ref.NF4_MID, np.float32(-2)),
                             np.array([np.nan, -0.0, 0.0, 1.0, -1.0], np.float32)])
    ours = (probes[:, None] > ref.NF4_MID).sum(axis=1)
    assert [tree(float(v)) for v in probes] == ours.tolist()
    # the codebook's midpoints are the thresholds (to float32 rounding)
    assert np.allclose((ref.NF4[1:] + ref.NF4[:-1]) / 2, ref.NF4_MID, atol=1e-7)


@pytest.mark.parametrize("g", [64, 32, 128, 2, 1, 33])
def test_codes_bit_exact_to_bitsandbytes(simd, g, rng):
    for n_groups in (1, 3, 97):
        x = (rng.standard_normal(g * n_groups) * rng.choice([1e-3, 1.0, 40.0])).astype(np.float32)
        x[rng.random(x.size) < 0.05] = 0.0
        codes, scales, zeros = _core.rtn_quantize(x, 4, g, "nf4", "float32")
        want_codes, want_absmax = ref.bnb_quantize_nf4(x, g)
        assert zeros is None
        assert np.array_equal(qp.unpack_bits(codes, 4, x.size), want_codes)
        assert np.array_equal(scales.view(np.uint32), want_absmax.view(np.uint32))


def test_adversarial_blocks(simd):
    z = np.zeros(64, np.float32)
    blocks = [z, -z, np.full(64, 3.0, np.float32), np.r_[np.float32(1e-39), z[:63]],
              np.r_[np.float32(-5e-40), np.float32(1e-45), z[:62]],
              np.r_[np.float32(1e4), np.full(63, 1e-3, np.float32)],
              np.tile(ref.NF4_MID, 5)[:64] * np.float32(2.0)]  # values on the thresholds
    x = np.concatenate(blocks).astype(np.float32)
    x[-64] = np.float32(2.0)  # the threshold block's absmax is exactly 2
    codes, scales, _ = _core.rtn_quantize(x, 4, 64, "nf4", "float32")
    want_codes, want_absmax = ref.bnb_quantize_nf4(x, 64)
    assert np.array_equal(qp.unpack_bits(codes, 4, x.size), want_codes)
    assert np.array_equal(scales.view(np.uint32), want_absmax.view(np.uint32))


@pytest.mark.parametrize("scale_dtype", ["float32", "float16"])
def test_dequantize_and_error(simd, scale_dtype, rng):
    w = weight_like(rng, (32, 256))
    qt = qp.quantize(w, scheme="nf4", group_size=64, scale_dtype=scale_dtype)
    assert qt.zeros is None and qt.bits_per_weight == pytest.approx(4 + (32 if scale_dtype == "float32" else 16) / 64)
    y = qt.dequantize()
    codes = qp.unpack_bits(qt.codes, 4, w.size).reshape(32, 4, 64)
    want = ref.NF4[codes] * qt.scales.astype(np.float32)[..., None]
    assert np.array_equal(y.reshape(32, 4, 64), want)
    # every value maps to its nearest codebook entry: error <= half the widest gap (0.1519) * absmax
    assert np.all(np.abs(y - w).reshape(32, 4, 64) <= 0.152 * qt.scales.astype(np.float32)[..., None])
    assert np.array_equal(qp.QuantizedTensor(**qt.parts()).dequantize(), y)


def test_nf4_beats_int4_on_normal_weights(rng):
    w = rng.standard_normal((64, 1024)).astype(np.float32)
    mse = lambda q: float(np.mean((q.dequantize() - w) ** 2))
    assert mse(qp.quantize(w, scheme="nf4", group_size=64)) < mse(qp.quantize(w, bits=4, group_size=64, scheme="symmetric"))


def test_bitsandbytes_nibble_order_helper():
    assert ref.bnb_pack(np.array([1, 2, 3, 4], np.uint8)).tolist() == [0x12, 0x34]
    assert qp.pack_bits(np.array([1, 2, 3, 4]), 4).tolist() == [0x21, 0x43]


def test_errors(rng):
    w = weight_like(rng, (4, 64))
    for kwargs in [{"bits": 3}, {"bits": 8}, {"group_size": 48}]:
        with pytest.raises(qp.QuantpressError):
            qp.quantize(w, scheme="nf4", **kwargs)
    with pytest.raises(qp.QuantpressError):
        qp.QuantizedTensor(**{**qp.quantize(w, scheme="nf4").parts(), "zeros": np.zeros((4, 1), np.float16)})


# --- double quantization of the scales (bitsandbytes' compress_statistics) ---
from quantpress import scalar as qs  # noqa: E402


def test_dynamic_map_is_bitsandbytes():
    want = ref.bnb_dynamic_map()
    assert want.size == 256 and np.all(np.diff(want) > 0)
    assert want[0] == np.float32(-0.99296875) and want[127] == 0 and want[255] == 1
    assert abs(want[128] - 5.5e-7) < 1e-12 and abs(want[129] - 3.25e-6) < 1e-12  # (0.1 + 1) / 2 * 1e-6, ...
    want[0] = np.float32(-1.0)  # bitsandbytes' CPU kernel sets it
    assert np.array_equal(qs.DYNAMIC_MAP.view(np.uint32), want.view(np.uint32))


def _adversarial_vector(rng):
    code = qs.DYNAMIC_MAP
    mids = ((code[1:] + code[:-1]) / np.float32(2)).astype(np.float32)  # ties: the lower entry
    near = np.concatenate([mids, np.nextafter(mids, np.float32(2)), np.nextafter(mids, np.float32(-2)), code])
    blocks = [np.r_[np.float32(1.0), near[i:i + 255]] for i in range(0, near.size, 255)]
    blocks[0][0] = np.float32(-1.0)
    blocks.append(np.zeros(256, np.float32))  # all-zero block: codes 0
    blocks.append(np.r_[np.float32(1e-39), np.zeros(100, np.float32), np.float32(-5e-40)])  # 1/absmax = inf
    blocks.append(rng.standard_normal(256).astype(np.float32) * np.float32(1e-3))
    return np.concatenate(blocks + [rng.standard_normal(77).astype(np.float32)]).astype(np.float32)


def test_blockwise_dynamic_codes_bit_exact(rng):
    a = _adversarial_vector(rng)
    codes, absmax2 = qs._quantize_dynamic(a)
    want_codes, want_absmax2 = ref.bnb_quantize_blockwise_cpu(a, qs.DYNAMIC_MAP, 256)
    assert np.array_equal(codes, want_codes)
    assert np.array_equal(absmax2.view(np.uint32), want_absmax2.view(np.uint32))
    assert codes[0] == 0 and codes[256] == 255  # -1 and 1 are map entries 0 and 255


@pytest.mark.parametrize("n", [1, 255, 256, 257, 1000, 4096])
def test_double_quant_bit_exact(n, rng):
    absmax = np.abs(rng.standard_t(3, n)).astype(np.float32) * np.float32(rng.choice([1e-4, 1.0, 300.0]))
    codes, absmax2, offset = qs._double_quant(absmax)
    want_codes, want_absmax2, want_offset, want_map = ref.bnb_double_quant(absmax)
    assert np.array_equal(codes, want_codes)
    assert np.array_equal(absmax2.view(np.uint32), want_absmax2.view(np.uint32))
    assert offset.view(np.uint32)[0] == np.float32(want_offset).view(np.uint32)
    back = qs._double_dequant(codes, absmax2, offset)
    assert np.array_equal(back.view(np.uint32), ref.bnb_double_dequant(want_codes, want_absmax2, want_offset, want_map).view(np.uint32))
    # the nearest map entry: within half the widest gap (1/128 near +-1) of the block's absmax2
    bound = np.repeat(absmax2, 256)[:n] * np.float32(0.0071) + np.abs(offset[0]) * np.float32(1e-6)
    assert np.all(np.abs(back - absmax) <= bound)


def test_double_quant_constant_scales():
    codes, absmax2, offset = qs._double_quant(np.full(300, 0.25, np.float32))
    assert not codes.any() and not absmax2.any() and offset[0] == np.float32(0.25)
    assert np.array_equal(qs._double_dequant(codes, absmax2, offset), np.full(300, 0.25, np.float32))


def test_quantize_double_quant(simd, rng):
    w = weight_like(rng, (40, 512))
    qt = qp.quantize(w, scheme="nf4", group_size=64, double_quant=True)
    plain = qp.quantize(w, scheme="nf4", group_size=64, scale_dtype="float32")
    assert qt.double_quant and not plain.double_quant and qt.scales.dtype == np.uint8
    # NF4 codes are computed with the exact absmax (as bitsandbytes does), then the absmax compressed
    assert np.array_equal(qt.codes, plain.codes)
    want = ref.bnb_double_quant(plain.scales.reshape(-1))
    assert np.array_equal(qt.scales.reshape(-1), want[0]) and np.array_equal(qt.scales_absmax, want[1])
    n_scales = 40 * 8
    assert qt.nbytes == w.size // 2 + n_scales + 4 * -(-n_scales // 256) + 4
    assert qt.bits_per_weight < plain.bits_per_weight - 0.36
    decoded = qt.scale_values()
    y = qt.dequantize()
    codes = qp.unpack_bits(qt.codes, 4, w.size).reshape(40, 8, 64)
    assert np.array_equal(y.reshape(40, 8, 64), ref.NF4[codes] * decoded[..., None])
    rel = np.abs(decoded - plain.scales) / plain.scales.max()
    assert rel.max() < 0.0071 and np.mean((y - w) ** 2) < 1.05 * np.mean((plain.dequantize() - w) ** 2)
    back = qp.QuantizedTensor(**qt.parts())
    assert back.double_quant and np.array_equal(back.dequantize(), y)


def test_double_quant_other_axis_and_repr(rng):
    w = weight_like(rng, (128, 6))
    qt = qp.quantize(w, scheme="nf4", group_size=32, axis=0, double_quant=True)
    assert qt.scales.shape == (6, 4) and "double_quant=True" in repr(qt)
    assert np.abs(qt.dequantize() - w).max() <= 0.16 * np.abs(w).max()


def test_double_quant_errors(rng):
    w = weight_like(rng, (4, 64))
    for kwargs in [{"scheme": "affine"}, {"scheme": "symmetric"}, {"scheme": "nf4", "method": "mse"},
                   {"scheme": "nf4", "double_quant": 1}, {"scheme": "nf4", "double_quant": "yes"}]:
        with pytest.raises(qp.QuantpressError):
            qp.quantize(w, **{"double_quant": True, **kwargs})
    with pytest.raises(qp.QuantpressError):
        qp.quantize(np.full((4, 64), np.nan, np.float32), scheme="nf4", double_quant=True)
    parts = qp.quantize(w, scheme="nf4", double_quant=True).parts()
    f32 = np.float32
    for bad in [{"scales_absmax": None}, {"scales_offset": None}, {"scales_absmax": np.zeros(2, f32)},
                {"scales_absmax": np.zeros(1, np.float16)}, {"scales_absmax": np.array([np.nan], f32)},
                {"scales_absmax": np.array([-1.0], f32)}, {"scales_offset": np.array([np.inf], f32)},
                {"scales_offset": np.zeros(2, f32)}, {"scales": parts["scales"].astype(f32)},
                {"scales": parts["scales"][:, :0]}, {"scheme": "symmetric"}]:
        with pytest.raises(qp.QuantpressError):
            qp.QuantizedTensor(**{**parts, **bad})
    plain = qp.quantize(w, scheme="nf4").parts()
    with pytest.raises(qp.QuantpressError):  # float scales with second-level parts
        qp.QuantizedTensor(**{**plain, "scales_absmax": parts["scales_absmax"], "scales_offset": parts["scales_offset"]})
