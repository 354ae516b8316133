//! Batched 1-D k-means: every row of a matrix gets its own codebook of `k` scalars (SqueezeLLM /
//! Deep Compression weight sharing), fitted exactly or by a fast sorted Lloyd.
//!
//! Why a dedicated solver: in one dimension the optimal clusters are contiguous runs of the
//! sorted values, so the weighted sum of squared errors (SSE) can be minimised exactly by dynamic
//! programming instead of the local search of a general k-means.
//!
//! Per row:
//! 1. Values are sorted with their weights; equal values are merged (weights added), points of
//!    weight zero are dropped (they do not change the weighted SSE). A row whose weights are all
//!    zero is fitted with unit weights (its weighted SSE is zero whatever the codebook).
//! 2. Prefix sums of `w`, `w*x`, `w*x^2` in f64 (values shifted by the row's middle sorted value
//!    against cancellation) give the SSE of any run in O(1).
//! 3. `exact`: the DP `D[c][j] = min_i D[c-1][i] + cost(i, j)` over the `m` distinct values, one
//!    layer per cluster, each layer by divide and conquer on the monotone split point with the
//!    previous layer's split as a lower bound: O(k * m log m) time, a `k * m` table of splits for
//!    backtracking (ties go to the smallest split). Not exact: the same DP restricted to a coarse
//!    grid of candidate boundaries ([`COARSE_GRID`]: equal-count positions plus equally spaced
//!    values, so the heavy tails of weight matrices get boundaries too), then sorted Lloyd from
//!    there: each iteration puts the boundaries at the midpoints between centroids (binary
//!    search on the sorted values, a point on a midpoint goes to the lower cluster) and
//!    recomputes centroids from the prefix sums, O(k log m), until no boundary moves or after
//!    [`MAX_ITER`] iterations. (Lloyd from the weighted quantiles alone stalls about 15% above
//!    the optimum on Student-t rows.)
//! 4. Centroids are the weighted means of the runs, rounded to f32, ascending. With fewer
//!    distinct (positive-weight) values `m` than `k` (a constant row, duplicates), the first `m`
//!    slots hold the distinct values and the rest repeat the last one. `k` above the row length
//!    is an error (it would only repeat slots, and the codebook could outgrow the input).
//! 5. Codes: each element (zero-weight ones included) gets its nearest centroid of the stored f32
//!    codebook, distances `|x - c|` in f64, ties to the lowest index. This is the DP's partition
//!    except where rounding the centroids to f32 moves an element that sat (almost) exactly
//!    between two of them. `inertia` is the weighted SSE of those codes in f64: what
//!    dequantizing the row costs.
//!
//! Rows run in parallel in fixed chunks, each row on its own, so results never depend on the
//! thread count.

use crate::error::{invalid, Error, Result};
use crate::parallel;
use crate::scalar::search::Weights;

/// Lloyd iterations at most (`exact = false`).
pub const MAX_ITER: usize = 100;

/// Candidate boundaries of the coarse DP that starts Lloyd (`exact = false`).
pub const COARSE_GRID: usize = 256;

/// The most split entries (`min(k, row_len) * (row_len + 1)`) an exact fit may keep per row:
/// 2^27 (512 MiB of u32); beyond it use `exact = false`.
pub const MAX_TABLE: usize = 1 << 27;

/// An unsigned code type (u8, u16, u32): what a code array holds.
pub trait Code: Copy + Send + Sync {
    /// The largest code the type holds.
    const MAX: usize;
    /// `i` as a code; the caller keeps `i <= MAX`.
    fn from_index(i: usize) -> Self;
}

macro_rules! code_impl {
    ($t:ty) => {
        impl Code for $t {
            const MAX: usize = <$t>::MAX as usize;
            #[inline]
            fn from_index(i: usize) -> Self {
                i as $t
            }
        }
    };
}
code_impl!(u8);
code_impl!(u16);
code_impl!(u32);

/// Buffers reused for every row of a chunk.
#[derive(Default)]
struct Scratch {
    pairs: Vec<(f32, f32)>,
    /// Distinct sorted values, shifted by `shift`, and their summed weights.
    u: Vec<f64>,
    c: Vec<f64>,
    shift: f64,
    /// Prefix sums (length `m + 1`) of `c`, `c*u`, `c*u^2`.
    pw: Vec<f64>,
    ps: Vec<f64>,
    pq: Vec<f64>,
    /// Run boundaries `b[0] = 0 < b[1] < ... < b[kk] = m`.
    bounds: Vec<usize>,
    cent: Vec<f64>,
}

