//! Exact acceleration of Lloyd's assignment step with Hamerly's bounds (L2 only).
//!
//! Across iterations, every point keeps a lower bound `l` on its true distance to every centroid
//! but its own. When the centroids move, `l` shrinks by the largest move of another centroid.
//! The point's own distance is computed every time (the inertia needs it), which gives the upper
//! bound `u`. A point whose bounds still separate its centroid from all others, with a margin
//! that covers the float32 rounding of the scores `assign` ranks by, provably gets the same code
//! from the brute-force search; the others are searched in full (all `k` scores, best and second
//! best, which reset `l`).
//!
//! Exactness: the brute-force search compares scores `s_j = fma(-2, x.c_j, |c_j|^2)` (float32,
//! `x.c` a sequential `mul_add` chain). Each differs from the true `|c_j|^2 - 2 x.c_j` by at most
//! `e <= (2d + 4) 2^-24 (|x|^2 + |c_j|^2)`; we use `E = 2 (2d + 8) 2^-24 (|x|^2 + max |c|^2)`
//! (as `seed_blocks`). If the true squared distances satisfy `D_a + 2E < D_j` for every `j != a`,
//! then `s_a < s_j`: the search picks `a`. The skip test is `u^2 + 2E < l^2`, with `u` and `l`
//! themselves widened by `E` when taken from computed scores. Codes and reported distances are
//! therefore bit-identical to `assign_into`'s, and every point is handled on its own (fixed
//! chunks), so the result depends neither on the SIMD level nor on the thread count.

#![allow(clippy::needless_range_loop)] // lane loops index several same-shape arrays

use super::assign::{Codebook, PANEL};
use super::Metric;
use crate::error::{Error, Result};
use crate::parallel;
use crate::simd::{self, Level};

/// Points per parallel job.
const CHUNK: usize = 2048;
/// Rows scored together by the full search (independent FMA chains).
const ROWS: usize = 4;

/// Bounds of one set of points against the centroids of the previous call.
#[derive(Default, Debug)]
pub struct Bounds {
    /// `(address, n, d)` of the points the bounds belong to; another `x` starts afresh.
    key: (usize, usize, usize),
    /// The centroids the bounds refer to (empty: no bounds yet).
    centroids: Vec<f32>,
    codes: Vec<u32>,
    /// A lower bound on each point's true distance to every centroid but its own.
    lower: Vec<f64>,
    /// `dot(x_i, x_i)` (the bits `assign` adds to a score).
    xn: Vec<f32>,
    /// Points searched in full at the last call (for tests and tuning).
    pub full_searches: usize,
}

impl Bounds {
    pub fn new() -> Bounds {
        Bounds::default()
    }
}

/// Per-call constants of the skip test.
struct Drift {
    /// The largest move of a centroid since the bounds were set (rounded up), its centroid, and
    /// the second largest.
    max1: f64,
    arg1: usize,
    max2: f64,
    /// `2 (2d + 8) 2^-24` and the largest squared centroid norm: `E = rel (|x|^2 + max_cn)`.
    rel: f64,
    max_cn: f64,
}

impl Drift {
    fn new(cb: &Codebook, old: &[f32]) -> Drift {
        let d = cb.d;
        let delta: Vec<f64> = cb
            .data
            .chunks_exact(d)
            .zip(old.chunks_exact(d))
            .map(|(a, b)| a.iter().zip(b).map(|(&p, &q)| (p as f64 - q as f64).powi(2)).sum::<f64>().sqrt() * (1.0 + 1e-12))
            .collect();
        let (mut max1, mut arg1, mut max2) = (0.0, 0, 0.0);
        for (j, &v) in delta.iter().enumerate() {
            if v > max1 {
                (max2, max1, arg1) = (max1, v, j);
            } else if v > max2 {
                max2 = v;
            }
        }
        let max_cn = cb.norms.iter().fold(0f64, |m, &v| m.max(v as f64)) * (1.0 + 1e-6);
        Drift { max1, arg1, max2, rel: rel_err(d), max_cn }
    }

    /// A drift for the first call: no bounds, every point searched in full.
    fn first(cb: &Codebook) -> Drift {
        let max_cn = cb.norms.iter().fold(0f64, |m, &v| m.max(v as f64)) * (1.0 + 1e-6);
        Drift { max1: f64::INFINITY, arg1: 0, max2: f64::INFINITY, rel: rel_err(cb.d), max_cn }
    }
}

fn rel_err(d: usize) -> f64 {
    2.0 * (2 * d + 8) as f64 * (-24f64).exp2()
}

