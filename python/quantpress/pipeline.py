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

from . import _core
from ._arrays import _FLOATS, as_float32, dtype_name
from ._core import QuantpressError
from .container import _ST_DTYPES, ContainerWriter, Entry, GGUFTensor, load
from .executor import check_executor, require_ray, run_ray
from .gguf import gguf_quantize
from .prune import prune
from .recipe import Plan, Recipe, get_recipe
from .scalar import QuantizedTensor, _layout, quantize
from .sharded_container import ShardedWriter, output_bytes, parse_size, plan_layout, predicted_bytes
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


def error_stats(w: np.ndarray, approx: np.ndarray) -> tuple[float, float, float]:
    """``(relative L2 error, SQNR in dB, cosine similarity)`` of ``approx`` against ``w``.

    Products and sums in float64 (Rust, parallel over fixed chunks: the same figures for any
    thread count), with no temporaries beyond float32 views of the inputs."""
    x, y = np.asarray(w), np.asarray(approx)
    if x.shape != y.shape:
        raise QuantpressError(f"shapes differ: {np.shape(w)} vs {np.shape(approx)}")
    return _stats(*_core.error_sums(_flat32(x), _flat32(y)))


def _flat32(a: np.ndarray) -> np.ndarray:
    """``a`` as a flat C-contiguous float32 array (a view when it is one already)."""
    return np.ascontiguousarray(a.reshape(-1), dtype=np.float32)


def _stats(sig: float, cross: float, yy: float, err: float) -> tuple[float, float, float]:
    """Relative error, SQNR and cosine from the sums of :func:`quantpress._core.error_sums`."""
    rel = math.sqrt(err / sig) if sig > 0 else (0.0 if err == 0 else float("inf"))
    sqnr = float("inf") if err == 0 else (10 * math.log10(sig / err) if sig > 0 else float("-inf"))
    cos = cross / math.sqrt(sig * yy) if sig > 0 and yy > 0 else (1.0 if sig == yy == 0 else 0.0)
    return rel, sqnr, cos


def entry_error(x: np.ndarray, entry: Entry) -> tuple[float, float, float]:
    """:func:`error_stats` of a compressed ``entry`` against its float32 source ``x``. Scalar
    (RTN, MSE, HQQ, NF4) entries are decoded chunk by chunk inside the sums, never as a whole
    copy; the figures equal those of ``error_stats(x, entry.dequantize())`` to ~1e-15."""
    if not isinstance(entry, QuantizedTensor):
        return error_stats(x, entry.dequantize())  # type: ignore[union-attr]
    ax, g, _ = _layout(entry.shape, entry.axis, entry.group_size)
    moved = x if ax < 0 or ax == x.ndim - 1 else np.moveaxis(x, ax, -1)
    scales = entry.scale_values().reshape(-1)
    zeros = None if entry.zeros is None else np.asarray(entry.zeros, scales.dtype).reshape(-1)
    sums = _core.rtn_error_sums(_flat32(moved), entry.codes, scales, zeros, int(entry.bits), g, entry.scheme)
    return _stats(*sums)


