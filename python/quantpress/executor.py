"""Where :func:`quantpress.compress` runs the per-tensor work: in this process ("local") or as
Ray tasks on a local or remote Ray cluster ("ray").

The Ray plan (docs/scaling.md): the driver lists the tensors and chooses every plan, as the local
run does; the tensors are cut, in file order, into *units* of about ``UNIT_BYTES`` input bytes;
each unit is one Ray task that opens the input itself (``qp.open_model``, memory-mapped),
compresses its tensors, measures their error and returns the compressed entries through the
object store. The driver adds the entries to the same writer the local run uses, in file order,
so the output (one container or a sharded directory with its index written last) is
**byte-identical** to the local run by construction.

Why the driver writes: where a sharded output cuts its shards depends on the compressed size of
every earlier tensor, known only once it is compressed; returning the compressed bytes (1/2 to
1/8 of the input) keeps the cut, the names and the headers exactly those of the local writer.

Fault tolerance: a task writes nothing, so a worker killed mid-task leaves no partial file; Ray
re-runs the task (``max_retries``) and the deterministic kernels give the same bytes again.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

import numpy as np

from ._core import QuantpressError

UNIT_BYTES = 64 * 2**20
"""Input bytes per Ray task (a larger tensor is a task of its own)."""

MAX_RETRIES = 3
"""How often Ray re-runs a task whose worker died."""

EXECUTORS = ("local", "ray")


def require_ray() -> Any:
    """The ``ray`` module, or a :class:`QuantpressError` saying what to install."""
    try:
        import ray
    except ImportError:
        raise QuantpressError("the 'ray' executor needs Ray: pip install 'quantpress[ray]'") from None
    return ray


def check_executor(executor: str) -> str:
    if executor not in EXECUTORS:
        raise QuantpressError(f"executor must be one of {', '.join(map(repr, EXECUTORS))}, got {executor!r}")
    return executor


def ensure_ray(address: Optional[str]) -> Any:
    """Connects to the Ray cluster at ``address`` (``None``: the running one, else a new local
    instance) unless this process is already connected; returns the ``ray`` module."""
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    return ray


def units(listing: list[tuple[str, tuple[int, ...], str]], unit_bytes: int = UNIT_BYTES) -> list[list[str]]:
    """The tensor names cut in file order into groups of at most ``unit_bytes`` input bytes
    (a larger tensor alone).

    Example:
        >>> units([("a", (4,), "float32"), ("b", (4,), "float32"), ("c", (8,), "float32")], 32)
        [['a', 'b'], ['c']]
    """
    out: list[list[str]] = []
    size = 0
    for name, shape, dtype in listing:
        n = int(np.prod(shape, dtype=np.int64)) * _itemsize(dtype)
        if out and size + n <= unit_bytes:
            out[-1].append(name)
            size += n
        else:
            out.append([name])
            size = n
    return out


def _itemsize(dtype: str) -> int:
    try:
        return np.dtype(dtype).itemsize
    except TypeError:  # bfloat16 and other names NumPy lacks
        return 2 if "16" in dtype else 1 if "8" in dtype else 4


class _Collector:
    """A writer stand-in for the workers: keeps each entry and reports its stored bytes exactly
    as the real writers count them."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, Any, Optional[str]]] = []

    def add(self, name: str, entry: Any, dtype: Optional[str] = None) -> int:
        from .container import _encode

        parts, _ = _encode(name, entry, dtype)
        self.entries.append((name, entry, dtype))
        return sum(int(np.asarray(a).nbytes) for a in parts.values())


def compress_unit(src: str, names: list[str], plans: dict[str, Any], fault_marker: Optional[str] = None) -> list[tuple[Any, Any, Any]]:
    """One task: compresses ``names`` of ``src`` (opened here, memory-mapped) with their plans;
    returns ``[(TensorReport, entry, dtype)]`` in the order of ``names``.

    ``fault_marker`` (tests only): if that file does not exist yet, create it and kill this
    worker process mid-task, to exercise Ray's retry."""
    from .formats import open_model
    from .pipeline import _compress_one

    _use_task_cpus()
    out = []
    with open_model(src) as model:
        for i, name in enumerate(names):
            if fault_marker is not None and i == len(names) - 1 and not os.path.exists(fault_marker):
                open(fault_marker, "w").close()
                os._exit(1)
            sink = _Collector()
            row = _compress_one(sink, name, model[name].numpy(), plans[name])
            _, entry, dtype = sink.entries[0]
            out.append((row, entry, dtype))
    return out


def _use_task_cpus() -> None:
    """Inside a Ray task: as many Rust threads as CPUs Ray gave the task (no oversubscription
    when several tasks share a node)."""
    try:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0)
    except Exception:  # not in a Ray worker
        return
    if cpus >= 1:
        from . import _core

        _core.set_num_threads(int(cpus))


def run_ray(src: str, listing: list[tuple[str, tuple[int, ...], str]], plans: dict[str, Any], writer: Any,
            progress: Optional[Callable[[int, int, str], None]], offset: int, address: Optional[str],
            fault_marker: Optional[str] = None) -> list[Any]:
    """Compresses every tensor as Ray tasks and adds the results to ``writer`` in file order;
    returns the per-tensor reports in file order. Progress is reported as results are written."""
    ray = ensure_ray(address)
    task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(compress_unit)
    groups = units(listing, UNIT_BYTES)
    plans_ref = ray.put(plans)
    window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    pending: dict[Any, int] = {}
    ready: dict[int, list[Any]] = {}
    rows: list[Any] = []
    submitted = written = 0
    try:
        while written < len(groups):
            while submitted < len(groups) and len(pending) < window:
                pending[task.remote(src, groups[submitted], plans_ref, fault_marker)] = submitted
                submitted += 1
            done, _ = ray.wait(list(pending), num_returns=1)
            ready[pending.pop(done[0])] = ray.get(done[0])
            while written in ready:  # write in file order, whatever order the tasks finish in
                for row, entry, dtype in ready.pop(written):
                    writer.add(row.name, entry, dtype=dtype)
                    rows.append(row)
                    if progress is not None:
                        progress(offset + len(rows), offset + len(listing), row.name)
                written += 1
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        raise (cause if isinstance(cause, QuantpressError) else QuantpressError(f"a Ray task failed: {cause or e}")) from None
    finally:
        for ref in pending:
            ray.cancel(ref)
    return rows


__all__ = ["EXECUTORS", "UNIT_BYTES", "compress_unit", "require_ray", "run_ray", "units"]
