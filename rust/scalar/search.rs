//! Shared machinery of the searching group quantizers ([`super::mse`], [`super::hqq`]).
//!
//! They store exactly what RTN stores (packed codes, one scale and zero point a group, see
//! [`super::rtn`]); only how each group's scale and zero point are chosen differs, so they share
//! RTN's parallel chunking (fixed, byte-aligned runs of groups: identical results for any thread
//! count) through [`quantize_groups`], which hands each group to a closure.
//!
//! Every sum over a group runs in one fixed order, [`Lanes`]: eight accumulators starting at
//! `+0.0`, value `i` added to lane `i % 8`, then `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`. That is
//! the natural order of an 8-wide SIMD loop, so scalar and AVX2 kernels agree bit for bit, and
//! the NumPy oracle (`_reference.lane_sum`) reproduces it. Products and sums are separate float32
//! operations (no fused multiply-add).

use crate::error::{invalid, Error, Result};
use crate::pack;
use crate::parallel;
use crate::scalar::rtn::{chunk_groups, with_code_buffer, RtnSpec, Scheme};

/// Eight running sums in the kernels' lane order.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lanes(pub [f32; 8]);

impl Lanes {
    #[inline(always)]
    pub fn add(&mut self, i: usize, v: f32) {
        self.0[i % 8] += v;
    }

    /// The lanes' total: `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`.
    #[inline(always)]
    pub fn total(&self) -> f32 {
        let l = &self.0;
        let h = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
        (h[0] + h[2]) + (h[1] + h[3])
    }
}

/// The sum of `f(i)` over `0..n` in lane order.
#[inline(always)]
pub fn lane_sum(n: usize, mut f: impl FnMut(usize) -> f32) -> f32 {
    let mut acc = Lanes::default();
    for i in 0..n {
        acc.add(i, f(i));
    }
    acc.total()
}

/// Affine codes for a float zero point: `clamp(round_half_even(x*inv + zero), 0, top)`, the
/// nearest code of `x` on the grid `(u - zero) * scale` (HQQ's `round(W*scale + zero)`).
pub fn zero_codes(x: &[f32], inv: f32, zero: f32, top: f32, out: &mut [u8]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v * inv + zero).round_ties_even().clamp(0.0, top) as u8;
    }
}

/// `sum(w * d * d)` (`sum(d * d)` without weights) with `d = (code(i) - zero) * scale - x[i]`,
/// in lane order: the squared error the searching quantizers compare against RTN's.
#[inline(always)]
pub fn sq_error(x: &[f32], w: Option<&[f32]>, scale: f32, zero: f32, code: impl Fn(usize) -> f32) -> f32 {
    lane_sum(x.len(), |i| {
        let d = (code(i) - zero) * scale - x[i];
        match w {
            Some(w) => (w[i] * d) * d,
            None => d * d,
        }
    })
}

/// RTN's grid for one group of range `(mn, mx)`: `(scale, zero, 1/scale)`, or the overflow
/// error of group `index`. Its codes are `simd::scalar::group_codes(x, inv, zero, lo, top)`.
pub fn rtn_grid(spec: &RtnSpec, mn: f32, mx: f32, index: usize) -> Result<(f32, f32, f32)> {
    let (mut s, mut z, mut inv) = ([0f32], [0f32], [0f32]);
    if !crate::simd::scalar::grids(&[mn], &[mx], &spec.grid_params(), &mut s, &mut z, &mut inv) {
        return Err(spec.overflow(index));
    }
    Ok((s[0], z[0], inv[0]))
}

/// Rounds a scale or zero point to the nearest value of the storage dtype.
#[inline(always)]
pub fn round_nearest(v: f32, f16: bool) -> f32 {
    if f16 {
        half::f16::from_f32(v).to_f32()
    } else {
        v
    }
}

