"""Weight-only quantization of an ONNX model, written back as a model onnxruntime runs.

Every float32 or float16 initializer that is only ever the weight ``B`` of ``MatMul`` or
``Gemm`` nodes, or the table (``data``) of ``Gather`` nodes (embeddings), and at least
``min_elements`` large, is quantized with quantpress's own round-to-nearest kernel
(``qp.quantize``) along the reduction axis K, one scale per output column N and per group of K.
A Gather table ``[V, D]`` is grouped along D: one scale per row (per channel) or per row and
block of D, as onnxruntime's quantizer does (its ``quant_axes`` default ``Gather: 1``). An N-D
``MatMul`` weight ``[..., K, N]`` (a stack of matrices) is grouped along K for each matrix and
column; it has only the blockwise ``DequantizeLinear`` form (opset >= 21; per channel is one
block of all K), and is skipped otherwise.

- ``op="dequantize_linear"``: the initializer is replaced by integer codes, scales (and zero
  points) feeding a ``DequantizeLinear`` node whose output keeps the weight's name, so every
  consumer is unchanged. Per channel: ``axis`` = the N axis, 1-D scales (opset >= 13, int8/uint8;
  int4 needs opset 21). Per group: ``axis`` = the K axis and ``block_size`` (opset >= 21), codes
  INT4/UINT4 or INT8/UINT8 in the weight's own shape, scales with K replaced by K / group.
  Symmetric codes are signed (``u - 2**(bits-1)``, no zero point), affine codes unsigned with
  integer zero points of the same type. A Gather table is dequantized the same way and feeds the
  unchanged ``Gather`` (the file shrinks; at run time the table is decoded whole).
- ``op="matmul_nbits"``: each consumer becomes the ``com.microsoft`` contrib op ``MatMulNBits``
  (``Gemm`` only with ``transA=0, alpha=1`` and ``beta=1``, its bias then added by an ``Add``).
  Layout as onnxruntime's ``MatMulNBitsQuantizer``: ``B`` uint8 ``[N, ceil(K/bs), bs*bits/8]``
  (column n's K values, block by block, element 2j in the low nibble of byte j), ``scales``
  float32 ``[N, ceil(K/bs)]``, affine ``zero_points`` uint8 ``[N, ceil(ceil(K/bs)*bits/8)]``
  (4-bit: two per byte, low nibble first, each row padded); symmetric omits them (the op's
  default zero point ``2**(bits-1)`` is quantpress's implicit one). K is zero-padded to a whole
  block; a zero never changes a group's range, so the padding costs nothing. A ``Gather``
  (``axis=0``) becomes ``com.microsoft`` ``GatherBlockQuantized`` (``gather_axis=0,
  quantize_axis=1``, ``block_size``), laid out as onnxruntime's ``MatMulNBitsQuantizer`` writes
  it: 4-bit symmetric INT4 data ``[V, D]`` without zero points, 4-bit affine UINT4 data and
  UINT4 zero points ``[V, D/bs]``, 8-bit UINT8 data and zero points (``bits=8``; 128 for
  symmetric); D must be a multiple of the block. A table used by both Gather and MatMul/Gemm
  (tied embeddings) has no single form here and is skipped (``dequantize_linear`` shares one
  ``DequantizeLinear`` between them).

Float16 weights: scales are float16 and the decoded weight is float16 (``DequantizeLinear``'s
output type follows its scale's in opset >= 19; ``MatMulNBits`` and ``GatherBlockQuantized``
take float16 scales), so the graph's types do not change. In opset 13..18 ``DequantizeLinear``
gives float32 (float32 scales) and a ``Cast`` to float16 produces the weight's name.

The value of every element is ``(code - zero) * scale`` in float32 (rounded once to float16 for a
float16 weight): bit-identical to ``QuantizedTensor.dequantize()``. Writes are atomic (temporary file in the output's folder, fsync,
``os.replace``) and never touch the input. A model with external data is written with its
remaining large tensors in ``<output name>.data`` next to the output (also atomically); models
whose result holds more than 2 GB in one protobuf are written the same way. Only the top-level
graph is rewritten; initializers used inside subgraphs are left as they are.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np

from .._core import QuantpressError
from ..scalar import QuantizedTensor, pack_bits, quantize, unpack_bits
from .base import file_size
from .onnx_fmt import MAX_PROTOBUF_BYTES, _onnx, graph_tensors, parse_model

PathLike = Union[str, "os.PathLike[str]"]
OPS = ("dequantize_linear", "matmul_nbits")
_MS_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class OnnxTensorReport:
    """One quantized weight: its shape, the op used, stored bytes and relative L2 error."""

    name: str
    shape: tuple[int, ...]
    op: str
    bits: int
    group_size: Optional[int]
    scheme: str
    input_bytes: int
    output_bytes: int
    rel_error: float


@dataclass(frozen=True)
class OnnxReport:
    """The result of :func:`onnx_quantize`: quantized tensors, skipped weights (with the reason),
    file sizes (model plus external data) and wall time."""

    tensors: tuple[OnnxTensorReport, ...]
    skipped: tuple[tuple[str, str], ...]
    input_bytes: int
    output_bytes: int
    seconds: float


@dataclass
class _Target:
    """A weight chosen for quantization: its consumers, the axis of K (the grouped axis) in its
    shape, whether its consumers are ``Gather`` nodes (an embedding table), its source dtype
    (``"F32"``/``"F16"``) and the dtype of its scales."""

    name: str
    w: np.ndarray
    kaxis: int
    consumers: list[int]
    gather: bool = False
    dtype: str = "F32"
    scale_dtype: str = "float32"


def _consumers(graph: Any) -> dict[str, list[tuple[int, int]]]:
    uses: dict[str, list[tuple[int, int]]] = {}
    for i, node in enumerate(graph.node):
        for j, name in enumerate(node.input):
            uses.setdefault(name, []).append((i, j))
    return uses


def _subgraph_names(graph: Any) -> set[str]:
    """Every name any node inside any subgraph mentions (they may refer to outer-scope weights)."""
    out: set[str] = set()

    def walk(g: Any) -> None:
        for node in g.node:
            out.update(node.input)
            for a in node.attribute:
                for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    walk(sub)

    for node in graph.node:
        for a in node.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                walk(sub)
    return out


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _kaxis(node: Any, slot: int, op: str, ndim: int) -> tuple[Optional[int], str]:
    """The K axis of a weight used at input ``slot`` of ``node``, or None with the reason. The
    table of a ``Gather`` is grouped along its last axis (each row quantized on its own); an N-D
    ``MatMul`` weight (a stack of matrices) along its second-to-last."""
    if ndim > 2 and (node.domain not in ("", "ai.onnx") or node.op_type != "MatMul" or slot != 1):
        return None, f"{ndim}-D and used by {node.op_type or '?'} input {slot}"
    if ndim > 2:
        return (None, "an N-D weight has no MatMulNBits form") if op == "matmul_nbits" else (ndim - 2, "")
    if node.domain in ("", "ai.onnx") and node.op_type == "Gather" and slot == 0:
        if op == "matmul_nbits" and _attr(node, "axis", 0) != 0:
            return None, "Gather along axis 1 has no GatherBlockQuantized form"
        return 1, ""
    if node.domain not in ("", "ai.onnx") or slot != 1 or node.op_type not in ("MatMul", "Gemm"):
        return None, f"used by {node.op_type or '?'} input {slot}"
    if node.op_type == "MatMul":
        return 0, ""
    if op == "matmul_nbits" and (_attr(node, "transA", 0) or _attr(node, "alpha", 1.0) != 1.0
                                 or (len(node.input) > 2 and node.input[2] and _attr(node, "beta", 1.0) != 1.0)):
        return None, "Gemm with transA, alpha or beta has no MatMulNBits form"
    return (1 if _attr(node, "transB", 0) else 0), ""


def _targets(path: str, model: Any, op: str, min_elements: int) -> tuple[list[_Target], list[tuple[str, str]]]:
    """The weights to quantize, and the candidates skipped with the reason."""
    graph = model.graph
    tensors, _ = graph_tensors(path, graph)
    uses, inner = _consumers(graph), _subgraph_names(graph)
    fixed = {v.name for v in graph.input} | {v.name for v in graph.output}
    targets, skipped = [], []
    for t in graph.initializer:
        lt = tensors.get(t.name)
        if lt is None or lt.dtype not in ("F32", "F16") or len(lt.shape) < 2 or not uses.get(t.name):
            continue
        axes = {_kaxis(graph.node[i], j, op, len(lt.shape)) for i, j in uses[t.name]}
        reason = next((r for a, r in axes if a is None), "")
        if not reason and len(lt.shape) > 2 and _opset(model) < 21:
            reason = "an N-D weight needs opset >= 21 (blockwise DequantizeLinear)"
        kinds = {graph.node[i].op_type == "Gather" for i, _ in uses[t.name]}
        if not reason and op == "matmul_nbits" and len(kinds) > 1:
            reason = "used by Gather and by MatMul/Gemm (no one MatMulNBits/GatherBlockQuantized form)"
        if math.prod(lt.shape) < min_elements:
            reason = f"{math.prod(lt.shape)} elements < min_elements"
        elif not reason and len(axes) != 1:
            reason = "used both transposed and not"
        elif t.name in fixed or t.name in inner:
            reason = "also a graph input/output or used in a subgraph"
        if reason:
            skipped.append((t.name, reason))
            continue
        w = np.asarray(lt.numpy(), np.float32)
        if not np.isfinite(w).all():
            raise QuantpressError(f"{path}: initializer {t.name!r}: holds NaN or Inf")
        half = lt.dtype == "F16" and (op == "matmul_nbits" or _opset(model) >= 19)
        targets.append(_Target(t.name, w, next(iter(axes))[0], sorted({i for i, _ in uses[t.name]}), kinds == {True},
                               lt.dtype, "float16" if half else "float32"))
    return targets, skipped


def _opset(model: Any, domain: str = "") -> int:
    return max((o.version for o in model.opset_import if o.domain in ((domain,) if domain else ("", "ai.onnx"))),
               default=0)


def _unique(graph: Any, taken: set[str], base: str) -> str:
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def _codes(qt: QuantizedTensor, rows: int, cols: int) -> np.ndarray:
    """The unpacked codes of a tensor quantized with K moved last: shape [rows=N, cols=K]."""
    return unpack_bits(qt.codes, qt.bits, rows * cols).reshape(rows, cols)


def _int_tensor(name: str, codes: np.ndarray, bits: int, signed: bool) -> Any:
    """An INT4/UINT4/INT8/UINT8 TensorProto from unsigned codes already shifted to their range."""
    from onnx import TensorProto, helper

    if bits == 8:
        dt = TensorProto.INT8 if signed else TensorProto.UINT8
        raw = codes.astype(np.int8 if signed else np.uint8).tobytes()
    else:
        dt = TensorProto.INT4 if signed else TensorProto.UINT4
        raw = pack_bits((codes.astype(np.int16) & 0x0F).astype(np.uint8), 4).tobytes()
    return helper.make_tensor(name, dt, list(codes.shape), raw, raw=True)


def _dq_nodes(g: Any, taken: set[str], tg: _Target, qt: QuantizedTensor, group: Optional[int]) -> tuple[list[Any], list[Any]]:
    """A DequantizeLinear node producing ``tg.name`` (through a Cast for a float16 weight in
    opset < 19) and its initializers."""
    from onnx import TensorProto, helper, numpy_helper

    k = tg.w.shape[tg.kaxis]
    codes = _codes(qt, qt.scales.shape[0], k)  # [rows, K]
    half = 1 << (qt.bits - 1)
    signed = qt.scheme == "symmetric"
    if signed:
        codes = codes.astype(np.int16) - half
    scales = qt.scales.astype(tg.scale_dtype)  # [rows, groups]
    zeros = None if qt.zeros is None else qt.zeros.astype(np.float32).astype(np.uint8)
    # codes and scales follow the weight's layout (K back in its place)
    codes, scales = _unmove(codes, tg), _unmove(scales, tg)
    zeros = None if zeros is None else _unmove(zeros, tg)
    attrs: dict[str, Any] = {"axis": 1 - tg.kaxis}
    if group is None and tg.w.ndim == 2:  # per channel: 1-D along the N axis
        scales = scales.reshape(-1)
        zeros = None if zeros is None else zeros.reshape(-1)
    else:  # blockwise (an N-D weight per channel: one block of all K)
        attrs = {"axis": tg.kaxis, "block_size": group or k}
    inits = [_int_tensor(_unique(g, taken, f"{tg.name}_quantized"), np.ascontiguousarray(codes), qt.bits, signed),
             numpy_helper.from_array(np.ascontiguousarray(scales), _unique(g, taken, f"{tg.name}_scale"))]
    if zeros is not None:
        inits.append(_int_tensor(_unique(g, taken, f"{tg.name}_zero_point"), np.ascontiguousarray(zeros), qt.bits, False))
    cast = tg.dtype == "F16" and tg.scale_dtype == "float32"  # opset < 19: float32 out, then a Cast
    out = _unique(g, taken, f"{tg.name}_dequantized") if cast else tg.name
    nodes = [helper.make_node("DequantizeLinear", [t.name for t in inits], [out],
                              name=_unique(g, taken, f"{tg.name}_DequantizeLinear"), **attrs)]
    if cast:
        nodes.append(helper.make_node("Cast", [out], [tg.name], name=_unique(g, taken, f"{tg.name}_Cast"),
                                      to=TensorProto.FLOAT16))
    return nodes, inits


def _nbits_parts(g: Any, taken: set[str], tg: _Target, qt: QuantizedTensor, block: int) -> list[Any]:
    """MatMulNBits' B, scales and (affine) zero_points initializers for a [N, Kp] quantized weight."""
    from onnx import numpy_helper

    n, kb = qt.scales.shape
    blob = block * qt.bits // 8
    b = qt.codes.reshape(n, kb, blob)
    inits = [numpy_helper.from_array(b, _unique(g, taken, f"{tg.name}_Q{qt.bits}")),
             numpy_helper.from_array(qt.scales.astype(tg.scale_dtype), _unique(g, taken, f"{tg.name}_scales"))]
    if qt.zeros is not None:
        z = qt.zeros.astype(np.float32).astype(np.uint8)
        if qt.bits == 4:
            z = np.concatenate([z, np.zeros((n, kb % 2), np.uint8)], axis=1)
            z = (z[:, 0::2] | (z[:, 1::2] << 4)).astype(np.uint8)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(z), _unique(g, taken, f"{tg.name}_zero_points")))
    return inits


