"""Size budgets (quantpress.budget, qp.compress(target_bpw=...)): the budget is never exceeded
(exact bytes of the written file), the plan is never worse than a single method of the ladder at
the same or a smaller size, more bits never give more error, and bad targets are refused."""

import math
import re
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from safetensors.numpy import save_file

import quantpress as qp
from quantpress.budget import LADDER, Measured, measure, plan_budget, solve
from quantpress.recipe import KEEP, Plan, Recipe

from conftest import weight_like

MIN_ELEMENTS = 1024


def _model(seed: int = 0) -> dict[str, np.ndarray]:
    """Heterogeneous tensors: smooth Gaussian, heavy-tailed with outlier columns, rows that are
    not a multiple of 256 (fallbacks), a large-scale low-rank one, and tensors the skips keep."""
    rng = np.random.default_rng(seed)
    low_rank = rng.standard_normal((64, 8)) @ rng.standard_normal((8, 256))
    return {
        "smooth.weight": (rng.standard_normal((128, 512)) * 0.02).astype(np.float32),
        "heavy.weight": weight_like(rng, (128, 256)),
        "odd.weight": rng.standard_t(3, (96, 192)).astype(np.float32) * np.float32(0.05),
        "odd.bias": rng.standard_normal(96).astype(np.float32),
        "lowrank.weight": (low_rank * 5).astype(np.float32),
        "ln.weight": np.ones(256, np.float32),
    }


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("budget") / "model.safetensors"
    save_file(_model(), str(path))
    return path


@pytest.fixture(scope="module")
def measured():
    return measure(_model(), min_elements=MIN_ELEMENTS)


def _elements(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.values())


def _sse(original, compressed) -> float:
    """Total squared error of a written file, decoded, in float64."""
    a, b = qp.load(original), qp.load(compressed)
    return sum(float(np.sum((np.asarray(a[n], np.float64) - np.asarray(b[n], np.float64)) ** 2)) for n in a)


def _stored(path) -> int:
    c = qp.load(path)
    return sum(c.info(n)["nbytes"] for n in c)


def _cost(measured, plans) -> tuple[int, float]:
    by_name = {m.name: m for m in measured}
    size = err = 0
    for name, plan in plans.items():
        m = by_name[name]
        i = m.plans.index(plan)
        size += m.nbytes[i]
        err += m.sq_error[i]
    return size, err


@pytest.mark.parametrize("target", [2.7, 3.0, 3.5, 4.25, 5.0, 7.0])
def test_compress_never_exceeds_the_budget(model_file, tmp_path, target):
    out = tmp_path / "out.safetensors"
    rep = qp.compress(model_file, out, target_bpw=target, budget_options={"min_elements": MIN_ELEMENTS})
    n = _elements(_model())
    stored = _stored(out)  # the bytes actually in the file, read back
    assert stored == sum(t.output_bytes for t in rep.tensors)
    assert Fraction(stored * 8, n) <= Fraction(target)
    assert rep.bits_per_weight <= target
    # the budget is spent: within one step of the ladder of the target
    assert rep.bits_per_weight > target - 1.5
    methods = {t.name: t.method for t in rep.tensors}
    assert methods["ln.weight"] == "keep" and methods["odd.bias"] == "keep"
    assert len({m for n, m in methods.items() if n.endswith(".weight") and n != "ln.weight"}) >= 2, methods


def test_measured_bytes_and_errors_are_those_of_the_file(model_file, tmp_path, measured):
    plans = solve(measured, 3.5)
    size, err = _cost(measured, plans)
    out = tmp_path / "out.safetensors"
    rep = qp.compress(model_file, out, target_bpw=3.5, budget_options={"min_elements": MIN_ELEMENTS})
    assert {t.name: t.method for t in rep.tensors} == {n: p.describe() for n, p in plans.items()}
    assert _stored(out) == size
    assert _sse(model_file, out) == pytest.approx(err, rel=1e-5)  # float64 sums of the same float32 values


@pytest.mark.parametrize("index", range(len(LADDER)))
def test_never_worse_than_one_method_for_all_at_its_size(model_file, tmp_path, measured, index):
    uniform = tmp_path / "uniform.safetensors"
    qp.compress(model_file, uniform, recipe=Recipe("uniform", (), LADDER[index], MIN_ELEMENTS))
    size_u, err_u = _stored(uniform), _sse(model_file, uniform)
    target = size_u * 8 / _elements(_model()) + 1e-9  # the uniform file's size (not one byte more)
    plans = solve(measured, target)
    size_b, err_b = _cost(measured, plans)
    assert size_b <= size_u
    assert err_b <= err_u * (1 + 1e-6), (LADDER[index].describe(), err_b, err_u)


