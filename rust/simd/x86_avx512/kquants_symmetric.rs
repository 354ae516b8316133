//! AVX-512 scale searches of IQ4_NL/IQ4_XS and Q3_K, bit-identical to the scalar oracle in
//! `scalar::kquants::symmetric_search` (and so to ggml's C). The other symmetric kernels are the
//! AVX2 ones.
//!
//! As in `x86_avx2::kquants_symmetric`, sixteen blocks run at once, one per lane, over
//! transposed data, so every sum keeps ggml's sequential order. What 512 bits add:
//!
//! * IQ4: the nearest of the 16 non-uniform levels is one 32-entry table look-up. `v =
//!   floor(2x)` (at least -240, which keeps every index; at most 268, see [`iq4_sums`]) picks
//!   bucket `v >> 4`, which holds at most one midpoint of adjacent levels (they are ≥ 23 apart);
//!   the table entry
//!   `E = 16·(midpoints below the bucket) + (16 − midpoint offset) − 16·bucket` makes
//!   `(v + E) >> 4` the level index (the midpoint rule that `symmetric_search`'s tests check
//!   equals ggml's search), and one `vpermps` gives the level.
//! * Q3_K: ggml's first descent pass changes nothing in most sub-blocks, and a pass that changes
//!   nothing leaves the running sums as they were, so it can be evaluated for all 16 values at
//!   once (no serial chain) against the initial sums. Sub-blocks where it finds no change are
//!   final; the others (gathered from the whole batch, so the vectors stay full) run the
//!   sequential descent from the start.

// SAFETY (whole file): every `unsafe fn` is compiled with AVX-512 F/BW/VL/DQ, AVX2, FMA and F16C
// enabled and only requires that the CPU has them, which the safe wrappers assert
// (`require_avx512`). Each kernel asserts the lengths of its slices first; all loads and stores
// then stay inside them (offsets are listed at each loop).
// Per-group state is indexed by group and value in lock step: index loops read clearest.
#![allow(clippy::needless_range_loop)]
use std::arch::x86_64::*;

use super::require_avx512;
use crate::scalar::kquants::symmetric_search::{SymOps, GROUP_MAX_EPS, KVALUES_IQ4NL, Q3_BATCH};
use crate::simd::x86_avx2::kquants_symmetric as avx2;

pub static OPS: SymOps = SymOps { qx8: avx2::qx8, q3_16, requant: avx2::requant, iq4_scales, iq4_pack, q3_pack: avx2::q3_pack };

macro_rules! wrap {
    ($name:ident => $inner:ident, ($($arg:ident: $ty:ty),*)) => {
        pub fn $name($($arg: $ty),*) {
            require_avx512();
            // SAFETY: the CPU has AVX-512 F/BW/VL/DQ, AVX2, FMA and F16C (just asserted), the
            // inner function's only precondition beyond the lengths it asserts itself.
            unsafe { $inner($($arg),*) }
        }
    };
}

wrap!(iq4_scales => iq4_scales_avx512, (x: &[f32], w: &[f32], scales: &mut [f32]));
wrap!(q3_16 => q3_16_avx512, (x: &[f32], scales: &mut [f32], l: &mut [i8]));
wrap!(iq4_pack => iq4_pack_avx512, (x: &[f32], id: f32, out: &mut [u8]));

/// Transposes a 16x16 matrix of rows `r` in place.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn transpose16(r: &mut [__m512; 16]) {
    // t: unpacklo/hi of row pairs; then u[4q + c]: column c (and c+4, c+8, c+12 in the other
    // 128-bit lanes) of rows 4q..4q+4.
    let mut t = [_mm512_setzero_ps(); 16];
    for k in 0..8 {
        t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    let mut u = [_mm512_setzero_ps(); 16];
    for q in 0..4 {
        u[4 * q] = _mm512_shuffle_ps::<0x44>(t[4 * q], t[4 * q + 2]);
        u[4 * q + 1] = _mm512_shuffle_ps::<0xEE>(t[4 * q], t[4 * q + 2]);
        u[4 * q + 2] = _mm512_shuffle_ps::<0x44>(t[4 * q + 1], t[4 * q + 3]);
        u[4 * q + 3] = _mm512_shuffle_ps::<0xEE>(t[4 * q + 1], t[4 * q + 3]);
    }
    // A 4x4 transpose of 128-bit lanes across u[c], u[4+c], u[8+c], u[12+c].
    for c in 0..4 {
        let v0 = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
        let v1 = _mm512_shuffle_f32x4::<0xDD>(u[c], u[4 + c]);
        let v2 = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
        let v3 = _mm512_shuffle_f32x4::<0xDD>(u[8 + c], u[12 + c]);
        r[c] = _mm512_shuffle_f32x4::<0x88>(v0, v2);
        r[c + 8] = _mm512_shuffle_f32x4::<0xDD>(v0, v2);
        r[c + 4] = _mm512_shuffle_f32x4::<0x88>(v1, v3);
        r[c + 12] = _mm512_shuffle_f32x4::<0xDD>(v1, v3);
    }
}