/// The nearest centroid of every point and its distance, exactly as
/// `assign_into(cb, x, codes, Some(dists))` reports them, using and updating `b`.
/// `cb` must be an L2 codebook; `x` must be the same points at every call with the same `b`
/// (a different address or shape starts afresh).
pub fn assign_bounded(cb: &Codebook, x: &[f32], b: &mut Bounds) -> Result<(Vec<u32>, Vec<f32>)> {
    assign_bounded_at(simd::level(), cb, x, b)
}

/// [`assign_bounded`] at a given SIMD level (one this CPU supports).
pub fn assign_bounded_at(level: Level, cb: &Codebook, x: &[f32], b: &mut Bounds) -> Result<(Vec<u32>, Vec<f32>)> {
    if cb.metric != Metric::L2 {
        return Err(crate::error::invalid!("bounded assignment needs the L2 metric"));
    }
    let d = cb.d;
    if !x.len().is_multiple_of(d) {
        return Err(Error::Shape(format!("x holds {} values, not a multiple of d={d}", x.len())));
    }
    let n = x.len() / d;
    let key = (x.as_ptr() as usize, n, d);
    let drift = if b.key == key && b.centroids.len() == cb.data.len() {
        Drift::new(cb, &b.centroids)
    } else {
        if let Some(index) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite { index });
        }
        *b = Bounds { key, codes: vec![0; n], lower: vec![0.0; n], xn: vec![0.0; n], ..Bounds::default() };
        let xn = &mut b.xn;
        parallel::try_for_each(xn.chunks_mut(CHUNK).zip(x.chunks(CHUNK * d)).collect(), |(o, xs)| {
            norms(level, xs, d, o);
            Ok(())
        })?;
        Drift::first(cb)
    };
    let mut dists = vec![0f32; n];
    let mut full = vec![0usize; n.div_ceil(CHUNK)];
    let jobs: Vec<_> = x
        .chunks(CHUNK * d)
        .zip(b.codes.chunks_mut(CHUNK))
        .zip(b.lower.chunks_mut(CHUNK))
        .zip(b.xn.chunks(CHUNK).zip(dists.chunks_mut(CHUNK)))
        .zip(full.iter_mut())
        .collect();
    parallel::try_for_each(jobs, |((((xs, codes), lower), (xn, dists)), full)| {
        let mut job = Job { cb, drift: &drift, xs, xn, codes, lower, dists, full: 0 };
        run_job(level, level, &mut job);
        *full = job.full;
        Ok(())
    })?;
    b.full_searches = full.iter().sum();
    b.centroids.clone_from(&cb.data);
    Ok((b.codes.clone(), dists))
}

/// One chunk of points and its slices of the state.
struct Job<'a> {
    cb: &'a Codebook,
    drift: &'a Drift,
    xs: &'a [f32],
    xn: &'a [f32],
    codes: &'a mut [u32],
    lower: &'a mut [f64],
    dists: &'a mut [f32],
    full: usize,
}

/// Every point: shrink the lower bound by the drift, take the point's own distance (which the
/// inertia needs anyway) as the upper bound, and search in full the points the test cannot
/// settle.
#[inline(always)]
fn job_body(level: Level, j: &mut Job) {
    let (cb, dr, d) = (j.cb, j.drift, j.cb.d);
    let mut pending: Vec<usize> = Vec::new();
    for i in 0..j.codes.len() {
        let a = j.codes[i] as usize;
        let l = j.lower[i] - if a == dr.arg1 { dr.max2 } else { dr.max1 };
        if !(l > 0.0) {
            // No bounds yet, or the others may have come nearer than anything: a full search.
            pending.push(i);
            continue;
        }
        let e = dr.rel * (j.xn[i] as f64 + dr.max_cn);
        let xi = &j.xs[i * d..(i + 1) * d];
        let s = (-2.0f32).mul_add(dot(xi, cb.row(a)), cb.norms[a]);
        let dist = (s + j.xn[i]).max(0.0);
        let u2 = (s as f64 + j.xn[i] as f64).max(0.0) + e;
        if u2 + 2.0 * e < l * l * (1.0 - 1e-12) {
            j.dists[i] = dist;
            j.lower[i] = l;
        } else {
            pending.push(i);
        }
    }
    j.full = pending.len();
    search_pending(level, j, &pending);
}

