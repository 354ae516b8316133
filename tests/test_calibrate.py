"""Activation calibration (qp.Observer) against ONNX Runtime's calibrators.

Tolerance: none. For min-max, percentile and entropy the histograms, thresholds (rmin, rmax),
scales and zero points are compared bit for bit with ORT's, because quantpress performs the same
float32 operations (ORT's float32 KL values are re-computed exactly for the candidates that can
win). The MSE method is ours: checked against a brute-force numeric integration of its error model
and against raw-data quantization error (``quantpress._reference``).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnxruntime.quantization.calibrate import HistogramCollector, MinMaxCalibrater
from onnxruntime.quantization.quant_utils import compute_scale_zp as ort_compute_scale_zp
from onnxruntime.quantization.quant_utils import get_qmin_qmax_for_qType

import quantpress as qp
from quantpress import _calib_search, _reference
from quantpress._core import QuantpressError

F32 = np.float32
QTYPE = {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8}


def _batches(kind: str, rng: np.random.Generator) -> list[np.ndarray]:
    if kind == "gauss":
        return [rng.standard_normal((8, 512)).astype(F32) for _ in range(3)]
    if kind == "student_t":
        return [rng.standard_t(3, (4, 1024)).astype(F32) for _ in range(3)]
    if kind == "relu":
        return [np.maximum(rng.standard_normal((16, 256)), 0).astype(F32) * F32(s) for s in (1, 2)]
    if kind == "growing":  # ranges grow batch after batch: the histogram is widened twice
        return [rng.standard_normal(3000).astype(F32) * F32(s) for s in (1.0, 0.5, 1.5, 2.5)]
    if kind == "zeros":
        return [np.zeros((3, 5), F32), np.zeros(7, F32)]
    if kind == "zeros_then_gauss":
        return [np.zeros(100, F32), rng.standard_normal(2000).astype(F32)]
    if kind == "constant":
        return [np.full((2, 50), 3.0, F32)]
    raise AssertionError(kind)


KINDS = ["gauss", "student_t", "relu", "growing", "zeros", "zeros_then_gauss", "constant"]


def ort_histogram(method: str, batches: list[np.ndarray], symmetric: bool = False, num_bins: int = 512,
                  num_quantized_bins: int = 128, percentile: float = 99.9) -> tuple[tuple, tuple]:
    """ORT's HistogramCollector fed one batch per collect() (what one collect_data call does)."""
    col = HistogramCollector(method, symmetric, num_bins, num_quantized_bins, percentile, "same")
    with contextlib.redirect_stdout(io.StringIO()):
        for b in batches:
            col.collect({"x": [b]})
        result = col.compute_collection_result()["x"]
    return col.histogram_dict["x"], result[:2]


def ort_params(rmin, rmax, dtype: str, symmetric: bool, reduce_range: bool = False):
    qmin, qmax = get_qmin_qmax_for_qType(QTYPE[dtype], reduce_range=reduce_range, symmetric=symmetric)
    zp, scale = ort_compute_scale_zp(np.asarray(rmin), np.asarray(rmax), qmin, qmax, symmetric)
    return scale, zp


def assert_same(ours, theirs) -> None:
    """Same values, bit for bit, and the same dtype."""
    ours, theirs = np.atleast_1d(ours), np.atleast_1d(theirs)
    assert ours.dtype == theirs.dtype, (ours.dtype, theirs.dtype)
    assert np.array_equal(ours.view(np.uint8), theirs.view(np.uint8)), (ours, theirs)


