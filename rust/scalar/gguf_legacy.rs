//! The five legacy GGUF block types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1), byte-identical to the `gguf`
//! package's `gguf.quants.quantize` and ggml's `quantize_row_*_ref`.
//!
//! Rows are cut into blocks of 32; each block becomes `block_bytes()` bytes (layouts in
//! docs/format.md). Work is split into fixed chunks of blocks that run in parallel; each chunk
//! writes its own output bytes, so the result does not depend on the thread count.

use crate::error::{invalid, Error, Result};
use crate::parallel;
use crate::simd::{self, scalar, Kernels};

/// Blocks handled by one parallel task (128 Ki floats, 512 KiB of input).
const CHUNK_BLOCKS: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegacyType {
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
}

type QuantizeFn = fn(&[f32], &mut [u8]) -> bool;
type DequantizeFn = fn(&[u8], &mut [f32]);

impl LegacyType {
    pub const ALL: [LegacyType; 5] = [Self::Q8_0, Self::Q4_0, Self::Q4_1, Self::Q5_0, Self::Q5_1];

    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| invalid!("unknown GGUF type {name:?}: expected one of Q8_0, Q4_0, Q4_1, Q5_0, Q5_1"))
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Q8_0 => "Q8_0",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
        }
    }

    /// Values per block.
    pub const fn block_size(self) -> usize {
        scalar::QK
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            Self::Q8_0 => 34,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
        }
    }

    fn quantize_kernel(self, k: &Kernels) -> QuantizeFn {
        match self {
            Self::Q8_0 => k.quantize_q8_0,
            Self::Q4_0 => k.quantize_q4_0,
            Self::Q4_1 => k.quantize_q4_1,
            Self::Q5_0 => k.quantize_q5_0,
            Self::Q5_1 => k.quantize_q5_1,
        }
    }

    fn dequantize_kernel(self, k: &Kernels) -> DequantizeFn {
        match self {
            Self::Q8_0 => k.dequantize_q8_0,
            Self::Q4_0 => k.dequantize_q4_0,
            Self::Q4_1 => k.dequantize_q4_1,
            Self::Q5_0 => k.dequantize_q5_0,
            Self::Q5_1 => k.dequantize_q5_1,
        }
    }

    /// Bytes that `n` values take (`n` must be a multiple of the block size).
    pub fn quantized_len(self, n: usize) -> usize {
        n / self.block_size() * self.block_bytes()
    }
}

/// Checks that `n` values in rows of `row_len` can be cut into blocks.
pub fn check_rows(t: LegacyType, n: usize, row_len: usize) -> Result<()> {
    if row_len == 0 || !n.is_multiple_of(row_len) {
        return Err(Error::Shape(format!("{n} values do not form rows of {row_len}")));
    }
    if !row_len.is_multiple_of(t.block_size()) {
        return Err(Error::Shape(format!("row length {row_len} is not a multiple of the {} block size {}", t.name(), t.block_size())));
    }
    Ok(())
}

/// Quantizes `src` (rows of `row_len` values) into `dst` of [`LegacyType::quantized_len`] bytes.
pub fn quantize_into(t: LegacyType, src: &[f32], row_len: usize, dst: &mut [u8]) -> Result<()> {
    check_rows(t, src.len(), row_len)?;
    if dst.len() != t.quantized_len(src.len()) {
        return Err(Error::Shape(format!("output has {} bytes, expected {}", dst.len(), t.quantized_len(src.len()))));
    }
    let kernel = t.quantize_kernel(simd::kernels());
    let (cin, cout) = (CHUNK_BLOCKS * t.block_size(), CHUNK_BLOCKS * t.block_bytes());
    let jobs: Vec<_> = src.chunks(cin).zip(dst.chunks_mut(cout)).collect();
    parallel::try_for_each(jobs, |(s, d)| if kernel(s, d) { Ok(()) } else { Err(Error::NonFinite { index: 0 }) })
        .map_err(|_| Error::NonFinite { index: src.iter().position(|v| !v.is_finite()).unwrap_or(0) })
}

/// Dequantizes whole blocks in `src` into `dst` (32 values a block).
pub fn dequantize_into(t: LegacyType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    if !src.len().is_multiple_of(t.block_bytes()) {
        return Err(Error::Shape(format!(
            "{} bytes are not a whole number of {} blocks of {} bytes",
            src.len(),
            t.name(),
            t.block_bytes()
        )));
    }
    if dst.len() != src.len() / t.block_bytes() * t.block_size() {
        return Err(Error::Shape(format!(
            "output holds {} values, the {} blocks hold {}",
            dst.len(),
            src.len() / t.block_bytes(),
            src.len() / t.block_bytes() * t.block_size()
        )));
    }
    let kernel = t.dequantize_kernel(simd::kernels());
    let (cin, cout) = (CHUNK_BLOCKS * t.block_bytes(), CHUNK_BLOCKS * t.block_size());
    let jobs: Vec<_> = src.chunks(cin).zip(dst.chunks_mut(cout)).collect();
    parallel::try_for_each(jobs, |(s, d)| {
        kernel(s, d);
        Ok(())
    })
}
