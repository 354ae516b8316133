//! One-pass magnitude masks from a key bracket `[lo, hi]` known to hold the threshold.
//!
//! The mask pass ([`Bracket`] kernels) sets the bit of every key above `hi` and collects the
//! chunk offsets and keys of those inside `[lo, hi]` ("candidates"); the exact threshold is then
//! found among the candidates alone. A bracket comes either from a small deterministic sample
//! ([`sample_bracket`]: 4096 cache lines, a few sigma around the sampled quantile, so the whole
//! job is one read of the data) or, when the sample misses (checked exactly: the counts above
//! and inside the bracket must straddle `keep`), from the top-bits histogram of `select.rs`,
//! whose bin is a bracket that cannot miss. Either way the result is the unique exact mask.

use std::sync::Mutex;

use super::select::{find_bin, resolve, Threshold};
use super::{check_finite, key, run_ordered};
use crate::error::Result;
use crate::simd::Level;

/// Largest key of a finite float.
pub(crate) const MAX_FINITE: u32 = 0x7f7f_ffff;
/// Inputs below this many elements skip the sample and use the histogram directly.
const MIN_SAMPLED: usize = 1 << 15;
/// Sampled cache lines (16 elements each) at most, and elements per sampled line.
const LINES: usize = 4096;
const LINE: usize = 16;

/// One chunk's candidates: chunk offsets and keys, in flat order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cands {
    pub idx: Vec<u32>,
    pub key: Vec<u32>,
}

/// What a mask pass saw besides the mask and candidates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// `x` has a non-finite value.
    pub bad: bool,
    /// The number of keys above `hi` (mask bits set).
    pub above: usize,
}

/// `kernel(x, lo, hi, mask, cands) -> Scan`: writes the mask bytes of `x` (bit set when
/// `key > hi`, padding bits zero) and appends the offsets and keys of the keys in `[lo, hi]`.
/// Requires `lo <= hi <= 0x7fff_ffff`, `mask.len() == ceil(x.len() / 8)` and `x.len() < 2^32`.
pub type Bracket = fn(&[f32], u32, u32, &mut [u8], &mut Cands) -> Scan;

/// The bracket kernel of level `l` (scalar where the level has none).
pub fn kernel(l: Level) -> Bracket {
    match l {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => super::x86::bracket_avx512,
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => super::x86::bracket_avx2,
        _ => bracket_scalar,
    }
}

/// The scalar bracket kernel (the oracle of the SIMD ones).
pub fn bracket_scalar(x: &[f32], lo: u32, hi: u32, out: &mut [u8], c: &mut Cands) -> Scan {
    bracket_scalar_from(x, 0, lo, hi, out, c)
}

/// [`bracket_scalar`] from mask byte `from` on (the SIMD kernels' tail).
pub(crate) fn bracket_scalar_from(x: &[f32], from: usize, lo: u32, hi: u32, out: &mut [u8], c: &mut Cands) -> Scan {
    let (mut bad, mut above) = (0u32, 0usize);
    for (i, byte) in out.iter_mut().enumerate().skip(from) {
        let xs = &x[i * 8..(i * 8 + 8).min(x.len())];
        let (mut gt, mut inside) = (0u8, 0u8);
        for (j, &v) in xs.iter().enumerate() {
            let k = key(v);
            bad |= k.wrapping_add(0x0080_0000);
            gt |= ((k > hi) as u8) << j;
            inside |= ((k >= lo && k <= hi) as u8) << j;
        }
        *byte = gt;
        above += gt.count_ones() as usize;
        while inside != 0 {
            let j = inside.trailing_zeros() as usize;
            c.idx.push((i * 8 + j) as u32);
            c.key.push(key(xs[j]));
            inside &= inside - 1;
        }
    }
    Scan { bad: bad & 0x8000_0000 != 0, above }
}

/// A deterministic pseudo-random offset for sampled line `b` (splitmix64).
fn jitter(b: usize) -> usize {
    let mut z = (b as u64).wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as usize
}

/// A key bracket likely (not certain) to hold the `keep`-th largest key of the concatenated
/// `parts`: the sampled keys `5 sigma` of sample rank either side of the sampled quantile.
/// `None` for small inputs or `keep == 0`.
pub(crate) fn sample_bracket(parts: &[&[f32]], n: usize, keep: usize) -> Option<(u32, u32)> {
    if n < MIN_SAMPLED || keep == 0 {
        return None;
    }
    let starts: Vec<usize> = parts.iter().scan(0, |at, p| Some(std::mem::replace(at, *at + p.len()))).collect();
    let lines = LINES.min(n / 256);
    let mut keys = Vec::with_capacity(lines * LINE);
    for b in 0..lines {
        let (from, to) = (b * n / lines, (b + 1) * n / lines);
        let at = from + jitter(b) % (to - from - LINE);
        let p = starts.partition_point(|&s| s <= at) - 1;
        let (part, off) = (parts[p], at - starts[p]);
        keys.extend(part[off..(off + LINE).min(part.len())].iter().map(|&v| key(v).min(MAX_FINITE)));
    }
    let s = keys.len();
    let q = keep as f64 / n as f64;
    let rank = (1.0 - q) * s as f64;
    let margin = 5.0 * (s as f64 * q * (1.0 - q)).sqrt() + 8.0;
    let (lo_r, hi_r) = (rank - margin, rank + margin);
    let hi = if hi_r >= (s - 1) as f64 { MAX_FINITE } else { *keys.select_nth_unstable(hi_r as usize).1 };
    let lo = if lo_r < 1.0 { 0 } else { *keys.select_nth_unstable(lo_r as usize).1 };
    Some((lo.min(hi), hi))
}

