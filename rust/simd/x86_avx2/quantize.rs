//! GGUF legacy quantization, eight blocks at a time: the per-block maxima are reduced with one
//! transposing reduction, and the scales (`d`, `1/d`, fp16) are computed for the eight blocks in
//! one vector, lane k for block k.

// SAFETY: every function here is an `unsafe fn` compiled with `#[target_feature(enable =
// "avx2,fma,f16c")]`. Its preconditions are in its `# Safety` section: the CPU has those features
// (the only callers are the safe wrappers in `mod.rs`, which assert it) and the pointer ranges it
// reads or writes lie inside the slices it is given (each loop bounds its block count by the
// slice lengths, and tails go through the scalar kernels).
use std::arch::x86_64::*;

use super::scalar::{self, QK};
use super::{load32, pack_u8};

/// The largest float below 1/2: `trunc(p + HALF_DOWN) == round(p)` (half away from zero) for
/// every float `p >= 0`, as the sum reaches the next integer exactly when `p`'s fraction is at
/// least 1/2. (`avx2_tests` checks every `p` in `0..=127` through the Q8_0 kernel.)
const HALF_DOWN: f32 = 0.499_999_97;

/// How far ahead (in floats) the input is prefetched: on large inputs this about doubles the
/// speed (the hardware prefetchers alone do not keep up).
const AHEAD: usize = 1024;

/// Quantizes the 8 blocks (256 floats) at its first argument into `8 * block bytes` at its
/// second, and says whether all 256 values are finite.
type Batch = unsafe fn(*const f32, *mut u8) -> bool;

/// Runs `batch` over the whole blocks of `src` that fit in `dst` (`bb` bytes a block); the last
/// 1 to 7 blocks go through a zero-padded copy (zero blocks are finite, their bytes dropped).
/// The flag covers all of `src`, as in the scalar kernels.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `batch` must read 256 floats and write at most
/// `8 * bb` bytes, with `bb <= 34`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn run(src: &[f32], dst: &mut [u8], bb: usize, batch: Batch) -> bool {
    let nb = (src.len() / QK).min(dst.len() / bb);
    let full = nb / 8 * 8;
    let mut finite = true;
    let mut b = 0;
    while b < full {
        // Prefetches never fault and this address is only computed, never dereferenced, so it
        // may point past the input.
        let ahead = src.as_ptr().wrapping_add(b * QK + AHEAD);
        for line in 0..16 {
            _mm_prefetch(ahead.wrapping_add(16 * line).cast::<i8>(), _MM_HINT_T0);
        }
        // Blocks b..b+8 lie inside both slices (b + 8 <= nb).
        finite &= batch(src.as_ptr().add(b * QK), dst.as_mut_ptr().add(b * bb));
        b += 8;
    }
    if full < nb {
        let mut x = [0f32; 8 * QK];
        let mut y = [0u8; 8 * 34];
        x[..(nb - full) * QK].copy_from_slice(&src[full * QK..nb * QK]);
        finite &= batch(x.as_ptr(), y.as_mut_ptr());
        dst[full * bb..nb * bb].copy_from_slice(&y[..(nb - full) * bb]);
    }
    finite && scalar::all_finite(&src[nb * QK..])
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_0(src: &[f32], dst: &mut [u8]) -> bool {
    run(src, dst, 34, q8_0_batch)
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_0(src: &[f32], dst: &mut [u8]) -> bool {
    run(src, dst, 18, q4_0_batch)
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q5_0(src: &[f32], dst: &mut [u8]) -> bool {
    run(src, dst, 22, q5_0_batch)
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_1(src: &[f32], dst: &mut [u8]) -> bool {
    run(src, dst, 20, q4_1_batch)
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q5_1(src: &[f32], dst: &mut [u8]) -> bool {
    run(src, dst, 24, q5_1_batch)
}

// ---- helpers --------------------------------------------------------------------------------

/// Bit patterns of `|x|`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn abs_bits(x: &[__m256; 4]) -> [__m256i; 4] {
    let m = _mm256_set1_epi32(0x7fff_ffff);
    let a = |v: __m256| _mm256_and_si256(_mm256_castps_si256(v), m);
    [a(x[0]), a(x[1]), a(x[2]), a(x[3])]
}

/// The block at `p` as the bits of its magnitudes, and their lane-wise maximum. For non-NaN
/// magnitudes the integer order of the bits is the float order; non-finite values have bits
/// `>= 0x7f80_0000`, above every finite one.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C and `p..p+32` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn absmax_lanes(p: *const f32) -> __m256i {
    let a = abs_bits(&load32(p));
    _mm256_max_epi32(_mm256_max_epi32(a[0], a[1]), _mm256_max_epi32(a[2], a[3]))
}

/// Whether all 8 lanes of magnitude bits are below `0x7f80_0000` (finite).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn finite_magnitudes(bits: __m256) -> bool {
    let big = _mm256_cmpgt_epi32(_mm256_castps_si256(bits), _mm256_set1_epi32(0x7f7f_ffff));
    _mm256_movemask_ps(_mm256_castsi256_ps(big)) == 0
}

/// Lane-wise `max` (or `min`) of floats or of `i32` bit patterns, selected by the constants.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn extreme(a: __m256, b: __m256, int: bool, max: bool) -> __m256 {
    match (int, max) {
        (true, _) => _mm256_castsi256_ps(_mm256_max_epi32(_mm256_castps_si256(a), _mm256_castps_si256(b))),
        (false, true) => _mm256_max_ps(a, b),
        (false, false) => _mm256_min_ps(a, b),
    }
}

