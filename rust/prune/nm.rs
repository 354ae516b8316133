//! N:M semi-structured sparsity: in every group of `m` consecutive elements (along the last
//! axis, so groups never straddle rows when the row length is a multiple of `m`), keep the `n`
//! largest `|score|`, ties to the lower position.
//!
//! Storage (docs/format.md): the kept values, `n` per group in ascending position order, and
//! their in-group positions as a little-endian bit stream of [`position_bits`] bits each (the
//! layout of `crate::pack`): 2 bits for `m <= 4` (as NVIDIA's 2:4 metadata), 3 for `m <= 8`,
//! 4 for `m <= 16`. Jobs take [`CHUNK_GROUPS`] groups (a multiple of 8, so a job owns whole
//! position bytes).

use super::{check_finite, key, run_ordered};
use crate::error::{invalid, Error, Result};
use crate::simd::{self, Level};

const CHUNK_GROUPS: usize = 1 << 13;

/// Bits per stored position for groups of `m`.
pub fn position_bits(m: usize) -> u32 {
    (usize::BITS - (m - 1).leading_zeros()).max(2)
}

/// Bytes of packed positions for `groups` groups of `n` kept.
pub fn nm_positions_len(groups: usize, n: usize, m: usize) -> usize {
    (groups * n * position_bits(m) as usize).div_ceil(8)
}

fn check_nm(n: usize, m: usize, len: usize) -> Result<usize> {
    if !(2..=16).contains(&m) || n == 0 || n >= m {
        return Err(invalid!("N:M sparsity needs 1 <= N < M <= 16, got {n}:{m}"));
    }
    if !len.is_multiple_of(m) {
        return Err(Error::Shape(format!("{len} elements do not form groups of {m}")));
    }
    Ok(len / m)
}

/// Little-endian bit stream writer into a byte slice.
struct Bits<'a> {
    out: &'a mut [u8],
    acc: u64,
    fill: u32,
    at: usize,
}

impl Bits<'_> {
    #[inline(always)]
    fn push(&mut self, v: u32, bits: u32) {
        self.acc |= (v as u64) << self.fill;
        self.fill += bits;
        while self.fill >= 8 {
            self.out[self.at] = self.acc as u8;
            self.acc >>= 8;
            self.fill -= 8;
            self.at += 1;
        }
    }
    fn finish(self) {
        if self.fill > 0 {
            self.out[self.at] = self.acc as u8;
        }
    }
}

/// The kept positions of one group as a bit set: position `i` is kept when fewer than `n`
/// elements beat it (a larger key, or an equal key at a lower position).
#[inline(always)]
fn select_group<const M: usize>(s: &[f32], n: usize) -> u32 {
    let keys: [u32; M] = std::array::from_fn(|i| key(s[i]));
    let mut kept = 0u32;
    for i in 0..M {
        let mut rank = 0usize;
        for (j, &kj) in keys.iter().enumerate() {
            rank += ((kj > keys[i]) || (kj == keys[i] && j < i)) as usize;
        }
        kept |= ((rank < n) as u32) << i;
    }
    kept
}

/// One job of [`nm_into`] for groups of `M` (the scalar kernel, also the SIMD kernels' oracle).
pub fn nm_chunk<const M: usize>(s: &[f32], v: &[f32], n: usize, o: &mut [f32], p: &mut [u8]) {
    let bits = position_bits(M);
    let mut w = Bits { out: p, acc: 0, fill: 0, at: 0 };
    for ((sg, vg), dst) in s.chunks_exact(M).zip(v.chunks_exact(M)).zip(o.chunks_exact_mut(n)) {
        let mut kept = select_group::<M>(sg, n);
        for d in dst.iter_mut() {
            let i = kept.trailing_zeros();
            *d = vg[i as usize];
            w.push(i, bits);
            kept &= kept - 1;
        }
    }
    w.finish();
}

/// Selects `n` of every `m` by `|scores|` and writes the kept `values` (`groups * n`) and their
/// packed positions ([`nm_positions_len`] bytes). Errors: bad `n`/`m`, lengths that do not form
/// whole groups or do not match, non-finite scores or values.
pub fn nm_into(scores: &[f32], values: &[f32], n: usize, m: usize, out: &mut [f32], pos: &mut [u8]) -> Result<()> {
    nm_into_at(simd::level(), scores, values, n, m, out, pos)
}

