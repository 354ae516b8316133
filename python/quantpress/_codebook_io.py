"""Saving and loading trained quantizers as small safetensors files.

A file holds the quantizer's arrays as tensors and, in the header's ``__metadata__``,
``quantpress.kind`` (which class wrote it), ``quantpress.format_version`` and a JSON object of the
scalar parameters. Files are written atomically (a temporary file in the same folder, then
renamed), so a reader never sees half a file; a file that is not such a quantizer gets a
``QuantpressError``.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, TypeVar

import numpy as np

from ._core import QuantpressError

FORMAT_VERSION = "1"
_T = TypeVar("_T")


def save(path: str | os.PathLike[str], kind: str, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> None:
    """Writes ``arrays`` and ``params`` to ``path`` atomically."""
    from safetensors.numpy import save as st_save

    meta = {"quantpress.kind": kind, "quantpress.format_version": FORMAT_VERSION, "quantpress.params": json.dumps(params)}
    data = st_save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata=meta)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".quantpress-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: str | os.PathLike[str], kind: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reads a file written by :func:`save` for ``kind``: ``(arrays, params)``."""
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    try:
        with safe_open(path, framework="numpy") as f:
            meta = f.metadata() or {}
            arrays = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise QuantpressError(f"{path}: not a readable safetensors file ({e})") from None
    found = meta.get("quantpress.kind")
    if found != kind:
        raise QuantpressError(f"{path}: holds a {found or 'non-quantpress'} file, not a {kind}")
    if meta.get("quantpress.format_version") != FORMAT_VERSION:
        raise QuantpressError(f"{path}: unsupported format version {meta.get('quantpress.format_version')!r}")
    try:
        params = json.loads(meta.get("quantpress.params", "{}"))
    except json.JSONDecodeError as e:
        raise QuantpressError(f"{path}: corrupt quantpress.params metadata ({e})") from None
    if not isinstance(params, dict):
        raise QuantpressError(f"{path}: quantpress.params must be a JSON object")
    return arrays, params


def require(arrays: dict[str, np.ndarray], name: str, dtype: Any, ndim: int, path: str | os.PathLike[str]) -> np.ndarray:
    """The tensor ``name`` of a loaded file, checked for dtype and rank."""
    a = arrays.get(name)
    if a is None or a.dtype != np.dtype(dtype) or a.ndim != ndim:
        raise QuantpressError(f"{os.fspath(path)}: missing or malformed tensor {name!r} (want {np.dtype(dtype)}, {ndim}-d)")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise QuantpressError(f"{os.fspath(path)}: tensor {name!r} holds NaN or infinity")
    return a


def build(path: str | os.PathLike[str], kind: str, make: Callable[[], _T]) -> _T:
    """``make()`` (a constructor fed from the file's params), with a missing or mistyped
    parameter reported as a ``QuantpressError`` naming the file."""
    try:
        return make()
    except (KeyError, TypeError, ValueError) as e:
        raise QuantpressError(f"{os.fspath(path)}: bad {kind} parameters ({e})") from None
