//! Exact magnitude selection in two reads of the data, no sort.
//!
//! `|x|` of a finite float, read as the integer `bits & 0x7fffffff` ([`super::key`]), orders like
//! the magnitude. Pass 1 ([`histogram`]) counts the top 12 of those 31 bits (sign-free exponent
//! and 3 mantissa bits: 4096 bins, an L1-resident table) per fixed chunk; the integer counts are
//! summed and walked from the top to find the bin `b` holding the `keep`-th largest key. Pass 2
//! (in `mask.rs`) sets the mask bits of every key above bin `b` and collects the indices of the
//! few keys inside it ("candidates"); [`resolve`] then finds the exact key `T` among those and
//! keeps the candidates above `T` plus the first `ties` equal to it in flat order.

use super::{key, run_ordered, NON_FINITE};
use crate::error::{Error, Result};

pub(crate) const HI_SHIFT: u32 = 19;
const BINS: usize = 1 << (31 - HI_SHIFT);

/// The exact key of the `need`-th largest candidate, how many candidates are above it, and how
/// many equal to it to keep (the first ones in flat order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threshold {
    pub key: u32,
    pub above: usize,
    pub ties: usize,
}

/// Fixed chunks of all parts: (part index, start offset within the part, slice).
pub(crate) fn chunks<'a>(parts: &[&'a [f32]], size: usize) -> Vec<(usize, usize, &'a [f32])> {
    let mut out = Vec::new();
    for (p, s) in parts.iter().enumerate() {
        out.extend(s.chunks(size).enumerate().map(|(c, x)| (p, c * size, x)));
    }
    out
}

/// Counts one chunk's keys by their top bits into two interleaved tables (so runs of equal
/// bins do not serialise on one counter); errors on the first non-finite value.
fn count_chunk(x: &[f32], base: usize, h: &mut [u32]) -> Result<()> {
    let (h0, h1) = h.split_at_mut(BINS);
    let mut bad = 0u32;
    let pairs = x.chunks_exact(2);
    let rest = pairs.remainder();
    for p in pairs {
        let (a, b) = (key(p[0]), key(p[1]));
        bad |= a.wrapping_add(0x0080_0000) | b.wrapping_add(0x0080_0000);
        h0[(a >> HI_SHIFT) as usize & (BINS - 1)] += 1;
        h1[(b >> HI_SHIFT) as usize & (BINS - 1)] += 1;
    }
    for &v in rest {
        let a = key(v);
        bad |= a.wrapping_add(0x0080_0000);
        h0[(a >> HI_SHIFT) as usize & (BINS - 1)] += 1;
    }
    if bad & 0x8000_0000 != 0 {
        let i = x.iter().position(|v| key(*v) >= NON_FINITE).unwrap_or(0);
        return Err(Error::NonFinite { index: base + i });
    }
    Ok(())
}

/// Pass 1: the summed top-bits histogram of all parts' keys (checks finiteness).
pub(crate) fn histogram(jobs: &[(usize, usize, &[f32])]) -> Result<Vec<u64>> {
    let mut hists = vec![vec![0u32; 2 * BINS]; jobs.len()];
    let work: Vec<_> = jobs.iter().zip(hists.iter_mut()).collect();
    run_ordered(work, |(&(_, base, x), h)| count_chunk(x, base, h))?;
    let mut total = vec![0u64; BINS];
    for h in &hists {
        for (i, t) in total.iter_mut().enumerate() {
            *t += (h[i] + h[BINS + i]) as u64;
        }
    }
    Ok(total)
}

/// The bin where the running count from the top reaches `need` (>= 1), and the count above it.
pub(crate) fn find_bin(hist: &[u64], need: usize) -> (u32, usize) {
    let mut above = 0usize;
    for b in (0..hist.len()).rev() {
        if above + hist[b] as usize >= need {
            return (b as u32, above);
        }
        above += hist[b] as usize;
    }
    (0, above)
}

/// The exact threshold among the candidate keys: keep the `need` largest.
pub(crate) fn resolve(candidate_keys: &mut [u32], need: usize) -> Threshold {
    let c = candidate_keys.len();
    let (_, &mut t, _) = candidate_keys.select_nth_unstable(c - need);
    let above = candidate_keys.iter().filter(|&&k| k > t).count();
    Threshold { key: t, above, ties: need - above }
}