/// `nm4(scores, values, n, out, positions)`: one job of groups of 4, as [`nm_chunk::<4>`].
pub type Nm4 = fn(&[f32], &[f32], usize, &mut [f32], &mut [u8]);

/// The groups-of-4 kernel of level `l` (scalar where the level has none).
pub fn nm4_kernel(l: Level) -> Nm4 {
    match l {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => super::x86::nm4_avx512,
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => super::x86::nm4_avx2,
        _ => nm_chunk::<4>,
    }
}

/// [`nm_into`] with the kernels of level `l` (the result does not depend on it).
pub fn nm_into_at(l: Level, scores: &[f32], values: &[f32], n: usize, m: usize, out: &mut [f32], pos: &mut [u8]) -> Result<()> {
    let nm4 = nm4_kernel(l);
    let groups = check_nm(n, m, scores.len())?;
    if values.len() != scores.len() || out.len() != groups * n || pos.len() != nm_positions_len(groups, n, m) {
        return Err(Error::Shape(format!("N:M buffers do not match {} scores in groups of {m}", scores.len())));
    }
    let span = CHUNK_GROUPS * m;
    let pos_bytes = CHUNK_GROUPS * n * position_bits(m) as usize / 8;
    let work: Vec<_> = scores
        .chunks(span)
        .zip(values.chunks(span))
        .zip(out.chunks_mut(CHUNK_GROUPS * n))
        .zip(pos.chunks_mut(pos_bytes))
        .enumerate()
        .collect();
    run_ordered(work, |(c, (((s, v), o), p))| {
        check_finite(s, c * span)?;
        check_finite(v, c * span)?;
        macro_rules! by_m {
            ($($k:literal)*) => { match m { 4 => nm4(s, v, n, o, p), $($k => nm_chunk::<$k>(s, v, n, o, p),)* _ => unreachable!("m checked") } };
        }
        by_m!(2 3 5 6 7 8 9 10 11 12 13 14 15 16);
        Ok(())
    })
}

/// Scatters N:M `values` back to the dense `out` (zeros elsewhere) from packed positions.
/// Errors: bad `n`/`m`, lengths that do not match, positions that are not strictly increasing
/// within a group or not below `m`, non-finite values.
pub fn nm_expand_into(values: &[f32], pos: &[u8], n: usize, m: usize, out: &mut [f32]) -> Result<()> {
    let groups = check_nm(n, m, out.len())?;
    if values.len() != groups * n || pos.len() != nm_positions_len(groups, n, m) {
        return Err(Error::Shape(format!("N:M values/positions do not match {} elements in groups of {m}", out.len())));
    }
    check_finite(values, 0)?;
    let bits = position_bits(m);
    let span = CHUNK_GROUPS * m;
    let pos_bytes = CHUNK_GROUPS * n * bits as usize / 8;
    let work: Vec<_> = out.chunks_mut(span).zip(values.chunks(CHUNK_GROUPS * n)).zip(pos.chunks(pos_bytes)).enumerate().collect();
    run_ordered(work, |(c, ((o, v), p))| {
        o.fill(0.0);
        let (mut acc, mut fill, mut at) = (0u64, 0u32, 0usize);
        let mask = (1u64 << bits) - 1;
        for (g, (og, vg)) in o.chunks_exact_mut(m).zip(v.chunks_exact(n)).enumerate() {
            let mut prev: i64 = -1;
            for &val in vg {
                while fill < bits {
                    acc |= (p[at] as u64) << fill;
                    at += 1;
                    fill += 8;
                }
                let i = (acc & mask) as i64;
                acc >>= bits;
                fill -= bits;
                if i <= prev || i >= m as i64 {
                    return Err(invalid!("N:M positions of group {} are not increasing below {m}", c * CHUNK_GROUPS + g));
                }
                og[i as usize] = val;
                prev = i;
            }
        }
        Ok(())
    })
}
