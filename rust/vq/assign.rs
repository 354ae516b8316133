//! Nearest-codeword search.
//!
//! A [`Codebook`] is prepared once (validated, cosine rows scaled to unit length, squared norms
//! for L2, codewords packed into transposed panels for the SIMD kernels) and then searched by
//! many batches. The SIMD kernels (`simd::x86_avx2::assign`, `simd::x86_avx512::assign`,
//! `simd::neon_assign`) return
//! each row's code and best ranking score; the reported distance follows from that score in
//! scalar code, as in the oracle. Memory is O(batch): no `n x k` matrix is ever formed. Every level computes each (vector, codeword) score
//! with the same float operations in the same order as [`score_scalar`], so codes and distances
//! are bit-identical at every SIMD level and for any number of threads; ties go to the lowest
//! codeword index.

use super::Metric;
use crate::error::{invalid, Error, Result};
use crate::parallel;
use crate::simd::{self, Level};

/// A validated codebook of `k` codewords of dimension `d`, ready to be searched.
#[derive(Clone, Debug)]
pub struct Codebook {
    pub d: usize,
    pub k: usize,
    pub metric: Metric,
    /// `k * d` values, row-major; for cosine, each row scaled to unit length.
    pub data: Vec<f32>,
    /// L2: `|c|^2` per codeword (sequential `mul_add` over the dimensions); otherwise empty.
    pub norms: Vec<f32>,
    /// The codewords (as in `data`) transposed in panels of [`PANEL`]: panel `p` holds, for each
    /// dimension `t`, the values of codewords `PANEL*p..PANEL*(p+1)` at `t`, at
    /// `panels[p*d + t].0[lane]`. Slots past `k` are NaN: their score is NaN, which never
    /// compares smaller, so they never win. What the SIMD kernels stream.
    pub panels: Vec<PanelRow>,
    /// L2: `norms` padded with NaN to whole panels; otherwise empty.
    pub panel_norms: Vec<f32>,
}

/// Codewords per packed panel (one AVX-512 register, two AVX2 registers, four NEON ones).
pub const PANEL: usize = 16;

/// Rows whose running minima a SIMD search kernel keeps while the codebook streams by.
pub const ROW_BLOCK: usize = 96;
/// Codebook bytes per block of a SIMD search kernel: a block stays in L1/L2 while every tile of
/// the row block reads it, so memory is O(block), never O(rows x k).
pub const CODEBOOK_BLOCK_BYTES: usize = 32 * 1024;
/// The kinds of inner step of the SIMD search kernels (their `M` const parameter): multiply-add
/// for L2 (score `fma(-2, dot, |c|^2)`), multiply-add for IP and cosine (score `-dot`), and
/// `acc + |x - c|` for L1.
pub const STEP_L2: u8 = 0;
pub const STEP_IP: u8 = 1;
pub const STEP_L1: u8 = 2;

/// One dimension of one panel: [`PANEL`] codewords' values, aligned to a cache line so that
/// no vector load splits one.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub struct PanelRow(pub [f32; PANEL]);

/// `data` (`k` rows of `d`) transposed into NaN-padded panels (see [`Codebook::panels`]).
fn pack_panels(data: &[f32], d: usize, k: usize) -> Vec<PanelRow> {
    let np = k.div_ceil(PANEL);
    let mut panels = vec![PanelRow([f32::NAN; PANEL]); np * d];
    for (j, c) in data.chunks_exact(d).enumerate() {
        let (p, lane) = (j / PANEL, j % PANEL);
        for (t, v) in c.iter().enumerate() {
            panels[p * d + t].0[lane] = *v;
        }
    }
    panels
}

impl Codebook {
    pub fn new(codebook: &[f32], d: usize, metric: Metric) -> Result<Codebook> {
        if d == 0 {
            return Err(invalid!("the vector dimension d must be at least 1"));
        }
        if codebook.is_empty() || !codebook.len().is_multiple_of(d) {
            return Err(Error::Shape(format!("the codebook holds {} values, not a positive multiple of d={d}", codebook.len())));
        }
        let k = codebook.len() / d;
        if k > u32::MAX as usize {
            return Err(invalid!("a codebook of {k} codewords is larger than 2^32 - 1"));
        }
        if let Some(index) = codebook.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite { index });
        }
        let mut data = codebook.to_vec();
        if metric == Metric::Cosine {
            data.chunks_exact_mut(d).for_each(normalize);
        }
        let norms = if metric == Metric::L2 { data.chunks_exact(d).map(|c| dot(c, c)).collect() } else { Vec::new() };
        let panels = pack_panels(&data, d, k);
        let mut panel_norms = norms.clone();
        if metric == Metric::L2 {
            panel_norms.resize(k.div_ceil(PANEL) * PANEL, f32::NAN);
        }
        Ok(Codebook { d, k, metric, data, norms, panels, panel_norms })
    }

    /// Panics unless `x`, `codes` and `best` fit one search of `codes.len()` rows and the
    /// codebook is packed: every bound the SIMD kernels' pointer arithmetic relies on.
    pub fn assert_search_buffers(&self, x: &[f32], codes: &[u32], best: &[f32]) {
        assert!(x.len() >= codes.len() * self.d && best.len() >= codes.len(), "assign: buffers too short");
        assert!(self.panels.len() == self.k.div_ceil(PANEL) * self.d, "assign: codebook not packed");
        assert!(self.metric != Metric::L2 || self.panel_norms.len() == self.k.div_ceil(PANEL) * PANEL);
    }

    /// The codeword `j`.
    pub fn row(&self, j: usize) -> &[f32] {
        &self.data[j * self.d..(j + 1) * self.d]
    }
}