/// Per 128-bit half, the extreme of `unpacklo(a, b)` and `unpackhi(a, b)` in 32-bit (`wide`
/// false) or 64-bit units.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fold(a: __m256, b: __m256, wide: bool, int: bool, max: bool) -> __m256 {
    if wide {
        let (a, b) = (_mm256_castps_pd(a), _mm256_castps_pd(b));
        let (l, h) = (_mm256_unpacklo_pd(a, b), _mm256_unpackhi_pd(a, b));
        extreme(_mm256_castpd_ps(l), _mm256_castpd_ps(h), int, max)
    } else {
        extreme(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b), int, max)
    }
}

/// Lane k = the extreme of the 8 lanes of `v[k]`: a transposing reduction, 21 instructions for
/// 8 vectors. Exact for non-NaN values (float zeros may come back with either sign).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn reduce8(v: &[__m256; 8], int: bool, max: bool) -> __m256 {
    let f = |a, b, wide| fold(a, b, wide, int, max);
    // Per 128-bit half: lanes [v0 v1 v2 v3] (and [v4 v5 v6 v7]) hold that half's extremes.
    let lo = f(f(v[0], v[1], false), f(v[2], v[3], false), true);
    let hi = f(f(v[4], v[5], false), f(v[6], v[7], false), true);
    extreme(_mm256_permute2f128_ps(lo, hi, 0x20), _mm256_permute2f128_ps(lo, hi, 0x31), int, max)
}

/// `scalar::inverse` lane by lane: `1/d`, or 0 where `d == 0`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn inverse8(d: __m256) -> __m256 {
    let inv = _mm256_div_ps(_mm256_set1_ps(1.0), d);
    _mm256_andnot_ps(_mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_EQ_OQ), inv)
}

/// IEEE fp16 bits of the 8 lanes, round to nearest even (what `half::f16::from_f32` does).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16x8(v: __m256) -> [u16; 8] {
    let mut h = [0u16; 8];
    _mm_storeu_si128(h.as_mut_ptr().cast(), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    h
}

/// The 8 lanes of `v`, to be broadcast one by one from memory (a load, no shuffle).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn lanes(v: __m256) -> [f32; 8] {
    let mut a = [0f32; 8];
    _mm256_storeu_ps(a.as_mut_ptr(), v);
    a
}

/// One bit per element of a block (bit j for element j) from four 32-bit lane masks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_mask(c: [__m256; 4]) -> u32 {
    let m = |v: __m256| _mm256_movemask_ps(v) as u32;
    m(c[0]) | (m(c[1]) << 8) | (m(c[2]) << 16) | (m(c[3]) << 24)
}