def test_more_bits_never_more_error(measured):
    errors, sizes = [], []
    for target in np.arange(2.6, 12.0, 0.1):
        size, err = _cost(measured, solve(measured, float(target)))
        errors.append(err)
        sizes.append(size)
    assert all(b <= a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < errors[0] / 100


def test_matches_brute_force_on_a_small_problem():
    """Exhaustive search over every assignment of 4 tensors x 5 candidates (non-convex curves):
    under 65536 bytes of budget the dynamic program is exact, so the solver finds the optimum
    at every budget of a sweep."""
    rng = np.random.default_rng(3)
    ms = []
    for t in range(4):
        sizes = np.cumsum(rng.integers(50, 200, 5))
        errs = np.sort(rng.random(5) ** 2 * 10 ** rng.uniform(0, 3))[::-1]
        ms.append(Measured(f"t{t}", (64, 64), 4096, 1.0, tuple(Plan("gguf", {"type": q}) for q in
                                                                   ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")),
                           tuple(int(s) for s in sizes), tuple(float(e) for e in errs)))
    grids = np.meshgrid(*[np.arange(5)] * 4, indexing="ij")
    combos = np.stack([g.reshape(-1) for g in grids], axis=1)
    sizes = sum(np.asarray(m.nbytes)[combos[:, i]] for i, m in enumerate(ms))
    errs = sum(np.asarray(m.sq_error)[combos[:, i]] for i, m in enumerate(ms))
    n = 4 * 4096
    for budget in range(int(sizes.min()), int(sizes.max()) + 1, 37):
        target = budget * 8 / n + 1e-9
        size, err = _cost(ms, solve(ms, target, ladder=()))
        best = errs[sizes <= budget].min()
        assert size <= budget and err == pytest.approx(best, rel=1e-12), budget


def test_weights_and_objective_move_bits(measured):
    base = solve(measured, 3.5)
    heavy = solve(measured, 3.5, weights={"smooth.weight": 1e6})
    by = {m.name: m for m in measured}

    def bytes_of(plans, name):
        return by[name].nbytes[by[name].plans.index(plans[name])]

    assert bytes_of(heavy, "smooth.weight") > bytes_of(base, "smooth.weight")
    rel = solve(measured, 3.5, objective="relative")
    # in squared error the large-scale low-rank tensor dominates; relative error evens it out
    assert bytes_of(rel, "lowrank.weight") < bytes_of(base, "lowrank.weight")
    with pytest.raises(qp.QuantpressError, match="objective"):
        solve(measured, 3.5, objective="mse")
    with pytest.raises(qp.QuantpressError, match="weight of tensor"):
        solve(measured, 3.5, weights={"smooth.weight": float("nan")})


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "3.5", True, None, 1.0])
def test_bad_targets_are_refused(measured, bad):
    with pytest.raises(qp.QuantpressError, match="target_bpw"):
        solve(measured, bad)


def test_smallest_target_is_reachable_and_named(measured):
    with pytest.raises(qp.QuantpressError, match=r"smallest size the candidates reach: (\d+\.\d+)") as e:
        solve(measured, 1.0)
    smallest = float(re.search(r"reach: (\d+\.\d+)", str(e.value)).group(1))
    floor = sum(min(m.nbytes) for m in measured)
    assert smallest == pytest.approx(floor * 8 / _elements(_model()), abs=1e-4)
    size, _ = _cost(measured, solve(measured, smallest + 1e-3))
    assert floor <= size <= floor + 1e-3 * _elements(_model()) / 8


def test_streams_and_reports_progress():
    model = _model()
    calls = []
    plans = plan_budget(((n, w) for n, w in model.items()), 4.0, min_elements=MIN_ELEMENTS,
                        progress=lambda *a: calls.append(a))
    assert set(plans) == set(model) and [c[0] for c in calls] == list(range(1, len(model) + 1))
    custom = [Plan("scalar", {"bits": 8, "group_size": None, "scheme": "symmetric"})]
    only = plan_budget(model, 9.0, candidates=custom, min_elements=MIN_ELEMENTS)
    assert {p.method for p in only.values()} <= {"scalar", "keep"}
    with pytest.raises(qp.QuantpressError, match="candidates"):
        plan_budget(model, 4.0, candidates=[])
    # kept-only models: the only candidate is the raw tensor
    assert plan_budget({"b": np.zeros(8, np.float32)}, 32.0) == {"b": KEEP}


def test_api_and_cli_refuse_both_recipe_and_budget(model_file, tmp_path):
    with pytest.raises(qp.QuantpressError, match="not both"):
        qp.compress(model_file, tmp_path / "o.safetensors", recipe="int4", target_bpw=4.0)
    out = subprocess.run([sys.executable, "-m", "quantpress", "compress", str(model_file), "-o",
                          str(tmp_path / "o.safetensors"), "--recipe", "int4", "--target-bpw", "4"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "not allowed" in out.stderr
    out = subprocess.run([sys.executable, "-m", "quantpress", "compress", str(model_file), "-o",
                          str(tmp_path / "o.safetensors"), "--target-bpw", "4"], capture_output=True, text=True)
    assert out.returncode == 0 and "budget 4 bits/weight" in " ".join(out.stdout.split())
    assert float(re.search(r"(\d+\.\d+) bits/weight, ", out.stdout).group(1)) <= 4.0
    assert math.isclose(sum(1 for _ in qp.load(tmp_path / "o.safetensors")), len(_model()))
