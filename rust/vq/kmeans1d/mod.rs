//! Batched 1-D k-means: every row of a matrix gets its own codebook of `k` scalars (SqueezeLLM /
//! Deep Compression weight sharing), fitted exactly or by a fast sorted Lloyd.
//!
//! Why a dedicated solver: in one dimension the optimal clusters are contiguous runs of the
//! sorted values, so the weighted sum of squared errors (SSE) can be minimised exactly by dynamic
//! programming instead of the local search of a general k-means.
//!
//! Per row:
//! 1. Values are sorted (`sort.rs`: a radix sort of order-preserving integer keys, carrying
//!    the weight's bits for a weighted row); equal values are merged (weights added), points of
//!    weight zero are dropped (they do not change the weighted SSE). A row whose weights are all
//!    zero is fitted with unit weights (its weighted SSE is zero whatever the codebook).
//! 2. Prefix sums of `w`, `w*x`, `w*x^2` in f64 (values shifted by the row's middle sorted value
//!    against cancellation) give the SSE of any run in O(1), to about `m * eps * (row weight) *
//!    (largest |x - shift|)^2`. A weight below `4 m eps` times the row's weight can vanish from
//!    those differences (`2^-52` after a prefix of 2): in such a row run SSEs are capped at zero
//!    and Lloyd's means clamped to their runs (`dp.rs`, `cost`), so the optimum stays exact to
//!    that absolute error (not relative to a tiny SSE).
//! 3. `exact`: the DP `D[c][j] = min_i D[c-1][i] + cost(i, j)` over the `m` distinct values, one
//!    layer per cluster, each layer by divide and conquer on the monotone split point with the
//!    previous layer's split as a lower bound (`dp.rs`: vectorised searches, one compiled copy
//!    per SIMD level; unweighted rows read reciprocals of run lengths from a table):
//!    O(k * m log m) time, a `k * m` table of splits for backtracking (ties go to the smallest
//!    split). Not exact: the same DP restricted to a coarse grid of candidate boundaries
//!    ([`COARSE_GRID`]: equal-count positions plus equally spaced values, so the heavy tails of
//!    weight matrices get boundaries too), then on a four times finer grid ([`FINE_GRID`]) with
//!    each boundary kept within [`BAND`] fine points of its coarse position, the band moving
//!    while a boundary ends on its edge (as good as the full fine DP on Student-t rows, a third
//!    of its cost), then sorted Lloyd from there: each iteration puts the boundaries at the
//!    midpoints between centroids (binary search on the sorted values, a point on a midpoint
//!    goes to the lower cluster) and recomputes centroids from the prefix sums, O(k log m),
//!    until no boundary moves or after [`MAX_ITER`] iterations. (Lloyd from the weighted
//!    quantiles alone stalls about 15% above the optimum on Student-t rows.)
//! 4. Centroids are the weighted means of the runs (summed directly in four lanes), rounded to
//!    f32, ascending. With fewer distinct (positive-weight) values `m` than `k` (a constant
//!    row, duplicates), the first `m` slots hold the distinct values and the rest repeat the
//!    last one. `k` above the row length is an error (it would only repeat slots, and the
//!    codebook could outgrow the input).
//! 5. Codes: each element (zero-weight ones included) gets its nearest centroid of the stored f32
//!    codebook, distances `|x - c|` in f64, ties to the lowest index (`codes.rs`: one f32
//!    threshold between neighbouring centroids, found by bisection with that exact predicate,
//!    and every element counts the thresholds at most its value; a codebook whose rounded
//!    distances could tie across a centroid falls back to one walk over the row sorted with its
//!    positions). This is the DP's partition except where rounding the centroids to f32 moves an
//!    element that sat (almost) exactly between two of them. `inertia` is the weighted SSE of
//!    those codes in f64: what dequantizing the row costs (summed in sixteen lanes in row order,
//!    lane = index mod 16, then the lanes in order; in sorted order in the fallback).
//!
//! Rows run in parallel in fixed chunks, each row on its own, so results never depend on the
//! thread count.

mod codes;
mod dp;
mod sort;
#[cfg(test)]
mod tests;

use self::dp::{band_refine, dp_bounds, lloyd_refine, Dp};
pub use self::dp::{BAND, BAND_PASSES, COARSE_GRID, FINE_GRID, MAX_ITER};
use self::sort::Scratch;
use crate::error::{invalid, Error, Result};
use crate::parallel;
use crate::scalar::search::Weights;
use crate::simd::{self, Level};

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

/// Fits one row (`x`, weights `w` of the same length, none: unit) into `cb` (k values) and
/// `codes`; returns the weighted SSE.
#[inline(always)]
fn fit_row<C: Code>(s: &mut Scratch, d: &mut Dp, x: &[f32], w: Option<&[f32]>, exact: bool, cb: &mut [f32], codes: &mut [C]) -> f64 {
    let k = cb.len();
    let m = s.load(x, w);
    let kk = k.min(m);
    if exact {
        dp_bounds(s, d, kk, true);
    } else {
        dp_bounds(s, d, kk, false);
        band_refine(s, d, kk);
        lloyd_refine(s, kk);
    }
    let mut n_distinct = 0;
    for c in 0..kk {
        let (i, j) = (s.bounds[c], s.bounds[c + 1]);
        if j == i {
            continue; // an empty Lloyd run: no centroid
        }
        let (sw, su) = run_sums(&s.c[i..j], &s.u[i..j]);
        let v = (su / sw + s.shift) as f32;
        if n_distinct == 0 || v > cb[n_distinct - 1] {
            cb[n_distinct] = v;
            n_distinct += 1;
        }
    }
    let last = cb[n_distinct - 1];
    cb[n_distinct..].iter_mut().for_each(|v| *v = last);
    codes::assign(s, &cb[..n_distinct], x, w, codes)
}

