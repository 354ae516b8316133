//! AVX2 kernels of HQQ's zero-point iteration, bit-identical to `crate::scalar::hqq`.
//!
//! Eight values at a time in the lane order of `crate::scalar::search::Lanes` (value `i` in lane
//! `i % 8`); tails shorter than eight go through the scalar `element` into the same lanes. The
//! same float32 operations as the scalar code, in the same order: separate multiplies and adds
//! (no FMA), `roundps` to nearest even, `minps`/`maxps` clamps (no NaN can occur: the input is
//! checked finite and `fast_pow` never returns NaN), `floorps` and integer exponent arithmetic
//! for `fast_pow`.

use std::arch::x86_64::*;

use super::require_avx2;
use crate::scalar::hqq::{element, EXP2_POLY, LOG2_POLY, P_MINUS_1};
use crate::scalar::search::{self, Lanes};

/// `scalar::hqq::pass`, eight lanes at a time.
pub fn pass(x: &[f32], s: f32, inv: f32, z: f32, top: f32, rb: f32) -> (f32, f32) {
    require_avx2();
    // SAFETY: `require_avx2` checked the CPU features, the only precondition of `pass_avx2`.
    unsafe { pass_avx2(x, s, inv, z, top, rb) }
}

/// `scalar::search::zero_codes`, eight lanes at a time.
pub fn zero_codes(x: &[f32], inv: f32, zero: f32, top: f32, out: &mut [u8]) {
    require_avx2();
    // SAFETY: `require_avx2` checked the CPU features, the only precondition of `codes_avx2`.
    unsafe { codes_avx2(x, inv, zero, top, out) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn horner(c: &[f32], t: __m256) -> __m256 {
    let mut r = _mm256_set1_ps(c[c.len() - 1]);
    for &k in c[..c.len() - 1].iter().rev() {
        r = _mm256_add_ps(_mm256_mul_ps(r, t), _mm256_set1_ps(k));
    }
    r
}

/// `scalar::hqq::fast_pow` of eight non-negative lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn fast_pow(a: __m256) -> __m256 {
    let bits = _mm256_castps_si256(a);
    let e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32::<23>(bits), _mm256_set1_epi32(127)));
    let m = _mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x7F_FFFF)), _mm256_set1_epi32(0x3F80_0000));
    let t = _mm256_sub_ps(_mm256_castsi256_ps(m), _mm256_set1_ps(1.0));
    let y = _mm256_mul_ps(_mm256_add_ps(e, _mm256_mul_ps(t, horner(&LOG2_POLY, t))), _mm256_set1_ps(P_MINUS_1));
    let fl = _mm256_floor_ps(y);
    let q = horner(&EXP2_POLY, _mm256_sub_ps(y, fl));
    // `fl` is an integer in about -39..=39: `cvttps2dq` is exact, the shifted sum stays normal.
    let shift = _mm256_slli_epi32::<23>(_mm256_cvttps_epi32(fl));
    _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(q), shift))
}

/// Broadcast constants of one iteration.
#[derive(Clone, Copy)]
struct Iter {
    s: __m256,
    inv: __m256,
    z: __m256,
    top: __m256,
    rb: __m256,
}

/// `clamp(round_half_even(x*inv + z), 0, top)` as floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn code_lanes(v: __m256, inv: __m256, z: __m256, top: __m256) -> __m256 {
    let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_add_ps(_mm256_mul_ps(v, inv), z));
    _mm256_min_ps(_mm256_max_ps(r, _mm256_setzero_ps()), top)
}

/// `scalar::hqq::element` of eight lanes: `(|d|, q - (x - we)*inv)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn element_lanes(v: __m256, c: Iter) -> (__m256, __m256) {
    let q = code_lanes(v, c.inv, c.z, c.top);
    let d = _mm256_sub_ps(v, _mm256_mul_ps(_mm256_sub_ps(q, c.z), c.s));
    let sign = _mm256_set1_ps(-0.0);
    let a = _mm256_andnot_ps(sign, d);
    let t = _mm256_sub_ps(a, _mm256_mul_ps(c.rb, fast_pow(a)));
    // t > 0 has a clear sign bit: OR-ing d's sign in is copysign; the mask zeroes t <= 0.
    let keep = _mm256_cmp_ps::<_CMP_GT_OQ>(t, _mm256_setzero_ps());
    let we = _mm256_and_ps(keep, _mm256_or_ps(t, _mm256_and_ps(sign, d)));
    (a, _mm256_sub_ps(q, _mm256_mul_ps(_mm256_sub_ps(v, we), c.inv)))
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pass_avx2(x: &[f32], s: f32, inv: f32, z: f32, top: f32, rb: f32) -> (f32, f32) {
    let c = Iter { s: _mm256_set1_ps(s), inv: _mm256_set1_ps(inv), z: _mm256_set1_ps(z), top: _mm256_set1_ps(top), rb: _mm256_set1_ps(rb) };
    let (mut err, mut zs) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut blocks = x.chunks_exact(8);
    for b in &mut blocks {
        // SAFETY: `b` holds exactly eight floats.
        let v = unsafe { _mm256_loadu_ps(b.as_ptr()) };
        let (a, t) = element_lanes(v, c);
        err = _mm256_add_ps(err, a);
        zs = _mm256_add_ps(zs, t);
    }
    let (mut el, mut zl) = (Lanes::default(), Lanes::default());
    // SAFETY: each array holds eight floats.
    unsafe {
        _mm256_storeu_ps(el.0.as_mut_ptr(), err);
        _mm256_storeu_ps(zl.0.as_mut_ptr(), zs);
    }
    for (i, &v) in blocks.remainder().iter().enumerate() {
        let (a, t) = element(v, s, inv, z, top, rb);
        el.add(i, a);
        zl.add(i, t);
    }
    (el.total(), zl.total())
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn codes_avx2(x: &[f32], inv: f32, zero: f32, top: f32, out: &mut [u8]) {
    let n = x.len().min(out.len());
    let (iv, zv, tv) = (_mm256_set1_ps(inv), _mm256_set1_ps(zero), _mm256_set1_ps(top));
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n <= x.len(), out.len(). Codes are exact integers in 0..=top <= 255.
        unsafe {
            let q = _mm256_cvttps_epi32(code_lanes(_mm256_loadu_ps(x.as_ptr().add(i)), iv, zv, tv));
            let w = _mm_packus_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
            _mm_storel_epi64(out.as_mut_ptr().add(i).cast(), _mm_packus_epi16(w, w));
        }
        i += 8;
    }
    search::zero_codes(&x[i..n], inv, zero, top, &mut out[i..n]);
}
