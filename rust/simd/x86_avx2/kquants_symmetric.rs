//! AVX2 scale searches and dequantizers of Q6_K, Q3_K, IQ4_NL and IQ4_XS, bit-identical to the
//! scalar oracle in `scalar::kquants::symmetric_search` (and so to ggml's C).
//!
//! The searches run eight sub-blocks at once, one per lane: the sub-blocks are transposed so
//! that vector `i` holds value `i` of each, and every sum then runs over `i` in ggml's sequential
//! order. Rounding: where the scalar code clamps `nearest_int(v)` to integer bounds and `v` is
//! bounded by construction (the candidate scales), the kernel rounds `clamp(v)` instead (the same
//! integer: rounding is monotone and fixes integers); where `v` is unbounded (`x·sl2/slx`, `x/d`)
//! it uses the 1.5·2^23 bit trick itself. The IQ4 nearest level is counted with the midpoint
//! rule, which `symmetric_search`'s tests check equals ggml's binary search, on bytes: `floor(2x)`
//! picks a bucket of 16 (a `pshufb` table) holding at most two midpoints.

// SAFETY (whole file): every `unsafe fn` is compiled with `#[target_feature(enable =
// "avx2,fma,f16c")]` and only requires that the CPU has those features, which the safe wrappers
// below assert (`require_avx2`). Each kernel asserts the lengths of its slices first; all loads
// and stores then stay inside them (offsets are listed at each loop).
use std::arch::x86_64::*;

use super::require_avx2;
use crate::scalar::kquants::common::f16_value;
use crate::scalar::kquants::symmetric_search::{SymOps, GROUP_MAX_EPS, KVALUES_IQ4NL};

pub static OPS: SymOps = SymOps { qx8, q3_16, requant, iq4_scales, iq4_pack, q3_pack };

macro_rules! wrap {
    ($name:ident => $inner:ident, ($($arg:ident: $ty:ty),*)) => {
        pub fn $name($($arg: $ty),*) {
            require_avx2();
            // SAFETY: the CPU has AVX2, FMA and F16C (just asserted), the inner function's only
            // precondition beyond the lengths it asserts itself.
            unsafe { $inner($($arg),*) }
        }
    };
}

wrap!(qx8 => qx8_avx2, (x: &[f32], qw: Option<&[f32]>, nmax: i32, scales: &mut [f32], l: &mut [i8]));
wrap!(q3_16 => q3_16_avx2, (x: &[f32], scales: &mut [f32], l: &mut [i8]));
wrap!(requant => requant_avx2, (x: &[f32], d: f32, nmax: i32, l: &mut [i8]));
wrap!(iq4_scales => iq4_scales_avx2, (x: &[f32], w: &[f32], scales: &mut [f32]));
wrap!(iq4_pack => iq4_pack_avx2, (x: &[f32], id: f32, out: &mut [u8]));
wrap!(q3_pack => q3_pack_avx2, (x: &[f32], d: &[f32; 16], l: &[i8], out: &mut [u8]));
wrap!(dequantize_q6_k => dequantize_q6_k_avx2, (src: &[u8], dst: &mut [f32]));
wrap!(dequantize_iq4_nl => dequantize_iq4_nl_avx2, (src: &[u8], dst: &mut [f32]));
wrap!(dequantize_iq4_xs => dequantize_iq4_xs_avx2, (src: &[u8], dst: &mut [f32]));

/// Transposes an 8x8 matrix of rows `r` in place.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn transpose8(r: &mut [__m256; 8]) {
    // t: unpacklo/hi of row pairs (0,1), (2,3), (4,5), (6,7).
    let t = [
        _mm256_unpacklo_ps(r[0], r[1]),
        _mm256_unpackhi_ps(r[0], r[1]),
        _mm256_unpacklo_ps(r[2], r[3]),
        _mm256_unpackhi_ps(r[2], r[3]),
        _mm256_unpacklo_ps(r[4], r[5]),
        _mm256_unpackhi_ps(r[4], r[5]),
        _mm256_unpacklo_ps(r[6], r[7]),
        _mm256_unpackhi_ps(r[6], r[7]),
    ];
    // u[0..4]: columns 0,1,2,3 of rows 0-3 (both 128-bit halves), u[4..8] the same for rows 4-7.
    let u = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
    ];
    for k in 0..4 {
        r[k] = _mm256_permute2f128_ps::<0x20>(u[k], u[k + 4]);
        r[k + 4] = _mm256_permute2f128_ps::<0x31>(u[k], u[k + 4]);
    }
}

