//! Group grids (scale, zero point, 1/scale) eight groups at a time.
//!
//! Float16 storage uses F16C's round-toward-+infinity conversion, which is exactly the scalar
//! rule "the smallest float16 >= s" for s >= 0 (and gives +infinity past 65504, as the scalar
//! bump from 65504 does).

use std::arch::x86_64::*;

use super::super::GridParams;
use super::scalar;

/// # Safety
/// AVX2 and F16C must be available. Memory accesses stay within the slices.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn grids(mins: &[f32], maxs: &[f32], p: &GridParams, scales: &mut [f32], zeros: &mut [f32], invs: &mut [f32]) -> bool {
    let n = mins.len().min(maxs.len()).min(scales.len()).min(zeros.len()).min(invs.len());
    let whole = n / 8;
    let zero = _mm256_setzero_ps();
    let (top, qm, offset) = (_mm256_set1_ps(p.top), _mm256_set1_ps(p.qm), _mm256_set1_ps(p.offset));
    let (tiny, inf, one) = (_mm256_set1_ps(f32::MIN_POSITIVE), _mm256_set1_ps(f32::INFINITY), _mm256_set1_ps(1.0));
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    let mut overflow = _mm256_setzero_ps();
    for i in 0..whole {
        let at = 8 * i;
        // SAFETY: at + 8 <= whole * 8 <= n, the length of every slice.
        let (gmin, gmax) = (_mm256_loadu_ps(mins.as_ptr().add(at)), _mm256_loadu_ps(maxs.as_ptr().add(at)));
        let (raw, mn) = if p.symmetric {
            let (a, b) = (_mm256_and_ps(gmin, abs_mask), _mm256_and_ps(gmax, abs_mask));
            (_mm256_div_ps(_mm256_blendv_ps(b, a, _mm256_cmp_ps::<_CMP_GT_OQ>(a, b)), qm), zero)
        } else {
            let mn = _mm256_blendv_ps(zero, gmin, _mm256_cmp_ps::<_CMP_LT_OQ>(gmin, zero));
            let mx = _mm256_blendv_ps(zero, gmax, _mm256_cmp_ps::<_CMP_GT_OQ>(gmax, zero));
            (_mm256_div_ps(_mm256_sub_ps(mx, mn), top), mn)
        };
        let small = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(raw, zero), _mm256_cmp_ps::<_CMP_LT_OQ>(raw, tiny));
        let raw = _mm256_blendv_ps(raw, tiny, small);
        let scale = if p.f16 { _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_POS_INF>(raw)) } else { raw };
        overflow = _mm256_or_ps(overflow, _mm256_cmp_ps::<_CMP_EQ_OQ>(scale, inf));
        let positive = _mm256_cmp_ps::<_CMP_GT_OQ>(scale, zero);
        let z = if p.symmetric {
            offset
        } else {
            // -mn / scale, rounded half to even, clamped to [0, top]; max(-0, +0) is +0 and the
            // final + 0 turns any remaining -0 into +0, as the scalar code does.
            let q = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_div_ps(_mm256_sub_ps(zero, mn), scale));
            let clamped = _mm256_add_ps(_mm256_min_ps(_mm256_max_ps(q, zero), top), zero);
            _mm256_blendv_ps(zero, clamped, positive)
        };
        let inv = _mm256_blendv_ps(zero, _mm256_div_ps(one, scale), positive);
        _mm256_storeu_ps(scales.as_mut_ptr().add(at), scale);
        _mm256_storeu_ps(zeros.as_mut_ptr().add(at), z);
        _mm256_storeu_ps(invs.as_mut_ptr().add(at), inv);
    }
    let t = 8 * whole;
    let tail_ok = scalar::grids(&mins[t..n], &maxs[t..n], p, &mut scales[t..n], &mut zeros[t..n], &mut invs[t..n]);
    _mm256_movemask_ps(overflow) == 0 && tail_ok
}