def observe(batches: list[np.ndarray], method: str, **kw) -> qp.Observer:
    obs = qp.Observer(method, **kw)
    for b in batches:
        obs.update(b)
    return obs


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method,symmetric", [("entropy", False), ("percentile", False), ("percentile", True)])
def test_histogram_methods_match_ort(kind, method, symmetric, rng):
    batches = _batches(kind, rng)
    (hist, edges, *_), (rmin, rmax) = ort_histogram(method, batches, symmetric)
    obs = observe(batches, method, symmetric=symmetric, num_bins=512, percentile=99.9)
    ours_hist, ours_edges = obs.histogram
    assert np.array_equal(ours_hist, hist) and ours_hist.dtype == np.int64
    assert kind != "growing" or hist.size > 512
    assert_same(ours_edges, edges)
    p = obs.compute()
    assert_same(p.rmin, rmin)
    assert_same(p.rmax, rmax)
    for dtype in ("int8", "uint8"):
        p = qp.Observer(method, dtype, symmetric, num_bins=512, percentile=99.9)
        for b in batches:
            p.update(b)
        params = p.compute()
        scale, zp = ort_params(rmin, rmax, dtype, symmetric)
        assert_same(params.scale, scale)
        assert_same(params.zero_point, zp)


def test_entropy_matches_ort_at_2048_bins_with_growing_ranges(rng):
    batches = [rng.standard_t(4, 5000).astype(F32) * F32(s) for s in (1.0, 1.15)]
    batches[1][0] = 1.2 * np.abs(batches[0]).max()
    (hist, *_), (rmin, rmax) = ort_histogram("entropy", batches, num_bins=2048)
    p = observe(batches, "entropy", num_bins=2048).compute()
    assert hist.size > 2048  # widened by the second batch
    assert_same(p.rmin, rmin)
    assert_same(p.rmax, rmax)


def test_entropy_search_picks_ort_argmin_over_every_candidate(rng):
    """The two-stage search equals the plain argmin of ORT's KL over all candidates."""
    obs = observe([rng.standard_normal(4000).astype(F32)], "entropy", num_bins=256, num_quantized_bins=32)
    hist = obs.histogram[0]
    kl = [_calib_search.ort_kl(hist, i, 32) for i in range(16, 129)]
    i = 16 + int(np.argmin(kl))
    assert _calib_search.entropy_window(hist, 32) == (128 - i, min(128 + i + 1, 256))


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("symmetric,moving_average", [(False, False), (True, False), (False, True), (True, True)])
def test_minmax_matches_ort_calibrater(tmp_path, rng, symmetric, moving_average, per_channel):
    batches = [rng.standard_normal((2, 3, 5)).astype(F32) * F32(s) + F32(o)
               for s, o in ((1, 0), (3, 1), (0.5, -2), (2, 0.5))]
    cal = _ort_minmax_calibrater(tmp_path, symmetric, moving_average, per_channel)
    if per_channel and not moving_average:
        # ORT merges per-channel ranges of separate collect_data calls with Python's min() (it
        # fails on arrays), so all batches go through one call: element-wise min/max over them.
        cal.collect_data(_Reader(batches))
    else:
        for b in batches:
            cal.collect_data(_Reader([b]))
    rmin, rmax = cal.compute_data()["X"].range_value
    obs = observe(batches, "minmax", symmetric=symmetric, moving_average=moving_average,
                  averaging_constant=0.25, axis=1 if per_channel else None)
    p = obs.compute()
    assert_same(p.rmin, rmin if per_channel else rmin[0])
    assert_same(p.rmax, rmax if per_channel else rmax[0])
    for c in range(3 if per_channel else 1):
        scale, zp = ort_params(np.asarray(rmin)[c], np.asarray(rmax)[c], "int8", symmetric)
        assert_same(np.atleast_1d(p.scale)[c], scale)
        assert_same(np.atleast_1d(p.zero_point)[c], zp)


class _Reader:
    def __init__(self, batches: list[np.ndarray]) -> None:
        self.it = iter(batches)

    def get_next(self):
        return next(({"X": b} for b in self.it), None)


def _ort_minmax_calibrater(tmp_path: Path, symmetric: bool, moving_average: bool, per_channel: bool):
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 3, 5])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 3, 5])
    graph = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    cal = MinMaxCalibrater(path, augmented_model_path=str(tmp_path / "aug.onnx"), symmetric=symmetric,
                           moving_average=moving_average, averaging_constant=0.25, per_channel=per_channel)
    cal.augment_graph()
    cal.create_inference_session()
    return cal


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("reduce_range", [False, True])
def test_compute_scale_zp_matches_ort(dtype, symmetric, reduce_range, rng):
    ranges = [(0.0, 0.0), (-1.0, 3.0), (0.5, 2.0), (-7.0, -0.25), (-1e-39, 1e-39), (-3e38, 3e38),
              (-1.0, 1.0), *zip(-rng.exponential(size=20), rng.exponential(size=20))]
    for lo, hi in ranges:
        lo, hi = F32(lo), F32(hi)
        scale, zp = qp.compute_scale_zp(lo, hi, dtype, symmetric, reduce_range)
        ort_scale, ort_zp = ort_params(lo, hi, dtype, symmetric, reduce_range)
        assert_same(scale, ort_scale)
        assert_same(zp, ort_zp)