/// Loads `n` (a multiple of 8) values of each of 8 rows `stride` apart, transposed: vector `i`
/// holds value `i` of every row.
///
/// # Safety
/// AVX2; `p + 7*stride + n` readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_t<const N: usize>(p: *const f32, stride: usize) -> [__m256; N] {
    let mut out = [_mm256_setzero_ps(); N];
    for c in 0..N / 8 {
        let mut r = [_mm256_setzero_ps(); 8];
        for (j, v) in r.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(p.add(j * stride + 8 * c));
        }
        transpose8(&mut r);
        out[8 * c..8 * c + 8].copy_from_slice(&r);
    }
    out
}

/// Per-lane signed maximum of ggml: the first value of largest magnitude, and its magnitude.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn signed_max(x: &[__m256]) -> (__m256, __m256) {
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let (mut max, mut amax) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for &v in x {
        let a = _mm256_and_ps(v, abs);
        let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(a, amax);
        amax = _mm256_blendv_ps(amax, a, gt);
        max = _mm256_blendv_ps(max, v, gt);
    }
    (max, amax)
}

/// `nearest_int` by ggml's bit trick, as exact integers (any input, NaN included).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nint_epi32(v: __m256) -> __m256i {
    let bits = _mm256_castps_si256(_mm256_add_ps(v, _mm256_set1_ps(12582912.0)));
    _mm256_sub_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0x007f_ffff)), _mm256_set1_epi32(0x0040_0000))
}

/// `round_half_even(clamp(v, lo, hi))` for integer bounds (= `clamp(nearest_int(v))`, v finite).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn round_clamped(v: __m256, lo: __m256, hi: __m256) -> __m256 {
    _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_min_ps(_mm256_max_ps(v, lo), hi))
}

/// Stores 8 rows of 16 codes held as transposed float vectors (`lf[i]` = value `i` of each row).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store_codes_t(mut lf: [__m256; 16], l: &mut [i8]) {
    let (a, b) = lf.split_at_mut(8);
    let (a, b): (&mut [__m256; 8], &mut [__m256; 8]) = (a.try_into().unwrap(), b.try_into().unwrap());
    transpose8(a);
    transpose8(b);
    for k in 0..4 {
        let v = [
            _mm256_cvtps_epi32(a[2 * k]),
            _mm256_cvtps_epi32(b[2 * k]),
            _mm256_cvtps_epi32(a[2 * k + 1]),
            _mm256_cvtps_epi32(b[2 * k + 1]),
        ];
        // Rows 2k and 2k+1, 16 codes each (0..=63, so the saturating packs keep them).
        _mm256_storeu_si256(l.as_mut_ptr().add(32 * k).cast(), super::pack_u8(v));
    }
}

/// `(Σ w·x·l, Σ w·l²)` of each candidate scale in `iscale`, `l` = clamped rounded `iscale·x`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn qx_sums<const N: usize>(
    xs: &[__m256; 16],
    w: &[__m256; 16],
    wx: &[__m256; 16],
    iscale: [__m256; N],
    lo: __m256,
    hi: __m256,
) -> [(__m256, __m256); N] {
    let mut acc = [(_mm256_setzero_ps(), _mm256_setzero_ps()); N];
    for i in 0..16 {
        for n in 0..N {
            let lf = round_clamped(_mm256_mul_ps(iscale[n], xs[i]), lo, hi);
            acc[n].0 = _mm256_add_ps(acc[n].0, _mm256_mul_ps(wx[i], lf));
            acc[n].1 = _mm256_add_ps(acc[n].1, _mm256_mul_ps(_mm256_mul_ps(w[i], lf), lf));
        }
    }
    acc
}