/// Loads `N` (a multiple of 16) values of each of 16 rows `stride` apart, transposed: vector `i`
/// holds value `i` of every row.
///
/// # Safety
/// AVX-512; `p + 15*stride + N` readable.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn load_t<const N: usize>(p: *const f32, stride: usize) -> [__m512; N] {
    let mut out = [_mm512_setzero_ps(); N];
    for c in 0..N / 16 {
        let mut r = [_mm512_setzero_ps(); 16];
        for (j, v) in r.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(p.add(j * stride + 16 * c));
        }
        transpose16(&mut r);
        out[16 * c..16 * c + 16].copy_from_slice(&r);
    }
    out
}

/// Per-lane signed maximum of ggml: the first value of largest magnitude, and its magnitude.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn signed_max(x: &[__m512]) -> (__m512, __m512) {
    let (mut max, mut amax) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for &v in x {
        let a = _mm512_abs_ps(v);
        let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, amax);
        amax = _mm512_mask_mov_ps(amax, gt, a);
        max = _mm512_mask_mov_ps(max, gt, v);
    }
    (max, amax)
}

/// The IQ4 bucket table (see the module doc): entry `k & 31` for bucket `k` in `-15..=16`,
/// covering `floor(2x)` in `16k..16k+16`.
const fn iq4_bucket_table() -> [i32; 32] {
    let mut t = [0i32; 32];
    let mut k = -15i32;
    while k <= 16 {
        let (mut base, mut e) = (0, 0);
        let mut j = 1;
        while j < 16 {
            let m = KVALUES_IQ4NL[j - 1] as i32 + KVALUES_IQ4NL[j] as i32;
            if m < 16 * k {
                base += 1;
            } else if m < 16 * k + 16 {
                assert!(e == 0, "two midpoints in one bucket");
                e = 16 - (m - 16 * k);
            }
            j += 1;
        }
        t[(k & 31) as usize] = 16 * base + e - 16 * k;
        k += 1;
    }
    t
}

const IQ4_BUCKETS: [i32; 32] = iq4_bucket_table();

/// `(Σ w·q·x, Σ w·q²)` of each candidate inverse scale in `id`, `q` the nearest IQ4 level of
/// `id·x`, per lane over 16 transposed blocks of 32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn iq4_sums<const N: usize>(xs: &[__m512; 32], ws: &[__m512; 32], id: [__m512; N]) -> [(__m512, __m512); N] {
    const FLOOR: i32 = _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC;
    let tlo = _mm512_loadu_si512(IQ4_BUCKETS.as_ptr().cast());
    let thi = _mm512_loadu_si512(IQ4_BUCKETS.as_ptr().add(16).cast());
    let levels = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast())));
    // In a live lane (`amax` ≥ GROUP_MAX_EPS) |id·x| ≤ 134·(1 + 2ε), so `floor(2·id·x)` ≤ 268
    // lies in the top bucket; only the bottom needs a clamp. (Dead lanes, where `id` may be
    // infinite, read some table entry; their scale is discarded.)
    let lo = _mm512_set1_epi32(-240);
    let mut acc = [(_mm512_setzero_ps(), _mm512_setzero_ps()); N];
    // 2·(id·x) = (2·id)·x exactly, so the doubling costs nothing.
    let mut id2 = id;
    for v in id2.iter_mut() {
        *v = _mm512_add_ps(*v, *v);
    }
    for i in 0..32 {
        for n in 0..N {
            let v = _mm512_max_epi32(_mm512_cvt_roundps_epi32::<FLOOR>(_mm512_mul_ps(id2[n], xs[i])), lo);
            let e = _mm512_permutex2var_epi32(tlo, _mm512_srai_epi32::<4>(v), thi);
            let q = _mm512_permutexvar_ps(_mm512_srai_epi32::<4>(_mm512_add_epi32(v, e)), levels);
            let wq = _mm512_mul_ps(ws[i], q);
            acc[n].0 = _mm512_add_ps(acc[n].0, _mm512_mul_ps(wq, xs[i]));
            acc[n].1 = _mm512_add_ps(acc[n].1, _mm512_mul_ps(wq, q));
        }
    }
    acc
}