/// `sum c` and `sum c * u` over a run, in four lanes (index mod 4, then `(l0 + l1) + (l2 + l3)`):
/// four independent chains instead of one.
#[inline(always)]
fn run_sums(c: &[f64], u: &[f64]) -> (f64, f64) {
    let (mut sw, mut su) = ([0.0f64; 4], [0.0f64; 4]);
    let (cc, uc) = (c.chunks_exact(4), u.chunks_exact(4));
    let (cr, ur) = (cc.remainder(), uc.remainder());
    for (c4, u4) in cc.zip(uc) {
        for l in 0..4 {
            sw[l] += c4[l];
            su[l] += c4[l] * u4[l];
        }
    }
    for l in 0..cr.len() {
        sw[l] += cr[l];
        su[l] += cr[l] * ur[l];
    }
    ((sw[0] + sw[1]) + (sw[2] + sw[3]), (su[0] + su[1]) + (su[2] + su[3]))
}

/// Fits the rows of a chunk, row after row (`x`, `cb`, `codes`, `inertia`: the chunk's part),
/// inlined into one copy per instruction set ([`fit_chunk`]).
#[inline(always)]
fn fit_chunk_body<C: Code>(job: Job<'_, C>) {
    let (mut s, mut d) = (Scratch::default(), Dp::default());
    let mut wbuf = Vec::new();
    let (k, row_len) = (job.k, job.row_len);
    for (r, ((cb, codes), e)) in job.cb.chunks_mut(k).zip(job.codes.chunks_mut(row_len)).zip(job.inertia.iter_mut()).enumerate() {
        let start = (job.row0 + r) * row_len;
        let w = match job.weights {
            Weights::None => None,
            weights => Some(weights.group(start, row_len, &mut wbuf)),
        };
        *e = fit_row(&mut s, &mut d, &job.x[start..start + row_len], w, job.exact, cb, codes);
    }
}

/// One parallel job: rows `row0..` of `x`, and their outputs.
struct Job<'a, C> {
    x: &'a [f32],
    weights: &'a Weights<'a>,
    row_len: usize,
    k: usize,
    exact: bool,
    row0: usize,
    cb: &'a mut [f32],
    codes: &'a mut [C],
    inertia: &'a mut [f64],
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
unsafe fn fit_chunk_avx512<C: Code>(job: Job<'_, C>) {
    // The same code compiled for 512-bit registers: the same IEEE operations (no contraction).
    fit_chunk_body(job)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fit_chunk_avx2<C: Code>(job: Job<'_, C>) {
    // The same code compiled for 256-bit registers: the same IEEE operations (no contraction).
    fit_chunk_body(job)
}

/// [`fit_chunk_body`] compiled for `level` (results are bit-identical at every level).
fn fit_chunk<C: Code>(level: Level, job: Job<'_, C>) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `simd::level()` (or a test's `available_levels()`) only yields Avx512 on a CPU
        // with AVX-512 F/VL/DQ/BW, AVX2 and FMA.
        Level::Avx512 => unsafe { fit_chunk_avx512(job) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the Avx2 level is only in force on a CPU with AVX2 and FMA.
        Level::Avx2 => unsafe { fit_chunk_avx2(job) },
        _ => fit_chunk_body(job),
    }
}

/// Rows per parallel job: fixed by the input (about 64K values a job), never by the thread count.
fn rows_per_job(row_len: usize) -> usize {
    (65_536 / row_len).max(1)
}

/// The index of the first NaN or infinity of `x`: blocks are checked whole (a loop without exit
/// that vectorises), the first bad one searched.
fn first_non_finite(x: &[f32]) -> Option<usize> {
    const BLOCK: usize = 4096;
    x.chunks(BLOCK).enumerate().find_map(|(b, c)| {
        if c.iter().fold(true, |ok, v| ok & v.is_finite()) {
            None
        } else {
            c.iter().position(|v| !v.is_finite()).map(|i| b * BLOCK + i)
        }
    })
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
    if let Some(index) = first_non_finite(x) {
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
    let level = simd::level();
    let jobs: Vec<_> = codebook
        .chunks_mut(per * k)
        .zip(codes.chunks_mut(per * row_len))
        .zip(inertia.chunks_mut(per))
        .enumerate()
        .map(|(i, ((cb, codes), inertia))| Job { x, weights: &weights, row_len, k, exact, row0: i * per, cb, codes, inertia })
        .collect();
    parallel::try_for_each(jobs, |job| {
        fit_chunk(level, job);
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