/// `make_qx_quants(16, nmax, .., rmse_type 1, qw)` on 8 sub-blocks of 16.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn qx8_avx2(x: &[f32], qw: Option<&[f32]>, nmax: i32, scales: &mut [f32], l: &mut [i8]) {
    assert!(x.len() >= 128 && l.len() >= 128 && scales.len() >= 8 && qw.is_none_or(|q| q.len() >= 128));
    let xs: [__m256; 16] = load_t(x.as_ptr(), 16);
    let mut w: [__m256; 16] = match qw {
        Some(q) => load_t(q.as_ptr(), 16),
        None => xs,
    };
    let mut wx = xs;
    for i in 0..16 {
        if qw.is_none() {
            w[i] = _mm256_mul_ps(xs[i], xs[i]);
        }
        wx[i] = _mm256_mul_ps(w[i], xs[i]);
    }
    let (max, amax) = signed_max(&xs);
    let (lo, hi) = (_mm256_set1_ps(-nmax as f32), _mm256_set1_ps((nmax - 1) as f32));
    let zero = _mm256_setzero_ps();
    let mut best_iscale = _mm256_div_ps(_mm256_set1_ps(-nmax as f32), max);
    let [(sumlx, suml2)] = qx_sums(&xs, &w, &wx, [best_iscale], lo, hi);
    let nonzero = _mm256_cmp_ps::<_CMP_NEQ_UQ>(suml2, zero);
    let mut scale = _mm256_and_ps(_mm256_div_ps(sumlx, suml2), nonzero);
    let mut best = _mm256_mul_ps(scale, sumlx);
    // Candidates in pairs (their sums are independent); the comparisons stay in ggml's order.
    const STEPS: [i32; 18] = [-9, -8, -7, -6, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    for pair in STEPS.chunks_exact(2) {
        let both = [
            _mm256_div_ps(_mm256_set1_ps(-(nmax as f32 + 0.1 * pair[0] as f32)), max),
            _mm256_div_ps(_mm256_set1_ps(-(nmax as f32 + 0.1 * pair[1] as f32)), max),
        ];
        let r = qx_sums(&xs, &w, &wx, both, lo, hi);
        for ((sumlx, suml2), iscale) in r.into_iter().zip(both) {
            let better = _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_GT_OQ>(suml2, zero),
                _mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_mul_ps(sumlx, sumlx), _mm256_mul_ps(best, suml2)),
            );
            let s = _mm256_div_ps(sumlx, suml2);
            scale = _mm256_blendv_ps(scale, s, better);
            best = _mm256_blendv_ps(best, _mm256_mul_ps(s, sumlx), better);
            best_iscale = _mm256_blendv_ps(best_iscale, iscale, better);
        }
    }
    let live = _mm256_cmp_ps::<_CMP_GE_OQ>(amax, _mm256_set1_ps(GROUP_MAX_EPS));
    let off = _mm256_set1_ps(nmax as f32);
    let mut lf = xs;
    for v in lf.iter_mut() {
        *v = _mm256_and_ps(_mm256_add_ps(round_clamped(_mm256_mul_ps(best_iscale, *v), lo, hi), off), live);
    }
    store_codes_t(lf, l);
    _mm256_storeu_ps(scales.as_mut_ptr(), _mm256_and_ps(scale, live));
}

/// `make_q3_quants(16, 4, .., do_rmse = true)` on the 16 sub-blocks of each super-block in `x`
/// (`x.len() / 256`), two at a time.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3_16_avx2(x: &[f32], scales: &mut [f32], l: &mut [i8]) {
    let n = x.len() / 256;
    assert!(scales.len() >= 16 * n && l.len() >= 256 * n);
    for p in 0..n.div_ceil(2) {
        let (x, scales, l) = (&x[512 * p..], &mut scales[32 * p..], &mut l[512 * p..]);
        if 2 * p + 1 < n {
            q3_groups::<4>(x, scales, l);
        } else {
            q3_groups::<2>(x, scales, l);
        }
    }
}

