"""Model compression end to end: read a model one tensor at a time, apply the recipe's plan,
stream the result into a container, and report size and error per tensor.

Only one source tensor (with its float32 copy and its decoded check) is in memory at a time, so
peak memory follows the largest tensor, not the model. The input is read through
:func:`_iter_tensors`, the one place that knows the input format.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Mapping, Optional, Union

import numpy as np

from ._arrays import as_float32, dtype_name
from ._core import QuantpressError
from .container import _ST_DTYPES, ContainerWriter, Entry, GGUFTensor, load
from .gguf import gguf_quantize
from .prune import prune
from .recipe import Plan, Recipe, get_recipe
from .scalar import quantize
from .weight_vq import vq_quantize

PathLike = Union[str, "os.PathLike[str]"]
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class TensorReport:
    """What happened to one tensor: method, sizes and the error of its decoded values."""

    name: str
    method: str
    shape: tuple[int, ...]
    dtype: str
    input_bytes: int
    output_bytes: int
    rel_error: float
    sqnr_db: float

    @property
    def bits_per_weight(self) -> float:
        return self.output_bytes * 8 / max(1, math.prod(self.shape))


@dataclass(frozen=True)
class Report:
    """The result of :func:`compress`: one :class:`TensorReport` per tensor and the totals.

    Example:
        >>> from quantpress.pipeline import Report, TensorReport
        >>> t = TensorReport("w", "int4 g128 affine rtn", (64, 128), "float32", 32768, 4352, 0.08, 21.9)
        >>> r = Report((t,), input_bytes=32768, output_bytes=5000, seconds=0.5)
        >>> round(r.bits_per_weight, 3), r.gbps
        (4.25, 6.5536e-05)
    """

    tensors: tuple[TensorReport, ...]
    input_bytes: int
    output_bytes: int
    seconds: float

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per source element over the whole model (file header excluded)."""
        n = sum(math.prod(t.shape) for t in self.tensors)
        return sum(t.output_bytes for t in self.tensors) * 8 / max(1, n)

    @property
    def gbps(self) -> float:
        """Input gigabytes (1e9) processed per second."""
        return self.input_bytes / 1e9 / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (infinite SQNR of exact tensors becomes ``None``)."""
        rows = [{**asdict(t), "shape": list(t.shape), "bits_per_weight": t.bits_per_weight,
                 "sqnr_db": t.sqnr_db if math.isfinite(t.sqnr_db) else None} for t in self.tensors]
        return {"tensors": rows, "input_bytes": self.input_bytes, "output_bytes": self.output_bytes,
                "seconds": self.seconds, "bits_per_weight": self.bits_per_weight, "gbps": self.gbps}


def _list_tensors(path: str) -> list[tuple[str, tuple[int, ...], str]]:
    """``(name, shape, dtype name)`` of every input tensor, from the header only (block-quantized
    GGUF tensors read as float32)."""
    from .formats import open_model

    with open_model(path) as model:
        return [(name, tuple(t.shape), dtype_name(np.dtype(t.numpy_dtype or np.float32))) for name, t in model.items()]


def _iter_tensors(path: str) -> Iterator[tuple[str, np.ndarray]]:
    """Yields ``(name, array)`` one tensor at a time from any file ``qp.open_model`` reads
    (safetensors, GGUF, PyTorch, NumPy), memory-mapped where the format allows."""
    from .formats import open_model

    with open_model(path) as model:
        for name, tensor in model.items():
            yield name, tensor.numpy()


def apply_plan(plan: Plan, w: np.ndarray) -> Entry:
    """Compresses one tensor as ``plan`` says (a kept tensor is returned as is)."""
    p = plan.params
    if plan.method == "scalar":
        return quantize(w, bits=p["bits"], group_size=p["group_size"], scheme=p["scheme"], axis=p["axis"],
                        scale_dtype=p["scale_dtype"], method=p["algorithm"], double_quant=p["double_quant"])
    if plan.method == "gguf":
        return GGUFTensor(gguf_quantize(w, p["type"]), p["type"], w.shape, dtype_name(w.dtype))
    if plan.method == "vq":
        return vq_quantize(w, dim=p["dim"], bits_per_weight=p["bits_per_weight"], row_scale=p["row_scale"],
                           residual_stages=p["residual_stages"], seed=p["seed"], n_iter=p["n_iter"])
    if plan.method == "sparse":
        q = None if p["bits"] is None else {"bits": p["bits"], "group_size": p["group_size"], "scheme": p["scheme"]}
        return prune(w, sparsity=p["sparsity"], method=p["prune"], n=p["n"], m=p["m"], quantize=q, dtype=p["value_dtype"])
    return w


def error_stats(w: np.ndarray, approx: np.ndarray, step: int = 2**16) -> tuple[float, float, float]:
    """``(relative L2 error, SQNR in dB, cosine similarity)`` of ``approx`` against ``w``.

    Float32 dot products over chunks of ``step`` values, summed in float64 (relative error of a
    sum about ``1e-7 * sqrt(step)``: plenty for a report), with no full-size temporaries."""
    x, y = np.asarray(w).reshape(-1), np.asarray(approx).reshape(-1)
    if x.shape != y.shape:
        raise QuantpressError(f"shapes differ: {np.shape(w)} vs {np.shape(approx)}")
    sig = cross = yy = err = 0.0
    d = np.empty(min(step, x.size), np.float32)
    for i in range(0, x.size, step):
        xs = np.asarray(x[i:i + step], np.float32)
        ys = np.asarray(y[i:i + step], np.float32)
        ds = np.subtract(xs, ys, out=d[:xs.size])
        sig += float(np.dot(xs, xs))
        cross += float(np.dot(xs, ys))
        yy += float(np.dot(ys, ys))
        err += float(np.dot(ds, ds))
    rel = math.sqrt(err / sig) if sig > 0 else (0.0 if err == 0 else float("inf"))
    sqnr = float("inf") if err == 0 else (10 * math.log10(sig / err) if sig > 0 else float("-inf"))
    cos = cross / math.sqrt(sig * yy) if sig > 0 and yy > 0 else (1.0 if sig == yy == 0 else 0.0)
    return rel, sqnr, cos


def compress(src: PathLike, dst: PathLike, recipe: Union[str, PathLike, Mapping[str, Any], Recipe] = "int4",
             progress: Optional[Progress] = None) -> Report:
    """Compresses a safetensors model into a quantpress container, one tensor at a time.

    Each tensor gets the plan the recipe picks for its name, shape and dtype; the output is
    written atomically (nothing appears at ``dst`` unless the whole model succeeds) and the input
    is only read. Every compressed tensor is decoded once to measure its error.

    Args:
        src: input ``.safetensors`` file (float32, float16, bfloat16 or other dtypes).
        dst: output container path (must not be ``src``).
        recipe: a preset name (``"int8"``, ``"int4"``, ``"nf4"``, ``"q4_k"``, ``"q4_k_m"``,
            ``"vq2"``), a ``.toml`` recipe file, a dict of rules or a ``Recipe``.
        progress: called as ``progress(done, total, name)`` after each tensor.

    Returns:
        A :class:`Report` with per-tensor method, bits per weight, relative error and SQNR, and
        the totals (input and output bytes, seconds, GB/s).

    Raises:
        FileNotFoundError: ``src`` does not exist.
        QuantpressError: an unknown recipe, an unreadable input, ``dst`` equal to ``src``, or a
            tensor the method rejects (NaN/Inf ...); the message names the tensor.

    Example:
        >>> import numpy as np, quantpress as qp, tempfile, os
        >>> from safetensors.numpy import save_file
        >>> d = tempfile.mkdtemp()
        >>> rng = np.random.default_rng(0)
        >>> save_file({"fc.weight": rng.standard_normal((256, 512)).astype(np.float32),
        ...            "fc.bias": np.zeros(256, np.float32)}, os.path.join(d, "in.safetensors"))
        >>> rep = qp.compress(os.path.join(d, "in.safetensors"), os.path.join(d, "out.safetensors"), "int4")
        >>> [(t.name, t.method) for t in rep.tensors]
        [('fc.bias', 'keep'), ('fc.weight', 'int4 g128 affine rtn')]
        >>> round(rep.tensors[1].bits_per_weight, 3), rep.tensors[1].sqnr_db > 15
        (4.25, True)
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if not os.path.exists(src):
        raise FileNotFoundError(src)
    if os.path.exists(dst) and os.path.samefile(src, dst):
        raise QuantpressError(f"{dst}: the output would replace the input; choose another path")
    rec = get_recipe(recipe)
    listing = _list_tensors(src)
    plans = rec.plan_all(listing)
    start = time.perf_counter()
    rows: list[TensorReport] = []
    with ContainerWriter(dst) as writer:
        for i, (name, w) in enumerate(_iter_tensors(src)):
            rows.append(_compress_one(writer, name, w, plans[name]))
            if progress is not None:
                progress(i + 1, len(listing), name)
    seconds = time.perf_counter() - start
    return Report(tuple(rows), sum(r.input_bytes for r in rows), os.path.getsize(dst), seconds)


