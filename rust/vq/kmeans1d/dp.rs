//! The dynamic programme over the sorted distinct values (exact: every boundary; fast: a coarse
//! grid of candidate boundaries, then a finer grid within bands around the coarse boundaries)
//! and the sorted Lloyd refinement of the fast fit.
//!
//! One layer per cluster: `D[c][j] = min_i D[c-1][i] + cost(i, j)`, with `cost` the weighted SSE
//! of run `i..j` from prefix sums. The cost is a Monge array, so the first (smallest) optimal
//! split is monotone in `j` and at least the previous layer's split: each layer is solved by
//! divide and conquer on `j` (an explicit stack), and a block whose split range has narrowed to
//! [`SWEEP`] candidates is finished eight points at a time (`Layer::block`: the lanes are the
//! points, one pass over the shared split range). A single point's search is one pass of
//! [`argmin`], eight independent lanes of value and index. Both loops vectorise, every
//! compilation does the same IEEE operations, and ties go to the smallest split.
//!
//! Rows of unit weights without duplicates (the unweighted case) have `w[j] = j`: the cost's
//! `1 / (w[j] - w[i])` is then read from a table of reciprocals by a contiguous load instead of
//! a division (`Recip`; `a - ds * ds * (1 / d)` rounds differently from `a - ds * ds / d` by an
//! ulp, far inside the optimum's tolerance, and the same expression is used at every call site).
//! (Tried and measured slower: the previous group's split as a floor inside a block, two
//! accumulators per block, leaves of exactly eight points, skipping the range test in the
//! middle of a block: the per-group bookkeeping costs more than the candidates it saves. For the
//! fast fit's coarse DP: a table of every grid pair's cost filled before the layers, and
//! reciprocals of integer run weights gathered from a table instead of dividing: no faster.)

use super::sort::Scratch;

/// Lloyd iterations at most (`exact = false`).
pub const MAX_ITER: usize = 100;

/// Candidate boundaries of the coarse DP (`exact = false`).
pub const COARSE_GRID: usize = 64;

/// Candidate boundaries of the banded DP that refines the coarse one (`band_refine`).
pub const FINE_GRID: usize = 256;

/// Fine-grid points on either side of a coarse boundary that the banded DP considers.
pub const BAND: usize = 20;

/// Runs of the banded DP at most, each centred on the previous one's boundaries.
pub const BAND_PASSES: usize = 4;

/// A block of the divide and conquer whose split range holds at most this many candidates is
/// swept left to right instead of split further.
const SWEEP: usize = 24;

/// Lanes of [`argmin`].
const L: usize = 8;

/// `a - (sj - s)^2 / (wj - w)`, with `CAP` (rows with tiny weights, [`Scratch::tiny`])
/// `a - min((sj - s)^2 / (wj - w), qj - q)`, or with `U` (unit weights, `w` the reciprocal of
/// the run length) `a - (sj - s)^2 * w`: the same expression at every call site, so every
/// search (one point or a block of eight) rounds the same way.
///
/// Why the cap: a run's SSE `(qj - q) - (sj - s)^2 / (wj - w)` is at least zero
/// (Cauchy-Schwarz), but the run weight `wj - w` is a difference of prefix sums, off by up to
/// `m * eps` times the row's weight: a run lighter than that (a tiny weight after large ones:
/// `2^-52` after a prefix of 2) can come out as zero or a few ulps, and the quotient as anything
/// up to `+inf`, an SSE of `-inf` that wins every comparison. Capped at `qj - q` (an SSE of zero;
/// `0 / 0` too, as a NaN quotient fails `<`), such a run's SSE is off by at most its true SSE,
/// below (run weight) * (largest |u|)^2: the order of the prefix sums' own rounding error.
/// Rows whose every weight is at least `4 m eps` times the row's weight (always true of unit
/// weights and counts; true of weights spanning less than `1 / (4 m^2 eps)`, about 7e7 for
/// `m = 4096`) compute every run weight to a quarter of it or better, so the uncapped quotient
/// is off by the same order as the rest: they skip the two extra operations.
#[inline(always)]
fn cost<const U: bool, const CAP: bool>(a: f64, w: f64, s: f64, q: f64, wj: f64, sj: f64, qj: f64) -> f64 {
    let ds = sj - s;
    if U {
        a - ds * ds * w
    } else if CAP {
        let (t, dq) = (ds * ds / (wj - w), qj - q);
        a - if t < dq { t } else { dq }
    } else {
        a - ds * ds / (wj - w)
    }
}