/// `make_q3_quants` on `G` groups of eight sub-blocks of 16, one per lane, the groups
/// interleaved so that their serial descent chains overlap.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3_groups<const G: usize>(x: &[f32], scales: &mut [f32], l: &mut [i8]) {
    assert!(x.len() >= 128 * G && l.len() >= 128 * G && scales.len() >= 8 * G);
    let zero = _mm256_setzero_ps();
    let mut xs = [[zero; 16]; G];
    let (mut w, mut wx) = ([[zero; 16]; G], [[zero; 16]; G]);
    let mut mx = [(zero, zero); G];
    for g in 0..G {
        xs[g] = load_t(x.as_ptr().add(128 * g), 16);
        mx[g] = signed_max(&xs[g]);
        for i in 0..16 {
            w[g][i] = _mm256_mul_ps(xs[g][i], xs[g][i]);
            wx[g][i] = _mm256_mul_ps(w[g][i], xs[g][i]);
        }
    }
    let (lo, hi) = (_mm256_set1_ps(-4.0), _mm256_set1_ps(3.0));
    let (loi, hii) = (_mm256_set1_epi32(-4), _mm256_set1_epi32(3));
    let mut lv = [[zero; 16]; G];
    let (mut sumlx, mut suml2) = ([zero; G], [zero; G]);
    for g in 0..G {
        let iscale = _mm256_div_ps(_mm256_set1_ps(-4.0), mx[g].0);
        for i in 0..16 {
            lv[g][i] = round_clamped(_mm256_mul_ps(iscale, xs[g][i]), lo, hi);
            sumlx[g] = _mm256_add_ps(sumlx[g], _mm256_mul_ps(wx[g][i], lv[g][i]));
            suml2[g] = _mm256_add_ps(suml2[g], _mm256_mul_ps(_mm256_mul_ps(w[g][i], lv[g][i]), lv[g][i]));
        }
    }
    // A lane whose pass changed nothing is stable (the next pass repeats it exactly), so a
    // group stops once a pass changes none of its lanes, which equals ggml's early exit.
    let mut active = [true; G];
    for _ in 0..5 {
        let mut changed = [_mm256_setzero_ps(); G];
        for i in 0..16 {
            for g in 0..G {
                if !active[g] {
                    continue;
                }
                let (wxi, wi, li) = (wx[g][i], w[g][i], lv[g][i]);
                let slx = _mm256_sub_ps(sumlx[g], _mm256_mul_ps(wxi, li));
                let sl2 = _mm256_sub_ps(suml2[g], _mm256_mul_ps(_mm256_mul_ps(wi, li), li));
                let t = _mm256_div_ps(_mm256_mul_ps(xs[g][i], sl2), slx);
                let nl = _mm256_cvtepi32_ps(_mm256_min_epi32(_mm256_max_epi32(nint_epi32(t), loi), hii));
                let slx2 = _mm256_add_ps(slx, _mm256_mul_ps(wxi, nl));
                let sl2b = _mm256_add_ps(sl2, _mm256_mul_ps(_mm256_mul_ps(wi, nl), nl));
                let ok = _mm256_and_ps(
                    _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(slx, zero), _mm256_cmp_ps::<_CMP_NEQ_UQ>(nl, li)),
                    _mm256_and_ps(
                        _mm256_cmp_ps::<_CMP_GT_OQ>(sl2b, zero),
                        _mm256_cmp_ps::<_CMP_GT_OQ>(
                            _mm256_mul_ps(_mm256_mul_ps(slx2, slx2), suml2[g]),
                            _mm256_mul_ps(_mm256_mul_ps(sumlx[g], sumlx[g]), sl2b),
                        ),
                    ),
                );
                lv[g][i] = _mm256_blendv_ps(li, nl, ok);
                sumlx[g] = _mm256_blendv_ps(sumlx[g], slx2, ok);
                suml2[g] = _mm256_blendv_ps(suml2[g], sl2b, ok);
                changed[g] = _mm256_or_ps(changed[g], ok);
            }
        }
        for g in 0..G {
            active[g] &= _mm256_movemask_ps(changed[g]) != 0;
        }
        if !active.contains(&true) {
            break;
        }
    }
    let off = _mm256_set1_ps(4.0);
    for g in 0..G {
        let live = _mm256_cmp_ps::<_CMP_GE_OQ>(mx[g].1, _mm256_set1_ps(GROUP_MAX_EPS));
        let mut lf = lv[g];
        for v in lf.iter_mut() {
            *v = _mm256_and_ps(_mm256_add_ps(*v, off), live);
        }
        store_codes_t(lf, &mut l[128 * g..]);
        let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(suml2[g], zero);
        let s = _mm256_and_ps(_mm256_and_ps(_mm256_div_ps(sumlx[g], suml2[g]), pos), live);
        _mm256_storeu_ps(scales.as_mut_ptr().add(8 * g), s);
    }
}

/// `nmax + clamp(nearest_int(x / d), -nmax, nmax - 1)` for 16 values.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn requant_avx2(x: &[f32], d: f32, nmax: i32, l: &mut [i8]) {
    assert!(x.len() >= 16 && l.len() >= 16);
    let dv = _mm256_set1_ps(d);
    let (lo, hi, off) = (_mm256_set1_epi32(-nmax), _mm256_set1_epi32(nmax - 1), _mm256_set1_epi32(nmax));
    let q: [__m256i; 2] = std::array::from_fn(|k| {
        let v = _mm256_div_ps(_mm256_loadu_ps(x.as_ptr().add(8 * k)), dv);
        _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(nint_epi32(v), lo), hi), off)
    });
    let w = q.map(|v| _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v)));
    _mm_storeu_si128(l.as_mut_ptr().cast(), _mm_packs_epi16(w[0], w[1]));
}

