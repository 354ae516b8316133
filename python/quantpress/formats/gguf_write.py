"""Re-quantizing a GGUF file into llama.cpp's K-quant mixes (Q4_K_M, Q5_K_M) or one block type.

The per-tensor choice of type follows ``llama_tensor_get_type`` in llama.cpp's
``src/llama-quant.cpp`` (tensor categories, ``use_more_bits`` layers, tied embeddings, the
row-length fallbacks), so a file made here has the same tensor types as ``llama-quantize``
would give it. The output is written one tensor at a time (in row chunks) to a temporary file
in the destination folder, checked with the bounded reader, fsynced and renamed over the
destination: a failure never leaves a partial file under the output name, and the input is
only ever read.
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
import time
from dataclasses import dataclass
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO, Callable, TypeVar

import numpy as np

from .._core import QuantpressError
from ..gguf import GGUF_TYPES, gguf_quantize
from .gguf_fmt import GGML_TYPES, TYPE_IDS, GGUFFile, GGUFTensor, GGUFValue, GGUFValueType, tensor_nbytes

#: Mixes: name → (llama.cpp LLAMA_FTYPE number, default tensor type).
MIXES: dict[str, tuple[int, str]] = {"Q4_K_M": (15, "Q4_K"), "Q5_K_M": (17, "Q5_K")}
#: Single types → the LLAMA_FTYPE llama.cpp's ``--pure`` run of the same default type writes.
PURE_FTYPES: dict[str, int] = {
    "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10, "Q3_K": 11, "Q4_K": 14,
    "Q5_K": 16, "Q6_K": 18, "IQ4_NL": 25, "IQ4_XS": 30,
}
#: llama.cpp's ``tensor_type_fallback``: the type used when a row is not a multiple of 256.
FALLBACK: dict[str, str] = {
    "Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "IQ4_XS": "IQ4_NL",
}
# Name fragments llama.cpp never quantizes (tensor_allows_quantization).
_KEEP_FRAGMENTS = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
    "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
    "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight",
    "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
    "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight",
    "time_mix_g2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.",
    "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
)
_KEEP_NAMES = ("position_embd.weight", "token_types.weight")
_CHUNK_VALUES = 1 << 24  # rows are converted in chunks of about this many values (64 MB float32)
_LAYER = re.compile(r"blk\.(-?\d+)")
_T = TypeVar("_T")


@dataclass(frozen=True)
class TensorPlan:
    """What happened to one tensor: its shape, source and destination types and sizes."""

    name: str
    shape: tuple[int, ...]
    src_type: str
    dst_type: str
    src_bytes: int
    dst_bytes: int
    fallback: bool = False


@dataclass(frozen=True)
class RequantReport:
    """The outcome of :func:`gguf_requantize`."""

    src: str
    dst: str
    qtype: str
    file_type: int
    tensors: tuple[TensorPlan, ...]
    src_bytes: int
    dst_bytes: int
    seconds: float
    #: every file written: ``(dst,)``, or the splits in order when ``max_shard_size`` was given.
    files: tuple[str, ...] = ()

    @property
    def n_fallback(self) -> int:
        """Tensors whose row length forced a fallback type."""
        return sum(t.fallback for t in self.tensors)

    def types(self) -> dict[str, str]:
        """Tensor name → destination type name."""
        return {t.name: t.dst_type for t in self.tensors}


def _n_dims(dims: tuple[int, ...]) -> int:
    """ggml_n_dims: trailing dimensions of size 1 do not count."""
    n = len(dims)
    while n > 1 and dims[n - 1] == 1:
        n -= 1
    return n


def allows_quantization(name: str, dims: tuple[int, ...]) -> bool:
    """llama.cpp's ``tensor_allows_quantization`` (default parameters)."""
    if _n_dims(dims) < 2 or not name.endswith("weight") or name in _KEEP_NAMES:
        return False
    return not any(f in name for f in _KEEP_FRAGMENTS)


