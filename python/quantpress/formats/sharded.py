"""Sharded checkpoints read as one model: Hugging Face safetensors indexes and GGUF split sets.

A big checkpoint comes as several files: ``model-00001-of-00003.safetensors`` ... plus
``model.safetensors.index.json`` (``{"metadata": {...}, "weight_map": {tensor: file}}``), or
llama.cpp's ``name-00001-of-00003.gguf`` splits (keys ``split.no`` (0-based), ``split.count``,
``split.tensors.count``; only the first split carries the model's metadata). ``open_model`` on
a directory, an index or any file of a split set returns one ``ModelFile`` over all shards.

The whole set is validated before a single tensor is read, because a wrong set found halfway
through a multi-hour compression is a wasted run: shard names must be plain file names inside
the index's folder (no ``..``, no absolute path, no symlink leading out), every shard must exist
and be distinct, each indexed tensor must be in exactly the shard named for it, a shard holding
a tensor the index does not list is refused (so a tensor present in two shards is caught), and a
split set must be complete (``1..count``, same count everywhere, ``split.no`` matching the name).

Tensor data is memory-mapped per tensor when ``numpy()`` is called, and the map is released
with the array, so reading a model shard by shard keeps about one tensor resident.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from .._core import QuantpressError
from .base import MAX_HEADER_BYTES, LazyTensor, ModelFile, fail, file_size, no_duplicate_keys

INDEX_NAME = "model.safetensors.index.json"
INDEX_SUFFIX = ".safetensors.index.json"
#: llama.cpp's split file name: ``{prefix}-{no+1:05}-of-{count:05}.gguf``.
SPLIT_RE = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")


class ShardedModelFile(ModelFile):
    """A ``ModelFile`` over several files; ``shards`` lists them in order."""

    def __init__(self, path: str, fmt: str, tensors: dict[str, LazyTensor], metadata: dict[str, str],
                 shards: list[str]) -> None:
        super().__init__(path, fmt, tensors, metadata)
        self.shards = tuple(shards)

    def __repr__(self) -> str:
        return f"ShardedModelFile({self.path!r}, format={self.format!r}, shards={len(self.shards)}, tensors={len(self)})"


# ---------------------------------------------------------------------------------------------
# Finding the model in a directory
# ---------------------------------------------------------------------------------------------

def find_in_directory(folder: str) -> tuple[str, str]:
    """``(kind, path)`` of the model a directory holds: kind is "index", "split" or "single".

    Order: ``model.safetensors.index.json``, else the one ``*.safetensors.index.json``, else a
    GGUF split set, else the one ``*.safetensors`` / ``*.gguf`` file; anything ambiguous or
    empty is an error naming the directory.
    """
    names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    indexes = [n for n in names if n.endswith(INDEX_SUFFIX)]
    if INDEX_NAME in indexes:
        return "index", os.path.join(folder, INDEX_NAME)
    if len(indexes) > 1:
        raise fail(folder, "directory", f"several indexes ({', '.join(indexes)}); open one of them")
    if indexes:
        return "index", os.path.join(folder, indexes[0])
    splits = [n for n in names if SPLIT_RE.match(n)]
    prefixes = sorted({SPLIT_RE.match(n).group("prefix") for n in splits})  # type: ignore[union-attr]
    if len(prefixes) > 1:
        raise fail(folder, "directory", f"several GGUF split sets ({', '.join(prefixes)}); open one of their files")
    if splits:
        return "split", os.path.join(folder, splits[0])
    models = [n for n in names if n.endswith((".safetensors", ".gguf"))]
    if len(models) == 1:
        return "single", os.path.join(folder, models[0])
    if not models:
        raise fail(folder, "directory", "holds no index, GGUF split set, .safetensors or .gguf file")
    raise fail(folder, "directory", f"several model files ({', '.join(models[:4])}...) and no index naming them")


# ---------------------------------------------------------------------------------------------
# Hugging Face index
# ---------------------------------------------------------------------------------------------

def shard_path(index_path: str, name: Any) -> str:
    """The path of shard ``name`` of an index: a plain file name inside the index's folder,
    also after resolving symlinks."""
    field = f"weight_map shard {name!r}"
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or "\0" in name or os.path.isabs(name):
        raise fail(index_path, field, "must be a plain file name inside the index's folder")
    folder = os.path.realpath(os.path.dirname(os.path.abspath(index_path)))
    path = os.path.join(os.path.dirname(os.path.abspath(index_path)), name)
    real = os.path.realpath(path)
    if os.path.dirname(real) != folder:
        raise fail(index_path, field, f"resolves to {real}, outside the index's folder {folder}")
    if not os.path.exists(path):
        raise fail(index_path, field, f"shard file {path} does not exist")
    if not os.path.isfile(path):
        raise fail(index_path, field, f"{path} is not a regular file")
    return path


def read_index(path: str) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """``(metadata as strings, weight_map tensor -> shard path, shard paths in order)`` of a
    safetensors index, every shard name checked (see :func:`shard_path`) and distinct."""
    size = file_size(path)
    if size > MAX_HEADER_BYTES:
        raise fail(path, "index", f"{size} bytes exceeds the {MAX_HEADER_BYTES}-byte cap")
    with open(path, "rb") as f:
        raw = f.read(size)
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicate_keys(path, "key {key}", "listed twice (a tensor may be in one shard only)"))
    except QuantpressError:
        raise
    except (UnicodeDecodeError, RecursionError, ValueError) as e:
        raise fail(path, "index", f"not valid UTF-8 JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("weight_map"), dict):
        raise fail(path, "weight_map", "the index must be an object with a \"weight_map\" object")
    meta = doc.get("metadata") or {}
    if not isinstance(meta, dict):
        raise fail(path, "metadata", "must be an object")
    files: dict[str, str] = {}  # shard name -> path
    real: dict[str, str] = {}  # resolved path -> shard name
    weight_map: dict[str, str] = {}
    for tensor, name in doc["weight_map"].items():
        if not isinstance(name, str) or name not in files:
            p = shard_path(path, name)
            other = real.setdefault(os.path.realpath(p), name)
            if other != name:
                raise fail(path, f"weight_map shard {name!r}", f"is the same file as shard {other!r} (duplicated shard)")
            files[name] = p
        weight_map[tensor] = files[name]
    if not weight_map:
        raise fail(path, "weight_map", "is empty")
    meta_str = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    return meta_str, weight_map, sorted(set(files.values()))


def check_shards(index_path: str, weight_map: dict[str, str], contents: dict[str, Iterable[str]]) -> None:
    """Every indexed tensor is in the shard named for it and no shard holds an unlisted one."""
    for shard, names in contents.items():
        for name in names:
            where = weight_map.get(name)
            if where is None:
                raise fail(index_path, f"shard {os.path.basename(shard)}",
                           f"holds tensor {name!r}, which the index does not list")
            if where != shard:
                raise fail(index_path, f"tensor {name!r}",
                           f"indexed in {os.path.basename(where)} but also stored in {os.path.basename(shard)}")
    held = {n for names in contents.values() for n in names}
    for name, shard in weight_map.items():
        if name not in held:
            raise fail(index_path, f"tensor {name!r}", f"shard {os.path.basename(shard)} does not contain it")


def open_index(path: str) -> ShardedModelFile:
    """Opens a safetensors index and all its shards (headers only), validated as a set."""
    from . import detect_format, safetensors_fmt

    path = os.path.abspath(path)
    meta, weight_map, shards = read_index(path)
    models = {}
    for shard in shards:
        if detect_format(shard) != "safetensors":
            raise fail(path, f"shard {os.path.basename(shard)}", "is not a safetensors file")
        models[shard] = safetensors_fmt.open_file(shard)
    check_shards(path, weight_map, {s: list(m) for s, m in models.items()})
    tensors = {n: t for m in models.values() for n, t in m.items()}
    first = models[shards[0]].metadata
    return ShardedModelFile(path, "safetensors", tensors, {**first, **meta}, shards)


# ---------------------------------------------------------------------------------------------
# GGUF split sets
# ---------------------------------------------------------------------------------------------

class _Slice:
    """Stands in for a GGUFFile when decoding one tensor: maps just that tensor's bytes."""

    def __init__(self, path: str, size: int) -> None:
        self.path, self.size = path, size

    def _bytes(self, offset: int, nbytes: int) -> np.ndarray:
        from .base import memmap

        return memmap(self.path, "tensor data", np.dtype(np.uint8), offset, nbytes, self.size)


