"""Knowledge distillation losses and a VQ-VAE quantization layer, with their gradients, for
NumPy training loops that recover accuracy after pruning / quantization.

Every loss returns ``(loss, gradient)`` so a hand-written training loop needs no autograd.
Conventions shared by all functions:

* Logits and features have the class / feature axis **last**; every leading axis is a batch axis
  (a 1-D input is a batch of one). ``B`` below is the number of batch elements.
* Computation is in **float64** with log-sum-exp (``log_softmax(x) = x - max - log sum exp(x -
  max)``), so logits of any magnitude (``±1e4`` and beyond) give finite losses and gradients.
  Gradients come back in the dtype of the input they belong to; losses as Python floats
  (``reduction="mean"|"sum"``) or float64 arrays of the batch shape (``"none"``).
* ``reduction``: ``"mean"`` averages the per-example losses over ``B``, ``"sum"`` adds them,
  ``"none"`` returns them; the gradient is that of the mean, the sum, and the sum respectively
  (so with ``"none"`` each row of the gradient is the gradient of that row's own loss).

Definitions (``s`` student logits, ``t`` teacher logits, ``T`` temperature, ``y`` label):

* ``cross_entropy``: ``-log_softmax(s)[y]``; gradient ``softmax(s) - onehot(y)``.
* ``soft_cross_entropy``: ``-sum_c p_c log_softmax(s / T)_c`` for target probabilities ``p``;
  gradient ``(softmax(s / T) - p) / T``.
* ``distillation_loss`` (Hinton et al. 2015): ``alpha * T**2 * KL(softmax(t/T) || softmax(s/T))
  + (1 - alpha) * cross_entropy(s, y)``; the soft term's gradient is
  ``alpha * T * (softmax(s/T) - softmax(t/T))``. The teacher gets no gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from ._arrays import BFLOAT16
from ._core import QuantpressError
from .vq import assign

_REDUCTIONS = ("mean", "sum", "none")
_FEATURE_KINDS = ("mse", "cosine")
_COS_EPS = 1e-8

Loss = Union[float, np.ndarray]


# ----------------------------------------------------------------------------- validation

def _float_array(a: Any, name: str) -> tuple[np.ndarray, np.dtype]:
    """``(float64 copy, original dtype)`` of a finite float array with at least one dimension."""
    arr = np.asarray(a)
    if arr.dtype.kind != "f" and arr.dtype != BFLOAT16:
        raise QuantpressError(f"{name} must be a float array, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise QuantpressError(f"{name} must have at least one dimension (the class / feature axis)")
    if arr.size == 0:
        raise QuantpressError(f"{name} is empty (shape {arr.shape})")
    out = arr.astype(np.float64)
    if not np.isfinite(out).all():
        raise QuantpressError(f"{name} holds NaN or infinity")
    return out, arr.dtype


def _same_shape(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape != b.shape:
        raise QuantpressError(f"{na} has shape {a.shape} but {nb} has shape {b.shape}")


def _reduction(reduction: Any) -> str:
    if reduction not in _REDUCTIONS:
        raise QuantpressError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return str(reduction)


def _positive(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise QuantpressError(f"{name} must be a number, got {v!r}")
    f = float(v)
    if not (np.isfinite(f) and f > 0):
        raise QuantpressError(f"{name} must be a positive finite number, got {v!r}")
    return f


def _alpha(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise QuantpressError(f"alpha must be a number, got {v!r}")
    f = float(v)
    if not 0.0 <= f <= 1.0:
        raise QuantpressError(f"alpha must lie in [0, 1], got {v!r}")
    return f


def _labels(labels: Any, batch_shape: tuple[int, ...], n_classes: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.dtype.kind not in "ui":
        raise QuantpressError(f"labels must be an integer array, got dtype {y.dtype}")
    if y.shape != batch_shape:
        raise QuantpressError(f"labels must have the batch shape {batch_shape}, got {y.shape}")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise QuantpressError(
            f"labels must lie in [0, {n_classes}), got values from {int(y.min())} to {int(y.max())}")
    return y.astype(np.int64)


# ----------------------------------------------------------------------------- numerics

def _log_softmax(x: np.ndarray) -> np.ndarray:
    """Stable float64 log-softmax over the last axis (finite for any finite input)."""
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _reduce(per_example: np.ndarray, reduction: str) -> tuple[Loss, float]:
    """``(reduced loss, gradient scale)``: the scale is ``1/B`` for "mean", else 1."""
    if reduction == "none":
        return per_example, 1.0
    if reduction == "sum":
        return float(per_example.sum()), 1.0
    return float(per_example.mean()), 1.0 / max(per_example.size, 1)


def _hard_ce(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-example ``-log_softmax(s)[y]`` and its gradient ``softmax(s) - onehot(y)``."""
    logp = _log_softmax(s)
    per = -np.take_along_axis(logp, y[..., None], axis=-1)[..., 0]
    grad = np.exp(logp)
    np.put_along_axis(grad, y[..., None], np.take_along_axis(grad, y[..., None], axis=-1) - 1.0, axis=-1)
    return per, grad


