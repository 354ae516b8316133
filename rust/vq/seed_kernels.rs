//! The per-point kernels of k-means++ seeding (`kmeans_init`).
//!
//! Up to 15 candidate centres sit in the lanes of a [`Panel`]; lane 15 may hold the centre chosen
//! at the previous step, whose distances lower `closest` in the same pass (the "commit" of that
//! centre is folded into the next step's scoring). A distance is `max(0, (|c|^2 - 2 x.c) + |x|^2)`
//! with `x.c` a sequential `mul_add` chain, exactly as `assign` ranks. Per-lane float64 sums of
//! `w_i * min(closest_i, dist)` are kept per block of [`BLOCK`] points, points in order.
//!
//! The plain versions are the oracle; the AVX2 and AVX-512 versions perform the same IEEE
//! operations per lane in the same order (`vminps`/`vmaxps` return their second operand unless
//! the first is smaller/greater, as the plain `if` does), so every level gives the same bits.

// Lane loops index several same-length arrays at once (the shape the vectoriser wants), and the
// kernels take a chunk's slices one by one.
#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]

use crate::simd::Level;

/// Points per block of the sampling sums.
pub const BLOCK: usize = 256;
/// Lanes of a panel; the last one is reserved for the pending centre.
pub const LANES: usize = 16;
pub const PREV: usize = LANES - 1;

/// Candidate centres, dimension-major (`rows[t][l]` = coordinate `t` of lane `l`).
pub struct Panel {
    pub rows: Vec<[f32; LANES]>,
    pub norms: [f32; LANES],
    /// Lane [`PREV`] holds the pending centre: lower `closest` with it first.
    pub prev: bool,
}

impl Panel {
    /// `cands` (at most 15) in lanes 0.., and `prev` in lane 15.
    pub fn new(x: &[f32], d: usize, cands: &[usize], prev: Option<usize>) -> Panel {
        let mut rows = vec![[0f32; LANES]; d];
        let mut norms = [0f32; LANES];
        let lanes = cands.iter().copied().enumerate().chain(prev.map(|p| (PREV, p)));
        for (l, c) in lanes {
            let p = &x[c * d..(c + 1) * d];
            for t in 0..d {
                rows[t][l] = p[t];
            }
            norms[l] = dot(p, p);
        }
        Panel { rows, norms, prev: prev.is_some() }
    }
}

#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0f32, |acc, (x, y)| x.mul_add(*y, acc))
}

/// Squared distance from a dot product and the two squared norms (clamped at 0).
#[inline(always)]
pub fn l2(dot: f32, cn: f32, xn: f32) -> f32 {
    let v = (-2.0f32).mul_add(dot, cn) + xn;
    if v > 0.0 {
        v
    } else {
        0.0
    }
}

/// The 16 lanes' dot products of one point with the panel (sequential `mul_add` over `t`).
#[inline(always)]
fn lanes(xi: &[f32], p: &Panel) -> [f32; LANES] {
    let mut acc = [0f32; LANES];
    for (t, &v) in xi.iter().enumerate() {
        for l in 0..LANES {
            acc[l] = v.mul_add(p.rows[t][l], acc[l]);
        }
    }
    acc
}

/// One point's lanes: update `closest` from lane 15 if the panel has a pending centre, then add
/// `w * min(closest, dist)` per lane.
#[inline(always)]
fn score_point(acc: &[f32; LANES], p: &Panel, xn: f32, closest: &mut f32, wi: f64, sums: &mut [f64; LANES]) {
    let mut dist = [0f32; LANES];
    for l in 0..LANES {
        dist[l] = l2(acc[l], p.norms[l], xn);
    }
    if p.prev && dist[PREV] < *closest {
        *closest = dist[PREV];
    }
    let c = *closest;
    for l in 0..LANES {
        sums[l] += wi * (if dist[l] < c { dist[l] } else { c }) as f64;
    }
}

