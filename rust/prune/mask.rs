//! Bitmasks and the packed kept values.
//!
//! Mask layout (docs/format.md, "Sparse storage"): bit `i % 8` of byte `i / 8` is 1 when flat
//! element `i` is kept (LSB first); the last byte is padded with zero bits. Kept values are
//! stored densely in flat order. Every kernel works on fixed chunks of [`CHUNK`] elements (a
//! multiple of 8, so a chunk owns whole mask bytes); packing needs each chunk's output offset,
//! which is the popcount of the mask bytes before it.

use super::select::{chunks, find_bin, histogram, resolve, Threshold, HI_SHIFT};
use super::{check_finite, key, run_ordered};
use crate::error::{invalid, Error, Result};

const CHUNK: usize = 1 << 18;

/// Mask bytes for `n` elements.
pub fn mask_len(n: usize) -> usize {
    n.div_ceil(8)
}

/// Pass 2 on one chunk: mask bits for keys whose top bits exceed `bin`; the chunk offsets of
/// keys inside `bin` go to `cand`. Eight elements per byte, written branch-free (the compiler
/// turns the fixed-size inner loops into vector compares); only bytes with candidates branch.
fn mask_chunk(x: &[f32], bin: u32, out: &mut [u8], cand: &mut Vec<u32>) {
    let full = x.len() / 8;
    for (i, (byte, xs)) in out[..full].iter_mut().zip(x.chunks_exact(8)).enumerate() {
        let xs: &[f32; 8] = xs.try_into().expect("chunks_exact(8)");
        let (gt, eq) = mask_byte(xs, bin);
        *byte = gt;
        push_candidates(cand, i * 8, eq);
    }
    if full < out.len() {
        let mut xs = [0f32; 8];
        xs[..x.len() - full * 8].copy_from_slice(&x[full * 8..]);
        let live = (1u16 << (x.len() - full * 8)) as u8 - 1;
        let (gt, eq) = mask_byte(&xs, bin);
        out[full] = gt & live;
        push_candidates(cand, full * 8, eq & live);
    }
}

#[inline(always)]
fn mask_byte(xs: &[f32; 8], bin: u32) -> (u8, u8) {
    let (mut gt, mut eq) = (0u8, 0u8);
    for (j, &v) in xs.iter().enumerate() {
        let h = key(v) >> HI_SHIFT;
        gt |= ((h > bin) as u8) << j;
        eq |= ((h == bin) as u8) << j;
    }
    (gt, eq)
}

#[inline(always)]
fn push_candidates(cand: &mut Vec<u32>, base: usize, mut eq: u8) {
    while eq != 0 {
        cand.push(base as u32 + eq.trailing_zeros());
        eq &= eq - 1;
    }
}

/// Sets the bits of one chunk's candidates: keys above `t.key`, and equal ones while `ties` lasts.
fn keep_candidates(x: &[f32], cand: &[u32], t: Threshold, mut ties: usize, out: &mut [u8]) {
    for &i in cand {
        let k = key(x[i as usize]);
        let tie = k == t.key && ties > 0;
        ties -= tie as usize;
        out[i as usize / 8] |= ((k > t.key || tie) as u8) << (i % 8);
    }
}

