"""A bounded GGUF v2/v3 reader: every count, length and offset is checked before use.

GGUF files come from strangers. The ``gguf`` package's reader trusts the array lengths it reads
(a crafted 2^63 length makes it allocate or loop for ever), so this module parses the header
itself: each count is compared with the bytes left in the file *before* anything is allocated,
shapes are checked for overflow, tensor data must be aligned, inside the file and not overlap.
A bad file raises :class:`~quantpress.QuantpressError` naming the file and the field.
Tensor data is never read eagerly: tensors are read-only views of one ``np.memmap``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np
from .._core import QuantpressError

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_ALIGNMENT = 1 << 16
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_DEPTH = 4  # arrays of arrays of ... (llama.cpp files use at most 2)
MAX_ELEMENTS = (1 << 63) - 1  # ggml's int64 element count

#: ggml tensor types: id → (name, values per block, bytes per block), as in ggml.h / gguf-py
#: (kept here so reading needs no ``gguf`` package).
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40), 10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8),
    28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}
#: ggml type name → id.
TYPE_IDS: dict[str, int] = {name: i for i, (name, _, _) in GGML_TYPES.items()}


class GGUFValueType:
    """GGUF metadata value type ids (gguf-py's ``GGUFValueType``)."""

    UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)

#: struct format and size of each scalar metadata type.
_SCALARS: dict[int, tuple[str, int]] = {
    GGUFValueType.UINT8: ("<B", 1),
    GGUFValueType.INT8: ("<b", 1),
    GGUFValueType.UINT16: ("<H", 2),
    GGUFValueType.INT16: ("<h", 2),
    GGUFValueType.UINT32: ("<I", 4),
    GGUFValueType.INT32: ("<i", 4),
    GGUFValueType.FLOAT32: ("<f", 4),
    GGUFValueType.BOOL: ("<B", 1),
    GGUFValueType.UINT64: ("<Q", 8),
    GGUFValueType.INT64: ("<q", 8),
    GGUFValueType.FLOAT64: ("<d", 8),
}
_NUMPY: dict[int, str] = {
    GGUFValueType.UINT8: "<u1", GGUFValueType.INT8: "<i1", GGUFValueType.UINT16: "<u2",
    GGUFValueType.INT16: "<i2", GGUFValueType.UINT32: "<u4", GGUFValueType.INT32: "<i4",
    GGUFValueType.FLOAT32: "<f4", GGUFValueType.UINT64: "<u8", GGUFValueType.INT64: "<i8",
    GGUFValueType.FLOAT64: "<f8",
}
#: NumPy dtype of the unquantized tensor types (BF16 is read as raw uint16 bits).
_PLAIN: dict[str, str] = {
    "F32": "<f4", "F16": "<f2", "F64": "<f8", "I8": "<i1", "I16": "<i2", "I32": "<i4",
    "I64": "<i8", "BF16": "<u2",
}


class GGUFValue(NamedTuple):
    """One metadata value exactly as stored: its GGUF type, the value and the item type of arrays.

    ``value`` is a Python scalar or ``str``; for an array it is a NumPy array (numeric items),
    a list of ``str``/``bool``, or a list of :class:`GGUFValue` (arrays of arrays).
    """

    type: int
    value: Any
    item_type: int | None = None

    def to_python(self) -> Any:
        """The value as plain Python objects (arrays become lists)."""
        if self.type != GGUFValueType.ARRAY:
            return self.value
        if isinstance(self.value, np.ndarray):
            return self.value.tolist()
        return [v.to_python() if isinstance(v, GGUFValue) else v for v in self.value]


def type_name(type_id: int) -> str:
    """The ggml type name ("F32", "Q4_K", ...) of a type id; raises for unknown ids."""
    if type_id not in GGML_TYPES:
        raise QuantpressError(f"unknown ggml tensor type id {type_id}")
    return GGML_TYPES[type_id][0]


def tensor_nbytes(type_id: int, dims: tuple[int, ...]) -> int:
    """Bytes of a tensor of ggml type ``type_id`` and GGUF ``dims`` (ne0 first); raises if ragged."""
    _, block, size = GGML_TYPES[type_id]
    n = 1
    for d in dims:
        n *= d
    if dims and dims[0] % block:
        raise QuantpressError(f"row length {dims[0]} is not a multiple of the {type_name(type_id)} block size {block}")
    return n // block * size


