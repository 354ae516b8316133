//! AVX2 kernels of the "scale + min" K-quants (Q2_K, Q4_K, Q5_K), bit-identical to the scalar
//! oracle in `scalar::kquants::affine_search` and the scalar dequantizers.
//!
//! The sub-block search (`make_qkx2_quants`) runs eight sub-blocks at once, one per lane: the
//! sub-blocks are transposed so that vector `i` holds value `i` of each, and every lane then does
//! the scalar sequence exactly (same products, sums in the same order, the same `nearest_int`
//! bit trick, masks where the scalar code branches). No FMA is used: products and sums are
//! separate instructions, as in the scalar code.

// SAFETY: every `unsafe fn` here is compiled with `#[target_feature(enable = "avx2,fma,f16c")]`;
// the safe wrappers call them only after `super::require_avx2()` has checked the CPU, and each
// states which slice bounds it relies on (checked by the wrapper's asserts or the loop bounds).
// The lane loops index several arrays (values, weights, codes) in lockstep.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::{pack_u8, require_avx2};
use crate::scalar::kquants::affine_search::{scale_min_k4, AffineOps, ScalarOps, Search};
use crate::scalar::kquants::common::f16_value;

/// The AVX2 implementation of [`AffineOps`].
pub struct Avx2Ops;

impl AffineOps for Avx2Ops {
    fn search8(x: &[f32], w: &[f32], p: &Search, l: &mut [u8], scales: &mut [f32; 8], mins: &mut [f32; 8]) {
        require_avx2();
        let n = x.len() / 8;
        assert!(x.len() == 8 * n && w.len() >= 8 * n && l.len() >= 8 * n && (1..=32).contains(&n));
        // SAFETY: AVX2 checked above; `search8` reads `x[..8n]`, `w[..8n]` and writes `l[..8n]`,
        // all in bounds by the assert.
        unsafe { search8(x, w, n, p, l, scales, mins) }
    }

    fn requant(x: &[f32], d: f32, dm: f32, nmax: i32, l: &mut [u8]) {
        require_avx2();
        let n = x.len().min(l.len()) / 8 * 8;
        // SAFETY: AVX2 checked above; `requant8` touches `x[..n]` and `l[..n]` only.
        unsafe { requant8(&x[..n], d, dm, nmax, &mut l[..n]) };
        ScalarOps::requant(&x[n..], d, dm, nmax, &mut l[n..]);
    }
}

/// ggml's `nearest_int` bit trick on eight lanes (see `affine_search::nearest_int_any`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nearest(v: __m256) -> __m256i {
    let b = _mm256_castps_si256(_mm256_add_ps(v, _mm256_set1_ps(12582912.0)));
    _mm256_sub_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x007f_ffff)), _mm256_set1_epi32(0x0040_0000))
}

/// `clamp(nearest_int(iscale * (x - min)), 0, nmax)` as floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn code(iscale: __m256, x: __m256, min: __m256, nmax: __m256i) -> __m256 {
    let q = nearest(_mm256_mul_ps(iscale, _mm256_sub_ps(x, min)));
    _mm256_cvtepi32_ps(_mm256_min_epi32(_mm256_max_epi32(q, _mm256_setzero_si256()), nmax))
}

/// `w * err(scale * q + min - x)` with `err` = abs (`mad`) or square.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn werr(w: __m256, scale: __m256, q: __m256, min: __m256, x: __m256, mad: bool) -> __m256 {
    let diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale, q), min), x);
    let e = if mad { _mm256_andnot_ps(_mm256_set1_ps(-0.0), diff) } else { _mm256_mul_ps(diff, diff) };
    _mm256_mul_ps(w, e)
}

/// Per-lane state of the search.
struct Lanes {
    x: [__m256; 32],
    w: [__m256; 32],
    n: usize,
    max: __m256,
    sum_w: __m256,
    sum_x: __m256,
}

