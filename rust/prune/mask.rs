//! Bitmasks and the packed kept values.
//!
//! Mask layout (docs/format.md, "Sparse storage"): bit `i % 8` of byte `i / 8` is 1 when flat
//! element `i` is kept (LSB first); the last byte is padded with zero bits. Kept values are
//! stored densely in flat order. Every kernel works on fixed chunks of [`CHUNK`] elements (a
//! multiple of 8, so a chunk owns whole mask bytes); packing needs each chunk's output offset,
//! which is the popcount of the mask bytes before it.

use super::bracket::{self, bracketed, sample_bracket};
use super::select::{chunks, find_bin, histogram, Threshold, HI_SHIFT};
use super::{check_finite, key, popcount, run_ordered};
use crate::error::{invalid, Error, Result};
use crate::simd::{self, Level};

const CHUNK: usize = 1 << 18;

/// Mask bytes for `n` elements.
pub fn mask_len(n: usize) -> usize {
    n.div_ceil(8)
}

/// Keep masks for all `parts` (one output per part, [`mask_len`] bytes each) keeping exactly
/// `keep` elements across all of them: larger `|score|` first, ties to the lower flat index of
/// the parts taken in order. Returns the exact threshold key, the count above it and the count
/// of equal keys kept. Errors: non-finite scores, `keep` larger than the total, mask buffers of
/// the wrong length.
pub fn magnitude_masks(parts: &[&[f32]], keep: usize, masks: &mut [&mut [u8]]) -> Result<Threshold> {
    magnitude_masks_at(simd::level(), parts, keep, masks)
}

/// [`magnitude_masks`] with the kernels of level `l` (the result does not depend on it).
pub fn magnitude_masks_at(l: Level, parts: &[&[f32]], keep: usize, masks: &mut [&mut [u8]]) -> Result<Threshold> {
    if masks.len() != parts.len() || parts.iter().zip(masks.iter()).any(|(p, m)| m.len() != mask_len(p.len())) {
        return Err(Error::Shape("one mask of ceil(n/8) bytes per part is needed".into()));
    }
    let n: usize = parts.iter().map(|p| p.len()).sum();
    if keep > n {
        return Err(invalid!("cannot keep {keep} of {n} elements"));
    }
    let jobs = chunks(parts, CHUNK);
    let mut outs: Vec<&mut [u8]> = Vec::with_capacity(jobs.len());
    for m in masks.iter_mut() {
        outs.extend(m.chunks_mut(CHUNK / 8));
    }
    if keep == 0 {
        run_ordered(jobs.iter().zip(outs).collect(), |(&(_, base, x), out)| {
            out.fill(0);
            check_finite(x, base)
        })?;
        return Ok(Threshold { key: u32::MAX, above: 0, ties: 0 });
    }
    let f = bracket::kernel(l);
    if let Some((lo, hi)) = sample_bracket(parts, n, keep) {
        if let Some(t) = bracketed(&jobs, &mut outs, keep, lo, hi, f)? {
            return Ok(t);
        }
    }
    // The sample missed (or was skipped): the histogram bin of the threshold is a sure bracket.
    let hist = histogram(&jobs)?;
    let (bin, _) = find_bin(&hist, keep);
    let lo = bin << HI_SHIFT;
    let hi = lo | ((1 << HI_SHIFT) - 1);
    bracketed(&jobs, &mut outs, keep, lo, hi, f)?.ok_or_else(|| invalid!("internal: the histogram bin does not hold the threshold"))
}

/// Checks that `mask` fits `n` elements (length and zero padding bits); returns the kept count.
pub fn count_kept(mask: &[u8], n: usize) -> Result<usize> {
    if mask.len() != mask_len(n) {
        return Err(Error::Shape(format!("a mask of {n} elements has {} bytes, got {}", mask_len(n), mask.len())));
    }
    if !n.is_multiple_of(8) && mask[mask.len() - 1] >> (n % 8) != 0 {
        return Err(Error::Shape(format!("mask has bits set past element {n}")));
    }
    Ok(popcount(mask))
}

/// Per chunk of [`CHUNK`] elements: the offset of its first kept value.
fn offsets(mask: &[u8]) -> Vec<usize> {
    let mut at = 0;
    mask.chunks(CHUNK / 8)
        .map(|c| {
            let o = at;
            at += popcount(c);
            o
        })
        .collect()
}

