//! The per-point kernels of k-means++ seeding (`kmeans_init`).
//!
//! Up to 15 candidate centres are the lanes of a [`Panel`]; one more lane may hold the centre
//! chosen at the previous step, whose distances lower `closest` in the same pass (the "commit" of
//! that centre is folded into the next step's scoring). Only the lanes a block's ball test leaves
//! (`seed_blocks`) are scored. A distance is `max(0, (|c|^2 - 2 x.c) + |x|^2)` with `x.c` a
//! sequential `mul_add` chain, exactly as `assign` ranks. Per-lane float64 sums of
//! `w_i * min(closest_i, dist)` are kept per block of [`BLOCK`] points, in a fixed order: point
//! `i` of a block adds to partial `i % 16`, and the 16 partials are added in order.
//!
//! The plain versions are the oracle. The AVX-512 score kernel keeps 16 points in the lanes of a
//! register (one FMA chain per candidate, so no lane is wasted whatever the number of candidates)
//! and one float64 partial per lane, which is the plain order; it performs the same IEEE
//! operations per point (`vminps`/`vmaxps` return their second operand unless the first is
//! smaller/greater, as the plain `if` does), so every level gives the same bits.

// Lane loops index several same-length arrays at once (the shape the vectoriser wants), and the
// kernels take a chunk's slices one by one.
#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]

use crate::simd::{per_level, Level};

/// Points per block of the sampling sums.
pub const BLOCK: usize = 256;
/// Lanes of a panel at most: up to [`PREV`] candidates and the pending centre.
pub const LANES: usize = 16;
pub const PREV: usize = LANES - 1;

/// Candidate centres, one lane each, row-major (`cols[l * d..(l + 1) * d]`); the pending centre,
/// if any, in the last lane.
pub struct Panel {
    pub d: usize,
    pub cols: Vec<f32>,
    pub norms: Vec<f32>,
    /// Number of candidates (lanes `0..cands`); at most [`PREV`].
    pub cands: usize,
    /// Lane `cands` holds the pending centre: lower `closest` with it first.
    pub prev: bool,
}

impl Panel {
    /// `cands` (at most 15) in lanes 0.., and `prev` after them.
    pub fn new(x: &[f32], d: usize, cands: &[usize], prev: Option<usize>) -> Panel {
        assert!(cands.len() <= PREV);
        let all: Vec<usize> = cands.iter().copied().chain(prev).collect();
        let cols: Vec<f32> = all.iter().flat_map(|&c| x[c * d..(c + 1) * d].iter().copied()).collect();
        let norms = cols.chunks_exact(d).map(|c| dot(c, c)).collect();
        Panel { d, cols, norms, cands: cands.len(), prev: prev.is_some() }
    }

    /// Number of lanes (candidates and pending centre).
    pub fn lanes(&self) -> usize {
        self.cands + self.prev as usize
    }

    /// Lane `l`'s coordinates.
    pub fn col(&self, l: usize) -> &[f32] {
        &self.cols[l * self.d..(l + 1) * self.d]
    }
}

/// The sum of a block's float64 terms in the order every kernel follows: term `i` (counted from
/// the block's start) goes to partial `i % PART`, and the partials are added in order. (The
/// AVX-512 kernel keeps points in lanes: one partial per lane.)
pub const PART: usize = 16;