def compress(src: PathLike, dst: PathLike, recipe: Union[str, PathLike, Mapping[str, Any], Recipe, None] = None,
             progress: Optional[Progress] = None, max_shard_size: Union[int, str, None] = None, *,
             target_bpw: Optional[float] = None, budget_options: Optional[Mapping[str, Any]] = None,
             executor: str = "local", ray_address: Optional[str] = None, _fault_marker: Optional[str] = None) -> Report:
    """Compresses a safetensors model into a quantpress container, one tensor at a time.

    Each tensor gets the plan the recipe picks for its name, shape and dtype; the output is
    written atomically (nothing appears at ``dst`` unless the whole model succeeds) and the input
    is only read. Every compressed tensor is decoded once to measure its error.

    Args:
        src: input model: any file, directory, safetensors index or GGUF split set
            ``qp.open_model`` reads (float32, float16, bfloat16 or other dtypes).
        dst: output container path (must not be ``src``); with ``max_shard_size``, a directory
            (created if missing, must not already hold a model).
        recipe: a preset name (``"int8"``, ``"int4"``, ``"nf4"``, ``"q4_k"``, ``"q4_k_m"``,
            ``"vq2"``), a ``.toml`` recipe file, a dict of rules or a ``Recipe`` (default
            ``"int4"``).
        progress: called as ``progress(done, total, name)`` after each tensor (with
            ``target_bpw``, after each tensor is measured and again after each is written).
        target_bpw: instead of a recipe, a size budget in stored bits per weight: each tensor
            gets the method of :data:`quantpress.budget.LADDER` that minimises the model's total
            squared error within the budget (:func:`quantpress.budget.plan_budget`; every tensor
            is compressed with each candidate once to measure it).
        budget_options: keyword arguments for :func:`quantpress.budget.plan_budget`
            (``candidates``, ``weights``, ``objective``, ``min_elements``).
        max_shard_size: ``None`` for one file; else bytes (``int``) or a size such as ``"2GB"``
            or ``"2GiB"``: ``dst`` receives ``model-0000k-of-0000N.safetensors`` container
            shards of at most that many tensor bytes (a tensor is never split) and
            ``model.safetensors.index.json``, written last (layout: sharded_container.py).
        executor: ``"local"`` (this process) or ``"ray"``: the tensors are compressed as Ray
            tasks (each opens the input itself) and the driver writes the results in order, so
            the output is byte-identical to the local run (quantpress/executor.py,
            docs/scaling.md). Needs ``pip install 'quantpress[ray]'``.
        ray_address: the Ray cluster to use (``ray.init(address=...)``); ``None`` uses the
            one this process is connected to, else starts a local one.

    Returns:
        A :class:`Report` with per-tensor method, bits per weight, relative error and SQNR, and
        the totals (input and output bytes, seconds, GB/s).

    Raises:
        FileNotFoundError: ``src`` does not exist.
        QuantpressError: an unknown recipe, an unreadable input, ``dst`` equal to ``src``, a
            tensor the method rejects (NaN/Inf ...; the message names the tensor), both a recipe
            and ``target_bpw``, or a target the candidates cannot reach.

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
    check_executor(executor)
    if executor == "ray":
        require_ray()
    listing = _list_tensors(src)
    start = time.perf_counter()
    plans, offset = _choose_plans(src, listing, recipe, target_bpw, budget_options, progress)
    rows: list[TensorReport] = []
    with _writer(dst, max_shard_size, listing, plans) as writer:
        if executor == "ray":
            rows = run_ray(src, listing, plans, writer, progress, offset, ray_address, _fault_marker)
        for i, (name, w) in enumerate(() if executor == "ray" else _iter_tensors(src)):
            rows.append(_compress_one(writer, name, w, plans[name]))
            if progress is not None:
                progress(offset + i + 1, offset + len(listing), name)
    seconds = time.perf_counter() - start
    return Report(tuple(rows), sum(r.input_bytes for r in rows), output_bytes(dst), seconds)


def _writer(dst: str, max_shard_size: Union[int, str, None],
            listing: Optional[list[tuple[str, tuple[int, ...], str]]] = None,
            plans: Optional[Mapping[str, Plan]] = None) -> Any:
    """One container file (its header room reserved, so the data is written once), or a
    :class:`ShardedWriter` into the directory ``dst`` (its shards planned from the predicted
    sizes, each with its header room reserved)."""
    if max_shard_size is not None:
        if listing is None or plans is None:
            return ShardedWriter(dst, max_shard_size)
        layout = plan_layout([(n, predicted_bytes(shape, dt, plans[n])) for n, shape, dt in listing], parse_size(max_shard_size))
        rows = {row[0]: row for row in listing}
        reserves = [header_reserve([rows[n] for n in names], plans) for names in layout]
        return ShardedWriter(dst, max_shard_size, layout=layout, reserves=reserves)
    reserve = header_reserve(listing, plans) if listing is not None and plans is not None else 0
    return ContainerWriter(dst, reserve=reserve)


#: Stored parts of each method (the most a plan can produce: docs/format.md, "Container").
_PARTS = {"scalar": (".q", ".scale", ".zero"), "gguf": (".gguf",), "vq": (".codes", ".codebook", ".scale"),
          "keep": ("",)}


def header_reserve(listing: list[tuple[str, tuple[int, ...], str]], plans: Mapping[str, Plan]) -> int:
    """An upper bound on the container header of these tensors under these plans (every number
    counted at 20 digits, every parameter record at 200 characters, escaped twice), a multiple of
    8. The data then starts right after it, and the header is padded with spaces to fill it."""
    total = 256
    for name, shape, _ in listing:
        plan = plans[name]
        parts = _PARTS.get(plan.method, _PARTS["vq"])
        if plan.method == "scalar" and plan.params.get("double_quant"):
            parts = (".q", ".scale", ".scale_absmax", ".scale_offset")
        digits = 21 * (len(shape) + 3)
        total += sum(len(_json(name + p)) + 60 + digits for p in parts)
        total += len(_json(_json(name))) + 2 * (200 + digits)
    return total + (-total % 8)


def _json(text: str) -> str:
    import json

    return json.dumps(text)


def _choose_plans(src: str, listing: list[tuple[str, tuple[int, ...], str]], recipe: Any,
                  target_bpw: Optional[float], budget_options: Optional[Mapping[str, Any]],
                  progress: Optional[Progress]) -> tuple[dict[str, Plan], int]:
    """Every tensor's plan, from the recipe or the size budget, and how many progress steps that
    took (the budget measures each tensor first: those steps come before the writing ones)."""
    if target_bpw is None:
        return get_recipe("int4" if recipe is None else recipe).plan_all(listing), 0
    from .budget import plan_file

    if recipe is not None:
        raise QuantpressError("give a recipe or target_bpw, not both")
    tick = None if progress is None else (lambda d, t, n: progress(d, 2 * t, n))  # type: ignore[misc]
    return plan_file(src, target_bpw, tick, **(budget_options or {})), len(listing)


def _compress_one(writer: Any, name: str, w: np.ndarray, plan: Plan) -> TensorReport:
    dtype = dtype_name(w.dtype)
    try:
        keep = plan.method == "keep"
        x = w if keep else as_float32(w)[0]  # one float32 view (or copy) for the method and the error
        entry = apply_plan(plan, x)
        stored = writer.add(name, entry, dtype=dtype)
        rel, sqnr, _ = (0.0, float("inf"), 1.0) if keep else entry_error(x, entry)
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
        x, entry = a[name], b.entry(name) if hasattr(b, "entry") else b[name]
        if tuple(x.shape) != tuple(entry.shape):
            raise QuantpressError(f"tensor {name!r}: shape {x.shape} in the original, {entry.shape} in the compressed file")
        # The same sums as compress's report (bit for bit for scalar entries, decoded in chunks).
        if isinstance(entry, QuantizedTensor) and x.size and x.dtype in _FLOATS:
            rel, sqnr, cos = entry_error(as_float32(x)[0], entry)
        else:
            rel, sqnr, cos = error_stats(x, b[name])
        info = b.info(name) if hasattr(b, "info") else {"method": "?"}
        out.append({"name": name, "method": info["method"], "shape": list(x.shape), "rel_error": rel,
                    "sqnr_db": sqnr if math.isfinite(sqnr) else None, "cosine": cos})
    return out
