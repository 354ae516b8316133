"""Distillation losses, feature losses and the VQ-VAE layer (quantpress.distill).

Oracles: central finite differences in float64 for every gradient (step 1e-6; the truncation
error is O(h^2 * third derivative) and the rounding error O(eps * |loss| / h), so agreement to
~1e-6 absolute on losses of order 1-10 is what float64 allows), the closed form of the soft
gradient at alpha=1, and the per-row float64 oracle ``_reference.distillation_naive`` (``fsum``
log-sum-exp), which must agree to 1e-9 relative.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import quantpress as qp
from quantpress import _reference as ref

H = 1e-6


def _fd(f, x, h=H):
    """Central finite differences of the scalar function ``f`` at ``x`` (float64)."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = (f(xp) - f(xm)) / (2 * h)
    return g


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


batch_shapes = st.sampled_from([(), (1,), (3,), (2, 3)])


@st.composite
def logit_case(draw, scale_max=10.0):
    shape = draw(batch_shapes)
    c = draw(st.integers(2, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.floats(0.1, scale_max))
    rng = np.random.default_rng(seed)
    s = rng.standard_normal(shape + (c,)) * scale
    t = rng.standard_normal(shape + (c,)) * scale
    y = rng.integers(0, c, size=shape)
    return s, t, y


@settings(max_examples=40, deadline=None)
@given(case=logit_case(), temperature=st.floats(0.5, 8.0), alpha=st.floats(0.0, 1.0),
       reduction=st.sampled_from(["mean", "sum"]))
def test_distillation_gradient_matches_finite_differences(case, temperature, alpha, reduction):
    s, t, y = case
    loss, grad = qp.distillation_loss(s, t, y, temperature, alpha, reduction)
    f = lambda x: qp.distillation_loss(x, t, y, temperature, alpha, reduction)[0]  # noqa: E731
    np.testing.assert_allclose(grad, _fd(f, s), rtol=1e-5, atol=1e-6)
    per = ref.distillation_naive(s, t, y, temperature, alpha)
    want = per.sum() if reduction == "sum" else per.mean()
    np.testing.assert_allclose(loss, want, rtol=1e-9, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(case=logit_case(scale_max=1e4), temperature=st.floats(0.05, 20.0), alpha=st.floats(0.0, 1.0),
       shift=st.floats(-1e4, 1e4))
def test_huge_logits_stay_finite_and_shift_invariant(case, temperature, alpha, shift):
    s, t, y = case
    s, t = s * 1e4 / max(np.abs(s).max(), 1e-300), t  # the largest student logit is 1e4 in size
    loss, grad = qp.distillation_loss(s, t, y, temperature, alpha, reduction="none")
    assert np.isfinite(loss).all() and np.isfinite(grad).all() and (loss >= -1e-9).all()
    np.testing.assert_allclose(loss, ref.distillation_naive(s, t, y, temperature, alpha), rtol=1e-9, atol=1e-9)
    shifted, gshift = qp.distillation_loss(s + shift, t - shift, y, temperature, alpha, reduction="none")
    np.testing.assert_allclose(shifted, loss, rtol=1e-9, atol=1e-6 * (1 + abs(shift)) * temperature)
    np.testing.assert_allclose(gshift, grad, atol=1e-9 * (1 + abs(shift)))


@settings(max_examples=30, deadline=None)
@given(case=logit_case(scale_max=50.0), temperature=st.floats(0.5, 8.0), with_labels=st.booleans())
def test_alpha_one_is_the_closed_form(case, temperature, with_labels):
    s, t, y = case
    labels = y if with_labels else None  # without labels alpha is 1 by definition
    _, grad = qp.distillation_loss(s, t, labels, temperature, alpha=1.0, reduction="sum")
    want = (_softmax(s / temperature) - _softmax(t / temperature)) * temperature
    np.testing.assert_allclose(grad, want, rtol=1e-12, atol=1e-14)
    _, gmean = qp.distillation_loss(s, t, labels, temperature, alpha=1.0)
    np.testing.assert_allclose(gmean, want / max(s[..., 0].size, 1), rtol=1e-12, atol=1e-14)


@settings(max_examples=20, deadline=None)
@given(case=logit_case(), temperature=st.floats(0.5, 8.0))
def test_alpha_zero_and_no_teacher_are_hard_cross_entropy(case, temperature):
    s, t, y = case
    ce, gce = qp.cross_entropy(s, y)
    for loss, grad in (qp.distillation_loss(s, t, y, temperature, alpha=0.0),
                       qp.distillation_loss(s, None, y, temperature, alpha=0.7)):
        assert loss == pytest.approx(ce, rel=1e-12)
        np.testing.assert_allclose(grad, gce, rtol=1e-12, atol=1e-15)
    f = lambda x: qp.cross_entropy(x, y)[0]  # noqa: E731
    np.testing.assert_allclose(gce, _fd(f, s), rtol=1e-5, atol=1e-6)
    assert ce == pytest.approx(-np.mean(np.log(np.take_along_axis(_softmax(s), y[..., None], -1))), rel=1e-10)


def test_reduction_modes():
    rng = np.random.default_rng(1)
    s, t, y = rng.standard_normal((4, 3, 5)), rng.standard_normal((4, 3, 5)), rng.integers(0, 5, (4, 3))
    per, gnone = qp.distillation_loss(s, t, y, reduction="none")
    total, gsum = qp.distillation_loss(s, t, y, reduction="sum")
    mean, gmean = qp.distillation_loss(s, t, y, reduction="mean")
    assert per.shape == (4, 3) and per.dtype == np.float64
    assert isinstance(total, float) and isinstance(mean, float)
    assert total == pytest.approx(per.sum(), rel=1e-12) and mean == pytest.approx(per.mean(), rel=1e-12)
    np.testing.assert_allclose(gnone, gsum, rtol=1e-15)
    np.testing.assert_allclose(gmean, gsum / 12, rtol=1e-12)
    # each row of the "none" gradient is that row's own gradient
    one, gone = qp.distillation_loss(s[2, 1], t[2, 1], y[2, 1], reduction="sum")
    assert one == pytest.approx(per[2, 1], rel=1e-12)
    np.testing.assert_allclose(gnone[2, 1], gone, rtol=1e-12)


def test_gradient_dtype_follows_the_student():
    rng = np.random.default_rng(2)
    s, t, y = rng.standard_normal((8, 10)), rng.standard_normal((8, 10)), rng.integers(0, 10, 8)
    l64, g64 = qp.distillation_loss(s, t, y)
    l32, g32 = qp.distillation_loss(s.astype(np.float32), t.astype(np.float32), y)
    assert g64.dtype == np.float64 and g32.dtype == np.float32
    np.testing.assert_allclose(g32, g64, rtol=1e-5, atol=1e-7)
    assert l32 == pytest.approx(l64, rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(case=logit_case(), temperature=st.floats(0.5, 8.0))
def test_soft_cross_entropy_gradient_and_relation_to_kl(case, temperature):
    s, t, y = case
    p = _softmax(t / temperature)
    loss, grad = qp.soft_cross_entropy(s, p, temperature, reduction="sum")
    f = lambda x: qp.soft_cross_entropy(x, p, temperature, reduction="sum")[0]  # noqa: E731
    np.testing.assert_allclose(grad, _fd(f, s), rtol=1e-5, atol=1e-6)
    # T^2 KL(p || q) = T^2 (CE(p, q) - H(p))
    entropy = -(p * np.log(np.maximum(p, 1e-300))).sum()
    kd, gkd = qp.distillation_loss(s, t, None, temperature, reduction="sum")
    assert kd == pytest.approx(temperature**2 * (loss - entropy), rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(gkd, temperature**2 * grad, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- feature losses

@settings(max_examples=30, deadline=None)
@given(shape=batch_shapes, ds=st.integers(1, 5), dt=st.integers(1, 5), kind=st.sampled_from(["mse", "cosine"]),
       project=st.booleans(), reduction=st.sampled_from(["mean", "sum"]), seed=st.integers(0, 2**32 - 1))
def test_feature_loss_gradients_match_finite_differences(shape, ds, dt, kind, project, reduction, seed):
    rng = np.random.default_rng(seed)
    dt = dt if project else ds
    x, t = rng.standard_normal(shape + (ds,)), rng.standard_normal(shape + (dt,))
    p = rng.standard_normal((ds, dt)) if project else None
    loss, gx, gp = qp.feature_loss(x, t, kind, p, reduction)
    f = lambda xx: qp.feature_loss(xx, t, kind, p, reduction)[0]  # noqa: E731
    np.testing.assert_allclose(gx, _fd(f, x), rtol=1e-5, atol=1e-6)
    if project:
        fp = lambda pp: qp.feature_loss(x, t, kind, pp, reduction)[0]  # noqa: E731
        np.testing.assert_allclose(gp, _fd(fp, p), rtol=1e-5, atol=1e-6)
    else:
        assert gp is None
    h = x @ p if project else x
    if kind == "mse":
        per = ((h - t) ** 2).mean(axis=-1)
    else:
        per = 1 - (h * t).sum(-1) / (np.linalg.norm(h, axis=-1) * np.linalg.norm(t, axis=-1))
    assert loss == pytest.approx(per.sum() if reduction == "sum" else per.mean(), rel=1e-9, abs=1e-12)


def test_cosine_feature_loss_of_parallel_and_zero_vectors():
    x = np.array([[1.0, 2.0, 2.0], [0.0, 0.0, 0.0]])
    loss, g, _ = qp.feature_loss(x, np.array([[2.0, 4.0, 4.0], [1.0, 0.0, 0.0]]), kind="cosine", reduction="none")
    np.testing.assert_allclose(loss, [0.0, 1.0], atol=1e-15)
    np.testing.assert_allclose(g[0], 0.0, atol=1e-15)  # minimum: zero gradient
    assert np.isfinite(g).all()


# ----------------------------------------------------------------------------- VQ layer

def _vq_setup(seed, n=40, k=6, d=3, batch=None):
    rng = np.random.default_rng(seed)
    cb = rng.standard_normal((k, d)) * 3
    z = cb[rng.integers(0, k, n)] + 0.3 * rng.standard_normal((n, d))
    return (z if batch is None else z.reshape(batch + (d,))), cb


@pytest.mark.parametrize("batch", [None, (5, 8)])
def test_vq_forward_codes_values_and_gradients(batch):
    z, cb = _vq_setup(3, batch=batch)
    beta = 0.3
    r = qp.vq_forward(z, cb, beta)
    flat = z.reshape(-1, 3)
    assert np.array_equal(r.codes.reshape(-1), qp.assign(flat.astype(np.float32), cb.astype(np.float32)))
    assert r.codes.shape == z.shape[:-1] and r.quantized.shape == z.shape
    np.testing.assert_array_equal(r.quantized, cb[r.codes])
    mse = ((z - cb[r.codes]) ** 2).mean()
    assert r.codebook_loss == pytest.approx(mse, rel=1e-12) and r.commitment_loss == pytest.approx(mse, rel=1e-12)
    assert r.loss == pytest.approx((1 + beta) * mse, rel=1e-12)

    # finite differences of the defined loss, codes re-assigned at every evaluation:
    # the codebook term moves the codewords, the commitment term moves z.
    def codebook_term(c):
        return ((z - qp.vq_forward(z, c, beta).quantized) ** 2).mean()

    def commitment_term(zz):
        return beta * ((zz - qp.vq_forward(zz, cb, beta).quantized) ** 2).mean()

    np.testing.assert_allclose(r.grad_codebook, _fd(codebook_term, cb), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(r.grad_z, _fd(commitment_term, z), rtol=1e-5, atol=1e-8)
    unused = np.setdiff1d(np.arange(len(cb)), r.codes)
    assert (r.grad_codebook[unused] == 0).all()
    # straight through: the decoder's gradient reaches z unchanged, plus the commitment term
    up = np.random.default_rng(4).standard_normal(z.shape)
    np.testing.assert_allclose(r.backward(up), up + r.grad_z, rtol=0, atol=0)


def test_vq_forward_dtypes():
    z, cb = _vq_setup(5)
    r = qp.vq_forward(z.astype(np.float32), cb)
    assert r.quantized.dtype == np.float32 and r.grad_z.dtype == np.float32 and r.grad_codebook.dtype == np.float64
    assert r.codes.dtype == np.int64


def test_vq_layer_trains_with_ema_codebook():
    """A linear encoder, the VQ layer (EMA codebook, commitment loss) and an identity decoder
    learn to reconstruct clustered 2-D data: the reconstruction error must fall a hundredfold."""
    rng = np.random.default_rng(0)
    centers = np.array([[4.0, 0.0], [0.0, 4.0], [-4.0, -4.0], [4.0, 4.0]])
    x = centers[rng.integers(0, 4, 512)] + 0.05 * rng.standard_normal((512, 2))
    w = np.array([[0.5, 0.3], [-0.2, 0.6]])
    book = qp.OnlineCodebook(rng.standard_normal((8, 2)).astype(np.float32) * 3)
    errors = []
    for _ in range(300):
        z = x @ w
        r = qp.vq_forward(z, book.codebook, beta=0.25)
        recon = ((r.quantized - x) ** 2).mean()
        errors.append(recon)
        gz = r.backward(2 * (r.quantized - x) / x.size)
        w -= 0.02 * x.T @ gz
        book.update_ema(z, decay=0.9)
    assert np.isfinite(errors).all()
    assert errors[-1] < errors[0] / 100, (errors[0], errors[-1])


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("call, match", [
    (lambda: qp.distillation_loss(np.zeros((2, 3)), np.zeros((2, 4))), "shape"),
    (lambda: qp.distillation_loss(np.zeros((2, 3)), np.zeros((3, 3))), "shape"),
    (lambda: qp.distillation_loss(np.zeros((2, 3)), np.zeros((2, 3)), np.array([0, 3])), r"\[0, 3\)"),
    (lambda: qp.distillation_loss(np.zeros((2, 3)), np.zeros((2, 3)), np.array([-1, 0])), r"\[0, 3\)"),
    (lambda: qp.distillation_loss(np.zeros((2, 3)), np.zeros((2, 3)), np.array([0, 1, 2])), "batch shape"),
    (lambda: qp.distillation_loss(np.zeros((2, 3)), np.zeros((2, 3)), np.array([0.0, 1.0])), "integer"),
    (lambda: qp.distillation_loss(np.array([[np.nan, 0.0]]), np.zeros((1, 2))), "NaN"),
    (lambda: qp.distillation_loss(np.zeros((1, 2)), np.array([[np.inf, 0.0]])), "NaN or infinity"),
    (lambda: qp.distillation_loss(np.zeros((1, 2)), np.zeros((1, 2)), temperature=0.0), "temperature"),
    (lambda: qp.distillation_loss(np.zeros((1, 2)), np.zeros((1, 2)), temperature=np.nan), "temperature"),
    (lambda: qp.distillation_loss(np.zeros((1, 2)), np.zeros((1, 2)), np.array([0]), alpha=1.5), "alpha"),
    (lambda: qp.distillation_loss(np.zeros((1, 2)), np.zeros((1, 2)), reduction="avg"), "reduction"),
    (lambda: qp.distillation_loss(np.zeros((1, 2))), "teacher_logits, labels"),
    (lambda: qp.distillation_loss(np.zeros((1, 2), np.int64), np.zeros((1, 2))), "float"),
    (lambda: qp.distillation_loss(np.zeros((0, 2)), np.zeros((0, 2))), "empty"),
    (lambda: qp.distillation_loss(np.float64(1.0), np.float64(1.0)), "dimension"),
    (lambda: qp.cross_entropy(np.zeros((2, 3)), np.array([5, 0])), r"\[0, 3\)"),
    (lambda: qp.soft_cross_entropy(np.zeros((1, 2)), np.array([[0.7, 0.7]])), "probabilities"),
    (lambda: qp.soft_cross_entropy(np.zeros((1, 2)), np.array([[1.5, -0.5]])), "probabilities"),
    (lambda: qp.soft_cross_entropy(np.zeros((1, 2)), np.array([[1.0, 0.0, 0.0]])), "shape"),
    (lambda: qp.feature_loss(np.zeros((2, 3)), np.zeros((2, 4))), "shape"),
    (lambda: qp.feature_loss(np.zeros((2, 3)), np.zeros((3, 3))), "batch shape"),
    (lambda: qp.feature_loss(np.zeros((2, 3)), np.zeros((2, 4)), projection=np.zeros((4, 3))), "projection"),
    (lambda: qp.feature_loss(np.zeros((2, 3)), np.zeros((2, 3)), kind="l1"), "kind"),
    (lambda: qp.feature_loss(np.zeros((2, 3)), np.full((2, 3), np.inf)), "NaN or infinity"),
    (lambda: qp.vq_forward(np.zeros((2, 3)), np.zeros((4, 2))), "codewords have 2"),
    (lambda: qp.vq_forward(np.zeros((2, 3)), np.zeros(3)), "2-D"),
    (lambda: qp.vq_forward(np.array([[np.nan, 0.0]]), np.zeros((4, 2))), "NaN"),
    (lambda: qp.vq_forward(np.zeros((2, 2)), np.zeros((4, 2)), beta=-1.0), "beta"),
    (lambda: qp.vq_forward(np.full((2, 2), 1e39), np.zeros((4, 2))), "float32"),
    (lambda: qp.vq_forward(np.zeros((2, 2)), np.zeros((4, 2))).backward(np.zeros((3, 2))), "shape"),
])
def test_bad_input_is_a_quantpress_error(call, match):
    with pytest.raises(qp.QuantpressError, match=match):
        call()
    assert issubclass(qp.QuantpressError, ValueError)
