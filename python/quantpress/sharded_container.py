"""Sharded quantpress containers: several container files plus a Hugging Face style index.

Layout of a sharded output directory (docs/format.md, "Sharded container")::

    model-00001-of-00003.safetensors   each a complete container (format 1) of whole tensors
    model-00002-of-00003.safetensors
    model-00003-of-00003.safetensors
    model.safetensors.index.json       {"metadata": {"total_size": N, "quantpress.format_version": "1"},
                                        "weight_map": {stored tensor name: shard file}}

Where the shards are cut is planned before anything is compressed (:func:`plan_layout`), from
each tensor's stored bytes predicted from its shape and plan (:func:`predicted_bytes`: exact for
every method but pruning, an upper bound for pruning), so the local run and the Ray run (where
each worker writes its own shards, quantpress/executor.py) cut at the same tensors and write the
same bytes. Shards are written, each atomically and fsynced, under hidden names in a hidden
staging folder (``.quantpress-staging/model-00001.safetensors.part``); when the last one is done
they are moved to their ``-of-N`` names, the staging folder (and whatever a killed worker left
in it) is removed, the folder is fsynced, and the index is written last (temporary file, fsync,
rename). An interrupted run therefore never leaves an index, and without an index a directory
with several shards is refused by every reader here, so no half model can be loaded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any, Iterator, Optional, Union

import numpy as np

from ._core import QuantpressError
from .container import FORMAT_VERSION, VERSION_KEY, AtomicWriter, Container, ContainerWriter, Entry, _encode
from .formats import sharded

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 10**3, "m": 10**6, "g": 10**9}


def parse_size(size: Union[int, str]) -> int:
    """Bytes of a size such as ``2GB`` (10^9), ``2GiB`` (2^30), ``500MB``, ``1.5GB`` or ``1000``.

    Example:
        >>> parse_size("2GB"), parse_size("2GiB"), parse_size("500 MB"), parse_size(4096)
        (2000000000, 2147483648, 500000000, 4096)
    """
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        n = int(size)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(size))
        if m is None or m.group(2).lower() not in _UNITS:
            raise QuantpressError(f"cannot read the size {size!r} (examples: 500MB, 2GB, 2GiB, 1000000)")
        n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n <= 0:
        raise QuantpressError(f"a shard size must be positive, got {size!r}")
    return n


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms whose directories cannot be opened
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def predicted_bytes(shape: tuple[int, ...], dtype: str, plan: Any) -> int:
    """The bytes a tensor of ``shape`` and ``dtype`` stores under ``plan`` (a
    :class:`~quantpress.recipe.Plan`), from the shape alone: exact for ``keep``, ``scalar``,
    ``gguf``, ``vq`` and magnitude or N:M pruning; an upper bound for row/column pruning.

    Example:
        >>> from quantpress.recipe import Plan
        >>> predicted_bytes((64, 256), "float32", Plan("scalar", {"bits": 4, "group_size": 128}))
        8704
    """
    n = int(np.prod(shape, dtype=np.int64))
    p = plan.params
    if plan.method == "keep":
        return n * dtype_bytes(dtype)
    if plan.method == "scalar":
        return _scalar_bytes(n, shape, p["bits"], p["group_size"], p["axis"], p["scheme"], p["scale_dtype"], p["double_quant"])
    if plan.method == "gguf":
        from .gguf import GGUF_TYPES

        block, nbytes = GGUF_TYPES[p["type"]]
        return -(-n // block) * nbytes
    if plan.method == "vq":
        from .vq import code_dtype
        from .weight_vq import _codebook_size

        k = _codebook_size(p["dim"], p["bits_per_weight"], p["residual_stages"])
        scales = 2 * (n // shape[-1]) if p["row_scale"] else 0
        return n // p["dim"] * p["residual_stages"] * code_dtype(k).itemsize + p["residual_stages"] * k * p["dim"] * 2 + scales
    return _sparse_bytes(n, shape, p)


def size_is_exact(plan: Any) -> bool:
    """Whether :func:`predicted_bytes` is exact for ``plan`` (everything but row/column pruning,
    whose kept count depends on the data)."""
    return plan.method != "sparse" or plan.params["prune"] in ("magnitude", "nm")


def _sparse_bytes(n: int, shape: tuple[int, ...], p: Any) -> int:
    """A pruned tensor: the kept count is fixed by the shape for ``magnitude`` and ``nm`` (exact);
    for row/column pruning every value is counted (an upper bound)."""
    from .prune import keep_count

    if p["prune"] == "magnitude":
        kept, meta = keep_count(n, p["sparsity"]), -(-n // 8)  # a bitmask
    elif p["prune"] == "nm":
        kept = n // p["m"] * p["n"]
        meta = -(-kept * max(1, (p["m"] - 1).bit_length()) // 8)  # packed in-group positions
    else:
        kept, meta = n, 8 * sum(shape)
    if p["bits"] is None:
        return meta + kept * dtype_bytes(p["value_dtype"])
    g = p["group_size"]
    padded = kept if g is None else -(-kept // g) * g
    return meta + _scalar_bytes(padded, (padded,), p["bits"], g, 0, p["scheme"], "float16", False)


def _scalar_bytes(n: int, shape: tuple[int, ...], bits: int, group: Optional[int], axis: Optional[int], scheme: str,
                  scale_dtype: str, double_quant: bool) -> int:
    """Packed codes, then one scale (and zero point, affine) per group."""
    groups = 1 if axis is None else n // (shape[axis] if group is None else group)
    codes = -(-n * bits // 8)
    if double_quant:  # uint8 scale codes, a float32 absmax per 256 of them, one float32 offset
        return codes + groups + 4 * -(-groups // 256) + 4
    per = 4 if scale_dtype == "float32" else 2
    return codes + groups * per * (2 if scheme == "affine" else 1)


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a dtype name (bfloat16 and other names NumPy lacks by their width)."""
    try:
        return np.dtype(dtype).itemsize
    except TypeError:  # bfloat16 and other names NumPy lacks
        return 2 if "16" in dtype else 1 if "8" in dtype else 4