def test_per_channel_params_quantize_along_the_axis(rng):
    x = rng.standard_normal((4, 3, 6)).astype(F32) * np.array([1, 10, 100], F32)[:, None]
    p = observe([x], "minmax", dtype="uint8", axis=1).compute()
    assert p.scale.shape == (3,) and p.zero_point.dtype == np.uint8
    back = p.dequantize(p.quantize(x, axis=1), axis=1)
    assert np.all(np.abs(back - x) <= p.scale[:, None] / 2 * (1 + 1e-5))
    with pytest.raises(QuantpressError, match="channel axis"):
        p.quantize(x)


# --- MSE ---------------------------------------------------------------------------------------


def test_expected_error_model_matches_numeric_integration(rng):
    obs = observe([rng.standard_t(3, 4000).astype(F32)], "mse", num_bins=128)
    hist, edges = obs.histogram
    for lo, hi, dtype, sym in [(-2.0, 2.0, "int8", True), (-1.0, 5.0, "uint8", False), (-0.05, 0.04, "int8", False)]:
        scale, zp = qp.compute_scale_zp(lo, hi, dtype, sym)
        qmin, qmax = qp.qrange(dtype, sym)
        model = _calib_search.expected_sq_error(hist, edges, scale, zp, qmin, qmax)[0]
        numeric = _reference.histogram_sq_error_numeric(hist, edges, float(scale), int(zp), qmin, qmax)
        assert model == pytest.approx(numeric, rel=1e-4)  # midpoint rule with 4096 points per bin