def category(name: str) -> str:
    """llama.cpp's ``tensor_get_category``."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for cat in ("attn_qkv.weight", "attn_kv_b.weight", "attn_v.weight", "attn_k.weight", "attn_q.weight",
                "attn_output.weight", "ffn_up", "ffn_gate", "ffn_down"):
        if cat in name:
            return cat.removesuffix(".weight")
    return "other"


def _layer_of(name: str) -> int:
    m = _LAYER.match(name)
    return int(m.group(1)) if m else -1


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's choice of the layers that get more bits in the _M mixes."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


class _MixState:
    """Model facts and the running counters of ``quantize_state_impl``."""

    def __init__(self, f: GGUFFile, names: list[str]):
        meta = f.metadata
        self.arch = str(meta.get("general.architecture", ""))
        layers = {_layer_of(n) for n in names} - {-1}
        self.n_layer = int(meta.get(f"{self.arch}.block_count", len(layers)))
        self.n_expert = int(meta.get(f"{self.arch}.expert_count", 0) or 0)
        head, head_kv = meta.get(f"{self.arch}.attention.head_count"), meta.get(f"{self.arch}.attention.head_count_kv")
        self.is_70b = self.arch == "llama" and self.n_layer == 80 and head_kv is not None and head != head_kv
        cats = [category(n) for n in names]
        self.n_attention_wv = sum(c in ("attn_v", "attn_qkv", "attn_kv_b") for c in cats)
        self.tied = "output" not in cats
        self.i_attention_wv = self.i_ffn_down = 0

    def layer(self, counter: int, name: str) -> int:
        if self.n_expert <= 1:
            return counter
        i = _layer_of(name)
        if not 0 <= i < self.n_layer:
            raise QuantpressError(f"cannot tell the layer of tensor {name!r} (expected blk.N with N < {self.n_layer})")
        return i


def _mix_type(s: _MixState, ftype: int, name: str, ne0: int, new: str) -> str:
    """``llama_tensor_get_type_impl`` restricted to the Q4_K_M (15) and Q5_K_M (17) branches."""
    cat = category(name)
    if cat == "output" or (s.tied and cat == "token_embd"):
        blck = GGML_TYPES[TYPE_IDS[new]][1]
        if s.arch == "falcon" or ne0 % blck:
            return "Q8_0"
        return "Q6_K" if new != "Q8_0" else new
    if cat in ("attn_v", "attn_qkv", "attn_kv_b"):
        if use_more_bits(s.i_attention_wv, s.n_attention_wv):
            new = "Q6_K"
        if s.is_70b and new in ("Q3_K", "Q4_K"):
            new = "Q5_K"
        if s.n_expert == 8:
            new = "Q8_0"
        s.i_attention_wv += 1
    elif cat == "attn_k":
        if s.n_expert == 8:
            new = "Q8_0"
    elif cat == "ffn_down":
        i = s.layer(s.i_ffn_down, name)
        if ftype == 15 and s.arch == "falcon":
            new = "Q6_K" if i < s.n_layer // 16 else "Q5_K" if use_more_bits(i, s.n_layer) else "Q4_K"
        elif use_more_bits(i, s.n_layer):
            new = "Q6_K"
        s.i_ffn_down += 1
    elif cat == "attn_output" and s.arch != "falcon" and s.n_expert == 8 and ftype == 15:
        new = "Q5_K"
    return new


def _fallback(dst: str, ne0: int) -> tuple[str, bool]:
    """``tensor_type_fallback``; block-32 types (no entry in llama.cpp's table) fall back to F16."""
    if ne0 % GGML_TYPES[TYPE_IDS[dst]][1] == 0:
        return dst, False
    new = FALLBACK.get(dst, "F16")
    if ne0 % GGML_TYPES[TYPE_IDS[new]][1]:
        new = "F16"
    return new, True


def plan_types(f: GGUFFile, qtype: str) -> dict[str, tuple[str, bool]]:
    """Destination type (and whether it is a fallback) of every tensor of ``f`` for ``qtype``.

    Visits tensors in llama.cpp's order (layer number, then name) so the layer counters of
    ``use_more_bits`` match ``llama-quantize``.
    """
    ftype, default = MIXES.get(qtype, (PURE_FTYPES.get(qtype, -1), qtype))
    names = sorted(f, key=lambda n: (_layer_of(n), n))
    quantizable = [n for n in names if allows_quantization(n, f[n].dims)]
    state = _MixState(f, quantizable)
    plan: dict[str, tuple[str, bool]] = {}
    for name in names:
        t = f[name]
        if name not in quantizable:
            plan[name] = ("F32" if t.dtype in ("F16", "BF16") and _n_dims(t.dims) == 1 else t.dtype, False)
            continue
        dst = _mix_type(state, ftype, name, t.dims[0], default) if qtype in MIXES else default
        plan[name] = _fallback(dst, t.dims[0])
    return plan


# --- writing -------------------------------------------------------------------------------


def _encode_string(s: str) -> bytes:
    b = s.encode("utf-8", "surrogateescape")
    return struct.pack("<Q", len(b)) + b


_FORMATS = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h", GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<B", GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}