def plan_layout(sizes: list[tuple[str, int]], max_shard_size: int) -> list[list[str]]:
    """``(name, bytes)`` in file order cut into shards: a new shard whenever the next tensor
    would take a non-empty one over ``max_shard_size`` (a larger tensor gets one of its own).

    Example:
        >>> plan_layout([("a", 40), ("b", 50), ("c", 20), ("d", 200), ("e", 1)], 100)
        [['a', 'b'], ['c'], ['d'], ['e']]
    """
    out: list[list[str]] = []
    size = 0
    for name, need in sizes:
        if out and out[-1] and size + need <= max_shard_size:
            out[-1].append(name)
            size += need
        else:
            out.append([name])
            size = need
    return out


STAGING = ".quantpress-staging"
"""The hidden folder, inside the output directory, where shards are written before the end."""


def shard_part_path(folder: str, prefix: str, k: int) -> str:
    """Where shard ``k`` (from 1) is written until every shard is done."""
    return os.path.join(folder, STAGING, f"{prefix}-{k:05d}.safetensors.part")


def write_shard(path: str, entries: Any, reserve: int) -> tuple[list[str], int]:
    """Writes the ``(name, entry, dtype)`` of ``entries`` (any iterable: consumed one at a time)
    as one container at ``path``, atomically and fsynced, the header in ``reserve`` bytes
    (written once); returns the stored names and the tensor bytes."""
    names: list[str] = []
    size = 0
    with ContainerWriter(path, reserve=reserve) as w:
        for name, entry, dtype in entries:
            size += w.add(name, entry, dtype)
            names += list(_encode(name, entry, dtype)[0])
    return names, size