/// One search step at `iscale` from the current `min` (as in ggml, a step that improves the
/// fit moves the min the later steps start from): the codes (into `laux`), the fitted scale and
/// min, and the weighted error; `ok` is the `D > 0` mask.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn step(s: &Lanes, iscale: __m256, cur_min: __m256, p: &Search, laux: &mut [__m256; 32]) -> (__m256, __m256, __m256, __m256) {
    let nmax = _mm256_set1_epi32(p.nmax);
    let (mut sl, mut sl2, mut sxl) = (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
    for i in 0..s.n {
        let q = code(iscale, s.x[i], cur_min, nmax);
        laux[i] = q;
        let wq = _mm256_mul_ps(s.w[i], q);
        sl = _mm256_add_ps(sl, wq);
        sl2 = _mm256_add_ps(sl2, _mm256_mul_ps(wq, q));
        sxl = _mm256_add_ps(sxl, _mm256_mul_ps(wq, s.x[i]));
    }
    let d = _mm256_sub_ps(_mm256_mul_ps(s.sum_w, sl2), _mm256_mul_ps(sl, sl));
    let ok = _mm256_cmp_ps::<_CMP_GT_OQ>(d, _mm256_setzero_ps());
    let mut scale = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(s.sum_w, sxl), _mm256_mul_ps(s.sum_x, sl)), d);
    let mut min = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sl2, s.sum_x), _mm256_mul_ps(sl, sxl)), d);
    let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(min, _mm256_setzero_ps());
    min = _mm256_blendv_ps(min, _mm256_setzero_ps(), pos);
    scale = _mm256_blendv_ps(scale, _mm256_div_ps(sxl, sl2), pos);
    let mut cur = _mm256_setzero_ps();
    for i in 0..s.n {
        cur = _mm256_add_ps(cur, werr(s.w[i], scale, laux[i], min, s.x[i], p.use_mad));
    }
    (ok, scale, min, cur)
}

/// # Safety
/// AVX2 must be available; `1 <= n <= 32`, `x` and `w` hold `8n` values and `l` at least `8n`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn search8(x: &[f32], w: &[f32], n: usize, p: &Search, l: &mut [u8], scales: &mut [f32; 8], mins: &mut [f32; 8]) {
    let mut s = Lanes {
        x: [_mm256_setzero_ps(); 32],
        w: [_mm256_setzero_ps(); 32],
        n,
        max: _mm256_setzero_ps(),
        sum_w: _mm256_setzero_ps(),
        sum_x: _mm256_setzero_ps(),
    };
    let idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(n as i32));
    for i in 0..n {
        // SAFETY: lane j reads element j*n + i < 8n of `x` and `w`.
        s.x[i] = _mm256_i32gather_ps::<4>(x.as_ptr().add(i), idx);
        s.w[i] = _mm256_i32gather_ps::<4>(w.as_ptr().add(i), idx);
    }
    let (mut min, mut max) = (s.x[0], s.x[0]);
    s.sum_w = s.w[0];
    s.sum_x = _mm256_mul_ps(s.sum_w, s.x[0]);
    for i in 1..n {
        min = _mm256_min_ps(s.x[i], min);
        max = _mm256_max_ps(s.x[i], max);
        s.sum_w = _mm256_add_ps(s.sum_w, s.w[i]);
        s.sum_x = _mm256_add_ps(s.sum_x, _mm256_mul_ps(s.w[i], s.x[i]));
    }
    let zero = _mm256_setzero_ps();
    min = _mm256_blendv_ps(min, zero, _mm256_cmp_ps::<_CMP_GT_OQ>(min, zero));
    let flat = _mm256_cmp_ps::<_CMP_EQ_OQ>(max, min);
    let min0 = min;
    s.max = max;
    let nmaxf = p.nmax as f32;
    let iscale = _mm256_div_ps(_mm256_set1_ps(nmaxf), _mm256_sub_ps(max, min));
    let mut scale = _mm256_div_ps(_mm256_set1_ps(1.0), iscale);
    let mut best = zero;
    let mut lbest = [zero; 32];
    let nmax = _mm256_set1_epi32(p.nmax);
    for i in 0..n {
        lbest[i] = code(iscale, s.x[i], min, nmax);
        best = _mm256_add_ps(best, werr(s.w[i], scale, lbest[i], min, s.x[i], p.use_mad));
    }
    let mut laux = [zero; 32];
    for is in 0..=p.nstep {
        let range = _mm256_sub_ps(s.max, min);
        let iscale = _mm256_div_ps(_mm256_set1_ps(p.rmin + p.rdelta * is as f32 + nmaxf), range);
        let (ok, this_scale, this_min, cur) = step(&s, iscale, min, p, &mut laux);
        let better = _mm256_and_ps(ok, _mm256_cmp_ps::<_CMP_LT_OQ>(cur, best));
        if _mm256_movemask_ps(better) != 0 {
            for i in 0..n {
                lbest[i] = _mm256_blendv_ps(lbest[i], laux[i], better);
            }
            best = _mm256_blendv_ps(best, cur, better);
            scale = _mm256_blendv_ps(scale, this_scale, better);
            min = _mm256_blendv_ps(min, this_min, better);
        }
    }
    _mm256_storeu_ps(scales.as_mut_ptr(), _mm256_blendv_ps(scale, zero, flat));
    let neg_min = _mm256_xor_ps(_mm256_blendv_ps(min, min0, flat), _mm256_set1_ps(-0.0));
    _mm256_storeu_ps(mins.as_mut_ptr(), neg_min);
    let mut lanes = [0i32; 8];
    for i in 0..n {
        let q = _mm256_andnot_si256(_mm256_castps_si256(flat), _mm256_cvtps_epi32(lbest[i]));
        _mm256_storeu_si256(lanes.as_mut_ptr().cast(), q);
        for (j, &v) in lanes.iter().enumerate() {
            l[j * n + i] = v as u8;
        }
    }
}