#[inline(always)]
fn fold_parts(parts: &[f64; PART]) -> f64 {
    parts.iter().fold(0.0, |a, &p| a + p)
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

/// Scores the lanes of a panel set in `active` (bit `l` for lane `l`; the pending centre's lane
/// is `p.cands`) over one chunk of points (a whole number of blocks, except at the end):
/// `sums[b][l]` gets block `b`'s sum of `w * min(closest, dist_l)` for every active candidate
/// `l`, after `closest` is lowered with the pending centre if its lane is active. Other lanes
/// are left as they are (the caller knows them: no point of the block can come nearer).
#[inline(always)]
fn score_body(x: &[f32], d: usize, xn: &[f32], closest: &mut [f32], w: Option<&[f32]>, p: &Panel, active: u32, sums: &mut [[f64; LANES]]) {
    let on = |l: usize| active >> l & 1 == 1;
    for (b, s) in sums.iter_mut().enumerate() {
        let mut parts = [[0f64; PART]; LANES];
        for i in b * BLOCK..closest.len().min((b + 1) * BLOCK) {
            let xi = &x[i * d..(i + 1) * d];
            if p.prev && on(p.cands) {
                let dist = l2(dot(xi, p.col(p.cands)), p.norms[p.cands], xn[i]);
                if dist < closest[i] {
                    closest[i] = dist;
                }
            }
            let (c, wi) = (closest[i], w.map_or(1.0, |w| w[i] as f64));
            for l in (0..p.cands).filter(|&l| on(l)) {
                let dist = l2(dot(xi, p.col(l)), p.norms[l], xn[i]);
                parts[l][(i - b * BLOCK) % PART] += wi * (if dist < c { dist } else { c }) as f64;
            }
        }
        for l in (0..p.cands).filter(|&l| on(l)) {
            s[l] = fold_parts(&parts[l]);
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
        let mut parts = [0f64; PART];
        for i in b * BLOCK..closest.len().min((b + 1) * BLOCK) {
            parts[(i - b * BLOCK) % PART] += w.map_or(1.0, |w| w[i] as f64) * closest[i] as f64;
        }
        *s = fold_parts(&parts);
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

per_level!(
    /// See [`commit_body`].
    pub commit, commit_body, (x: &[f32], d: usize, xn: &[f32], closest: &mut [f32], w: Option<&[f32]>, centre: &[f32], cn: f32, blocks: &mut [f64]));
per_level!(
    /// See [`lowered_body`].
    pub lowered_plain, lowered_body, (x: &[f32], d: usize, xn: &[f32], closest: &[f32], centre: &[f32], cn: f32, out: &mut [f32]));

/// `out[i] = min(closest[i], |x_i - centre|^2)` for the points of one block (see
/// [`lowered_body`]); `xt` is the block transposed by [`transpose`] (read at AVX-512 only, where
/// 16 points share a register: the sampling that needs this runs on one thread).
pub fn lowered(level: Level, x: &[f32], xt: &[f32], d: usize, xn: &[f32], closest: &[f32], centre: &[f32], cn: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 {
        let n = out.len();
        assert!(xt.len() >= n.div_ceil(PART) * PART * d && xn.len() >= n && closest.len() >= n && centre.len() == d);
        // SAFETY: a level is only in force when the CPU supports it (simd::level); the assert
        // gives every bound the kernel reads within.
        return unsafe { avx512::lowered(xt, d, xn, closest, centre, cn, out) };
    }
    let _ = xt;
    lowered_plain(level, x, d, xn, closest, centre, cn, out)
}
per_level!(
    /// Squared norms of the rows.
    pub norms, norms_body, (x: &[f32], d: usize, xn: &mut [f32]));

/// Points of a chunk transposed in groups of 16 (`xt[(g * d + t) * 16 + q]` = coordinate `t` of
/// point `16 g + q`), the tail padded with zeros: what the AVX-512 kernel streams.
/// `xt` must hold `n.div_ceil(16) * 16 * d` zeros.
pub fn transpose_into(x: &[f32], d: usize, xt: &mut [f32]) {
    for (i, xi) in x.chunks_exact(d).enumerate() {
        let (g, q) = (i / PART, i % PART);
        for (t, &v) in xi.iter().enumerate() {
            xt[(g * d + t) * PART + q] = v;
        }
    }
}

/// Scores a panel for one chunk of points at `level` (see [`score_body`]); `xt` is the chunk
/// transposed by [`transpose`] (read by the AVX-512 kernel only).
#[allow(clippy::too_many_arguments)]
pub fn score(
    level: Level,
    x: &[f32],
    xt: &[f32],
    d: usize,
    xn: &[f32],
    closest: &mut [f32],
    w: Option<&[f32]>,
    p: &Panel,
    active: u32,
    sums: &mut [[f64; LANES]],
) {
    let active = active & ((1u32 << p.lanes()) - 1);
    if active == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 {
        let n = closest.len();
        assert!(xt.len() >= n.div_ceil(PART) * PART * d && xn.len() >= n && w.is_none_or(|w| w.len() >= n));
        assert!(p.d == d && p.cols.len() == p.lanes() * d && p.norms.len() == p.lanes() && sums.len() >= n.div_ceil(BLOCK));
        // SAFETY: a level is only in force when the CPU supports it (simd::level); the asserts
        // give every bound the kernel reads and writes within.
        return unsafe { avx512::score(xt, d, xn, closest, w, p, active, sums) };
    }
    let _ = xt; // read by the AVX-512 kernel only
    score_plain(level, x, d, xn, closest, w, p, active, sums)
}
per_level!(
    /// See [`score_body`]: every level but AVX-512, which has a kernel of its own.
    score_plain, score_body, (x: &[f32], d: usize, xn: &[f32], closest: &mut [f32], w: Option<&[f32]>, p: &Panel, active: u32, sums: &mut [[f64; LANES]]));

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Panel, BLOCK, LANES, PART};
    use std::arch::x86_64::*;

    /// Points in lanes: 16 points per register, one FMA chain per candidate (so no lane is
    /// wasted whatever the number of candidates), each point's `dot` the same sequential
    /// `mul_add` chain over `t` as the plain body. The float64 terms go to per-lane partials,
    /// lane `q` holding the points `i % 16 == q`: the plain body's order.
    ///
    /// # Safety
    /// AVX-512 F/DQ must be available and the bounds asserted by `score` must hold.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn score(
        xt: &[f32],
        d: usize,
        xn: &[f32],
        closest: &mut [f32],
        w: Option<&[f32]>,
        p: &Panel,
        active: u32,
        sums: &mut [[f64; LANES]],
    ) {
        // The active lanes in order: candidates first, the pending centre (lane `p.cands`) last.
        let mut idx = [0usize; LANES];
        let mut m = 0;
        for l in (0..p.lanes()).filter(|&l| active >> l & 1 == 1) {
            idx[m] = l;
            m += 1;
        }
        macro_rules! by_lanes {
            ($($n:literal)*) => {
                match m {
                    $($n => body::<$n>(xt, d, xn, closest, w, p, &idx, sums),)*
                    _ => unreachable!("a panel holds 1 to 16 lanes"),
                }
            };
        }
        by_lanes!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
    }

    /// Few lanes make short FMA chains: run that many more groups of 16 points at once, so
    /// that about 8 chains are in flight (the per-point operations are unchanged).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    unsafe fn body<const L: usize>(
        xt: &[f32],
        d: usize,
        xn: &[f32],
        closest: &mut [f32],
        w: Option<&[f32]>,
        p: &Panel,
        idx: &[usize; LANES],
        sums: &mut [[f64; LANES]],
    ) {
        match L {
            1 => groups::<L, 8>(xt, d, xn, closest, w, p, idx, sums),
            2 => groups::<L, 4>(xt, d, xn, closest, w, p, idx, sums),
            3 | 4 => groups::<L, 2>(xt, d, xn, closest, w, p, idx, sums),
            _ => groups::<L, 1>(xt, d, xn, closest, w, p, idx, sums),
        }
    }

    /// The candidates' state over one call: active lanes' columns and norms, and the constants.
    struct Lanes<const L: usize> {
        col: [*const f32; L],
        norm: [f32; L],
        cands: usize,
        fold: bool,
        m2: __m512,
        zero: __m512,
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    unsafe fn groups<const L: usize, const G: usize>(
        xt: &[f32],
        d: usize,
        xn: &[f32],
        closest: &mut [f32],
        w: Option<&[f32]>,
        p: &Panel,
        idx: &[usize; LANES],
        sums: &mut [[f64; LANES]],
    ) {
        let n = closest.len();
        // Slot `L - 1` is the pending centre's if its lane is active; the others are candidates.
        let fold = p.prev && idx[L - 1] == p.cands;
        let ln = Lanes::<L> {
            col: std::array::from_fn(|l| p.cols.as_ptr().add(idx[l] * d)),
            norm: std::array::from_fn(|l| p.norms[idx[l]]),
            cands: if fold { L - 1 } else { L },
            fold,
            m2: _mm512_set1_ps(-2.0),
            zero: _mm512_setzero_ps(),
        };
        for (b, s) in sums.iter_mut().enumerate().take(n.div_ceil(BLOCK)) {
            let mut parts = [[_mm512_setzero_pd(); 2]; LANES];
            let (start, end) = (b * BLOCK, n.min((b + 1) * BLOCK));
            let mut g0 = start;
            while g0 < end {
                if end - g0 >= G * PART {
                    // G whole groups; their terms are added in group order, as one by one.
                    let acc = dots::<L, G>(xt.as_ptr().add(g0 * d), d, &ln);
                    for (j, a) in acc.iter().enumerate() {
                        group(g0 + j * PART, PART, a, xn, closest, w, &ln, &mut parts);
                    }
                    g0 += G * PART;
                } else {
                    let acc = dots::<L, 1>(xt.as_ptr().add(g0 * d), d, &ln);
                    group(g0, (end - g0).min(PART), &acc[0], xn, closest, w, &ln, &mut parts);
                    g0 += PART;
                }
            }
            for l in 0..ln.cands {
                let mut v = [0f64; PART];
                _mm512_storeu_pd(v.as_mut_ptr(), parts[l][0]);
                _mm512_storeu_pd(v.as_mut_ptr().add(8), parts[l][1]);
                s[idx[l]] = super::fold_parts(&v);
            }
        }
    }

    /// The dot products of `G` consecutive groups of 16 points (from `xg`) with every lane: per
    /// point, the sequential `mul_add` chain over `t`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    unsafe fn dots<const L: usize, const G: usize>(xg: *const f32, d: usize, ln: &Lanes<L>) -> [[__m512; L]; G] {
        let mut acc = [[ln.zero; L]; G];
        for t in 0..d {
            for (g, a) in acc.iter_mut().enumerate() {
                let xv = _mm512_loadu_ps(xg.add((g * d + t) * PART));
                for l in 0..L {
                    a[l] = _mm512_fmadd_ps(xv, _mm512_set1_ps(*ln.col[l].add(t)), a[l]);
                }
            }
        }
        acc
    }

    /// One group of 16 points at `g0` (`valid` of them real): folds the pending centre into
    /// `closest`, then adds the candidates' terms `w * min(closest, dist)` to the partials.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    unsafe fn group<const L: usize>(
        g0: usize,
        valid: usize,
        acc: &[__m512; L],
        xn: &[f32],
        closest: &mut [f32],
        w: Option<&[f32]>,
        ln: &Lanes<L>,
        parts: &mut [[__m512d; 2]; LANES],
    ) {
        let (m2, zero) = (ln.m2, ln.zero);
        let mask: __mmask16 = if valid == PART { 0xffff } else { (1u16 << valid) - 1 };
        let xnv = _mm512_maskz_loadu_ps(mask, xn.as_ptr().add(g0));
        let cptr = closest.as_mut_ptr().add(g0);
        let mut c = _mm512_maskz_loadu_ps(mask, cptr);
        if ln.fold {
            c = _mm512_min_ps(dist(m2, acc[L - 1], ln.norm[L - 1], xnv, zero), c);
            _mm512_mask_storeu_ps(cptr, mask, c);
        }
        if w.is_none() && valid == PART {
            // No weights and no padding lane: `w * m` is `m` exactly (w = 1), so the terms are
            // added as they are, the same bits with fewer instructions.
            for l in 0..ln.cands {
                let m = _mm512_min_ps(dist(m2, acc[l], ln.norm[l], xnv, zero), c);
                parts[l][0] = _mm512_add_pd(parts[l][0], _mm512_cvtps_pd(_mm512_castps512_ps256(m)));
                parts[l][1] = _mm512_add_pd(parts[l][1], _mm512_cvtps_pd(_mm512_extractf32x8_ps(m, 1)));
            }
            return;
        }
        let (wlo, whi) = match w {
            Some(w) => {
                let wv = _mm512_maskz_loadu_ps(mask, w.as_ptr().add(g0));
                (_mm512_cvtps_pd(_mm512_castps512_ps256(wv)), _mm512_cvtps_pd(_mm512_extractf32x8_ps(wv, 1)))
            }
            None => (_mm512_set1_pd(1.0), _mm512_set1_pd(1.0)),
        };
        for l in 0..ln.cands {
            // Padding lanes add w * 0 = +0 (w is 0 there too): the partial is unchanged.
            let m = _mm512_maskz_mov_ps(mask, _mm512_min_ps(dist(m2, acc[l], ln.norm[l], xnv, zero), c));
            let lo = _mm512_mul_pd(wlo, _mm512_cvtps_pd(_mm512_castps512_ps256(m)));
            let hi = _mm512_mul_pd(whi, _mm512_cvtps_pd(_mm512_extractf32x8_ps(m, 1)));
            parts[l][0] = _mm512_add_pd(parts[l][0], lo);
            parts[l][1] = _mm512_add_pd(parts[l][1], hi);
        }
    }

    /// `out[i] = min(closest[i], dist_i)` with the points 16 to a register, each `dot` the plain
    /// sequential `mul_add` chain over `t`.
    ///
    /// # Safety
    /// AVX-512 F/DQ must be available and the bounds asserted by `lowered` must hold.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn lowered(xt: &[f32], d: usize, xn: &[f32], closest: &[f32], centre: &[f32], cn: f32, out: &mut [f32]) {
        let n = out.len();
        let (m2, zero) = (_mm512_set1_ps(-2.0), _mm512_setzero_ps());
        for g0 in (0..n).step_by(PART) {
            let valid = (n - g0).min(PART);
            let mask: __mmask16 = if valid == PART { 0xffff } else { (1u16 << valid) - 1 };
            let xg = xt.as_ptr().add(g0 * d);
            let mut acc = zero;
            for t in 0..d {
                acc = _mm512_fmadd_ps(_mm512_loadu_ps(xg.add(t * PART)), _mm512_set1_ps(*centre.get_unchecked(t)), acc);
            }
            let xnv = _mm512_maskz_loadu_ps(mask, xn.as_ptr().add(g0));
            let c = _mm512_maskz_loadu_ps(mask, closest.as_ptr().add(g0));
            _mm512_mask_storeu_ps(out.as_mut_ptr().add(g0), mask, _mm512_min_ps(dist(m2, acc, cn, xnv, zero), c));
        }
    }

    /// `max(0, fma(-2, dot, |c|^2) + |x|^2)`, as `l2` (`vmaxps` returns 0 unless `v > 0`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    unsafe fn dist(m2: __m512, acc: __m512, cn: f32, xnv: __m512, zero: __m512) -> __m512 {
        _mm512_max_ps(_mm512_add_ps(_mm512_fmadd_ps(m2, acc, _mm512_set1_ps(cn)), xnv), zero)
    }
}
