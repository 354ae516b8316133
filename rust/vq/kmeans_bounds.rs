//! Exact acceleration of Lloyd's assignment step with per-group distance bounds (Yinyang
//! k-means, Ding et al. 2015, with the centroids grouped by index: a group is a run of packed
//! panels of 16), L2 only.
//!
//! Across iterations, every point keeps, for every group, a lower bound on its true distance to
//! the group's centroids other than its own. When the centroids move, a group's bound shrinks by
//! the group's largest move. The point's own distance is computed every time (the inertia needs
//! it), which gives the upper bound `u`. Only the groups whose bound no longer separates them from
//! the point's centroid are searched (all their scores, best and second best, which reset their
//! bounds); a point none of whose groups need a search keeps its code.
//!
//! Exactness: the brute-force search compares scores `s_j = fma(-2, x.c_j, |c_j|^2)` (float32,
//! `x.c` a sequential `mul_add` chain). Each differs from the true `|c_j|^2 - 2 x.c_j` by at most
//! `e <= (2d + 4) 2^-24 (|x|^2 + |c_j|^2)`; we use `E = 2 (2d + 8) 2^-24 (|x|^2 + max |c|^2)`
//! (as `seed_blocks`). If the true squared distances satisfy `D_a + 2E < D_j`, then `s_a < s_j`:
//! `j` can neither win nor tie. The skip test of a group is `u^2 + 2E < l^2`, with `u` and `l`
//! widened by `E` when taken from computed scores and every bound rounded outwards. The winner
//! among the point's centroid and the searched groups (lowest score, lowest index on ties) is
//! then the brute-force winner, so codes and reported distances are bit-identical to
//! `assign_into`'s. The body is the same code at every SIMD level (`mul_add` is one fused
//! operation everywhere), and every point is handled on its own in fixed chunks, so the result
//! depends neither on the SIMD level nor on the thread count.

#![allow(clippy::needless_range_loop)] // lane loops index several same-shape arrays

use super::assign::{Codebook, PANEL};
use super::seed_kernels::{dot, norms};
use super::Metric;
use crate::error::{Error, Result};
use crate::parallel;
use crate::simd::{self, Level};

/// Points per parallel job.
const CHUNK: usize = 2048;
/// Rows scored together by the first, full search (independent FMA chains).
const ROWS: usize = 4;
/// At most this many groups (runs of whole panels): the bounds take `4 * GROUPS` bytes a point.
const GROUPS: usize = 32;

/// Bounds of one set of points against the centroids of the previous call.
#[derive(Default, Debug)]
pub struct Bounds {
    /// `(address, n, d, k)` of the points and centroids the bounds belong to; anything else
    /// starts afresh.
    key: (usize, usize, usize, usize),
    /// The centroids the bounds refer to (empty: no bounds yet).
    centroids: Vec<f32>,
    codes: Vec<u32>,
    /// Per point and group: a lower bound on the true distance to the group's centroids other
    /// than the point's own, plus the group's cumulative drift `cum` when it was set (rounded
    /// down): the bound now is `lower - cum` (so unsearched groups cost no write).
    lower: Vec<f32>,
    /// Per group: the sum of its largest centroid moves over all calls.
    cum: Vec<f64>,
    /// `dot(x_i, x_i)` (the bits `assign` adds to a score).
    xn: Vec<f32>,
    /// Points that searched at least one group at the last call (for tests and tuning).
    pub full_searches: usize,
    /// Groups searched at the last call, over all points.
    pub groups_searched: usize,
    /// Groups per point.
    pub groups: usize,
}

impl Bounds {
    pub fn new() -> Bounds {
        Bounds::default()
    }
}

/// The grouping of the centroids: `groups` runs of `per` panels (the last may be shorter).
#[derive(Clone, Copy)]
struct Groups {
    groups: usize,
    per: usize,
    panels: usize,
}

impl Groups {
    fn new(k: usize) -> Groups {
        let panels = k.div_ceil(PANEL);
        let per = panels.div_ceil(GROUPS);
        Groups { groups: panels.div_ceil(per), per, panels }
    }

    fn of(&self, code: usize) -> usize {
        code / PANEL / self.per
    }
}