/// Searches the `pending` points of a job in full, [`ROWS`] at a time (the last group padded
/// with copies of its first row), and sets their codes, distances and bounds.
#[inline(always)]
fn search_pending(level: Level, j: &mut Job, pending: &[usize]) {
    let d = j.cb.d;
    let mut rows = vec![0f32; ROWS * d];
    for group in pending.chunks(ROWS) {
        for r in 0..ROWS {
            let i = group[r.min(group.len() - 1)];
            rows[r * d..(r + 1) * d].copy_from_slice(&j.xs[i * d..(i + 1) * d]);
        }
        let mut top = [Top2::EMPTY; ROWS];
        top2_rows(level, j.cb, &rows, &mut top);
        for (t, &i) in top.iter().zip(group) {
            let (code, best, second) = t.merge();
            let xn = j.xn[i];
            let e = j.drift.rel * (xn as f64 + j.drift.max_cn);
            j.codes[i] = code;
            j.dists[i] = (best + xn).max(0.0);
            j.lower[i] = ((second as f64 + xn as f64 - e).max(0.0)).sqrt() * (1.0 - 1e-12);
        }
    }
}

/// Per lane of a panel: the lowest score seen, its codeword (the first on ties), and the
/// second lowest score.
#[derive(Clone, Copy)]
struct Top2 {
    b1: [f32; PANEL],
    i1: [u32; PANEL],
    b2: [f32; PANEL],
}

impl Top2 {
    const EMPTY: Top2 = Top2 { b1: [f32::INFINITY; PANEL], i1: [0; PANEL], b2: [f32::INFINITY; PANEL] };

    /// Folds the scores `s` of codewords `j0..j0 + PANEL` in (NaN never counts).
    #[inline(always)]
    fn update(&mut self, s: &[f32; PANEL], j0: u32) {
        for l in 0..PANEL {
            let m = if s[l] > self.b1[l] { s[l] } else { self.b1[l] };
            self.b2[l] = if m < self.b2[l] { m } else { self.b2[l] };
            let lt = s[l] < self.b1[l];
            self.b1[l] = if lt { s[l] } else { self.b1[l] };
            self.i1[l] = if lt { j0 + l as u32 } else { self.i1[l] };
        }
    }

    /// `(code, best, second)` over all lanes: the lowest score, the lowest codeword among equal
    /// ones (`(0, inf)` if nothing beat +inf, as the brute-force search), and the second lowest
    /// score of the whole row.
    fn merge(&self) -> (u32, f32, f32) {
        let (mut lane, mut best) = (0, f32::INFINITY);
        for l in 0..PANEL {
            if self.b1[l] < best || (self.b1[l] == best && self.i1[l] < self.i1[lane]) {
                (lane, best) = (l, self.b1[l]);
            }
        }
        let mut second = f32::INFINITY;
        for l in 0..PANEL {
            let v = if l == lane { self.b2[l] } else { self.b1[l].min(self.b2[l]) };
            if v < second {
                second = v;
            }
        }
        (self.i1[lane], best, second)
    }
}

/// The best two scores of `ROWS` rows against the packed codebook; each score is exactly
/// `vq::assign::score_scalar` (padding slots are NaN, so they never count). The oracle of
/// `avx512::top2_rows`.
#[inline(always)]
fn top2_rows_plain(cb: &Codebook, xs: &[f32], top: &mut [Top2; ROWS]) {
    let d = cb.d;
    let xs = &xs[..ROWS * d];
    *top = [Top2::EMPTY; ROWS];
    for p in 0..cb.k.div_ceil(PANEL) {
        let norms: &[f32; PANEL] = cb.panel_norms[p * PANEL..(p + 1) * PANEL].try_into().unwrap();
        for (r, top) in top.iter_mut().enumerate() {
            let mut acc = [0f32; PANEL];
            for (t, c) in cb.panels[p * d..(p + 1) * d].iter().enumerate() {
                for l in 0..PANEL {
                    acc[l] = xs[r * d + t].mul_add(c.0[l], acc[l]);
                }
            }
            let s: [f32; PANEL] = std::array::from_fn(|l| (-2.0f32).mul_add(acc[l], norms[l]));
            top.update(&s, (p * PANEL) as u32);
        }
    }
}