/// Stores 2 little-endian bytes at `p`.
///
/// # Safety
/// `p..p+2` must be writable.
#[inline(always)]
unsafe fn put_u16(p: *mut u8, v: u16) {
    std::ptr::write_unaligned(p.cast::<[u8; 2]>(), v.to_le_bytes());
}

/// Stores 32 codes (bytes `< 2^bits` in element order) the ggml way at `p`: for 5 bits first
/// the `qh` word (bit j = bit 4 of code j), then 16 bytes `(q[j] & 15) | (q[j+16] << 4)`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `p..p+16` (`p..p+20` for 5 bits) must be writable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn put_codes(p: *mut u8, q: __m256i, five: bool) {
    let (lo, hi) = (_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    let qs = if five {
        // Codes < 32: shifting 16-bit lanes by 3 moves bit 4 of each byte to its bit 7 without
        // crossing bytes; by 4, bit 4 crosses into the next byte, so mask it off.
        let qh = _mm256_movemask_epi8(_mm256_slli_epi16(q, 3)) as u32;
        std::ptr::write_unaligned(p.cast::<[u8; 4]>(), qh.to_le_bytes());
        let hi = _mm_and_si128(_mm_slli_epi16(hi, 4), _mm_set1_epi8(0xf0u8 as i8));
        _mm_or_si128(_mm_and_si128(lo, _mm_set1_epi8(0x0f)), hi)
    } else {
        // Codes < 16: nothing to mask.
        _mm_or_si128(lo, _mm_slli_epi16(hi, 4))
    };
    _mm_storeu_si128(p.add(if five { 4 } else { 0 }).cast(), qs);
}

// ---- Q8_0 -----------------------------------------------------------------------------------

/// Q8_0: `d = amax / 127`, codes `round_half_away(x * (1/d))` as signed bytes.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `sp..sp+256` readable, `dp..dp+272` writable.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_batch(sp: *const f32, dp: *mut u8) -> bool {
    let mut m = [_mm256_setzero_ps(); 8];
    for (k, mk) in m.iter_mut().enumerate() {
        *mk = _mm256_castsi256_ps(absmax_lanes(sp.add(k * QK)));
    }
    let amax = reduce8(&m, true, true);
    let finite = finite_magnitudes(amax);
    let d = _mm256_div_ps(amax, _mm256_set1_ps(127.0));
    // When d > 0 is so small that 1/d is inf, every scalar code is cvtt(NaN or ±inf) = 0, which
    // 1/d = 0 gives as well: zero the infinite inverses so that `id` stays finite below.
    let inv = inverse8(d);
    let id = _mm256_andnot_ps(_mm256_cmp_ps(inv, _mm256_set1_ps(f32::INFINITY), _CMP_EQ_OQ), inv);
    let (h, id) = (f16x8(d), lanes(id));
    let half = _mm256_set1_ps(HALF_DOWN);
    let sign = _mm256_set1_ps(-0.0);
    for k in 0..8 {
        let out = dp.add(k * 34);
        put_u16(out, h[k]);
        let idk = _mm256_broadcast_ss(&id[k]);
        let x = load32(sp.add(k * QK));
        let mut q = [_mm256_setzero_si256(); 4];
        for (qj, &xj) in q.iter_mut().zip(&x) {
            // round_half_away(x * id) on magnitudes (id >= 0, so |x| * id == |x * id| exactly),
            // then x's sign put back on the integer (psignd, which maps -0.0 to 0 as well).
            let p = _mm256_mul_ps(_mm256_andnot_ps(sign, xj), idk);
            let t = _mm256_cvttps_epi32(_mm256_add_ps(p, half));
            *qj = _mm256_sign_epi32(t, _mm256_castps_si256(xj));
        }
        // With a finite id, |x| * id <= amax * (1/d) is 127 plus a few ulps, so every code is in
        // -127..=127 and the signed saturating packs keep exactly the low bytes.
        let b = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(out.add(2).cast(), b);
    }
    finite
}

// ---- Q4_0, Q5_0 -----------------------------------------------------------------------------