/// Q3_K's final codes of one super-block (requantized where `d[j] != 0`), packed into the
/// 32 mask bytes and 64 low-pair bytes of `out`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3_pack_avx2(x: &[f32], d: &[f32; 16], l: &[i8], out: &mut [u8]) {
    assert!(x.len() >= 256 && l.len() >= 256 && out.len() >= 96);
    let (lo, hi, off) = (_mm256_set1_epi32(-4), _mm256_set1_epi32(3), _mm256_set1_epi32(4));
    // cb[k]: the codes of values 32k..32k+32 as bytes (sub-blocks 2k and 2k+1).
    let mut cb = [_mm256_setzero_si256(); 8];
    for (k, c) in cb.iter_mut().enumerate() {
        let q: [__m256i; 4] = std::array::from_fn(|t| {
            let (j, at) = (2 * k + t / 2, 32 * k + 8 * t);
            if d[j] != 0.0 {
                let v = _mm256_div_ps(_mm256_loadu_ps(x.as_ptr().add(at)), _mm256_set1_ps(d[j]));
                _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(nint_epi32(v), lo), hi), off)
            } else {
                _mm256_cvtepi8_epi32(_mm_loadl_epi64(l.as_ptr().add(at).cast()))
            }
        });
        *c = super::pack_u8(q);
    }
    // Codes are 0..8 in bytes: shifting 16-bit lanes moves no set bit across a byte boundary
    // once each byte is masked to the bits it keeps.
    let (one, three) = (_mm256_set1_epi8(1), _mm256_set1_epi8(3));
    let mut mask = _mm256_setzero_si256();
    for (b, &c) in cb.iter().enumerate() {
        let bit = _mm256_and_si256(_mm256_srli_epi16::<2>(c), one);
        mask = _mm256_or_si256(mask, _mm256_sll_epi16(bit, _mm_cvtsi32_si128(b as i32)));
    }
    _mm256_storeu_si256(out.as_mut_ptr().cast(), mask);
    for h in 0..2 {
        let mut v = _mm256_setzero_si256();
        for t in 0..4 {
            let pair = _mm256_and_si256(cb[4 * h + t], three);
            v = _mm256_or_si256(v, _mm256_sll_epi16(pair, _mm_cvtsi32_si128(2 * t as i32)));
        }
        _mm256_storeu_si256(out.as_mut_ptr().add(32 + 32 * h).cast(), v);
    }
}

/// Byte tables of the IQ4 level search: for bucket `b` (`floor(2x) + 256` in `32b..32b+32`),
/// `BASE[b]` = 2 + levels whose midpoint lies below the bucket, `T1`/`T2` the in-bucket offsets of
/// up to two midpoints (32: none).
const fn iq4_tables() -> [[i8; 16]; 3] {
    let mut t = [[0i8; 16], [32i8; 16], [32i8; 16]];
    let mut b = 0;
    while b < 16 {
        let mut base = 2;
        let mut j = 1;
        while j < 16 {
            let k = KVALUES_IQ4NL[j - 1] as i32 + KVALUES_IQ4NL[j] as i32 + 256;
            if k < 32 * b as i32 {
                base += 1;
            } else if k < 32 * (b as i32 + 1) {
                let rel = (k - 32 * b as i32) as i8;
                if t[1][b] == 32 {
                    t[1][b] = rel;
                } else {
                    assert!(t[2][b] == 32, "three midpoints in one bucket");
                    t[2][b] = rel;
                }
            }
            j += 1;
        }
        t[0][b] = base;
        b += 1;
    }
    t
}

const IQ4_TABLES: [[i8; 16]; 3] = iq4_tables();

