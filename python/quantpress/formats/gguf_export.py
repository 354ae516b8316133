"""Exporting any model ``qp.open_model`` reads (safetensors, sharded, torch, npz, GGUF) to GGUF.

llama.cpp and other GGUF runtimes load only GGUF files; this module writes one from a float
checkpoint with the tensors in a GGUF block type, keeping the tensor names. Type choice (the
K-quant mixes and the row-length fallbacks), the header encoder and the atomic writer are the
ones of :mod:`quantpress.formats.gguf_write`, so an export and a requantization agree. Tensors
are read, converted (in row chunks) and written one at a time, never the whole model at once.

Choices: 2-D+ float tensors (``ggml_n_dims`` >= 2, so a ``(1, n)`` tensor counts as 1-D) get
``qtype``; 1-D float tensors are stored as F32; signed integer tensors keep their GGUF integer
type (I8/I16/I32/I64); unsigned and bool tensors, which GGUF has no type for, are refused. A
0-d tensor is written with GGUF dims ``[1]`` (it reads back with shape ``(1,)``).
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace
from collections.abc import Iterator
from typing import Any, BinaryIO, Callable, NamedTuple, cast

import numpy as np

from .._core import QuantpressError
from ..gguf import GGUF_TYPES, gguf_quantize
from . import open_model
from .base import LazyTensor, ModelFile
from .gguf_fmt import DEFAULT_ALIGNMENT, MAX_DIMS, TYPE_IDS, GGUFValue, GGUFValueType, tensor_nbytes
from .gguf_write import (MIXES, PURE_FTYPES, RequantReport, TensorPlan, _fallback, _header, _layer_of, _mix_type,
                         _MixState, _n_dims, _pad, write_atomic)

#: LLAMA_FTYPE numbers of the unquantized exports (ALL_F32, MOSTLY_F16).
FLOAT_FTYPES: dict[str, int] = {"F32": 0, "F16": 1}
_INTS = ("I8", "I16", "I32", "I64")
_INT_DTYPES = {"I8": "<i1", "I16": "<i2", "I32": "<i4", "I64": "<i8"}
_RESERVED = ("general.alignment", "general.file_type", "general.quantization_version", "general.architecture")
_CHUNK_VALUES = 1 << 24  # values converted per step (64 MB of float32)


class _Entry(NamedTuple):
    name: str
    dims: tuple[int, ...]  # GGUF order: ne0 (the last NumPy axis) first
    dst: str
    fallback: bool


def _check_qtype(qtype: Any) -> str:
    name = str(getattr(qtype, "name", qtype)).upper()
    if name not in MIXES and name not in GGUF_TYPES and name not in FLOAT_FTYPES:
        raise QuantpressError(f"unknown qtype {qtype!r}: expected one of {', '.join([*MIXES, *GGUF_TYPES, *FLOAT_FTYPES])}")
    return name


def _dims(t: LazyTensor) -> tuple[int, ...]:
    if len(t.shape) > MAX_DIMS:
        raise QuantpressError(f"{t.name}: {len(t.shape)} dimensions; GGUF holds at most {MAX_DIMS}")
    return tuple(reversed(t.shape)) if t.shape else (1,)


def _plan(m: ModelFile, qtype: str, arch: str) -> dict[str, _Entry]:
    """Destination type of each tensor; mixes visit tensors in llama.cpp's order (layer, name)."""
    plan: dict[str, _Entry] = {}
    quantizable = []
    for name in sorted(m, key=lambda n: (_layer_of(n), n)):
        t, dims = m[name], _dims(m[name])
        if t.dtype in _INTS:
            plan[name] = _Entry(name, dims, t.dtype, False)
        elif t.dtype.startswith(("U", "BOOL")) or t.numpy_dtype is None:
            raise QuantpressError(f"{name}: {t.dtype} tensors have no GGUF type (only float and signed integer tensors export)")
        elif _n_dims(dims) < 2 or qtype == "F32":
            plan[name] = _Entry(name, dims, "F32", False)
        elif qtype == "F16":
            plan[name] = _Entry(name, dims, "F16", False)
        else:
            quantizable.append(name)
    if qtype in MIXES:
        state = _MixState(cast(Any, SimpleNamespace(metadata={"general.architecture": arch})), quantizable)
    for name in quantizable:
        dims = _dims(m[name])
        dst = _mix_type(state, MIXES[qtype][0], name, dims[0], MIXES[qtype][1]) if qtype in MIXES else qtype
        plan[name] = _Entry(name, dims, *_fallback(dst, dims[0]))
    return {name: plan[name] for name in m}  # back to the input's order


