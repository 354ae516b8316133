"""PyTorch checkpoints read without torch and without running any pickled code.

Two layouts: the zip format (torch >= 1.6: ``<name>/data.pkl`` plus one member
``<name>/data/<key>`` per storage; stored members are memory-mapped, deflated ones (a checkpoint
re-zipped by hand) inflated on access, never past their declared size) and the legacy stream (a pickled magic number, protocol
version and sys_info, then the pickled object, then the list of storage keys, then each storage
as an 8-byte element count followed by its raw bytes).

A pickle is a program, so each one is first scanned opcode by opcode without running it (memo
indices must stay below the opcode count, named globals must be on the allow-list), then run by
an ``Unpickler`` whose ``find_class`` hands out only fresh stand-ins for an allow-list of
tensor-rebuilding globals; anything else (``os.system``, ``builtins.eval``, ...) is refused.
The stand-ins record (storage, offset, shape, stride); tensors are then strided views of a
memory map of their storage, each bounds-checked against the storage size.
"""

from __future__ import annotations

import collections
import io
import mmap
import pickle
import pickletools
import re
import struct
import zipfile
from typing import Any

import numpy as np

from .._core import QuantpressError
from .base import (
    DTYPES, MAX_DIMS, MAX_HEADER_BYTES, MAX_TENSORS, BoundedReader, LazyTensor, ModelFile, check_member, fail,
    file_size, inflate_member, memmap, open_zip, read_member, stored_data_offset,
)

_STORAGE_DTYPES = {
    "FloatStorage": "F32", "DoubleStorage": "F64", "HalfStorage": "F16", "BFloat16Storage": "BF16",
    "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
    "ByteStorage": "U8", "BoolStorage": "BOOL",
}
_REBUILDERS = {"_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state"}
ALLOWED_GLOBALS = frozenset(
    {("collections", "OrderedDict")}
    | {("torch._utils", f) for f in _REBUILDERS}
    | {("torch", s) for s in _STORAGE_DTYPES}
)
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
MAX_NESTING = 64


class _StandIn:
    """A fresh callable per use; refuses pickle's BUILD so a file cannot tamper with it."""

    __slots__ = ("fn", "dtype")

    def __init__(self, fn: Any = None, dtype: str | None = None) -> None:
        self.fn, self.dtype = fn, dtype

    def __call__(self, *args: Any) -> Any:
        if self.fn is None:
            raise TypeError("a storage type is not callable")
        return self.fn(*args)

    def __setstate__(self, state: Any) -> None:
        raise TypeError("BUILD on an allow-listed global")


class _Storage:
    __slots__ = ("dtype", "key", "numel")

    def __init__(self, dtype: str, key: str, numel: int) -> None:
        self.dtype, self.key, self.numel = dtype, key, numel

    def __setstate__(self, state: Any) -> None:
        raise TypeError("BUILD on a storage")


class _TensorRef:
    __slots__ = ("offset", "shape", "storage", "stride")

    def __init__(self, storage: _Storage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def __setstate__(self, state: Any) -> None:
        raise TypeError("BUILD on a tensor")


def _ints(x: Any, what: str) -> tuple[int, ...]:
    if not isinstance(x, (tuple, list)) or len(x) > MAX_DIMS:
        raise TypeError(f"{what} must be a tuple of at most {MAX_DIMS} ints")
    if not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**62 for d in x):
        raise TypeError(f"{what} {x!r} must hold non-negative ints")
    return tuple(x)


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> _TensorRef:
    if not isinstance(storage, _Storage):
        raise TypeError("tensor storage is not a persistent storage")
    shape, strides = _ints(size, "size"), _ints(stride, "stride")
    (off,) = _ints((offset,), "storage_offset")
    if len(shape) != len(strides):
        raise TypeError(f"size {shape} and stride {strides} differ in length")
    return _TensorRef(storage, off, shape, strides)


