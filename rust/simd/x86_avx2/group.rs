//! Round-to-nearest group kernels (any length; tails shorter than 8 go to the scalar code).

// SAFETY: every function here is an `unsafe fn` compiled with `#[target_feature(enable =
// "avx2,fma,f16c")]`. Its preconditions are in its `# Safety` section: the CPU has those features
// (the only callers are the safe wrappers in `mod.rs`, which assert it) and the pointer ranges it
// reads or writes lie inside the slices it is given (each loop bounds its block count by the
// slice lengths, and tails go through the scalar kernels).
use std::arch::x86_64::*;

use super::scalar;
use super::{load32, pack_u8};

/// How far ahead (in values) the kernels prefetch their input ([`range`], [`codes`]) or their
/// output ([`values`], for writing): groups are usually followed by the next ones. Prefetches
/// never fault and the address is only computed, so reaching past the slices is harmless.
const AHEAD: usize = 1024;

/// Smallest (`max` false) or largest lane (`minps`/`maxps`: exact for non-NaN lanes, the sign
/// of a zero result unspecified).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn horizontal(v: __m256, max: bool) -> f32 {
    let f = |a: __m128, b: __m128| if max { _mm_max_ps(a, b) } else { _mm_min_ps(a, b) };
    let m = f(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let m = f(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(f(m, _mm_movehdup_ps(m)))
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn range(x: &[f32]) -> (f32, f32, bool) {
    let n8 = x.len() / 8 * 8;
    if n8 == 0 {
        return scalar::group_range(x);
    }
    let p = x.as_ptr();
    let (mut mn, mut mx) = ([_mm256_set1_ps(f32::INFINITY); 2], [_mm256_set1_ps(f32::NEG_INFINITY); 2]);
    let mut nan = _mm256_setzero_ps();
    let mut i = 0;
    while i + 32 <= n8 {
        // In bounds: i + 32 <= x.len(). The prefetch address is only computed, never read.
        _mm_prefetch(p.wrapping_add(i + AHEAD).cast::<i8>(), _MM_HINT_T0);
        _mm_prefetch(p.wrapping_add(i + AHEAD + 16).cast::<i8>(), _MM_HINT_T0);
        let v = load32(p.add(i));
        mn[0] = _mm256_min_ps(mn[0], _mm256_min_ps(v[0], v[1]));
        mn[1] = _mm256_min_ps(mn[1], _mm256_min_ps(v[2], v[3]));
        mx[0] = _mm256_max_ps(mx[0], _mm256_max_ps(v[0], v[1]));
        mx[1] = _mm256_max_ps(mx[1], _mm256_max_ps(v[2], v[3]));
        // minps/maxps may drop a NaN, so look for one (a pair is unordered if either is NaN).
        let u = _mm256_or_ps(_mm256_cmp_ps(v[0], v[1], _CMP_UNORD_Q), _mm256_cmp_ps(v[2], v[3], _CMP_UNORD_Q));
        nan = _mm256_or_ps(nan, u);
        i += 32;
    }
    while i < n8 {
        // In bounds: i + 8 <= n8 <= x.len().
        let v = _mm256_loadu_ps(p.add(i));
        mn[0] = _mm256_min_ps(mn[0], v);
        mx[0] = _mm256_max_ps(mx[0], v);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        i += 8;
    }
    let mut lo = horizontal(_mm256_min_ps(mn[0], mn[1]), false);
    let mut hi = horizontal(_mm256_max_ps(mx[0], mx[1]), true);
    // Without NaNs, an infinity always reaches the extremes.
    let mut finite = _mm256_movemask_ps(nan) == 0 && lo != f32::NEG_INFINITY && hi != f32::INFINITY;
    if n8 < x.len() {
        let (tl, th, tf) = scalar::group_range(&x[n8..]);
        lo = lo.min(tl);
        hi = hi.max(th);
        finite &= tf;
    }
    (lo, hi, finite)
}

/// Broadcast parameters of [`code_lanes`].
#[derive(Clone, Copy)]
struct Grid {
    inv: __m256,
    zero: __m256,
    lo: __m256,
    hi: __m256,
    zero_i: __m256i,
}

/// `clamp(round_half_even(v*inv) + zero, lo, hi)` as 32-bit lanes in `lo..=hi`, or negative
/// for NaN (which [`pack_u8`] saturates to 0 = `NaN as u8`), given `0 <= lo <= hi <= 255`.
/// `minps`/`maxps` return their second operand when either is NaN, so the operand order below
/// keeps a NaN a NaN, as `f32::clamp` does, and `cvt(t)ps2dq` turns it into `0x8000_0000`.
///
/// `int` (integer `zero` in `0..=65536`): clamps `v*inv` to `[lo - zero, hi - zero]` (exact
/// integers) before rounding, which commutes with the clamp because the bounds are integers, so
/// `cvtps2dq` (round half even) rounds and converts in one step and `+ zero` is integer
/// arithmetic (NaN stays negative). Otherwise: `roundps`, the float add, the clamp, `cvttps2dq`
/// (truncation, exactly Rust's `as u8` on `lo..=hi`), as the scalar code.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn code_lanes(v: __m256, g: Grid, int: bool) -> __m256i {
    let p = _mm256_mul_ps(v, g.inv);
    if int {
        let c = _mm256_max_ps(g.lo, _mm256_min_ps(g.hi, p));
        _mm256_add_epi32(_mm256_cvtps_epi32(c), g.zero_i)
    } else {
        let r = _mm256_round_ps(p, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_cvttps_epi32(_mm256_max_ps(g.lo, _mm256_min_ps(g.hi, _mm256_add_ps(r, g.zero))))
    }
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn codes(x: &[f32], inv: f32, zero: f32, lo: f32, hi: f32, out: &mut [u8]) {
    // Outside 0 <= lo <= hi <= 255 (never the case for RTN) the scalar code decides, panics
    // included.
    if !(lo >= 0.0 && lo <= hi && hi <= 255.0) {
        return scalar::group_codes(x, inv, zero, lo, hi, out);
    }
    // RTN always has integer zero points and bounds.
    let int = (0.0..=65536.0).contains(&zero) && zero.fract() == 0.0 && lo.fract() == 0.0 && hi.fract() == 0.0;
    let (shift, zero_v) = if int { (zero, 0.0) } else { (0.0, zero) };
    let g = Grid {
        inv: _mm256_set1_ps(inv),
        zero: _mm256_set1_ps(zero_v),
        lo: _mm256_set1_ps(lo - shift),
        hi: _mm256_set1_ps(hi - shift),
        zero_i: _mm256_set1_epi32(shift as i32),
    };
    let n = x.len().min(out.len());
    let done = if int { codes_with(x, out, n, g, true) } else { codes_with(x, out, n, g, false) };
    scalar::group_codes(&x[done..n], inv, zero, lo, hi, &mut out[done..n]);
}

/// The codes of the first `n / 8 * 8` values (returned), `n <= x.len(), out.len()`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `n` must not exceed either length.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn codes_with(x: &[f32], out: &mut [u8], n: usize, g: Grid, int: bool) -> usize {
    let (p, o) = (x.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i + 32 <= n {
        // Prefetch addresses are only computed, never dereferenced.
        _mm_prefetch(p.wrapping_add(i + AHEAD).cast::<i8>(), _MM_HINT_T0);
        _mm_prefetch(p.wrapping_add(i + AHEAD + 16).cast::<i8>(), _MM_HINT_T0);
        _mm_prefetch(o.wrapping_add(i + AHEAD).cast::<i8>(), _MM_HINT_ET0);
        // In bounds: i + 32 <= n.
        let v = load32(p.add(i));
        let q = [code_lanes(v[0], g, int), code_lanes(v[1], g, int), code_lanes(v[2], g, int), code_lanes(v[3], g, int)];
        _mm256_storeu_si256(o.add(i).cast(), pack_u8(q));
        i += 32;
    }
    while i + 8 <= n {
        // In bounds: i + 8 <= n. Same saturation as `pack_u8`.
        let q = code_lanes(_mm256_loadu_ps(p.add(i)), g, int);
        let w = _mm_packus_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
        _mm_storel_epi64(o.add(i).cast(), _mm_packus_epi16(w, w));
        i += 8;
    }
    i
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn values(codes: &[u8], scale: f32, zero: f32, out: &mut [f32]) {
    let n = codes.len().min(out.len());
    let (sv, zv) = (_mm256_set1_ps(scale), _mm256_set1_ps(zero));
    let (c, o) = (codes.as_ptr(), out.as_mut_ptr());
    let value8 = |i: usize| {
        // Reads codes[i..i+8] and writes out[i..i+8]: callers keep i + 8 <= n.
        let q = _mm256_cvtepu8_epi32(_mm_loadl_epi64(c.add(i).cast()));
        _mm256_storeu_ps(o.add(i), _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(q), zv), sv));
    };
    let mut i = 0;
    while i + 16 <= n {
        _mm_prefetch(o.wrapping_add(i + AHEAD).cast::<i8>(), _MM_HINT_ET0);
        value8(i);
        value8(i + 8);
        i += 16;
    }
    if i + 8 <= n {
        value8(i);
        i += 8;
    }
    scalar::group_values(&codes[i..n], scale, zero, &mut out[i..n]);
}