def _meta_value(key: str, v: Any) -> GGUFValue:
    """A user metadata value as GGUF: str, bool, int (UINT32 when it fits, as llama.cpp's
    hyper-parameters are typed, else INT32/INT64/UINT64), float (FLOAT32) or a GGUFValue as is."""
    if isinstance(v, GGUFValue):
        return v
    if isinstance(v, str):
        return GGUFValue(GGUFValueType.STRING, v)
    if isinstance(v, (bool, np.bool_)):
        return GGUFValue(GGUFValueType.BOOL, bool(v))
    if isinstance(v, (int, np.integer)):
        v = int(v)
        for vtype, lo, hi in ((GGUFValueType.UINT32, 0, 1 << 32), (GGUFValueType.INT32, -(1 << 31), 1 << 31),
                              (GGUFValueType.INT64, -(1 << 63), 1 << 63), (GGUFValueType.UINT64, 0, 1 << 64)):
            if lo <= v < hi:
                return GGUFValue(vtype, v)
        raise QuantpressError(f"metadata {key!r}: {v} does not fit in 64 bits")
    if isinstance(v, (float, np.floating)):
        return GGUFValue(GGUFValueType.FLOAT32, float(v))
    raise QuantpressError(f"metadata {key!r}: {type(v).__name__} values are not supported (str, int, float, bool)")


def _fields(name: str, arch: str, ftype: int, metadata: dict[str, Any] | None) -> dict[str, GGUFValue]:
    fields = {
        "general.architecture": GGUFValue(GGUFValueType.STRING, arch),
        "general.name": GGUFValue(GGUFValueType.STRING, name),
        "general.file_type": GGUFValue(GGUFValueType.UINT32, ftype),
        "general.quantization_version": GGUFValue(GGUFValueType.UINT32, 2),
        "general.alignment": GGUFValue(GGUFValueType.UINT32, DEFAULT_ALIGNMENT),
    }
    for key, v in (metadata or {}).items():
        if not isinstance(key, str) or not key:
            raise QuantpressError(f"metadata key {key!r} is not a non-empty string")
        if key in _RESERVED:
            raise QuantpressError(f"metadata {key!r} is set by gguf_export (use arch= for the architecture)")
        fields[key] = _meta_value(key, v)
    return fields


