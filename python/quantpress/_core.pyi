"""Type stubs for the compiled core (``quantpress._core``). Users import from ``quantpress``."""

from typing import Optional, final

import numpy as np
import numpy.typing as npt

__version__: str
__all__ = [
    "QuantpressError",
    "__version__",
    "_reset_after_fork",
    "_set_simd_level",
    "detected_simd_level",
    "error_sums",
    "get_num_threads",
    "gguf_quantize_into",
    "gguf_dequantize_into",
    "hqq_quantize",
    "kmeans_plusplus",
    "LloydState",
    "lloyd_iteration",
    "kmeans_chunk_rows",
    "lloyd_partial",
    "lloyd_finish",
    "kmeans1d",
    "mse_quantize",
    "_panic_for_tests",
    "pack_bits",
    "pq_adc_search",
    "pq_distance_tables",
    "prune_compress",
    "prune_expand",
    "prune_magnitude_masks",
    "prune_nm",
    "prune_nm_expand",
    "prune_norms",
    "rtn_dequantize",
    "rtn_error_sums",
    "rtn_quantize",
    "set_num_threads",
    "simd_level",
    "unpack_bits",
    "vq_assign",
]

class QuantpressError(ValueError):
    """Bad input or parameters for a quantpress operation (a subclass of ValueError)."""

def simd_level() -> str: ...
def detected_simd_level() -> str: ...
def _set_simd_level(name: str) -> None: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def _reset_after_fork() -> None: ...
def gguf_quantize_into(
    x: npt.NDArray[np.float32],
    row_len: int,
    qtype: str,
    out: npt.NDArray[np.uint8],
    weights: npt.NDArray[np.float32] | None = None,
) -> None: ...
def gguf_dequantize_into(raw: npt.NDArray[np.uint8], qtype: str, out: npt.NDArray[np.float32]) -> None: ...
def _panic_for_tests() -> None: ...
def rtn_quantize(
    x: npt.NDArray[np.float32], bits: int, group_size: int, scheme: str, scale_dtype: str
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.floating], Optional[npt.NDArray[np.floating]]]: ...
def mse_quantize(
    x: npt.NDArray[np.float32],
    bits: int,
    group_size: int,
    scheme: str,
    scale_dtype: str,
    weights: npt.NDArray[np.float32] | None = None,
    row_len: int = 0,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.floating], Optional[npt.NDArray[np.floating]]]: ...
def hqq_quantize(
    x: npt.NDArray[np.float32], bits: int, group_size: int, scheme: str, scale_dtype: str
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.floating], Optional[npt.NDArray[np.floating]]]: ...
def rtn_dequantize(
    codes: npt.NDArray[np.uint8],
    scales: npt.NDArray[np.floating],
    zeros: Optional[npt.NDArray[np.floating]],
    n: int,
    bits: int,
    group_size: int,
    scheme: str,
    scale_dtype: str,
) -> npt.NDArray[np.float32]: ...
def error_sums(x: npt.NDArray[np.float32], y: npt.NDArray[np.float32]) -> tuple[float, float, float, float]: ...
def rtn_error_sums(
    x: npt.NDArray[np.float32],
    codes: npt.NDArray[np.uint8],
    scales: npt.NDArray[np.floating],
    zeros: Optional[npt.NDArray[np.floating]],
    bits: int,
    group_size: int,
    scheme: str,
) -> tuple[float, float, float, float]: ...
def pack_bits(codes: npt.NDArray[np.uint8], bits: int) -> npt.NDArray[np.uint8]: ...
def unpack_bits(packed: npt.NDArray[np.uint8], bits: int, n: int) -> npt.NDArray[np.uint8]: ...
def kmeans_plusplus(
    x: npt.NDArray[np.float32],
    d: int,
    k: int,
    seed: int,
    weights: npt.NDArray[np.float32] | None = None,
    trials: int | None = None,
) -> npt.NDArray[np.float32]: ...
@final
class LloydState:
    def __init__(self) -> None: ...

def lloyd_iteration(
    x: npt.NDArray[np.float32],
    d: int,
    centroids: npt.NDArray[np.float32],
    metric: str,
    weights: npt.NDArray[np.float32] | None = None,
    state: LloydState | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint32], float, npt.NDArray[np.float64], int, float]: ...
def kmeans_chunk_rows(n: int, k: int, d: int) -> int: ...
def lloyd_partial(
    x: npt.NDArray[np.float32],
    d: int,
    centroids: npt.NDArray[np.float32],
    metric: str,
    rows: int,
    weights: npt.NDArray[np.float32] | None = None,
    state: LloydState | None = None,
) -> tuple[
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.uint64],
    tuple[npt.NDArray[np.float64], npt.NDArray[np.uint64], npt.NDArray[np.uint32], npt.NDArray[np.float64], npt.NDArray[np.float32]],
    npt.NDArray[np.uint32],
]: ...
def lloyd_finish(
    centroids: npt.NDArray[np.float32],
    d: int,
    metric: str,
    coords: npt.NDArray[np.float64],
    weight: npt.NDArray[np.float64],
    members: npt.NDArray[np.uint64],
    far_code: npt.NDArray[np.uint32],
    far_weight: npt.NDArray[np.float64],
    far_points: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64], int, float]: ...
def vq_assign(
    x: npt.NDArray[np.float32], codebook: npt.NDArray[np.float32], d: int, metric: str, return_distances: bool
) -> tuple[npt.NDArray[np.uint32], Optional[npt.NDArray[np.float32]]]: ...
def pq_adc_search(
    tables: npt.NDArray[np.float32], nq: int, m: int, ksub: int, codes: npt.NDArray[np.uint8] | npt.NDArray[np.uint16], k: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...
def kmeans1d(
    x: npt.NDArray[np.float32],
    row_len: int,
    k: int,
    weights: npt.NDArray[np.float32] | None = None,
    exact: bool = True,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.unsignedinteger], npt.NDArray[np.float64]]: ...
def pq_distance_tables(
    queries: npt.NDArray[np.float32], codebooks: npt.NDArray[np.float32], m: int, ksub: int, ds: int
) -> npt.NDArray[np.float32]: ...
def prune_magnitude_masks(scores: list[npt.NDArray[np.float32]], keep: int) -> list[npt.NDArray[np.uint8]]: ...
def prune_compress(values: npt.NDArray[np.float32], mask: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]: ...
def prune_expand(packed: npt.NDArray[np.float32], mask: npt.NDArray[np.uint8], n: int) -> npt.NDArray[np.float32]: ...
def prune_nm(
    scores: npt.NDArray[np.float32], values: npt.NDArray[np.float32], n: int, m: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]: ...
def prune_nm_expand(
    values: npt.NDArray[np.float32], positions: npt.NDArray[np.uint8], n: int, m: int, total: int
) -> npt.NDArray[np.float32]: ...
def prune_norms(x: npt.NDArray[np.float32], cols: int, p: int, rows: bool) -> npt.NDArray[np.float64]: ...
