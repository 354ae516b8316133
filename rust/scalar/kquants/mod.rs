//! The GGUF K-quant and IQ4 block types (Q2_K … Q6_K, IQ4_NL, IQ4_XS), following ggml's
//! reference algorithms in `ggml-quants.c`, with and without importance weights (imatrix).
//!
//! Each type lives in its own file and exposes `kernels(level) -> TypeKernels`: a quantizer of
//! whole blocks (optionally with one importance weight per value) and a dequantizer. This file
//! owns validation and the parallel driver, so results do not depend on the thread count.

use crate::error::{Error, Result};
use crate::parallel;
pub use crate::scalar::search::Weights;
use crate::simd::{self, Level};

pub mod affine_search;
pub mod common;
mod iq4_nl;
mod iq4_xs;
mod q2_k;
mod q3_k;
mod q4_k;
mod q5_k;
mod q6_k;
pub(crate) mod symmetric_search;

/// Values in one super-block.
pub const QK_K: usize = 256;

/// Values handled by one parallel task when rows allow it (64 Ki floats).
const CHUNK_VALUES: usize = 1 << 16;

/// Values quantized between prefetches within a task (a multiple of every block and batch size).
const PIECE_VALUES: usize = 8192;

/// Asks the CPU to start loading `x` into the L2 cache (a hint; nothing off x86-64).
#[inline]
fn prefetch(x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for c in x.chunks(16) {
        // SAFETY: a prefetch is a hint that never faults; SSE is part of x86-64.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(c.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// Quantizes `src` (whole blocks) into `dst`; `weights`, when given, has `src.len()` values.
pub type QuantizeFn = fn(src: &[f32], weights: Option<&[f32]>, dst: &mut [u8]);
/// Decodes whole blocks of `src` into `dst`.
pub type DequantizeFn = fn(src: &[u8], dst: &mut [f32]);

/// One type's kernels at one SIMD level.
#[derive(Clone, Copy)]
pub struct TypeKernels {
    pub quantize: QuantizeFn,
    pub dequantize: DequantizeFn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KType {
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Iq4Nl,
    Iq4Xs,
}

impl KType {
    pub const ALL: [KType; 7] = [Self::Q2K, Self::Q3K, Self::Q4K, Self::Q5K, Self::Q6K, Self::Iq4Nl, Self::Iq4Xs];

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name().eq_ignore_ascii_case(name))
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Q2K => "Q2_K",
            Self::Q3K => "Q3_K",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
            Self::Iq4Nl => "IQ4_NL",
            Self::Iq4Xs => "IQ4_XS",
        }
    }

    /// Values per block.
    pub const fn block_size(self) -> usize {
        match self {
            Self::Iq4Nl => 32,
            _ => QK_K,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            Self::Q2K => 84,
            Self::Q3K => 110,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
            Self::Iq4Nl => 18,
            Self::Iq4Xs => 136,
        }
    }

    pub fn kernels_at(self, level: Level) -> TypeKernels {
        match self {
            Self::Q2K => q2_k::kernels(level),
            Self::Q3K => q3_k::kernels(level),
            Self::Q4K => q4_k::kernels(level),
            Self::Q5K => q5_k::kernels(level),
            Self::Q6K => q6_k::kernels(level),
            Self::Iq4Nl => iq4_nl::kernels(level),
            Self::Iq4Xs => iq4_xs::kernels(level),
        }
    }

    /// Bytes that `n` values take (`n` must be a multiple of the block size).
    pub fn quantized_len(self, n: usize) -> usize {
        n / self.block_size() * self.block_bytes()
    }
}

/// Quantizes `src` (rows of `row_len` values) into `dst` of [`KType::quantized_len`] bytes.
pub fn quantize_into(t: KType, src: &[f32], row_len: usize, weights: Weights<'_>, dst: &mut [u8]) -> Result<()> {
    quantize_into_at(t, simd::level(), src, row_len, weights, dst)
}