/// Splits `buf` at the given chunk offsets (the last chunk runs to the end).
fn split_at_offsets<'a, T>(mut buf: &'a mut [T], offs: &[usize]) -> Vec<&'a mut [T]> {
    let mut out = Vec::with_capacity(offs.len());
    for w in 0..offs.len() {
        let len = if w + 1 < offs.len() { offs[w + 1] - offs[w] } else { buf.len() };
        let (a, b) = std::mem::take(&mut buf).split_at_mut(len);
        out.push(a);
        buf = b;
    }
    out
}

/// `kernel(x, mask, out) -> x has a non-finite value`: writes the values of `x` whose mask bit
/// is set to `out` in flat order. Requires `mask.len() == ceil(x.len() / 8)`; panics (never
/// writes out of bounds) when `out` is shorter than the mask's popcount.
pub type Compress = fn(&[f32], &[u8], &mut [f32]) -> bool;

/// The compress kernel of level `l` (scalar where the level has none).
pub fn compress_kernel(l: Level) -> Compress {
    match l {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => super::x86::compress_avx512,
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => super::x86::compress_avx2,
        _ => compress_scalar,
    }
}

/// The scalar compress kernel (the oracle of the SIMD ones).
pub fn compress_scalar(x: &[f32], mask: &[u8], out: &mut [f32]) -> bool {
    compress_scalar_from(x, mask, 0, out)
}

/// [`compress_scalar`] from mask byte `from` on, writing `out` from its start (SIMD tails).
pub(crate) fn compress_scalar_from(x: &[f32], mask: &[u8], from: usize, out: &mut [f32]) -> bool {
    assert_eq!(mask.len(), x.len().div_ceil(8));
    let mut at = 0;
    let bad = x[(from * 8).min(x.len())..].iter().fold(0u32, |b, &v| b | key(v).wrapping_add(0x0080_0000));
    for (i, &byte) in mask.iter().enumerate().skip(from) {
        let mut b = byte;
        while b != 0 {
            out[at] = x[i * 8 + b.trailing_zeros() as usize];
            at += 1;
            b &= b - 1;
        }
    }
    bad & 0x8000_0000 != 0
}

/// Packs the kept values of `values` (mask bit set) into `out`, in flat order. `out` must hold
/// exactly the mask's popcount. Errors: bad mask, wrong `out` length, non-finite values.
pub fn compress_into(values: &[f32], mask: &[u8], out: &mut [f32]) -> Result<()> {
    compress_into_at(simd::level(), values, mask, out)
}

/// [`compress_into`] with the kernels of level `l` (the result does not depend on it).
pub fn compress_into_at(l: Level, values: &[f32], mask: &[u8], out: &mut [f32]) -> Result<()> {
    let kept = count_kept(mask, values.len())?;
    if out.len() != kept {
        return Err(Error::Shape(format!("the mask keeps {kept} values, output holds {}", out.len())));
    }
    let f = compress_kernel(l);
    let offs = offsets(mask);
    let outs = split_at_offsets(out, &offs);
    let work: Vec<_> = values.chunks(CHUNK).zip(mask.chunks(CHUNK / 8)).zip(outs).enumerate().collect();
    run_ordered(work, |(c, ((x, m), o))| if f(x, m, o) { check_finite(x, c * CHUNK) } else { Ok(()) })
}

/// Scatters `packed` (the kept values in flat order) back to the dense `out` (zeros elsewhere).
/// Errors: bad mask, a popcount that is not `packed.len()`, non-finite values.
pub fn expand_into(packed: &[f32], mask: &[u8], out: &mut [f32]) -> Result<()> {
    let kept = count_kept(mask, out.len())?;
    if packed.len() != kept {
        return Err(Error::Shape(format!("the mask keeps {kept} values, {} were given", packed.len())));
    }
    check_finite(packed, 0)?;
    let offs = offsets(mask);
    let work: Vec<_> = out.chunks_mut(CHUNK).zip(mask.chunks(CHUNK / 8)).zip(offs).collect();
    run_ordered(work, |((o, m), mut at)| {
        for (dst, &byte) in o.chunks_mut(8).zip(m) {
            dst.fill(0.0);
            let mut b = byte;
            while b != 0 {
                dst[b.trailing_zeros() as usize] = packed[at];
                at += 1;
                b &= b - 1;
            }
        }
        Ok(())
    })
}