/// `best_index_iq4(id * x)` of 32 values, packed in nibble pairs `(i, i + 16)`: the bucket
/// look-up of [`iq4_sums`], with `2x` clamped to `[-240, 271]` (`id` is any scale here; NaN goes
/// to the top, as in ggml's search, since `min` returns its second operand).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn iq4_pack_avx512(x: &[f32], id: f32, out: &mut [u8]) {
    const FLOOR: i32 = _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC;
    assert!(x.len() >= 32 && out.len() >= 16);
    let tlo = _mm512_loadu_si512(IQ4_BUCKETS.as_ptr().cast());
    let thi = _mm512_loadu_si512(IQ4_BUCKETS.as_ptr().add(16).cast());
    let (lo, hi, idv) = (_mm512_set1_ps(-240.0), _mm512_set1_ps(271.0), _mm512_set1_ps(id));
    let idx: [__m128i; 2] = std::array::from_fn(|k| {
        let a = _mm512_mul_ps(idv, _mm512_loadu_ps(x.as_ptr().add(16 * k)));
        let v = _mm512_cvt_roundps_epi32::<FLOOR>(_mm512_max_ps(_mm512_min_ps(_mm512_add_ps(a, a), hi), lo));
        let e = _mm512_permutex2var_epi32(tlo, _mm512_srai_epi32::<4>(v), thi);
        _mm512_cvtepi32_epi8(_mm512_srai_epi32::<4>(_mm512_add_epi32(v, e)))
    });
    // Indices are below 16, so a 16-bit shift by 4 moves no bit across a byte.
    _mm_storeu_si128(out.as_mut_ptr().cast(), _mm_or_si128(idx[0], _mm_slli_epi16::<4>(idx[1])));
}

/// The IQ4 block scale search of `x.len() / 32` blocks (a multiple of 8): sixteen at a time,
/// a last group of eight with the AVX2 kernel.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn iq4_scales_avx512(x: &[f32], w: &[f32], scales: &mut [f32]) {
    let n = x.len() / 32;
    assert!(w.len() >= x.len() && scales.len() >= n);
    for g in 0..n / 16 {
        iq4_scales16(&x[512 * g..], &w[512 * g..], &mut scales[16 * g..]);
    }
    if !n.is_multiple_of(16) {
        let a = n / 16 * 16;
        avx2::iq4_scales(&x[32 * a..32 * n], &w[32 * a..32 * n], &mut scales[a..n]);
    }
}

/// Keeps `(d, best)` of ggml's scan when candidate sums `(sumqx, sumq2)` beat `best`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn iq4_take(d: &mut __m512, best: &mut __m512, (sumqx, sumq2): (__m512, __m512)) {
    let better = _mm512_kand(
        _mm512_cmp_ps_mask::<_CMP_GT_OQ>(sumq2, _mm512_setzero_ps()),
        _mm512_cmp_ps_mask::<_CMP_GT_OQ>(_mm512_mul_ps(sumqx, sumqx), _mm512_mul_ps(*best, sumq2)),
    );
    let s = _mm512_div_ps(sumqx, sumq2);
    *d = _mm512_mask_mov_ps(*d, better, s);
    *best = _mm512_mask_mov_ps(*best, better, _mm512_mul_ps(s, sumqx));
}