/// [`top2_rows_plain`] at `level`.
#[inline(always)]
fn top2_rows(level: Level, cb: &Codebook, xs: &[f32], top: &mut [Top2; ROWS]) {
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 {
        assert!(xs.len() >= ROWS * cb.d);
        cb.assert_search_buffers(xs, &[0; ROWS], &[0.0; ROWS]);
        // SAFETY: the level is only in force when the CPU supports AVX-512 (simd::level); the
        // asserts give the bounds the kernel reads within (ROWS rows, packed panels and norms).
        return unsafe { avx512::top2_rows(cb, xs, top) };
    }
    let _ = level;
    top2_rows_plain(cb, xs, top)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Top2, ROWS};
    use crate::vq::assign::{Codebook, PANEL};
    use std::arch::x86_64::*;

    /// Running best two of one row, per lane.
    #[derive(Clone, Copy)]
    struct State {
        b1: __m512,
        b2: __m512,
        i1: __m512i,
    }

    /// `top2_rows_plain` with one register per (row, panel): the same FMA chains, and the
    /// update's selects as masked blends and `vminps` (which returns its second operand unless
    /// the first is smaller, as the plain `if` does; NaN never compares).
    ///
    /// # Safety
    /// AVX-512 F must be available; `xs` must hold `ROWS * d` floats and `cb` be packed.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn top2_rows(cb: &Codebook, xs: &[f32], top: &mut [Top2; ROWS]) {
        let np = cb.k.div_ceil(PANEL);
        let init = State { b1: _mm512_set1_ps(f32::INFINITY), b2: _mm512_set1_ps(f32::INFINITY), i1: _mm512_setzero_si512() };
        let mut st = [init; ROWS];
        let mut p = 0;
        while p + 2 <= np {
            panels::<2>(cb, xs.as_ptr(), p, &mut st);
            p += 2;
        }
        if p < np {
            panels::<1>(cb, xs.as_ptr(), p, &mut st);
        }
        for (t, s) in top.iter_mut().zip(&st) {
            _mm512_storeu_ps(t.b1.as_mut_ptr(), s.b1);
            _mm512_storeu_ps(t.b2.as_mut_ptr(), s.b2);
            _mm512_storeu_si512(t.i1.as_mut_ptr().cast(), s.i1);
        }
    }

    /// # Safety
    /// As [`top2_rows`], with panels `p..p + P` inside the codebook.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    unsafe fn panels<const P: usize>(cb: &Codebook, x: *const f32, p: usize, st: &mut [State; ROWS]) {
        let d = cb.d;
        let w = cb.panels.as_ptr().add(p * d).cast::<f32>();
        let mut acc = [[_mm512_setzero_ps(); ROWS]; P];
        for t in 0..d {
            for q in 0..P {
                let c = _mm512_load_ps(w.add((q * d + t) * PANEL));
                for r in 0..ROWS {
                    acc[q][r] = _mm512_fmadd_ps(_mm512_set1_ps(*x.add(r * d + t)), c, acc[q][r]);
                }
            }
        }
        let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        for q in 0..P {
            let norm = _mm512_loadu_ps(cb.panel_norms.as_ptr().add((p + q) * PANEL));
            let j = _mm512_add_epi32(_mm512_set1_epi32(((p + q) * PANEL) as i32), iota);
            for r in 0..ROWS {
                let s = _mm512_fmadd_ps(_mm512_set1_ps(-2.0), acc[q][r], norm);
                let st = &mut st[r];
                let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(s, st.b1);
                let m = _mm512_mask_blend_ps(gt, st.b1, s);
                st.b2 = _mm512_min_ps(m, st.b2);
                let lt = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(s, st.b1);
                st.b1 = _mm512_min_ps(s, st.b1);
                st.i1 = _mm512_mask_mov_epi32(st.i1, lt, j);
            }
        }
    }
}

#[inline(always)]
fn dot(x: &[f32], y: &[f32]) -> f32 {
    x.iter().zip(y).fold(0.0f32, |acc, (a, b)| a.mul_add(*b, acc))
}

#[inline(always)]
fn norms_body(x: &[f32], d: usize, out: &mut [f32]) {
    for (o, xi) in out.iter_mut().zip(x.chunks_exact(d)) {
        *o = dot(xi, xi);
    }
}

/// A body compiled for each level: plain (the oracle, and non-x86), AVX2+FMA, AVX-512; the same
/// code, so the same IEEE operations (`mul_add` is one fused instruction when FMA is enabled).
macro_rules! levels {
    ($name:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        fn $name(at: Level, $($arg: $ty),*) {
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
                match at {
                    // SAFETY: a level is only in force when the CPU supports it (simd::level).
                    Level::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    Level::Avx2 => return unsafe { avx2($($arg),*) },
                    _ => {}
                }
            }
            let _ = at;
            $body($($arg),*)
        }
    };
}

levels!(run_job, job_body, (level: Level, j: &mut Job));
levels!(norms, norms_body, (x: &[f32], d: usize, out: &mut [f32]));
