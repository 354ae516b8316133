"""The quantpress compressed-model container (format version 1): a plain ``.safetensors`` file.

Each compressed source tensor ``W`` is stored as a few tensors named ``W`` + a suffix (``W.q``,
``W.scale``, ``W.zero``, ``W.gguf``, ``W.codes``, ``W.codebook`` ...); a tensor left alone keeps
its own name and dtype. The header's ``__metadata__`` says how to decode each source tensor, so
loading never needs the recipe. Exact layout: docs/format.md, section "Container".

Why a hand-written reader and writer rather than ``safetensors.numpy``: the writer streams one
tensor at a time to disk (peak memory = one tensor, not the model), and the reader memory-maps
the file and checks every offset and shape of an untrusted header before touching the data.
Any safetensors reader still opens the files.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional, TypeVar, Union

import numpy as np

from ._arrays import BFLOAT16, dtype_name
from ._core import QuantpressError
from .gguf import GGUF_TYPES, gguf_dequantize
from .prune import SparseTensor
from .scalar import QuantizedTensor
from .weight_vq import VQTensor

_W = TypeVar("_W", bound="AtomicWriter")

FORMAT_VERSION = "1"
VERSION_KEY = "quantpress.format_version"
TENSORS_KEY = "quantpress.tensors"
#: Largest header accepted when reading (safetensors' own limit is 100 MB).
MAX_HEADER = 100 * 2**20

_ST_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": BFLOAT16, "I64": np.dtype(np.int64), "U64": np.dtype(np.uint64),
    "I32": np.dtype(np.int32), "U32": np.dtype(np.uint32), "I16": np.dtype(np.int16),
    "U16": np.dtype(np.uint16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}
#: Stored-tensor suffixes of each method (docs/format.md).
SUFFIXES = {
    "scalar": (".q", ".scale", ".zero", ".scale_absmax", ".scale_offset"),
    "gguf": (".gguf",),
    "vq": (".codes", ".codebook", ".scale"),
    "sparse": (".mask", ".positions", ".index", ".values", ".q", ".scale", ".zero", ".scale_absmax", ".scale_offset"),
}


@dataclass(frozen=True)
class GGUFTensor:
    """Raw GGUF blocks of one tensor (``qp.gguf_quantize`` output) with their type and shape.

    Example:
        >>> import numpy as np, quantpress as qp
        >>> from quantpress.container import GGUFTensor
        >>> w = np.ones((2, 32), np.float32)
        >>> g = GGUFTensor(qp.gguf_quantize(w, "Q8_0"), "Q8_0", w.shape)
        >>> g.bits_per_weight, bool(np.abs(g.dequantize() - w).max() < 0.01)
        (8.5, True)
    """

    raw: np.ndarray
    qtype: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        object.__setattr__(self, "shape", shape)
        if self.qtype not in GGUF_TYPES:
            raise QuantpressError(f"unknown GGUF type {self.qtype!r}")
        block, nbytes = GGUF_TYPES[self.qtype]
        raw = np.asarray(self.raw)
        if not shape or any(s <= 0 for s in shape) or shape[-1] % block:
            raise QuantpressError(f"shape {shape} is not a {self.qtype} shape (last axis a multiple of {block})")
        need = math.prod(shape) // block * nbytes
        if raw.dtype != np.uint8 or raw.size != need:
            raise QuantpressError(f"a {self.qtype} tensor of shape {shape} needs {need} uint8 bytes, got {raw.size} {raw.dtype}")
        object.__setattr__(self, "raw", raw.reshape(*shape[:-1], shape[-1] // block * nbytes))

    @property
    def nbytes(self) -> int:
        return int(self.raw.nbytes)

    @property
    def bits_per_weight(self) -> float:
        return self.nbytes * 8 / math.prod(self.shape)

    def dequantize(self) -> np.ndarray:
        """The float32 tensor (``qp.gguf_dequantize``; the Rust kernel releases the GIL)."""
        return gguf_dequantize(np.ascontiguousarray(self.raw), self.qtype, self.shape)


Entry = Union[QuantizedTensor, VQTensor, GGUFTensor, SparseTensor, np.ndarray]


# ---------------------------------------------------------------------------------------------
# Encoding one entry into stored tensors + its metadata record
# ---------------------------------------------------------------------------------------------

def _encode(name: str, entry: Any, dtype: Optional[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``({stored name: array}, {method, params, shape, dtype})`` of one source tensor."""
    if isinstance(entry, QuantizedTensor):
        parts = {f"{name}.q": entry.codes, f"{name}.scale": entry.scales}
        if entry.zeros is not None:
            parts[f"{name}.zero"] = entry.zeros
        if entry.scales_absmax is not None and entry.scales_offset is not None:
            parts[f"{name}.scale_absmax"] = entry.scales_absmax
            parts[f"{name}.scale_offset"] = entry.scales_offset
        params = {"bits": entry.bits, "group_size": entry.group_size, "axis": entry.axis,
                  "scheme": entry.scheme, "algorithm": entry.method}
        return parts, _record("scalar", params, entry.shape, dtype or entry.dtype)
    if isinstance(entry, GGUFTensor):
        return {f"{name}.gguf": entry.raw}, _record("gguf", {"type": entry.qtype}, entry.shape, dtype or entry.dtype)
    if isinstance(entry, VQTensor):
        parts = {f"{name}.codes": entry.codes, f"{name}.codebook": entry.codebooks}
        if entry.scales is not None:
            parts[f"{name}.scale"] = entry.scales
        params = {"dim": entry.dim, "stages": int(entry.codebooks.shape[0]), "row_scale": entry.scales is not None}
        return parts, _record("vq", params, entry.shape, dtype or "float32")
    if isinstance(entry, SparseTensor):
        return _encode_sparse(name, entry, dtype)
    a = np.asarray(entry)
    if a.dtype not in _ST_NAMES:
        raise QuantpressError(f"tensor {name!r}: dtype {a.dtype} cannot be stored in safetensors")
    return {name: a}, _record("none", {}, a.shape, dtype_name(a.dtype))