/// Per-call constants of the skip test.
struct Drift {
    /// No bounds yet: every point is searched in full.
    first: bool,
    /// Per group: the cumulative drift, this call's largest move included (rounded up).
    cum: Vec<f64>,
    /// `2 (2d + 8) 2^-24` and the largest squared centroid norm: `E = rel (|x|^2 + max_cn)`.
    rel: f64,
    max_cn: f64,
}

impl Drift {
    fn new(cb: &Codebook, g: Groups, old: Option<(&[f32], &[f64])>) -> Drift {
        let d = cb.d;
        let mut moved = vec![0f64; g.groups];
        if let Some((old, _)) = old {
            for (j, (a, b)) in cb.data.chunks_exact(d).zip(old.chunks_exact(d)).enumerate() {
                let m = a.iter().zip(b).map(|(&p, &q)| (p as f64 - q as f64).powi(2)).sum::<f64>().sqrt() * (1.0 + 1e-12);
                let slot = &mut moved[g.of(j)];
                *slot = slot.max(m);
            }
        }
        let max_cn = cb.norms.iter().fold(0f64, |m, &v| m.max(v as f64)) * (1.0 + 1e-6);
        let cum = match old {
            Some((_, cum)) => cum.iter().zip(&moved).map(|(c, m)| (c + m) * (1.0 + 1e-15)).collect(),
            None => moved,
        };
        Drift { first: old.is_none(), cum, rel: 2.0 * (2 * d + 8) as f64 * (-24f64).exp2(), max_cn }
    }
}

/// `sqrt(max(0, v)) + cum`, rounded down to float32: a stored lower bound.
#[inline(always)]
fn stored(v: f64, cum: f64) -> f32 {
    let r = v.max(0.0).sqrt() * (1.0 - 1e-12) + cum;
    let f = r as f32;
    if f as f64 > r {
        f.next_down()
    } else {
        f
    }
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
    let (n, g) = (x.len() / d, Groups::new(cb.k));
    let key = (x.as_ptr() as usize, n, d, cb.k);
    let drift = if b.key == key && b.centroids.len() == cb.data.len() {
        Drift::new(cb, g, Some((&b.centroids, &b.cum)))
    } else {
        if let Some(index) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite { index });
        }
        *b = Bounds { key, codes: vec![0; n], lower: vec![0.0; n * g.groups], xn: vec![0.0; n], ..Bounds::default() };
        let xn = &mut b.xn;
        parallel::try_for_each(xn.chunks_mut(CHUNK).zip(x.chunks(CHUNK * d)).collect(), |(o, xs)| {
            norms(level, xs, d, o);
            Ok(())
        })?;
        Drift::new(cb, g, None)
    };
    let mut dists = vec![0f32; n];
    let mut counts = vec![(0usize, 0usize); n.div_ceil(CHUNK)];
    let jobs: Vec<_> = x
        .chunks(CHUNK * d)
        .zip(b.codes.chunks_mut(CHUNK))
        .zip(b.lower.chunks_mut(CHUNK * g.groups))
        .zip(b.xn.chunks(CHUNK).zip(dists.chunks_mut(CHUNK)))
        .zip(counts.iter_mut())
        .collect();
    parallel::try_for_each(jobs, |((((xs, codes), lower), (xn, dists)), counts)| {
        let mut job = Job { cb, g, drift: &drift, xs, xn, codes, lower, dists, points: 0, searched: 0 };
        run_job(level, level, &mut job);
        *counts = (job.points, job.searched);
        Ok(())
    })?;
    b.full_searches = counts.iter().map(|c| c.0).sum();
    b.groups_searched = counts.iter().map(|c| c.1).sum();
    b.groups = g.groups;
    b.centroids.clone_from(&cb.data);
    b.cum.clone_from(&drift.cum);
    Ok((b.codes.clone(), dists))
}

/// One chunk of points and its slices of the state.
struct Job<'a> {
    cb: &'a Codebook,
    g: Groups,
    drift: &'a Drift,
    xs: &'a [f32],
    xn: &'a [f32],
    codes: &'a mut [u32],
    lower: &'a mut [f32],
    dists: &'a mut [f32],
    points: usize,
    searched: usize,
}