def _nbits_nodes(g: Any, taken: set[str], tg: _Target, inits: list[Any], bits: int, block: int) -> dict[int, list[Any]]:
    """The replacement nodes of each consumer (MatMulNBits, plus an Add for a Gemm bias)."""
    from onnx import helper

    k, n = (tg.w.shape if tg.kaxis == 0 else tg.w.shape[::-1])
    out: dict[int, list[Any]] = {}
    for i in tg.consumers:
        node = g.node[i]
        bias = node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]
        y = _unique(g, taken, f"{node.output[0]}_matmul") if bias else node.output[0]
        mm = helper.make_node("MatMulNBits", [node.input[0]] + [t.name for t in inits], [y],
                              name=_unique(g, taken, f"{node.name or tg.name}_MatMulNBits"), domain=_MS_DOMAIN,
                              K=int(k), N=int(n), bits=bits, block_size=block)
        out[i] = [mm] + ([helper.make_node("Add", [y, node.input[2]], [node.output[0]],
                                           name=_unique(g, taken, f"{node.name or tg.name}_bias"))] if bias else [])
    return out


def _gather_parts(g: Any, taken: set[str], tg: _Target, qt: QuantizedTensor) -> list[Any]:
    """GatherBlockQuantized's data, scales and zero points for a [V, D] table, as onnxruntime's
    ``MatMulNBitsQuantizer`` writes them: 4-bit symmetric INT4 codes without zero points,
    4-bit affine UINT4 codes and zero points, 8-bit UINT8 codes with UINT8 zero points
    (``2**(bits-1)`` for symmetric); scales ``[V, D / block]`` in the table's float type."""
    from onnx import numpy_helper

    v, d = tg.w.shape
    codes = _codes(qt, v, d)
    signed = qt.bits == 4 and qt.scheme == "symmetric"
    if signed:
        codes = codes.astype(np.int16) - 8
    zeros = qt.zeros.astype(np.float32).astype(np.uint8) if qt.zeros is not None else \
        (None if signed else np.full(qt.scales.shape, 1 << (qt.bits - 1), np.uint8))
    inits = [_int_tensor(_unique(g, taken, f"{tg.name}_Q{qt.bits}"), np.ascontiguousarray(codes), qt.bits, signed),
             numpy_helper.from_array(qt.scales.astype(tg.scale_dtype), _unique(g, taken, f"{tg.name}_scales"))]
    if zeros is not None:
        inits.append(_int_tensor(_unique(g, taken, f"{tg.name}_zero_points"), zeros, qt.bits, False))
    return inits