/// [`quantize_into`] with the kernels of one SIMD level (tests compare levels with it).
pub fn quantize_into_at(t: KType, level: Level, src: &[f32], row_len: usize, weights: Weights<'_>, dst: &mut [u8]) -> Result<()> {
    let bs = t.block_size();
    if row_len == 0 || !src.len().is_multiple_of(row_len) {
        return Err(Error::Shape(format!("{} values do not form rows of {row_len}", src.len())));
    }
    if !row_len.is_multiple_of(bs) {
        return Err(Error::Shape(format!("row length {row_len} is not a multiple of the {} block size {bs}", t.name())));
    }
    if dst.len() != t.quantized_len(src.len()) {
        return Err(Error::Shape(format!("output has {} bytes, expected {}", dst.len(), t.quantized_len(src.len()))));
    }
    if let Weights::PerColumn { row_len: columns, .. } = weights {
        if columns != row_len {
            return Err(Error::Shape(format!("column weights are for rows of {columns}, the tensor's rows hold {row_len}")));
        }
    }
    weights.validate(src.len())?;
    let quantize = t.kernels_at(level).quantize;
    // Segments of whole blocks; with per-column weights a segment never crosses a row, so its
    // weights are one contiguous slice of the column weights.
    let per_column = matches!(weights, Weights::PerColumn { .. });
    let seg = if per_column { CHUNK_VALUES.min(row_len) } else { CHUNK_VALUES } / bs * bs;
    let mut jobs = Vec::with_capacity(src.len() / seg + 1);
    let mut rest_dst = dst;
    let mut start = 0;
    while start < src.len() {
        let end = if per_column { (start + seg).min((start / row_len + 1) * row_len) } else { (start + seg).min(src.len()) };
        let (d, tail) = rest_dst.split_at_mut(t.quantized_len(end - start));
        rest_dst = tail;
        jobs.push((start, end, d));
        start = end;
    }
    // Each job checks its own values just before quantizing them (while they are in cache); the
    // error then names the first non-finite value of the whole input, whichever job saw one.
    // Within a job, pieces of PIECE_VALUES: the next piece is prefetched while this one is
    // checked and quantized, so the memory reads overlap the arithmetic.
    let found = parallel::try_for_each(jobs, |(a, b, d)| {
        let w = match weights {
            Weights::None => None,
            Weights::PerValue(v) => Some(&v[a..b]),
            Weights::PerColumn { w, .. } => Some(&w[a % row_len..a % row_len + (b - a)]),
        };
        let (x, mut d) = (&src[a..b], d);
        for p in (0..x.len()).step_by(PIECE_VALUES) {
            let e = (p + PIECE_VALUES).min(x.len());
            prefetch(&x[e..(e + PIECE_VALUES).min(x.len())]);
            if !all_finite_at(level, &x[p..e]) {
                return Err(Error::NonFinite { index: a });
            }
            let (dp, rest) = d.split_at_mut(t.quantized_len(e - p));
            quantize(&x[p..e], w.map(|w| &w[p..e]), dp);
            d = rest;
        }
        Ok(())
    });
    match found {
        Err(Error::NonFinite { .. }) => Err(Error::NonFinite { index: src.iter().position(|v| !v.is_finite()).unwrap_or(0) }),
        other => other,
    }
}

/// [`all_finite`] compiled for AVX2 where `level` has it (4x fewer instructions than SSE2).
fn all_finite_at(level: Level, x: &[f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if matches!(level, Level::Avx2 | Level::Avx512) && simd::supported(Level::Avx2) {
        /// # Safety
        /// The CPU must have AVX2.
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(x: &[f32]) -> bool {
            all_finite(x)
        }
        // SAFETY: AVX2 support was just checked.
        return unsafe { avx2(x) };
    }
    let _ = level; // only x86 has a wider version
    all_finite(x)
}

/// Whether every value is finite: an exponent-bits test over chunks of 64 that the compiler
/// vectorises (`position(!is_finite)` stops at each value and does not).
#[inline(always)]
fn all_finite(x: &[f32]) -> bool {
    let bad = |c: &[f32]| c.iter().fold(0u32, |acc, v| acc | u32::from(v.to_bits() & 0x7f80_0000 == 0x7f80_0000));
    let mut chunks = x.chunks_exact(64);
    for c in chunks.by_ref() {
        if bad(c) != 0 {
            return false;
        }
    }
    bad(chunks.remainder()) == 0
}

/// Decodes whole blocks in `src` into `dst`.
pub fn dequantize_into(t: KType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    dequantize_into_at(t, simd::level(), src, dst)
}

/// [`dequantize_into`] with the kernels of one SIMD level.
pub fn dequantize_into_at(t: KType, level: Level, src: &[u8], dst: &mut [f32]) -> Result<()> {
    let (bb, bs) = (t.block_bytes(), t.block_size());
    if !src.len().is_multiple_of(bb) {
        return Err(Error::Shape(format!("{} bytes are not a whole number of {} blocks of {bb} bytes", src.len(), t.name())));
    }
    if dst.len() != src.len() / bb * bs {
        return Err(Error::Shape(format!("output holds {} values, the {} blocks hold {}", dst.len(), src.len() / bb, src.len() / bb * bs)));
    }
    let dequantize = t.kernels_at(level).dequantize;
    let blocks = CHUNK_VALUES / bs;
    let jobs: Vec<_> = src.chunks(blocks * bb).zip(dst.chunks_mut(blocks * bs)).collect();
    parallel::try_for_each(jobs, |(s, d)| {
        dequantize(s, d);
        Ok(())
    })
}

/// Test helper: quantizes `x` as rows of 512 values at one level (panics on error).
#[cfg(test)]
pub(crate) fn quantize_rows_512(t: KType, level: Level, x: &[f32], w: Weights<'_>) -> Vec<u8> {
    let mut out = vec![0u8; t.quantized_len(x.len())];
    quantize_into_at(t, level, x, 512, w, &mut out).unwrap();
    out
}

#[cfg(test)]
mod finite_tests {
    use super::*;

    /// Jobs check their own values; the error still names the first bad value of the input,
    /// whichever job saw one.
    #[test]
    fn non_finite_error_names_the_first_index() {
        let n = 3 * CHUNK_VALUES + 512;
        for bad in [[5usize, 2 * CHUNK_VALUES + 9], [CHUNK_VALUES + 1, n - 1], [n - 2, n - 1]] {
            let mut x = vec![0.25f32; n];
            x[bad[1]] = f32::NAN;
            x[bad[0]] = f32::NEG_INFINITY;
            let mut out = vec![0u8; KType::Q3K.quantized_len(n)];
            let r = quantize_into(KType::Q3K, &x, 512, Weights::None, &mut out);
            assert!(matches!(r, Err(Error::NonFinite { index }) if index == bad[0]), "{r:?}");
        }
        assert!(all_finite(&[0.0, f32::MAX, -f32::MAX, f32::MIN_POSITIVE, 1e-45]));
        assert!(!all_finite(&[0.0; 70].iter().copied().chain([f32::INFINITY]).collect::<Vec<_>>()));
    }
}