# ----------------------------------------------------------------------------- logit losses

def cross_entropy(logits: Any, labels: Any, reduction: str = "mean") -> tuple[Loss, np.ndarray]:
    """Hard-label cross-entropy ``-log_softmax(logits)[labels]`` and its gradient.

    Args:
        logits: float array ``(..., C)``, class axis last.
        labels: integer array of the batch shape ``logits.shape[:-1]``, values in ``[0, C)``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (see the module docs).

    Returns:
        ``(loss, grad)``: ``grad = (softmax(logits) - onehot(labels)) * scale`` in the dtype of
        ``logits``, ``scale = 1/B`` for ``"mean"``.

    Raises:
        QuantpressError: non-float, empty or non-finite logits; labels of the wrong shape,
            dtype or range; an unknown reduction.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> loss, grad = qp.cross_entropy(np.array([[0.0, 0.0], [0.0, 0.0]]), np.array([0, 1]))
        >>> round(loss, 6), grad.tolist()
        (0.693147, [[-0.25, 0.25], [0.25, -0.25]])
    """
    s, dtype = _float_array(logits, "logits")
    y = _labels(labels, s.shape[:-1], s.shape[-1])
    red = _reduction(reduction)
    per, grad = _hard_ce(s, y)
    loss, scale = _reduce(per, red)
    return loss, (grad * scale).astype(dtype)


def soft_cross_entropy(logits: Any, targets: Any, temperature: float = 1.0,
                       reduction: str = "mean") -> tuple[Loss, np.ndarray]:
    """Cross-entropy against target probabilities: ``-sum_c targets_c * log_softmax(logits/T)_c``.

    Args:
        logits: float array ``(..., C)``, class axis last.
        targets: probabilities of the same shape: non-negative, each row summing to 1 (within
            ``1e-3``), e.g. a teacher's softmax or smoothed labels.
        temperature: ``T > 0`` dividing the logits.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        ``(loss, grad)`` with ``grad = (softmax(logits/T) - targets) / T * scale`` in the dtype of
        ``logits``.

    Raises:
        QuantpressError: shapes that differ, NaN/Inf, targets that are not probabilities, a
            non-positive temperature, an unknown reduction.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> loss, grad = qp.soft_cross_entropy(np.array([2.0, 0.0]), np.array([0.5, 0.5]))
        >>> round(loss, 4), grad.round(4).tolist()
        (1.1269, [0.3808, -0.3808])
    """
    s, dtype = _float_array(logits, "logits")
    p, _ = _float_array(targets, "targets")
    _same_shape(s, p, "logits", "targets")
    if (p < 0).any() or not np.allclose(p.sum(axis=-1), 1.0, rtol=0, atol=1e-3):
        raise QuantpressError("targets must be probabilities: non-negative, each row summing to 1")
    temp = _positive("temperature", temperature)
    red = _reduction(reduction)
    logq = _log_softmax(s / temp)
    loss, scale = _reduce(-(p * logq).sum(axis=-1), red)
    return loss, ((np.exp(logq) - p) * (scale / temp)).astype(dtype)


