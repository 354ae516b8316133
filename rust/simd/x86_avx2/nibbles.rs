//! 4-bit packing: 32 codes become 16 bytes (code `2j` in the low nibble of byte `j`).

use std::arch::x86_64::*;

use super::scalar;

/// # Safety
/// AVX2 must be available. Memory accesses stay within `codes` and `out`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn pack(codes: &[u8], out: &mut [u8]) {
    let whole = (codes.len() / 32).min(out.len() / 16);
    let low = _mm256_set1_epi8(0x0F);
    // maddubs pairs byte 2j (x1) with byte 2j+1 (x16): one u16 lane = lo | hi << 4 (<= 255).
    let weights = _mm256_set1_epi16(0x1001);
    for i in 0..whole {
        // SAFETY: i < whole, so bytes 32i..32i+32 of `codes` and 16i..16i+16 of `out` exist.
        let v = _mm256_and_si256(_mm256_loadu_si256(codes.as_ptr().add(32 * i) as *const __m256i), low);
        let pairs = _mm256_maddubs_epi16(v, weights);
        let bytes = _mm_packus_epi16(_mm256_castsi256_si128(pairs), _mm256_extracti128_si256::<1>(pairs));
        _mm_storeu_si128(out.as_mut_ptr().add(16 * i) as *mut __m128i, bytes);
    }
    scalar::pack_nibbles(&codes[32 * whole..], &mut out[16 * whole..]);
}

/// # Safety
/// AVX2 must be available. Memory accesses stay within `packed` and `out`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn unpack(packed: &[u8], out: &mut [u8]) {
    let whole = (out.len() / 32).min(packed.len() / 16);
    let low = _mm_set1_epi8(0x0F);
    for i in 0..whole {
        // SAFETY: i < whole, so bytes 16i..16i+16 of `packed` and 32i..32i+32 of `out` exist.
        let b = _mm_loadu_si128(packed.as_ptr().add(16 * i) as *const __m128i);
        let lo = _mm_and_si128(b, low);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(b), low);
        let out_ptr = out.as_mut_ptr().add(32 * i);
        _mm_storeu_si128(out_ptr as *mut __m128i, _mm_unpacklo_epi8(lo, hi));
        _mm_storeu_si128(out_ptr.add(16) as *mut __m128i, _mm_unpackhi_epi8(lo, hi));
    }
    scalar::unpack_nibbles(&packed[16 * whole..], &mut out[32 * whole..]);
}
