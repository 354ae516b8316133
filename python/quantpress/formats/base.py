"""Shared pieces of the model-file readers: the lazy tensor, the read-only file mapping, dtypes.

Model files come from strangers (see DESIGN.md, "Untrusted input"), so every reader checks each
header field against the file size and hard caps before it allocates or reads anything, and
reports a bad file as a ``QuantpressError`` naming the file and the field.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import ml_dtypes
import numpy as np

from .._core import QuantpressError

# Hard caps that hold for any real model file.
MAX_HEADER_BYTES = 100 * 1024 * 1024  # a JSON / pickle header larger than this is refused
MAX_DIMS = 64  # rank of a tensor
MAX_TENSORS = 1_000_000

# name -> (NumPy dtype or None, bytes per element). Block-quantized types have no NumPy dtype.
DTYPES: dict[str, tuple[np.dtype | None, int]] = {
    "F64": (np.dtype("<f8"), 8),
    "F32": (np.dtype("<f4"), 4),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype(ml_dtypes.bfloat16), 2),
    "F8_E4M3": (np.dtype(ml_dtypes.float8_e4m3fn), 1),
    "F8_E5M2": (np.dtype(ml_dtypes.float8_e5m2), 1),
    "I64": (np.dtype("<i8"), 8),
    "I32": (np.dtype("<i4"), 4),
    "I16": (np.dtype("<i2"), 2),
    "I8": (np.dtype("i1"), 1),
    "U64": (np.dtype("<u8"), 8),
    "U32": (np.dtype("<u4"), 4),
    "U16": (np.dtype("<u2"), 2),
    "U8": (np.dtype("u1"), 1),
    "BOOL": (np.dtype("?"), 1),
}

_BY_NUMPY = {dt: name for name, (dt, _) in DTYPES.items() if dt is not None}


def fail(path: str, field: str, message: str) -> QuantpressError:
    """The error for a malformed file: names the file and the offending field."""
    return QuantpressError(f"{path}: {field}: {message}")


def no_duplicate_keys(path: str, field: str, message: str) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """A ``json.loads`` ``object_pairs_hook`` that refuses a key given twice (plain JSON keeps the
    last one silently): ``fail(path, field.format(key=...), message)``."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise fail(path, field.format(key=repr(k)), message)
            out[k] = v
        return out

    return hook


def dtype_name(dtype: np.dtype) -> str | None:
    """Our dtype name for a NumPy dtype (byte order normalised), or None when there is none."""
    dt = np.dtype(dtype)
    if dt.byteorder == ">":
        dt = dt.newbyteorder("<")
    return _BY_NUMPY.get(dt)


def checked_numel(path: str, field: str, shape: Any, limit: int) -> int:
    """Validates a shape (non-negative ints, at most MAX_DIMS) whose product must not exceed ``limit``.

    The product is compared with ``limit`` after every factor, so a shape with a huge product
    fails before any big number is built.
    """
    if not isinstance(shape, (list, tuple)):
        raise fail(path, field, f"shape must be a list, got {type(shape).__name__}")
    if len(shape) > MAX_DIMS:
        raise fail(path, field, f"{len(shape)} dimensions (at most {MAX_DIMS})")
    n = 1
    for d in shape:
        if not isinstance(d, int) or isinstance(d, bool) or d < 0:
            raise fail(path, field, f"dimension {d!r} is not a non-negative integer")
    if 0 in shape:
        return 0
    for d in shape:
        n *= d
        if n > limit:
            raise fail(path, field, f"shape {list(shape)} has more elements than the file can hold")
    return n


def memmap(path: str, field: str, dtype: np.dtype, offset: int, count: int, file_size: int) -> np.ndarray:
    """A read-only 1-D memory map of ``count`` items at ``offset`` (bounds checked first)."""
    nbytes = count * dtype.itemsize
    if offset < 0 or offset + nbytes > file_size:
        raise fail(path, field, f"bytes [{offset}, {offset + nbytes}) lie outside the file ({file_size} bytes)")
    if count == 0:
        return np.empty(0, dtype)
    try:
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(count,))
    except (ValueError, OSError) as e:  # the file shrank since it was opened
        raise fail(path, field, f"cannot map the data: {e}") from None