@pytest.mark.parametrize("kind,dtype,symmetric", [
    ("student_t", "int8", True), ("student_t", "uint8", False), ("gauss", "int8", False), ("relu", "uint8", False),
])
def test_mse_beats_minmax_and_is_near_the_brute_force_optimum(kind, dtype, symmetric, rng):
    x = np.concatenate([b.ravel() for b in _batches(kind, rng)])
    obs = observe([x], "mse", dtype=dtype, symmetric=symmetric, num_bins=512)
    p = obs.compute()
    qmin, qmax = qp.qrange(dtype, symmetric)
    ours = _reference.raw_mse(x, float(p.scale), int(p.zero_point), qmin, qmax)
    mm = observe([x], "minmax", dtype=dtype, symmetric=symmetric).compute()
    assert ours < _reference.raw_mse(x, float(mm.scale), int(mm.zero_point), qmin, qmax)
    # brute force on the raw values over a 4x finer grid of windows [-t, t] clipped to the data
    edges = obs.histogram[1].astype(np.float64)
    width = edges[1] - edges[0]
    t = np.arange(1, 4 * edges.size // 2 + 1) * width / 4
    cand = np.stack([np.maximum(-t, x.min()), np.minimum(t, x.max())], axis=1).astype(F32)
    best, errs = _reference.brute_force_mse_range(x, cand, dtype, symmetric)
    assert ours <= errs[best] * 1.02
    t_ours = max(-float(p.rmin), float(p.rmax)) if symmetric else float(p.rmax) - float(p.rmin)
    t_best = max(-cand[best, 0], cand[best, 1]) if symmetric else cand[best, 1] - cand[best, 0]
    assert abs(t_ours - t_best) <= 4 * width


def test_mse_clips_a_gaussian_near_the_known_optimum(rng):
    """For N(0, 1) and 255 symmetric levels the clipping threshold minimising the expected squared
    error is about 3.9 sigma (rounding s^2/12 against the tail beyond t; cf. Banner et al., ACIQ),
    well inside the ~5 sigma maximum of 400k samples."""
    x = rng.standard_normal(400_000).astype(F32)
    p = observe([x], "mse", symmetric=True).compute()
    assert 3.75 < float(p.rmax) < 4.1 < float(np.abs(x).max())


# --- behaviour and errors ------------------------------------------------------------------------


def test_histogram_memory_does_not_grow_with_batches(rng):
    obs = qp.Observer("entropy", num_bins=256)
    obs.update(np.array([-4.0, 4.0], F32))
    for _ in range(20):
        obs.update(rng.uniform(-4, 4, 1000).astype(F32))
    hist, edges = obs.histogram
    assert hist.size == 256 and edges.size == 257 and hist.sum() == 20002


def test_update_accepts_other_float_dtypes(rng):
    x = rng.standard_normal(1000)
    a = observe([x], "percentile").compute()
    b = observe([x.astype(F32)], "percentile").compute()
    assert_same(a.rmax, b.rmax)
    assert observe([x.astype(np.float16)], "minmax").compute().rmax == F32(x.astype(np.float16).max())


def test_compute_can_be_called_between_updates(rng):
    obs = qp.Observer("minmax")
    obs.update(np.array([1.0, 2.0], F32))
    first = obs.compute()
    obs.update(np.array([-5.0], F32))
    assert float(first.rmin) == 1.0 and float(obs.compute().rmin) == -5.0


@pytest.mark.parametrize("method", list(qp.calibrate.METHODS))
@pytest.mark.parametrize("bad", [np.array([1.0, np.nan], F32), np.array([np.inf, 0.0]), np.array([0.0, -np.inf], F32)])
def test_non_finite_batches_are_rejected(method, bad):
    obs = qp.Observer(method)
    with pytest.raises(QuantpressError, match="NaN or Inf"):
        obs.update(bad)


@pytest.mark.parametrize("method", list(qp.calibrate.METHODS))
def test_bad_batches_and_early_compute_are_rejected(method):
    obs = qp.Observer(method)
    with pytest.raises(QuantpressError, match="update"):
        obs.compute()
    with pytest.raises(QuantpressError, match="empty"):
        obs.update(np.zeros((0, 3), F32))
    with pytest.raises(QuantpressError, match="float"):
        obs.update(np.arange(4))
    with pytest.raises(QuantpressError, match="update"):
        obs.compute()  # failed updates leave no state


@pytest.mark.parametrize("kwargs,match", [
    ({"method": "kl"}, "method"),
    ({"dtype": "int4"}, "dtype"),
    ({"num_bins": 0}, "num_bins"),
    ({"method": "entropy", "num_bins": 64, "num_quantized_bins": 128}, "exceeds"),
    ({"percentile": 100.5}, "percentile"),
    ({"averaging_constant": -0.1}, "averaging_constant"),
    ({"method": "entropy", "axis": 0}, "minmax"),
])
def test_bad_arguments_are_rejected(kwargs, match):
    with pytest.raises(QuantpressError, match=match):
        qp.Observer(**kwargs)


def test_a_histogram_is_not_widened_without_bound():
    obs = qp.Observer("mse")
    obs.update(np.array([-1e-6, 1e-6], F32))
    obs.update(np.array([1e-3], F32))  # 1000x wider: about 2M bins, allowed (and scored coarsely)
    with pytest.raises(QuantpressError, match="too wide"):
        obs.update(np.array([1e30], F32))
    assert obs.histogram[0].size < qp.calibrate.MAX_BINS  # the refused batch changed nothing
    p = obs.compute()  # the mass sits at the ends: (almost) no clipping
    assert p.rmin == F32(-1e-6) and 0.99e-3 < p.rmax <= F32(1e-3)


def test_per_channel_batches_must_agree():
    obs = qp.Observer("minmax", axis=1)
    obs.update(np.zeros((2, 3), F32))
    with pytest.raises(QuantpressError, match="channels"):
        obs.update(np.zeros((2, 4), F32))
    with pytest.raises(QuantpressError, match="out of range"):
        obs.update(np.zeros(3, F32))