def _gather_nodes(g: Any, taken: set[str], tg: _Target, inits: list[Any], bits: int, block: int) -> dict[int, list[Any]]:
    """Each consuming Gather becomes a ``com.microsoft`` GatherBlockQuantized (same output)."""
    from onnx import helper

    extra = {"bits": bits} if bits != 4 else {}
    out: dict[int, list[Any]] = {}
    for i in tg.consumers:
        node = g.node[i]
        names = [inits[0].name, node.input[1]] + [t.name for t in inits[1:]]
        out[i] = [helper.make_node("GatherBlockQuantized", names, list(node.output), domain=_MS_DOMAIN,
                                   name=_unique(g, taken, f"{node.name or tg.name}_GatherBlockQuantized"),
                                   gather_axis=0, quantize_axis=1, block_size=block, **extra)]
    return out


def _moved(tg: _Target) -> np.ndarray:
    """The weight with K moved last and the other axes flattened: [rows, K] (a 2-D [K, N]
    weight gives its transpose)."""
    return np.moveaxis(tg.w, tg.kaxis, -1).reshape(-1, tg.w.shape[tg.kaxis])


def _unmove(a: np.ndarray, tg: _Target) -> np.ndarray:
    """The inverse of :func:`_moved` for a [rows, X] array: X goes back to the K axis."""
    rest = tuple(d for i, d in enumerate(tg.w.shape) if i != tg.kaxis)
    return np.moveaxis(a.reshape(rest + (a.shape[-1],)), -1, tg.kaxis)


