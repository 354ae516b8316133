"""Q4_K, Q5_K and Q2_K (the "scale + min" K-quants): layout against the ``gguf`` package's
decoder, bytes against the NumPy port of ggml's Q4_K quantizer (exact: same float32 operations in
the same order), awkward inputs, importance weights and thread-count invariance, at every SIMD
level."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from conftest import weight_like

import quantpress as qp
from quantpress import _reference as ref

TYPES = ["Q4_K", "Q5_K", "Q2_K"]
BYTES = {"Q4_K": 144, "Q5_K": 176, "Q2_K": 84}
# Worst |x - y| relative to a super-block's largest |x| on smooth random data (one grid step).
STEP = {"Q4_K": 0.1, "Q5_K": 0.06, "Q2_K": 0.5}


def gguf_decode(raw: np.ndarray, t: str) -> np.ndarray:
    with np.errstate(all="ignore"):  # junk headers hold float16 infinities and NaNs
        return gguf.quants.dequantize(np.asarray(raw, np.uint8).reshape(-1), gguf.GGMLQuantizationType[t]).reshape(-1)


@pytest.mark.parametrize("t", TYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_blocks_decode_like_gguf(simd: str, rng: np.random.Generator, t: str, weighted: bool) -> None:
    w = weight_like(rng, (8, 512))
    imatrix = rng.random(512).astype(np.float32) + np.float32(0.1) if weighted else None
    raw = qp.gguf_quantize(w, t, weights=imatrix)
    assert raw.shape == (8, 2 * BYTES[t])
    ours = qp.gguf_dequantize(raw, t, w.shape)
    assert np.array_equal(ours.reshape(-1), gguf_decode(raw, t))
    span = np.abs(w.reshape(-1, 256)).max(axis=1, keepdims=True)
    assert np.all(np.abs(ours.reshape(-1, 256) - w.reshape(-1, 256)) <= STEP[t] * span)


@pytest.mark.parametrize("t", TYPES)
def test_junk_bytes_decode_like_gguf(simd: str, rng: np.random.Generator, t: str) -> None:
    raw = rng.integers(0, 256, size=16 * BYTES[t], dtype=np.uint8)
    ours = qp.gguf_dequantize(raw, t, (16, 256)).reshape(-1)
    assert np.array_equal(ours, gguf_decode(raw, t), equal_nan=True)


@pytest.mark.parametrize("weighted", [False, True])
def test_q4_k_matches_numpy_reference(simd: str, rng: np.random.Generator, weighted: bool) -> None:
    w = weight_like(rng, (6, 512))
    w[1, :256] = 0
    w[2, 256:] = np.float32(-0.5)
    w[3, 7] = np.float32(300)
    importance = rng.random(w.shape).astype(np.float32) if weighted else None
    want = ref.q4_k_quantize(w, importance)
    assert np.array_equal(qp.gguf_quantize(w, "Q4_K", weights=importance).reshape(-1), want)


def awkward(rng: np.random.Generator) -> dict[str, np.ndarray]:
    r = rng.standard_normal(512).astype(np.float32)
    outlier = r.copy()
    outlier[100] = np.float32(1000)
    return {
        "zeros": np.zeros(512, np.float32),
        "constant": np.full(512, np.float32(0.3)),
        "negative constant": np.full(512, np.float32(-2)),
        "outlier": outlier,
        "positive": np.abs(r) + np.float32(5),
        "small": r * np.float32(1e-3),
        "subnormal": r * np.float32(1e-40),
    }


@pytest.mark.parametrize("t", TYPES)
def test_awkward_inputs_give_finite_sane_values(simd: str, rng: np.random.Generator, t: str) -> None:
    for name, x in awkward(rng).items():
        y = qp.gguf_dequantize(qp.gguf_quantize(x, t), t, x.shape)
        assert np.all(np.isfinite(y)), name
        err = np.abs(y - x).reshape(2, 256)
        span = np.abs(x).reshape(2, 256).max(axis=1, keepdims=True)
        if name == "outlier":  # other sub-blocks' mins sit on a grid of span/63 (span/15 for Q2_K)
            assert err[0, 100] <= STEP[t] * span[0, 0] and np.all(err[1] <= STEP[t] * span[1]), name
            assert np.all(err[0] <= span[0] / 15), name
        elif name == "subnormal":  # scales below float16's range round to zero, as in ggml
            assert np.all(y == 0), name
        else:
            assert np.all(err <= STEP[t] * span), name


@pytest.mark.parametrize("t", TYPES)
def test_importance_weights_lower_weighted_error(simd: str, rng: np.random.Generator, t: str) -> None:
    x = rng.standard_normal((16, 512)).astype(np.float32)
    # A few columns matter a lot: per-column weights (an imatrix) and the same as per-value.
    col = np.full(512, np.float32(0.01))
    col[rng.choice(512, 40, replace=False)] = np.float32(50)
    per_value = np.broadcast_to(col, x.shape).copy()

    def weighted_error(raw: np.ndarray) -> float:
        return float((per_value * (qp.gguf_dequantize(raw, t, x.shape) - x) ** 2).sum())

    plain = weighted_error(qp.gguf_quantize(x, t))
    assert weighted_error(qp.gguf_quantize(x, t, weights=col)) < 0.8 * plain
    assert np.array_equal(qp.gguf_quantize(x, t, weights=col), qp.gguf_quantize(x, t, weights=per_value))


@pytest.mark.parametrize("t", TYPES)
def test_bytes_do_not_depend_on_thread_count(simd: str, rng: np.random.Generator, t: str) -> None:
    x = weight_like(rng, (64, 4096))  # four parallel chunks
    imatrix = rng.random(4096).astype(np.float32)
    before = qp.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            qp.set_num_threads(n)
            results.append((qp.gguf_quantize(x, t), qp.gguf_quantize(x, t, weights=imatrix)))
    finally:
        qp.set_num_threads(before)
    assert np.array_equal(results[0][0], results[1][0])
    assert np.array_equal(results[0][1], results[1][1])
