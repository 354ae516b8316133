"""Where :func:`quantpress.compress` runs the per-tensor work: in this process ("local") or as
Ray tasks on a local or remote Ray cluster ("ray").

The Ray plan (docs/scaling.md): the driver lists the tensors and chooses every plan, as the local
run does. Every task opens the input itself (``qp.open_model``, memory-mapped) and compresses its
tensors one at a time, measuring their error.

* Sharded output: the shard cuts are planned before anything runs, from the predicted sizes
  (``sharded_container.plan_layout``), and the local writer cuts at the same tensors. Each output
  shard has one writer (a long-lived pool actor holding no CPU, see :func:`pool`) that **writes
  its shard itself** (atomically, under a hidden name in the output's staging folder) with the
  same container writer and header room as the local run. It cuts its tensors into units of
  about ``UNIT_BYTES`` input bytes,
  runs them as CPU tasks (a few in flight) and writes their entries in order as they come back,
  so the work is spread in small units whatever the shard size; it returns only the per-tensor
  reports. The driver moves the shards to their final names and writes the index last. The
  output is byte-identical to the local run.
* One output file: the tensors are cut, in file order, into *units* of about ``UNIT_BYTES``
  input bytes; each unit is a task that returns its compressed entries through the object store,
  and the driver adds them to the same writer the local run uses, in file order.

Fault tolerance: Ray re-runs a task whose worker died (``max_retries``), and the deterministic
kernels give the same bytes again. A unit task writes nothing; a writer task killed mid-shard
leaves at most a temporary file in the staging folder, which the driver removes with it, and
the retry writes the whole shard again.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any, Callable, Iterator, Optional

import numpy as np

from ._core import QuantpressError

UNIT_BYTES = 64 * 2**20
"""Input bytes per Ray task (a larger tensor is a task of its own)."""

MAX_RETRIES = 3
"""How often Ray re-runs a task whose worker died."""

EXECUTORS = ("local", "ray")

STOP_NAME = ".stop"
"""In the staging folder of a sharded run: the run failed, shard writers stop (:func:`stop_path`)."""


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
    from .sharded_container import dtype_bytes, plan_layout

    return plan_layout([(name, int(np.prod(shape, dtype=np.int64)) * dtype_bytes(dtype)) for name, shape, dtype in listing],
                       unit_bytes)


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


def _compressed(src: str, names: list[str], plans: dict[str, Any], fault_marker: Optional[str]) -> Iterator[tuple[Any, Any, Any]]:
    """``(TensorReport, entry, dtype)`` of each of ``names`` of ``src`` (opened here,
    memory-mapped), in order, one at a time.

    ``fault_marker`` (tests only): if that file does not exist yet, create it and kill this
    worker process mid-task, to exercise Ray's retry."""
    from .formats import open_model
    from .pipeline import _compress_one

    _use_task_cpus()
    with open_model(src) as model:
        for i, name in enumerate(names):
            if fault_marker is not None and i == len(names) - 1 and not os.path.exists(fault_marker):
                open(fault_marker, "w").close()
                os._exit(1)
            sink = _Collector()
            row = _compress_one(sink, name, model[name].numpy(), plans[name])
            _, entry, dtype = sink.entries[0]
            yield row, entry, dtype


def compress_unit(src: str, names: list[str], plans: dict[str, Any], fault_marker: Optional[str] = None) -> list[tuple[Any, Any, Any]]:
    """One task: compresses ``names`` of ``src`` with their plans; returns ``[(TensorReport,
    entry, dtype)]`` in the order of ``names`` (see :func:`_compressed`)."""
    return list(_compressed(src, names, plans, fault_marker))


def compress_unit_at(src: str, names: list[str], plans: dict[str, Any], path: str, pos: int,
                     fault_marker: Optional[str] = None) -> list[tuple[Any, Any, Any]]:
    """One task that writes its own output: compresses ``names`` of ``src`` and writes their
    stored parts into the shard file ``path`` from byte ``pos`` on (where the shard's writer
    planned them); returns ``[(TensorReport, record, parts)]`` for
    :meth:`~quantpress.container.ContainerWriter.place`, no tensor data. A retried task
    rewrites the same bytes."""
    from .container import write_parts_at

    out = []
    fd = os.open(path, os.O_WRONLY)
    try:
        for row, entry, dtype in _compressed(src, names, plans, fault_marker):
            record, parts, pos = write_parts_at(fd, pos, row.name, entry, dtype)
            out.append((row, record, parts))
    finally:
        os.close(fd)
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


