"""A bounded ONNX reader: graph initializers and ``Constant`` node tensors, external data mapped.

An ONNX model is one protobuf ``ModelProto`` (at most 2 GB; larger models keep their weights in
external data files next to it). We check the file size before parsing, parse with the ``onnx``
package and turn every decode failure into a ``QuantpressError``. Each tensor's declared shape is
checked against the bytes that actually hold it (``raw_data``, the typed ``*_data`` fields, or an
external ``location``/``offset``/``length`` range) before anything is decoded. External data
files are resolved relative to the model's folder; a location that is absolute, contains ``..`` or
leads (through links) outside that folder is refused, and the data is memory-mapped.

Only the top-level graph is read: tensors inside subgraphs (``If``/``Loop``/``Scan`` bodies) and
sparse initializers are not listed, nor are string and complex tensors (their names are recorded
in ``metadata["onnx.skipped"]``). Memory: parsing holds the file's bytes plus the decoded
protobuf; typed repeated fields (``int64_data`` written as 1-byte varints) can decode to up to 8
bytes per file byte, ``raw_data`` and external data cost nothing extra.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import ml_dtypes
import numpy as np

from .base import DTYPES, LazyTensor, ModelFile, checked_numel, fail, file_size

#: The largest protobuf the ONNX format allows (protobuf's 2 GB limit).
MAX_PROTOBUF_BYTES = 2**31 - 1

# ONNX TensorProto.DataType -> our dtype name.
_ONNX_DTYPES = {1: "F32", 2: "U8", 3: "I8", 4: "U16", 5: "I16", 6: "I32", 7: "I64", 9: "BOOL", 10: "F16",
                11: "F64", 12: "U32", 13: "U64", 16: "BF16", 17: "F8_E4M3", 19: "F8_E5M2", 21: "U4", 22: "I4"}
_NIBBLE = {"U4": np.dtype(ml_dtypes.uint4), "I4": np.dtype(ml_dtypes.int4)}
# Which typed field holds each type when raw_data is not used.
_TYPED_FIELD = {"F32": "float_data", "F64": "double_data", "I64": "int64_data", "U32": "uint64_data",
                "U64": "uint64_data"}
_SKIPPED_TYPES = {8: "STRING", 14: "COMPLEX64", 15: "COMPLEX128"}


def _onnx() -> Any:
    try:
        import onnx
    except ModuleNotFoundError:
        from .._core import QuantpressError

        raise QuantpressError("reading or writing ONNX models needs the onnx package: pip install onnx") from None
    return onnx


def parse_model(path: str, size: int) -> Any:
    """Parses the ModelProto of ``path`` (external data not loaded); QuantpressError on any failure."""
    onnx = _onnx()
    from google.protobuf.message import DecodeError

    if size > MAX_PROTOBUF_BYTES:
        raise fail(path, "protobuf size", f"{size} bytes exceeds the 2 GB protobuf limit (keep weights in external data)")
    with open(path, "rb") as f:
        data = f.read(size + 1)
    if len(data) != size:
        raise fail(path, "protobuf", "file changed size while reading")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RecursionError, ValueError, RuntimeError, UnicodeDecodeError) as e:
        raise fail(path, "protobuf", f"not a valid ONNX ModelProto: {e}") from None
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise fail(path, "ir_version/graph", "not an ONNX model (no IR version or no graph)")
    return model


def _dtype_of(path: str, field: str, t: Any) -> str | None:
    if t.data_type in _SKIPPED_TYPES:
        return None
    name = _ONNX_DTYPES.get(t.data_type)
    if name is None:
        raise fail(path, f"{field} data_type", f"unsupported ONNX data type {t.data_type}")
    return name


def _nbytes(dtype: str, numel: int) -> int:
    return (numel + 1) // 2 if dtype in _NIBBLE else numel * DTYPES[dtype][1]


def _from_bytes(buf: Any, dtype: str, shape: tuple[int, ...], numel: int) -> np.ndarray:
    """Decodes little-endian ``buf`` (bytes or a uint8 memmap) of ``dtype`` into ``shape``."""
    if dtype in _NIBBLE:
        packed = np.frombuffer(buf, np.uint8)
        nib = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(-1)[:numel]
        if dtype == "I4":
            nib = (nib.astype(np.int8) ^ 8) - 8  # sign-extend the nibble
        return nib.astype(_NIBBLE[dtype]).reshape(shape)
    dt = DTYPES[dtype][0]
    assert dt is not None
    return np.frombuffer(buf, dt, count=numel).reshape(shape)


def _typed(path: str, field: str, t: Any, dtype: str, shape: tuple[int, ...], numel: int) -> Callable[[], np.ndarray]:
    """The loader of a tensor stored in the typed repeated fields (count checked first)."""
    name = _TYPED_FIELD.get(dtype, "int32_data")
    count = len(getattr(t, name))
    want = (numel + 1) // 2 if dtype in _NIBBLE else numel
    if count != want:
        raise fail(path, f"{field} {name}", f"holds {count} values but shape {list(shape)} x {dtype} needs {want}")

    def load() -> np.ndarray:
        from onnx import numpy_helper

        arr = numpy_helper.to_array(t)
        return arr if dtype in _NIBBLE else np.ascontiguousarray(arr, DTYPES[dtype][0]).reshape(shape)

    return load


def _external_path(path: str, field: str, location: str) -> str:
    """The data file of an external tensor: inside the model's folder or refused."""
    base = os.path.dirname(os.path.abspath(path))
    if not location or os.path.isabs(location) or "\\" in location or ".." in location.split("/") or "\x00" in location:
        raise fail(path, f"{field} external_data location", f"{location!r} must be a relative path inside the model's folder")
    full = os.path.realpath(os.path.join(base, location))
    if os.path.commonpath([full, os.path.realpath(base)]) != os.path.realpath(base):
        raise fail(path, f"{field} external_data location", f"{location!r} leads outside the model's folder")
    if not os.path.isfile(full):
        raise fail(path, f"{field} external_data location", f"data file {location!r} does not exist")
    return full