/// Keep masks for all `parts` (one output per part, [`mask_len`] bytes each) keeping exactly
/// `keep` elements across all of them: larger `|score|` first, ties to the lower flat index of
/// the parts taken in order. Returns the exact threshold among the final-bin candidates.
/// Errors: non-finite scores, `keep` larger than the total, mask buffers of the wrong length.
pub fn magnitude_masks(parts: &[&[f32]], keep: usize, masks: &mut [&mut [u8]]) -> Result<Threshold> {
    if masks.len() != parts.len() || parts.iter().zip(masks.iter()).any(|(p, m)| m.len() != mask_len(p.len())) {
        return Err(Error::Shape("one mask of ceil(n/8) bytes per part is needed".into()));
    }
    let n: usize = parts.iter().map(|p| p.len()).sum();
    if keep > n {
        return Err(invalid!("cannot keep {keep} of {n} elements"));
    }
    let jobs = chunks(parts, CHUNK);
    let hist = histogram(&jobs)?;
    let (bin, above) = if keep == 0 { (u32::MAX, 0) } else { find_bin(&hist, keep) };
    let mut outs: Vec<&mut [u8]> = Vec::with_capacity(jobs.len());
    for m in masks.iter_mut() {
        outs.extend(m.chunks_mut(CHUNK / 8));
    }
    let mut cands: Vec<Vec<u32>> = vec![Vec::new(); jobs.len()];
    let work: Vec<_> = jobs.iter().zip(outs.iter_mut()).zip(cands.iter_mut()).collect();
    run_ordered(work, |((&(_, _, x), out), cand)| {
        mask_chunk(x, bin, out, cand);
        Ok(())
    })?;
    if keep == 0 {
        return Ok(Threshold { key: u32::MAX, above: 0, ties: 0 });
    }
    let mut keys: Vec<u32> = jobs.iter().zip(&cands).flat_map(|(&(_, _, x), c)| c.iter().map(move |&i| key(x[i as usize]))).collect();
    let t = resolve(&mut keys, keep - above);
    let mut left = t.ties;
    let work: Vec<_> = jobs
        .iter()
        .zip(outs)
        .zip(&cands)
        .map(|((&(_, _, x), out), c)| {
            let b = c.iter().filter(|&&i| key(x[i as usize]) == t.key).count().min(left);
            left -= b;
            (x, c, b, out)
        })
        .collect();
    run_ordered(work, |(x, c, budget, out)| {
        keep_candidates(x, c, t, budget, out);
        Ok(())
    })?;
    Ok(t)
}

/// Checks that `mask` fits `n` elements (length and zero padding bits); returns the kept count.
pub fn count_kept(mask: &[u8], n: usize) -> Result<usize> {
    if mask.len() != mask_len(n) {
        return Err(Error::Shape(format!("a mask of {n} elements has {} bytes, got {}", mask_len(n), mask.len())));
    }
    if n % 8 != 0 && mask[mask.len() - 1] >> (n % 8) != 0 {
        return Err(Error::Shape(format!("mask has bits set past element {n}")));
    }
    Ok(mask.iter().map(|b| b.count_ones() as usize).sum())
}

/// Per chunk of [`CHUNK`] elements: the offset of its first kept value.
fn offsets(mask: &[u8]) -> Vec<usize> {
    let mut at = 0;
    mask.chunks(CHUNK / 8)
        .map(|c| {
            let o = at;
            at += c.iter().map(|b| b.count_ones() as usize).sum::<usize>();
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

/// Packs the kept values of `values` (mask bit set) into `out`, in flat order. `out` must hold
/// exactly the mask's popcount. Errors: bad mask, wrong `out` length, non-finite values.
pub fn compress_into(values: &[f32], mask: &[u8], out: &mut [f32]) -> Result<()> {
    let kept = count_kept(mask, values.len())?;
    if out.len() != kept {
        return Err(Error::Shape(format!("the mask keeps {kept} values, output holds {}", out.len())));
    }
    let offs = offsets(mask);
    let outs = split_at_offsets(out, &offs);
    let work: Vec<_> = values.chunks(CHUNK).zip(mask.chunks(CHUNK / 8)).zip(outs).enumerate().collect();
    run_ordered(work, |(c, ((x, m), o))| {
        check_finite(x, c * CHUNK)?;
        let mut at = 0;
        for (i, &byte) in m.iter().enumerate() {
            let mut b = byte;
            while b != 0 {
                o[at] = x[i * 8 + b.trailing_zeros() as usize];
                at += 1;
                b &= b - 1;
            }
        }
        Ok(())
    })
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