def _quantize_target(tg: _Target, bits: int, group: Optional[int], scheme: str, op: str) -> QuantizedTensor:
    """quantpress RTN along K with K moved last ([rows, K]; padded to whole blocks for MatMulNBits)."""
    wk = _moved(tg)
    if op == "matmul_nbits" and not tg.gather:
        assert group is not None
        pad = -wk.shape[1] % group
        if pad:
            wk = np.concatenate([wk, np.zeros((wk.shape[0], pad), np.float32)], axis=1)
    return quantize(np.ascontiguousarray(wk), bits=bits, group_size=group, scheme=scheme, axis=-1,
                    scale_dtype=tg.scale_dtype)


def _settings(model: Any, bits: int, group_size: Any, op: str, scheme: Optional[str]) -> tuple[Optional[int], str]:
    """Validates the options against the model's opset; returns (group or None per channel, scheme)."""
    if op not in OPS:
        raise QuantpressError(f"op must be one of {OPS}, got {op!r}")
    if bits not in (4, 8) or isinstance(bits, bool):
        raise QuantpressError(f"bits must be 4 or 8, got {bits!r}")
    scheme = scheme or ("symmetric" if bits == 8 else "affine")
    if scheme not in ("affine", "symmetric"):
        raise QuantpressError(f"scheme must be 'affine' or 'symmetric', got {scheme!r}")
    if group_size is None:
        group_size = "channel" if (bits == 8 and op == "dequantize_linear") else 128
    group = None if group_size == "channel" else group_size
    if group is not None and (isinstance(group, bool) or not isinstance(group, int) or group < 1):
        raise QuantpressError(f"group_size must be a positive integer, 'channel' or None, got {group_size!r}")
    opset = _opset(model)
    if op == "matmul_nbits":
        if group is None or group < 16 or group & (group - 1):
            raise QuantpressError(f"MatMulNBits needs a block size that is a power of two >= 16, got {group_size!r}")
    elif opset < 13 or ((bits == 4 or group is not None) and opset < 21):
        need = 13 if bits == 8 and group is None else 21
        raise QuantpressError(f"DequantizeLinear with {bits}-bit {'per-channel' if group is None else 'blockwise'} "
                              f"weights needs opset >= {need}, the model has {opset} (use op='matmul_nbits' or "
                              f"convert the model with onnx.version_converter)")
    return group, scheme