/// Scores a panel over one chunk of points (a whole number of blocks, except at the end):
/// `sums[b]` gets block `b`'s per-lane sums.
#[inline(always)]
fn score_body(x: &[f32], d: usize, xn: &[f32], closest: &mut [f32], w: Option<&[f32]>, p: &Panel, sums: &mut [[f64; LANES]]) {
    for (b, s) in sums.iter_mut().enumerate() {
        *s = [0.0; LANES];
        for i in b * BLOCK..closest.len().min((b + 1) * BLOCK) {
            score_point(&lanes(&x[i * d..(i + 1) * d], p), p, xn[i], &mut closest[i], w.map_or(1.0, |w| w[i] as f64), s);
        }
    }
}

/// Lowers `closest` with one centre (the first) and refreshes the block sums `w * closest`.
#[inline(always)]
fn commit_body(x: &[f32], d: usize, xn: &[f32], closest: &mut [f32], w: Option<&[f32]>, centre: &[f32], cn: f32, blocks: &mut [f64]) {
    for (i, c) in closest.iter_mut().enumerate() {
        let dist = l2(dot(&x[i * d..(i + 1) * d], centre), cn, xn[i]);
        if dist < *c {
            *c = dist;
        }
    }
    for (b, s) in blocks.iter_mut().enumerate() {
        let r = b * BLOCK..closest.len().min((b + 1) * BLOCK);
        *s = r.map(|i| w.map_or(1.0, |w| w[i] as f64) * closest[i] as f64).sum();
    }
}

/// `out[i] = min(closest[i], |x_i - centre|^2)` for one block (the pending centre's effect).
#[inline(always)]
fn lowered_body(x: &[f32], d: usize, xn: &[f32], closest: &[f32], centre: &[f32], cn: f32, out: &mut [f32]) {
    for (i, o) in out.iter_mut().enumerate() {
        let dist = l2(dot(&x[i * d..(i + 1) * d], centre), cn, xn[i]);
        *o = if dist < closest[i] { dist } else { closest[i] };
    }
}

#[inline(always)]
fn norms_body(x: &[f32], d: usize, xn: &mut [f32]) {
    for (n, xi) in xn.iter_mut().zip(x.chunks_exact(d)) {
        *n = dot(xi, xi);
    }
}

/// A body compiled for each level: plain (the oracle, and non-x86), AVX2+FMA, AVX-512; the same
/// code, so the same IEEE operations (`mul_add` is one fused instruction when FMA is enabled).
macro_rules! levels {
    ($(#[$doc:meta])* $name:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        pub fn $name(level: Level, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                match level {
                    // SAFETY: a level is only in force when the CPU supports it (simd::level).
                    Level::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    Level::Avx2 => return unsafe { avx2($($arg),*) },
                    _ => {}
                }
            }
            let _ = level;
            $body($($arg),*)
        }
    };
}

levels!(
    /// See [`commit_body`].
    commit, commit_body, (x: &[f32], d: usize, xn: &[f32], closest: &mut [f32], w: Option<&[f32]>, centre: &[f32], cn: f32, blocks: &mut [f64]));
levels!(
    /// See [`lowered_body`].
    lowered, lowered_body, (x: &[f32], d: usize, xn: &[f32], closest: &[f32], centre: &[f32], cn: f32, out: &mut [f32]));
levels!(
    /// Squared norms of the rows.
    norms, norms_body, (x: &[f32], d: usize, xn: &mut [f32]));

