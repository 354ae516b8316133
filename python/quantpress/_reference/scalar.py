"""Round-to-nearest, NF4 (with bitsandbytes' double quantization of the scales) and the shared float32 helpers.

Part of the test oracle (``quantpress._reference``): plain NumPy, never used for speed.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Optional

import numpy as np

F32 = np.float32

def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Little-endian bit stream: code i at stream bits [i*bits, (i+1)*bits), LSB first."""
    c = np.asarray(codes, dtype=np.uint8).reshape(-1, 1)
    stream = np.unpackbits(c, axis=1, bitorder="little")[:, :bits].reshape(-1)
    return np.packbits(stream, bitorder="little")


def unpack_bits(packed: np.ndarray, bits: int, n: int) -> np.ndarray:
    stream = np.unpackbits(np.asarray(packed, dtype=np.uint8), bitorder="little")[: n * bits]
    weights = (1 << np.arange(bits)).astype(np.uint16)
    return (stream.reshape(n, bits).astype(np.uint16) @ weights).astype(np.uint8)


def _round_up(s: np.ndarray, scale_dtype: str) -> np.ndarray:
    """The smallest scale_dtype value >= max(s, float32 tiny) for s > 0, as float32."""
    tiny = np.finfo(F32).tiny
    s = np.where((s > 0) & (s < tiny), tiny, s).astype(F32)
    if scale_dtype == "float32":
        return s.astype(F32)
    h = s.astype(np.float16)
    bump = h.astype(F32) < s
    h = np.where(bump, (h.view(np.uint16) + np.uint16(1)).view(np.float16), h)
    return h.astype(F32)


def rtn_quantize(x: np.ndarray, bits: int, group_size: int, scheme: str, scale_dtype: str
                 ) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Unpacked codes, scales and zeros (float32) of a flat float32 array; see rust/scalar/rtn.rs."""
    g = np.asarray(x, dtype=F32).reshape(-1, group_size)
    top = F32(2**bits - 1)
    gmin, gmax = g.min(axis=1), g.max(axis=1)
    if scheme == "affine":
        mn = np.where(gmin < 0, gmin, F32(0)).astype(F32)
        mx = np.where(gmax > 0, gmax, F32(0)).astype(F32)
        scale = _round_up((mx - mn) / top, scale_dtype)
        with np.errstate(divide="ignore", invalid="ignore"):
            zero = np.where(scale > 0, np.clip(np.rint(-mn / scale), 0, top), F32(0)).astype(F32) + F32(0)
        lo = F32(0)
    else:
        amax = np.maximum(np.abs(gmin), np.abs(gmax))
        qm = F32(2 ** (bits - 1) - 1)
        scale = _round_up(amax / qm, scale_dtype)
        zero = np.full_like(scale, F32(2 ** (bits - 1)))
        lo = F32(1)
    with np.errstate(divide="ignore"):
        inv = np.where(scale > 0, F32(1) / scale, F32(0)).astype(F32)
    codes = np.clip(np.rint(g * inv[:, None]) + zero[:, None], lo, top).astype(np.uint8)
    return codes.reshape(-1), scale, (zero if scheme == "affine" else None)


def rtn_dequantize(codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray, group_size: int) -> np.ndarray:
    """``(code - zero) * scale`` per group, float32 (zeros: the per-group zero point, float32)."""
    c = np.asarray(codes).reshape(-1, group_size).astype(F32)
    return ((c - zeros.astype(F32)[:, None]) * scales.astype(F32)[:, None]).reshape(-1)


#: bitsandbytes' NF4 codebook and the thresholds of its ``dQuantizeNF4`` decision tree.
NF4 = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0], dtype=F32)
#: The literals of bitsandbytes' ``dQuantizeNF4`` (csrc), low to high.
NF4_MID_LITERALS = (
    "-0.8480964004993439", "-0.6106329262256622", "-0.4599952697753906", "-0.33967943489551544",
    "-0.23460740596055984", "-0.13791173323988914", "-0.045525018125772476", "0.03979014977812767",
    "0.1202552504837513", "0.2035212516784668", "0.2920137718319893", "0.3893125355243683",
    "0.5016634166240692", "0.6427869200706482", "0.8614784181118011")


def f32_literal(text: str) -> np.float32:
    """A decimal literal rounded once to the nearest float32 (ties to even), as a C ``1.5f`` or a
    Rust ``f32`` literal is. ``np.float32(float(text))`` rounds twice, through float64, and the
    NF4 thresholds (midpoints of float32 values) are exactly where the two differ."""
    q = Fraction(text)
    a = np.float32(float(q))
    candidates = [np.nextafter(a, np.float32(-np.inf)), a, np.nextafter(a, np.float32(np.inf))]
    return min(candidates, key=lambda c: (abs(Fraction(float(c)) - q), int(np.float32(c).view(np.uint32)) & 1))


NF4_MID = np.array([f32_literal(t) for t in NF4_MID_LITERALS], dtype=F32)


def bnb_quantize_nf4(x: np.ndarray, blocksize: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A NumPy port of bitsandbytes' blockwise NF4 quantization (``kQuantizeBlockwise`` with
    ``dQuantizeNF4``): per block ``absmax = max|x|`` (float32), ``n = x * (1/absmax)`` in float32,
    code = the leaf of the threshold tree with strict ``>`` (NaN falls to code 0).

    Returns unpacked codes and float32 absmax. bitsandbytes then packs element ``2j`` into the
    *high* nibble of byte ``j`` (see :func:`bnb_pack`); quantpress packs it into the low one.
    """
    g = np.asarray(x, dtype=F32).reshape(-1, blocksize)
    absmax = np.abs(g).max(axis=1)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # 1/0 and 1/subnormal: inf
        n = g * (F32(1) / absmax)[:, None]
        codes = (n[..., None] > NF4_MID).sum(axis=-1).astype(np.uint8)
    return codes.reshape(-1), absmax.astype(F32)