/// Every point of a job (see the module doc).
#[inline(always)]
fn job_body(level: Level, j: &mut Job) {
    if j.drift.first {
        return first_search(level, j);
    }
    let (cb, dr, d, ng) = (j.cb, j.drift, j.cb.d, j.g.groups);
    // Pass 1: each point's own score and the groups its bounds cannot rule out.
    let mut pending: Vec<(usize, u32, f32)> = Vec::new();
    let mut own = [0f32; OWN];
    for i in 0..j.codes.len() {
        if i % OWN == 0 {
            own_scores(cb, &j.xs[i * d..], &j.codes[i..], &mut own);
        }
        let (s, xn) = (own[i % OWN], j.xn[i]);
        let e = dr.rel * (xn as f64 + dr.max_cn);
        let thresh = ((s as f64 + xn as f64).max(0.0) + 3.0 * e) * (1.0 + 1e-12);
        let mask = need_mask(level, &j.lower[i * ng..(i + 1) * ng], &dr.cum, thresh);
        if mask == 0 {
            j.dists[i] = (s + xn).max(0.0);
        } else {
            pending.push((i, mask, s));
        }
    }
    // Pass 2: every (point, group) search, several at a time.
    let pairs: Vec<(usize, usize)> =
        pending.iter().flat_map(|&(i, mask, _)| (0..ng).filter(move |&gi| mask >> gi & 1 == 1).map(move |gi| (i, gi))).collect();
    let mut tops = vec![GroupTop::EMPTY; pairs.len()];
    group_tops(level, cb, j.xs, j.g, &pairs, &mut tops);
    j.points = pending.len();
    j.searched = pairs.len();
    // Pass 3: each pending point's winner and new bounds, its groups in order.
    let mut next = 0;
    for &(i, mask, s) in &pending {
        let mine = &tops[next..next + mask.count_ones() as usize];
        next += mine.len();
        finish_point(j, i, mask, s, &pairs[next - mine.len()..next], mine);
    }
}

/// The winner among point `i`'s own centroid (score `s`) and its searched groups, and the new
/// bounds of those groups.
#[inline(always)]
fn finish_point(j: &mut Job, i: usize, mask: u32, s: f32, pairs: &[(usize, usize)], tops: &[GroupTop]) {
    let (dr, ng, xn) = (j.drift, j.g.groups, j.xn[i]);
    let e = dr.rel * (xn as f64 + dr.max_cn);
    let a = j.codes[i] as usize;
    // The point's own centroid competes unless its score is not below +inf (then every group
    // was searched, from the brute-force start: code 0 at +inf).
    let (mut best, mut code) = if s < f32::INFINITY { (s, a as u32) } else { (f32::INFINITY, 0) };
    for t in tops {
        if t.b1 < best || (t.b1 == best && t.i1 < code) {
            (best, code) = (t.b1, t.i1);
        }
    }
    let lower = &mut j.lower[i * ng..(i + 1) * ng];
    for (&(_, gi), t) in pairs.iter().zip(tops) {
        let other = if t.i1 == code { t.second } else { t.b1 };
        // A score that overflowed bounds nothing: search the group again next time.
        lower[gi] = if other.is_finite() { stored(other as f64 + xn as f64 - e, dr.cum[gi]) } else { 0.0 };
    }
    let ga = j.g.of(a);
    if code as usize != a && mask >> ga & 1 == 0 {
        // The old centroid is now one of the others of its (unsearched) group.
        lower[ga] = lower[ga].min(stored(s as f64 + xn as f64 - e, dr.cum[ga]));
    }
    j.codes[i] = code;
    j.dists[i] = (best + xn).max(0.0);
}

/// `tops[q]` = [`group_top_plain`] of point `pairs[q].0` and group `pairs[q].1`, at `level`.
#[inline(always)]
fn group_tops(level: Level, cb: &Codebook, xs: &[f32], g: Groups, pairs: &[(usize, usize)], tops: &mut [GroupTop]) {
    let d = cb.d;
    let range = |gi: usize| (gi * g.per, ((gi + 1) * g.per).min(g.panels));
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 {
        cb.assert_search_buffers(&[], &[], &[]);
        for (batch, out) in pairs.chunks(PAIRS).zip(tops.chunks_mut(PAIRS)) {
            let pick = |r: usize| batch[r.min(batch.len() - 1)];
            let rows: [&[f32]; PAIRS] = std::array::from_fn(|r| &xs[pick(r).0 * d..(pick(r).0 + 1) * d]);
            let ranges: [(usize, usize); PAIRS] = std::array::from_fn(|r| range(pick(r).1));
            // SAFETY: the level is only in force when the CPU supports AVX-512 (simd::level);
            // every row holds d floats and every range lies within the packed panels.
            let got = unsafe { avx512::group_tops(cb, &rows, &ranges) };
            out.copy_from_slice(&got[..out.len()]);
        }
        return;
    }
    let _ = level;
    for (&(i, gi), t) in pairs.iter().zip(tops.iter_mut()) {
        let (p0, p1) = range(gi);
        *t = group_top_plain(cb, &xs[i * d..(i + 1) * d], p0, p1);
    }
}