class LazyTensor:
    """One tensor of a model file; ``numpy()`` reads (memory-maps where possible) on demand.

    Attributes:
        name: the tensor's name in the file.
        shape: its shape.
        dtype: a format-neutral type name ("F32", "BF16", "F8_E4M3", "I8", "Q4_K", ...).
        numpy_dtype: the NumPy dtype of ``numpy()``'s result, or None for block-quantized types.
        nbytes: the size of its stored data in bytes.
    """

    __slots__ = ("_load", "dtype", "name", "nbytes", "numpy_dtype", "shape")

    def __init__(self, name: str, shape: tuple[int, ...], dtype: str, nbytes: int,
                 load: Callable[[], np.ndarray], numpy_dtype: np.dtype | None = None) -> None:
        self.name = name
        self.shape = tuple(shape)
        self.dtype = dtype
        self.numpy_dtype = numpy_dtype if numpy_dtype is not None else DTYPES.get(dtype, (None, 0))[0]
        self.nbytes = nbytes
        self._load = load

    def numpy(self) -> np.ndarray:
        """The tensor's data as a read-only NumPy array (a memory map when the file allows)."""
        arr = self._load()
        if arr.flags.writeable:
            arr.flags.writeable = False
        return arr

    def __repr__(self) -> str:
        return f"LazyTensor({self.name!r}, shape={self.shape}, dtype={self.dtype!r})"


class ModelFile(Mapping[str, LazyTensor]):
    """A model file opened read-only: a mapping from tensor name to ``LazyTensor``.

    Attributes:
        path: the file's path.
        format: "safetensors", "npz", "npy", "torch", "gguf", "onnx", ...
        metadata: string key/value metadata from the file's header (may be empty).
    """

    def __init__(self, path: str, fmt: str, tensors: dict[str, LazyTensor],
                 metadata: dict[str, str] | None = None, closers: list[Callable[[], Any]] | None = None) -> None:
        self.path = path
        self.format = fmt
        self.metadata = dict(metadata or {})
        self._tensors = tensors
        self._closers = list(closers or [])

    def __getitem__(self, name: str) -> LazyTensor:
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def close(self) -> None:
        """Releases any open handles (arrays already returned by ``numpy()`` stay valid)."""
        closers, self._closers = self._closers, []
        for c in closers:
            c()

    def __enter__(self) -> ModelFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ModelFile({self.path!r}, format={self.format!r}, tensors={len(self)})"


class BoundedReader:
    """A file-like view of ``data[start:end]`` whose ``read(n)`` never allocates more than remains.

    Parsers (pickle, numpy's header reader) call ``read(n)`` with lengths taken from the file;
    clamping them here means a forged length costs nothing.
    """

    def __init__(self, data: Any, start: int = 0, end: int | None = None) -> None:
        self._data = data
        self.pos = start
        self.end = len(data) if end is None else end

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.end - self.pos
        n = max(0, min(n, self.end - self.pos))
        out = bytes(self._data[self.pos:self.pos + n])
        self.pos += n
        return out

    def readline(self, limit: int = -1) -> bytes:
        stop = self.end if limit is None or limit < 0 else min(self.end, self.pos + limit)
        i = self._data.find(b"\n", self.pos, stop)
        return self.read((stop if i < 0 else i + 1) - self.pos)

    def tell(self) -> int:
        return self.pos


def file_size(path: str) -> int:
    """The size of a regular file; FileNotFoundError when missing, QuantpressError when not a file."""
    st = os.stat(path)
    if not os.path.isfile(path):
        raise fail(path, "path", "not a regular file")
    return st.st_size


# --- zip archives (npz, torch) ---
MAX_DEFLATE_RATIO = 1100  # deflate cannot expand more than ~1032:1; a larger claim is a bomb


