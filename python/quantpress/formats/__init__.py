"""Reading model files of any common format through one interface, safely.

``open_model(path)`` looks at the file's first bytes (never its extension) and hands it to one
reader module per format; each module exposes ``open_file(path) -> ModelFile``. Readers parse
headers with hard bounds and map tensor data lazily, so opening a 100 GB file costs a header read.

Example:
    >>> import os, tempfile, numpy as np
    >>> from safetensors.numpy import save_file
    >>> from quantpress.formats import open_model
    >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
    >>> save_file({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, path)
    >>> with open_model(path) as m:
    ...     t = m["w"]
    ...     print(m.format, t.shape, t.dtype, t.numpy().sum())
    safetensors (2, 3) F32 15.0
"""

from __future__ import annotations

import importlib
import os
import struct

from .base import DTYPES, LazyTensor, ModelFile, fail, file_size

__all__ = ["DTYPES", "LazyTensor", "ModelFile", "detect_format", "open_model"]

_PICKLE_LEGACY_TORCH = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of a file judged by its magic bytes: "safetensors", "gguf", "npy", "zip",
    "torch-legacy" or "onnx"; ``QuantpressError`` when none matches."""
    path = os.fspath(path)
    size = file_size(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"GGUF":
        return "gguf"
    if head[:6] == b"\x93NUMPY":
        return "npy"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:14] == _PICKLE_LEGACY_TORCH:
        return "torch-legacy"
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= size - 8:
        return "safetensors"
    if len(head) >= 9 and head[8:9] == b"{":
        raise fail(path, "header length", f"{struct.unpack('<Q', head[:8])[0]} runs past the end of the file ({size} bytes)")
    if head[:1] in (b"\x08", b"\x0a", b"\x12", b"\x1a", b"\x3a", b"\x42"):  # protobuf ModelProto fields
        return "onnx"
    raise fail(path, "magic", f"unrecognised file format (first bytes {head[:8]!r})")


def _reader(path: str, fmt: str, module: str):  # type: ignore[no-untyped-def]
    try:
        mod = importlib.import_module(f"{__name__}.{module}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{module}":
            raise
        raise fail(path, "magic", f"looks like {fmt}, which this build has no reader for") from None
    return getattr(mod, "open_file")


def open_model(path: str | os.PathLike[str]) -> ModelFile:
    """Opens a model (one file or a sharded set) read-only as a mapping from name to ``LazyTensor``.

    Supported: safetensors, NumPy ``.npy``/``.npz``, PyTorch checkpoints (zip and legacy
    format, read without torch and without running pickled code), GGUF and ONNX. The format is
    chosen from the file's magic bytes, never from its extension.

    Sharded checkpoints open as one mapping (``formats/sharded.py``): pass a directory (its
    ``model.safetensors.index.json``, a GGUF split set, or its one model file), a
    ``*.safetensors.index.json``, or any file of a GGUF split set (``name-00001-of-00003.gguf``).
    The whole set is validated before anything is read.

    Args:
        path: the model file, directory or index.

    Returns:
        A read-only ``ModelFile`` (a ``Mapping[str, LazyTensor]`` with ``.format`` and
        ``.metadata``); use it as a context manager or call ``close()``.

    Raises:
        FileNotFoundError: the file does not exist.
        QuantpressError: the file is malformed or refused (the message names the file and field).

    Example:
        >>> import os, tempfile, numpy as np, quantpress as qp
        >>> path = os.path.join(tempfile.mkdtemp(), "weights.npz")
        >>> np.savez(path, w=np.eye(2, dtype=np.float16))
        >>> with qp.open_model(path) as m:
        ...     print(m.format, list(m), m["w"].dtype, m["w"].numpy().tolist())
        npz ['w'] F16 [[1.0, 0.0], [0.0, 1.0]]
    """
    path = os.fspath(path)
    from . import sharded

    model = sharded.open_sharded(path)
    if model is not None:
        return model
    if os.path.isdir(path):
        path = sharded.find_in_directory(path)[1]
    return sharded.check_not_partial(_open_file(path))


def _open_file(path: str) -> ModelFile:
    """One file, by its magic bytes."""
    fmt = detect_format(path)
    if fmt == "zip":
        from . import torch_fmt

        return torch_fmt.open_file(path) if torch_fmt.is_torch_zip(path) else _reader(path, fmt, "numpy_fmt")(path)
    module = {"safetensors": "safetensors_fmt", "npy": "numpy_fmt", "torch-legacy": "torch_fmt",
              "gguf": "gguf_fmt", "onnx": "onnx_fmt"}[fmt]
    return _reader(path, fmt, module)(path)