/// (point, group) searches run together by the AVX-512 kernel (independent FMA chains).
#[cfg(target_arch = "x86_64")]
const PAIRS: usize = 4;

/// Points whose own scores are computed together (independent `mul_add` chains).
const OWN: usize = 8;

/// `out[q]` = the score of point `q` against its centroid `codes[q]`, exactly
/// `vq::assign::score_scalar`, for up to [`OWN`] points (the chains interleaved).
#[inline(always)]
fn own_scores(cb: &Codebook, xs: &[f32], codes: &[u32], out: &mut [f32; OWN]) {
    let (d, m) = (cb.d, codes.len().min(OWN));
    if m < OWN {
        for q in 0..m {
            let a = codes[q] as usize;
            out[q] = (-2.0f32).mul_add(dot(&xs[q * d..(q + 1) * d], cb.row(a)), cb.norms[a]);
        }
        return;
    }
    let xs = &xs[..OWN * d];
    // Row offsets rather than slices, so that the chains' operands stay in registers.
    let rows: [usize; OWN] = std::array::from_fn(|q| codes[q] as usize * d);
    assert!(rows.iter().all(|&r| r + d <= cb.data.len()));
    let mut acc = [0f32; OWN];
    for t in 0..d {
        for q in 0..OWN {
            // SAFETY: `q * d + t < OWN * d = xs.len()`, and `rows[q] + t < cb.data.len()`
            // (asserted above).
            acc[q] = unsafe { xs.get_unchecked(q * d + t).mul_add(*cb.data.get_unchecked(rows[q] + t), acc[q]) };
        }
    }
    for q in 0..OWN {
        out[q] = (-2.0f32).mul_add(acc[q], cb.norms[codes[q] as usize]);
    }
}

/// The first call: every point searched in full, [`ROWS`] at a time (the last rows padded with
/// copies of the first). A group's bound is its best score, the winner's group's the second
/// best of the whole row.
#[inline(always)]
fn first_search(level: Level, j: &mut Job) {
    let (d, ng, n) = (j.cb.d, j.g.groups, j.codes.len());
    let np = j.g.panels;
    let mut rows = vec![0f32; ROWS * d];
    let mut pmin = vec![0f32; ROWS * np];
    for r0 in (0..n).step_by(ROWS) {
        for r in 0..ROWS {
            let i = (r0 + r).min(n - 1);
            rows[r * d..(r + 1) * d].copy_from_slice(&j.xs[i * d..(i + 1) * d]);
        }
        let mut top = [Top2::EMPTY; ROWS];
        top2_rows(level, j.cb, &rows, &mut top, &mut pmin);
        for (r, (i, t)) in (r0..n.min(r0 + ROWS)).zip(&top).enumerate() {
            let GroupTop { b1, i1, second } = t.merge();
            let xn = j.xn[i];
            let e = j.drift.rel * (xn as f64 + j.drift.max_cn);
            let own = j.g.of(i1 as usize);
            let mut v = [0f32; GROUPS];
            for (gi, v) in v[..ng].iter_mut().enumerate() {
                // The winner's group: the row's second best; any other: the group's best.
                let pm = &pmin[r * np + gi * j.g.per..r * np + ((gi + 1) * j.g.per).min(np)];
                *v = if gi == own { second } else { pm.iter().fold(f32::INFINITY, |m, &v| m.min(v)) };
            }
            // `stored(v + |x|^2 - E, 0)` for every group, in a loop that vectorises.
            for (l, &v) in j.lower[i * ng..(i + 1) * ng].iter_mut().zip(&v) {
                let r = (v as f64 + xn as f64 - e).max(0.0).sqrt() * (1.0 - 1e-12);
                let f = r as f32;
                let f = if f as f64 > r { f32::from_bits(f.to_bits() - 1) } else { f };
                // A score that overflowed bounds nothing.
                *l = if v.is_finite() { f } else { 0.0 };
            }
            j.codes[i] = i1;
            j.dists[i] = (b1 + xn).max(0.0);
        }
    }
    j.points = n;
    j.searched = n * ng;
}