def _chunks(t: LazyTensor, e: _Entry) -> Iterator[np.ndarray]:
    """The tensor's data as 2-D arrays of at most about ``_CHUNK_VALUES`` values (rows of ne0)."""
    if 0 in e.dims:
        return
    rows = t.numpy().reshape(-1, e.dims[0])
    step = max(1, _CHUNK_VALUES // max(e.dims[0], 1))
    for r0 in range(0, rows.shape[0], step):
        yield rows[r0 : r0 + step]


def _encode(name: str, rows: np.ndarray, dst: str) -> np.ndarray:
    if dst in _INT_DTYPES:
        return np.ascontiguousarray(rows, _INT_DTYPES[dst])
    rows = np.asarray(rows, np.float32)
    if dst in GGUF_TYPES:
        return gguf_quantize(rows, dst)  # refuses NaN/Inf itself
    with np.errstate(over="ignore"):
        data = np.ascontiguousarray(rows, "<f4" if dst == "F32" else "<f2")
    if not np.isfinite(data).all():
        raise QuantpressError(f"{name}: NaN or Inf values (or values outside the {dst} range)")
    return data


def _write(m: ModelFile, plan: dict[str, _Entry], fields: dict[str, GGUFValue], out: BinaryIO,
           progress: Callable[[int, int, str], Any] | None) -> list[TensorPlan]:
    infos, offset = [], 0
    for e in plan.values():
        infos.append((e.name, e.dims, TYPE_IDS[e.dst], offset))
        offset = _pad(offset + tensor_nbytes(TYPE_IDS[e.dst], e.dims), DEFAULT_ALIGNMENT)
    header = _header(fields, infos)
    out.write(header + bytes(_pad(len(header), DEFAULT_ALIGNMENT) - len(header)))
    done = []
    for i, e in enumerate(plan.values()):
        t, size, written = m[e.name], tensor_nbytes(TYPE_IDS[e.dst], e.dims), 0
        for rows in _chunks(t, e):
            written += out.write(_encode(e.name, rows, e.dst).tobytes())
        if written != size:
            raise QuantpressError(f"{e.name}: wrote a wrong number of bytes for {e.dst}")  # a bug, not bad input
        out.write(bytes(_pad(size, DEFAULT_ALIGNMENT) - size))
        done.append(TensorPlan(e.name, t.shape, t.dtype, e.dst, t.nbytes, size, e.fallback))
        if progress is not None:
            progress(i + 1, len(plan), e.name)
    return done


def gguf_export(src: str | os.PathLike[str], dst: str | os.PathLike[str], qtype: Any = "Q8_0",
                arch: str | None = None, metadata: dict[str, Any] | None = None,
                progress: Callable[[int, int, str], Any] | None = None) -> RequantReport:
    """Writes a model (any file or set ``qp.open_model`` reads) as a GGUF v3 file in a block type.

    Tensor names are kept. Each float tensor with two or more dimensions is quantized to
    ``qtype`` with :func:`~quantpress.gguf_quantize`, one row per ne0 (the last NumPy axis,
    GGUF's innermost dimension); ``"Q4_K_M"``/``"Q5_K_M"`` choose per tensor as
    ``llama-quantize`` does for llama.cpp tensor names (other names get the mix's default
    type). A row length that is not a multiple of the block size falls back as llama.cpp does
    (Q4_K→Q5_0, Q6_K→Q8_0, ..., else F16). 1-D float tensors are stored as F32, signed integer
    tensors as I8..I64; unsigned and bool tensors are refused. Metadata: ``general.architecture``
    (``arch``), ``general.name``, ``general.file_type`` (the LLAMA_FTYPE number),
    ``general.quantization_version`` (2), ``general.alignment`` (32) and ``metadata``.

    Args:
        src: the input model (safetensors, sharded set or directory, torch, npz, GGUF); only read.
        dst: the output ``.gguf``; written atomically (temporary file + fsync + rename).
        qtype: a name in :data:`~quantpress.GGUF_TYPES`, ``"Q4_K_M"``, ``"Q5_K_M"``, ``"F16"``
            or ``"F32"``.
        arch: ``general.architecture`` (default ``"quantpress"``).
        metadata: extra keys: ``str``, ``bool``, ``int`` (UINT32 when it fits), ``float``
            (FLOAT32) values, or :class:`GGUFValue` for an exact type. ``general.name``
            defaults to the input's file name without extension.
        progress: optional ``callback(done, total, tensor_name)`` after each tensor.

    Returns:
        A :class:`RequantReport`: each tensor's source and destination type and size.

    Raises:
        QuantpressError: an unknown ``qtype``, an unreadable input, NaN/Inf weights, a tensor
            GGUF cannot hold, bad metadata, or ``dst`` naming the input. Nothing appears under
            ``dst`` on error.

    Example:
        >>> import os, tempfile, numpy as np, quantpress as qp
        >>> from safetensors.numpy import save_file
        >>> d = tempfile.mkdtemp(); src = os.path.join(d, "m.safetensors")
        >>> rng = np.random.default_rng(0)
        >>> save_file({"w": rng.standard_normal((4, 256)).astype(np.float32), "b": np.zeros(4, np.float32)}, src)
        >>> r = qp.gguf_export(src, os.path.join(d, "m.gguf"), "Q4_K", arch="llama")
        >>> r.types(), r.file_type
        ({'b': 'F32', 'w': 'Q4_K'}, 14)
        >>> f = qp.read_gguf(os.path.join(d, "m.gguf"))
        >>> f["w"].shape, f.metadata["general.architecture"]
        ((4, 256), 'llama')
    """
    name = _check_qtype(qtype)
    start = time.perf_counter()
    arch = "quantpress" if arch is None else arch
    if not isinstance(arch, str) or not arch:
        raise QuantpressError(f"arch must be a non-empty string, got {arch!r}")
    dst = os.path.abspath(os.fspath(dst))
    src = os.fspath(src)
    if os.path.exists(dst) and os.path.samefile(src, dst):
        raise QuantpressError(f"{dst}: the output must not be the input file")
    ftype = FLOAT_FTYPES[name] if name in FLOAT_FTYPES else MIXES[name][0] if name in MIXES else PURE_FTYPES[name]
    with open_model(src) as m:
        plan = _plan(m, name, arch)
        stem = os.path.basename(os.path.normpath(src)).split(".")[0]
        fields = _fields(stem, arch, ftype, metadata)
        done = write_atomic(dst, lambda out: _write(m, plan, fields, out, progress))
    return RequantReport(src, dst, name, ftype, tuple(done), sum(t.src_bytes for t in done),
                         os.path.getsize(dst), time.perf_counter() - start, (dst,))