/// The first minimum of `cost(a[i], w[i], s[i], q[i], wj, sj, qj)` ([`cost`]; slices of one
/// length; with `U`, unit weights, `w` holds the reciprocals of the run lengths) and its
/// index; `(inf, 0)` when no value is below infinity. Lane `l` keeps the first minimum of
/// indices `l mod L`; the lanes' smallest value, then smallest index, is the sequential first
/// minimum, so every compilation of this function (scalar or vector) gives the same result.
#[inline(always)]
pub fn argmin<const U: bool, const CAP: bool>(a: &[f64], w: &[f64], s: &[f64], q: &[f64], wj: f64, sj: f64, qj: f64) -> (f64, usize) {
    let mut best = [f64::INFINITY; L];
    let mut idx = [f64::INFINITY; L];
    let n = a.len();
    let full = n - n % L;
    let (a, w, s, q) = (&a[..n], &w[..n], &s[..n], &q[..n]);
    let mut base = 0;
    while base < full {
        let (ca, cw, cs, cq) = (&a[base..base + L], &w[base..base + L], &s[base..base + L], &q[base..base + L]);
        let fb = base as f64;
        for l in 0..L {
            let v = cost::<U, CAP>(ca[l], cw[l], cs[l], cq[l], wj, sj, qj);
            let lt = v < best[l];
            best[l] = if lt { v } else { best[l] };
            idx[l] = if lt { fb + l as f64 } else { idx[l] };
        }
        base += L;
    }
    for l in 0..n - full {
        let v = cost::<U, CAP>(a[full + l], w[full + l], s[full + l], q[full + l], wj, sj, qj);
        if v < best[l] {
            best[l] = v;
            idx[l] = (full + l) as f64;
        }
    }
    let (mut bv, mut bi) = (f64::INFINITY, f64::INFINITY);
    for l in 0..L {
        if best[l] < bv || (best[l] == bv && idx[l] < bi) {
            bv = best[l];
            bi = idx[l];
        }
    }
    (bv, if bi.is_finite() { bi as usize } else { 0 })
}

/// The DP on a grid of candidate boundaries: prefix sums gathered at the grid points, the
/// previous layer (`a[i] = D[c-1][i] - q[i]`) and the current one.
#[derive(Default)]
pub struct Dp {
    grid: Vec<usize>,
    w: Vec<f64>,
    s: Vec<f64>,
    q: Vec<f64>,
    a: Vec<f64>,
    cur: Vec<f64>,
    /// `opt[c * (g + 1) + j]`: the start of the last run of the best `c + 1` runs of points `..j`.
    opt: Vec<u32>,
    stack: Vec<[usize; 4]>,
    recip: Recip,
    /// The windows of [`band_refine`].
    lo: Vec<usize>,
    hi: Vec<usize>,
}

/// One layer: `cur[j] = min_i a[i] - (s_j - s_i)^2 / (w_j - w_i) + q_j` and its first split
/// `opt[j]`, for `j` in `jlo..=jhi`, split in `olo..j`, at least `prev_opt[j]`.
struct Layer<'a, const U: bool, const CAP: bool> {
    w: &'a [f64],
    s: &'a [f64],
    q: &'a [f64],
    a: &'a [f64],
    prev_opt: &'a [u32],
    cur: &'a mut [f64],
    opt: &'a mut [u32],
    recip: &'a Recip,
}

/// Reciprocals of run lengths for rows of unit weights (`w[j] = j`), read by contiguous loads
/// instead of dividing: `fwd[PAD + d] = 1 / d` (zero below `d = 1`, where the block lanes past
/// their range read) and `rev[t] = 1 / (n - t)`, so `rev[n - j + i] = 1 / (j - i)`.
#[derive(Default)]
pub struct Recip {
    fwd: Vec<f64>,
    rev: Vec<f64>,
    n: usize,
}