def open_zip(path: str) -> zipfile.ZipFile:
    """Opens a zip archive, turning any parse failure into a QuantpressError."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError, struct.error,
            UnicodeDecodeError, NotImplementedError, IndexError, KeyError, TypeError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise fail(path, "zip directory", f"not a readable zip archive: {e}") from None


def check_member(path: str, info: zipfile.ZipInfo, archive_size: int) -> None:
    """Refuses a member whose compression or declared sizes cannot be honest (a zip bomb)."""
    field = f"zip member {info.filename!r}"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise fail(path, field, f"compression method {info.compress_type} is not supported (only stored/deflate)")
    if info.flag_bits & 0x1:
        raise fail(path, field, "encrypted members are not supported")
    if info.compress_size > archive_size or info.header_offset > archive_size:
        raise fail(path, field, f"compressed size {info.compress_size} past the end of the archive")
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        raise fail(path, field, f"stored member claims {info.file_size} bytes from {info.compress_size}")
    if info.file_size > info.compress_size * MAX_DEFLATE_RATIO + 1024:
        raise fail(path, field, f"declared size {info.file_size} is more than {MAX_DEFLATE_RATIO}x "
                                f"its compressed size {info.compress_size} (zip bomb?)")


def stored_data_offset(path: str, info: zipfile.ZipInfo, archive_size: int) -> int:
    """The file offset of a member's (stored or compressed) bytes, read from its local header and
    bounds-checked against the archive's size."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
    field = f"zip member {info.filename!r}"
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise fail(path, field, "bad local file header")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    if start + info.compress_size > archive_size:
        raise fail(path, field, f"data [{start}, {start + info.compress_size}) past the end of the archive")
    return start


def inflate_member(path: str, info: zipfile.ZipInfo, archive_size: int, chunk: int = 1 << 20) -> np.ndarray:
    """A (checked) deflated member's bytes, read-only uint8 of exactly its declared size.

    Streams the compressed bytes through ``zlib`` never asking for more output than the declared
    size allows (plus one byte to notice a lie), so a member that inflates past its declared size
    is refused after at most that many bytes; one that ends short, or whose CRC-32 differs, is
    refused too. The declared size was bounded by :func:`check_member` (the deflate ratio)."""
    field = f"zip member {info.filename!r}"
    start = stored_data_offset(path, info, archive_size)
    want = info.file_size
    out = np.empty(want, np.uint8)
    pos, left = 0, info.compress_size
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        with open(path, "rb") as f:
            f.seek(start)
            while not d.eof:
                buf = d.unconsumed_tail
                if not buf:
                    buf = f.read(min(chunk, left))
                    left -= len(buf)
                    if not buf:
                        raise fail(path, field, f"deflate stream ends after {pos} of {want} bytes")
                piece = d.decompress(buf, want - pos + 1)
                if pos + len(piece) > want:
                    raise fail(path, field, f"inflates past its declared size of {want} bytes")
                out[pos:pos + len(piece)] = np.frombuffer(piece, np.uint8)
                pos += len(piece)
    except zlib.error as e:
        raise fail(path, field, f"cannot be inflated: {e}") from None
    if pos != want:
        raise fail(path, field, f"inflates to {pos} bytes, declared {want}")
    if zlib.crc32(out.data) != info.CRC:
        raise fail(path, field, "CRC-32 of the inflated data differs from the directory's")
    out.flags.writeable = False
    return out


def read_member(path: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo, start: int, count: int) -> bytes:
    """``count`` bytes from offset ``start`` of a (checked) member, decompressing as needed."""
    try:
        with zf.open(info) as f:
            if start:
                f.seek(start)
            out = f.read(count)
    except (zipfile.BadZipFile, zlib.error, ValueError, EOFError, OSError, struct.error, NotImplementedError,
            IndexError) as e:
        raise fail(path, f"zip member {info.filename!r}", f"cannot be read: {e}") from None
    if len(out) != count:
        raise fail(path, f"zip member {info.filename!r}", f"holds {len(out)} bytes, expected {count}")
    return out