def _encode_item(vtype: int, value: Any) -> bytes:
    if vtype == GGUFValueType.STRING:
        return _encode_string(value)
    if vtype == GGUFValueType.ARRAY:
        return _encode_array(value)
    return struct.pack(_FORMATS[vtype], value)


def _encode_array(v: GGUFValue) -> bytes:
    assert v.item_type is not None
    head = struct.pack("<IQ", v.item_type, len(v.value))
    if isinstance(v.value, np.ndarray):
        return head + v.value.tobytes()
    return head + b"".join(_encode_item(v.item_type, x) for x in v.value)


def _header(fields: dict[str, GGUFValue], infos: list[tuple[str, tuple[int, ...], int, int]]) -> bytes:
    parts = [b"GGUF", struct.pack("<IQQ", 3, len(infos), len(fields))]
    for key, v in fields.items():
        parts += [_encode_string(key), struct.pack("<I", v.type), _encode_item(v.type, v if v.type == GGUFValueType.ARRAY else v.value)]
    for name, dims, type_id, offset in infos:
        parts += [_encode_string(name), struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, type_id, offset)]
    return b"".join(parts)


def _pad(n: int, align: int) -> int:
    return -(-n // align) * align


def _n_rows(t: GGUFTensor) -> int:
    n = 1
    for d in t.dims[1:]:
        n *= d
    return n


def _rows_f32(t: GGUFTensor, r0: int, r1: int) -> np.ndarray:
    """Rows ``r0:r1`` of ``t`` seen as a matrix of ne0 columns: float32 (float16 if stored so)."""
    ne0 = t.dims[0]
    if t.dtype in ("F32", "F16"):
        return t.raw().view("<f4" if t.dtype == "F32" else "<f2").reshape(-1, ne0)[r0:r1]
    row_bytes = t.nbytes // _n_rows(t)
    part = GGUFTensor(t._file, t.name, (ne0, r1 - r0), t.ggml_type, t.offset + r0 * row_bytes, (r1 - r0) * row_bytes)
    return np.asarray(part.numpy(), np.float32)


def _convert(t: GGUFTensor, dst: str, out: BinaryIO) -> int:
    """Writes ``t`` converted to ``dst`` in row chunks; returns the bytes written."""
    if dst == t.dtype:
        raw, written = t.raw(), 0
        for i in range(0, t.nbytes, 1 << 26):
            written += out.write(raw[i : i + (1 << 26)].tobytes())
        return written
    ne0 = t.dims[0]
    n_rows = _n_rows(t) if t.nbytes else 0
    step = max(1, _CHUNK_VALUES // max(ne0, 1))
    written = 0
    for r0 in range(0, n_rows, step):
        rows = _rows_f32(t, r0, min(n_rows, r0 + step))
        if dst in GGUF_TYPES:
            data = gguf_quantize(rows, dst)
        elif dst in ("F32", "F16"):
            data = np.ascontiguousarray(rows, np.float32 if dst == "F32" else np.float16)
        else:
            raise QuantpressError(f"{t.name}: cannot convert {t.dtype} to {dst}")
        written += out.write(data.tobytes())
    return written


def _out_fields(f: GGUFFile, ftype: int) -> dict[str, GGUFValue]:
    fields = dict(f.fields)
    fields["general.quantization_version"] = GGUFValue(GGUFValueType.UINT32, 2)
    fields["general.file_type"] = GGUFValue(GGUFValueType.UINT32, ftype)
    return fields


def _layout(f: GGUFFile, plan: dict[str, tuple[str, bool]],
            names: list[str] | None = None) -> tuple[list[tuple[str, tuple[int, ...], int, int]], list[int]]:
    infos, sizes, offset = [], [], 0
    for name in f.tensor_order if names is None else names:
        t, dst = f[name], plan[name][0]
        type_id = TYPE_IDS[dst]
        infos.append((name, t.dims, type_id, offset))
        sizes.append(tensor_nbytes(type_id, t.dims))
        offset = _pad(offset + sizes[-1], f.alignment)
    return infos, sizes


def _check_qtype(qtype: Any) -> str:
    name = str(getattr(qtype, "name", qtype)).upper()
    if name not in MIXES and name not in PURE_FTYPES:
        raise QuantpressError(f"unknown qtype {qtype!r}: expected one of {', '.join([*MIXES, *PURE_FTYPES])}")
    return name


def _write_all(f: GGUFFile, plan: dict[str, tuple[str, bool]], fields: dict[str, GGUFValue], out: BinaryIO,
               progress: Callable[[int, int, str], Any] | None, names: list[str] | None = None,
               done_before: int = 0) -> list[TensorPlan]:
    infos, sizes = _layout(f, plan, names)
    header = _header(fields, infos)
    out.write(header + bytes(_pad(len(header), f.alignment) - len(header)))
    done: list[TensorPlan] = []
    for i, ((name, dims, _, _), size) in enumerate(zip(infos, sizes), done_before):
        t, (dst, fb) = f[name], plan[name]
        if _convert(t, dst, out) != size:
            raise QuantpressError(f"{name}: wrote a wrong number of bytes for {dst}")  # a bug, not bad input
        out.write(bytes(_pad(size, f.alignment) - size))
        done.append(TensorPlan(name, t.shape, t.dtype, dst, t.nbytes, size, fb))
        if progress is not None:
            progress(i + 1, len(f), name)
    return done


def gguf_requantize(src: str | os.PathLike[str], dst: str | os.PathLike[str], qtype: Any = "Q4_K_M",
                    progress: Callable[[int, int, str], Any] | None = None,
                    max_shard_size: int | str | None = None) -> RequantReport:
    """Re-quantizes a GGUF model file into a llama.cpp K-quant mix or a single block type.

    ``"Q4_K_M"``/``"Q5_K_M"`` choose each tensor's type as ``llama-quantize`` does (for example
    ``output.weight`` → Q6_K, ``attn_v``/``ffn_down`` → Q6_K on the ``use_more_bits`` layers);
    a single type (``"Q8_0"``, ``"Q4_K"``, ...) is applied to every quantizable tensor like
    ``llama-quantize --pure``. Rows whose length is not a multiple of the block size fall back
    as llama.cpp does (Q4_K→Q5_0, Q5_K→Q5_1, Q6_K→Q8_0, Q2_K/Q3_K→Q4_0, IQ4_XS→IQ4_NL, else
    F16). Norms, biases and other 1-D tensors stay unquantized (F16/BF16 ones become F32).
    Every metadata key is kept; ``general.file_type`` becomes the mix's LLAMA_FTYPE number.

    Args:
        src: the input ``.gguf`` (F32/F16/BF16 or quantized tensors; it is only read), or a
            split set (any of its ``name-0000k-of-0000N.gguf`` files, or its directory): read as
            one model, its metadata from the first split without the ``split.*`` keys.
        dst: the output path; written atomically (temporary file + fsync + rename).
        qtype: ``"Q4_K_M"``, ``"Q5_K_M"`` or a name in :data:`~quantpress.GGUF_TYPES`.
        progress: optional ``callback(done, total, tensor_name)`` after each tensor.
        max_shard_size: ``None`` for one file; else bytes or a size (``"2GB"``, ``"2GiB"``):
            llama.cpp splits ``{dst minus .gguf}-00001-of-0000N.gguf`` ... of at most that many
            tensor bytes each (a tensor is never split), as ``llama-gguf-split`` writes them:
            ``split.no``/``split.count``/``split.tensors.count`` in every split, the model's
            metadata only in the first. All splits are written and checked under temporary
            names, then renamed with the first split last, so llama.cpp (which opens the first
            split) and ``qp.open_model`` never see an incomplete set.

    Returns:
        A :class:`RequantReport` with each tensor's source and destination type and size.

    Raises:
        QuantpressError: for a malformed input, an unknown ``qtype``, NaN/Inf weights, or
            ``dst`` naming the input file. No file appears under ``dst`` on error.

    Example:
        >>> import numpy as np, gguf, quantpress as qp, tempfile, os
        >>> d = tempfile.mkdtemp(); src = os.path.join(d, "f16.gguf")
        >>> w = gguf.GGUFWriter(src, "llama"); w.add_block_count(1)
        >>> rng = np.random.default_rng(0)
        >>> w.add_tensor("blk.0.attn_q.weight", rng.standard_normal((256, 256)).astype(np.float16))
        >>> w.add_tensor("blk.0.attn_norm.weight", np.ones(256, np.float32))
        >>> w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
        >>> report = qp.gguf_requantize(src, os.path.join(d, "q4.gguf"), "Q4_K_M")
        >>> report.types(), report.file_type
        ({'blk.0.attn_q.weight': 'Q4_K', 'blk.0.attn_norm.weight': 'F32'}, 15)
    """
    name = _check_qtype(qtype)
    start = time.perf_counter()
    f = open_gguf_input(os.fspath(src))
    dst = os.path.abspath(os.fspath(dst))
    if os.path.exists(dst) and any(os.path.samefile(p, dst) for p in getattr(f, "files", [f.path])):
        raise QuantpressError(f"{dst}: the output must not be the input file")
    plan = plan_types(f, name)
    ftype = MIXES[name][0] if name in MIXES else PURE_FTYPES[name]
    if max_shard_size is not None:
        from ..sharded_container import parse_size

        done, files = _write_splits(f, plan, ftype, dst, parse_size(max_shard_size), progress)
        return RequantReport(f.path, files[0], name, ftype, tuple(done), sum(t.src_bytes for t in done),
                             sum(os.path.getsize(p) for p in files), time.perf_counter() - start, tuple(files))
    done = write_atomic(dst, lambda out: _write_all(f, plan, _out_fields(f, ftype), out, progress))
    return RequantReport(f.path, dst, name, ftype, tuple(done), sum(t.src_bytes for t in done),
                         os.path.getsize(dst), time.perf_counter() - start, (dst,))


# --- split input -------------------------------------------------------------------------------


class SplitGGUF(Mapping[str, GGUFTensor]):
    """A GGUF split set read as one :class:`GGUFFile` (what :func:`gguf_requantize` uses of it):
    the first split's metadata without the ``split.*`` keys, every split's tensors in order.
    The set is validated first (:func:`quantpress.formats.sharded.open_split`: numbering, gaps,
    counts, a tensor in two splits)."""

    def __init__(self, path: str) -> None:
        from .sharded import open_split, split_files

        open_split(path).close()
        self.parts = [GGUFFile(p) for p in split_files(path)]
        first = self.parts[0]
        self.path, self.alignment = first.path, first.alignment
        self.files = [p.path for p in self.parts]
        self.fields = {k: v for k, v in first.fields.items() if not k.startswith("split.")}
        self.metadata = {k: v.to_python() for k, v in self.fields.items()}
        self.tensor_order = [n for p in self.parts for n in p.tensor_order]
        self._owner = {n: p for p in self.parts for n in p.tensor_order}

    def __getitem__(self, name: str) -> GGUFTensor:
        return self._owner[name][name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensor_order)

    def __len__(self) -> int:
        return len(self.tensor_order)


def open_gguf_input(src: str) -> Any:
    """``src`` as a :class:`GGUFFile`, or a :class:`SplitGGUF` for a split file name or a
    directory holding a split set."""
    from .sharded import SPLIT_RE, find_in_directory

    if os.path.isdir(src):
        kind, target = find_in_directory(src)
        if kind != "split":
            raise QuantpressError(f"{src}: holds no GGUF split set")
        return SplitGGUF(target)
    if SPLIT_RE.match(os.path.basename(src)) and os.path.isfile(src):
        return SplitGGUF(src)
    return GGUFFile(src)


# --- split output (llama.cpp's gguf-split convention) ----------------------------------------


def _split_groups(f: GGUFFile, plan: dict[str, tuple[str, bool]], max_bytes: int) -> list[list[str]]:
    """Tensors in file order, cut greedily so each split holds at most ``max_bytes`` of tensor
    data (padding included), as gguf-split does; a larger tensor gets a split of its own."""
    groups: list[list[str]] = [[]]
    size = 0
    for name in f.tensor_order:
        n = _pad(tensor_nbytes(TYPE_IDS[plan[name][0]], f[name].dims), f.alignment)
        if groups[-1] and size + n > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += n
    return groups


def _split_fields(f: GGUFFile, ftype: int, no: int, count: int) -> dict[str, GGUFValue]:
    """The first split carries every key; the others only the split keys (and the alignment)."""
    keys = ("split.no", "split.count", "split.tensors.count")
    if no == 0:
        fields = {k: v for k, v in _out_fields(f, ftype).items() if k not in keys}
    else:
        fields = {k: f.fields[k] for k in ("general.alignment",) if k in f.fields}
    fields["split.no"] = GGUFValue(GGUFValueType.UINT16, no)
    fields["split.count"] = GGUFValue(GGUFValueType.UINT16, count)
    fields["split.tensors.count"] = GGUFValue(GGUFValueType.INT32, len(f))
    return fields


def _write_splits(f: GGUFFile, plan: dict[str, tuple[str, bool]], ftype: int, dst: str, max_bytes: int,
                  progress: Callable[[int, int, str], Any] | None) -> tuple[list[TensorPlan], list[str]]:
    groups = _split_groups(f, plan, max_bytes)
    if len(groups) > 65535:
        raise QuantpressError(f"{dst}: {len(groups)} splits exceed llama.cpp's limit of 65535; raise max_shard_size")
    prefix = dst[:-5] if dst.endswith(".gguf") else dst
    finals = [f"{prefix}-{i:05d}-of-{len(groups):05d}.gguf" for i in range(1, len(groups) + 1)]
    if any(os.path.exists(p) and os.path.samefile(f.path, p) for p in finals):
        raise QuantpressError(f"{dst}: a split would replace the input file")
    folder, temps, done, renamed = os.path.dirname(dst), [], [], []  # type: ignore[var-annotated]
    try:
        for no, names in enumerate(groups):
            fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(finals[no]) + ".", suffix=".tmp", dir=folder)
            temps.append(tmp)
            _chmod_like_new_file(fd)
            with os.fdopen(fd, "wb") as out:
                done += _write_all(f, plan, _split_fields(f, ftype, no, len(groups)), out, progress, names, len(done))
                out.flush()
                os.fsync(out.fileno())
            GGUFFile(tmp)
        if os.path.exists(finals[0]):  # an older set: take its entry point away first
            os.unlink(finals[0])
        for tmp, final in reversed(list(zip(temps, finals))):  # the first split, the entry point, last
            os.replace(tmp, final)
            renamed.append(final)
    except BaseException:
        for p in temps + renamed:
            if os.path.exists(p):
                os.unlink(p)
        raise
    _fsync_dir(folder)
    return done, finals


def write_atomic(dst: str, write: Callable[[BinaryIO], _T]) -> _T:
    """Calls ``write(out)`` on a temporary file in ``dst``'s folder, fsyncs it, checks it with the
    bounded GGUF reader and renames it over ``dst``; on any error the temporary file is removed."""
    folder = os.path.dirname(dst)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(dst) + ".", suffix=".tmp", dir=folder)
    try:
        _chmod_like_new_file(fd)
        with os.fdopen(fd, "wb") as out:
            result = write(out)
            out.flush()
            os.fsync(out.fileno())
        GGUFFile(tmp)  # the bounded reader accepts what was written
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)
    return result


def _chmod_like_new_file(fd: int) -> None:
    """mkstemp makes 0600 files; give the output the mode ``open()`` would (0666 minus umask)."""
    if hasattr(os, "fchmod"):
        mask = os.umask(0)
        os.umask(mask)
        os.fchmod(fd, 0o666 & ~mask)


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