/// `x . y` as a sequential `mul_add` chain from 0 (the order every level follows).
#[inline(always)]
pub fn dot(x: &[f32], y: &[f32]) -> f32 {
    x.iter().zip(y).fold(0.0f32, |acc, (a, b)| a.mul_add(*b, acc))
}

/// `sum |x - y|` in order.
#[inline]
pub fn l1(x: &[f32], y: &[f32]) -> f32 {
    x.iter().zip(y).fold(0.0f32, |acc, (a, b)| acc + (a - b).abs())
}

/// Scales `v` to unit length; a zero vector stays zero.
pub fn normalize(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        let inv = 1.0 / n;
        v.iter_mut().for_each(|a| *a *= inv);
    }
}

/// The ranking score of codeword `j` for `x`, smaller is nearer for every metric (IP and cosine
/// are negated): the oracle the SIMD kernels match bit for bit.
#[inline]
pub fn score_scalar(cb: &Codebook, x: &[f32], j: usize) -> f32 {
    let c = cb.row(j);
    match cb.metric {
        Metric::L2 => (-2.0f32).mul_add(dot(x, c), cb.norms[j]),
        Metric::Ip | Metric::Cosine => -dot(x, c),
        Metric::L1 => l1(x, c),
    }
}

/// The reported distance for a best ranking score `s` (see [`Metric`]).
#[inline(always)]
pub fn reported(metric: Metric, x: &[f32], s: f32) -> f32 {
    match metric {
        Metric::L2 => (s + dot(x, x)).max(0.0),
        Metric::Ip => -s,
        Metric::Cosine => {
            let n = dot(x, x).sqrt();
            if n > 0.0 {
                -s / n
            } else {
                0.0
            }
        }
        Metric::L1 => s,
    }
}

/// Scalar search of a batch: the oracle.
pub fn assign_batch_scalar(cb: &Codebook, x: &[f32], codes: &mut [u32], mut dists: Option<&mut [f32]>) {
    for (i, xi) in x.chunks_exact(cb.d).enumerate() {
        let (mut best, mut code) = (f32::INFINITY, 0u32);
        for j in 0..cb.k {
            let s = score_scalar(cb, xi, j);
            if s < best {
                best = s;
                code = j as u32;
            }
        }
        codes[i] = code;
        if let Some(d) = dists.as_deref_mut() {
            d[i] = reported(cb.metric, xi, best);
        }
    }
}

/// Searches one batch at the SIMD level in force, on the calling thread, without validation:
/// for callers (k-means) that cut the work into jobs themselves. `x` must hold `codes.len()`
/// finite rows of `cb.d` values.
pub fn assign_batch(cb: &Codebook, x: &[f32], codes: &mut [u32], dists: Option<&mut [f32]>) {
    assign_batch_at(simd::level(), cb, x, codes, dists)
}

/// [`assign_batch`] at a given SIMD level (one this CPU supports; others fall back to scalar).
pub fn assign_batch_at(level: Level, cb: &Codebook, x: &[f32], codes: &mut [u32], mut dists: Option<&mut [f32]>) {
    let search: Option<SearchFn> = match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => Some(simd::x86_avx2::assign::search),
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => Some(simd::x86_avx512::assign::search),
        #[cfg(target_arch = "aarch64")]
        Level::Neon => Some(simd::neon_assign::search),
        _ => None,
    };
    let Some(search) = search else {
        return assign_batch_scalar(cb, x, codes, dists);
    };
    // The kernel reports each row's best ranking score; the distance follows from it as in scalar.
    let mut best = [0f32; SCORE_CHUNK];
    for (i, (c, xs)) in codes.chunks_mut(SCORE_CHUNK).zip(x.chunks(SCORE_CHUNK * cb.d)).enumerate() {
        let best = &mut best[..c.len()];
        search(cb, xs, c, best);
        if let Some(d) = dists.as_deref_mut() {
            let d = &mut d[i * SCORE_CHUNK..i * SCORE_CHUNK + c.len()];
            #[cfg(target_arch = "x86_64")]
            // SAFETY: this branch only runs at the AVX2 or AVX-512 level, which the CPU supports.
            unsafe {
                report_fma(cb.metric, xs, cb.d, best, d)
            }
            #[cfg(not(target_arch = "x86_64"))]
            report_rows(cb.metric, xs, cb.d, best, d);
        }
    }
}