def bnb_pack(codes: np.ndarray) -> np.ndarray:
    """bitsandbytes' nibble order: element ``2j`` in the high nibble of byte ``j``."""
    c = np.asarray(codes, dtype=np.uint8).reshape(-1, 2)
    return (c[:, 0] << 4) | (c[:, 1] & 0x0F)

# --- nf4 double quant ---
# bitsandbytes' ``quantize_4bit(..., compress_statistics=True)``: the float32 absmax of every NF4
# block is quantized again, ``offset = absmax.mean()`` and ``quantize_blockwise(absmax - offset,
# blocksize=256)`` with the signed 8-bit dynamic map. The port follows bitsandbytes' CPU kernel
# (csrc/cpu_ops.cpp ``quantize_cpu`` with ``lookup_code_index``, 2025-12 .. 2026-06), element by
# element, deliberately unvectorised so that it shares no code with quantpress' own version.


def _torch_linspace_f32(start: float, end: float, steps: int) -> list[np.float32]:
    """``torch.linspace(start, end, steps, dtype=torch.float32)`` on CPU: ``step = (end -
    start) / (steps - 1)`` in float32, the first half ``start + step*i``, the rest ``end -
    step*(steps-1-i)``."""
    s, e = F32(start), F32(end)
    step = (e - s) / F32(steps - 1)
    return [s + step * F32(i) if i < steps // 2 else e - step * F32(steps - 1 - i) for i in range(steps)]


def bnb_dynamic_map() -> np.ndarray:
    """``create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`` in float32 (the
    ``10**k * means`` products rounded to float32, as torch multiplies a float32 tensor by a
    Python scalar), sorted; 256 values from -0.99296875 to 1."""
    data: list[float] = []
    for i in range(7):
        b = _torch_linspace_f32(0.1, 1.0, 2 ** i + 1)
        means = [(b[k] + b[k + 1]) / F32(2) for k in range(len(b) - 1)]
        scale = F32(10 ** (-6 + i))
        data += [float(scale * m) for m in means] + [float(-(scale * m)) for m in means]
    data += [0.0, 1.0]
    return np.array(sorted(data), dtype=F32)


def bnb_lookup_code_index(code: np.ndarray, value: np.float32) -> int:
    """bitsandbytes' ``lookup_code_index``: clamp to [-1, 1], ``std::lower_bound``, then the nearer
    of the two neighbours (ties to the lower index). NaN (only from ``0 * inf``) gives index 0,
    where ``lower_bound`` puts it."""
    import bisect

    if value != value:
        return 0
    v = min(max(float(value), -1.0), 1.0)
    right = bisect.bisect_left([float(c) for c in code], v)
    if right == 0:
        return 0
    if right == len(code):
        return len(code) - 1
    dist_left = abs(F32(v) - code[right - 1])
    dist_right = abs(code[right] - F32(v))
    return right if dist_right < dist_left else right - 1


def bnb_quantize_blockwise_cpu(a: np.ndarray, code: np.ndarray, blocksize: int) -> tuple[np.ndarray, np.ndarray]:
    """bitsandbytes' CPU ``quantize_blockwise`` (float32): per block (the last may be short)
    ``absmax = max|a|``; an all-zero block gets codes 0, otherwise ``code index of a * (1/absmax)``.
    The kernel first sets ``code[0] = -1`` in place (so the map stored for decoding has it too):
    pass the map with that change made."""
    a = np.asarray(a, dtype=F32).reshape(-1)
    out = np.zeros(a.size, np.uint8)
    absmax = np.zeros(-(-a.size // blocksize), F32)
    for b in range(absmax.size):
        block = a[b * blocksize:(b + 1) * blocksize]
        m = F32(0)
        for v in block:
            m = max(m, abs(v))
        absmax[b] = m
        if m == 0:
            continue
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            inv = F32(1) / m
            for k, v in enumerate(block):
                out[b * blocksize + k] = bnb_lookup_code_index(code, F32(v * inv))
    return out, absmax


def bnb_double_quant(absmax: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.float32, np.ndarray]:
    """``compress_statistics=True`` on NF4's float32 absmax: ``offset`` = the mean (here the float64
    mean rounded to float32; torch's float32 reduction order may differ in the last bit, and the
    offset is stored, so decoding does not depend on it), then blockwise quantization of ``absmax
    - offset`` in blocks of 256 with the CPU map. Returns ``(codes, absmax2, offset, code_map)``."""
    a = np.asarray(absmax, dtype=F32).reshape(-1)
    offset = F32(np.mean(a.astype(np.float64)))
    code = bnb_dynamic_map()
    code[0] = F32(-1.0)
    codes, absmax2 = bnb_quantize_blockwise_cpu(a - offset, code, 256)
    return codes, absmax2, offset, code


def bnb_double_dequant(codes: np.ndarray, absmax2: np.ndarray, offset: np.float32, code: np.ndarray) -> np.ndarray:
    """``dequantize_blockwise`` then ``+= offset``: ``code[q] * absmax2[block] + offset`` in float32."""
    q = np.asarray(codes, dtype=np.uint8).reshape(-1)
    blocks = np.arange(q.size) // 256
    return (code[q] * absmax2[blocks] + F32(offset)).astype(F32)