def distillation_loss(student_logits: Any, teacher_logits: Any = None, labels: Any = None,
                      temperature: float = 4.0, alpha: float = 0.9,
                      reduction: str = "mean") -> tuple[Loss, np.ndarray]:
    """Hinton-style distillation loss and its gradient with respect to the student logits.

    ``loss = alpha * T**2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, labels)``,
    the hard cross-entropy at temperature 1. Its gradient is
    ``alpha * T * (softmax(s/T) - softmax(t/T)) + (1 - alpha) * (softmax(s) - onehot(labels))``
    (times ``1/B`` for ``"mean"``). Modes:

    * ``labels=None``: the soft term alone, ``T**2 * KL`` (``alpha`` is not used);
    * ``teacher_logits=None``: hard-label training alone, ``CE(s, labels)`` (``alpha`` and
      ``temperature`` are not used); the same as ``alpha=0``.

    Args:
        student_logits: float array ``(..., C)``, class axis last, any batch shape.
        teacher_logits: float array of the same shape, or ``None``.
        labels: integer array of the batch shape with values in ``[0, C)``, or ``None``.
        temperature: ``T > 0``; both logit sets are divided by it in the soft term.
        alpha: weight of the soft term, in ``[0, 1]``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        ``(loss, grad_wrt_student_logits)``; the gradient has the student's dtype and shape.

    Raises:
        QuantpressError: shapes that disagree between student and teacher, labels out of range
            or of the wrong shape, NaN/Inf, neither teacher nor labels, ``T <= 0``, ``alpha``
            outside ``[0, 1]``, an unknown reduction.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> s = np.array([[1.0, 2.0, 3.0]]); t = np.array([[1.0, 2.0, 3.0]])
        >>> loss, grad = qp.distillation_loss(s, t, labels=np.array([2]), temperature=2.0, alpha=0.5)
        >>> round(loss, 4), grad.round(4).tolist()  # KL is 0: half the hard cross-entropy
        (0.2038, [[0.045, 0.1224, -0.1674]])
        >>> loss, grad = qp.distillation_loss([[1e4, 0.0, -1e4]], [[0.0, 0.0, 0.0]])  # T=4, no labels
        >>> round(loss, 1), grad.round(3).tolist()  # 16 * KL(uniform || softmax(s/4)), finite
        (39982.4, [[2.667, -1.333, -1.333]])
    """
    s, dtype = _float_array(student_logits, "student_logits")
    red = _reduction(reduction)
    if teacher_logits is None and labels is None:
        raise QuantpressError("distillation_loss needs teacher_logits, labels, or both")
    y = None if labels is None else _labels(labels, s.shape[:-1], s.shape[-1])
    if teacher_logits is None:
        per, grad = _hard_ce(s, y)  # type: ignore[arg-type]
    else:
        t, _ = _float_array(teacher_logits, "teacher_logits")
        _same_shape(s, t, "student_logits", "teacher_logits")
        temp = _positive("temperature", temperature)
        a = 1.0 if y is None else _alpha(alpha)
        logq, logp = _log_softmax(s / temp), _log_softmax(t / temp)
        per = a * temp * temp * (np.exp(logp) * (logp - logq)).sum(axis=-1)
        grad = a * temp * (np.exp(logq) - np.exp(logp))
        if y is not None and a < 1.0:
            ce, gce = _hard_ce(s, y)
            per, grad = per + (1.0 - a) * ce, grad + (1.0 - a) * gce
    loss, scale = _reduce(per, red)
    return loss, (grad * scale).astype(dtype)


# ----------------------------------------------------------------------------- feature (hint) losses