class GGUFTensor:
    """One tensor of a :class:`GGUFFile`: its header entry and a lazy view of its bytes.

    Attributes:
        name: tensor name.
        shape: NumPy shape (GGUF dims reversed: ne0, the innermost, is last).
        dims: GGUF dims as stored (ne0 first).
        ggml_type: ggml type id (a key of :data:`GGML_TYPES`).
        dtype: ggml type name, e.g. ``"F32"``, ``"BF16"``, ``"Q4_K"``.
        offset: byte offset of the data in the file (absolute).
        nbytes: byte size of the data.
    """

    def __init__(self, file: GGUFFile, name: str, dims: tuple[int, ...], ggml_type: int, offset: int, nbytes: int):
        self._file = file
        self.name = name
        self.dims = dims
        self.shape = tuple(reversed(dims))
        self.ggml_type = ggml_type
        self.dtype = type_name(ggml_type)
        self.offset = offset
        self.nbytes = nbytes

    def __repr__(self) -> str:
        return f"GGUFTensor({self.name!r}, shape={self.shape}, dtype={self.dtype!r}, nbytes={self.nbytes})"

    def raw(self) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view of the file (no copy)."""
        return self._file._bytes(self.offset, self.nbytes)

    def numpy(self) -> np.ndarray:
        """The values: a read-only view for F32/F16/F64/I8..I64, float32 for BF16 and quantized types."""
        raw = self.raw()
        plain = _PLAIN.get(self.dtype)
        if self.dtype == "BF16":
            return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(self.shape)
        if plain is not None:
            return raw.view(plain).reshape(self.shape)
        from ..gguf import GGUF_TYPES, gguf_dequantize

        if self.dtype in GGUF_TYPES:
            return gguf_dequantize(raw, self.dtype, self.shape)
        try:  # the types quantpress has no kernel for (IQ2_XXS, TQ1_0, ...): the gguf package
            import gguf.quants

            out = gguf.quants.dequantize(np.asarray(raw), gguf.GGMLQuantizationType(self.ggml_type))
        except (ImportError, NotImplementedError, ValueError) as e:
            raise QuantpressError(f"{self.name}: cannot decode {self.dtype} tensors: {e}") from None
        return np.asarray(out, np.float32).reshape(self.shape)


class _Cursor:
    """Reads little-endian values from the file's bytes, refusing to read past the end."""

    def __init__(self, buf: memoryview, path: str):
        self.buf, self.pos, self.path = buf, 0, path

    def fail(self, field: str, msg: str) -> QuantpressError:
        return QuantpressError(f"{self.path}: {field}: {msg}")

    def left(self) -> int:
        return len(self.buf) - self.pos

    def need(self, n: int, field: str) -> None:
        if n > self.left():
            raise self.fail(field, f"needs {n} bytes at offset {self.pos}, only {self.left()} left in the file")

    def scalar(self, fmt: str, size: int, field: str) -> Any:
        self.need(size, field)
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return v

    def u32(self, field: str) -> int:
        return int(self.scalar("<I", 4, field))

    def u64(self, field: str) -> int:
        return int(self.scalar("<Q", 8, field))

    def count(self, field: str, item_min: int) -> int:
        """A u64 count of items taking at least ``item_min`` bytes each, checked against the file."""
        n = self.u64(field)
        if n * item_min > self.left():
            raise self.fail(field, f"count {n} needs at least {n * item_min} bytes, only {self.left()} left in the file")
        return n

    def string(self, field: str) -> str:
        n = self.count(field + " length", 1)
        s = bytes(self.buf[self.pos : self.pos + n]).decode("utf-8", "surrogateescape")
        self.pos += n
        return s


def _min_size(vtype: int) -> int:
    """Fewest bytes a value of ``vtype`` takes (strings: the length; arrays: type + count)."""
    if vtype == GGUFValueType.STRING:
        return 8
    if vtype == GGUFValueType.ARRAY:
        return 12
    return _SCALARS[vtype][1]


def _value_type(cur: _Cursor, field: str) -> int:
    t = cur.u32(field)
    if t not in _SCALARS and t not in (GGUFValueType.STRING, GGUFValueType.ARRAY):
        raise cur.fail(field, f"unknown metadata value type {t}")
    return t


def _read_value(cur: _Cursor, vtype: int, field: str, depth: int = 0) -> GGUFValue:
    if vtype == GGUFValueType.STRING:
        return GGUFValue(vtype, cur.string(field))
    if vtype == GGUFValueType.ARRAY:
        return _read_array(cur, field, depth)
    fmt, size = _SCALARS[vtype]
    v = cur.scalar(fmt, size, field)
    if vtype == GGUFValueType.BOOL:
        if v > 1:
            raise cur.fail(field, f"bool value {v} is not 0 or 1")
        v = bool(v)
    return GGUFValue(vtype, v)