def _external(path: str, field: str, t: Any, dtype: str, shape: Any) -> tuple[Callable[[], np.ndarray], int]:
    """The loader of an externally stored tensor after checking location, offset and length."""
    info = {text(path, f"{field} external_data key", e.key): text(path, f"{field} external_data {e.key!r}", e.value)
            for e in t.external_data}
    data_path = _external_path(path, field, info.get("location", ""))
    data_size = os.path.getsize(data_path)
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else data_size - offset
    except ValueError:
        raise fail(path, f"{field} external_data", f"offset/length must be integers, got {info}") from None
    if offset < 0 or length < 0 or offset + length > data_size:
        raise fail(path, f"{field} external_data offset", f"bytes [{offset}, {offset + length}) lie outside "
                                                          f"{info['location']!r} ({data_size} bytes)")
    itemsize = 1 if dtype in _NIBBLE else DTYPES[dtype][1]
    numel = checked_numel(path, f"{field} dims", shape, max(length, 1) * (2 if dtype in _NIBBLE else 1) // itemsize)
    if _nbytes(dtype, numel) != length:
        raise fail(path, f"{field} external_data length", f"{length} bytes but shape {shape} x {dtype} needs {_nbytes(dtype, numel)}")

    def load() -> np.ndarray:
        if length == 0:
            return _from_bytes(b"", dtype, tuple(shape), 0)
        try:
            buf = np.memmap(data_path, np.uint8, mode="r", offset=offset, shape=(length,))
        except (ValueError, OSError) as e:
            raise fail(path, field, f"cannot map external data: {e}") from None
        return _from_bytes(buf, dtype, tuple(shape), numel) if dtype in _NIBBLE else \
            buf.view(DTYPES[dtype][0]).reshape(tuple(shape))

    return load, length


def tensor_entry(path: str, field: str, t: Any) -> LazyTensor | None:
    """A validated LazyTensor for one TensorProto (None for string/complex tensors)."""
    dtype = _dtype_of(path, field, t)
    if dtype is None:
        return None
    if t.HasField("segment"):
        raise fail(path, f"{field} segment", "segmented tensors are not supported")
    shape = list(t.dims)
    if t.data_location == 1:  # EXTERNAL
        load, nbytes = _external(path, f"{field}", t, dtype, shape)
    elif t.HasField("raw_data"):
        raw_len = len(t.raw_data)
        itemsize = 1 if dtype in _NIBBLE else DTYPES[dtype][1]
        numel = checked_numel(path, f"{field} dims", shape, max(raw_len, 1) * (2 if dtype in _NIBBLE else 1) // itemsize)
        if _nbytes(dtype, numel) != raw_len:
            raise fail(path, f"{field} raw_data", f"{raw_len} bytes but shape {shape} x {dtype} needs {_nbytes(dtype, numel)}")

        def load(shape: tuple[int, ...] = tuple(shape), numel: int = numel) -> np.ndarray:
            return _from_bytes(t.raw_data, dtype, shape, numel)

        nbytes = raw_len
    else:
        numel = checked_numel(path, f"{field} dims", shape, 2**40)
        load, nbytes = _typed(path, field, t, dtype, tuple(shape), numel), _nbytes(dtype, numel)
    return LazyTensor(t.name, tuple(shape), dtype, nbytes, load, _NIBBLE.get(dtype))


def text(path: str, field: str, v: Any) -> str:
    """A protobuf string field; the parser hands back bytes when they are not valid UTF-8."""
    if isinstance(v, bytes):
        raise fail(path, field, "is not valid UTF-8")
    return str(v)


def graph_tensors(path: str, graph: Any) -> tuple[dict[str, LazyTensor], list[str]]:
    """Initializers and ``Constant`` node ``value`` tensors of the top graph, by name."""
    tensors: dict[str, LazyTensor] = {}
    skipped: list[str] = []

    def add(name: Any, field: str, t: Any) -> None:
        name = text(path, field, name)
        if name in tensors or name in skipped:
            raise fail(path, field, f"duplicate tensor name {name!r}")
        entry = tensor_entry(path, field, t)
        if entry is None:
            skipped.append(name)
        else:
            entry.name = name
            tensors[name] = entry

    for i, t in enumerate(graph.initializer):
        add(t.name, f"initializer {i} ({t.name!r})", t)
    for i, node in enumerate(graph.node):
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
            continue
        for a in node.attribute:
            if a.name == "value" and a.HasField("t") and len(node.output) == 1:
                add(node.output[0], f"Constant node {i} ({node.output[0]!r}) value", a.t)
    return tensors, skipped


def open_file(path: str) -> ModelFile:
    """Opens an ONNX model (see the module doc for what is listed and checked)."""
    size = file_size(path)
    model = parse_model(path, size)
    tensors, skipped = graph_tensors(path, model.graph)
    meta = {text(path, "metadata_props key", p.key): text(path, f"metadata_props {p.key!r}", p.value) for p in model.metadata_props}
    meta["onnx.ir_version"] = str(model.ir_version)
    meta["onnx.opset"] = ",".join(f"{text(path, 'opset_import domain', o.domain) or 'ai.onnx'}:{o.version}" for o in model.opset_import)
    if model.producer_name:
        meta["onnx.producer"] = text(path, "producer_name", model.producer_name)
    if skipped:
        meta["onnx.skipped"] = ",".join(skipped)
    return ModelFile(path, "onnx", tensors, meta)
