"""The built-in examples behind ``quantpress demo``.

:func:`compare_recipes` (the default demo) compresses a small model the package ships, a
64-256-128-10 MLP trained on scikit-learn's 8x8 digits (``data/digits_mlp.safetensors``, made by
``examples/make_digits_mlp.py``), with several recipes and a size budget, and measures what matters
to a user: file size, bits per weight, weight error and test accuracy (a NumPy forward pass of
the decompressed model on the 450-image test split shipped next to it). :func:`compare_methods`
(``quantpress demo --matrix``) compares every quantization method on one weight matrix.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from functools import partial
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from .gguf import GGUF_TYPES, gguf_dequantize, gguf_quantize
from .kmeans1d import KMeans1D, kmeans1d
from .scalar import QuantizedTensor, quantize
from .weight_vq import VQTensor, vq_quantize

ProgressFn = Callable[[int, int, str], None]


def example_weights(rows: int = 1024, cols: int = 4096, seed: int = 0) -> np.ndarray:
    """A deterministic weight-like matrix: Student-t (df=4) rows scaled like a trained linear
    layer, with 1 in 64 input columns carrying 20x outliers, as LLM weights do."""
    rng = np.random.default_rng(seed)
    w = rng.standard_t(df=4, size=(rows, cols)).astype(np.float32) * np.float32(0.02)
    w[:, rng.choice(cols, size=max(1, cols // 64), replace=False)] *= np.float32(20)
    return w


@dataclass
class MethodResult:
    name: str
    bits_per_weight: float
    rmse: float
    max_abs_error: float
    sqnr_db: float
    quantize_gbps: float
    dequantize_gbps: float


def _best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        # Free the previous result first: holding it would hand every call fresh pages from the
        # OS, and the timing would measure page faults rather than the method.
        out = None
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _nbytes(q: Any) -> int:
    return int(q.nbytes)


def _gguf_decode(qtype: str, shape: tuple[int, ...], raw: np.ndarray) -> np.ndarray:
    return gguf_dequantize(raw, qtype, shape)


# (name, encode, decode(encoded), stored bytes(encoded))
Method = tuple[str, Callable[[], Any], Callable[[Any], np.ndarray], Callable[[Any], int]]


def _methods(w: np.ndarray) -> list[Method]:
    rtn: list[tuple[str, dict[str, Any]]] = [
        ("int8 per-channel sym", dict(bits=8, group_size=None, scheme="symmetric")),
        ("int8 g128 affine", dict(bits=8, group_size=128)),
        ("int4 g128 affine", dict(bits=4, group_size=128)),
        ("int4 g32 symmetric", dict(bits=4, group_size=32, scheme="symmetric")),
        ("int4 g64 affine", dict(bits=4, group_size=64)),
        ("int4 g64 affine mse", dict(bits=4, group_size=64, method="mse")),
        ("int4 g64 affine hqq", dict(bits=4, group_size=64, method="hqq")),
        ("nf4 g64", dict(bits=4, group_size=64, scheme="nf4")),
        ("nf4 g64 double-quant", dict(bits=4, group_size=64, scheme="nf4", double_quant=True)),
        ("int3 g64 affine", dict(bits=3, group_size=64)),
        ("int3 g64 affine mse", dict(bits=3, group_size=64, method="mse")),
        ("int3 g64 affine hqq", dict(bits=3, group_size=64, method="hqq")),
        ("int2 g32 affine", dict(bits=2, group_size=32)),
        ("int2 g32 affine mse", dict(bits=2, group_size=32, method="mse")),
        ("int1 g16 affine", dict(bits=1, group_size=16)),
    ]
    out: list[Method] = []
    for name, kw in rtn:
        out.append((name, partial(quantize, w, **kw), QuantizedTensor.dequantize, _nbytes))
    for t in GGUF_TYPES:
        out.append((f"GGUF {t}", partial(gguf_quantize, w, t), partial(_gguf_decode, t, w.shape), _nbytes))
    # Vector quantization: per-row 1-D k-means (weight sharing, 16 values per row: 4-bit codes
    # packed two per byte plus a float32 codebook per row) and k-means over 4-value sub-vectors.
    out.append(("kmeans1d 16/row (4-bit)", partial(kmeans1d, w, 16), KMeans1D.dequantize, _kmeans1d_bytes))
    out.append(("VQ dim 4, 2 bits/weight", partial(vq_quantize, w, dim=4, bits_per_weight=2), VQTensor.dequantize, _nbytes))
    return out


def _kmeans1d_bytes(q: KMeans1D) -> int:
    return (q.codes.size + 1) // 2 + q.codebook.nbytes


def compare_methods(w: np.ndarray, repeats: int = 3, progress: Optional[ProgressFn] = None) -> list[MethodResult]:
    """Quantizes ``w`` with every method and measures size, error and speed.

    Args:
        w: a float32 matrix.
        repeats: timing repetitions (the best is kept).
        progress: called as ``progress(done, total, method_name)`` after each method.

    Example:
        >>> import quantpress.demo as d
        >>> rows = d.compare_methods(d.example_weights(64, 256), repeats=1)
        >>> [r.name for r in rows][:2]
        ['int8 per-channel sym', 'int8 g128 affine']
    """
    methods = _methods(w)
    signal = float(np.mean(w.astype(np.float64) ** 2))
    results = []
    for i, (name, enc, dec, size) in enumerate(methods):
        tq, q = _best_time(enc, repeats)
        td, y = _best_time(lambda: dec(q), repeats)
        err = np.asarray(y, dtype=np.float64) - w
        mse = float(np.mean(err**2))
        results.append(MethodResult(
            name=name,
            bits_per_weight=size(q) * 8 / w.size,
            rmse=mse**0.5,
            max_abs_error=float(np.abs(err).max()),
            sqnr_db=10 * np.log10(signal / mse) if mse > 0 else float("inf"),
            quantize_gbps=w.nbytes / tq / 1e9,
            dequantize_gbps=w.nbytes / td / 1e9,
        ))
        if progress is not None:
            progress(i + 1, len(methods), name)
    return results


# ---------------------------------------------------------------------------------------------
# The model demo
# ---------------------------------------------------------------------------------------------

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
#: The shipped model (float32, PyTorch layout ``fcN.weight`` (out, in); ReLU between layers).
MODEL = os.path.join(DATA, "digits_mlp.safetensors")
#: Its test split: ``x`` uint8 pixels 0..16 (64 per image), ``y`` uint8 labels.
TEST_SET = os.path.join(DATA, "digits_test.npz")
RECIPES = ("int8", "int4", "nf4", "q4_k_m", "vq2")


@dataclass
class RecipeResult:
    """One row of the model demo: the recipe, the compressed file's size, the stored bits per
    weight (tensor data, the Report's figure), the mean relative error of the weight matrices,
    the test accuracy in percent and the method each tensor got."""

    name: str
    file_bytes: int
    bits_per_weight: float
    rel_error: float
    accuracy: float
    methods: dict[str, str]


def load_test_set() -> tuple[np.ndarray, np.ndarray]:
    """The shipped digits test split: inputs scaled to [0, 1] (float32) and labels (int64)."""
    with np.load(TEST_SET) as d:
        return (d["x"] / np.float32(16)).astype(np.float32), d["y"].astype(np.int64)


def mlp_accuracy(tensors: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """Test accuracy in percent of the MLP ``fc1 .. fcN`` (ReLU between layers) in ``tensors``."""
    h = x
    n = sum(1 for k in tensors if k.endswith(".weight"))
    for i in range(1, n + 1):
        h = h @ np.asarray(tensors[f"fc{i}.weight"], np.float32).T + np.asarray(tensors[f"fc{i}.bias"], np.float32)
        if i < n:
            h = np.maximum(h, 0)
    return float((h.argmax(axis=1) == y).mean() * 100)


def compare_recipes(recipes: Sequence[str] = RECIPES, target_bpw: Optional[float] = 3.0, min_elements: int = 1024,
                    model: str = MODEL, progress: Optional[ProgressFn] = None) -> list[RecipeResult]:
    """Compresses the shipped digits MLP with each recipe (and, with ``target_bpw``, a size
    budget) into a temporary folder and measures every result; the first row is the float model.

    ``min_elements`` lowers the presets' 4096 so the 10x128 output layer is quantized too (kept
    in float32 it would be a fifth of this small model). ``progress(done, total, name)`` is called
    after each recipe.

    Example:
        >>> from quantpress.demo import compare_recipes
        >>> rows = compare_recipes(["int8"], target_bpw=None)
        >>> [r.name for r in rows]
        ['float32', 'int8']
        >>> abs(rows[1].accuracy - rows[0].accuracy) <= 1.0, rows[1].bits_per_weight < 9
        (True, True)
    """
    from .container import load
    from .pipeline import compress
    from .recipe import get_recipe

    x, y = load_test_set()
    original = load(model)
    rows = [RecipeResult("float32", os.path.getsize(model), _float_bpw(original), 0.0,
                         mlp_accuracy(original, x, y), {k: "keep" for k in original})]
    jobs: list[tuple[str, dict[str, Any]]] = [
        (r, {"recipe": dataclasses.replace(get_recipe(r), min_elements=min_elements)}) for r in recipes]
    if target_bpw is not None:
        jobs.append((f"budget {target_bpw:g} bpw", {"target_bpw": target_bpw,
                                                     "budget_options": {"min_elements": min_elements}}))
    with tempfile.TemporaryDirectory(prefix="quantpress-demo-") as folder:
        for i, (name, kw) in enumerate(jobs):
            dst = os.path.join(folder, f"{i}.safetensors")
            report = compress(model, dst, **kw)
            weights = [t.rel_error for t in report.tensors if len(t.shape) >= 2]
            rows.append(RecipeResult(name, os.path.getsize(dst), report.bits_per_weight,
                                     float(np.mean(weights)) if weights else 0.0,
                                     mlp_accuracy(load(dst), x, y), {t.name: t.method for t in report.tensors}))
            if progress is not None:
                progress(i + 1, len(jobs), name)
    return rows


def _float_bpw(tensors: Mapping[str, np.ndarray]) -> float:
    n = sum(int(np.prod(np.shape(t))) for t in tensors.values())
    return sum(np.asarray(t).nbytes for t in tensors.values()) * 8 / max(1, n)