/// Q4_0 (`five` false) / Q5_0: `d = max / -8` (`/ -16`) with `max` the signed value of the first
/// element of largest magnitude, codes `min(15, trunc(x/d + 8.5))` (`min(31, trunc(x/d + 16.5))`).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `sp..sp+256` readable, `dp..dp+8*(18 or 22)`
/// writable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sym_batch(sp: *const f32, dp: *mut u8, five: bool) -> bool {
    let (bb, div, add, top) = if five { (22, -16.0, 16.5, 31) } else { (18, -8.0, 8.5, 15) };
    let mut m = [_mm256_setzero_ps(); 8];
    for (k, mk) in m.iter_mut().enumerate() {
        *mk = _mm256_castsi256_ps(absmax_lanes(sp.add(k * QK)));
    }
    let amax = reduce8(&m, true, true);
    let finite = finite_magnitudes(amax);
    let (am, mut best) = (lanes(amax), [0f32; 8]);
    for (k, bk) in best.iter_mut().enumerate() {
        let p = sp.add(k * QK);
        let a = abs_bits(&load32(p));
        let mk = _mm256_castps_si256(_mm256_broadcast_ss(&am[k]));
        let eq = |v: __m256i| _mm256_castsi256_ps(_mm256_cmpeq_epi32(v, mk));
        // Some lane equals the maximum unless NaNs are involved (then the input is an error and
        // any element will do); `& 31` keeps the index in bounds either way.
        let i = block_mask([eq(a[0]), eq(a[1]), eq(a[2]), eq(a[3])]).trailing_zeros() & 31;
        *bk = *p.add(i as usize);
    }
    let d = _mm256_div_ps(_mm256_loadu_ps(best.as_ptr()), _mm256_set1_ps(div));
    let id = inverse8(d);
    let (h, id) = (f16x8(d), lanes(id));
    let addv = _mm256_set1_ps(add);
    for k in 0..8 {
        let out = dp.add(k * bb);
        put_u16(out, h[k]);
        let idk = _mm256_broadcast_ss(&id[k]);
        let x = load32(sp.add(k * QK));
        let mut q = [_mm256_setzero_si256(); 4];
        for (qj, &xj) in q.iter_mut().zip(&x) {
            *qj = _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(xj, idk), addv));
        }
        // For a finite id, |x * id| <= 8 (16) plus a few ulps, so the lanes are in 0..=16
        // (0..=32) and saturation is the low byte. For an infinite id (tiny d) each lane is
        // cvttps2dq(±inf or NaN) = 0x8000_0000, packed to 0 = its low byte.
        let q = _mm256_min_epu8(pack_u8(q), _mm256_set1_epi8(top));
        put_codes(out.add(2), q, five);
    }
    finite
}

/// # Safety
/// As [`sym_batch`] for Q4_0.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0_batch(sp: *const f32, dp: *mut u8) -> bool {
    sym_batch(sp, dp, false)
}

/// # Safety
/// As [`sym_batch`] for Q5_0.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_0_batch(sp: *const f32, dp: *mut u8) -> bool {
    sym_batch(sp, dp, true)
}

// ---- Q4_1, Q5_1 -----------------------------------------------------------------------------

