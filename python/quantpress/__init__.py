"""quantpress: compress AI models (quantization, pruning, distillation) with a SIMD Rust core.

Example:
    >>> import numpy as np, quantpress as qp
    >>> w = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    >>> qt = qp.quantize(w, bits=4, group_size=64)
    >>> raw = qp.gguf_quantize(w, "Q4_0")
"""

from __future__ import annotations

import os

from . import _core
from ._core import QuantpressError, __version__, get_num_threads, simd_level
from .formats import open_model
from .budget import plan_budget
from .calibrate import Observer, QuantParams, compute_scale_zp, qrange
from .container import load, save_compressed
from .distill import VQResult, cross_entropy, distillation_loss, feature_loss, soft_cross_entropy, vq_forward
from .gguf import GGUF_TYPES, gguf_dequantize, gguf_quantize
from .formats.gguf_fmt import read_gguf
from .formats.gguf_write import gguf_requantize
from .formats.gguf_export import gguf_export
from .formats.onnx_write import onnx_quantize
from .kmeans import KMeans
from .kmeans1d import KMeans1D, kmeans1d
from .scalar import QuantizedTensor, pack_bits, quantize, unpack_bits
from .online import OnlineCodebook
from .pipeline import Report, compress
from .pq import ProductQuantizer, ResidualQuantizer
from .prune import SparseTensor, prune, prune_global, wanda_scores
from .vq import assign
from .weight_vq import VQTensor, vq_quantize

__all__ = [
    "GGUF_TYPES",
    "KMeans",
    "KMeans1D",
    "Observer",
    "OnlineCodebook",
    "ProductQuantizer",
    "QuantParams",
    "QuantizedTensor",
    "QuantpressError",
    "Report",
    "ResidualQuantizer",
    "VQResult",
    "SparseTensor",
    "VQTensor",
    "__version__",
    "assign",
    "compress",
    "compute_scale_zp",
    "cross_entropy",
    "distillation_loss",
    "feature_loss",
    "get_num_threads",
    "gguf_dequantize",
    "gguf_export",
    "gguf_quantize",
    "gguf_requantize",
    "kmeans1d",
    "load",
    "onnx_quantize",
    "open_model",
    "pack_bits",
    "plan_budget",
    "prune",
    "prune_global",
    "qrange",
    "quantize",
    "read_gguf",
    "save_compressed",
    "set_num_threads",
    "simd_level",
    "soft_cross_entropy",
    "unpack_bits",
    "vq_forward",
    "vq_quantize",
    "wanda_scores",
]


def set_num_threads(n: int) -> None:
    """Sets how many threads the Rust kernels use (default: ``QUANTPRESS_NUM_THREADS`` or all CPUs).

    Results are bit-identical for any thread count.

    Example:
        >>> import quantpress as qp
        >>> qp.set_num_threads(2); qp.get_num_threads()
        2
    """
    _core.set_num_threads(int(n))


# A forked child has none of the parent's worker threads: start a fresh pool there.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_core._reset_after_fork)