/// Entries of [`Recip::fwd`] below `d = 0`.
const PAD: usize = L;

impl Recip {
    /// Makes the tables cover runs of up to `n` points (kept when already large enough).
    fn reserve(&mut self, n: usize) {
        if self.n >= n && !self.rev.is_empty() {
            return;
        }
        self.n = n;
        self.fwd.clear();
        self.fwd.extend((0..PAD + n + 2 * L).map(|t| if t > PAD { 1.0 / (t - PAD) as f64 } else { 0.0 }));
        self.rev.clear();
        self.rev.extend((0..=n).map(|t| if t < n { 1.0 / (n - t) as f64 } else { 0.0 }));
    }
}

impl<const U: bool, const CAP: bool> Layer<'_, U, CAP> {
    /// The best split of `j` in `lo..=hi` (rounding may break monotonicity by a hair: `lo` is
    /// clamped so the range is never empty).
    #[inline(always)]
    fn point(&mut self, j: usize, lo: usize, hi: usize) -> usize {
        let lo = lo.max(self.prev_opt[j] as usize).min(hi);
        let r = lo..hi + 1;
        let w = if U { &self.recip.rev[self.recip.n - j..][r.clone()] } else { &self.w[r.clone()] };
        let a = &self.a[r.clone()];
        let q = if CAP { &self.q[r.clone()] } else { a }; // `q` is only read with `CAP`
        let (v, i) = argmin::<U, CAP>(a, w, &self.s[r], q, self.w[j], self.s[j], self.q[j]);
        self.cur[j] = v + self.q[j];
        self.opt[j] = (lo + i) as u32;
        lo + i
    }

    /// Points `jlo..=jhi` whose splits lie in `olo..=ohi`, eight at a time: the lanes are the
    /// points, one pass over the split range (no reduction across lanes), each lane restricted
    /// to its own `lo..=hi` as in [`Layer::point`].
    #[inline(always)]
    fn block(&mut self, jlo: usize, jhi: usize, olo: usize, ohi: usize) {
        for j0 in (jlo..=jhi).step_by(L) {
            let (mut lo, mut hi) = ([1.0f64; L], [0.0f64; L]); // empty lanes past jhi
            let (mut wj, mut sj, mut qj) = ([1.0f64; L], [0.0f64; L], [0.0f64; L]);
            let (mut imin, mut imax) = (ohi, olo);
            for l in 0..L.min(jhi + 1 - j0) {
                let j = j0 + l;
                let h = ohi.min(j - 1);
                let lw = olo.max(self.prev_opt[j] as usize).min(h);
                (lo[l], hi[l], wj[l], sj[l]) = (lw as f64, h as f64, self.w[j], self.s[j]);
                if CAP {
                    qj[l] = self.q[j];
                }
                (imin, imax) = (imin.min(lw), imax.max(h));
            }
            let (mut best, mut idx) = ([f64::INFINITY; L], [0.0f64; L]);
            for i in imin..=imax {
                let (ai, wi, si, fi) = (self.a[i], self.w[i], self.s[i], i as f64);
                let qi = if CAP { self.q[i] } else { 0.0 };
                // Unit weights: lane `l` divides by `j0 + l - i` (at least `-6` on lanes outside their range).
                let r: &[f64] = if U { &self.recip.fwd[PAD + j0 - i..][..L] } else { &[0.0; L] };
                for l in 0..L {
                    let v = if U {
                        cost::<true, false>(ai, r[l], si, 0.0, 0.0, sj[l], 0.0)
                    } else {
                        cost::<false, CAP>(ai, wi, si, qi, wj[l], sj[l], qj[l])
                    };
                    let take = (v < best[l]) & (fi >= lo[l]) & (fi <= hi[l]);
                    best[l] = if take { v } else { best[l] };
                    idx[l] = if take { fi } else { idx[l] };
                }
            }
            for l in 0..L.min(jhi + 1 - j0) {
                self.cur[j0 + l] = best[l] + self.q[j0 + l];
                self.opt[j0 + l] = if best[l] < f64::INFINITY { idx[l] } else { lo[l] } as u32;
            }
        }
    }

    #[inline(always)]
    fn solve(&mut self, stack: &mut Vec<[usize; 4]>, jlo: usize, jhi: usize, olo: usize, ohi: usize) {
        stack.clear();
        stack.push([jlo, jhi, olo, ohi]);
        while let Some([jlo, jhi, olo, ohi]) = stack.pop() {
            if ohi - olo < SWEEP {
                self.block(jlo, jhi, olo, ohi);
                continue;
            }
            if jhi - jlo < 2 {
                let mut lo = olo;
                for j in jlo..=jhi {
                    lo = self.point(j, lo, ohi.min(j - 1));
                }
                continue;
            }
            let mid = jlo + (jhi - jlo) / 2;
            let arg = self.point(mid, olo, ohi.min(mid - 1));
            stack.push([mid + 1, jhi, arg, ohi]);
            if mid > jlo {
                stack.push([jlo, mid - 1, olo, arg]);
            }
        }
    }
}