def _read_array(cur: _Cursor, field: str, depth: int) -> GGUFValue:
    if depth >= MAX_ARRAY_DEPTH:
        raise cur.fail(field, f"arrays nested deeper than {MAX_ARRAY_DEPTH}")
    itype = _value_type(cur, field + " item type")
    n = cur.count(field + " array length", _min_size(itype))
    if itype in _NUMPY:
        size = _SCALARS[itype][1]
        items = np.frombuffer(cur.buf, _NUMPY[itype], n, cur.pos).copy()
        cur.pos += n * size
        return GGUFValue(GGUFValueType.ARRAY, items, itype)
    values = [_read_value(cur, itype, f"{field}[{i}]", depth + 1) for i in range(n)]
    if itype == GGUFValueType.ARRAY:
        return GGUFValue(GGUFValueType.ARRAY, values, itype)
    return GGUFValue(GGUFValueType.ARRAY, [v.value for v in values], itype)


class GGUFFile(Mapping[str, GGUFTensor]):
    """A parsed GGUF file: metadata and a mapping of tensor name → :class:`GGUFTensor`.

    Attributes:
        path: the file's path.
        version: GGUF version (2 or 3).
        fields: metadata key → :class:`GGUFValue` (types kept, for writing back exactly).
        metadata: metadata key → plain Python value.
        alignment: data alignment (``general.alignment``, default 32).
        data_offset: absolute offset of the data section.
        tensor_order: tensor names in header order.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        try:
            size = os.path.getsize(self.path)
        except OSError as e:
            raise QuantpressError(f"{self.path}: cannot open: {e.strerror}") from None
        if size < 24:
            raise QuantpressError(f"{self.path}: header: file is {size} bytes, a GGUF header needs at least 24")
        self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        cur = _Cursor(self._mm.data, self.path)
        self._parse_header(cur)
        self.fields = self._parse_kv(cur)
        self.metadata = {k: v.to_python() for k, v in self.fields.items()}
        self.alignment = self._alignment(cur)
        infos = self._parse_tensor_infos(cur)
        self.data_offset = -(-cur.pos // self.alignment) * self.alignment
        self._tensors = self._place_tensors(cur, infos)
        self.tensor_order = [name for name, *_ in infos]

    def _parse_header(self, cur: _Cursor) -> None:
        cur.need(4, "magic")
        magic = bytes(cur.buf[:4])
        cur.pos = 4
        if magic != GGUF_MAGIC:
            raise cur.fail("magic", f"expected b'GGUF', found {magic!r}")
        self.version = cur.u32("version")
        if self.version in (2 << 24, 3 << 24):
            raise cur.fail("version", "big-endian GGUF files are not supported")
        if self.version not in (2, 3):
            raise cur.fail("version", f"GGUF version {self.version} is not supported (2 or 3)")
        self._n_tensors = cur.u64("tensor_count")
        self._n_kv = cur.u64("metadata_kv_count")
        # Each tensor info takes >= 32 bytes (name length, n_dims, one dim, type, offset);
        # each KV >= 13 (key length, value type, a 1-byte value).
        if self._n_tensors * 32 > cur.left():
            raise cur.fail("tensor_count", f"{self._n_tensors} tensors cannot fit in the {cur.left()} bytes left")
        if self._n_kv * 13 > cur.left():
            raise cur.fail("metadata_kv_count", f"{self._n_kv} entries cannot fit in the {cur.left()} bytes left")

    def _parse_kv(self, cur: _Cursor) -> dict[str, GGUFValue]:
        fields: dict[str, GGUFValue] = {}
        for i in range(self._n_kv):
            key = cur.string(f"metadata key #{i}")
            if key in fields:
                raise cur.fail(f"metadata key {key!r}", "duplicate key")
            vtype = _value_type(cur, f"metadata {key!r} type")
            fields[key] = _read_value(cur, vtype, f"metadata {key!r}")
        return fields

    def _alignment(self, cur: _Cursor) -> int:
        f = self.fields.get("general.alignment")
        if f is None:
            return DEFAULT_ALIGNMENT
        if f.type != GGUFValueType.UINT32:
            raise cur.fail("general.alignment", f"must be a UINT32, found value type {f.type}")
        a = int(f.value)
        if a <= 0 or a & (a - 1) or a > MAX_ALIGNMENT:
            raise cur.fail("general.alignment", f"{a} is not a power of two in [1, {MAX_ALIGNMENT}]")
        return a

    def _parse_tensor_infos(self, cur: _Cursor) -> list[tuple[str, tuple[int, ...], int, int]]:
        infos, seen = [], set()
        for i in range(self._n_tensors):
            name = cur.string(f"tensor #{i} name")
            field = f"tensor {name!r}"
            if name in seen:
                raise cur.fail(field, "duplicate tensor name")
            seen.add(name)
            n_dims = cur.u32(field + " n_dims")
            if not 1 <= n_dims <= MAX_DIMS:
                raise cur.fail(field + " n_dims", f"{n_dims} is not in [1, {MAX_DIMS}]")
            dims = tuple(cur.u64(f"{field} dims[{d}]") for d in range(n_dims))
            n = 1
            for d in dims:
                n *= d
            if n > MAX_ELEMENTS:
                raise cur.fail(field + " dims", f"{dims} hold {n} elements, more than 2^63 - 1")
            type_id = cur.u32(field + " type")
            if type_id not in GGML_TYPES:
                raise cur.fail(field + " type", f"unknown ggml type id {type_id}")
            offset = cur.u64(field + " offset")
            infos.append((name, dims, type_id, offset))
        return infos

    def _place_tensors(self, cur: _Cursor, infos: list[tuple[str, tuple[int, ...], int, int]]) -> dict[str, GGUFTensor]:
        size = len(cur.buf)
        tensors: dict[str, GGUFTensor] = {}
        for name, dims, type_id, offset in infos:
            field = f"tensor {name!r}"
            try:
                nbytes = tensor_nbytes(type_id, dims)
            except QuantpressError as e:
                raise cur.fail(field + " dims", str(e)) from None
            if offset % self.alignment:
                raise cur.fail(field + " offset", f"{offset} is not a multiple of the alignment {self.alignment}")
            start = self.data_offset + offset
            if start + nbytes > size:
                raise cur.fail(field + " offset", f"data [{start}, {start + nbytes}) runs past the end of the file ({size} bytes)")
            tensors[name] = GGUFTensor(self, name, dims, type_id, start, nbytes)
        spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in tensors.values() if t.nbytes)
        for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
            if start < end:
                raise cur.fail(f"tensor {b!r} offset", f"data overlaps tensor {a!r}")
        return tensors

    def _bytes(self, offset: int, nbytes: int) -> np.ndarray:
        return self._mm[offset : offset + nbytes]

    def __getitem__(self, name: str) -> GGUFTensor:
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensor_order)

    def __len__(self) -> int:
        return len(self._tensors)

    def __repr__(self) -> str:
        return f"GGUFFile({self.path!r}, version={self.version}, tensors={len(self)}, metadata={len(self.fields)})"


def read_gguf(path: str | os.PathLike[str]) -> GGUFFile:
    """Opens a GGUF v2/v3 file without trusting its header.

    Every count, length, shape and offset is checked against the file's size before anything is
    allocated; tensor data stays on disk (read-only memory map) until a tensor's ``numpy()`` or
    ``raw()`` is called.

    Args:
        path: the ``.gguf`` file.

    Returns:
        A :class:`GGUFFile`: a mapping of tensor name → :class:`GGUFTensor` with ``.metadata``.

    Raises:
        QuantpressError: naming the file and the field, for a truncated or malformed file.

    Example:
        >>> import numpy as np, gguf, quantpress as qp, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "tiny.gguf")
        >>> w = gguf.GGUFWriter(path, "llama")
        >>> w.add_block_count(1)
        >>> w.add_tensor("output.weight", np.ones((2, 32), np.float32))
        >>> w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
        >>> f = qp.read_gguf(path)
        >>> f["output.weight"].shape, f["output.weight"].dtype, f.metadata["llama.block_count"]
        ((2, 32), 'F32', 1)
    """
    return GGUFFile(path)


def open_file(path: str | os.PathLike[str]) -> Any:
    """The GGUF reader behind ``quantpress.formats.open_model``: a ``ModelFile`` of ``LazyTensor``.

    ``dtype`` is the ggml type name; ``numpy()`` gives F32/F16/F64/integer data as stored and
    float32 for BF16 and the block-quantized types. ``metadata`` holds the scalar and string keys
    as strings (arrays such as the tokenizer vocabulary are left out; see :func:`read_gguf`).
    """
    from .base import LazyTensor, ModelFile  # the lazy-interface module of quantpress.formats

    f = GGUFFile(path)
    tensors = {
        name: LazyTensor(name, t.shape, t.dtype, t.nbytes, t.numpy, np.dtype(np.float32) if t.dtype not in _PLAIN or t.dtype == "BF16" else np.dtype(_PLAIN[t.dtype]))
        for name, t in f.items()
    }
    meta = {k: str(v.value) for k, v in f.fields.items() if v.type != GGUFValueType.ARRAY}
    return ModelFile(f.path, "gguf", tensors, meta)