/// Scores a panel for one chunk of points at `level` (see [`score_body`]).
#[allow(clippy::too_many_arguments)]
pub fn score(level: Level, x: &[f32], d: usize, xn: &[f32], closest: &mut [f32], w: Option<&[f32]>, p: &Panel, sums: &mut [[f64; LANES]]) {
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 {
        // SAFETY: a level is only in force when the CPU supports it (simd::level).
        return unsafe { avx512::score(x, d, xn, closest, w, p, sums) };
    }
    // AVX2 runs the plain body compiled for AVX2 (commit's macro path); explicit 8-wide code
    // gained nothing measurable over it.
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx2 {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(x: &[f32], d: usize, xn: &[f32], closest: &mut [f32], w: Option<&[f32]>, p: &Panel, sums: &mut [[f64; LANES]]) {
            score_body(x, d, xn, closest, w, p, sums)
        }
        // SAFETY: as above.
        return unsafe { avx2(x, d, xn, closest, w, p, sums) };
    }
    let _ = level; // no other level has kernels of its own
    score_body(x, d, xn, closest, w, p, sums)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{lanes, score_point, Panel, BLOCK, LANES, PREV};
    use std::arch::x86_64::*;

    /// Eight points at a time, one 16-lane register each: eight independent FMA chains.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn score(
        x: &[f32],
        d: usize,
        xn: &[f32],
        closest: &mut [f32],
        w: Option<&[f32]>,
        p: &Panel,
        sums: &mut [[f64; LANES]],
    ) {
        const P: usize = 8;
        let n = closest.len();
        assert!(x.len() >= n * d && xn.len() >= n && p.rows.len() >= d && w.is_none_or(|w| w.len() >= n));
        let (m2, zero, lane15) = (_mm512_set1_ps(-2.0), _mm512_setzero_ps(), _mm512_set1_epi32(PREV as i32));
        // SAFETY: the panel norms hold 16 floats.
        let cn = unsafe { _mm512_loadu_ps(p.norms.as_ptr()) };
        for (b, s) in sums.iter_mut().enumerate() {
            let (start, end) = (b * BLOCK, n.min((b + 1) * BLOCK));
            let (mut lo, mut hi) = (_mm512_setzero_pd(), _mm512_setzero_pd());
            let mut i = start;
            while i + P <= end {
                let mut acc = [_mm512_setzero_ps(); P];
                for t in 0..d {
                    // SAFETY: rows has d rows of 16 floats and x holds n * d values (asserted).
                    unsafe {
                        let r = _mm512_loadu_ps(p.rows.get_unchecked(t).as_ptr());
                        for (q, a) in acc.iter_mut().enumerate() {
                            *a = _mm512_fmadd_ps(_mm512_set1_ps(*x.get_unchecked((i + q) * d + t)), r, *a);
                        }
                    }
                }
                for (q, a) in acc.iter().enumerate() {
                    let dist = _mm512_max_ps(_mm512_add_ps(_mm512_fmadd_ps(m2, *a, cn), _mm512_set1_ps(xn[i + q])), zero);
                    let mut c = _mm512_set1_ps(closest[i + q]);
                    if p.prev {
                        c = _mm512_min_ps(_mm512_permutexvar_ps(lane15, dist), c);
                        closest[i + q] = _mm512_cvtss_f32(c);
                    }
                    let m = _mm512_min_ps(dist, c);
                    let wi = _mm512_set1_pd(w.map_or(1.0, |w| w[i + q] as f64));
                    lo = _mm512_add_pd(lo, _mm512_mul_pd(wi, _mm512_cvtps_pd(_mm512_castps512_ps256(m))));
                    hi = _mm512_add_pd(hi, _mm512_mul_pd(wi, _mm512_cvtps_pd(_mm512_extractf32x8_ps(m, 1))));
                }
                i += P;
            }
            // SAFETY: `s` holds 16 float64s.
            unsafe {
                _mm512_storeu_pd(s.as_mut_ptr(), lo);
                _mm512_storeu_pd(s.as_mut_ptr().add(8), hi);
            }
            for i in i..end {
                score_point(&lanes(&x[i * d..(i + 1) * d], p), p, xn[i], &mut closest[i], w.map_or(1.0, |w| w[i] as f64), s);
            }
        }
    }
}