/// # Safety
/// AVX2 must be available; `x.len() == l.len()` is a multiple of 8.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn requant8(x: &[f32], d: f32, dm: f32, nmax: i32, l: &mut [u8]) {
    let (vd, vm, top) = (_mm256_set1_ps(d), _mm256_set1_ps(dm), _mm256_set1_epi32(nmax));
    let one = |v: __m256| {
        let q = nearest(_mm256_div_ps(_mm256_add_ps(v, vm), vd));
        _mm256_min_epi32(_mm256_max_epi32(q, _mm256_setzero_si256()), top)
    };
    let whole = x.len() / 32;
    for c in 0..whole {
        // SAFETY: c < whole, so x[32c..32c+32] and l[32c..32c+32] are in bounds.
        let p = x.as_ptr().add(32 * c);
        let q = [0, 8, 16, 24].map(|k| one(_mm256_loadu_ps(p.add(k))));
        _mm256_storeu_si256(l.as_mut_ptr().add(32 * c).cast(), pack_u8(q));
    }
    let mut lanes = [0i32; 8];
    for c in (32 * whole..x.len()).step_by(8) {
        // SAFETY: c + 8 <= x.len() (a multiple of 8).
        _mm256_storeu_si256(lanes.as_mut_ptr().cast(), one(_mm256_loadu_ps(x.as_ptr().add(c))));
        for k in 0..8 {
            l[c + k] = lanes[k] as u8;
        }
    }
}

/// Stores `d * q - m` for the 8 bytes of `q` (already the codes) at `y`.
///
/// # Safety
/// AVX2 must be available and `y..y+8` writable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn affine8(q: __m128i, d: __m256, m: __m256, y: *mut f32) {
    let v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q));
    _mm256_storeu_ps(y, _mm256_sub_ps(_mm256_mul_ps(d, v), m));
}

