"""Q6_K, Q3_K, IQ4_NL and IQ4_XS (ggml's symmetric / non-uniform K-quant family).

Bytes are checked against the NumPy ports in ``quantpress._reference`` exactly (Q6_K, IQ4_NL:
both sum in ggml's sequential order in float32, so there is no tolerance), and every type's
bytes decode with the ``gguf`` package to exactly what ``qp.gguf_dequantize`` gives. Equality
with ggml's C bytes themselves is checked by the benchmark bridge (benches/_ggml.py), which
needs a ggml build and so is not part of this suite.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest

import quantpress as qp
from quantpress import _reference as ref

from conftest import weight_like

TYPES = ["Q6_K", "Q3_K", "IQ4_NL", "IQ4_XS"]
BLOCK_BYTES = {"Q6_K": 210, "Q3_K": 110, "IQ4_NL": 18, "IQ4_XS": 136}
BLOCK = {"Q6_K": 256, "Q3_K": 256, "IQ4_NL": 32, "IQ4_XS": 256}
# Relative RMSE (to the data's RMS) that each type stays under on Gaussian data.
REL_RMSE = {"Q6_K": 0.02, "Q3_K": 0.2, "IQ4_NL": 0.1, "IQ4_XS": 0.1}


def _rel_rmse(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((x - y) ** 2)) / np.sqrt(np.mean(x**2)))


@pytest.mark.parametrize("t", TYPES)
def test_bytes_decode_like_gguf(simd: str, rng: np.random.Generator, t: str) -> None:
    w = weight_like(rng, (6, 512))
    raw = qp.gguf_quantize(w, t)
    assert raw.shape == (6, 512 // BLOCK[t] * BLOCK_BYTES[t])
    ours = qp.gguf_dequantize(raw, t, w.shape)
    theirs = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[t])
    assert np.array_equal(ours, theirs)
    assert _rel_rmse(w, ours) < 2 * REL_RMSE[t]


@pytest.mark.parametrize("t", TYPES)
def test_dequantize_junk_bytes_like_gguf(simd: str, rng: np.random.Generator, t: str) -> None:
    raw = rng.integers(0, 256, size=(4, 2 * BLOCK_BYTES[t] * (256 // BLOCK[t])), dtype=np.uint8)
    ours = qp.gguf_dequantize(raw, t, (4, 512))
    with np.errstate(invalid="ignore"):  # gguf multiplies NaN/inf float16 scales
        theirs = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[t])
    np.testing.assert_array_equal(ours, theirs)  # NaN == NaN here


@pytest.mark.parametrize("t", ["Q6_K", "IQ4_NL"])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_numpy_reference(simd: str, rng: np.random.Generator, t: str, weighted: bool) -> None:
    x = np.concatenate([weight_like(rng, (4, 512)), rng.standard_normal((4, 512)).astype(np.float32)])
    x[1, :256] = 0  # an all-zero super-block
    x[2, 7] = 300.0  # an outlier
    w = rng.random(x.shape).astype(np.float32) if weighted else None
    port = ref.gguf_quantize_q6_k if t == "Q6_K" else ref.gguf_quantize_iq4_nl
    assert np.array_equal(qp.gguf_quantize(x, t, weights=w).reshape(-1), port(x, w))


def _awkward(rng: np.random.Generator) -> dict[str, np.ndarray]:
    g = rng.standard_normal((2, 512)).astype(np.float32)
    outlier = g * np.float32(0.01)
    outlier[:, ::64] = 1000.0
    return {
        "zeros": np.zeros((2, 512), np.float32),
        "constant": np.full((2, 512), -0.75, np.float32),
        "outlier": outlier,
        "tiny": g * np.float32(1e-9),
        "subnormal": g * np.float32(1e-40),
        "large": g * np.float32(1000.0),
        "half zero": np.where(np.arange(512) % 256 < 128, 0, g).astype(np.float32),
    }


@pytest.mark.parametrize("t", TYPES)
def test_awkward_inputs_finite_with_sane_error(simd: str, rng: np.random.Generator, t: str) -> None:
    for name, x in _awkward(rng).items():
        y = qp.gguf_dequantize(qp.gguf_quantize(x, t), t, x.shape)
        assert np.isfinite(y).all(), name
        err = np.abs(x - y).max()
        # Values far below float16's range are flushed to zero (ggml does the same); otherwise
        # the worst error is a fraction of the largest magnitude.
        assert err <= np.abs(x).max() * (1.0 if name in ("tiny", "subnormal") else 0.55), (name, err)
        if name in ("zeros", "constant"):
            assert np.abs(x - y).max() <= np.abs(x).max() * 0.01, name


def _weighted_error(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    return float(np.sum(w * (x - y) ** 2))


@pytest.mark.parametrize("t", TYPES)
def test_importance_weights_lower_weighted_error(rng: np.random.Generator, t: str) -> None:
    x = weight_like(rng, (16, 512))
    col = (rng.random(512) ** 4 * 100 + 0.01).astype(np.float32)  # a few columns matter most
    per_value = (rng.random(x.shape) ** 4 * 100 + 0.01).astype(np.float32)
    plain = qp.gguf_dequantize(qp.gguf_quantize(x, t), t, x.shape)
    for w in (col, per_value):
        wb = np.broadcast_to(w, x.shape)
        y = qp.gguf_dequantize(qp.gguf_quantize(x, t, weights=w), t, x.shape)
        assert _weighted_error(x, y, wb) < 0.97 * _weighted_error(x, plain, wb)
    # Per-column weights and the same weights given per value are the same quantization.
    by_col = qp.gguf_quantize(x, t, weights=col)
    assert np.array_equal(by_col, qp.gguf_quantize(x, t, weights=np.broadcast_to(col, x.shape).copy()))


@pytest.mark.parametrize("t", TYPES)
def test_thread_count_does_not_change_bytes(rng: np.random.Generator, t: str) -> None:
    x = rng.standard_normal((8, 65536)).astype(np.float32)
    w = rng.random(65536).astype(np.float32)
    before = qp.get_num_threads()
    try:
        qp.set_num_threads(1)
        one = [qp.gguf_quantize(x, t), qp.gguf_quantize(x, t, weights=w)]
        qp.set_num_threads(2)
        two = [qp.gguf_quantize(x, t), qp.gguf_quantize(x, t, weights=w)]
    finally:
        qp.set_num_threads(before)
    assert all(np.array_equal(a, b) for a, b in zip(one, two))
