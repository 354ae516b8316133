"""NumPy ``.npy`` and ``.npz`` files, read without pickle and without trusting declared sizes.

``.npy``: the header (a Python-literal dict parsed by NumPy's safe reader, capped at 64 KiB) gives
dtype, order and shape; the data size they imply must fit in the file, then it is memory-mapped.
``.npz``: a zip of ``.npy`` members. Each member's declared size is checked against its
compressed size (deflate cannot expand more than ~1032:1) before anything is decompressed; stored
members (``np.savez``) are memory-mapped, deflated ones (``np.savez_compressed``) read on demand.
Object arrays are refused: loading them would mean unpickling.
"""

from __future__ import annotations

import io
import os
import zipfile
from typing import Any

import numpy as np

from .base import (
    LazyTensor, ModelFile, checked_numel, check_member, dtype_name, fail, file_size, memmap, open_zip,
    read_member, stored_data_offset,
)

MAX_NPY_HEADER = 65536


def _parse_header(path: str, field: str, head: bytes) -> tuple[np.dtype, bool, tuple[int, ...], int]:
    """(dtype, fortran_order, shape, header length) from the first bytes of an .npy stream."""
    fmt = np.lib.format
    fp = io.BytesIO(head)
    try:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fp, max_header_size=MAX_NPY_HEADER)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt._read_array_header(fp, version, max_header_size=MAX_NPY_HEADER)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as e:  # NumPy's literal parser raises many kinds (ValueError, TokenError, ...)
        raise fail(path, f"{field} header", f"not a valid .npy header: {e}") from None
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise fail(path, f"{field} dtype", "object arrays are refused (they need pickle)")
    if dtype_name(dtype) is None:
        raise fail(path, f"{field} dtype", f"unsupported dtype {dtype.str!r}")
    return dtype, bool(fortran), tuple(shape), fp.tell()


def _tensor(name: str, dtype: np.dtype, fortran: bool, shape: tuple[int, ...], numel: int,
            read: Any) -> LazyTensor:
    def load() -> np.ndarray:
        return read().reshape(shape, order="F" if fortran else "C")

    tname = dtype_name(dtype)
    assert tname is not None
    return LazyTensor(name, shape, tname, numel * dtype.itemsize, load, numpy_dtype=dtype)


def _open_npy(path: str) -> ModelFile:
    size = file_size(path)
    with open(path, "rb") as f:
        head = f.read(MAX_NPY_HEADER + 16)
    dtype, fortran, shape, hlen = _parse_header(path, "npy", head)
    numel = checked_numel(path, "npy shape", list(shape), (size - hlen) // max(dtype.itemsize, 1))
    if hlen + numel * dtype.itemsize != size:
        raise fail(path, "npy shape", f"{shape} x {dtype} needs {numel * dtype.itemsize} bytes, file has {size - hlen}")
    name = os.path.splitext(os.path.basename(path))[0]
    t = _tensor(name, dtype, fortran, shape, numel, lambda: memmap(path, "npy data", dtype, hlen, numel, size))
    return ModelFile(path, "npy", {name: t})


def _npz_member(path: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo, size: int) -> LazyTensor:
    field = f"npz member {info.filename!r}"
    check_member(path, info, size)
    head = read_member(path, zf, info, 0, min(info.file_size, MAX_NPY_HEADER + 16))
    dtype, fortran, shape, hlen = _parse_header(path, field, head)
    itemsize = max(dtype.itemsize, 1)
    numel = checked_numel(path, f"{field} shape", list(shape), max(info.file_size - hlen, 0) // itemsize)
    nbytes = numel * dtype.itemsize
    if hlen + nbytes != info.file_size:
        raise fail(path, f"{field} shape", f"{shape} x {dtype} needs {nbytes} bytes, member has {info.file_size - hlen}")
    if info.compress_type == zipfile.ZIP_STORED:
        start = stored_data_offset(path, info, size) + hlen

        def read() -> np.ndarray:
            return memmap(path, field, dtype, start, numel, size)
    else:
        def read() -> np.ndarray:
            return np.frombuffer(read_member(path, zf, info, hlen, nbytes), dtype=dtype, count=numel)

    name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
    return _tensor(name, dtype, fortran, shape, numel, read)


def _open_npz(path: str) -> ModelFile:
    size = file_size(path)
    zf = open_zip(path)
    try:
        tensors: dict[str, LazyTensor] = {}
        for info in zf.infolist():
            if info.filename.endswith("/"):  # (ZipInfo.is_dir fails on an empty name)
                continue
            t = _npz_member(path, zf, info, size)
            if t.name in tensors:
                raise fail(path, f"npz member {info.filename!r}", "duplicate name")
            tensors[t.name] = t
    except BaseException:
        zf.close()
        raise
    return ModelFile(path, "npz", tensors, closers=[zf.close])


def open_file(path: str) -> ModelFile:
    """Opens an ``.npy`` or ``.npz`` file (chosen by its magic bytes)."""
    with open(path, "rb") as f:
        magic = f.read(6)
    return _open_npy(path) if magic == b"\x93NUMPY" else _open_npz(path)
