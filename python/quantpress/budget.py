"""Size budgets: choose each tensor's method so that the model fits ``target_bpw`` bits per weight
with the least total error, instead of one fixed rule for every tensor.

Two steps. :func:`measure` compresses every quantizable tensor with each method of a ladder
(:data:`LADDER`, int2 up to int8) and keeps only two numbers per method: the exact bytes the
container would store and the squared error of the decoded values, so peak memory is one tensor
and one candidate at a time. :func:`solve` then picks one method per tensor: a multiple-choice
knapsack, minimise ``sum(error)`` subject to ``sum(bytes) * 8 <= target_bpw * elements``.

What is minimised: by default the total squared error ``sum ||W - W_hat||^2`` over the model in
the original scale (so large tensors and large weights count for what they are);
``objective="relative"`` uses ``n * ||W - W_hat||^2 / ||W||^2`` per tensor instead (each tensor's
relative error, weighted by its size), for models whose layers differ in scale. ``weights`` (a
float per tensor name) multiplies either.

The budget covers the whole model's tensor data, as the Report's ``bits_per_weight`` counts it:
tensors kept by the recipe skips (norms, biases, small tensors) cost their raw bytes, and the rest
of the budget goes to the quantized ones. The file header is not counted.

The solver takes the best of three starts, each followed by a greedy pass that spends what is
left of the budget on the upgrades with the most error saved per byte: (1) the Lagrangian
relaxation: for a multiplier ``lambda`` every tensor independently takes the method minimising
``error + lambda * bits`` (a point on its lower convex hull), with bisection for the smallest
``lambda`` that fits; (2) a dynamic program over sizes rounded up to 1/65536 of the budget, exact
when the budget is at most 65536 bytes and otherwise within a rounding of the optimum; (3) every
single-method assignment that fits, so the plan is never worse than any uniform method of the
ladder at the same or a smaller size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from ._arrays import as_float32, dtype_name
from ._core import QuantpressError
from .recipe import KEEP, Plan, Recipe, fit

Progress = Callable[[int, int, str], None]
Tensors = Union[Mapping[str, np.ndarray], Iterable[tuple[str, np.ndarray]]]

#: The default candidate ladder, cheapest first (bits per weight on a 256-multiple row).
LADDER: tuple[Plan, ...] = (
    Plan("scalar", {"bits": 2, "group_size": 128, "algorithm": "mse"}),         # 2.25
    Plan("gguf", {"type": "Q2_K"}),                                              # 2.625
    Plan("scalar", {"bits": 2, "group_size": 32, "algorithm": "mse"}),          # 3.0
    Plan("gguf", {"type": "Q3_K"}),                                              # 3.44
    Plan("scalar", {"bits": 3, "group_size": 64, "algorithm": "mse"}),          # 3.5
    Plan("scalar", {"bits": 4, "group_size": 128, "algorithm": "mse"}),         # 4.25
    Plan("gguf", {"type": "Q4_K"}),                                              # 4.5
    Plan("scalar", {"bits": 4, "group_size": 64, "algorithm": "mse"}),          # 4.5
    Plan("scalar", {"bits": 4, "scheme": "nf4", "group_size": 64, "scale_dtype": "float32"}),  # 4.5
    Plan("gguf", {"type": "Q5_K"}),                                              # 5.5
    Plan("gguf", {"type": "Q6_K"}),                                              # 6.56
    Plan("scalar", {"bits": 8, "scheme": "symmetric", "group_size": None, "scale_dtype": "float32"}),  # ~8
)
OBJECTIVES = ("sse", "relative")
#: Size slots of the dynamic program (exact up to this many bytes of budget, finer than 1/65536
#: of the budget beyond).
DP_SLOTS = 2**16


@dataclass(frozen=True)
class Measured:
    """The candidates of one tensor: their plans, exact stored bytes and squared errors
    (``sum((w - w_hat)**2)`` in float64), with the tensor's element count and ``sum(w**2)``.
    A tensor the skips keep has the single candidate ``keep`` at its raw size and error 0."""

    name: str
    shape: tuple[int, ...]
    elements: int
    signal: float
    plans: tuple[Plan, ...]
    nbytes: tuple[int, ...]
    sq_error: tuple[float, ...]


def _stored_bytes(name: str, entry: object, dtype: str) -> int:
    from .container import _encode

    parts, _ = _encode(name, entry, dtype)
    return sum(int(np.asarray(a).nbytes) for a in parts.values())


def _sq_error(x: np.ndarray, y: np.ndarray, step: int = 2**16) -> float:
    x, y = x.reshape(-1), np.asarray(y, np.float32).reshape(-1)
    total = 0.0
    for i in range(0, x.size, step):
        d = (x[i:i + step] - y[i:i + step]).astype(np.float64)
        total += float(np.dot(d, d))
    return total


def measure_one(name: str, w: np.ndarray, candidates: Sequence[Plan] = LADDER, min_elements: int = 4096) -> Measured:
    """Every candidate on one tensor, after :func:`~quantpress.recipe.fit`'s fallbacks (a
    candidate that falls back to a method already measured is measured once), plus ``keep`` (the
    tensor as it is: its raw bytes, no error). A tensor the recipe skips keep (dtype, rank, fewer
    than ``min_elements`` values, norm/bias names) has ``keep`` only."""
    from .pipeline import apply_plan

    dtype = dtype_name(w.dtype)
    n = int(math.prod(w.shape))
    probe = Recipe("probe", (), Plan("gguf", {"type": "Q8_0"}), min_elements)
    if probe.plan(name, w.shape, dtype, 0).method == "keep":
        return Measured(name, tuple(w.shape), n, 0.0, (KEEP,), (int(w.nbytes),), (0.0,))
    x, _ = as_float32(w)
    flat = x.reshape(-1)
    signal = sum(float(np.dot(c, c)) for c in (flat[i:i + 2**16].astype(np.float64) for i in range(0, n, 2**16)))
    plans, sizes, errors = [KEEP], [int(w.nbytes)], [0.0]
    for cand in candidates:
        plan = fit(cand, tuple(w.shape))
        if plan in plans:
            continue
        try:
            entry = apply_plan(plan, w)
            errors.append(_sq_error(x, entry.dequantize()))  # type: ignore[union-attr]
        except QuantpressError as e:
            raise QuantpressError(f"tensor {name!r} ({plan.describe()}): {e}") from None
        plans.append(plan)
        sizes.append(_stored_bytes(name, entry, dtype))
    return Measured(name, tuple(w.shape), n, signal, tuple(plans), tuple(sizes), tuple(errors))


def measure(tensors: Tensors, candidates: Optional[Sequence[Plan]] = None, min_elements: int = 4096,
            progress: Optional[Progress] = None, total: int = 0) -> list[Measured]:
    """:func:`measure_one` for each ``(name, array)`` in turn (a mapping or a stream of pairs:
    only one tensor needs to be in memory at a time). ``progress(done, total, name)`` after each."""
    cands = tuple(candidates) if candidates is not None else LADDER
    if not cands or not all(isinstance(c, Plan) for c in cands):
        raise QuantpressError("candidates must be a non-empty sequence of Plan")
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    total = total or (len(tensors) if isinstance(tensors, Mapping) else 0)
    out = []
    for i, (name, w) in enumerate(items):
        out.append(measure_one(name, np.asarray(w), cands, min_elements))
        if progress is not None:
            progress(i + 1, max(total, i + 1), name)
    return out


def _costs(measured: Sequence[Measured], objective: str, weights: Optional[Mapping[str, float]]) -> tuple[np.ndarray, np.ndarray]:
    """``(bytes, error)`` as ``(tensors, candidates)`` arrays; missing candidates cost an
    unreachable size and infinite error."""
    if objective not in OBJECTIVES:
        raise QuantpressError(f"unknown objective {objective!r}: expected one of {', '.join(OBJECTIVES)}")
    weights = weights or {}
    width = max(len(m.plans) for m in measured)
    nbytes = np.full((len(measured), width), np.iinfo(np.int64).max // 4, np.int64)
    err = np.full((len(measured), width), np.inf)
    for t, m in enumerate(measured):
        w = float(weights.get(m.name, 1.0))
        if not (math.isfinite(w) and w >= 0):
            raise QuantpressError(f"weight of tensor {m.name!r} must be finite and >= 0, got {w}")
        e = np.asarray(m.sq_error, np.float64)
        if objective == "relative" and m.signal > 0:
            e = e * (m.elements / m.signal)
        nbytes[t, :len(m.plans)] = m.nbytes
        err[t, :len(m.plans)] = e * w
    return nbytes, err


def _budget_bytes(measured: Sequence[Measured], target_bpw: float) -> int:
    if isinstance(target_bpw, bool) or not isinstance(target_bpw, (int, float, np.floating, np.integer)) \
            or not math.isfinite(target_bpw) or target_bpw <= 0:
        raise QuantpressError(f"target_bpw must be a finite number > 0, got {target_bpw!r}")
    elements = sum(m.elements for m in measured)
    return math.floor(Fraction(float(target_bpw)) * elements / 8)  # exact: never rounds up


def _lagrangian(nbytes: np.ndarray, err: np.ndarray, budget: int) -> np.ndarray:
    """The cheapest ``error + lam * bytes`` choice per tensor, for the smallest ``lam`` (by
    bisection) whose total size fits; ties go to the smaller candidate."""
    rows = np.arange(len(nbytes))

    def pick(lam: float) -> np.ndarray:
        cost = err + lam * nbytes.astype(np.float64)
        best = cost.min(axis=1, keepdims=True)
        tied = np.where(cost <= best, nbytes, np.iinfo(np.int64).max)
        return tied.argmin(axis=1)

    choice = pick(0.0)
    if nbytes[rows, choice].sum() <= budget:
        return choice
    finite = err[np.isfinite(err)]
    lo, hi = 0.0, float(finite.max() - finite.min()) + 1.0  # above every slope: the smallest sizes
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if nbytes[rows, pick(mid)].sum() <= budget:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-12 * hi:
            break
    return pick(hi)


def _greedy_fill(nbytes: np.ndarray, err: np.ndarray, choice: np.ndarray, budget: int) -> np.ndarray:
    """Spends the budget left after ``choice`` on upgrades, best error saved per byte first (an
    upgrade that saves error without costing bytes comes first); stops when none fits."""
    choice = choice.copy()
    rows = np.arange(len(nbytes))
    while True:
        cur_b, cur_e = nbytes[rows, choice], err[rows, choice]
        left = budget - int(cur_b.sum())
        db = nbytes - cur_b[:, None]
        de = cur_e[:, None] - err
        ok = (db <= left) & (de > 0)
        if not ok.any():
            return choice
        score = np.where(ok, np.where(db > 0, de / np.maximum(db, 1), np.inf), -np.inf)
        t, c = np.unravel_index(int(np.argmax(score)), score.shape)
        choice[t] = c


def _dynamic_program(nbytes: np.ndarray, err: np.ndarray, budget: int) -> Optional[np.ndarray]:
    """The exact multiple-choice knapsack over sizes rounded *up* to slots of ``g`` bytes (``g``
    = 1, exact, while the budget is at most :data:`DP_SLOTS` bytes), so its choice always fits;
    ``None`` if the rounding leaves nothing that fits."""
    t_count, width = nbytes.shape
    slots = max(1024, min(DP_SLOTS, 2**25 // max(1, t_count)))  # the choice table stays <= 32 MiB
    g = max(1, -(-budget // slots))
    cap = budget // g
    units = -(-nbytes // g)
    best = np.zeros(cap + 1)  # least error of the tensors so far within k slots
    choices = np.zeros((t_count, cap + 1), np.uint8)
    for t in range(t_count):
        new = np.full(cap + 1, np.inf)
        for c in range(width):
            u = int(units[t, c])
            if u > cap or not np.isfinite(err[t, c]):
                continue
            cand = best[:cap + 1 - u] + err[t, c]
            better = cand < new[u:]
            new[u:][better] = cand[better]
            choices[t, u:][better] = c
        best = new
    if not np.isfinite(best[cap]):
        return None
    out, k = np.zeros(t_count, np.int64), cap
    for t in range(t_count - 1, -1, -1):
        out[t] = choices[t, k]
        k -= int(units[t, out[t]])
    return out


def _uniform_starts(measured: Sequence[Measured], ladder: Sequence[Plan]) -> list[np.ndarray]:
    """One assignment per ladder method: each tensor takes that method (after its fallbacks),
    as a recipe with that single method would."""
    starts = []
    for cand in ladder:
        plans = [fit(cand, m.shape) if len(m.plans) > 1 else KEEP for m in measured]
        if all(p in m.plans for p, m in zip(plans, measured)):  # skips a method that was not measured
            starts.append(np.asarray([m.plans.index(p) for p, m in zip(plans, measured)]))
    return starts


def solve(measured: Sequence[Measured], target_bpw: float, weights: Optional[Mapping[str, float]] = None,
          objective: str = "sse", ladder: Sequence[Plan] = LADDER) -> dict[str, Plan]:
    """One plan per measured tensor: the least total error (see the module doc) whose stored
    bytes, kept tensors included, are at most ``target_bpw * elements / 8``.

    Raises:
        QuantpressError: ``target_bpw`` is not a finite number > 0, or is below what the
            smallest candidates reach (the message gives that minimum).
    """
    if not measured:
        raise QuantpressError("the model has no tensors")
    budget = _budget_bytes(measured, target_bpw)
    nbytes, err = _costs(measured, objective, weights)
    rows = np.arange(len(measured))
    smallest = int(nbytes.min(axis=1).sum())
    if smallest > budget:
        elements = sum(m.elements for m in measured)
        raise QuantpressError(f"target_bpw {target_bpw} is below the smallest size the candidates reach: "
                              f"{smallest * 8 / elements:.4f} bits per weight")
    starts = [_lagrangian(nbytes, err, budget)]
    exact = _dynamic_program(nbytes, err, budget)
    starts += [] if exact is None else [exact]
    starts += [s for s in _uniform_starts(measured, ladder) if nbytes[rows, s].sum() <= budget]
    results = [_greedy_fill(nbytes, err, s, budget) for s in starts]
    best = min(results, key=lambda c: (float(err[rows, c].sum()), int(nbytes[rows, c].sum())))
    return {m.name: m.plans[int(c)] for m, c in zip(measured, best)}


def plan_budget(tensors: Tensors, target_bpw: float, candidates: Optional[Sequence[Plan]] = None,
                weights: Optional[Mapping[str, float]] = None, objective: str = "sse",
                min_elements: int = 4096, progress: Optional[Progress] = None) -> dict[str, Plan]:
    """Per-tensor plans that fit ``target_bpw`` bits per weight with the least total error.

    Args:
        tensors: ``{name: array}`` or a stream of ``(name, array)`` pairs (measured one at a time).
        target_bpw: stored bits per weight over the whole model's tensor data (kept tensors
            included at their raw size; the file header is not counted).
        candidates: the methods to choose from (default :data:`LADDER`); ``keep`` is always one.
        weights: an importance factor per tensor name (default 1) multiplying its error.
        objective: ``"sse"`` (total squared error in the original scale) or ``"relative"``
            (each tensor's squared error over its ``sum(w**2)``, times its size).
        min_elements: tensors with fewer values are kept, as in recipes.
        progress: called as ``progress(done, total, name)`` after each tensor is measured.

    Returns:
        ``{name: Plan}`` for every tensor, ready for :func:`quantpress.pipeline.apply_plan`.

    Raises:
        QuantpressError: a bad target (not a finite number > 0, or below the smallest sizes).

    Example:
        >>> import numpy as np
        >>> from quantpress.budget import plan_budget
        >>> rng = np.random.default_rng(0)
        >>> model = {"smooth.weight": rng.standard_normal((64, 256)).astype(np.float32),
        ...          "heavy.weight": rng.standard_t(2, (64, 256)).astype(np.float32),
        ...          "out.bias": np.zeros(64, np.float32)}
        >>> plans = plan_budget(model, target_bpw=4.0)
        >>> {name: p.describe() for name, p in plans.items()}  # the heavy-tailed tensor gets more bits
        {'smooth.weight': 'int2 g128 affine mse', 'heavy.weight': 'Q5_K', 'out.bias': 'keep'}
        >>> from quantpress.pipeline import apply_plan
        >>> from quantpress.budget import _stored_bytes
        >>> sum(_stored_bytes(n, apply_plan(p, model[n]), "float32") for n, p in plans.items()) * 8 <= 4.0 * (2 * 64 * 256 + 64)
        True
    """
    measured = measure(tensors, candidates, min_elements, progress)
    return solve(measured, target_bpw, weights, objective, tuple(candidates) if candidates is not None else LADDER)


def plan_file(path: str, target_bpw: float, progress: Optional[Progress] = None, **options: Any) -> dict[str, Plan]:
    """:func:`plan_budget` for a model file (anything ``qp.open_model`` reads), streamed one
    tensor at a time; ``options`` are :func:`plan_budget`'s keyword arguments."""
    from .pipeline import _iter_tensors, _list_tensors

    known = {"candidates", "weights", "objective", "min_elements"}
    if set(options) - known:
        raise QuantpressError(f"unknown budget option {sorted(set(options) - known)[0]!r} (known: {', '.join(sorted(known))})")
    total = len(_list_tensors(path))
    cands = options.get("candidates")
    measured = measure(_iter_tensors(path), cands, int(options.get("min_elements", 4096)), progress, total)
    return solve(measured, target_bpw, options.get("weights"), str(options.get("objective", "sse")),
                 tuple(cands) if cands is not None else LADDER)