impl Scratch {
    /// Sorts the row with its weights, drops zero weights (unless all are zero: then unit
    /// weights), merges equal values and builds the prefix sums. Returns `m`.
    fn load(&mut self, x: &[f32], w: &[f32]) -> usize {
        let all_zero = w.iter().all(|&v| v == 0.0);
        self.pairs.clear();
        // `+ 0.0` turns -0.0 into +0.0 so the two merge.
        self.pairs
            .extend(x.iter().zip(w).filter(|(_, &wi)| all_zero || wi > 0.0).map(|(&xi, &wi)| (xi + 0.0, if all_zero { 1.0 } else { wi })));
        self.pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        self.u.clear();
        self.c.clear();
        for &(xi, wi) in &self.pairs {
            match self.u.last() {
                Some(&last) if last == xi as f64 => *self.c.last_mut().expect("u and c grow together") += wi as f64,
                _ => {
                    self.u.push(xi as f64);
                    self.c.push(wi as f64);
                }
            }
        }
        let m = self.u.len();
        self.shift = self.u[m / 2];
        let shift = self.shift;
        self.u.iter_mut().for_each(|v| *v -= shift);
        for p in [&mut self.pw, &mut self.ps, &mut self.pq] {
            p.clear();
            p.push(0.0);
        }
        let (mut sw, mut ss, mut sq) = (0.0f64, 0.0f64, 0.0f64);
        for (&ui, &ci) in self.u.iter().zip(&self.c) {
            sw += ci;
            ss += ci * ui;
            sq += ci * ui * ui;
            self.pw.push(sw);
            self.ps.push(ss);
            self.pq.push(sq);
        }
        m
    }
}

/// The minimum of `vals` (`+inf` if empty or all NaN), in four independent lanes so the
/// comparisons pipeline (and vectorise) instead of forming one long chain.
#[inline]
fn first_min(vals: &[f64]) -> f64 {
    let mut lane = [f64::INFINITY; 4];
    let chunks = vals.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..4 {
            lane[l] = if c[l] < lane[l] { c[l] } else { lane[l] };
        }
    }
    let best = tail.iter().fold(f64::INFINITY, |b, &v| if v < b { v } else { b });
    lane.iter().fold(best, |b, &v| if v < b { v } else { b })
}

/// The DP on a grid of candidate boundaries: prefix sums gathered at the grid points, the
/// previous layer (`a[i] = D[c-1][i] - q[i]`) and the current one.
#[derive(Default)]
struct Dp {
    grid: Vec<usize>,
    w: Vec<f64>,
    s: Vec<f64>,
    q: Vec<f64>,
    a: Vec<f64>,
    cur: Vec<f64>,
    vals: Vec<f64>,
    /// `opt[c * (g + 1) + j]`: the start of the last run of the best `c + 1` runs of points `..j`.
    opt: Vec<u32>,
}

/// One layer of the DP: `cur[j] = min_i a[i] - (s_j - s_i)^2 / (w_j - w_i) + q_j`, the split
/// searched by divide and conquer, at least the previous layer's split at `j`.
struct Layer<'a> {
    w: &'a [f64],
    s: &'a [f64],
    q: &'a [f64],
    a: &'a [f64],
    prev_opt: &'a [u32],
    cur: &'a mut [f64],
    opt: &'a mut [u32],
    vals: &'a mut [f64],
}