def split_files(path: str) -> list[str]:
    """All file paths of the split set ``path`` belongs to, in order; a gap is an error."""
    m = SPLIT_RE.match(os.path.basename(path))
    if m is None:
        raise fail(path, "file name", "is not a GGUF split name (name-00001-of-00003.gguf)")
    no, count = int(m.group("no")), int(m.group("count"))
    if not 1 <= no <= count:
        raise fail(path, "file name", f"split {no} of {count} is out of range")
    folder, prefix = os.path.dirname(os.path.abspath(path)), m.group("prefix")
    files = [os.path.join(folder, f"{prefix}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    for f in files:
        if not os.path.isfile(f):
            raise fail(f, "split set", f"is missing: the set of {count} splits has a gap")
    return files


def _split_key(f: Any, key: str, path: str) -> int:
    v = f.metadata.get(key)
    if type(v) is not int:
        raise fail(path, key, f"missing or not an integer ({v!r}); every split must carry it")
    return v


def open_split(path: str) -> ShardedModelFile:
    """Opens a whole GGUF split set from any of its files, validated as a set."""
    from .gguf_fmt import _PLAIN, GGUFFile, GGUFTensor, GGUFValueType

    files = split_files(path)
    tensors: dict[str, LazyTensor] = {}
    where: dict[str, str] = {}
    meta: dict[str, str] = {}
    total = None
    for i, p in enumerate(files):
        f = GGUFFile(p)
        no, count = _split_key(f, "split.no", p), _split_key(f, "split.count", p)
        if no != i or count != len(files):
            raise fail(p, "split.no/split.count", f"say split {no + 1} of {count}, the file name says {i + 1} of {len(files)}")
        n_total = _split_key(f, "split.tensors.count", p)
        if total is not None and n_total != total:
            raise fail(p, "split.tensors.count", f"{n_total}, the first split says {total}")
        total = n_total
        if i == 0:
            meta = {k: str(v.value) for k, v in f.fields.items() if v.type != GGUFValueType.ARRAY}
        src = _Slice(p, os.path.getsize(p))
        for name in f.tensor_order:
            if name in where:
                raise fail(p, f"tensor {name!r}", f"is also in {os.path.basename(where[name])}")
            where[name] = p
            t = f[name]
            lazy = GGUFTensor(src, name, t.dims, t.ggml_type, t.offset, t.nbytes)  # type: ignore[arg-type]
            np_dt = np.dtype(np.float32) if t.dtype not in _PLAIN or t.dtype == "BF16" else np.dtype(_PLAIN[t.dtype])
            tensors[name] = LazyTensor(name, t.shape, t.dtype, t.nbytes, lazy.numpy, np_dt)
        del f  # drops the header's whole-file map; tensors map their own bytes on demand
    if total != len(tensors):
        raise fail(files[0], "split.tensors.count", f"{total}, but the {len(files)} splits hold {len(tensors)} tensors")
    return ShardedModelFile(files[0], "gguf", tensors, meta, files)


def check_not_partial(model: ModelFile) -> ModelFile:
    """Refuses a lone GGUF file whose metadata says it is one split of several."""
    count = model.metadata.get("split.count")
    if model.format == "gguf" and count is not None and count.isdigit() and int(count) > 1:
        model.close()
        raise fail(model.path, "split.count", f"this file is one of {count} splits but its name does not "
                                              "follow name-00001-of-0000N.gguf, so the others cannot be found")
    return model


def open_sharded(path: str) -> ModelFile | None:
    """The sharded model at ``path`` (a directory, an index, a split file), or None when
    ``path`` is a single file or a directory holding just one (see :func:`find_in_directory`)."""
    if os.path.isdir(path):
        kind, target = find_in_directory(path)
        return open_index(target) if kind == "index" else open_split(target) if kind == "split" else None
    if path.endswith(".json"):
        return open_index(path)
    if SPLIT_RE.match(os.path.basename(path)) and os.path.isfile(path):
        return open_split(path)
    return None