/// [`Layer::solve`] with capped costs, out of line: rows with tiny weights are rare, and
/// inlining a third copy of the layer into every SIMD level's fit slowed the other two by 1-2%.
/// (Compiled for the baseline instruction set: the same IEEE operations, the same results.)
#[cold]
#[inline(never)]
fn solve_capped(mut layer: Layer<'_, false, true>, stack: &mut Vec<[usize; 4]>, jlo: usize, jhi: usize, olo: usize, ohi: usize) {
    layer.solve(stack, jlo, jhi, olo, ohi);
}

/// The candidate boundaries: every point (`exact`, or few points), else `size / 2` equal-count
/// positions (at least `kk`) and as many at equally spaced values (the tails). (The equal-count
/// and equally spaced points of a grid of `size` are among those of a grid of `4 * size`.)
fn coarse_grid(s: &Scratch, grid: &mut Vec<usize>, kk: usize, exact: bool, size: usize) {
    let m = s.u.len();
    grid.clear();
    if exact || m <= size.max(kk) {
        grid.extend(0..=m);
        return;
    }
    let (h1, h2) = ((size / 2).max(kk), size / 2);
    let (lo, hi) = (s.u[0], s.u[m - 1]);
    grid.extend((0..=h1).map(|t| t * m / h1));
    grid.extend((1..h2).map(|t| s.u.partition_point(|&v| v < lo + (hi - lo) * t as f64 / h2 as f64)));
    grid.sort(); // two ascending runs: the stable sort merges them in one pass
    grid.dedup();
}

/// The best `kk`-run partition of the loaded values with boundaries on the candidate grid
/// ([`coarse_grid`]; exact: every point, the optimum) into `s.bounds` (`kk <= m`).
#[inline(always)]
pub fn dp_bounds(s: &mut Scratch, d: &mut Dp, kk: usize, exact: bool) {
    let m = s.u.len();
    coarse_grid(s, &mut d.grid, kk, exact, COARSE_GRID);
    let g = d.grid.len() - 1;
    gather_grid(s, d);
    let stride = g + 1;
    d.opt.clear();
    d.opt.resize(kk * stride, 0);
    d.a.clear();
    d.a.resize(stride, f64::INFINITY);
    d.cur.clear();
    d.cur.resize(stride, f64::INFINITY);
    // One run: D[0][j] = q_j - s_j^2 / w_j; a = D - q.
    for j in 1..=g - (kk - 1) {
        d.a[j] = -(d.s[j] * d.s[j] / d.w[j]);
    }
    // Every point of unit weight (no weights, no duplicates): `w[j] = j`, reciprocals from a table.
    let unit = exact && s.c.iter().all(|&c| c == 1.0);
    let tiny = s.tiny;
    if unit {
        d.recip.reserve(g);
    }
    for c in 1..kk {
        // `c + 1` runs cover points ..j for j in c+1 ..= g - (kk - c - 1); the last layer needs j = g only.
        let (jlo, jhi) = if c + 1 == kk { (g, g) } else { (c + 1, g - (kk - c - 1)) };
        let (done, rest) = d.opt.split_at_mut(c * stride);
        let (prev_opt, opt) = (&done[(c - 1) * stride..], &mut rest[..stride]);
        let (w, s, q, a, cur, recip) = (&d.w[..], &d.s[..], &d.q[..], &d.a[..], &mut d.cur[..], &d.recip);
        if unit {
            Layer::<true, false> { w, s, q, a, prev_opt, cur, opt, recip }.solve(&mut d.stack, jlo, jhi, c, jhi - 1);
        } else if tiny {
            solve_capped(Layer { w, s, q, a, prev_opt, cur, opt, recip }, &mut d.stack, jlo, jhi, c, jhi - 1);
        } else {
            Layer::<false, false> { w, s, q, a, prev_opt, cur, opt, recip }.solve(&mut d.stack, jlo, jhi, c, jhi - 1);
        }
        for ((a, cur), &q) in d.a.iter_mut().zip(d.cur.iter_mut()).zip(&d.q) {
            *a = *cur - q;
            *cur = f64::INFINITY;
        }
    }
    s.bounds.clear();
    s.bounds.resize(kk + 1, 0);
    s.bounds[kk] = m;
    let mut j = g;
    for c in (1..kk).rev() {
        j = d.opt[c * stride + j] as usize;
        s.bounds[c] = d.grid[j];
    }
}