impl Layer<'_> {
    fn solve(&mut self, jlo: usize, jhi: usize, olo: usize, ohi: usize) {
        if jlo > jhi {
            return;
        }
        let mid = jlo + (jhi - jlo) / 2;
        let hi = ohi.min(mid - 1);
        // Rounding may break the monotone split by a hair: never scan an empty range.
        let lo = olo.max(self.prev_opt[mid] as usize).min(hi);
        let (wj, sj) = (self.w[mid], self.s[mid]);
        let n = hi + 1 - lo;
        // Two passes: the values (a loop the compiler vectorises), then the first minimum.
        let vals = &mut self.vals[..n];
        for (((v, &a), &w), &s) in vals.iter_mut().zip(&self.a[lo..=hi]).zip(&self.w[lo..=hi]).zip(&self.s[lo..=hi]) {
            let ds = sj - s;
            *v = a - ds * ds / (wj - w);
        }
        let best = first_min(vals);
        // The first index holding the minimum (ties to the smallest split).
        let arg = lo + vals.iter().position(|&v| v == best).unwrap_or(0);
        self.cur[mid] = best + self.q[mid];
        self.opt[mid] = arg as u32;
        if mid > jlo {
            self.solve(jlo, mid - 1, olo, arg);
        }
        self.solve(mid + 1, jhi, arg, ohi);
    }
}

/// The candidate boundaries: every point (`exact`, or few points), else [`COARSE_GRID`] / 2
/// equal-count positions (at least `kk`) and as many at equally spaced values (the tails).
fn coarse_grid(s: &Scratch, grid: &mut Vec<usize>, kk: usize, exact: bool) {
    let m = s.u.len();
    grid.clear();
    if exact || m <= COARSE_GRID.max(kk) {
        grid.extend(0..=m);
        return;
    }
    let (h1, h2) = ((COARSE_GRID / 2).max(kk), COARSE_GRID / 2);
    let (lo, hi) = (s.u[0], s.u[m - 1]);
    grid.extend((0..=h1).map(|t| t * m / h1));
    grid.extend((1..h2).map(|t| s.u.partition_point(|&v| v < lo + (hi - lo) * t as f64 / h2 as f64)));
    grid.sort_unstable();
    grid.dedup();
}