def _rewrite(path: str, model: Any, bits: int, group: Optional[int], scheme: str, op: str, min_elements: int,
             progress: Optional[Callable[[int, int, str], None]]) -> tuple[list[OnnxTensorReport], list[tuple[str, str]]]:
    """Quantizes the chosen weights in place in ``model``; returns the reports and skipped weights."""
    g = model.graph
    targets, skipped = _targets(path, model, op, min_elements)
    taken = {t.name for t in g.initializer} | {o for nd in g.node for o in list(nd.output) + [nd.name]} | \
        {v.name for v in g.input}
    head: list[Any] = []
    replace: dict[int, list[Any]] = {}
    reports = []
    for done, tg in enumerate(targets):
        k = tg.w.shape[tg.kaxis]
        if (op == "dequantize_linear" or tg.gather) and group is not None and k % group:
            skipped.append((tg.name, f"{'D' if tg.gather else 'K'}={k} is not a multiple of group_size {group}"))
            continue
        qt = _quantize_target(tg, bits, group, scheme, op)
        if op == "dequantize_linear":
            nodes, inits = _dq_nodes(g, taken, tg, qt, group)
            head += nodes
        elif tg.gather:
            inits = _gather_parts(g, taken, tg, qt)
            replace.update(_gather_nodes(g, taken, tg, inits, bits, group or 0))
        else:
            inits = _nbits_parts(g, taken, tg, qt, group or 0)
            replace.update(_nbits_nodes(g, taken, tg, inits, bits, group or 0))
        back = qt.dequantize()[:, :k]
        if tg.dtype == "F16":  # what the model computes with: rounded once to float16
            back = back.astype(np.float16).astype(np.float32)
        ref = _moved(tg)
        err = float(np.linalg.norm(back - ref) / max(np.linalg.norm(ref), 1e-30))
        reports.append(OnnxTensorReport(tg.name, tuple(tg.w.shape), op, bits, group, scheme,
                                        tg.w.size * (2 if tg.dtype == "F16" else 4),
                                        sum(_raw_len(t) for t in inits), err))
        _drop_initializer(g, tg.name)
        g.initializer.extend(inits)
        if progress is not None:
            progress(done + 1, len(targets), tg.name)
    nodes = head + [new for i, old in enumerate(g.node) for new in replace.get(i, [old])]
    copies = [type(nd)() for nd in nodes]
    for c, nd in zip(copies, nodes):
        c.CopyFrom(nd)
    del g.node[:]
    g.node.extend(copies)
    if op == "matmul_nbits" and reports and not _opset(model, _MS_DOMAIN):
        model.opset_import.append(_onnx().helper.make_opsetid(_MS_DOMAIN, 1))
    return reports, skipped