/// Nearest IQ4 level indices of `2x` (four vectors `h`, already doubled), as 32 bytes in the
/// order of `packus(packs(h0, h1), packs(h2, h3))`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq4_idx_bytes(h: [__m256; 4]) -> __m256i {
    const FLOOR: i32 = _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC;
    let mut i = [_mm256_setzero_si256(); 4];
    for k in 0..4 {
        i[k] = _mm256_cvtps_epi32(_mm256_round_ps::<FLOOR>(h[k]));
    }
    let (zero, top, off) = (_mm256_setzero_si256(), _mm256_set1_epi16(511), _mm256_set1_epi16(256));
    let mut k = [_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3])];
    for p in k.iter_mut() {
        *p = _mm256_min_epi16(_mm256_max_epi16(_mm256_add_epi16(*p, off), zero), top);
    }
    let c = _mm256_packus_epi16(_mm256_srli_epi16::<5>(k[0]), _mm256_srli_epi16::<5>(k[1]));
    let m31 = _mm256_set1_epi16(31);
    let r = _mm256_packus_epi16(_mm256_and_si256(k[0], m31), _mm256_and_si256(k[1], m31));
    let base = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(_mm_loadu_si128(IQ4_TABLES[0].as_ptr().cast())), c);
    let t1 = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(_mm_loadu_si128(IQ4_TABLES[1].as_ptr().cast())), c);
    let t2 = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(_mm_loadu_si128(IQ4_TABLES[2].as_ptr().cast())), c);
    // cmpgt is -1 where the midpoint is not reached.
    _mm256_add_epi8(base, _mm256_add_epi8(_mm256_cmpgt_epi8(t1, r), _mm256_cmpgt_epi8(t2, r)))
}

/// The float IQ4 levels of index bytes from [`iq4_idx_bytes`], back in the order of its four
/// input vectors.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq4_levels(idx: __m256i) -> [__m256; 4] {
    let vals = _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast()));
    let q = _mm256_shuffle_epi8(vals, idx);
    let mut out = [_mm256_setzero_ps(); 4];
    for (k, o) in out.iter_mut().enumerate() {
        // Byte 4k+m of each half into the top byte of dword m, then an arithmetic shift.
        let b = (4 * k) as i8;
        #[rustfmt::skip]
        let ctl = _mm256_setr_epi8(
            -1, -1, -1, b, -1, -1, -1, b + 1, -1, -1, -1, b + 2, -1, -1, -1, b + 3,
            -1, -1, -1, b, -1, -1, -1, b + 1, -1, -1, -1, b + 2, -1, -1, -1, b + 3,
        );
        *o = _mm256_cvtepi32_ps(_mm256_srai_epi32::<24>(_mm256_shuffle_epi8(q, ctl)));
    }
    out
}

/// `(Σ w·q·x, Σ w·q²)` of each candidate inverse scale in `id`, `q` the nearest IQ4 level of
/// `id·x`, per lane over 8 transposed blocks of 32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq4_sums<const N: usize>(xs: &[__m256; 32], ws: &[__m256; 32], id: [__m256; N]) -> [(__m256, __m256); N] {
    let mut acc = [(_mm256_setzero_ps(), _mm256_setzero_ps()); N];
    // 2·(id·x) = (2·id)·x exactly, so the doubling costs nothing.
    let mut id2 = id;
    for v in id2.iter_mut() {
        *v = _mm256_add_ps(*v, *v);
    }
    for g in 0..8 {
        for n in 0..N {
            let h = [
                _mm256_mul_ps(id2[n], xs[4 * g]),
                _mm256_mul_ps(id2[n], xs[4 * g + 1]),
                _mm256_mul_ps(id2[n], xs[4 * g + 2]),
                _mm256_mul_ps(id2[n], xs[4 * g + 3]),
            ];
            let q = iq4_levels(iq4_idx_bytes(h));
            for k in 0..4 {
                let wq = _mm256_mul_ps(ws[4 * g + k], q[k]);
                acc[n].0 = _mm256_add_ps(acc[n].0, _mm256_mul_ps(wq, xs[4 * g + k]));
                acc[n].1 = _mm256_add_ps(acc[n].1, _mm256_mul_ps(wq, q[k]));
            }
        }
    }
    acc
}

/// The IQ4 block scale search (`ntry` 7) of `x.len() / 32` blocks (a multiple of 8).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq4_scales_avx2(x: &[f32], w: &[f32], scales: &mut [f32]) {
    assert!(w.len() >= x.len() && scales.len() >= x.len() / 32);
    for g in 0..x.len() / 256 {
        iq4_scales8_avx2(&x[256 * g..], &w[256 * g..], &mut scales[8 * g..]);
    }
}