/// Q4_1 (`five` false) / Q5_1: `d = (max - min) / 15` (`/ 31`), `m = min`, codes
/// `min(15, trunc((x - min)/d + 0.5))` (`min(31, ...)`), min and max as NumPy's.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `sp..sp+256` readable, `dp..dp+8*(20 or 24)`
/// writable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn affine_batch(sp: *const f32, dp: *mut u8, five: bool) -> bool {
    let (bb, div, top) = if five { (24, 31.0, 31) } else { (20, 15.0, 15) };
    let (mut lo, mut hi) = ([_mm256_setzero_ps(); 8], [_mm256_setzero_ps(); 8]);
    let mut nan = _mm256_setzero_ps();
    for k in 0..8 {
        let v = load32(sp.add(k * QK));
        lo[k] = _mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3]));
        hi[k] = _mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3]));
        // minps/maxps may drop a NaN, so look for one (a pair is unordered if either is NaN).
        let u = _mm256_or_ps(_mm256_cmp_ps(v[0], v[1], _CMP_UNORD_Q), _mm256_cmp_ps(v[2], v[3], _CMP_UNORD_Q));
        nan = _mm256_or_ps(nan, u);
    }
    let (mut mn, mut mx) = (reduce8(&lo, false, false), reduce8(&hi, false, true));
    // Without NaNs, an infinity always reaches the extremes.
    let ninf = _mm256_cmp_ps(mn, _mm256_set1_ps(f32::NEG_INFINITY), _CMP_EQ_OQ);
    let pinf = _mm256_cmp_ps(mx, _mm256_set1_ps(f32::INFINITY), _CMP_EQ_OQ);
    let bad = _mm256_or_ps(nan, _mm256_or_ps(ninf, pinf));
    let zeros = _mm256_movemask_ps(_mm256_cmp_ps(mn, _mm256_setzero_ps(), _CMP_EQ_OQ));
    if zeros != 0 {
        fix_zero_extremes(sp, zeros, &mut mn, &mut mx);
    }
    let d = _mm256_div_ps(_mm256_sub_ps(mx, mn), _mm256_set1_ps(div));
    let id = inverse8(d);
    let (hd, hm) = (f16x8(d), f16x8(mn));
    let (mn, id) = (lanes(mn), lanes(id));
    let half = _mm256_set1_ps(0.5);
    for k in 0..8 {
        let out = dp.add(k * bb);
        put_u16(out, hd[k]);
        put_u16(out.add(2), hm[k]);
        let (mnk, idk) = (_mm256_broadcast_ss(&mn[k]), _mm256_broadcast_ss(&id[k]));
        let x = load32(sp.add(k * QK));
        let mut q = [_mm256_setzero_si256(); 4];
        for (qj, &xj) in q.iter_mut().zip(&x) {
            *qj = _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(xj, mnk), idk), half));
        }
        // 0 <= x - min <= max - min, so for a finite id the lanes are in 0..=16 (0..=32); an
        // infinite id or an overflowed x - min (inf * 0 when max - min overflows) gives
        // 0x8000_0000, packed to 0 = its low byte. Saturation therefore keeps the low bytes.
        let q = _mm256_min_epu8(pack_u8(q), _mm256_set1_epi8(top));
        put_codes(out.add(4), q, five);
    }
    _mm256_movemask_ps(bad) == 0
}

/// For the blocks whose minimum is a zero (bits of `zeros`): NumPy keeps the sign of the last
/// zero, and a block of zeros has that same element as its maximum. (Otherwise the sign of a
/// zero maximum is moot: `max - min` is then positive.)
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `sp..sp+256` must be readable.
#[cold]
#[inline(never)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fix_zero_extremes(sp: *const f32, zeros: i32, mn: &mut __m256, mx: &mut __m256) {
    let (mut lo, mut hi) = ([0f32; 8], [0f32; 8]);
    _mm256_storeu_ps(lo.as_mut_ptr(), *mn);
    _mm256_storeu_ps(hi.as_mut_ptr(), *mx);
    for k in (0..8).filter(|k| zeros >> k & 1 != 0) {
        let p = sp.add(k * QK);
        let x = load32(p);
        let z = _mm256_setzero_ps();
        let eq = |v: __m256| _mm256_cmp_ps(v, z, _CMP_EQ_OQ);
        let mask = block_mask([eq(x[0]), eq(x[1]), eq(x[2]), eq(x[3])]);
        if mask != 0 {
            lo[k] = *p.add(31 - mask.leading_zeros() as usize);
        }
        if hi[k] == 0.0 {
            hi[k] = lo[k];
        }
    }
    *mn = _mm256_loadu_ps(lo.as_ptr());
    *mx = _mm256_loadu_ps(hi.as_ptr());
}

/// # Safety
/// As [`affine_batch`] for Q4_1.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_1_batch(sp: *const f32, dp: *mut u8) -> bool {
    affine_batch(sp, dp, false)
}

/// # Safety
/// As [`affine_batch`] for Q5_1.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_1_batch(sp: *const f32, dp: *mut u8) -> bool {
    affine_batch(sp, dp, true)
}