/// The IQ4 block scale search (`ntry` 7) of 16 blocks of 32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn iq4_scales16(x: &[f32], w: &[f32], scales: &mut [f32]) {
    assert!(x.len() >= 512 && w.len() >= 512 && scales.len() >= 16);
    let xs: [__m512; 32] = load_t(x.as_ptr(), 32);
    let ws: [__m512; 32] = load_t(w.as_ptr(), 32);
    let (max, amax) = signed_max(&xs);
    let v0 = KVALUES_IQ4NL[0] as f32;
    let d0 = _mm512_div_ps(_mm512_xor_ps(max, _mm512_set1_ps(-0.0)), _mm512_set1_ps(v0));
    let cand = |t: i32| _mm512_div_ps(_mm512_set1_ps(t as f32 + v0), max);
    // The first candidate goes with `itry` = -7..-5, then fours: their sums are independent chains;
    // the comparisons stay in ggml's order.
    let r = iq4_sums(&xs, &ws, [_mm512_div_ps(_mm512_set1_ps(1.0), d0), cand(-7), cand(-6), cand(-5)]);
    let pos = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(r[0].1, _mm512_setzero_ps());
    let mut d = _mm512_maskz_mov_ps(pos, _mm512_div_ps(r[0].0, r[0].1));
    let mut best = _mm512_mul_ps(d, r[0].0);
    for &c in &r[1..] {
        iq4_take(&mut d, &mut best, c);
    }
    for itry in (-4..=7).step_by(4) {
        for c in iq4_sums(&xs, &ws, [cand(itry), cand(itry + 1), cand(itry + 2), cand(itry + 3)]) {
            iq4_take(&mut d, &mut best, c);
        }
    }
    let live = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(amax, _mm512_set1_ps(GROUP_MAX_EPS));
    _mm512_storeu_ps(scales.as_mut_ptr(), _mm512_maskz_mov_ps(live, d));
}

/// `make_q3_quants(16, 4, .., do_rmse = true)` on the 16 sub-blocks of each super-block in `x`,
/// in batches of up to [`Q3_BATCH`] super-blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn q3_16_avx512(x: &[f32], scales: &mut [f32], l: &mut [i8]) {
    let n = x.len() / 256;
    assert!(scales.len() >= 16 * n && l.len() >= 256 * n);
    for b in (0..n).step_by(Q3_BATCH) {
        let m = (n - b).min(Q3_BATCH);
        q3_batch(&x[256 * b..256 * (b + m)], &mut scales[16 * b..16 * (b + m)], &mut l[256 * b..256 * (b + m)]);
    }
}

/// One batch: the change-free first pass, two super-blocks at a time, then the sequential
/// descent of the sub-blocks it flags, gathered into full vectors, up to six groups of 16 at a
/// time (their serial chains overlap).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn q3_batch(x: &[f32], scales: &mut [f32], l: &mut [i8]) {
    let n = x.len() / 256;
    assert!(n <= Q3_BATCH && scales.len() >= 16 * n && l.len() >= 256 * n);
    let mut slow = [0usize; 16 * Q3_BATCH];
    let mut k = 0;
    for p in (0..n).step_by(2) {
        let (xp, sp, lp) = (&x[256 * p..], &mut scales[16 * p..], &mut l[256 * p..]);
        let flags = if p + 1 < n { q3_first_pass::<2>(xp, sp, lp) } else { [q3_first_pass::<1>(xp, sp, lp)[0], 0] };
        for (g, mut flagged) in flags.into_iter().enumerate() {
            while flagged != 0 {
                slow[k] = 16 * (p + g) + flagged.trailing_zeros() as usize;
                k += 1;
                flagged &= flagged - 1;
            }
        }
    }
    if k == 0 {
        return;
    }
    // The flagged sub-blocks side by side, padded with zero sub-blocks (no descent, discarded)
    // to whole groups of 16.
    let mut buf = [0f32; 256 * Q3_BATCH];
    for (j, &s) in slow[..k].iter().enumerate() {
        buf[16 * j..16 * j + 16].copy_from_slice(&x[16 * s..16 * s + 16]);
    }
    let groups = k.div_ceil(16);
    let (mut bs, mut bl) = ([0f32; 16 * Q3_BATCH], [0i8; 256 * Q3_BATCH]);
    let mut g = 0;
    while g < groups {
        let (xg, sg, lg) = (&buf[256 * g..], &mut bs[16 * g..], &mut bl[256 * g..]);
        g += match groups - g {
            1 => q3_descend::<1>(xg, sg, lg),
            2 => q3_descend::<2>(xg, sg, lg),
            3 => q3_descend::<3>(xg, sg, lg),
            4 => q3_descend::<4>(xg, sg, lg),
            5 => q3_descend::<5>(xg, sg, lg),
            _ => q3_descend::<6>(xg, sg, lg),
        };
    }
    for (j, &s) in slow[..k].iter().enumerate() {
        scales[s] = bs[j];
        l[16 * s..16 * s + 16].copy_from_slice(&bl[16 * j..16 * j + 16]);
    }
}

