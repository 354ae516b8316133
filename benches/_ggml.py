"""Optional ctypes bridge to ggml's C quantize/dequantize row functions, for benchmarks only.

This lets a benchmark time llama.cpp's C code (ggml) side by side with quantpress in one process.
Nothing in quantpress depends on it, and no ggml code is vendored here: the C code comes from a
separate ggml / llama.cpp build that you point to with an environment variable.

Finding the library
    Set ``QUANTPRESS_GGML_LIB`` to a directory holding ggml's shared libraries ``libggml-base.so``
    and ``libggml-cpu.so`` (a ``BUILD_SHARED_LIBS=ON`` CMake build of ggml or llama.cpp, e.g. built
    with ``-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON``). An optional text file
    ``GGML_COMMIT`` in that directory is reported as :attr:`Ggml.commit`. When the variable is
    unset, or the libraries cannot be loaded or do not look as expected, :func:`load` returns None
    and benchmarks simply leave out the ggml columns.

What is called
    The functions reached through ggml's type-traits tables, as llama.cpp's ``test-quantize-perf``
    does: ``ggml_get_type_traits(t)->from_float_ref`` (reference quantizer, ``ref=True``),
    ``ggml_get_type_traits_cpu(t)->from_float`` (CPU-backend quantizer, SIMD where ggml has it,
    e.g. AVX2 for Q8_0; the default) and ``ggml_get_type_traits(t)->to_float`` (dequantizer). Each
    call processes the whole buffer in one C call on the calling thread (single-threaded), and
    the GIL is released during it.

Requires only ctypes and numpy; importing this module never fails for lack of the library.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import numpy as np

__all__ = ["ENV_VAR", "TYPES", "Ggml", "GgmlUnavailable", "load", "load_or_raise"]

#: Environment variable naming the directory that holds libggml-base.so and libggml-cpu.so.
ENV_VAR = "QUANTPRESS_GGML_LIB"

_BASE_LIB = "libggml-base.so"
_CPU_LIB = "libggml-cpu.so"
_COMMIT_FILE = "GGML_COMMIT"


class _TypeInfo(NamedTuple):
    type_id: int  # value in ggml's `enum ggml_type`
    block_size: int  # values per block
    type_size: int  # bytes per block


#: ggml types this bridge exposes: name -> (enum ggml_type value, values per block, bytes per block).
TYPES: Dict[str, _TypeInfo] = {
    "Q4_0": _TypeInfo(2, 32, 18),
    "Q4_1": _TypeInfo(3, 32, 20),
    "Q5_0": _TypeInfo(6, 32, 22),
    "Q5_1": _TypeInfo(7, 32, 24),
    "Q8_0": _TypeInfo(8, 32, 34),
    "Q2_K": _TypeInfo(10, 256, 84),
    "Q3_K": _TypeInfo(11, 256, 110),
    "Q4_K": _TypeInfo(12, 256, 144),
    "Q5_K": _TypeInfo(13, 256, 176),
    "Q6_K": _TypeInfo(14, 256, 210),
    "IQ4_NL": _TypeInfo(20, 32, 18),
    "IQ4_XS": _TypeInfo(23, 256, 136),
}

# typedef void (*ggml_from_float_t)(const float * x, void * y, int64_t k);
# typedef void (*ggml_to_float_t)(const void * x, float * y, int64_t k);
_RowFn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
_RowCall = Callable[[int, int, int], None]  # (src address, dst address, number of values)


class _TypeTraits(ctypes.Structure):
    """``struct ggml_type_traits`` (ggml/include/ggml.h)."""

    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


class _TypeTraitsCpu(ctypes.Structure):
    """``struct ggml_type_traits_cpu`` (ggml/include/ggml-cpu.h)."""

    _fields_ = [
        ("from_float", ctypes.c_void_p),
        ("vec_dot", ctypes.c_void_p),
        ("vec_dot_type", ctypes.c_int),
        ("nrows", ctypes.c_int64),
    ]


class GgmlUnavailable(RuntimeError):
    """The ggml libraries could not be found, loaded or validated."""


class _Fns(NamedTuple):
    info: _TypeInfo
    from_float_cpu: Optional[_RowCall]
    from_float_ref: Optional[_RowCall]
    to_float: Optional[_RowCall]


def _row_fn(address: Optional[int]) -> Optional[_RowCall]:
    return _RowFn(address) if address else None


class Ggml:
    """ggml's C row quantizers/dequantizers, loaded from one directory. Build with :func:`load`."""

    def __init__(self, lib_dir: Path) -> None:
        self.lib_dir = lib_dir
        try:
            # ggml-base first and global, so that ggml-cpu's dependency on it resolves to this copy.
            self._base = ctypes.CDLL(str(lib_dir / _BASE_LIB), mode=ctypes.RTLD_GLOBAL)
            self._cpu = ctypes.CDLL(str(lib_dir / _CPU_LIB), mode=ctypes.RTLD_GLOBAL)
            get_traits = self._base.ggml_get_type_traits
            get_traits_cpu = self._cpu.ggml_get_type_traits_cpu
            cpu_init = self._cpu.ggml_cpu_init
        except (OSError, AttributeError) as e:
            raise GgmlUnavailable(f"cannot load ggml from {lib_dir}: {e}") from e
        get_traits.restype = ctypes.POINTER(_TypeTraits)
        get_traits.argtypes = [ctypes.c_int]
        get_traits_cpu.restype = ctypes.POINTER(_TypeTraitsCpu)
        get_traits_cpu.argtypes = [ctypes.c_int]
        cpu_init.restype = None
        cpu_init.argtypes = []
        cpu_init()  # fills the CPU backend's fp16 tables; idempotent
        # size_t ggml_quantize_chunk(type, const float * src, void * dst, int64_t start,
        #                            int64_t nrows, int64_t n_per_row, const float * imatrix)
        self._chunk = self._base.ggml_quantize_chunk
        self._chunk.restype = ctypes.c_size_t
        self._chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]

        self._fns: Dict[str, _Fns] = {}
        for name, info in TYPES.items():
            traits = get_traits(info.type_id).contents
            # Guard against a struct layout or enum that differs from what this file was written for.
            got = (traits.type_name or b"").decode(errors="replace")
            if (got.upper(), traits.blck_size, traits.type_size) != (name, info.block_size, info.type_size):
                raise GgmlUnavailable(
                    f"ggml in {lib_dir} reports {got!r} blck_size={traits.blck_size} "
                    f"type_size={traits.type_size} for {name}; struct layout or type enum mismatch"
                )
            self._fns[name] = _Fns(
                info,
                _row_fn(get_traits_cpu(info.type_id).contents.from_float),
                _row_fn(traits.from_float_ref),
                _row_fn(traits.to_float),
            )

        commit_file = lib_dir / _COMMIT_FILE
        #: Free text describing the ggml / llama.cpp source revision ("unknown" without GGML_COMMIT).
        self.commit = commit_file.read_text().strip() if commit_file.is_file() else "unknown"

    def __repr__(self) -> str:
        return f"Ggml(lib_dir={str(self.lib_dir)!r}, commit={self.commit!r})"

    @property
    def type_names(self) -> Tuple[str, ...]:
        return tuple(self._fns)

    def _get(self, type_name: str) -> _Fns:
        try:
            return self._fns[type_name.upper()]
        except KeyError:
            raise ValueError(f"unsupported ggml type {type_name!r}; expected one of {', '.join(self._fns)}") from None

    def row_size(self, type_name: str, n: int) -> int:
        """Bytes taken by ``n`` values of ``type_name`` (``n`` must be a whole number of blocks)."""
        info = self._get(type_name).info
        if n % info.block_size:
            raise ValueError(f"{type_name}: {n} values is not a multiple of the block size {info.block_size}")
        return n // info.block_size * info.type_size

    # -- quantize ---------------------------------------------------------------------------------

    def quantize_into(self, x: np.ndarray, out: np.ndarray, type_name: str, ref: bool = False) -> None:
        """Quantize float32 ``x`` into the caller's uint8 buffer ``out`` (any shape, right size).

        ``x`` must be C-contiguous float32 whose last dimension is a whole number of blocks; every
        row is quantized independently, exactly as ggml lays out a tensor. ``ref=True`` calls the
        reference quantizer (``quantize_row_*_ref``), otherwise the CPU backend's one.
        """
        fns = self._get(type_name)
        fn = fns.from_float_ref if ref else fns.from_float_cpu
        if fn is None:
            raise ValueError(f"ggml has no {'reference' if ref else 'CPU'} quantizer for {type_name}")
        _check_array(x, np.float32, "x")
        _check_array(out, np.uint8, "out")
        if x.ndim == 0 or x.shape[-1] % fns.info.block_size:
            raise ValueError(f"{type_name}: last dimension of x must be a multiple of {fns.info.block_size}")
        nbytes = self.row_size(type_name, x.size)
        if out.nbytes != nbytes:
            raise ValueError(f"{type_name}: out has {out.nbytes} bytes, {nbytes} needed")
        fn(x.ctypes.data, out.ctypes.data, x.size)

    def quantize(self, x: np.ndarray, type_name: str, ref: bool = False) -> np.ndarray:
        """Quantize float32 ``x`` (1-D or 2-D); returns uint8 of shape ``x.shape[:-1] + (row bytes,)``,
        the layout of ``gguf.quants.quantize``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim == 0:
            raise ValueError("x must have at least one dimension")
        out = np.empty(x.shape[:-1] + (self.row_size(type_name, x.shape[-1]),), np.uint8)
        self.quantize_into(x, out, type_name, ref=ref)
        return out

    def quantize_chunk(self, x: np.ndarray, type_name: str, imatrix: Optional[np.ndarray] = None) -> np.ndarray:
        """``ggml_quantize_chunk`` on the 2-D float32 ``x``: what llama-quantize runs per tensor.

        ``imatrix`` (one importance weight per column, float32) selects ggml's importance-weighted
        quantizers (``quantize_q4_K`` and friends); without it K-quants use the reference
        algorithm, and IQ4_NL/IQ4_XS their own unweighted search. Returns uint8 rows.
        """
        info = self._get(type_name).info
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] % info.block_size:
            raise ValueError(f"{type_name}: x must be 2-D with rows a multiple of {info.block_size}")
        out = np.empty((x.shape[0], self.row_size(type_name, x.shape[1])), np.uint8)
        qw = None
        if imatrix is not None:
            qw = np.ascontiguousarray(imatrix, dtype=np.float32)
            if qw.shape != (x.shape[1],):
                raise ValueError(f"imatrix must have shape ({x.shape[1]},)")
        got = self._chunk(info.type_id, x.ctypes.data, out.ctypes.data, 0, x.shape[0], x.shape[1],
                          None if qw is None else qw.ctypes.data)
        if got != out.nbytes:
            raise RuntimeError(f"ggml_quantize_chunk wrote {got} bytes, expected {out.nbytes}")
        return out

    # -- dequantize -------------------------------------------------------------------------------

    def dequantize_into(self, raw: np.ndarray, out: np.ndarray, type_name: str) -> None:
        """Dequantize the uint8 blocks ``raw`` into the caller's float32 buffer ``out``.

        Both must be C-contiguous; only their sizes must agree (``out.size`` values).
        """
        fns = self._get(type_name)
        if fns.to_float is None:
            raise ValueError(f"ggml has no dequantizer for {type_name}")
        _check_array(raw, np.uint8, "raw")
        _check_array(out, np.float32, "out")
        nbytes = self.row_size(type_name, out.size)
        if raw.nbytes != nbytes:
            raise ValueError(f"{type_name}: raw has {raw.nbytes} bytes, {nbytes} expected for {out.size} values")
        fns.to_float(raw.ctypes.data, out.ctypes.data, out.size)

    def dequantize(self, raw: np.ndarray, type_name: str, n: Optional[int] = None) -> np.ndarray:
        """Dequantize uint8 blocks; returns float32 of shape ``raw.shape[:-1] + (values per row,)``,
        the layout of ``gguf.quants.dequantize``. ``n``, if given, is the expected total number of
        values (a consistency check)."""
        raw = np.ascontiguousarray(raw, dtype=np.uint8)
        info = self._get(type_name).info
        if raw.ndim == 0 or raw.shape[-1] % info.type_size:
            raise ValueError(f"{type_name}: last dimension of raw must be a multiple of {info.type_size} bytes")
        shape = raw.shape[:-1] + (raw.shape[-1] // info.type_size * info.block_size,)
        out = np.empty(shape, np.float32)
        if n is not None and n != out.size:
            raise ValueError(f"{type_name}: raw holds {out.size} values, not {n}")
        self.dequantize_into(raw, out, type_name)
        return out


def _check_array(a: np.ndarray, dtype: type, what: str) -> None:
    if not isinstance(a, np.ndarray) or a.dtype != dtype:
        raise TypeError(f"{what} must be a numpy array of {np.dtype(dtype).name}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous")
    if what == "out" and not a.flags.writeable:
        raise ValueError("out must be writeable")


_cache: Dict[Path, Ggml] = {}


def load_or_raise(lib_dir: Optional[str] = None) -> Ggml:
    """Load ggml from ``lib_dir`` (default: ``$QUANTPRESS_GGML_LIB``); raise :class:`GgmlUnavailable`."""
    where = lib_dir if lib_dir is not None else os.environ.get(ENV_VAR, "")
    if not where:
        raise GgmlUnavailable(f"{ENV_VAR} is not set")
    path = Path(where).expanduser().resolve()
    if path.is_file():  # tolerate a path to one of the libraries
        path = path.parent
    if not (path / _BASE_LIB).is_file() or not (path / _CPU_LIB).is_file():
        raise GgmlUnavailable(f"{path} does not hold {_BASE_LIB} and {_CPU_LIB}")
    if path not in _cache:
        _cache[path] = Ggml(path)
    return _cache[path]


def load(lib_dir: Optional[str] = None) -> Optional[Ggml]:
    """Like :func:`load_or_raise`, but return None when ggml is unavailable."""
    try:
        return load_or_raise(lib_dir)
    except GgmlUnavailable:
        return None