/// Per-value importance weights of the whole input (`PerValue`) or of each position in a row
/// of `row_len` values, repeated for every row (`PerColumn`, like llama.cpp's imatrix).
#[derive(Clone, Copy, Debug)]
pub enum Weights<'a> {
    None,
    PerValue(&'a [f32]),
    PerColumn { w: &'a [f32], row_len: usize },
}

impl Weights<'_> {
    /// Checks lengths against an input of `n` values and that every weight is finite and `>= 0`.
    pub fn validate(&self, n: usize) -> Result<()> {
        let (w, want) = match *self {
            Weights::None => return Ok(()),
            Weights::PerValue(w) => (w, n),
            Weights::PerColumn { w, row_len } => {
                if row_len == 0 || !n.is_multiple_of(row_len) {
                    return Err(Error::Shape(format!("{n} values do not form rows of {row_len}")));
                }
                (w, row_len)
            }
        };
        if w.len() != want {
            return Err(Error::Shape(format!("{} importance weights given, expected {want}", w.len())));
        }
        if let Some(i) = w.iter().position(|v| !v.is_finite() || *v < 0.0) {
            return Err(invalid!("importance weight {i} is {}: weights must be finite and >= 0", w[i]));
        }
        Ok(())
    }

    /// The weights of the `len` values starting at flat index `start` (all ones without
    /// weights), in `buf` unless they can be borrowed.
    pub fn group<'b>(&'b self, start: usize, len: usize, buf: &'b mut Vec<f32>) -> &'b [f32] {
        match *self {
            Weights::PerValue(w) => &w[start..start + len],
            Weights::PerColumn { w, row_len } if start % row_len + len <= row_len => &w[start % row_len..start % row_len + len],
            Weights::PerColumn { w, row_len } => {
                buf.clear();
                buf.extend((start..start + len).map(|i| w[i % row_len]));
                buf
            }
            Weights::None => {
                buf.clear();
                buf.resize(len, 1.0);
                buf
            }
        }
    }
}

/// One group's result: its unpacked codes are written in place; scale and zero point returned.
pub type GroupFn<'a> = dyn Fn(usize, &[f32], &mut [u8]) -> Result<(f32, f32)> + Sync + 'a;

/// Checks input and buffers, then runs `group(index, values, codes)` on every group in RTN's
/// fixed parallel chunks and packs the codes. `zeros` is empty for the non-affine schemes.
pub fn quantize_groups(
    spec: &RtnSpec,
    src: &[f32],
    codes: &mut [u8],
    scales: &mut [f32],
    zeros: &mut [f32],
    group: &GroupFn<'_>,
) -> Result<()> {
    spec.validate(src.len())?;
    let g = spec.n_groups(src.len());
    let affine = spec.scheme == Scheme::Affine;
    if codes.len() != pack::packed_len(src.len(), spec.bits) || scales.len() != g || zeros.len() != if affine { g } else { 0 } {
        return Err(Error::Shape(format!("output buffers do not fit {} values in groups of {}", src.len(), spec.group_size)));
    }
    if let Some(index) = src.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite { index });
    }
    let gs = spec.group_size;
    let cg = chunk_groups(spec);
    let code_bytes = cg * gs * spec.bits as usize / 8;
    let n_chunks = g.div_ceil(cg);
    let zero_chunks: Vec<&mut [f32]> =
        if affine { zeros.chunks_mut(cg).collect() } else { (0..n_chunks).map(|_| <&mut [f32]>::default()).collect() };
    let jobs: Vec<_> =
        src.chunks(cg * gs).zip(codes.chunks_mut(code_bytes)).zip(scales.chunks_mut(cg)).zip(zero_chunks).enumerate().collect();
    parallel::try_for_each(jobs, |(ci, (((x, c), s), z))| {
        with_code_buffer(x.len(), |tmp| {
            for (i, (xg, tg)) in x.chunks_exact(gs).zip(tmp.chunks_exact_mut(gs)).enumerate() {
                let (scale, zero) = group(ci * cg + i, xg, tg)?;
                s[i] = scale;
                if affine {
                    z[i] = zero;
                }
            }
            pack::pack(tmp, spec.bits, c)
        })
    })
}