/// The IQ4 block scale search (`ntry` 7) of 8 blocks of 32.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq4_scales8_avx2(x: &[f32], w: &[f32], scales: &mut [f32]) {
    assert!(x.len() >= 256 && w.len() >= 256 && scales.len() >= 8);
    let xs: [__m256; 32] = load_t(x.as_ptr(), 32);
    let ws: [__m256; 32] = load_t(w.as_ptr(), 32);
    let (max, amax) = signed_max(&xs);
    let zero = _mm256_setzero_ps();
    let v0 = KVALUES_IQ4NL[0] as f32;
    let d0 = _mm256_div_ps(_mm256_xor_ps(max, _mm256_set1_ps(-0.0)), _mm256_set1_ps(v0));
    // The first candidate goes with `itry` = -7, then pairs: their sums are independent chains;
    // the comparisons stay in ggml's order.
    let first = [_mm256_div_ps(_mm256_set1_ps(1.0), d0), _mm256_div_ps(_mm256_set1_ps(-7.0 + v0), max)];
    let r = iq4_sums(&xs, &ws, first);
    let mut d = _mm256_and_ps(_mm256_div_ps(r[0].0, r[0].1), _mm256_cmp_ps::<_CMP_GT_OQ>(r[0].1, zero));
    let mut best = _mm256_mul_ps(d, r[0].0);
    let mut next = r[1];
    let mut itry = -6;
    loop {
        let (sumqx, sumq2) = next;
        let better = _mm256_and_ps(
            _mm256_cmp_ps::<_CMP_GT_OQ>(sumq2, zero),
            _mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_mul_ps(sumqx, sumqx), _mm256_mul_ps(best, sumq2)),
        );
        let s = _mm256_div_ps(sumqx, sumq2);
        d = _mm256_blendv_ps(d, s, better);
        best = _mm256_blendv_ps(best, _mm256_mul_ps(s, sumqx), better);
        if itry > 7 {
            break;
        }
        let pair = [_mm256_div_ps(_mm256_set1_ps(itry as f32 + v0), max), _mm256_div_ps(_mm256_set1_ps((itry + 1) as f32 + v0), max)];
        let r = iq4_sums(&xs, &ws, pair);
        let (sumqx, sumq2) = r[0];
        let better = _mm256_and_ps(
            _mm256_cmp_ps::<_CMP_GT_OQ>(sumq2, zero),
            _mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_mul_ps(sumqx, sumqx), _mm256_mul_ps(best, sumq2)),
        );
        let s = _mm256_div_ps(sumqx, sumq2);
        d = _mm256_blendv_ps(d, s, better);
        best = _mm256_blendv_ps(best, _mm256_mul_ps(s, sumqx), better);
        next = r[1];
        itry += 2;
    }
    let live = _mm256_cmp_ps::<_CMP_GE_OQ>(amax, _mm256_set1_ps(GROUP_MAX_EPS));
    _mm256_storeu_ps(scales.as_mut_ptr(), _mm256_and_ps(d, live));
}

/// `best_index_iq4(id * x)` of 32 values, packed in nibble pairs `(i, i + 16)`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq4_pack_avx2(x: &[f32], id: f32, out: &mut [u8]) {
    assert!(x.len() >= 32 && out.len() >= 16);
    let idv = _mm256_set1_ps(id);
    // Clamping 2x to ±300 keeps every index (the table ends are reached well inside) and sends
    // NaN to the top, as ggml's search does (`min` returns its second operand on NaN).
    let (lo, hi) = (_mm256_set1_ps(-300.0), _mm256_set1_ps(300.0));
    let h: [__m256; 4] = std::array::from_fn(|k| {
        let a = _mm256_mul_ps(idv, _mm256_loadu_ps(x.as_ptr().add(8 * k)));
        _mm256_max_ps(_mm256_min_ps(_mm256_add_ps(a, a), hi), lo)
    });
    let idx = iq4_idx_bytes(h);
    let natural = _mm256_permutevar8x32_epi32(idx, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    // Indices are below 16, so a 16-bit shift by 4 moves no bit across a byte.
    let hi = _mm_slli_epi16::<4>(_mm256_extracti128_si256::<1>(natural));
    _mm_storeu_si128(out.as_mut_ptr().cast(), _mm_or_si128(_mm256_castsi256_si128(natural), hi));
}

/// Signed bytes `q` (16 of them) times `d` into 16 floats.
///
/// # Safety
/// AVX2; `y..y+16` writable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bytes_times(q: __m128i, d: f32, y: *mut f32) {
    let dv = _mm256_set1_ps(d);
    _mm256_storeu_ps(y, _mm256_mul_ps(dv, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))));
    _mm256_storeu_ps(y.add(8), _mm256_mul_ps(dv, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(q)))));
}