def _rebuild_parameter(data: Any, *_rest: Any) -> _TensorRef:
    if not isinstance(data, _TensorRef):
        raise TypeError("parameter data is not a tensor")
    return data


def _stand_in(module: str, name: str) -> _StandIn:
    if module == "collections":
        return _StandIn(collections.OrderedDict)
    if module == "torch":
        return _StandIn(dtype=_STORAGE_DTYPES[name])
    return _StandIn(_rebuild_tensor_v2 if name == "_rebuild_tensor_v2" else _rebuild_parameter)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: str, field: str, storage_of: Any) -> None:
        super().__init__(file)
        self.path, self.field, self.storage_of = path, field, storage_of

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise fail(self.path, self.field, f"refuses to load global {module}.{name} (not a tensor-rebuilding function)")
        return _stand_in(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if self.storage_of is None:
            raise TypeError("unexpected persistent id")
        return self.storage_of(pid)


def _scan(path: str, field: str, data: Any, start: int, end: int) -> int:
    """Walks one pickle's opcodes without running them; returns the offset just past its STOP."""
    reader = BoundedReader(data, start, end)
    count = 0
    try:
        for op, arg, _pos in pickletools.genops(reader):
            count += 1
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and not 0 <= int(arg) <= count:
                raise fail(path, field, f"pickle memo index {arg} out of range")
            if op.name in ("GLOBAL", "INST"):
                module, _, name = str(arg).partition(" ")
                if (module, name) not in ALLOWED_GLOBALS:
                    raise fail(path, field, f"refuses to load global {module}.{name} (not a tensor-rebuilding function)")
            if op.name in ("EXT1", "EXT2", "EXT4", "NEXT_BUFFER", "READONLY_BUFFER"):
                raise fail(path, field, f"pickle opcode {op.name} is not allowed")
            if op.name == "STOP":
                return reader.pos
    except QuantpressError:
        raise
    except (ValueError, EOFError, struct.error, UnicodeDecodeError, OverflowError) as e:
        raise fail(path, field, f"malformed pickle: {e}") from None
    raise fail(path, field, "pickle has no STOP opcode")


def _unpickle(path: str, field: str, data: Any, start: int, end: int, storage_of: Any = None) -> tuple[Any, int]:
    """Scans, then runs one restricted pickle; returns (object, offset past it)."""
    stop = _scan(path, field, data, start, end)
    if stop - start > MAX_HEADER_BYTES:
        raise fail(path, field, f"pickle of {stop - start} bytes exceeds the {MAX_HEADER_BYTES}-byte cap")
    raw = bytes(data[start:stop])
    try:
        return _Unpickler(io.BytesIO(raw), path, field, storage_of).load(), stop
    except QuantpressError:
        raise
    except Exception as e:  # a well-formed opcode stream can still misuse the stand-ins
        raise fail(path, field, f"cannot be rebuilt: {type(e).__name__}: {e}") from None


def _collect(path: str, obj: Any) -> tuple[dict[str, _TensorRef], dict[str, str]]:
    """Flattens nested dicts/lists of tensors to dotted names; scalars go to the metadata."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    tensors: dict[str, _TensorRef] = {}
    meta: dict[str, str] = {}
    stack: list[tuple[str, Any, int]] = [("", obj, 0)]
    while stack:
        prefix, node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise fail(path, "object", f"nested deeper than {MAX_NESTING} levels")
        if isinstance(node, _TensorRef):
            if prefix in tensors or len(tensors) >= MAX_TENSORS:
                raise fail(path, f"tensor {prefix!r}", "duplicate name or too many tensors")
            tensors[prefix] = node
        elif isinstance(node, (dict, list, tuple)):
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for k, v in reversed(list(items)):
                if isinstance(k, (str, int)) and not isinstance(k, bool):
                    stack.append((f"{prefix}.{k}" if prefix else str(k), v, depth + 1))
        elif isinstance(node, (str, bool, float)) or (isinstance(node, int) and abs(node) < 10**18):
            if prefix and len(meta) < 10_000:
                meta[prefix] = str(node)[:1000]
    return tensors, meta


def _tensor(path: str, name: str, t: _TensorRef, storage_array: Any) -> LazyTensor:
    """A LazyTensor viewing ``t``'s storage with its strides; bounds checked here, not at read."""
    field = f"tensor {name!r}"
    st = t.storage
    numel = int(np.prod(t.shape, dtype=object)) if t.shape else 1
    if numel > st.numel:
        raise fail(path, field, f"shape {t.shape} has more elements than its storage ({st.numel})")
    if numel and t.offset + sum((d - 1) * s for d, s in zip(t.shape, t.stride)) >= st.numel:
        raise fail(path, field, f"offset {t.offset}, shape {t.shape}, stride {t.stride} reach past its storage ({st.numel})")
    dt = DTYPES[st.dtype][0]
    assert dt is not None

    def load() -> np.ndarray:
        if numel == 0:
            return np.empty(t.shape, dt)
        base = storage_array(st)
        return np.lib.stride_tricks.as_strided(base[t.offset:], t.shape, tuple(s * dt.itemsize for s in t.stride),
                                               writeable=False)

    return LazyTensor(name, t.shape, st.dtype, numel * dt.itemsize, load)


def _storage_pid(path: str, field: str, storages: dict[str, _Storage], legacy: bool) -> Any:
    def storage_of(pid: Any) -> _Storage:
        n = 6 if legacy else 5
        if not isinstance(pid, tuple) or len(pid) != n or pid[0] != "storage":
            raise fail(path, field, f"persistent id {str(pid)[:80]} is not ('storage', type, key, location, numel)")
        stype, key, _loc, numel = pid[1:5]
        if not isinstance(stype, _StandIn) or stype.dtype is None:
            raise fail(path, field, "persistent id names no storage type")
        if not isinstance(key, str) or not isinstance(numel, int) or isinstance(numel, bool) or not 0 <= numel < 2**62:
            raise fail(path, field, f"storage key {key!r} / numel {numel!r} invalid")
        if legacy and pid[5] is not None:
            raise fail(path, field, "storage views (torch < 0.4) are not supported")
        old = storages.get(key)
        if old is not None and (old.dtype, old.numel) != (stype.dtype, numel):
            raise fail(path, field, f"storage {key!r} declared twice with different types or sizes")
        return storages.setdefault(key, _Storage(stype.dtype, key, numel))

    return storage_of


_PKL = re.compile(r"^[^/]+/data\.pkl$")


def is_torch_zip(path: str) -> bool:
    """Whether a zip archive is a PyTorch checkpoint (it has a top-level ``<name>/data.pkl``)."""
    with open_zip(path) as zf:
        return any(_PKL.match(n) for n in zf.namelist())


def _open_zip_checkpoint(path: str) -> ModelFile:
    size = file_size(path)
    with open_zip(path) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        pkl_names = [n for n in infos if _PKL.match(n)]
        if len(pkl_names) != 1:
            raise fail(path, "data.pkl", f"expected one <name>/data.pkl, found {len(pkl_names)}")
        prefix = pkl_names[0][: -len("data.pkl")]
        byteorder = infos.get(prefix + "byteorder")
        if byteorder is not None:
            check_member(path, byteorder, size)
            if read_member(path, zf, byteorder, 0, min(byteorder.file_size, 16)) != b"little":
                raise fail(path, "byteorder", "only little-endian checkpoints are supported")
        info = infos[pkl_names[0]]
        check_member(path, info, size)
        if info.file_size > MAX_HEADER_BYTES:
            raise fail(path, "data.pkl", f"{info.file_size} bytes exceeds the {MAX_HEADER_BYTES}-byte cap")
        raw = read_member(path, zf, info, 0, info.file_size)
        storages: dict[str, _Storage] = {}
        obj, _ = _unpickle(path, "data.pkl", raw, 0, len(raw), _storage_pid(path, "data.pkl", storages, False))
        offsets = {}
        for key, st in storages.items():
            m = infos.get(f"{prefix}data/{key}")
            field = f"storage {key!r}"
            if m is None:
                raise fail(path, field, "no such member in the archive")
            check_member(path, m, size)
            if m.file_size < st.numel * DTYPES[st.dtype][1]:
                raise fail(path, field, f"member holds {m.file_size} bytes, storage needs {st.numel * DTYPES[st.dtype][1]}")
            start = stored_data_offset(path, m, size)
            offsets[key] = start if m.compress_type == zipfile.ZIP_STORED else m

    return _model_file(path, obj, offsets, size)


def _model_file(path: str, obj: Any, offsets: dict[str, Any], size: int) -> ModelFile:
    """The tensors of an unpickled checkpoint, each a view of its storage: a memory map of a
    stored member (or legacy file range), or a deflated member inflated (bounded) on access."""

    def storage_array(st: _Storage) -> np.ndarray:
        dt = DTYPES[st.dtype][0]
        assert dt is not None
        where = offsets[st.key]
        if isinstance(where, zipfile.ZipInfo):
            return inflate_member(path, where, size)[: st.numel * dt.itemsize].view(dt)
        return memmap(path, f"storage {st.key!r}", dt, where, st.numel, size)

    refs, meta = _collect(path, obj)
    return ModelFile(path, "torch", {n: _tensor(path, n, t, storage_array) for n, t in refs.items()}, meta)


def _legacy_storage_offsets(path: str, mm: Any, pos: int, keys: Any, storages: dict[str, _Storage]) -> dict[str, int]:
    """Walks the raw storages after the key list: each an 8-byte element count, then its bytes."""
    if not isinstance(keys, list) or len(set(keys)) != len(keys) or set(keys) != set(storages):
        raise fail(path, "storage keys", "key list does not match the storages the object uses")
    offsets = {}
    for key in keys:
        st = storages[key]
        if pos + 8 > len(mm):
            raise fail(path, f"storage {key!r}", "file ends before its size field")
        (numel,) = struct.unpack("<q", mm[pos:pos + 8])
        if numel != st.numel:
            raise fail(path, f"storage {key!r}", f"size field {numel} differs from the declared {st.numel}")
        offsets[key] = pos + 8
        pos += 8 + numel * DTYPES[st.dtype][1]
        if pos > len(mm):
            raise fail(path, f"storage {key!r}", f"data runs past the end of the file ({len(mm)} bytes)")
    return offsets


def _open_legacy(path: str) -> ModelFile:
    size = file_size(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        magic, pos = _unpickle(path, "magic number", mm, 0, size)
        if magic != LEGACY_MAGIC:
            raise fail(path, "magic number", "not a legacy PyTorch file")
        version, pos = _unpickle(path, "protocol version", mm, pos, size)
        if version != 1001:
            raise fail(path, "protocol version", f"{version!r} is not 1001")
        sys_info, pos = _unpickle(path, "sys_info", mm, pos, size)
        if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
            raise fail(path, "sys_info", "only little-endian checkpoints are supported")
        storages: dict[str, _Storage] = {}
        obj, pos = _unpickle(path, "object", mm, pos, size, _storage_pid(path, "object", storages, True))
        keys, pos = _unpickle(path, "storage keys", mm, pos, size)
        offsets = _legacy_storage_offsets(path, mm, pos, keys, storages)

    return _model_file(path, obj, offsets, size)


def open_file(path: str) -> ModelFile:
    """Opens a PyTorch checkpoint (zip or legacy format, chosen by its magic bytes)."""
    with open(path, "rb") as f:
        zipped = f.read(2) == b"PK"
    return _open_zip_checkpoint(path) if zipped else _open_legacy(path)