/// Bit `g` set when group `g` must be searched: its bound `lower[g] - cum[g]` (float64) does
/// not prove `bound^2 (1 - 1e-12) > thresh`.
#[inline(always)]
fn need_mask_plain(lower: &[f32], cum: &[f64], thresh: f64) -> u32 {
    let mut mask = 0u32;
    for (gi, (&l, &c)) in lower.iter().zip(cum).enumerate() {
        let l = l as f64 - c;
        // `!(>)`: a NaN threshold searches every group.
        if !(l > 0.0 && l * l * (1.0 - 1e-12) > thresh) {
            mask |= 1 << gi;
        }
    }
    mask
}

/// [`need_mask_plain`] at `level`.
#[inline(always)]
fn need_mask(level: Level, lower: &[f32], cum: &[f64], thresh: f64) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 {
        assert!(lower.len() == cum.len() && lower.len() <= GROUPS);
        // SAFETY: the level is only in force when the CPU supports AVX-512 (simd::level); the
        // slices have the asserted lengths the kernel reads within.
        return unsafe { avx512::need_mask(lower, cum, thresh) };
    }
    let _ = level;
    need_mask_plain(lower, cum, thresh)
}

/// The best two scores of one group for one point: the lowest score `b1`, its codeword `i1`
/// (the lowest among equal scores), and the lowest score of the group's other codewords.
#[derive(Clone, Copy)]
struct GroupTop {
    b1: f32,
    i1: u32,
    second: f32,
}

impl GroupTop {
    const EMPTY: GroupTop = GroupTop { b1: f32::INFINITY, i1: 0, second: f32::INFINITY };
}

/// Scores panels `p0..p1` for one point (each score exactly `vq::assign::score_scalar`; padding
/// slots are NaN and never count): per lane the best two, then merged across the lanes.
#[inline(always)]
fn group_top_plain(cb: &Codebook, xi: &[f32], p0: usize, p1: usize) -> GroupTop {
    let d = cb.d;
    let mut top = Top2::EMPTY;
    let mut p = p0;
    while p + 2 <= p1 {
        let mut acc = [[0f32; PANEL]; 2];
        for t in 0..d {
            let (c0, c1) = (&cb.panels[p * d + t].0, &cb.panels[(p + 1) * d + t].0);
            for l in 0..PANEL {
                acc[0][l] = xi[t].mul_add(c0[l], acc[0][l]);
                acc[1][l] = xi[t].mul_add(c1[l], acc[1][l]);
            }
        }
        for (q, acc) in acc.iter().enumerate() {
            top.update(&scores(cb, p + q, acc), ((p + q) * PANEL) as u32);
        }
        p += 2;
    }
    if p < p1 {
        let mut acc = [0f32; PANEL];
        for t in 0..d {
            let c = &cb.panels[p * d + t].0;
            for l in 0..PANEL {
                acc[l] = xi[t].mul_add(c[l], acc[l]);
            }
        }
        top.update(&scores(cb, p, &acc), (p * PANEL) as u32);
    }
    top.merge()
}

#[inline(always)]
fn scores(cb: &Codebook, p: usize, acc: &[f32; PANEL]) -> [f32; PANEL] {
    let norms: &[f32; PANEL] = cb.panel_norms[p * PANEL..(p + 1) * PANEL].try_into().unwrap();
    std::array::from_fn(|l| (-2.0f32).mul_add(acc[l], norms[l]))
}

/// Per lane of a panel: the lowest score seen, its codeword (the first on ties), and the
/// second lowest score. Never NaN: NaN scores never count.
#[derive(Clone, Copy)]
struct Top2 {
    b1: [f32; PANEL],
    i1: [u32; PANEL],
    b2: [f32; PANEL],
}

