//! NF4 codes and values, eight at a time.

// SAFETY: both functions are `unsafe fn`s compiled with `#[target_feature(enable =
// "avx2,fma,f16c")]`; their only precondition is that the CPU has those features (the safe
// wrappers in `mod.rs` assert it). Loads and stores stay inside the slices: the loops run over
// `n / 8` whole groups of eight, where `n` is the shorter length, and tails go to scalar code.
use std::arch::x86_64::*;

use super::scalar::{self, NF4, NF4_MID};

/// # Safety
/// AVX2 must be available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn codes(x: &[f32], inv: f32, out: &mut [u8]) {
    let n = x.len().min(out.len());
    let inv_v = _mm256_set1_ps(inv);
    let mids: [__m256; 15] = std::array::from_fn(|i| _mm256_set1_ps(NF4_MID[i]));
    for i in 0..n / 8 {
        let v = _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(8 * i)), inv_v);
        // Each true compare is -1 in its lane: subtracting counts the thresholds exceeded
        // (NaN compares false everywhere, so it gets code 0, as in the scalar tree).
        let mut count = _mm256_setzero_si256();
        for m in &mids {
            count = _mm256_sub_epi32(count, _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(v, *m)));
        }
        let words = _mm256_packus_epi32(count, count); // lanes 0-3 and 4-7 in the two halves
        let bytes = _mm256_packus_epi16(words, words);
        let lo = _mm256_castsi256_si128(bytes);
        let hi = _mm256_extracti128_si256::<1>(bytes);
        let eight = (_mm_cvtsi128_si32(lo) as u32 as u64) | ((_mm_cvtsi128_si32(hi) as u32 as u64) << 32);
        out.as_mut_ptr().add(8 * i).cast::<u64>().write_unaligned(eight);
    }
    let t = n / 8 * 8;
    scalar::nf4_codes(&x[t..n], inv, &mut out[t..n]);
}

/// # Safety
/// AVX2 must be available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn values(codes: &[u8], scale: f32, out: &mut [f32]) {
    let n = codes.len().min(out.len());
    let table = _mm256_loadu_ps(NF4.as_ptr());
    let table_hi = _mm256_loadu_ps(NF4.as_ptr().add(8));
    let scale_v = _mm256_set1_ps(scale);
    let low = _mm256_set1_epi32(0x0F);
    for i in 0..n / 8 {
        let c = _mm256_and_si256(_mm256_cvtepu8_epi32(_mm_loadl_epi64(codes.as_ptr().add(8 * i).cast())), low);
        // Codes 0-7 from the first half of the table, 8-15 from the second.
        let a = _mm256_permutevar8x32_ps(table, c);
        let b = _mm256_permutevar8x32_ps(table_hi, c);
        let upper = _mm256_castsi256_ps(_mm256_cmpgt_epi32(c, _mm256_set1_epi32(7)));
        _mm256_storeu_ps(out.as_mut_ptr().add(8 * i), _mm256_mul_ps(_mm256_blendv_ps(a, b, upper), scale_v));
    }
    let t = n / 8 * 8;
    scalar::nf4_values(&codes[t..n], scale, &mut out[t..n]);
}
