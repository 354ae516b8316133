//! The magnitude threshold by radix select: which `|score|` is the `keep`-th largest.
//!
//! `|x|` of a finite float, read as the integer `bits & 0x7fffffff` ([`super::key`]), orders like
//! the magnitude. Pass 1 counts the top 16 of those 31 bits (65536 bins) per fixed chunk; the
//! counts are summed (integer sums: any order gives the same) and walked from the top to find
//! the bin holding the `keep`-th largest key. Pass 2 counts the low 15 bits of the keys in that
//! bin, which pins the exact key `T`. Everything above `T` is kept, plus the first `ties` keys
//! equal to `T` in flat order. Two reads of the data, no sort, no copy.

use super::{key, run_ordered, NON_FINITE};
use crate::error::{invalid, Error, Result};

/// Elements per histogram job: large enough that the 256 KiB histograms stay few.
const CHUNK: usize = 1 << 20;
const HI_BINS: usize = 1 << 16;
const LO_BITS: u32 = 15;
const LO_BINS: usize = 1 << LO_BITS;

/// Keep every key above `key`, and the first `ties` keys equal to it in flat order.
/// `key == u32::MAX` keeps nothing (no finite key reaches it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threshold {
    pub key: u32,
    pub ties: usize,
    /// How many keys equal `key` in all the input (so `ties <= equal`).
    pub equal: usize,
}

/// Fixed chunks of all parts: (part index, start offset within the part, slice).
pub(crate) fn chunks<'a>(parts: &[&'a [f32]], size: usize) -> Vec<(usize, usize, &'a [f32])> {
    let mut out = Vec::new();
    for (p, s) in parts.iter().enumerate() {
        out.extend(s.chunks(size).enumerate().map(|(c, x)| (p, c * size, x)));
    }
    out
}

/// Sums per-chunk histograms of `bin(key)` over the keys `filter` accepts, checking finiteness.
fn histogram(parts: &[&[f32]], bins: usize, filter: impl Fn(u32) -> Option<usize> + Sync) -> Result<Vec<u64>> {
    let jobs = chunks(parts, CHUNK);
    let mut hists = vec![vec![0u32; bins]; jobs.len()];
    let work: Vec<_> = jobs.into_iter().zip(hists.iter_mut()).collect();
    run_ordered(work, |((_, base, x), h)| {
        let mut max = 0u32;
        for &v in x {
            let k = key(v);
            max = max.max(k);
            if let Some(b) = filter(k) {
                h[b.min(bins - 1)] += 1;
            }
        }
        if max >= NON_FINITE {
            let i = x.iter().position(|v| key(*v) >= NON_FINITE).unwrap_or(0);
            return Err(Error::NonFinite { index: base + i });
        }
        Ok(())
    })?;
    let mut total = vec![0u64; bins];
    for h in &hists {
        for (t, &c) in total.iter_mut().zip(h) {
            *t += c as u64;
        }
    }
    Ok(total)
}

/// Walks `hist` from the top bin down: the bin where the running count reaches `need`, and the
/// count strictly above that bin.
fn find_bin(hist: &[u64], need: u64) -> (usize, u64) {
    let mut above = 0u64;
    for b in (0..hist.len()).rev() {
        if above + hist[b] >= need {
            return (b, above);
        }
        above += hist[b];
    }
    (0, above)
}

/// The threshold that keeps exactly `keep` of all the scores in `parts` (taken in order as one
/// flat array). Errors: `keep` larger than the total, a non-finite score.
pub fn threshold(parts: &[&[f32]], keep: usize) -> Result<Threshold> {
    let n: usize = parts.iter().map(|p| p.len()).sum();
    if keep > n {
        return Err(invalid!("cannot keep {keep} of {n} elements"));
    }
    let hi = histogram(parts, HI_BINS, |k| Some((k >> LO_BITS) as usize))?;
    if keep == 0 {
        return Ok(Threshold { key: u32::MAX, ties: 0, equal: 0 });
    }
    let (bin, above_hi) = find_bin(&hi, keep as u64);
    let lo = histogram(parts, LO_BINS, |k| ((k >> LO_BITS) as usize == bin).then_some((k as usize) & (LO_BINS - 1)))?;
    let (low, above_lo) = find_bin(&lo, keep as u64 - above_hi);
    let above = above_hi + above_lo;
    Ok(Threshold { key: ((bin as u32) << LO_BITS) | low as u32, ties: (keep as u64 - above) as usize, equal: lo[low] as usize })
}