def _compress_one(writer: ContainerWriter, name: str, w: np.ndarray, plan: Plan) -> TensorReport:
    dtype = dtype_name(w.dtype)
    try:
        entry = apply_plan(plan, w)
        stored = writer.add(name, entry, dtype=dtype)
        if plan.method == "keep":
            rel, sqnr = 0.0, float("inf")
        else:
            x, _ = as_float32(w)
            rel, sqnr, _ = error_stats(x, entry.dequantize())  # type: ignore[union-attr]
    except QuantpressError as e:
        raise QuantpressError(f"tensor {name!r} ({plan.describe()}): {e}") from None
    return TensorReport(name, plan.describe(), tuple(w.shape), dtype, int(w.nbytes), stored, rel, sqnr)


def evaluate(original: PathLike, compressed: PathLike) -> list[dict[str, Any]]:
    """Per-tensor ``{name, method, shape, rel_error, sqnr_db, cosine}`` of a compressed model
    (any file :func:`quantpress.load` opens) against the original safetensors file, decoding one
    tensor at a time. Every tensor of the original must be in the compressed file.

    Example:
        >>> import numpy as np, quantpress as qp, tempfile, os
        >>> from quantpress.pipeline import evaluate
        >>> d = tempfile.mkdtemp(); src = os.path.join(d, "a.safetensors")
        >>> qp.save_compressed(src, {"w": np.ones((64, 64), np.float32)})
        >>> evaluate(src, src)[0]["cosine"]
        1.0
    """
    a, b = load(original), load(compressed)
    missing = [n for n in a if n not in b]
    if missing:
        raise QuantpressError(f"{os.fspath(compressed)}: has no tensor {missing[0]!r} of {os.fspath(original)}")
    out = []
    for name in a:
        x, y = a[name], b[name]
        if tuple(x.shape) != tuple(y.shape):
            raise QuantpressError(f"tensor {name!r}: shape {x.shape} in the original, {y.shape} in the compressed file")
        rel, sqnr, cos = error_stats(x, y)
        info = b.info(name) if hasattr(b, "info") else {"method": "?"}
        out.append({"name": name, "method": info["method"], "shape": list(x.shape), "rel_error": rel,
                    "sqnr_db": sqnr if math.isfinite(sqnr) else None, "cosine": cos})
    return out