/// IQ4 levels of the low and high nibbles of 16 bytes at `qs`, times `d`, into `y..y+32`.
///
/// # Safety
/// AVX2; `qs..qs+16` readable, `y..y+32` writable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq4_block(qs: *const u8, d: f32, y: *mut f32) {
    let vals = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast());
    let b = _mm_loadu_si128(qs.cast());
    let m = _mm_set1_epi8(0x0F);
    bytes_times(_mm_shuffle_epi8(vals, _mm_and_si128(b, m)), d, y);
    bytes_times(_mm_shuffle_epi8(vals, _mm_and_si128(_mm_srli_epi16::<4>(b), m)), d, y.add(16));
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_iq4_nl_avx2(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(18).zip(dst.chunks_exact_mut(32)) {
        iq4_block(b.as_ptr().add(2), f16_value([b[0], b[1]]), y.as_mut_ptr());
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_iq4_xs_avx2(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(136).zip(dst.chunks_exact_mut(256)) {
        let d = f16_value([b[0], b[1]]);
        let sh = u16::from_le_bytes([b[2], b[3]]);
        for ib in 0..8 {
            let ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) as i32 | ((((sh >> (2 * ib)) & 3) as i32) << 4);
            iq4_block(b.as_ptr().add(8 + 16 * ib), d * (ls - 32) as f32, y.as_mut_ptr().add(32 * ib));
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_q6_k_avx2(src: &[u8], dst: &mut [f32]) {
    let m4 = _mm256_set1_epi8(0x0F);
    let m3 = _mm256_set1_epi8(3);
    let c32 = _mm256_set1_epi8(32);
    for (b, y) in src.chunks_exact(210).zip(dst.chunks_exact_mut(256)) {
        let d = f16_value([b[208], b[209]]);
        for half in 0..2 {
            // ql: b[64h..64h+64], qh: b[128+32h..128+32h+32], outputs y[128h..128h+128].
            let ql0 = _mm256_loadu_si256(b.as_ptr().add(64 * half).cast());
            let ql1 = _mm256_loadu_si256(b.as_ptr().add(64 * half + 32).cast());
            let qh = _mm256_loadu_si256(b.as_ptr().add(128 + 32 * half).cast());
            let hi = |s: i32| _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(s)), m3));
            let q = [
                _mm256_or_si256(_mm256_and_si256(ql0, m4), hi(0)),
                _mm256_or_si256(_mm256_and_si256(ql1, m4), hi(2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4), hi(4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4), hi(6)),
            ];
            for (k, &qk) in q.iter().enumerate() {
                let v = _mm256_sub_epi8(qk, c32);
                for s in 0..2 {
                    let sc = b[192 + 8 * half + s + 2 * k] as i8;
                    let part = if s == 0 { _mm256_castsi256_si128(v) } else { _mm256_extracti128_si256::<1>(v) };
                    bytes_times(part, d * sc as f32, y.as_mut_ptr().add(128 * half + 32 * k + 16 * s));
                }
            }
        }
    }
}

wrap!(dequantize_q3_k => dequantize_q3_k_avx2, (src: &[u8], dst: &mut [f32]));

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_q3_k_avx2(src: &[u8], dst: &mut [f32]) {
    let (m3, one, four) = (_mm256_set1_epi8(3), _mm256_set1_epi8(1), _mm256_set1_epi8(4));
    for (b, y) in src.chunks_exact(110).zip(dst.chunks_exact_mut(256)) {
        let d = f16_value([b[108], b[109]]);
        let s = &b[96..108];
        let sc = |j: usize| {
            let lo = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
            (lo | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i32 - 32
        };
        // hmask: b[0..32], qs: b[32..96]; outputs y[128h + 32jj ..][..32].
        let hm = _mm256_loadu_si256(b.as_ptr().cast());
        for h in 0..2 {
            let qs = _mm256_loadu_si256(b.as_ptr().add(32 + 32 * h).cast());
            for jj in 0..4 {
                let q = _mm256_and_si256(_mm256_srl_epi16(qs, _mm_cvtsi32_si128(2 * jj as i32)), m3);
                let hb = _mm256_and_si256(_mm256_srl_epi16(hm, _mm_cvtsi32_si128((4 * h + jj) as i32)), one);
                // q − 4 + 4·high: the C's `q − (high ? 0 : 4)`.
                let v = _mm256_add_epi8(_mm256_sub_epi8(q, four), _mm256_slli_epi16::<2>(hb));
                let y = y.as_mut_ptr().add(128 * h + 32 * jj);
                let is = 8 * h + 2 * jj;
                bytes_times(_mm256_castsi256_si128(v), d * sc(is) as f32, y);
                bytes_times(_mm256_extracti128_si256::<1>(v), d * sc(is + 1) as f32, y.add(16));
            }
        }
    }
}
