//! Pruning: which weights to keep, and the compressed forms that store only those.
//!
//! * [`select`]: exact selection of the `keep` largest of `n` scores by a histogram of the top
//!   bits of `|score|` and a small exact step on the one straddling bin (O(n), two reads, no
//!   sort), over one tensor or many (global pruning).
//! * [`mask`]: the 1-bit-per-element keep mask (LSB first within each byte) built from that
//!   threshold, and the kept values packed densely in flat order / scattered back.
//! * [`nm`]: N:M semi-structured sparsity: in every group of `m` consecutive elements keep the
//!   `n` largest `|score|`; values plus packed in-group positions.
//!
//! Tie rule everywhere: larger `|score|` first, and among equal magnitudes the lower flat index
//! (the lower position in an N:M group) first; `-0.0` and `0.0` are equal. Work is cut into
//! chunks fixed by the input, so results do not depend on the thread count; SIMD kernels
//! (`x86.rs`: the bracket mask pass and groups of 4) compare integer keys only and give the
//! scalar kernels' bytes exactly.
//!
//! * [`norms`]: row and column L1/L2 norms (`f64`, fixed summation order) for structured
//!   pruning.
//! * [`bracket`]: magnitude masks in one read: a sampled key bracket, the mask pass, the exact
//!   threshold among the bracket's few candidates; the histogram is the fallback bracket.

pub mod bracket;
pub mod mask;
pub mod nm;
pub mod norms;
pub mod select;
#[cfg(target_arch = "x86_64")]
pub mod x86;
#[cfg(target_arch = "x86_64")]
pub mod x86_norms;

#[cfg(test)]
mod tests;

use crate::error::{Error, Result};
use crate::parallel;

pub use mask::{compress_into, compress_into_at, count_kept, expand_into, magnitude_masks, magnitude_masks_at, mask_len};
pub use nm::{nm_expand_into, nm_into, nm_into_at, nm_positions_len, position_bits};
pub use norms::{col_norms, row_norms, Norm};
pub use select::Threshold;

/// `|x|` as an order-preserving integer: the float bits without the sign. Finite values map to
/// `0 ..= 0x7f7f_ffff`; infinities and NaNs to `>= 0x7f80_0000`.
#[inline(always)]
pub(crate) fn key(x: f32) -> u32 {
    x.to_bits() & 0x7fff_ffff
}

/// The smallest key of a non-finite value.
pub(crate) const NON_FINITE: u32 = 0x7f80_0000;

/// The index of the first non-finite value of `x` (offset by `base`), as an error. The scan is
/// a branch-free OR (vectorised by the compiler); only a failing slice is searched.
pub(crate) fn check_finite(x: &[f32], base: usize) -> Result<()> {
    let bad = x.iter().fold(0u32, |b, &v| b | key(v).wrapping_add(0x0080_0000));
    if bad & 0x8000_0000 == 0 {
        return Ok(());
    }
    match x.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::NonFinite { index: base + i }),
        None => Ok(()),
    }
}

/// How far ahead (in `f32`s, 8 KiB) the streaming SIMD kernels prefetch their input: on the
/// machine measured, one software prefetch per cache line this far ahead halves the time of a
/// single-thread read of a large array (the hardware prefetchers alone stay too close).
#[cfg(target_arch = "x86_64")]
pub(crate) const PREFETCH: usize = 2048;

/// Prefetches the cache line holding `x[at + PREFETCH]` (which need not exist) into L1.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch(x: &[f32], at: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: a prefetch is a hint that never faults; the address is formed with wrapping
    // arithmetic and never dereferenced.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(x.as_ptr().wrapping_add(at + PREFETCH).cast()) }
}

/// The number of set bits of `bytes` (the hardware `popcnt` where the CPU has it).
pub(crate) fn popcount(bytes: &[u8]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("popcnt") {
        // SAFETY: the CPU has `popcnt`.
        return unsafe { popcount_hw(bytes) };
    }
    popcount_words(bytes)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
fn popcount_hw(bytes: &[u8]) -> usize {
    popcount_words(bytes)
}

#[inline(always)]
fn popcount_words(bytes: &[u8]) -> usize {
    let words = bytes.chunks_exact(8);
    let rest: usize = words.remainder().iter().map(|b| b.count_ones() as usize).sum();
    rest + words.map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")).count_ones() as usize).sum::<usize>()
}

/// Runs every job (in parallel) and returns the error of the first failing job in job order,
/// so the reported error does not depend on scheduling.
pub(crate) fn run_ordered<T: Send>(jobs: Vec<T>, f: impl Fn(T) -> Result<()> + Sync + Send) -> Result<()> {
    let mut slots: Vec<Option<Error>> = (0..jobs.len()).map(|_| None).collect();
    let work: Vec<(T, &mut Option<Error>)> = jobs.into_iter().zip(slots.iter_mut()).collect();
    parallel::try_for_each(work, |(job, slot)| {
        if let Err(e) = f(job) {
            *slot = Some(e);
        }
        Ok(())
    })?;
    slots.into_iter().flatten().next().map_or(Ok(()), Err)
}