/// The prefix sums at the grid points.
fn gather_grid(s: &Scratch, d: &mut Dp) {
    for (dst, src) in [(&mut d.w, &s.pw), (&mut d.s, &s.ps), (&mut d.q, &s.pq)] {
        dst.clear();
        dst.extend(d.grid.iter().map(|&t| src[t]));
    }
}

/// Refines the coarse DP's boundaries in `s.bounds` by the same DP on the [`FINE_GRID`], each
/// boundary restricted to the [`BAND`] fine points either side of its current position (about
/// `(2 BAND + 1)^2 / 2` candidates a layer, eight points searched at a time from the previous
/// group's last split); while a boundary ends on the edge of its band, the bands move there and the DP runs
/// again (at most [`BAND_PASSES`] times). For `k <= COARSE_GRID / 2` the coarse grid is part of
/// the fine one, so the coarse boundaries lie in the first bands and the result is never worse
/// than the coarse one (up to rounding); on Student-t rows it is as good as the full DP on the
/// fine grid at a third of the cost.
pub fn band_refine(s: &mut Scratch, d: &mut Dp, kk: usize) {
    let m = s.u.len();
    if kk < 2 || m <= COARSE_GRID.max(kk) {
        return; // the coarse DP ran on every point: already the optimum
    }
    coarse_grid(s, &mut d.grid, kk, false, FINE_GRID);
    gather_grid(s, d);
    for _ in 0..BAND_PASSES {
        band_windows(s, d, kk);
        if !(if s.tiny { band_dp::<true>(s, d, kk) } else { band_dp::<false>(s, d, kk) }) {
            break;
        }
    }
}

/// The bands `d.lo[c]..=d.hi[c]` (fine-grid indices) around each boundary of `s.bounds`: its
/// fine position, made strictly increasing with room for the runs around it, `BAND` either side.
fn band_windows(s: &Scratch, d: &mut Dp, kk: usize) {
    let g = d.grid.len() - 1;
    let (lo, hi) = (&mut d.lo, &mut d.hi);
    lo.clear();
    lo.resize(kk + 1, 0);
    hi.clear();
    hi.resize(kk + 1, 0);
    (lo[kk], hi[kk]) = (g, g);
    for c in 1..kk {
        lo[c] = d.grid.partition_point(|&t| t < s.bounds[c]).max(lo[c - 1] + 1);
    }
    for c in (1..kk).rev() {
        lo[c] = lo[c].min(lo[c + 1] - 1);
    }
    for c in 1..kk {
        let f = lo[c];
        (lo[c], hi[c]) = (f.saturating_sub(BAND).max(c), (f + BAND).min(g - (kk - c)));
    }
}

