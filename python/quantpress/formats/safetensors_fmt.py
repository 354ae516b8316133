"""A bounded safetensors reader: the header is validated field by field, the data memory-mapped.

Layout: an 8-byte little-endian header length N, N bytes of JSON (an object mapping tensor names
to ``{"dtype", "shape", "data_offsets"}`` plus an optional ``"__metadata__"`` str->str object),
then the data section. Offsets are relative to the data section. We check N against the file
size and a 100 MB cap before reading it, reject duplicate keys, unknown dtypes, shapes whose
size disagrees with their offsets, and offsets that overlap or leave the data section.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from .._core import QuantpressError
from .base import DTYPES, MAX_HEADER_BYTES, LazyTensor, ModelFile, checked_numel, fail, file_size, memmap, no_duplicate_keys


def _read_header(path: str, size: int) -> tuple[dict[str, Any], int]:
    if size < 8:
        raise fail(path, "header length", f"file is {size} bytes, shorter than the 8-byte header length")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > size - 8:
            raise fail(path, "header length", f"{n} runs past the end of the file ({size} bytes)")
        if n > MAX_HEADER_BYTES:
            raise fail(path, "header length", f"{n} exceeds the {MAX_HEADER_BYTES}-byte cap")
        raw = f.read(n)
    if len(raw) != n:
        raise fail(path, "header", "file shrank while reading")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicate_keys(path, "header key {key}", "duplicate name"))
    except QuantpressError:
        raise
    except (UnicodeDecodeError, RecursionError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise fail(path, "header", f"not valid UTF-8 JSON: {e}") from None
    if not isinstance(header, dict):
        raise fail(path, "header", f"must be a JSON object, got {type(header).__name__}")
    return header, 8 + n


def _metadata(path: str, meta: Any) -> dict[str, str]:
    if not isinstance(meta, dict):
        raise fail(path, "__metadata__", "must be an object")
    for k, v in meta.items():
        if not isinstance(v, str):
            raise fail(path, f"__metadata__[{k!r}]", f"value must be a string, got {type(v).__name__}")
    return dict(meta)


def _entry(path: str, name: str, info: Any, data_len: int) -> tuple[str, tuple[int, ...], int, int]:
    """Validates one tensor entry; returns (dtype, shape, begin, end) relative to the data section."""
    field = f"tensor {name!r}"
    if not isinstance(info, dict):
        raise fail(path, field, "entry must be an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise fail(path, f"{field} dtype", f"unknown dtype {dtype!r}")
    itemsize = DTYPES[dtype][1]
    numel = checked_numel(path, f"{field} shape", shape, data_len // itemsize)
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        raise fail(path, f"{field} data_offsets", f"must be two integers, got {offsets!r}")
    begin, end = offsets
    if not 0 <= begin <= end <= data_len:
        raise fail(path, f"{field} data_offsets", f"[{begin}, {end}] outside the data section (0..{data_len})")
    if end - begin != numel * itemsize:
        raise fail(path, f"{field} data_offsets", f"span {end - begin} bytes but shape {shape} x {dtype} needs {numel * itemsize}")
    return dtype, tuple(shape), begin, end


def open_file(path: str) -> ModelFile:
    """Opens a safetensors file (see the module doc for the checks)."""
    size = file_size(path)
    header, data_start = _read_header(path, size)
    data_len = size - data_start
    metadata = _metadata(path, header.pop("__metadata__")) if "__metadata__" in header else {}
    entries = {name: _entry(path, name, info, data_len) for name, info in header.items()}
    spans = sorted((b, e, n) for n, (_, _, b, e) in entries.items() if e > b)
    for (_, e0, n0), (b1, _, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise fail(path, f"tensor {n1!r} data_offsets", f"overlaps tensor {n0!r}")
    tensors = {}
    for name, (dtype, shape, begin, end) in entries.items():
        dt = DTYPES[dtype][0]
        assert dt is not None

        def load(dt: Any = dt, shape: tuple[int, ...] = shape, begin: int = begin, end: int = end,
                 name: str = name) -> Any:
            count = (end - begin) // dt.itemsize
            return memmap(path, f"tensor {name!r}", dt, data_start + begin, count, size).reshape(shape)

        tensors[name] = LazyTensor(name, shape, dtype, end - begin, load)
    return ModelFile(path, "safetensors", tensors, metadata)