def write_output_shard(src: str, path: str, units: list[list[str]], plans: dict[str, Any], reserve: int,
                       window: int, fault_marker: Optional[str] = None,
                       unit_bytes: Optional[list[int]] = None) -> tuple[list[Any], list[str], int]:
    """The writer of one shard of a sharded run (a pool actor, no CPU of its own): compresses the
    ``units`` of its shard as Ray tasks and writes the container shard ``path`` (atomically;
    the same writer and header room as the local run); returns ``(reports, stored names,
    bytes)``.

    With ``unit_bytes`` (each unit's stored bytes, known exactly from the shapes and plans) the
    tasks write their data into the shard themselves (:func:`compress_unit_at`, each at its
    planned offset, at most ``window`` in flight) and return only metadata, which the writer places
    in order; the header is the same as the local run's, so the file is too. Without it the
    tasks return their entries (:func:`compress_unit`, at most ``window`` in flight, so the
    finished but unwritten entries stay few) and the writer writes them."""
    import ray

    from .sharded_container import write_shard

    if unit_bytes is not None:
        return _write_placed_shard(ray, src, path, units, plans, reserve, window, unit_bytes, fault_marker)
    task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(compress_unit)
    plans_ref = ray.put(plans)
    stop = stop_path(path)
    rows: list[Any] = []
    pending: deque[Any] = deque()

    def entries() -> Any:
        submitted = 0
        while submitted < len(units) or pending:
            while submitted < len(units) and len(pending) < window:
                pending.append(task.remote(src, units[submitted], plans_ref, fault_marker))
                submitted += 1
            for row, entry, dtype in ray_get(ray, pending.popleft()):
                rows.append(row)
                yield row.name, entry, dtype
            check_not_stopped(stop)

    try:
        stored, size = write_shard(path, entries(), reserve)
    finally:
        drain(ray, pending)
    return rows, stored, size


def _write_placed_shard(ray: Any, src: str, path: str, units: list[list[str]], plans: dict[str, Any], reserve: int,
                        window: int, unit_bytes: list[int], fault_marker: Optional[str]) -> tuple[list[Any], list[str], int]:
    """:func:`write_output_shard` with tasks that write their own data (see there)."""
    from .container import ContainerWriter

    task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(compress_unit_at)
    plans_ref = ray.put(plans)
    stop = stop_path(path)
    rows: list[Any] = []
    stored: list[str] = []
    pending: deque[Any] = deque()
    try:
        with ContainerWriter(path, reserve=reserve) as w:
            body, pos = w.data_start
            submitted = 0
            for n in unit_bytes:
                while submitted < len(units) and len(pending) < window:
                    pending.append(task.remote(src, units[submitted], plans_ref, body, pos, fault_marker))
                    pos += unit_bytes[submitted]
                    submitted += 1
                got = 0
                for row, record, parts in ray_get(ray, pending.popleft()):
                    rows.append(row)
                    got += w.place(row.name, record, parts)
                    stored += [p[0] for p in parts]
                if got != n:
                    raise QuantpressError(f"{path}: a unit stored {got} bytes where {n} were planned")
                check_not_stopped(stop)
            size = w.data_start[1] - reserve
    finally:
        drain(ray, pending)
    return rows, stored, size


def drain(ray: Any, refs: Any) -> None:
    """Waits until each of ``refs`` has ended, however it ended, without fetching results.

    Used where a failed run has work in flight, instead of ``ray.cancel``: cancelling a task
    that is finishing at that moment can abort the driver process (a Ray bug, "Check failed:
    it != submissible_tasks_.end()", ray-project/ray#54846, seen here with Ray 2.60). In-flight
    work is bounded (a window of units per writer, writers told to stop), so this is short."""
    refs = list(refs)
    if refs:
        ray.wait(refs, num_returns=len(refs), fetch_local=False)


def stop_path(shard_path: str) -> str:
    """The file whose existence tells the shard writers of a run (whose shards are staged in
    the same folder) to stop: another shard failed."""
    return os.path.join(os.path.dirname(shard_path), STOP_NAME)


def check_not_stopped(stop: str) -> None:
    if os.path.exists(stop):
        raise QuantpressError("stopped: another shard of this run failed")