/// The DP within the bands; writes the boundaries into `s.bounds` and returns whether one of
/// them lies on an edge of its band that `BAND` (not the row) imposed.
fn band_dp<const CAP: bool>(s: &mut Scratch, d: &mut Dp, kk: usize) -> bool {
    let g = d.grid.len() - 1;
    let (lo, hi) = (&d.lo, &d.hi);
    let width = 2 * BAND + 1;
    d.opt.clear();
    d.opt.resize(kk * width, 0);
    // a[j - lo[c]] = D[c][j] - q[j]; one run: -s_j^2 / w_j.
    d.a.clear();
    d.a.extend((lo[1]..=hi[1]).map(|j| -(d.s[j] * d.s[j] / d.w[j])));
    for c in 2..=kk {
        d.cur.clear();
        // Eight points at a time (lanes), one pass over their candidates. The first optimal
        // split is monotone in `j`: the previous group's last split bounds the group's (on the
        // rare rounding that breaks monotonicity this only restricts a heuristic).
        let (plo, phi) = (lo[c - 1], hi[c - 1]);
        let mut from = plo;
        for j0 in (lo[c]..=hi[c]).step_by(L) {
            let nl = L.min(hi[c] + 1 - j0);
            let (mut wj, mut sj, mut qj, mut top) = ([1.0f64; L], [0.0f64; L], [0.0f64; L], [-1.0f64; L]); // empty lanes: no candidate
            for l in 0..nl {
                (wj[l], sj[l], top[l]) = (d.w[j0 + l], d.s[j0 + l], phi.min(j0 + l - 1) as f64);
                if CAP {
                    qj[l] = d.q[j0 + l];
                }
            }
            let (mut best, mut idx) = ([f64::INFINITY; L], [0.0f64; L]);
            for i in from..=phi.min(j0 + nl - 2) {
                let (ai, wi, si, fi) = (d.a[i - plo], d.w[i], d.s[i], i as f64);
                let qi = if CAP { d.q[i] } else { 0.0 };
                for l in 0..L {
                    let v = cost::<false, CAP>(ai, wi, si, qi, wj[l], sj[l], qj[l]);
                    let take = (v < best[l]) & (fi <= top[l]);
                    best[l] = if take { v } else { best[l] };
                    idx[l] = if take { fi } else { idx[l] };
                }
            }
            for l in 0..nl {
                let arg = if best[l] < f64::INFINITY { idx[l] as usize } else { from };
                d.cur.push(best[l]);
                d.opt[(c - 1) * width + j0 + l - lo[c]] = arg as u32;
            }
            if let Some(l) = (0..nl).rev().find(|&l| best[l] < f64::INFINITY) {
                from = idx[l] as usize;
            }
        }
        std::mem::swap(&mut d.a, &mut d.cur);
    }
    let mut j = g;
    let mut edge = false;
    for c in (1..kk).rev() {
        j = d.opt[c * width + j - lo[c + 1]] as usize;
        s.bounds[c] = d.grid[j];
        edge |= (j == lo[c] && lo[c] > c) || (j == hi[c] && hi[c] < g - (kk - c));
    }
    edge
}

/// `v` clamped to `lo..=hi` (`lo <= hi`); NaN gives `lo`.
#[inline(always)]
fn clamp(v: f64, lo: f64, hi: f64) -> f64 {
    let v = if v > lo { v } else { lo };
    if v < hi {
        v
    } else {
        hi
    }
}

/// Sorted Lloyd from the boundaries in `s.bounds` (`kk <= m` runs), in place.
pub fn lloyd_refine(s: &mut Scratch, kk: usize) {
    s.cent.clear();
    s.cent.resize(kk, 0.0);
    for _ in 0..MAX_ITER {
        for c in 0..kk {
            let (i, j) = (s.bounds[c], s.bounds[c + 1]);
            // An empty run keeps its centroid. In a row with tiny weights a light run can get a
            // mean far outside its values (or NaN: `0 / 0`) from the prefix differences
            // ([`cost`]): it is clamped to the run's range, where the true mean lies (NaN goes
            // to the lowest value).
            if j > i {
                let mean = (s.ps[j] - s.ps[i]) / (s.pw[j] - s.pw[i]);
                s.cent[c] = if s.tiny { clamp(mean, s.u[i], s.u[j - 1]) } else { mean };
            }
        }
        let mut moved = false;
        for c in 1..kk {
            let mid = 0.5 * (s.cent[c - 1] + s.cent[c]);
            let b = s.u.partition_point(|&v| v <= mid).max(s.bounds[c - 1]);
            moved |= b != s.bounds[c];
            s.bounds[c] = b;
        }
        if !moved {
            break;
        }
    }
}