/// Candidate lists kept between calls, so that their pages stay mapped: fresh ones cost a page
/// fault per 4 KiB written, about a tenth of a call on the machine measured. At most
/// [`POOL_BYTES`] of capacity is kept; a call that finds the pool in use allocates its own.
static POOL: Mutex<Vec<Cands>> = Mutex::new(Vec::new());
const POOL_BYTES: usize = 64 << 20;

/// `n` empty candidate lists, from [`POOL`] when it is free; handed back on drop.
struct Pooled(Vec<Cands>);

impl Pooled {
    fn take(n: usize) -> Pooled {
        let mut v = POOL.try_lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default();
        v.truncate(n);
        v.iter_mut().for_each(|c| {
            c.idx.clear();
            c.key.clear();
        });
        v.resize_with(n, Cands::default);
        Pooled(v)
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let bytes: usize = self.0.iter().map(|c| 4 * (c.idx.capacity() + c.key.capacity())).sum();
        if let (true, Ok(mut p)) = (bytes <= POOL_BYTES, POOL.try_lock()) {
            *p = std::mem::take(&mut self.0);
        }
    }
}

/// The mask pass with bracket `[lo, hi]` over every chunk, then the exact threshold among the
/// candidates. `None` (masks partly written) when the bracket does not hold the `keep`-th
/// largest key. Errors on the first non-finite value in chunk order.
pub(crate) fn bracketed(
    jobs: &[(usize, usize, &[f32])],
    outs: &mut [&mut [u8]],
    keep: usize,
    lo: u32,
    hi: u32,
    f: Bracket,
) -> Result<Option<Threshold>> {
    let mut pooled = Pooled::take(jobs.len());
    let cands = &mut pooled.0;
    let mut above = vec![0usize; jobs.len()];
    let work: Vec<_> = jobs.iter().zip(outs.iter_mut()).zip(cands.iter_mut().zip(above.iter_mut())).collect();
    run_ordered(work, |((&(_, base, x), out), (c, g))| {
        // Room for a few percent of candidates up front (the kernels grow the lists if needed).
        c.idx.reserve(x.len() / 16);
        c.key.reserve(x.len() / 16);
        let scan = f(x, lo, hi, out, c);
        if scan.bad {
            check_finite(x, base)?;
        }
        *g = scan.above;
        Ok(())
    })?;
    let g: usize = above.iter().sum();
    let inside: usize = cands.iter().map(|c| c.idx.len()).sum();
    if g >= keep || keep > g + inside {
        return Ok(None);
    }
    let (t, equal) = candidate_threshold(cands, keep - g, lo, hi)?;
    let mut left = t.ties;
    let work: Vec<_> = outs
        .iter_mut()
        .zip(cands.iter())
        .zip(equal)
        .map(|((out, c), e)| {
            let b = e.min(left);
            left -= b;
            (c, b, out)
        })
        .collect();
    run_ordered(work, |(c, budget, out)| {
        keep_candidates(c, t.key, budget, out);
        Ok(())
    })?;
    Ok(Some(Threshold { key: t.key, above: keep - t.ties, ties: t.ties }))
}

/// Bins of the candidate-key histogram of [`candidate_threshold`].
const KEY_BINS: usize = 2048;

/// The exact threshold among all chunks' candidate keys (all in `[lo, hi]`) keeping the `need`
/// largest, and how many keys equal to it each chunk holds. In parallel: per-chunk histograms
/// of the keys' top bits above `lo`, then each chunk's keys in the one straddling bin, among
/// which the exact key is selected.
fn candidate_threshold(cands: &[Cands], need: usize, lo: u32, hi: u32) -> Result<(Threshold, Vec<usize>)> {
    let shift = (32 - (hi - lo).leading_zeros()).saturating_sub(KEY_BINS.trailing_zeros());
    let bin = |k: u32| ((k - lo) >> shift) as usize;
    let mut hists = vec![vec![0u32; KEY_BINS]; cands.len()];
    run_ordered(cands.iter().zip(hists.iter_mut()).collect(), |(c, h)| {
        c.key.iter().for_each(|&k| h[bin(k)] += 1);
        Ok(())
    })?;
    let mut total = vec![0u64; KEY_BINS];
    for h in &hists {
        total.iter_mut().zip(h).for_each(|(t, &v)| *t += v as u64);
    }
    let (b, above) = find_bin(&total, need);
    let mut in_bin = vec![Vec::new(); cands.len()];
    run_ordered(cands.iter().zip(in_bin.iter_mut()).collect(), |(c, v)| {
        v.extend(c.key.iter().copied().filter(|&k| bin(k) == b as usize));
        Ok(())
    })?;
    let t = resolve(&mut in_bin.concat(), need - above);
    let equal = in_bin.iter().map(|v| v.iter().filter(|&&k| k == t.key).count()).collect();
    Ok((Threshold { key: t.key, above: above + t.above, ties: t.ties }, equal))
}

/// Sets the bits of one chunk's candidates: keys above `t`, and equal ones while `ties` lasts.
fn keep_candidates(c: &Cands, t: u32, mut ties: usize, out: &mut [u8]) {
    for (&i, &k) in c.idx.iter().zip(&c.key) {
        let tie = k == t && ties > 0;
        ties -= tie as usize;
        out[i as usize / 8] |= ((k > t || tie) as u8) << (i % 8);
    }
}