impl Top2 {
    const EMPTY: Top2 = Top2 { b1: [f32::INFINITY; PANEL], i1: [0; PANEL], b2: [f32::INFINITY; PANEL] };

    /// Folds the scores `s` of codewords `j0..j0 + PANEL` in.
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

    /// The lanes merged: lowest score, lowest codeword among equal ones (`(inf, 0)` if nothing
    /// beat +inf), and the lowest score of the other codewords.
    #[inline(always)]
    fn merge(&self) -> GroupTop {
        let b1 = hmin(&self.b1);
        let i1 = (0..PANEL).map(|l| if self.b1[l] == b1 { self.i1[l] } else { u32::MAX }).fold(u32::MAX, u32::min);
        let i1 = if i1 == u32::MAX { 0 } else { i1 };
        let others: [f32; PANEL] = std::array::from_fn(|l| if self.i1[l] == i1 && self.b1[l] == b1 { self.b2[l] } else { self.b1[l] });
        GroupTop { b1, i1, second: hmin(&others) }
    }
}

/// The smallest of 16 values that are never NaN (a tree of pairwise minima, which vectorises).
#[inline(always)]
fn hmin(v: &[f32; PANEL]) -> f32 {
    let mut w = *v;
    let mut half = PANEL / 2;
    while half > 0 {
        for l in 0..half {
            w[l] = if w[l + half] < w[l] { w[l + half] } else { w[l] };
        }
        half /= 2;
    }
    w[0]
}

/// The best two scores of `ROWS` rows against the packed codebook; each score is exactly
/// `vq::assign::score_scalar` (padding slots are NaN, so they never count). The oracle of
/// `avx512::top2_rows`.
#[inline(always)]
fn top2_rows_plain(cb: &Codebook, xs: &[f32], top: &mut [Top2; ROWS], pmin: &mut [f32]) {
    let (d, np) = (cb.d, cb.k.div_ceil(PANEL));
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
            pmin[r * np + p] = s.iter().fold(f32::INFINITY, |m, &v| if v < m { v } else { m });
        }
    }
}