/// Stores `d * q - m` for 32 code bytes at `y`.
///
/// # Safety
/// AVX2 must be available and `y..y+32` writable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn affine32(q: __m256i, d: f32, m: f32, y: *mut f32) {
    // Prefetch the output's lines 4 KiB ahead for writing (as the legacy dequantizers do): the
    // stores of a large output otherwise wait for their lines. Prefetches never fault and the
    // address is only computed, never dereferenced.
    let ahead = y.wrapping_add(1024);
    _mm_prefetch(ahead.cast::<i8>(), _MM_HINT_ET0);
    _mm_prefetch(ahead.wrapping_add(16).cast::<i8>(), _MM_HINT_ET0);
    let (d, m) = (_mm256_set1_ps(d), _mm256_set1_ps(m));
    let lo = _mm256_castsi256_si128(q);
    let hi = _mm256_extracti128_si256::<1>(q);
    affine8(lo, d, m, y);
    affine8(_mm_srli_si128::<8>(lo), d, m, y.add(8));
    affine8(hi, d, m, y.add(16));
    affine8(_mm_srli_si128::<8>(hi), d, m, y.add(24));
}

/// The eight `(d·sc, dmin·m)` pairs of a Q4_K/Q5_K block header.
#[inline]
fn sub_scales(x: &[u8]) -> [(f32, f32); 8] {
    let (d, min) = (f16_value([x[0], x[1]]), f16_value([x[2], x[3]]));
    std::array::from_fn(|j| {
        let (sc, m) = scale_min_k4(j, &x[4..16]);
        (d * sc as f32, min * m as f32)
    })
}

/// Q4_K dequantization, identical to `scalar::kquants::q4_k::dequantize`.
pub fn dequantize_q4_k(src: &[u8], dst: &mut [f32]) {
    require_avx2();
    // SAFETY: AVX2 checked above; the kernel zips whole blocks of both slices.
    unsafe { dequantize_q4_k_inner(src, dst) }
}

/// # Safety
/// AVX2 must be available.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_q4_k_inner(src: &[u8], dst: &mut [f32]) {
    let mask = _mm256_set1_epi8(0x0F);
    for (x, y) in src.chunks_exact(144).zip(dst.chunks_exact_mut(256)) {
        let s = sub_scales(x);
        for c in 0..4 {
            // SAFETY: bytes 16+32c..48+32c < 144 of the block, floats 64c..64c+64 < 256.
            let q = _mm256_loadu_si256(x.as_ptr().add(16 + 32 * c).cast());
            let out = y.as_mut_ptr().add(64 * c);
            affine32(_mm256_and_si256(q, mask), s[2 * c].0, s[2 * c].1, out);
            affine32(_mm256_and_si256(_mm256_srli_epi16::<4>(q), mask), s[2 * c + 1].0, s[2 * c + 1].1, out.add(32));
        }
    }
}

/// Q5_K dequantization, identical to `scalar::kquants::q5_k::dequantize`.
pub fn dequantize_q5_k(src: &[u8], dst: &mut [f32]) {
    require_avx2();
    // SAFETY: AVX2 checked above; the kernel zips whole blocks of both slices.
    unsafe { dequantize_q5_k_inner(src, dst) }
}

/// # Safety
/// AVX2 must be available.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_q5_k_inner(src: &[u8], dst: &mut [f32]) {
    let mask = _mm256_set1_epi8(0x0F);
    let zero = _mm256_setzero_si256();
    let sixteen = _mm256_set1_epi8(16);
    for (x, y) in src.chunks_exact(176).zip(dst.chunks_exact_mut(256)) {
        let s = sub_scales(x);
        // SAFETY: qh is bytes 16..48 of the 176-byte block.
        let qh = _mm256_loadu_si256(x.as_ptr().add(16).cast());
        for c in 0..4 {
            // SAFETY: bytes 48+32c..80+32c <= 176, floats 64c..64c+64 <= 256.
            let q = _mm256_loadu_si256(x.as_ptr().add(48 + 32 * c).cast());
            let (b1, b2) = (_mm256_set1_epi8(1 << (2 * c)), _mm256_set1_epi8((2u8 << (2 * c)) as i8));
            let h1 = _mm256_andnot_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, b1), zero), sixteen);
            let h2 = _mm256_andnot_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, b2), zero), sixteen);
            let out = y.as_mut_ptr().add(64 * c);
            affine32(_mm256_or_si256(_mm256_and_si256(q, mask), h1), s[2 * c].0, s[2 * c].1, out);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), mask);
            affine32(_mm256_or_si256(hi, h2), s[2 * c + 1].0, s[2 * c + 1].1, out.add(32));
        }
    }
}