def _encode_sparse(name: str, e: SparseTensor, dtype: Optional[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A pruned tensor: its metadata (``.mask`` / ``.positions`` / ``.index``) and its kept values,
    plain (``.values``) or quantized (the scalar parts ``.q``, ``.scale`` ...)."""
    meta = {"bitmask": ("mask", e.mask), "nm": ("positions", e.positions), "structured": ("index", e.index)}[e.format]
    parts = {f"{name}.{meta[0]}": meta[1]}
    params: dict[str, Any] = {"format": e.format, "n": e.n, "m": e.m, "axis": e.axis, "count": e.count,
                              "density": e.density}
    if isinstance(e.values, QuantizedTensor):
        qparts, qrec = _encode(name, e.values, None)
        parts.update(qparts)
        params["values"] = "quantized"
        params["quant"] = {**qrec["params"], "length": int(e.values.shape[0]), "dtype": qrec["dtype"]}
    else:
        parts[f"{name}.values"] = e.values
        params["values"] = dtype_name(e.values.dtype)
    return parts, _record("sparse", params, e.shape, dtype or "float32")


def _record(method: str, params: dict[str, Any], shape: tuple[int, ...], dtype: str) -> dict[str, Any]:
    return {"method": method, "params": params, "shape": [int(s) for s in shape], "dtype": dtype}


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

class AtomicWriter:
    """A writer used as a context manager: ``close()`` (publish) on success, ``abort()`` (remove
    every temporary file) on any error, including one raised by ``close()`` itself."""

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self: _W) -> _W:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            try:
                self.close()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()


class ContainerWriter(AtomicWriter):
    """Streams entries into a container: each entry's data is written, as it is added, to a
    temporary file in the destination folder after ``reserve`` bytes left for the header;
    :meth:`close` writes the header there (padded with spaces to fill the reserved bytes),
    fsyncs the file and renames it over ``path``. A header that does not fit (always, for
    ``reserve=0``) goes with the data into a second temporary file instead, padded to a multiple
    of 8 (docs/format.md, "Container"). On any error (or :meth:`abort`) every temporary file is
    removed and ``path`` is left as it was."""

    def __init__(self, path: Union[str, os.PathLike[str]], metadata: Optional[dict[str, str]] = None,
                 reserve: int = 0) -> None:
        self.path = os.fspath(path)
        self.folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(self.folder):
            raise FileNotFoundError(self.folder)
        self._header: dict[str, Any] = {}
        self._records: dict[str, Any] = {}
        self._offset = 0
        self._extra = dict(metadata or {})
        self._reserve = int(reserve) if reserve >= 16 else 0
        fd, self._body_path = tempfile.mkstemp(prefix=".quantpress-", suffix=".tmp", dir=self.folder)
        self._body = os.fdopen(fd, "wb")
        self._body.seek(self._reserve)

    def add(self, name: str, entry: Entry, dtype: Optional[str] = None) -> int:
        """Appends one source tensor; returns the bytes it stores."""
        _check_name(name)
        parts, record = _encode(name, entry, dtype)
        arrays = [(pname, np.ascontiguousarray(a)) for pname, a in parts.items()]
        size = self.place(name, record, [(pname, _ST_NAMES[a.dtype], list(a.shape), a.nbytes) for pname, a in arrays])
        for _, a in arrays:
            self._body.write(a.reshape(-1).view(np.uint8).data)
        return size

    @property
    def data_start(self) -> tuple[str, int]:
        """The temporary file and the byte where the next tensor's data goes: another process
        may write it there (:func:`write_parts_at`), then :meth:`place` records the tensor."""
        return self._body_path, self._reserve + self._offset

    def place(self, name: str, record: dict[str, Any], parts: list[tuple[str, str, list[int], int]]) -> int:
        """Records one source tensor whose stored parts ``(stored name, safetensors dtype,
        shape, bytes)`` are (or are about to be) in the file, in order, from :attr:`data_start`
        on; returns the bytes they take."""
        _check_name(name)
        if name in self._records:
            raise QuantpressError(f"tensor {name!r} is given twice")
        clash = [pname for pname, *_ in parts if pname in self._header or pname == "__metadata__"]
        if clash:
            raise QuantpressError(f"tensor {name!r}: stored name {clash[0]!r} is already taken by another tensor")
        size = 0
        for pname, st_dtype, shape, n in parts:
            self._header[pname] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [self._offset, self._offset + n]}
            self._offset += n
            size += n
        self._records[name] = record
        return size

    def close(self) -> None:
        """Finishes the file atomically (see the class docstring)."""
        meta = {**self._extra, VERSION_KEY: FORMAT_VERSION,
                TENSORS_KEY: json.dumps(self._records, separators=(",", ":"))}
        head = json.dumps({"__metadata__": meta, **self._header}, separators=(",", ":")).encode()
        tmp = None
        try:
            if 8 + len(head) <= self._reserve:
                head += b" " * (self._reserve - 8 - len(head))
                self._body.seek(0)
                self._body.write(struct.pack("<Q", len(head)) + head)
                self._body.flush()
                os.fsync(self._body.fileno())
                self._body.close()
                os.replace(self._body_path, self.path)
                return
            head += b" " * (-len(head) % 8)  # data starts 8-byte aligned, as safetensors writes it
            self._body.flush()
            self._body.close()
            fd, tmp = tempfile.mkstemp(prefix=".quantpress-", suffix=".tmp", dir=self.folder)
            with os.fdopen(fd, "wb") as out, open(self._body_path, "rb") as body:
                out.write(struct.pack("<Q", len(head)))
                out.write(head)
                body.seek(self._reserve)
                shutil.copyfileobj(body, out, 16 * 2**20)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
            tmp = None
        finally:
            _discard(self._body, tmp, self._body_path)

    def abort(self) -> None:
        """Drops everything written so far."""
        _discard(self._body, self._body_path)


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise QuantpressError(f"tensor names must be non-empty strings, got {name!r}")


def write_parts_at(fd: int, pos: int, name: str, entry: Entry,
                   dtype: Optional[str]) -> tuple[dict[str, Any], list[tuple[str, str, list[int], int]], int]:
    """Writes the stored parts of one source tensor into the open file ``fd`` from byte ``pos``
    on, contiguously and in order (what :meth:`ContainerWriter.add` would write there); returns
    its record, its parts for :meth:`ContainerWriter.place` and the byte after them."""
    _check_name(name)
    parts, record = _encode(name, entry, dtype)
    placed = []
    for pname, arr in parts.items():
        a = np.ascontiguousarray(arr)
        buf = memoryview(a.reshape(-1).view(np.uint8))
        done = 0
        while done < len(buf):  # pwrite may write less than asked
            done += os.pwrite(fd, buf[done:], pos + done)
        pos += len(buf)
        placed.append((pname, _ST_NAMES[a.dtype], list(a.shape), a.nbytes))
    return record, placed, pos


def _discard(f: Any, *paths: Optional[str]) -> None:
    """Closes ``f`` and removes ``paths`` (those that exist). Closing flushes buffered bytes, which
    fails again on a full disk: that error is dropped (the bytes are being thrown away), so the
    temporary files are always removed and the error that stopped the write is the one raised."""
    try:
        if not f.closed:
            f.close()
    except OSError:
        pass
    for p in paths:
        if p is not None and os.path.exists(p):
            os.unlink(p)



def save_compressed(path: Union[str, os.PathLike[str]],
                    entries: Union[Mapping[str, Entry], Iterable[tuple[str, Entry]]]) -> None:
    """Writes compressed tensors to a quantpress container, atomically.

    The file is written to a temporary file in the same folder, fsynced and renamed over
    ``path``, so a reader never sees half a file and a failure leaves ``path`` untouched. The
    entries are only read.

    Args:
        path: destination ``.safetensors`` file.
        entries: a mapping (or iterable of ``(name, entry)`` pairs) from source tensor name to a
            :class:`~quantpress.QuantizedTensor` (``qp.quantize``), a
            :class:`~quantpress.VQTensor` (``qp.vq_quantize``), a
            :class:`~quantpress.container.GGUFTensor` (``qp.gguf_quantize`` bytes, type, shape),
            or a plain array stored as is (any safetensors dtype, bfloat16 included).

    Raises:
        QuantpressError: an unsupported entry dtype, a duplicate name, or two entries whose
            stored names collide (``"A.q"`` kept as is next to a quantized ``"A"``).
        FileNotFoundError: the destination folder does not exist.

    Example:
        >>> import numpy as np, quantpress as qp, tempfile, os
        >>> w = np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32)
        >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
        >>> qp.save_compressed(path, {"w": qp.quantize(w, bits=4, group_size=64), "b": np.zeros(64, np.float32)})
        >>> sorted(qp.load(path))
        ['b', 'w']
    """
    items = entries.items() if isinstance(entries, Mapping) else entries
    with ContainerWriter(path) as writer:
        for name, entry in items:
            writer.add(name, entry)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

def _fail(path: str, msg: str) -> QuantpressError:
    return QuantpressError(f"{path}: {msg}")


def read_header(path: str) -> tuple[dict[str, Any], dict[str, str], int]:
    """``(tensors, metadata, data start)`` of a safetensors file, every field checked against the
    file size before anything is mapped."""
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if size < 8:
            raise _fail(path, f"{size} bytes is too short for a safetensors file")
        (n,) = struct.unpack("<Q", f.read(8))
        if n > min(MAX_HEADER, size - 8):
            raise _fail(path, f"header length {n} exceeds the file size ({size}) or {MAX_HEADER}")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(path, f"header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise _fail(path, "header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise _fail(path, "__metadata__ must map strings to strings")
    for name, info in header.items():
        _check_tensor_info(path, name, info, size - 8 - n)
    return header, meta, 8 + n


def _check_tensor_info(path: str, name: str, info: Any, data_size: int) -> None:
    if not isinstance(info, dict) or info.get("dtype") not in _ST_DTYPES:
        raise _fail(path, f"tensor {name!r}: missing or unknown dtype")
    shape, offs = info.get("shape"), info.get("data_offsets")
    if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
        raise _fail(path, f"tensor {name!r}: shape must be a list of non-negative integers")
    if not (isinstance(offs, list) and len(offs) == 2 and all(type(o) is int for o in offs)
            and 0 <= offs[0] <= offs[1] <= data_size):
        raise _fail(path, f"tensor {name!r}: data_offsets {offs!r} outside the {data_size} data bytes")
    if offs[1] - offs[0] != math.prod(shape) * _ST_DTYPES[info["dtype"]].itemsize:
        raise _fail(path, f"tensor {name!r}: {offs[1] - offs[0]} bytes do not hold shape {shape} of {info['dtype']}")


class Container(Mapping):  # type: ignore[type-arg]
    """A loaded container: a read-only mapping from source tensor name to its float32 values
    (compressed tensors, decoded on every access, nothing cached) or its stored array (tensors
    kept as they were: a read-only view of the memory-mapped file).

    Holds only immutable state (the parsed header and a read-only memory map), so any number of
    threads may read it at once; the Rust decoders release the GIL.
    """

    def __init__(self, path: Union[str, os.PathLike[str]]) -> None:
        self.path = os.fspath(path)
        header, self.metadata, start = read_header(self.path)
        self._records = _records(self.path, header, self.metadata)
        if os.path.getsize(self.path) > start:
            self._map: Optional[np.ndarray] = np.memmap(self.path, dtype=np.uint8, mode="r").view(np.ndarray)
        else:
            self._map = None
        self._start = start
        self._header = header
        self._entries = {name: self._build(name, rec) for name, rec in self._records.items()}

    def _stored(self, name: str) -> np.ndarray:
        info = self._header[name]
        dt = _ST_DTYPES[info["dtype"]]
        b, e = info["data_offsets"]
        if self._map is None or b == e:
            return np.zeros(info["shape"], dt)
        a = self._map[self._start + b: self._start + e].view(dt).reshape(info["shape"]) \
            if (self._start + b) % dt.itemsize == 0 else \
            np.frombuffer(self._map[self._start + b: self._start + e].tobytes(), dt).reshape(info["shape"])
        a.flags.writeable = False
        return a

    def _build(self, name: str, rec: dict[str, Any]) -> Entry:
        try:
            return _build_entry(name, rec, self._stored)
        except (QuantpressError, KeyError, TypeError, ValueError) as e:
            raise _fail(self.path, f"tensor {name!r} ({rec.get('method')}): {e}") from None

    def entry(self, name: str) -> Entry:
        """The stored, still compressed form of ``name`` (a QuantizedTensor, VQTensor,
        GGUFTensor or the kept array)."""
        return self._entries[name]

    def info(self, name: str) -> dict[str, Any]:
        """``{method, params, shape, dtype, nbytes, bits_per_weight}`` of a source tensor."""
        rec = dict(self._records[name])
        e = self._entries[name]
        rec["nbytes"] = int(e.nbytes)
        rec["bits_per_weight"] = rec["nbytes"] * 8 / max(1, math.prod(rec["shape"]))
        return rec

    @property
    def is_container(self) -> bool:
        """False for a plain safetensors file (every tensor kept as stored)."""
        return VERSION_KEY in self.metadata

    def __getitem__(self, name: str) -> np.ndarray:
        e = self._entries[name]
        if isinstance(e, np.ndarray):
            return e
        try:
            return e.dequantize()
        except (QuantpressError, IndexError) as err:
            raise _fail(self.path, f"tensor {name!r}: {err}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"Container({self.path!r}, {len(self)} tensors)"


def _records(path: str, header: dict[str, Any], meta: dict[str, str]) -> dict[str, Any]:
    """The per-source-tensor records; a plain safetensors file keeps every tensor."""
    if VERSION_KEY not in meta and TENSORS_KEY not in meta:
        return {n: _record("none", {}, tuple(i["shape"]), dtype_name(_ST_DTYPES[i["dtype"]])) for n, i in header.items()}
    if meta.get(VERSION_KEY) != FORMAT_VERSION:
        raise _fail(path, f"unsupported quantpress format version {meta.get(VERSION_KEY)!r} (this reader knows {FORMAT_VERSION!r})")
    try:
        records = json.loads(meta.get(TENSORS_KEY, ""))
    except json.JSONDecodeError as e:
        raise _fail(path, f"corrupt {TENSORS_KEY} metadata ({e})") from None
    if not isinstance(records, dict):
        raise _fail(path, f"{TENSORS_KEY} metadata must be a JSON object")
    claimed: set[str] = set()
    for name, rec in records.items():
        if not isinstance(rec, dict) or rec.get("method") not in ("none", *SUFFIXES):
            method = rec.get("method") if isinstance(rec, dict) else rec
            raise _fail(path, f"tensor {name!r}: unknown method {method!r}")
        shape = rec.get("shape")
        if not isinstance(rec.get("params"), dict) or not isinstance(shape, list) \
                or not all(type(s) is int and s >= 0 for s in shape) or not isinstance(rec.get("dtype"), str):
            raise _fail(path, f"tensor {name!r}: malformed record {rec!r}")
        stored = [name] if rec["method"] == "none" else [name + s for s in SUFFIXES[rec["method"]]]
        claimed.update(s for s in stored if s in header)
    stray = sorted(set(header) - claimed)
    if stray:
        raise _fail(path, f"stored tensor {stray[0]!r} belongs to no entry of {TENSORS_KEY}")
    return records


def _build_entry(name: str, rec: dict[str, Any], stored: Any) -> Entry:
    """Rebuilds the compressed object of one record, checking every shape and length (the
    dataclass constructors check the rest) before any decoding."""
    method, p, shape = rec["method"], rec["params"], tuple(rec["shape"])
    if method == "none":
        a = stored(name)
        if tuple(a.shape) != shape:
            raise QuantpressError(f"stored shape {a.shape} differs from the recorded {shape}")
        return a
    if method == "gguf":
        return GGUFTensor(stored(f"{name}.gguf"), p["type"], shape, rec["dtype"])
    if method == "vq":
        return _build_vq(name, p, shape, stored)
    if method == "sparse":
        return _build_sparse(name, p, shape, stored)
    return _build_scalar(name, p, rec["dtype"], shape, stored)


def _build_scalar(name: str, p: dict[str, Any], dtype: str, shape: tuple[int, ...], stored: Any) -> QuantizedTensor:
    opt = _optional(name, stored)
    bits, group, axis = p["bits"], p["group_size"], p["axis"]
    if type(bits) is not int or (group is not None and type(group) is not int) or (axis is not None and type(axis) is not int):
        raise QuantpressError(f"bits, group_size and axis must be integers, got {bits!r}, {group!r}, {axis!r}")
    return QuantizedTensor(codes=stored(f"{name}.q"), scales=stored(f"{name}.scale"), zeros=opt(".zero"),
                           shape=shape, bits=bits, group_size=group, axis=axis, scheme=p["scheme"],
                           dtype=dtype, method=p["algorithm"],
                           scales_absmax=opt(".scale_absmax"), scales_offset=opt(".scale_offset"))


def _optional(name: str, stored: Any) -> Any:
    def get(suffix: str) -> Optional[np.ndarray]:
        try:
            return stored(name + suffix)
        except KeyError:
            return None
    return get


def _sparse_values(name: str, p: dict[str, Any], count: int, stored: Any) -> Union[np.ndarray, QuantizedTensor]:
    """The kept values of a sparse record: ``count`` floats, or quantized ones padded by less
    than a group."""
    if p.get("values") != "quantized":
        v = stored(f"{name}.values")
        if p.get("values") not in ("float32", "float16") or dtype_name(v.dtype) != p["values"] or v.shape != (count,):
            raise QuantpressError(f"values must be {p.get('values')} of shape ({count},), got {v.dtype} {v.shape}")
        return v
    q = p.get("quant")
    if not isinstance(q, dict) or type(q.get("length")) is not int:
        raise QuantpressError(f"malformed quantization parameters {q!r}")
    length, group = q["length"], q.get("group_size")
    if count == 0 or length < count or length - count >= (group if type(group) is int and group > 0 else 1):
        raise QuantpressError(f"{length} quantized values do not cover {count} kept values")
    return _build_scalar(name, q, str(q.get("dtype", "float32")), (length,), stored)


def _build_sparse(name: str, p: dict[str, Any], shape: tuple[int, ...], stored: Any) -> SparseTensor:
    fmt, n, m, axis, count = (p.get(k) for k in ("format", "n", "m", "axis", "count"))
    if not all(type(v) is int for v in (n, m, axis, count)):
        raise QuantpressError(f"n, m, axis and count must be integers, got {n!r}, {m!r}, {axis!r}, {count!r}")
    size = math.prod(shape)
    if fmt == "bitmask":
        meta = stored(f"{name}.mask")
        want: tuple[Any, ...] = (np.uint8, ((size + 7) // 8,))
        ok = int(np.unpackbits(meta).sum()) == count if meta.dtype == np.uint8 else False
    elif fmt == "nm":
        meta = stored(f"{name}.positions")
        bits = max(2, (m - 1).bit_length()) if m > 1 else 2
        want = (np.uint8, ((size // m * n * bits + 7) // 8 if 1 <= n < m <= 16 else -1,))
        ok = 1 <= n < m <= 16 and len(shape) > 0 and shape[-1] % m == 0 and count == size // m * n
    elif fmt == "structured":
        meta = stored(f"{name}.index")
        want = (np.int32, (meta.shape[0],) if meta.ndim == 1 else (-1,))
        ok = len(shape) == 2 and axis in (0, 1) and count == meta.size * shape[1 - axis] if meta.ndim == 1 else False
        ok = ok and bool(np.all(np.diff(meta.astype(np.int64)) > 0)) and (meta.size == 0 or 0 <= meta[0] and meta[-1] < shape[axis])
    else:
        raise QuantpressError(f"unknown sparse format {fmt!r}")
    if meta.dtype != want[0] or meta.shape != want[1] or not ok:
        raise QuantpressError(f"{fmt} metadata {meta.dtype} {meta.shape} does not fit shape {shape} with {count} kept values")
    values = _sparse_values(name, p, count, stored)
    kw = {"bitmask": "mask", "nm": "positions", "structured": "index"}[fmt]
    return SparseTensor(fmt, values, shape, count, n=n if fmt == "nm" else 0, m=m if fmt == "nm" else 0,
                        axis=axis if fmt == "structured" else 0, **{kw: meta})


def _build_vq(name: str, p: dict[str, Any], shape: tuple[int, ...], stored: Any) -> VQTensor:
    dim, stages, row_scale = p["dim"], p["stages"], p["row_scale"]
    if type(dim) is not int or type(stages) is not int or dim < 1 or stages < 1 or not shape \
            or 0 in shape or shape[-1] % dim:
        raise QuantpressError(f"dim={dim!r}, stages={stages!r} do not fit shape {shape}")
    codes, books = stored(f"{name}.codes"), stored(f"{name}.codebook")
    n_vec = math.prod(shape) // dim
    if codes.dtype not in (np.uint8, np.uint16) or codes.shape != (n_vec, stages):
        raise QuantpressError(f"codes must be uint8/uint16 of shape {(n_vec, stages)}, got {codes.dtype} {codes.shape}")
    if books.dtype != np.float16 or books.ndim != 3 or books.shape[0] != stages or books.shape[2] != dim \
            or not 1 <= books.shape[1] <= 2 ** (8 * codes.itemsize):
        raise QuantpressError(f"codebook must be float16 of shape ({stages}, k, {dim}), got {books.dtype} {books.shape}")
    scales = stored(f"{name}.scale") if row_scale else None
    if scales is not None and (scales.dtype != np.float16 or scales.shape != (math.prod(shape[:-1]),)):
        raise QuantpressError(f"row scales must be float16 of shape ({math.prod(shape[:-1])},), got {scales.dtype} {scales.shape}")
    if codes.size and int(codes.max()) >= books.shape[1]:
        raise QuantpressError(f"a code exceeds the {books.shape[1]} codewords")
    return VQTensor(codes=codes, codebooks=books, scales=scales, shape=shape)


def load(path: Union[str, os.PathLike[str]], lazy: bool = True) -> Mapping[str, np.ndarray]:
    """Opens a quantpress container (or a plain safetensors file) for reading.

    The file is memory-mapped and its header checked (offsets, shapes, methods, the lengths of
    every part) before anything is decoded. Compressed tensors decode to float32 through
    ``QuantizedTensor.dequantize`` / ``qp.gguf_dequantize`` / ``VQTensor.dequantize``.

    Args:
        path: a file written by :func:`save_compressed` or ``qp.compress``; a plain safetensors
            file loads too (every tensor as stored). A sharded container (``qp.compress(...,
            max_shard_size=...)``) loads from its directory or its ``*.safetensors.index.json``
            as one mapping (a ``ShardedContainer``; the index and shards are checked first).
        lazy: ``True``: a read-only mapping that decodes a tensor each time it is read (nothing
            is cached; safe to read from many threads at once). ``False``: a ``dict`` with
            every tensor decoded now.

    Returns:
        A mapping from source tensor name to a NumPy array (float32 for compressed tensors; the
        stored dtype, read-only, for tensors kept as is). The lazy mapping is a
        :class:`Container`, whose ``entry(name)`` and ``info(name)`` give the compressed form.

    Raises:
        FileNotFoundError: no file at ``path``.
        QuantpressError: not a safetensors file, an unknown format version or method, or a
            malformed part; the message names the file and the tensor.

    Example:
        >>> import numpy as np, quantpress as qp, tempfile, os
        >>> w = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
        >>> qt = qp.quantize(w, bits=4, group_size=128)
        >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
        >>> qp.save_compressed(path, {"layer.weight": qt})
        >>> m = qp.load(path)
        >>> bool((m["layer.weight"] == qt.dequantize()).all())
        True
        >>> m.info("layer.weight")["method"], m.info("layer.weight")["bits_per_weight"]
        ('scalar', 4.25)
    """
    from .sharded_container import open_container

    c = open_container(os.fspath(path))
    return c if lazy else {name: np.array(c[name]) for name in c}