def _raw_len(t: Any) -> int:
    return len(t.raw_data)


def _drop_initializer(g: Any, name: str) -> None:
    for i, t in enumerate(g.initializer):
        if t.name == name:
            del g.initializer[i]
            return


def _inline_external(path: str, model: Any) -> bool:
    """Copies external initializer data of the top graph into the model; True if there was any."""
    tensors, _ = graph_tensors(path, model.graph)
    found = False
    for t in model.graph.initializer:
        if t.data_location == 1:
            if t.data_type in (21, 22):
                raise QuantpressError(f"{path}: initializer {t.name!r}: external INT4/UINT4 data is not supported")
            t.raw_data = np.ascontiguousarray(tensors[t.name].numpy()).tobytes()
            t.data_location = 0
            del t.external_data[:]
            found = True
    return found


def _has_nested_external(graph: Any) -> bool:
    for node in graph.node:
        for a in node.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                if any(t.data_location == 1 for t in sub.initializer) or _has_nested_external(sub):
                    return True
    return False


def _fsync_replace(tmp: str, dst: str) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dst)


def _write(model: Any, dst: str, external: bool) -> int:
    """Checks and atomically writes the model (and its external data); returns the bytes written."""
    onnx = _onnx()
    folder = os.path.dirname(os.path.abspath(dst)) or "."
    tmpdir = tempfile.mkdtemp(prefix=".quantpress-onnx-", dir=folder)
    try:
        tmp = os.path.join(tmpdir, os.path.basename(dst))
        data_name = os.path.basename(dst) + ".data"
        if external:
            onnx.save_model(model, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
        else:
            with open(tmp, "wb") as f:
                f.write(model.SerializeToString())
        try:
            onnx.checker.check_model(tmp, full_check=True)
        except Exception as e:  # onnx raises ValidationError / InferenceError
            raise QuantpressError(f"{dst}: the quantized model fails onnx.checker: {e}") from None
        size = os.path.getsize(tmp)
        if external and os.path.exists(os.path.join(tmpdir, data_name)):
            size += os.path.getsize(os.path.join(tmpdir, data_name))
            _fsync_replace(os.path.join(tmpdir, data_name), os.path.join(folder, data_name))
        _fsync_replace(tmp, dst)
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return size
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _input_bytes(path: str, model: Any) -> int:
    base = os.path.dirname(os.path.abspath(path))
    locs = {e.value for t in model.graph.initializer if t.data_location == 1 for e in t.external_data
            if e.key == "location"}
    return file_size(path) + sum(os.path.getsize(os.path.join(base, loc)) for loc in locs)


def _check_paths(src: str, dst: str, model: Any) -> None:
    """Refuses an output (or its data file) that is the input or one of the input's data files."""
    base = os.path.dirname(os.path.abspath(src))
    inputs = {os.path.realpath(src)} | {
        os.path.realpath(os.path.join(base, e.value)) for t in model.graph.initializer if t.data_location == 1
        for e in t.external_data if e.key == "location"}
    for out in (dst, dst + ".data"):
        if os.path.realpath(out) in inputs:
            raise QuantpressError(f"{dst}: the output (or its data file {out!r}) would overwrite the input")
    if not os.path.isdir(os.path.dirname(os.path.abspath(dst))):
        raise QuantpressError(f"{dst}: the output folder does not exist")


def onnx_quantize(src: PathLike, dst: PathLike, bits: int = 8, group_size: Union[int, str, None] = None,
                  op: str = "dequantize_linear", scheme: Optional[str] = None, min_elements: int = 4096,
                  progress: Optional[Callable[[int, int, str], None]] = None) -> OnnxReport:
    """Writes ``src`` back to ``dst`` with the float32/float16 weights of its ``MatMul``/``Gemm``
    nodes and the tables of its ``Gather`` nodes quantized (weight only), as
    ``DequantizeLinear`` nodes or ``com.microsoft`` ``MatMulNBits``/``GatherBlockQuantized``.

    Layouts in the module doc of ``quantpress.formats.onnx_write``. The output keeps the
    model's inputs, outputs and every other node, passes ``onnx.checker.check_model(full_check=
    True)`` and runs in onnxruntime; decoded weights are bit-identical to
    ``qp.quantize(w_moved, bits, group_size, axis=-1, scheme=scheme, scale_dtype=...)`` with K
    moved last (scales float16 for float16 weights, except ``DequantizeLinear`` below opset 19).

    Args:
        src: the ONNX model (external data next to it is read through memory maps).
        dst: the output path; must differ from ``src`` and its data files. Written atomically;
            a model with external data gets its large tensors in ``<dst>.data``.
        bits: 8 or 4.
        group_size: values of K per scale; ``"channel"`` for one scale per output column
            (``dequantize_linear`` only). ``None``: per channel for 8-bit ``dequantize_linear``,
            otherwise 128. ``matmul_nbits`` needs a power of two >= 16; blockwise or 4-bit
            ``dequantize_linear`` needs opset >= 21 and a K divisible by the group.
        op: ``"dequantize_linear"`` or ``"matmul_nbits"``.
        scheme: ``"symmetric"`` (default for 8 bits: signed codes, no zero point) or
            ``"affine"`` (default for 4 bits: unsigned codes with integer zero points).
        min_elements: smaller weights are left as they are.
        progress: called as ``progress(done, total, name)`` after each weight.

    Returns:
        An :class:`OnnxReport` (quantized and skipped weights, sizes, seconds).

    Raises:
        QuantpressError: a malformed or refused input (the message names the file and field),
            bad options, an opset too old for the requested ``DequantizeLinear``, NaN/Inf
            weights, an output that would overwrite the input. ``pip install onnx`` when the
            ``onnx`` package is missing. Nothing is left at ``dst`` on failure.

    Example:
        >>> import os, tempfile, numpy as np, quantpress as qp
        >>> from onnx import TensorProto, helper, numpy_helper, save_model
        >>> w = np.random.default_rng(0).standard_normal((256, 64)).astype(np.float32)
        >>> graph = helper.make_graph(
        ...     [helper.make_node("MatMul", ["x", "w"], ["y"])], "mlp",
        ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
        ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        ...     [numpy_helper.from_array(w, "w")])
        >>> d = tempfile.mkdtemp()
        >>> save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]),
        ...            os.path.join(d, "f.onnx"))
        >>> r = qp.onnx_quantize(os.path.join(d, "f.onnx"), os.path.join(d, "q.onnx"), bits=4,
        ...                      op="matmul_nbits", group_size=32)
        >>> t = r.tensors[0]
        >>> t.name, t.shape, t.input_bytes, t.output_bytes, t.rel_error < 0.1
        ('w', (256, 64), 65536, 10496, True)
    """
    start = time.perf_counter()
    src, dst = os.fspath(src), os.fspath(dst)
    model = parse_model(src, file_size(src))
    group, scheme = _settings(model, bits, group_size, op, scheme)
    if isinstance(min_elements, bool) or not isinstance(min_elements, int) or min_elements < 0:
        raise QuantpressError(f"min_elements must be a non-negative integer, got {min_elements!r}")
    _check_paths(src, dst, model)
    if _has_nested_external(model.graph):
        raise QuantpressError(f"{src}: external data inside subgraphs is not supported")
    input_bytes = _input_bytes(src, model)
    reports, skipped = _rewrite(src, model, bits, group, scheme, op, min_elements, progress)
    external = _inline_external(src, model) or model.ByteSize() > MAX_PROTOBUF_BYTES
    size = _write(model, dst, external)
    return OnnxReport(tuple(reports), tuple(skipped), input_bytes, size, time.perf_counter() - start)