/// The reported distances of a block of rows from their best scores.
#[inline(always)]
fn report_rows(metric: Metric, xs: &[f32], d: usize, best: &[f32], out: &mut [f32]) {
    for ((o, s), xi) in out.iter_mut().zip(best).zip(xs.chunks_exact(d)) {
        *o = reported(metric, xi, *s);
    }
}

/// [`report_rows`] compiled with FMA: `mul_add` becomes one instruction instead of a libm call
/// (the same fused operation, so the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn report_fma(metric: Metric, xs: &[f32], d: usize, best: &[f32], out: &mut [f32]) {
    report_rows(metric, xs, d, best, out)
}

/// A level's search kernel: codes and best ranking scores of `codes.len()` rows.
type SearchFn = fn(&Codebook, &[f32], &mut [u32], &mut [f32]);

/// Rows per kernel call (the size of the best-score buffer on the stack).
const SCORE_CHUNK: usize = 1024;

/// Rows per parallel job: fixed by the input, so the split never depends on the thread count.
fn rows_per_job(cb: &Codebook) -> usize {
    // About 4M multiply-adds per job, and at least 192 rows: every row block of the kernels
    // (96 rows) reads the whole codebook once, so a big codebook needs whole blocks to amortise.
    (4_000_000 / (cb.k * cb.d).max(1)).clamp(192, 65_536)
}

/// Finds the nearest codeword of every row of `x` (`n * d` values): `codes[i]` and, if given,
/// `dists[i]` (see [`Metric`] for what is reported).
pub fn assign_into(cb: &Codebook, x: &[f32], codes: &mut [u32], dists: Option<&mut [f32]>) -> Result<()> {
    if !x.len().is_multiple_of(cb.d) {
        return Err(Error::Shape(format!("x holds {} values, not a multiple of d={}", x.len(), cb.d)));
    }
    let n = x.len() / cb.d;
    if codes.len() != n || dists.as_ref().is_some_and(|d| d.len() != n) {
        return Err(Error::Shape(format!("output buffers do not hold one entry per vector ({n})")));
    }
    let rows = rows_per_job(cb);
    let xs = x.chunks(rows * cb.d);
    let jobs: Vec<_> = match dists {
        Some(d) => xs.zip(codes.chunks_mut(rows)).zip(d.chunks_mut(rows).map(Some)).collect(),
        None => xs.zip(codes.chunks_mut(rows)).zip(std::iter::repeat_with(|| None)).collect(),
    };
    // Each job checks its rows (a branch-free pass that vectorises) before searching them; the
    // first bad index is then found serially, so the error never depends on the thread count.
    let found = parallel::try_for_each(jobs, |((x, c), d)| {
        if !all_finite(x) {
            return Err(Error::NonFinite { index: 0 });
        }
        assign_batch(cb, x, c, d);
        Ok(())
    });
    if found.is_err() {
        let index = x.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(Error::NonFinite { index });
    }
    Ok(())
}

/// Whether every value is finite: the largest magnitude's bits stay below infinity's (no early
/// exit, integer compares only, so the loop vectorises).
fn all_finite(x: &[f32]) -> bool {
    let top = x.iter().fold(0i32, |m, v| m.max((v.to_bits() & 0x7fff_ffff) as i32));
    top < 0x7f80_0000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_go_to_the_lowest_index() {
        let cb = Codebook::new(&[1.0, 0.0, -1.0, 0.0, 1.0, 0.0], 2, Metric::L2).unwrap();
        let mut codes = [9u32; 2];
        let mut d = [0f32; 2];
        assign_into(&cb, &[0.0, 0.0, 1.0, 0.1], &mut codes, Some(&mut d)).unwrap();
        assert_eq!(codes, [0, 0]);
        assert_eq!(d[0], 1.0);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(Codebook::new(&[1.0, 2.0, 3.0], 2, Metric::L2).is_err());
        assert!(Codebook::new(&[], 2, Metric::L2).is_err());
        assert!(Codebook::new(&[1.0], 0, Metric::L2).is_err());
        assert_eq!(Codebook::new(&[1.0, f32::NAN], 1, Metric::L2).unwrap_err(), Error::NonFinite { index: 1 });
        let cb = Codebook::new(&[1.0, 2.0], 2, Metric::L2).unwrap();
        assert!(assign_into(&cb, &[1.0, 2.0, 3.0], &mut [0; 1], None).is_err());
        assert_eq!(assign_into(&cb, &[1.0, f32::INFINITY], &mut [0; 1], None).unwrap_err(), Error::NonFinite { index: 1 });
    }
}
