//! GGUF legacy dequantization: one block (32 floats) per iteration.

// SAFETY: every function here is an `unsafe fn` compiled with `#[target_feature(enable =
// "avx2,fma,f16c")]`. Its preconditions are in its `# Safety` section: the CPU has those features
// (the only callers are the safe wrappers in `mod.rs`, which assert it) and the pointer ranges it
// reads or writes lie inside the slices it is given (each loop bounds its block count by the
// slice lengths, and tails go through the scalar kernels).
use std::arch::x86_64::*;

use super::scalar::QK;

/// How far ahead (in floats) the output is prefetched for writing. Without it, the stores of a
/// large output wait for their lines (read for ownership) and run at about half the speed.
const AHEAD: usize = 1024;

/// Prefetches for writing the two cache lines of the output block `AHEAD` floats after `y`
/// (past the end of the output is harmless: prefetches never fault, and the address is only
/// computed, never dereferenced).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn prefetch_out(y: &[f32]) {
    let p = y.as_ptr().wrapping_add(AHEAD);
    _mm_prefetch(p.cast::<i8>(), _MM_HINT_ET0);
    _mm_prefetch(p.wrapping_add(16).cast::<i8>(), _MM_HINT_ET0);
}

/// The float value of fp16 bits in all 8 lanes (exact, like `half::f16::to_f32`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_splat(b: &[u8], at: usize) -> __m256 {
    let bits = u16::from_le_bytes([b[at], b[at + 1]]);
    _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// Stores `d * q` (or, given `m`, `d * q + m`, rounded twice) for the 32 signed bytes of `q`
/// (element order) as 32 floats at `y`. `d * q` and `q * d` are the same IEEE product.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C and `y..y+32` must be writable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store_scaled(q: __m256i, d: __m256, m: Option<__m256>, y: *mut f32) {
    let lo = _mm256_castsi256_si128(q);
    let hi = _mm256_extracti128_si256(q, 1);
    let parts = [lo, _mm_unpackhi_epi64(lo, lo), hi, _mm_unpackhi_epi64(hi, hi)];
    for (k, part) in parts.into_iter().enumerate() {
        let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part));
        let mut r = _mm256_mul_ps(d, f);
        if let Some(m) = m {
            r = _mm256_add_ps(r, m);
        }
        _mm256_storeu_ps(y.add(8 * k), r);
    }
}

/// The 32 nibbles of a Q4/Q5 block in element order (j < 16: low nibbles, then high ones).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(qs: &[u8]) -> __m256i {
    assert!(qs.len() >= 16);
    // In bounds: 16 bytes, just checked.
    let b = _mm_loadu_si128(qs.as_ptr().cast());
    let lo = _mm_and_si128(b, _mm_set1_epi8(0x0f));
    let hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(0x0f));
    _mm256_set_m128i(hi, lo)
}

/// `0x10` in byte j where bit j of the little-endian `qh` word at `b[at..]` is set, else 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn high_bits(b: &[u8], at: usize) -> __m256i {
    let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    // Byte j takes byte j/8 of qh, then tests its bit j%8.
    let spread = _mm256_setr_epi64x(0, 0x0101_0101_0101_0101, 0x0202_0202_0202_0202, 0x0303_0303_0303_0303);
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(qh as i32), spread);
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(34).zip(dst.chunks_exact_mut(QK)) {
        prefetch_out(y);
        // In bounds: bytes 2..34 of the 34-byte block; 32 floats of the 32-float chunk.
        let q = _mm256_loadu_si256(b.as_ptr().add(2).cast());
        store_scaled(q, f16_splat(b, 0), None, y.as_mut_ptr());
    }
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(18).zip(dst.chunks_exact_mut(QK)) {
        prefetch_out(y);
        let q = _mm256_sub_epi8(nibbles(&b[2..]), _mm256_set1_epi8(8));
        store_scaled(q, f16_splat(b, 0), None, y.as_mut_ptr());
    }
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(20).zip(dst.chunks_exact_mut(QK)) {
        prefetch_out(y);
        store_scaled(nibbles(&b[4..]), f16_splat(b, 0), Some(f16_splat(b, 2)), y.as_mut_ptr());
    }
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q5_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(22).zip(dst.chunks_exact_mut(QK)) {
        prefetch_out(y);
        let q = _mm256_or_si256(nibbles(&b[6..]), high_bits(b, 2));
        store_scaled(_mm256_sub_epi8(q, _mm256_set1_epi8(16)), f16_splat(b, 0), None, y.as_mut_ptr());
    }
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q5_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(24).zip(dst.chunks_exact_mut(QK)) {
        prefetch_out(y);
        let q = _mm256_or_si256(nibbles(&b[8..]), high_bits(b, 4));
        store_scaled(q, f16_splat(b, 0), Some(f16_splat(b, 2)), y.as_mut_ptr());
    }
}