def _feature_grad(h: np.ndarray, t: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-example loss and its gradient with respect to ``h`` (float64)."""
    if kind == "mse":
        diff = h - t
        return (diff * diff).mean(axis=-1), 2.0 * diff / h.shape[-1]
    hn = np.linalg.norm(h, axis=-1, keepdims=True)
    tn = np.maximum(np.linalg.norm(t, axis=-1, keepdims=True), _COS_EPS)
    dot = (h * t).sum(axis=-1, keepdims=True)
    big = hn > _COS_EPS
    hn_eps = np.where(big, hn, _COS_EPS)
    cos = dot / (hn_eps * tn)
    # d/dh of h.t / (|h| |t|) = t / (|h| |t|) - (h.t) h / (|h|^3 |t|); below eps |h| is a constant.
    return 1.0 - cos[..., 0], np.where(big, dot * h / (hn_eps ** 3 * tn), 0.0) - t / (hn_eps * tn)


def feature_loss(student: Any, teacher: Any, kind: str = "mse", projection: Any = None,
                 reduction: str = "mean") -> tuple[Loss, np.ndarray, Optional[np.ndarray]]:
    """Feature ("hint", FitNets) loss between student and teacher activations, with gradients.

    The student features are first mapped by ``h = student @ projection`` when a projection is
    given (to match a wider teacher layer), else ``h = student``. Per example:

    * ``kind="mse"``: ``mean_j (h_j - teacher_j)**2`` (the mean over the feature axis);
    * ``kind="cosine"``: ``1 - h.teacher / (max(|h|, 1e-8) * max(|teacher|, 1e-8))``.

    Args:
        student: float array ``(..., d_s)``.
        teacher: float array ``(..., d_t)`` with the same batch shape; ``d_t == d_s`` without
            a projection.
        kind: ``"mse"`` or ``"cosine"``.
        projection: optional float matrix ``(d_s, d_t)`` (a learned linear map, no bias).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        ``(loss, grad_student, grad_projection)``; ``grad_projection`` is ``None`` without a
        projection. Gradients have the dtypes of ``student`` and ``projection``.

    Raises:
        QuantpressError: shapes that disagree, NaN/Inf, an unknown kind or reduction.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> s = np.array([[1.0, 0.0]]); t = np.array([[0.0, 2.0]])
        >>> loss, g, _ = qp.feature_loss(s, t)
        >>> loss, g.tolist()
        (2.5, [[1.0, -2.0]])
        >>> loss, g, _ = qp.feature_loss(s, t, kind="cosine")
        >>> loss, g.tolist()
        (1.0, [[0.0, -1.0]])
        >>> loss, g, gp = qp.feature_loss(s, t, projection=np.eye(2))
        >>> gp.tolist()
        [[1.0, -2.0], [0.0, 0.0]]
    """
    if kind not in _FEATURE_KINDS:
        raise QuantpressError(f"kind must be one of {_FEATURE_KINDS}, got {kind!r}")
    x, sdtype = _float_array(student, "student")
    t, _ = _float_array(teacher, "teacher")
    red = _reduction(reduction)
    if x.shape[:-1] != t.shape[:-1]:
        raise QuantpressError(f"student batch shape {x.shape[:-1]} differs from teacher's {t.shape[:-1]}")
    if projection is None:
        _same_shape(x, t, "student", "teacher")
        h, p = x, None
    else:
        p, pdtype = _float_array(projection, "projection")
        if p.shape != (x.shape[-1], t.shape[-1]):
            raise QuantpressError(
                f"projection must have shape {(x.shape[-1], t.shape[-1])} (d_student, d_teacher), got {p.shape}")
        h = x @ p
    per, gh = _feature_grad(h, t, kind)
    loss, scale = _reduce(per, red)
    gh = gh * scale
    if p is None:
        return loss, gh.astype(sdtype), None
    gp = x.reshape(-1, x.shape[-1]).T @ gh.reshape(-1, gh.shape[-1])
    return loss, (gh @ p.T).astype(sdtype), gp.astype(pdtype)


# ----------------------------------------------------------------------------- VQ-VAE layer

@dataclass
class VQResult:
    """What :func:`vq_forward` returns (see there for the definitions).

    Attributes:
        quantized: the nearest codewords, the shape and dtype of ``z`` (the forward value of
            the straight-through output).
        codes: index of each vector's codeword, the batch shape of ``z`` (int64).
        loss: ``codebook_loss + beta * commitment_loss``.
        codebook_loss: ``mean((sg[z] - e)**2)``, trains the codebook (drop it with EMA updates).
        commitment_loss: ``mean((z - sg[e])**2)`` (the same value; different gradient).
        grad_z: gradient of ``loss`` with respect to ``z``: ``2 beta (z - e) / (N d)``.
        grad_codebook: gradient of ``loss`` with respect to the codebook ``(k, d)``: row ``j``
            is ``sum over vectors coded j of 2 (e_j - z) / (N d)``.
    """

    quantized: np.ndarray
    codes: np.ndarray
    loss: float
    codebook_loss: float
    commitment_loss: float
    grad_z: np.ndarray
    grad_codebook: np.ndarray

    def backward(self, grad_quantized: Any) -> np.ndarray:
        """Total gradient with respect to ``z`` given the upstream gradient with respect to
        ``quantized``: the straight-through copy plus the commitment term,
        ``grad_quantized + grad_z``, in ``z``'s dtype."""
        g, _ = _float_array(grad_quantized, "grad_quantized")
        _same_shape(g, self.grad_z, "grad_quantized", "z")
        return (g + self.grad_z).astype(self.grad_z.dtype)


def vq_forward(z: Any, codebook: Any, beta: float = 0.25) -> VQResult:
    """Vector-quantization layer of a VQ-VAE (van den Oord et al. 2017): forward value and the
    gradients of its loss, with a straight-through estimator for the decoder's gradient.

    Every vector ``z_i`` (the last axis, ``d`` values) is replaced by its nearest codeword
    ``e = codebook[code_i]`` (squared L2, found by :func:`~quantpress.assign` in float32, ties
    to the lower index). With ``N`` vectors and ``sg`` the stop-gradient,

    ``loss = mean((sg[z] - e)**2) + beta * mean((z - sg[e])**2)``

    (means over all ``N * d`` elements), so ``grad_z = 2 beta (z - e) / (N d)`` and the codebook
    gradient scatters ``2 (e - z) / (N d)`` onto each used codeword. The decoder's gradient with
    respect to ``quantized`` passes to ``z`` unchanged: :meth:`VQResult.backward` adds it to
    ``grad_z``. With EMA codebook updates (:meth:`~quantpress.OnlineCodebook.update_ema` on the
    batch of ``z``), use ``beta * commitment_loss`` and ``grad_z`` and ignore ``grad_codebook``.

    Args:
        z: float array ``(..., d)`` of encoder outputs.
        codebook: float array ``(k, d)``.
        beta: commitment weight, ``>= 0``.

    Returns:
        A :class:`VQResult`; ``grad_z`` has ``z``'s dtype, ``grad_codebook`` the codebook's.

    Raises:
        QuantpressError: NaN/Inf, values beyond the float32 range, ``d`` that differs, a codebook
            that is not 2-D, negative beta.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> cb = np.array([[0.0, 0.0], [1.0, 1.0]])
        >>> r = qp.vq_forward(np.array([[0.2, 0.0], [0.9, 1.3]]), cb, beta=0.25)
        >>> r.codes.tolist(), r.quantized.tolist()
        ([0, 1], [[0.0, 0.0], [1.0, 1.0]])
        >>> round(r.loss, 4), r.grad_z.round(4).tolist()
        (0.0438, [[0.025, 0.0], [-0.0125, 0.0375]])
        >>> r.grad_codebook.round(4).tolist()
        [[-0.1, 0.0], [0.05, -0.15]]
    """
    x, zdtype = _float_array(z, "z")
    cb, cdtype = _float_array(codebook, "codebook")
    if cb.ndim != 2:
        raise QuantpressError(f"codebook must be a 2-D array (k, d), got shape {cb.shape}")
    if x.shape[-1] != cb.shape[1]:
        raise QuantpressError(f"z has vectors of {x.shape[-1]} values but the codewords have {cb.shape[1]}")
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.integer, np.floating)) \
            or not (np.isfinite(float(beta)) and float(beta) >= 0):
        raise QuantpressError(f"beta must be a finite number >= 0, got {beta!r}")
    big = np.finfo(np.float32).max
    if np.abs(x).max() > big or np.abs(cb).max() > big:
        raise QuantpressError("z and codebook must fit in float32 (the nearest-codeword search runs in float32)")
    d = cb.shape[1]
    flat = x.reshape(-1, d)
    codes = np.asarray(assign(flat.astype(np.float32), cb.astype(np.float32))).astype(np.int64)
    e = cb[codes]
    diff = flat - e
    mse = float((diff * diff).mean())
    ge = np.zeros_like(cb)
    np.add.at(ge, codes, -2.0 * diff / diff.size)
    return VQResult(
        quantized=e.reshape(x.shape).astype(zdtype), codes=codes.reshape(x.shape[:-1]),
        loss=(1.0 + float(beta)) * mse, codebook_loss=mse, commitment_loss=mse,
        grad_z=(2.0 * float(beta) * diff / diff.size).reshape(x.shape).astype(zdtype),
        grad_codebook=ge.astype(cdtype))
