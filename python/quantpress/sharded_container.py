"""Sharded quantpress containers: several container files plus a Hugging Face style index.

Layout of a sharded output directory (docs/format.md, "Sharded container")::

    model-00001-of-00003.safetensors   each a complete container (format 1) of whole tensors
    model-00002-of-00003.safetensors
    model-00003-of-00003.safetensors
    model.safetensors.index.json       {"metadata": {"total_size": N, "quantpress.format_version": "1"},
                                        "weight_map": {stored tensor name: shard file}}

The number of shards is only known at the end (a method's output size is known once it ran),
so shards are written under hidden temporary names (``.model-00001.safetensors.part``), each
atomically and fsynced; when the last one is done they are renamed to ``-of-N`` names, the
folder is fsynced, and the index is written last (temporary file, fsync, rename). An
interrupted run therefore never leaves an index, and without an index a directory with several
shards is refused by every reader here, so no half model can be loaded.
"""

from __future__ import annotations

import json
import os
import re
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


class ShardedWriter(AtomicWriter):
    """Streams entries into container shards of at most ``max_shard_size`` tensor bytes each
    (a source tensor is never split: one larger than the limit gets a shard of its own), then
    names them and writes the index (see the module doc). Same ``add`` / ``close`` / ``abort``
    interface as :class:`~quantpress.container.ContainerWriter`.

    ``folder`` is created if missing and must not already hold a model (an index or a
    ``.safetensors`` file): refusing is safer than mixing a new set with an old one.
    """

    def __init__(self, folder: Union[str, os.PathLike[str]], max_shard_size: Union[int, str],
                 prefix: str = "model") -> None:
        self.folder = os.path.abspath(os.fspath(folder))
        self.max_shard_size = parse_size(max_shard_size)
        self.prefix = prefix
        if os.path.exists(self.folder) and not os.path.isdir(self.folder):
            raise QuantpressError(f"{self.folder}: sharded output goes to a directory, and this is a file")
        os.makedirs(self.folder, exist_ok=True)
        taken = sorted(n for n in os.listdir(self.folder) if n.endswith((".safetensors", ".index.json")))
        if taken:
            raise QuantpressError(f"{self.folder}: already holds {taken[0]}; choose an empty or new directory")
        self._done: list[tuple[str, list[str], int]] = []  # (temporary path, stored names, bytes)
        self._writer: Optional[ContainerWriter] = None
        self._names: list[str] = []
        self._size = 0
        self._final: list[str] = []

    def _temp_name(self, k: int) -> str:
        return os.path.join(self.folder, f".{self.prefix}-{k:05d}.safetensors.part")

    def add(self, name: str, entry: Entry, dtype: Optional[str] = None) -> int:
        """Appends one source tensor (to a new shard when it would overflow this one)."""
        parts, _ = _encode(name, entry, dtype)
        need = sum(int(np.asarray(a).nbytes) for a in parts.values())
        if self._writer is not None and self._names and self._size + need > self.max_shard_size:
            self._finish_shard()
        if self._writer is None:
            self._writer = ContainerWriter(self._temp_name(len(self._done) + 1))
        stored = self._writer.add(name, entry, dtype)
        self._names += list(parts)
        self._size += stored
        return stored

    def _finish_shard(self) -> None:
        assert self._writer is not None
        writer, self._writer = self._writer, None
        writer.close()
        self._done.append((writer.path, self._names, self._size))
        self._names, self._size = [], 0

    def close(self) -> None:
        """Finishes the last shard, renames the shards to their final names, writes the index."""
        if self._writer is None and not self._done:  # an empty model still gets one shard
            self._writer = ContainerWriter(self._temp_name(1))
        if self._writer is not None:
            self._finish_shard()
        n = len(self._done)
        weight_map: dict[str, str] = {}
        for k, (tmp, names, _) in enumerate(self._done, 1):
            final = f"{self.prefix}-{k:05d}-of-{n:05d}.safetensors"
            os.replace(tmp, os.path.join(self.folder, final))
            self._final.append(os.path.join(self.folder, final))
            weight_map.update((s, final) for s in names)
        _fsync_dir(self.folder)
        index = {"metadata": {"total_size": sum(b for *_, b in self._done), VERSION_KEY: FORMAT_VERSION},
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
        """Removes every shard written so far (temporary or already renamed)."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        for p in [t for t, *_ in self._done] + self._final:
            if os.path.exists(p):
                os.unlink(p)
        self._done, self._final = [], []



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


__all__ = ["ShardedContainer", "ShardedWriter", "open_container", "output_bytes", "parse_size"]