class ShardedWriter(AtomicWriter):
    """Streams entries into container shards cut as ``layout`` says (lists of source tensor
    names, from :func:`plan_layout`; ``reserves``: each shard's header bytes), then names them
    and writes the index (see the module doc). Same ``add`` / ``close`` / ``abort`` interface as
    :class:`~quantpress.container.ContainerWriter`; :meth:`adopt` takes a shard written by
    another process (a Ray worker) with :func:`write_shard` at :meth:`part_path`.

    Without a layout, the cuts are made as entries arrive, by their stored bytes.
    ``folder`` is created if missing and must not already hold a model (an index or a
    ``.safetensors`` file): refusing is safer than mixing a new set with an old one.
    """

    def __init__(self, folder: Union[str, os.PathLike[str]], max_shard_size: Union[int, str],
                 prefix: str = "model", layout: Optional[list[list[str]]] = None,
                 reserves: Optional[list[int]] = None) -> None:
        self.folder = os.path.abspath(os.fspath(folder))
        self.max_shard_size = parse_size(max_shard_size)
        self.prefix = prefix
        if os.path.exists(self.folder) and not os.path.isdir(self.folder):
            raise QuantpressError(f"{self.folder}: sharded output goes to a directory, and this is a file")
        os.makedirs(self.folder, exist_ok=True)
        taken = sorted(n for n in os.listdir(self.folder) if n.endswith((".safetensors", ".index.json")))
        if taken:
            raise QuantpressError(f"{self.folder}: already holds {taken[0]}; choose an empty or new directory")
        shutil.rmtree(os.path.join(self.folder, STAGING), ignore_errors=True)  # left by a run that crashed
        os.makedirs(os.path.join(self.folder, STAGING))
        self.layout = layout
        self.reserves = reserves or [0] * len(layout or [])
        self._starts = {names[0]: k for k, names in enumerate(layout or []) if names}
        self._done: dict[int, tuple[list[str], int]] = {}  # shard number -> (stored names, bytes)
        self._writer: Optional[ContainerWriter] = None
        self._names: list[str] = []
        self._size = 0
        self._final: list[str] = []

    def part_path(self, k: int) -> str:
        """Where shard ``k`` (from 1) is written before :meth:`close`."""
        return shard_part_path(self.folder, self.prefix, k)

    def add(self, name: str, entry: Entry, dtype: Optional[str] = None) -> int:
        """Appends one source tensor (to a new shard where the layout, or without one the size
        limit, says so)."""
        parts, _ = _encode(name, entry, dtype)
        need = sum(int(np.asarray(a).nbytes) for a in parts.values())
        if self.layout is not None:
            new = name in self._starts and (self._writer is None or self._names)
        else:
            new = self._writer is not None and bool(self._names) and self._size + need > self.max_shard_size
        if new and self._writer is not None:
            self._finish_shard()
        if self._writer is None:
            k = len(self._done) + 1
            self._writer = ContainerWriter(self.part_path(k), reserve=self.reserves[k - 1] if k <= len(self.reserves) else 0)
        stored = self._writer.add(name, entry, dtype)
        self._names += list(parts)
        self._size += stored
        return stored

    def adopt(self, k: int, names: list[str], size: int) -> None:
        """Takes shard ``k`` (from 1), written at :meth:`part_path` by another process."""
        if not os.path.exists(self.part_path(k)):
            raise QuantpressError(f"{self.part_path(k)}: shard {k} was reported written but is missing")
        self._done[k] = (names, size)

    def _finish_shard(self) -> None:
        assert self._writer is not None
        writer, self._writer = self._writer, None
        writer.close()
        self._done[len(self._done) + 1] = (self._names, self._size)
        self._names, self._size = [], 0

    def close(self) -> None:
        """Finishes the last shard, moves the shards to their final names, writes the index."""
        if self._writer is None and not self._done:  # an empty model still gets one shard
            self._writer = ContainerWriter(self.part_path(1))
        if self._writer is not None:
            self._finish_shard()
        n = len(self._done)
        if sorted(self._done) != list(range(1, n + 1)):
            raise QuantpressError(f"{self.folder}: shards {sorted(self._done)} do not run from 1 to {n}")
        weight_map: dict[str, str] = {}
        for k in range(1, n + 1):
            final = f"{self.prefix}-{k:05d}-of-{n:05d}.safetensors"
            os.replace(self.part_path(k), os.path.join(self.folder, final))
            self._final.append(os.path.join(self.folder, final))
            weight_map.update((s, final) for s in self._done[k][0])
        shutil.rmtree(os.path.join(self.folder, STAGING), ignore_errors=True)
        _fsync_dir(self.folder)
        index = {"metadata": {"total_size": sum(b for _, b in self._done.values()), VERSION_KEY: FORMAT_VERSION},
                 "weight_map": dict(sorted(weight_map.items()))}
        self._write_index(json.dumps(index, indent=2).encode() + b"\n")

    def _write_index(self, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".index-", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, os.path.join(self.folder, sharded.INDEX_NAME))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        _fsync_dir(self.folder)

    @property
    def shards(self) -> list[str]:
        """The final shard paths (after :meth:`close`)."""
        return list(self._final)

    def abort(self) -> None:
        """Removes every shard written so far (staged or already renamed)."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        shutil.rmtree(os.path.join(self.folder, STAGING), ignore_errors=True)
        for p in self._final:
            if os.path.exists(p):
                os.unlink(p)
        self._done, self._final = {}, []


class ShardedContainer(Mapping):  # type: ignore[type-arg]
    """A loaded sharded container: one read-only mapping over the :class:`Container` of each
    shard (same ``entry``, ``info``, ``is_container`` interface). The index and every shard
    header are checked against each other before anything is decoded."""

    def __init__(self, index_path: Union[str, os.PathLike[str]]) -> None:
        self.path = os.path.abspath(os.fspath(index_path))
        meta, weight_map, files = sharded.read_index(self.path)
        self.metadata = meta
        self.shards = [Container(f) for f in files]
        sharded.check_shards(self.path, weight_map, {c.path: list(c._header) for c in self.shards})
        self._owner: dict[str, Container] = {}
        for c in self.shards:
            for name in c:
                if name in self._owner:  # two shards decode to the same source tensor
                    raise QuantpressError(f"{self.path}: tensor {name!r} is in {os.path.basename(self._owner[name].path)} "
                                          f"and {os.path.basename(c.path)}")
                self._owner[name] = c

    def entry(self, name: str) -> Entry:
        """The stored, still compressed form of ``name``."""
        return self._owner[name].entry(name)

    def info(self, name: str) -> dict[str, Any]:
        """``{method, params, shape, dtype, nbytes, bits_per_weight}`` of a source tensor."""
        return self._owner[name].info(name)

    @property
    def is_container(self) -> bool:
        return all(c.is_container for c in self.shards)

    def __getitem__(self, name: str) -> np.ndarray:
        return self._owner[name][name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._owner)

    def __len__(self) -> int:
        return len(self._owner)

    def __repr__(self) -> str:
        return f"ShardedContainer({self.path!r}, {len(self.shards)} shards, {len(self)} tensors)"


def open_container(path: str) -> Mapping[str, np.ndarray]:
    """``qp.load``'s dispatch: a directory or an index gives a :class:`ShardedContainer` (a
    directory with a single ``.safetensors`` file and no index gives that file's Container)."""
    if os.path.isdir(path):
        kind, target = sharded.find_in_directory(path)
        if kind == "split":
            raise QuantpressError(f"{path}: holds a GGUF split set, not a quantpress container")
        return ShardedContainer(target) if kind == "index" else Container(target)
    return ShardedContainer(path) if path.endswith(".json") else Container(path)


def output_bytes(path: str) -> int:
    """Bytes on disk of a container file or of every file in a sharded container's directory."""
    if not os.path.isdir(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path)
               if n.endswith((".safetensors", ".index.json")) and not n.startswith("."))


__all__ = ["STAGING", "ShardedContainer", "ShardedWriter", "open_container", "output_bytes", "parse_size", "plan_layout",
           "predicted_bytes", "shard_part_path", "write_shard"]