def ray_get(ray: Any, ref: Any) -> Any:
    """``ray.get(ref)``; a task's :class:`QuantpressError` is raised as itself, any other
    failure as a :class:`QuantpressError` saying so."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        while isinstance(cause, ray.exceptions.RayTaskError):  # raised by a nested task
            cause = getattr(cause, "cause", None)
        raise (cause if isinstance(cause, QuantpressError) else QuantpressError(f"a Ray task failed: {cause or e}")) from None


def task_cpus(ray: Any, tasks: int) -> int:
    """CPUs (and Rust threads) per task when ``tasks`` tasks share the cluster: all of them
    busy even with fewer tasks than CPUs, at most one node's worth."""
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    node = max([int(n["Resources"].get("CPU", 1)) for n in ray.nodes() if n.get("Alive")] or [1])
    return max(1, min(node, cpus // max(1, tasks)))


class PoolWorker:
    """A long-lived Ray actor of the quantpress pool: runs the module-level function given to
    :meth:`call` with the actor's cache dict as first argument (where a k-means fit keeps its
    open shards, ``kmeans_shards.actor_partials``; a shard writer, :func:`actor_write_shard`,
    ignores it)."""

    def __init__(self) -> None:
        self.cache: dict[str, Any] = {}

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(self.cache, *args)


_POOL: dict[str, list[Any]] = {}
"""The :class:`PoolWorker` actors of each Ray connection (they live as long as it)."""


def pool_key(ray: Any) -> str:
    """This connection: a new local cluster has a new node id, a new connection a new job id."""
    ctx = ray.get_runtime_context()
    return f"{ctx.get_node_id()}:{ctx.get_job_id()}"


def pool(ray: Any, size: int) -> list[Any]:
    """``size`` pool actors, started on first use and reused by later runs (a new actor costs a
    worker process start, ~1 s). Actors take no CPU while alive (Ray's default), so an idle
    pool never blocks other Ray work; they are spread over the nodes. One whose worker dies is
    restarted and its call retried."""
    actors = _POOL.setdefault(pool_key(ray), [])
    cls = ray.remote(max_restarts=MAX_RETRIES, max_task_retries=MAX_RETRIES, scheduling_strategy="SPREAD")(PoolWorker)
    while len(actors) < size:
        actors.append(cls.remote())
    return actors[:size]


def actor_write_shard(_cache: dict[str, Any], *args: Any) -> Any:
    """:func:`write_output_shard` run by a pool actor."""
    return write_output_shard(*args)


def run_ray_shards(src: str, listing: list[tuple[str, tuple[int, ...], str]], plans: dict[str, Any], writer: Any,
                   progress: Optional[Callable[[int, int, str], None]], offset: int, address: Optional[str],
                   fault_marker: Optional[str] = None) -> list[Any]:
    """A sharded run: one writer per planned output shard (a pool actor, at most one per cluster
    CPU at a time) writes it from its units (see the module doc); ``writer`` (a
    :class:`~quantpress.sharded_container.ShardedWriter` with a layout) adopts the shards, in any
    order, and its ``close`` names them and writes the index. Returns the per-tensor reports in
    file order; progress is reported per tensor as shards finish."""
    from .sharded_container import predicted_bytes, size_is_exact

    ray = ensure_ray(address)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    free = pool(ray, cpus)
    sizes = {name: (shape, dtype) for name, shape, dtype in listing}
    jobs = list(enumerate(writer.layout, 1))
    window = max(2, -(-2 * cpus // max(1, min(len(jobs), cpus))))  # units in flight per writer
    pending: dict[Any, tuple[int, Any]] = {}
    done_rows: dict[int, list[Any]] = {}
    count = 0
    try:
        while jobs or pending:
            while jobs and free:
                k, names = jobs.pop(0)
                parts = units([(n, *sizes[n]) for n in names], UNIT_BYTES)
                sub = {n: plans[n] for n in names}
                placed = None  # each unit's stored bytes, where the shapes and plans fix them
                if all(size_is_exact(plans[n]) for n in names):
                    placed = [sum(predicted_bytes(*sizes[n], plans[n]) for n in unit) for unit in parts]
                actor = free.pop()
                ref = actor.call.remote(actor_write_shard, src, writer.part_path(k), parts, sub, writer.reserves[k - 1], window,
                                        fault_marker, placed)
                pending[ref] = (k, actor)
            ready, _ = ray.wait(list(pending), num_returns=1)
            k, actor = pending.pop(ready[0])
            free.append(actor)
            rows, stored, size = ray_get(ray, ready[0])
            writer.adopt(k, stored, size)
            done_rows[k] = rows
            for row in rows:
                count += 1
                if progress is not None:
                    progress(offset + count, offset + len(listing), row.name)
    finally:
        if pending:  # failed: the other writers stop after their current unit
            open(stop_path(writer.part_path(1)), "w").close()
            drain(ray, pending)
    return [row for k in sorted(done_rows) for row in done_rows[k]]


def run_ray(src: str, listing: list[tuple[str, tuple[int, ...], str]], plans: dict[str, Any], writer: Any,
            progress: Optional[Callable[[int, int, str], None]], offset: int, address: Optional[str],
            fault_marker: Optional[str] = None) -> list[Any]:
    """Compresses every tensor as Ray tasks and adds the results to ``writer`` in file order
    (or, for a sharded writer with a layout, :func:`run_ray_shards`); returns the per-tensor
    reports in file order. Progress is reported as results are written."""
    if getattr(writer, "layout", None) is not None:
        return run_ray_shards(src, listing, plans, writer, progress, offset, address, fault_marker)
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
            ready[pending.pop(done[0])] = ray_get(ray, done[0])
            while written in ready:  # write in file order, whatever order the tasks finish in
                for row, entry, dtype in ready.pop(written):
                    writer.add(row.name, entry, dtype=dtype)
                    rows.append(row)
                    if progress is not None:
                        progress(offset + len(rows), offset + len(listing), row.name)
                written += 1
    finally:
        drain(ray, pending)
    return rows


__all__ = ["EXECUTORS", "UNIT_BYTES", "compress_unit", "require_ray", "run_ray", "PoolWorker", "pool", "run_ray_shards", "task_cpus",
           "units", "write_output_shard"]