/// The descent state of `G` groups of 16 sub-blocks, one per lane, over transposed values.
struct Q3<const G: usize> {
    xs: [[__m512; 16]; G],
    w: [[__m512; 16]; G],
    wx: [[__m512; 16]; G],
    lv: [[__m512; 16]; G],
    sumlx: [__m512; G],
    suml2: [__m512; G],
    amax: [__m512; G],
}

impl<const G: usize> Q3<G> {
    /// `make_q3_quants` up to its descent (sums from zero): weights `x²`, codes of `-4 / max`,
    /// their sums.
    /// The groups are interleaved so that their serial sums overlap.
    ///
    /// # Safety
    /// AVX-512; `x..x + 256·G` readable.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
    unsafe fn load(&mut self, x: *const f32) {
        let zero = _mm512_setzero_ps();
        let q = self;
        let mut iscale = [zero; G];
        for g in 0..G {
            q.xs[g] = load_t(x.add(256 * g), 16);
            let (max, a) = signed_max(&q.xs[g]);
            q.amax[g] = a;
            iscale[g] = _mm512_div_ps(_mm512_set1_ps(-4.0), max);
        }
        let (lo, hi) = (_mm512_set1_ps(-4.0), _mm512_set1_ps(3.0));
        for i in 0..16 {
            for g in 0..G {
                let x = q.xs[g][i];
                q.w[g][i] = _mm512_mul_ps(x, x);
                q.wx[g][i] = _mm512_mul_ps(q.w[g][i], x);
                // round(clamp(v)) = clamp(nearest_int(v)) for these bounded candidates (see AVX2).
                let v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(iscale[g], x), lo), hi);
                let l = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
                q.lv[g][i] = l;
                q.sumlx[g] = _mm512_add_ps(q.sumlx[g], _mm512_mul_ps(q.wx[g][i], l));
                q.suml2[g] = _mm512_add_ps(q.suml2[g], _mm512_mul_ps(_mm512_mul_ps(q.w[g][i], l), l));
            }
        }
    }

    /// All zero (then [`Q3::load`]).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
    unsafe fn zero() -> Self {
        let z = _mm512_setzero_ps();
        Q3 { xs: [[z; 16]; G], w: [[z; 16]; G], wx: [[z; 16]; G], lv: [[z; 16]; G], sumlx: [z; G], suml2: [z; G], amax: [z; G] }
    }

    /// The descent step of value `i` of group `g` against sums `(sumlx, suml2)`: the lanes where
    /// ggml takes the new code, the code and the sums it would move to.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
    unsafe fn step(&self, g: usize, i: usize, sumlx: __m512, suml2: __m512) -> (__mmask16, __m512, __m512, __m512) {
        let zero = _mm512_setzero_ps();
        let (wxi, wi, li) = (self.wx[g][i], self.w[g][i], self.lv[g][i]);
        let slx = _mm512_sub_ps(sumlx, _mm512_mul_ps(wxi, li));
        let sl2 = _mm512_sub_ps(suml2, _mm512_mul_ps(_mm512_mul_ps(wi, li), li));
        let t = _mm512_div_ps(_mm512_mul_ps(self.xs[g][i], sl2), slx);
        // ggml's nearest_int bit trick, then the clamp, as integers.
        let bits = _mm512_castps_si512(_mm512_add_ps(t, _mm512_set1_ps(12582912.0)));
        let q = _mm512_sub_epi32(_mm512_and_si512(bits, _mm512_set1_epi32(0x007f_ffff)), _mm512_set1_epi32(0x0040_0000));
        let nl = _mm512_cvtepi32_ps(_mm512_min_epi32(_mm512_max_epi32(q, _mm512_set1_epi32(-4)), _mm512_set1_epi32(3)));
        let slx2 = _mm512_add_ps(slx, _mm512_mul_ps(wxi, nl));
        let sl2b = _mm512_add_ps(sl2, _mm512_mul_ps(_mm512_mul_ps(wi, nl), nl));
        let gate = _mm512_kand(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(slx, zero), _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(nl, li));
        let ok = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(
            _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(gate, sl2b, zero),
            _mm512_mul_ps(_mm512_mul_ps(slx2, slx2), suml2),
            _mm512_mul_ps(_mm512_mul_ps(sumlx, sumlx), sl2b),
        );
        (ok, nl, slx2, sl2b)
    }

    /// One sequential descent pass of the groups in `active`: the lanes it changed per group.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
    unsafe fn pass(&mut self, active: [bool; G]) -> [__mmask16; G] {
        let mut changed = [0; G];
        for i in 0..16 {
            for g in 0..G {
                if active[g] {
                    let (ok, nl, slx2, sl2b) = self.step(g, i, self.sumlx[g], self.suml2[g]);
                    self.lv[g][i] = _mm512_mask_mov_ps(self.lv[g][i], ok, nl);
                    self.sumlx[g] = _mm512_mask_mov_ps(self.sumlx[g], ok, slx2);
                    self.suml2[g] = _mm512_mask_mov_ps(self.suml2[g], ok, sl2b);
                    changed[g] |= ok;
                }
            }
        }
        changed
    }

    /// The first descent pass evaluated against the initial sums, for every value at once (they
    /// stay unchanged while the pass changes nothing): per group the lanes where it would change
    /// a code.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
    unsafe fn would_change(&self) -> [__mmask16; G] {
        let mut flagged = [0; G];
        for i in 0..16 {
            for g in 0..G {
                flagged[g] |= self.step(g, i, self.sumlx[g], self.suml2[g]).0;
            }
        }
        flagged
    }

    /// Stores codes (`l[256g + 16j..][..16]` for sub-block `j` of group `g`) and scales
    /// (`scales[16g + j]`), zero for an all-but-zero sub-block; returns the mask of live lanes.
    ///
    /// # Safety
    /// AVX-512; `scales.len() >= 16·G`, `l.len() >= 256·G`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
    unsafe fn store(&self, scales: &mut [f32], l: &mut [i8]) -> [__mmask16; G] {
        let off = _mm512_set1_ps(4.0);
        let mut lives = [0; G];
        for g in 0..G {
            let live = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(self.amax[g], _mm512_set1_ps(GROUP_MAX_EPS));
            let mut c = self.lv[g];
            for v in c.iter_mut() {
                *v = _mm512_maskz_mov_ps(live, _mm512_add_ps(*v, off));
            }
            transpose16(&mut c);
            for (j, v) in c.iter().enumerate() {
                // Row j: the 16 codes (0..=7) of sub-block j.
                _mm_storeu_si128(l.as_mut_ptr().add(256 * g + 16 * j).cast(), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(*v)));
            }
            let pos = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(self.suml2[g], _mm512_setzero_ps());
            let s = _mm512_maskz_mov_ps(pos & live, _mm512_div_ps(self.sumlx[g], self.suml2[g]));
            _mm512_storeu_ps(scales.as_mut_ptr().add(16 * g), s);
            lives[g] = live;
        }
        lives
    }
}