/// The best `kk`-run partition of the loaded values with boundaries on the candidate grid
/// ([`coarse_grid`]; exact: every point, the optimum) into `s.bounds` (`kk <= m`).
fn dp_bounds(s: &mut Scratch, d: &mut Dp, kk: usize, exact: bool) {
    let m = s.u.len();
    coarse_grid(s, &mut d.grid, kk, exact);
    let g = d.grid.len() - 1;
    for (dst, src) in [(&mut d.w, &s.pw), (&mut d.s, &s.ps), (&mut d.q, &s.pq)] {
        dst.clear();
        dst.extend(d.grid.iter().map(|&t| src[t]));
    }
    let stride = g + 1;
    d.opt.clear();
    d.opt.resize(kk * stride, 0);
    d.a.clear();
    d.a.resize(stride, f64::INFINITY);
    d.cur.clear();
    d.cur.resize(stride, f64::INFINITY);
    d.vals.resize(stride, 0.0);
    // One run: D[0][j] = q_j - s_j^2 / w_j; a = D - q.
    for j in 1..=g - (kk - 1) {
        d.a[j] = -(d.s[j] * d.s[j] / d.w[j]);
    }
    for c in 1..kk {
        // `c + 1` runs cover points ..j for j in c+1 ..= g - (kk - c - 1); the last layer needs j = g only.
        let (jlo, jhi) = if c + 1 == kk { (g, g) } else { (c + 1, g - (kk - c - 1)) };
        let (done, rest) = d.opt.split_at_mut(c * stride);
        let mut layer = Layer {
            w: &d.w,
            s: &d.s,
            q: &d.q,
            a: &d.a,
            prev_opt: &done[(c - 1) * stride..],
            cur: &mut d.cur,
            opt: &mut rest[..stride],
            vals: &mut d.vals,
        };
        layer.solve(jlo, jhi, c, jhi - 1);
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

/// Sorted Lloyd from the boundaries in `s.bounds` (`kk <= m` runs), in place.
fn lloyd_refine(s: &mut Scratch, kk: usize) {
    s.cent.clear();
    s.cent.resize(kk, 0.0);
    for _ in 0..MAX_ITER {
        for c in 0..kk {
            let (i, j) = (s.bounds[c], s.bounds[c + 1]);
            // An empty run keeps its centroid.
            if j > i {
                s.cent[c] = (s.ps[j] - s.ps[i]) / (s.pw[j] - s.pw[i]);
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

/// Fits one row (`x`, weights `w` of the same length) into `cb` (k values) and `codes`;
/// returns the weighted SSE.
fn fit_row<C: Code>(s: &mut Scratch, d: &mut Dp, x: &[f32], w: &[f32], exact: bool, cb: &mut [f32], codes: &mut [C]) -> f64 {
    let k = cb.len();
    let m = s.load(x, w);
    let kk = k.min(m);
    if exact {
        dp_bounds(s, d, kk, true);
    } else {
        dp_bounds(s, d, kk, false);
        lloyd_refine(s, kk);
    }
    let mut n_distinct = 0;
    for c in 0..kk {
        let (i, j) = (s.bounds[c], s.bounds[c + 1]);
        if j == i {
            continue; // an empty Lloyd run: no centroid
        }
        let (sw, su) = (i..j).fold((0.0f64, 0.0f64), |(a, b), t| (a + s.c[t], b + s.c[t] * s.u[t]));
        let v = (su / sw + s.shift) as f32;
        if n_distinct == 0 || v > cb[n_distinct - 1] {
            cb[n_distinct] = v;
            n_distinct += 1;
        }
    }
    let last = cb[n_distinct - 1];
    cb[n_distinct..].iter_mut().for_each(|v| *v = last);
    assign_row(&cb[..n_distinct], x, w, codes)
}

/// Nearest centroid of the strictly ascending `cb` for every element, ties to the lower index;
/// returns `sum w (x - cb[code])^2` in f64.
fn assign_row<C: Code>(cb: &[f32], x: &[f32], w: &[f32], codes: &mut [C]) -> f64 {
    let mut sse = 0.0f64;
    for ((&xi, &wi), code) in x.iter().zip(w).zip(codes.iter_mut()) {
        let p = cb.partition_point(|&c| c < xi);
        let xd = xi as f64;
        let (j, d) = if p == 0 {
            (0, cb[0] as f64 - xd)
        } else if p == cb.len() {
            (p - 1, xd - cb[p - 1] as f64)
        } else {
            let (dl, dr) = (xd - cb[p - 1] as f64, cb[p] as f64 - xd);
            if dl <= dr {
                (p - 1, dl)
            } else {
                (p, dr)
            }
        };
        *code = C::from_index(j);
        sse += wi as f64 * d * d;
    }
    sse
}

/// Rows per parallel job: fixed by the input (about 64K values a job), never by the thread count.
fn rows_per_job(row_len: usize) -> usize {
    (65_536 / row_len).max(1)
}

/// Checks shapes, parameters and values of a fit.
fn validate<C: Code>(x: &[f32], row_len: usize, k: usize, weights: &Weights<'_>, exact: bool) -> Result<usize> {
    if row_len == 0 || !x.len().is_multiple_of(row_len) {
        return Err(Error::Shape(format!("{} values do not form rows of {row_len}", x.len())));
    }
    if k == 0 || k > C::MAX + 1 {
        return Err(invalid!("k must be between 1 and {}, got {k}", C::MAX + 1));
    }
    if k > row_len {
        return Err(invalid!("k={k} clusters for rows of {row_len} values: k must not exceed the row length"));
    }
    if exact && k.min(row_len).saturating_mul(row_len + 1) > MAX_TABLE {
        return Err(invalid!("an exact fit of k={k} on rows of {row_len} values needs too large a table; use exact=False"));
    }
    weights.validate(x.len())?;
    if let Some(index) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite { index });
    }
    Ok(x.len() / row_len)
}

/// Fits a k-means codebook to every row of `x` (rows of `row_len` values): `codebook` gets `k`
/// ascending f32 centroids a row, `codes` one index a value, `inertia` the weighted SSE a row.
/// `weights`: none, one per value, or one per position in the row (the same for every row).
#[allow(clippy::too_many_arguments)]
pub fn kmeans1d_into<C: Code>(
    x: &[f32],
    row_len: usize,
    k: usize,
    weights: Weights<'_>,
    exact: bool,
    codebook: &mut [f32],
    codes: &mut [C],
    inertia: &mut [f64],
) -> Result<()> {
    let rows = validate::<C>(x, row_len, k, &weights, exact)?;
    if codebook.len() != rows * k || codes.len() != x.len() || inertia.len() != rows {
        return Err(Error::Shape(format!("output buffers do not fit {rows} rows of {row_len} values and k={k}")));
    }
    let per = rows_per_job(row_len);
    let jobs: Vec<_> = codebook
        .chunks_mut(per * k)
        .zip(codes.chunks_mut(per * row_len))
        .zip(inertia.chunks_mut(per))
        .enumerate()
        .map(|(i, ((cb, c), e))| (i * per, cb, c, e))
        .collect();
    parallel::try_for_each(jobs, |(row0, cb, codes, inertia)| {
        let (mut s, mut d) = (Scratch::default(), Dp::default());
        let mut wbuf = Vec::new();
        for (r, ((cb, codes), e)) in cb.chunks_mut(k).zip(codes.chunks_mut(row_len)).zip(inertia.iter_mut()).enumerate() {
            let start = (row0 + r) * row_len;
            let w = weights.group(start, row_len, &mut wbuf);
            *e = fit_row(&mut s, &mut d, &x[start..start + row_len], w, exact, cb, codes);
        }
        Ok(())
    })
}

/// An owned result: `codebook` (`rows * k`), `codes` (one a value), `inertia` (one a row).
#[derive(Clone, Debug, PartialEq)]
pub struct Fit {
    pub codebook: Vec<f32>,
    pub codes: Vec<u32>,
    pub inertia: Vec<f64>,
}

/// [`kmeans1d_into`] into new buffers with u32 codes.
pub fn kmeans1d(x: &[f32], row_len: usize, k: usize, weights: Weights<'_>, exact: bool) -> Result<Fit> {
    let rows = validate::<u32>(x, row_len, k, &weights, exact)?;
    let mut fit = Fit { codebook: vec![0.0; rows * k], codes: vec![0; x.len()], inertia: vec![0.0; rows] };
    kmeans1d_into(x, row_len, k, weights, exact, &mut fit.codebook, &mut fit.codes, &mut fit.inertia)?;
    Ok(fit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The weighted SSE of the best partition of sorted (value, weight) pairs into at most `k`
    /// runs, by the plain O(k n^2) DP.
    fn brute_sse(x: &[f32], w: &[f32], k: usize) -> f64 {
        let mut p: Vec<(f64, f64)> = x.iter().zip(w).filter(|(_, &w)| w > 0.0).map(|(&x, &w)| (x as f64, w as f64)).collect();
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
        let n = p.len();
        let cost = |i: usize, j: usize| {
            let (sw, su) = p[i..j].iter().fold((0.0, 0.0), |(a, b), &(x, w)| (a + w, b + w * x));
            let mean = su / sw;
            p[i..j].iter().map(|&(x, w)| w * (x - mean) * (x - mean)).sum::<f64>()
        };
        let mut d: Vec<f64> = (0..=n).map(|j| if j == 0 { 0.0 } else { cost(0, j) }).collect();
        for _ in 1..k {
            let next: Vec<f64> = (0..=n).map(|j| (0..j).map(|i| d[i] + cost(i, j)).fold(d[j], f64::min)).collect();
            d = next;
        }
        d[n]
    }

    /// A small deterministic generator (xorshift) so the tests need no extra crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 40) as f32 / (1u64 << 24) as f32
        }
    }

    #[test]
    fn exact_matches_the_brute_force_dp() {
        let mut rng = Rng(7);
        for trial in 0..300 {
            let n = 1 + trial % 23;
            let k = (1 + trial % 6).min(n);
            // Few levels in some trials: duplicates.
            let levels = if trial % 3 == 0 { 4.0 } else { 1e6 };
            let x: Vec<f32> = (0..n).map(|_| ((rng.next() * levels).floor() / levels) * 2.0 - 1.0).collect();
            let w: Vec<f32> = (0..n)
                .map(|i| {
                    if trial % 2 == 0 {
                        1.0
                    } else if i % 5 == 3 {
                        0.0
                    } else {
                        rng.next() * 3.0
                    }
                })
                .collect();
            let fit = kmeans1d(&x, n, k, Weights::PerValue(&w), true).unwrap();
            let want = brute_sse(&x, &w, k);
            let got = fit.inertia[0];
            assert!((got - want).abs() <= 1e-6 * want + 1e-9, "trial {trial}: {got} vs {want}");
            let lloyd = kmeans1d(&x, n, k, Weights::PerValue(&w), false).unwrap();
            assert!(lloyd.inertia[0] >= want - 1e-6 * want - 1e-9, "trial {trial}");
        }
    }

    #[test]
    #[allow(clippy::needless_range_loop)]
    fn codes_index_the_nearest_centroid_and_centroids_ascend() {
        let mut rng = Rng(3);
        let x: Vec<f32> = (0..4 * 300).map(|_| rng.next() - 0.5).collect();
        for exact in [true, false] {
            let fit = kmeans1d(&x, 300, 8, Weights::None, exact).unwrap();
            for r in 0..4 {
                let cb = &fit.codebook[r * 8..r * 8 + 8];
                assert!(cb.windows(2).all(|p| p[0] < p[1]));
                for i in r * 300..(r + 1) * 300 {
                    let d = |j: usize| (x[i] as f64 - cb[j] as f64).abs();
                    let best = (0..8).min_by(|&a, &b| d(a).total_cmp(&d(b))).unwrap();
                    assert_eq!(fit.codes[i] as usize, best);
                }
            }
        }
    }

    #[test]
    fn edge_cases() {
        // Constant row: one distinct centroid, repeated; fewer distinct values than k; k = 1.
        let fit = kmeans1d(&[2.0; 5], 5, 4, Weights::None, true).unwrap();
        assert_eq!(fit.codebook, [2.0; 4]);
        assert_eq!((fit.codes, fit.inertia), (vec![0; 5], vec![0.0]));
        let fit = kmeans1d(&[3.0, 1.0, -0.0, 0.0], 4, 4, Weights::None, false).unwrap();
        assert_eq!(fit.codebook, [0.0, 1.0, 3.0, 3.0]);
        assert_eq!(fit.codes, [2, 1, 0, 0]);
        let fit = kmeans1d(&[1.0, 2.0, 6.0], 3, 1, Weights::PerValue(&[1.0, 1.0, 2.0]), true).unwrap();
        assert_eq!(fit.codebook, [3.75]);
        // All-zero weights: fitted with unit weights, weighted SSE zero.
        let fit = kmeans1d(&[0.0, 1.0, 10.0, 11.0], 4, 2, Weights::PerColumn { w: &[0.0; 4], row_len: 4 }, true).unwrap();
        assert_eq!((fit.codebook, fit.inertia), (vec![0.5, 10.5], vec![0.0]));
        // Zero-weight points do not pull the centroids, but get codes.
        let fit = kmeans1d(&[0.0, 1.0, 10.0, 100.0], 4, 2, Weights::PerValue(&[1.0, 1.0, 1.0, 0.0]), true).unwrap();
        assert_eq!(fit.codebook, [0.5, 10.0]);
        assert_eq!(fit.codes, [0, 0, 1, 1]);
    }

    #[test]
    fn bad_input_is_an_error() {
        let x = [1.0f32, 2.0, 3.0, 4.0];
        assert!(kmeans1d(&x, 3, 2, Weights::None, true).is_err());
        assert!(kmeans1d(&x, 0, 2, Weights::None, true).is_err());
        assert!(kmeans1d(&x, 4, 0, Weights::None, true).is_err());
        assert!(kmeans1d(&x, 2, 3, Weights::None, false).is_err());
        assert_eq!(kmeans1d(&[1.0, f32::NAN], 2, 1, Weights::None, true).unwrap_err(), Error::NonFinite { index: 1 });
        assert!(kmeans1d(&x, 4, 2, Weights::PerValue(&[1.0, -1.0, 1.0, 1.0]), true).is_err());
        assert!(kmeans1d(&x, 4, 2, Weights::PerValue(&[1.0, f32::INFINITY, 1.0, 1.0]), false).is_err());
        assert!(kmeans1d(&x, 4, 2, Weights::PerValue(&[1.0; 3]), false).is_err());
        let (mut cb, mut codes, mut e) = (vec![0.0; 257], vec![0u8; 4], vec![0.0; 1]);
        assert!(kmeans1d_into(&x, 4, 257, Weights::None, true, &mut cb, &mut codes, &mut e).is_err());
        assert!(kmeans1d_into(&x, 4, 2, Weights::None, true, &mut cb, &mut codes, &mut e).is_err());
        let big = vec![0.0f32; 1 << 16];
        assert!(kmeans1d(&big, 1 << 16, 1 << 12, Weights::None, true).is_err());
    }
}