/// [`top2_rows_plain`] at `level`.
#[inline(always)]
fn top2_rows(level: Level, cb: &Codebook, xs: &[f32], top: &mut [Top2; ROWS], pmin: &mut [f32]) {
    assert!(pmin.len() >= ROWS * cb.k.div_ceil(PANEL));
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 {
        assert!(xs.len() >= ROWS * cb.d);
        cb.assert_search_buffers(xs, &[0; ROWS], &[0.0; ROWS]);
        // SAFETY: the level is only in force when the CPU supports AVX-512 (simd::level); the
        // asserts give the bounds the kernel reads within (ROWS rows, packed panels and norms).
        return unsafe { avx512::top2_rows(cb, xs, top, pmin) };
    }
    let _ = level;
    top2_rows_plain(cb, xs, top, pmin)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{GroupTop, Top2, PAIRS, ROWS};
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
    pub(super) unsafe fn top2_rows(cb: &Codebook, xs: &[f32], top: &mut [Top2; ROWS], pmin: &mut [f32]) {
        let np = cb.k.div_ceil(PANEL);
        let init = State { b1: _mm512_set1_ps(f32::INFINITY), b2: _mm512_set1_ps(f32::INFINITY), i1: _mm512_setzero_si512() };
        let mut st = [init; ROWS];
        let mut p = 0;
        while p + 2 <= np {
            panels::<2>(cb, xs.as_ptr(), p, &mut st, pmin.as_mut_ptr());
            p += 2;
        }
        if p < np {
            panels::<1>(cb, xs.as_ptr(), p, &mut st, pmin.as_mut_ptr());
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
    unsafe fn panels<const P: usize>(cb: &Codebook, x: *const f32, p: usize, st: &mut [State; ROWS], pmin: *mut f32) {
        let np = cb.k.div_ceil(PANEL);
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
                // NaN (padding) lanes become +inf first: the reduction then is an exact minimum.
                *pmin.add(r * np + p + q) = _mm512_reduce_min_ps(_mm512_min_ps(s, _mm512_set1_ps(f32::INFINITY)));
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

    /// `need_mask_plain`, eight groups per register (the same float64 operations).
    ///
    /// # Safety
    /// AVX-512 F/DQ must be available; `cum` as long as `lower`, at most 32.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn need_mask(lower: &[f32], cum: &[f64], thresh: f64) -> u32 {
        let (zero, slack, t) = (_mm512_setzero_pd(), _mm512_set1_pd(1.0 - 1e-12), _mm512_set1_pd(thresh));
        let mut mask = 0u32;
        for g0 in (0..lower.len()).step_by(8) {
            let m: __mmask8 = ((1u32 << (lower.len() - g0).min(8)) - 1) as u8;
            let lf = _mm256_maskz_loadu_ps(m, lower.as_ptr().add(g0));
            let l = _mm512_sub_pd(_mm512_cvtps_pd(lf), _mm512_maskz_loadu_pd(m, cum.as_ptr().add(g0)));
            let pos = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(l, zero);
            let far = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(_mm512_mul_pd(_mm512_mul_pd(l, l), slack), t);
            mask |= ((!(pos & far) & m) as u32) << g0;
        }
        mask
    }

    /// `group_top_plain` for [`PAIRS`] (row, panel range) pairs at once: one FMA chain per pair,
    /// the per-lane best two kept as in `top2_rows`, then the lanes merged with reductions
    /// (minima are exact, so a reduction's order does not matter; only the sign of a zero
    /// could, which no caller looks at).
    ///
    /// # Safety
    /// AVX-512 F must be available; every row holds `d` floats; every range is non-empty and
    /// within the packed panels.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn group_tops(cb: &Codebook, rows: &[&[f32]; PAIRS], ranges: &[(usize, usize); PAIRS]) -> [GroupTop; PAIRS] {
        let d = cb.d;
        let np = cb.k.div_ceil(PANEL);
        for (r, &(p0, p1)) in ranges.iter().enumerate() {
            assert!(rows[r].len() == d && p0 < p1 && p1 <= np);
        }
        let init = State { b1: _mm512_set1_ps(f32::INFINITY), b2: _mm512_set1_ps(f32::INFINITY), i1: _mm512_setzero_si512() };
        let mut st = [init; PAIRS];
        let longest = ranges.iter().map(|&(p0, p1)| p1 - p0).max().unwrap_or(0);
        let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        for q in 0..longest {
            // A pair whose range is shorter recomputes its last panel and ignores it.
            let panel: [usize; PAIRS] = std::array::from_fn(|r| (ranges[r].0 + q).min(ranges[r].1 - 1));
            let w: [*const f32; PAIRS] = std::array::from_fn(|r| cb.panels.as_ptr().add(panel[r] * d).cast::<f32>());
            let mut acc = [_mm512_setzero_ps(); PAIRS];
            for t in 0..d {
                for r in 0..PAIRS {
                    acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(*rows[r].get_unchecked(t)), _mm512_load_ps(w[r].add(t * PANEL)), acc[r]);
                }
            }
            for r in 0..PAIRS {
                if ranges[r].0 + q >= ranges[r].1 {
                    continue;
                }
                let norm = _mm512_loadu_ps(cb.panel_norms.as_ptr().add(panel[r] * PANEL));
                let j = _mm512_add_epi32(_mm512_set1_epi32((panel[r] * PANEL) as i32), iota);
                let s = _mm512_fmadd_ps(_mm512_set1_ps(-2.0), acc[r], norm);
                let st = &mut st[r];
                let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(s, st.b1);
                st.b2 = _mm512_min_ps(_mm512_mask_blend_ps(gt, st.b1, s), st.b2);
                let lt = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(s, st.b1);
                st.b1 = _mm512_min_ps(s, st.b1);
                st.i1 = _mm512_mask_mov_epi32(st.i1, lt, j);
            }
        }
        std::array::from_fn(|r| {
            let s = st[r];
            let b1 = _mm512_reduce_min_ps(s.b1);
            let eq = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(s.b1, _mm512_set1_ps(b1));
            let i1 = _mm512_mask_reduce_min_epu32(eq, s.i1);
            let lane = eq & _mm512_cmpeq_epi32_mask(s.i1, _mm512_set1_epi32(i1 as i32));
            let second = _mm512_reduce_min_ps(_mm512_mask_blend_ps(lane, s.b1, s.b2));
            GroupTop { b1, i1, second }
        })
    }
}

simd::per_level!(run_job, job_body, (level: Level, j: &mut Job));