/// `make_q3_quants` of the 16 sub-blocks of each of `G` super-blocks as far as its first
/// descent pass (see [`Q3::would_change`]). Stores every sub-block's initial codes and scale
/// (final where the pass changes nothing) and returns per super-block the mask of live
/// sub-blocks where it would change a code.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn q3_first_pass<const G: usize>(x: &[f32], scales: &mut [f32], l: &mut [i8]) -> [u16; G] {
    assert!(x.len() >= 256 * G && scales.len() >= 16 * G && l.len() >= 256 * G);
    let mut q = Q3::<G>::zero();
    q.load(x.as_ptr());
    let mut flagged = q.would_change();
    for (f, live) in flagged.iter_mut().zip(q.store(scales, l)) {
        *f &= live;
    }
    flagged
}

/// The whole `make_q3_quants` (up to five sequential passes; a group stops after a pass that
/// changes none of its lanes, which equals ggml's per-sub-block exit since a lane whose pass
/// changed nothing repeats it exactly) of `G` groups of 16 sub-blocks; returns `G`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn q3_descend<const G: usize>(x: &[f32], scales: &mut [f32], l: &mut [i8]) -> usize {
    assert!(x.len() >= 256 * G && scales.len() >= 16 * G && l.len() >= 256 * G);
    let mut q = Q3::<G>::zero();
    q.load(x.as_ptr());
    let mut active = [true; G];
    for _ in 0..5 {
        let changed = q.pass(active);
        for (a, c) in active.iter_mut().zip(changed) {
            *a &= c != 0;
        }
        if !active.contains(&true) {
            break;
        }
    }
    q.store(scales, l);
    G
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bucket table gives the midpoint-rule index (`#{j : v >= val[j-1] + val[j]}`) of every
    /// `v = floor(2x)` the kernel can meet, `-240..=268` (and up to the top of its bucket).
    #[test]
    fn bucket_table_gives_the_midpoint_rule() {
        for v in -240i32..272 {
            let want = (1..16).filter(|&j| v >= KVALUES_IQ4NL[j - 1] as i32 + KVALUES_IQ4NL[j] as i32).count() as i32;
            assert_eq!((v + IQ4_BUCKETS[((v >> 4) & 31) as usize]) >> 4, want, "{v}");
        }
    }

    /// ggml's `make_q3_quants` up to the end of its first descent pass: whether it changed a code.
    fn first_pass_changes(x: &[f32]) -> bool {
        use crate::scalar::kquants::symmetric_search::{nint, signed_max, GROUP_MAX_EPS};
        let (max, amax) = signed_max(x);
        if amax < GROUP_MAX_EPS {
            return false;
        }
        let iscale = -4.0 / max;
        let l: Vec<i32> = x.iter().map(|&v| nint(iscale * v).clamp(-4, 3)).collect();
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for (&v, &q) in x.iter().zip(&l) {
            sumlx += v * v * v * q as f32;
            suml2 += v * v * q as f32 * q as f32;
        }
        x.iter().zip(&l).any(|(&v, &old)| {
            let (w, old) = (v * v, old as f32);
            let slx = sumlx - w * v * old;
            let sl2 = suml2 - w * old * old;
            let new_l = nint(v * sl2 / slx).clamp(-4, 3);
            let (slx2, sl2b) = (slx + w * v * new_l as f32, sl2 + w * new_l as f32 * new_l as f32);
            slx > 0.0 && new_l != old as i32 && sl2b > 0.0 && slx2 * slx2 * suml2 > sumlx * sumlx * sl2b
        })
    }

    /// The change-free first pass flags exactly the sub-blocks where ggml's first pass (which,
    /// until its first change, runs on the initial sums) changes a code; on random data that is
    /// a part of them, so the level tests in `symmetric_search` run both paths.
    #[test]
    fn first_pass_flags_the_sub_blocks_that_descend() {
        if crate::simd::detected_level() != crate::simd::Level::Avx512 {
            return; // no AVX-512 kernel on this CPU to check
        }
        let mut s = 99u64;
        let x: Vec<f32> = (0..256 * 16)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        let mut flagged = 0;
        for (g, sb) in x.chunks(256).enumerate() {
            let (mut sc, mut l) = ([0f32; 16], [0i8; 256]);
            // SAFETY: the CPU has AVX-512 (checked above); the slices have the lengths asserted.
            let f = unsafe { q3_first_pass::<1>(sb, &mut sc, &mut l) }[0];
            for j in 0..16 {
                assert_eq!(f >> j & 1 == 1, first_pass_changes(&sb[16 * j..16 * j + 16]), "super-block {g} sub-block {j}");
            }
            flagged += f.count_ones();
        }
        assert!((17..200).contains(&flagged), "{flagged} of 256 flagged");
    }
}