/// Q2_K dequantization, identical to `scalar::kquants::q2_k::dequantize`.
pub fn dequantize_q2_k(src: &[u8], dst: &mut [f32]) {
    require_avx2();
    // SAFETY: AVX2 checked above; the kernel zips whole blocks of both slices.
    unsafe { dequantize_q2_k_inner(src, dst) }
}

/// # Safety
/// AVX2 must be available.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_q2_k_inner(src: &[u8], dst: &mut [f32]) {
    let three = _mm256_set1_epi8(3);
    for (x, y) in src.chunks_exact(84).zip(dst.chunks_exact_mut(256)) {
        let (d, min) = (f16_value([x[80], x[81]]), f16_value([x[82], x[83]]));
        for half in 0..2 {
            // SAFETY: bytes 16+32h..48+32h of the 84-byte block.
            let q = _mm256_loadu_si256(x.as_ptr().add(16 + 32 * half).cast());
            for j in 0..4 {
                let codes = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * j as i32)), three);
                let (lo, hi) = (_mm256_castsi256_si128(codes), _mm256_extracti128_si256::<1>(codes));
                for (k, part) in [lo, hi].into_iter().enumerate() {
                    let sc = x[8 * half + 2 * j + k];
                    let (dl, ml) = (_mm256_set1_ps(d * (sc & 0xF) as f32), _mm256_set1_ps(min * (sc >> 4) as f32));
                    // SAFETY: floats 128h + 32j + 16k .. +16 < 256.
                    let out = y.as_mut_ptr().add(128 * half + 32 * j + 16 * k);
                    _mm_prefetch(out.wrapping_add(1024).cast::<i8>(), _MM_HINT_ET0);
                    affine8(part, dl, ml, out);
                    affine8(_mm_srli_si128::<8>(part), dl, ml, out.add(8));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand_vals(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
            })
            .collect()
    }

    #[test]
    fn search8_matches_scalar() {
        if !crate::simd::supported(crate::simd::Level::Avx2) {
            return;
        }
        let p = Search { nmax: 15, rmin: -1.0, rdelta: 0.1, nstep: 20, use_mad: false };
        for seed in 0..50 {
            let x = rand_vals(seed, 256);
            let w: Vec<f32> = x.iter().map(|v| 0.3 + v.abs()).collect();
            let (mut l1, mut l2) = ([0u8; 256], [0u8; 256]);
            let (mut s1, mut m1, mut s2, mut m2) = ([0.0; 8], [0.0; 8], [0.0; 8], [0.0; 8]);
            ScalarOps::search8(&x, &w, &p, &mut l1, &mut s1, &mut m1);
            Avx2Ops::search8(&x, &w, &p, &mut l2, &mut s2, &mut m2);
            assert_eq!(s1.map(f32::to_bits), s2.map(f32::to_bits), "scales {seed}");
            assert_eq!(m1.map(f32::to_bits), m2.map(f32::to_bits), "mins {seed}");
            assert_eq!(l1, l2, "codes {seed}");
            let (mut r1, mut r2) = ([0u8; 32], [0u8; 32]);
            ScalarOps::requant(&x[..32], 0.07, 0.3, 15, &mut r1);
            Avx2Ops::requant(&x[..32], 0.07, 0.3, 15, &mut r2);
            assert_eq!(r1, r2);
        }
    }
}
