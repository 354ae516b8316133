//! Row and column L1/L2 norms of a row-major matrix, for structured pruning (ranking rows,
//! output channels or columns).
//!
//! Sums run in `f64` (exact products of two `f32`, so `x * x` needs no FMA) in an order fixed by
//! the shape alone, so neither the thread count nor the SIMD level changes a bit of the result:
//!
//! * a row's sum goes into 16 lanes, element `j` into lane `j % 16` in order, and the lanes are
//!   added by the fixed tree [`reduce16`];
//! * a column's sum runs down fixed blocks of [`col_block_rows`] rows (each block from zero, in
//!   row order), and the block partials are added in block order.
//!
//! Rows run in parallel in fixed blocks; columns in parallel over the row blocks.

use super::run_ordered;
use crate::error::{invalid, Error, Result};
use crate::simd::{self, Level};

/// Which norm: the sum of `|x|` or the root of the sum of `x * x`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    L1,
    L2,
}

impl Norm {
    /// `1` or `2`.
    pub fn from_order(p: usize) -> Result<Norm> {
        match p {
            1 => Ok(Norm::L1),
            2 => Ok(Norm::L2),
            _ => Err(invalid!("norm order must be 1 or 2, got {p}")),
        }
    }

    /// The summed term of one element.
    #[inline(always)]
    pub(crate) fn term(self, v: f32) -> f64 {
        let a = v as f64;
        match self {
            Norm::L1 => a.abs(),
            Norm::L2 => a * a,
        }
    }

    /// The norm of a finished sum.
    fn finish(self, s: f64) -> f64 {
        match self {
            Norm::L1 => s,
            Norm::L2 => s.sqrt(),
        }
    }
}

/// `kernel(row, norm, lanes) -> row has a non-finite value`: adds the terms of `row` into
/// `lanes` (element `j` into lane `j % 16`, in order).
pub type RowKernel = fn(&[f32], Norm, &mut [f64; 16]) -> bool;

/// `kernel(block, cols, norm, acc) -> block has a non-finite value`: adds the terms of every row
/// of `block` (rows of `cols`) into `acc` (`cols` sums), row after row.
pub type ColKernel = fn(&[f32], usize, Norm, &mut [f64]) -> bool;

/// The row kernel of level `l` (scalar where the level has none).
pub fn row_kernel(l: Level) -> RowKernel {
    match l {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => super::x86_norms::row_avx512,
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => super::x86_norms::row_avx2,
        _ => row_scalar,
    }
}

/// The column kernel of level `l` (scalar where the level has none).
pub fn col_kernel(l: Level) -> ColKernel {
    match l {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => super::x86_norms::col_avx512,
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => super::x86_norms::col_avx2,
        _ => col_scalar,
    }
}

/// The scalar row kernel (the oracle of the SIMD ones).
pub fn row_scalar(row: &[f32], norm: Norm, lanes: &mut [f64; 16]) -> bool {
    row_scalar_from(row, 0, norm, lanes)
}

/// [`row_scalar`] from element `from` on (`from` a multiple of 16: the SIMD kernels' tail).
pub(crate) fn row_scalar_from(row: &[f32], from: usize, norm: Norm, lanes: &mut [f64; 16]) -> bool {
    let mut bad = false;
    for (j, &v) in row.iter().enumerate().skip(from) {
        bad |= !v.is_finite();
        lanes[j % 16] += norm.term(v);
    }
    bad
}

/// The scalar column kernel (the oracle of the SIMD ones).
pub fn col_scalar(block: &[f32], cols: usize, norm: Norm, acc: &mut [f64]) -> bool {
    assert!(acc.len() == cols && cols > 0 && block.len().is_multiple_of(cols));
    let mut bad = false;
    for row in block.chunks_exact(cols) {
        for (a, &v) in acc.iter_mut().zip(row) {
            bad |= !v.is_finite();
            *a += norm.term(v);
        }
    }
    bad
}

/// The fixed sum of 16 lanes: halves added lane-wise, four times.
pub fn reduce16(l: &[f64; 16]) -> f64 {
    let h8: [f64; 8] = std::array::from_fn(|i| l[i] + l[i + 8]);
    let h4: [f64; 4] = std::array::from_fn(|i| h8[i] + h8[i + 4]);
    (h4[0] + h4[2]) + (h4[1] + h4[3])
}

/// Elements per parallel job (about; whole rows).
const JOB: usize = 1 << 18;

/// Rows per column-sum block for rows of `cols`: the block partials' summation order.
pub fn col_block_rows(cols: usize) -> usize {
    (JOB / cols.max(1)).max(1)
}

fn check_shape(x: &[f32], cols: usize, out: usize, want: usize) -> Result<usize> {
    if cols == 0 || !x.len().is_multiple_of(cols) {
        return Err(Error::Shape(format!("{} values do not make rows of {cols}", x.len())));
    }
    let rows = x.len() / cols;
    if out != [rows, cols][want] {
        return Err(Error::Shape(format!("{out} norms requested for a {rows} x {cols} matrix")));
    }
    Ok(rows)
}

fn first_non_finite(x: &[f32], base: usize) -> Error {
    Error::NonFinite { index: base + x.iter().position(|v| !v.is_finite()).unwrap_or(0) }
}

/// The norm of every row of the row-major `x` (rows of `cols`) into `out`.
/// Errors: a shape that is not whole rows, `out` not one per row, non-finite values.
pub fn row_norms(x: &[f32], cols: usize, norm: Norm, out: &mut [f64]) -> Result<()> {
    row_norms_at(simd::level(), x, cols, norm, out)
}

/// [`row_norms`] with the kernels of level `l` (the result does not depend on it).
pub fn row_norms_at(l: Level, x: &[f32], cols: usize, norm: Norm, out: &mut [f64]) -> Result<()> {
    check_shape(x, cols, out.len(), 0)?;
    let f = row_kernel(l);
    let per = col_block_rows(cols);
    let work: Vec<_> = x.chunks(per * cols).zip(out.chunks_mut(per)).enumerate().collect();
    run_ordered(work, |(b, (xs, o))| {
        for (r, (row, n)) in xs.chunks_exact(cols).zip(o.iter_mut()).enumerate() {
            let mut lanes = [0f64; 16];
            if f(row, norm, &mut lanes) {
                return Err(first_non_finite(row, (b * per + r) * cols));
            }
            *n = norm.finish(reduce16(&lanes));
        }
        Ok(())
    })
}

/// The norm of every column of the row-major `x` (rows of `cols`) into `out`.
/// Errors: a shape that is not whole rows, `out` not one per column, non-finite values.
pub fn col_norms(x: &[f32], cols: usize, norm: Norm, out: &mut [f64]) -> Result<()> {
    col_norms_at(simd::level(), x, cols, norm, out)
}

/// [`col_norms`] with the kernels of level `l` (the result does not depend on it).
pub fn col_norms_at(l: Level, x: &[f32], cols: usize, norm: Norm, out: &mut [f64]) -> Result<()> {
    check_shape(x, cols, out.len(), 1)?;
    let f = col_kernel(l);
    let span = col_block_rows(cols) * cols;
    let mut partials = vec![vec![0f64; cols]; x.len().div_ceil(span)];
    let work: Vec<_> = x.chunks(span).zip(partials.iter_mut()).enumerate().collect();
    run_ordered(work, |(b, (xs, acc))| if f(xs, cols, norm, acc) { Err(first_non_finite(xs, b * span)) } else { Ok(()) })?;
    out.fill(0.0);
    for p in &partials {
        for (o, &v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
    for o in out.iter_mut() {
        *o = norm.finish(*o);
    }
    Ok(())
}
