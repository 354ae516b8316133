//! Spatial blocks for k-means++ seeding: the points are reordered so that every block of
//! [`BLOCK`] consecutive points is compact (leaves of a median split along the widest
//! dimension), and each block gets a bounding ball. A block none of whose points can come nearer
//! to any centre of a panel is skipped: its sums are known without touching it.
//!
//! Skipping is exact. For a point `x` in a block with ball `(m, s)` and a centre `c`, the true
//! distance is at least `|c - m| - s`; the computed one (`seed_kernels::l2`, float32) is within
//! `err = 2 (2d + 8) 2^-24 (max|x|^2 + |c|^2)` of the true one. So if `(|c - m| - s)^2 > R + err`
//! with `R` the block's largest `closest`, no point's `min(closest, dist)` can change.

use super::seed_kernels::BLOCK;
use crate::error::Result;
use crate::parallel;

/// Orders the `n` points so that every aligned run of `BLOCK` of them is spatially compact:
/// recursive splits along the widest dimension, with the left part always a whole number of
/// blocks. Deterministic (ties broken by index). The ranges of one depth are disjoint and each
/// split depends only on its own points, so they run in parallel with the same result.
pub fn spatial_order(x: &[f32], d: usize) -> Result<Vec<u32>> {
    let n = x.len() / d;
    let mut idx: Vec<u32> = (0..n as u32).collect();
    let splits = |(lo, hi): &(usize, usize)| hi - lo > BLOCK;
    let mut ranges: Vec<(usize, usize)> = [(0, n)].into_iter().filter(splits).collect();
    while !ranges.is_empty() {
        let mut lefts = vec![0usize; ranges.len()];
        let (mut rest, mut at, mut jobs) = (&mut idx[..], 0, Vec::with_capacity(ranges.len()));
        for (&(lo, hi), left) in ranges.iter().zip(lefts.iter_mut()) {
            let (part, tail) = std::mem::take(&mut rest)[lo - at..].split_at_mut(hi - lo);
            (rest, at) = (tail, hi);
            jobs.push((part, left));
        }
        parallel::try_for_each(jobs, |(part, left)| {
            *left = split(x, d, part);
            Ok(())
        })?;
        ranges = ranges.iter().zip(&lefts).flat_map(|(&(lo, hi), &l)| [(lo, lo + l), (lo + l, hi)]).filter(splits).collect();
    }
    Ok(idx)
}

/// Splits `part` (more than `BLOCK` points) along its widest dimension: the points with the
/// `left` smallest (coordinate, index) keys first. Returns `left`, a multiple of `BLOCK`.
fn split(x: &[f32], d: usize, part: &mut [u32]) -> usize {
    let t = widest_dimension(x, d, part);
    let left = (part.len() / 2 / BLOCK).max(1) * BLOCK;
    // Selecting positions with gathered keys makes exactly the moves that selecting `part` by
    // `(x[i][t], i)` would (same comparisons, same algorithm), reading the keys from cache.
    let keys: Vec<f32> = part.iter().map(|&i| x[i as usize * d + t]).collect();
    let ids = part.to_vec();
    let mut pos: Vec<u32> = (0..part.len() as u32).collect();
    pos.select_nth_unstable_by(left, |&a, &b| {
        let (a, b) = (a as usize, b as usize);
        keys[a].total_cmp(&keys[b]).then(ids[a].cmp(&ids[b]))
    });
    for (o, &p) in part.iter_mut().zip(&pos) {
        *o = ids[p as usize];
    }
    left
}

/// The dimension of the largest extent (the first on ties). The points are finite, so plain
/// comparisons (one `minps`/`maxps` each, unlike NaN-aware `f32::min`) give the same extents
/// up to the sign of a zero, which `>` ignores.
fn widest_dimension(x: &[f32], d: usize, part: &[u32]) -> usize {
    let mut lo = vec![f32::INFINITY; d];
    let mut hi = vec![f32::NEG_INFINITY; d];
    for &i in part {
        for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(&x[i as usize * d..(i as usize + 1) * d]) {
            *l = if v < *l { v } else { *l };
            *h = if v > *h { v } else { *h };
        }
    }
    (0..d).fold(0, |best, t| if hi[t] - lo[t] > hi[best] - lo[best] { t } else { best })
}

/// A bounding ball per block, in float64.
pub struct BlockBalls {
    d: usize,
    mean: Vec<f64>,
    spread: Vec<f64>,
    /// `2 (2d + 8) 2^-24`: the relative error bound of a computed distance.
    rel_err: f64,
    max_xn: f64,
}

impl BlockBalls {
    pub fn new(x: &[f32], d: usize, xn: &[f32]) -> Result<BlockBalls> {
        let n = x.len() / d;
        let nb = n.div_ceil(BLOCK);
        let (mut mean, mut spread) = (vec![0f64; nb * d], vec![0f64; nb]);
        // Blocks in parallel, 16 per job: each ball depends on its own block only.
        let jobs: Vec<_> = x.chunks(16 * BLOCK * d).zip(mean.chunks_mut(16 * d)).zip(spread.chunks_mut(16)).collect();
        parallel::try_for_each(jobs, |((xc, mc), sc)| {
            for ((pts, m), s) in xc.chunks(BLOCK * d).zip(mc.chunks_exact_mut(d)).zip(sc) {
                for p in pts.chunks_exact(d) {
                    m.iter_mut().zip(p).for_each(|(a, &v)| *a += v as f64);
                }
                let count = (pts.len() / d) as f64;
                m.iter_mut().for_each(|a| *a /= count);
                let far = pts.chunks_exact(d).map(|p| dist2(p, m)).fold(0.0, f64::max);
                *s = far.sqrt() * (1.0 + 1e-9);
            }
            Ok(())
        })?;
        let rel_err = 2.0 * (2 * d + 8) as f64 * (-24f64).exp2();
        let max_xn = xn.iter().fold(0f32, |a, &v| a.max(v)) as f64;
        Ok(BlockBalls { d, mean, spread, rel_err, max_xn })
    }

    /// Balls that never exclude anything (tests compare skipping with not skipping).
    #[cfg(test)]
    pub fn never_skip(n: usize, d: usize) -> BlockBalls {
        let nb = n.div_ceil(BLOCK);
        BlockBalls { d, mean: vec![0.0; nb * d], spread: vec![f64::INFINITY; nb], rel_err: 0.0, max_xn: 0.0 }
    }

    /// Whether no point of block `b` (largest `closest` = `radius`) can come nearer to any of
    /// the `centres` (coordinates and squared norm).
    #[cfg(test)]
    pub fn unreachable(&self, b: usize, radius: f32, centres: &[(&[f32], f32)]) -> bool {
        self.reachable(b, radius, centres) == 0
    }

    /// Bit `l` set unless no point of block `b` (largest `closest` = `radius`) can come nearer to
    /// centre `l` (coordinates and squared norm; at most 32 centres).
    pub fn reachable(&self, b: usize, radius: f32, centres: &[(&[f32], f32)]) -> u32 {
        let m = &self.mean[b * self.d..(b + 1) * self.d];
        let mut mask = 0;
        for (l, &(c, cn)) in centres.iter().enumerate() {
            let gap = dist2(c, m).sqrt() - self.spread[b];
            let err = self.rel_err * (self.max_xn + cn as f64);
            if !(gap > 0.0 && gap * gap * (1.0 - 1e-9) > radius as f64 + err) {
                mask |= 1 << l;
            }
        }
        mask
    }
}

/// `|p - m|^2` in float64, over 8 running partials (independent chains the compiler can
/// vectorise; any summation order's rounding is far inside the 1e-9 margins of `new` and
/// `reachable`).
fn dist2(p: &[f32], m: &[f64]) -> f64 {
    let mut parts = [0f64; 8];
    let (pc, mc) = (p.chunks_exact(8), m.chunks_exact(8));
    let tail: f64 = pc.remainder().iter().zip(mc.remainder()).map(|(&v, &c)| (v as f64 - c) * (v as f64 - c)).sum();
    for (a, b) in pc.zip(mc) {
        for ((s, &v), &c) in parts.iter_mut().zip(a).zip(b) {
            *s += (v as f64 - c) * (v as f64 - c);
        }
    }
    parts.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `widest_dimension` as first written, with `f32::min`/`max`.
    fn widest_minmax(x: &[f32], d: usize, part: &[u32]) -> usize {
        let mut lo = vec![f32::INFINITY; d];
        let mut hi = vec![f32::NEG_INFINITY; d];
        for &i in part {
            for (t, &v) in x[i as usize * d..(i as usize + 1) * d].iter().enumerate() {
                lo[t] = lo[t].min(v);
                hi[t] = hi[t].max(v);
            }
        }
        (0..d).fold(0, |best, t| if hi[t] - lo[t] > hi[best] - lo[best] { t } else { best })
    }

    /// The serial order `spatial_order` was first written as: the parallel one must match it.
    fn serial_order(x: &[f32], d: usize) -> Vec<u32> {
        let n = x.len() / d;
        let mut idx: Vec<u32> = (0..n as u32).collect();
        let mut stack = vec![(0usize, n)];
        while let Some((lo, hi)) = stack.pop() {
            if hi - lo <= BLOCK {
                continue;
            }
            let part = &mut idx[lo..hi];
            let t = widest_minmax(x, d, part);
            let left = ((hi - lo) / 2 / BLOCK).max(1) * BLOCK;
            let key = |&i: &u32| (x[i as usize * d + t], i);
            part.select_nth_unstable_by(left, |a, b| {
                let (ka, kb) = (key(a), key(b));
                ka.0.total_cmp(&kb.0).then(ka.1.cmp(&kb.1))
            });
            stack.push((lo + left, hi));
            stack.push((lo, lo + left));
        }
        idx
    }

    #[test]
    fn parallel_order_is_the_serial_order() {
        let mut s = 1u64;
        let mut r = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            // Many ties, and zeros of both signs.
            let v = ((s >> 40) % 1000) as f32 * 0.25 - 125.0;
            if v == 0.0 && s >> 20 & 1 == 1 {
                -0.0
            } else {
                v
            }
        };
        for (n, d) in [(10_000, 3), (3 * BLOCK + 5, 64), (BLOCK, 2), (20_000, 1)] {
            let x: Vec<f32> = (0..n * d).map(|_| r()).collect();
            assert_eq!(spatial_order(&x, d).unwrap(), serial_order(&x, d), "n={n} d={d}");
        }
    }

    #[test]
    fn order_is_a_permutation_with_compact_blocks() {
        // Points on a line, shuffled: the order must sort them into contiguous runs.
        let n = 5 * BLOCK + 17;
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % n) as f32).collect();
        let order = spatial_order(&x, 1).unwrap();
        let mut seen = order.clone();
        seen.sort();
        assert_eq!(seen, (0..n as u32).collect::<Vec<_>>());
        for block in order.chunks(BLOCK) {
            let vals: Vec<f32> = block.iter().map(|&i| x[i as usize]).collect();
            let (lo, hi) = vals.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            assert!(hi - lo < (BLOCK + 17) as f32);
        }
    }

    #[test]
    fn far_centres_are_unreachable_near_ones_are_not() {
        let x: Vec<f32> = (0..BLOCK).flat_map(|i| [i as f32 * 0.01, 0.0]).collect();
        let xn: Vec<f32> = x.chunks(2).map(|p| p[0] * p[0]).collect();
        let balls = BlockBalls::new(&x, 2, &xn).unwrap();
        assert!(balls.unreachable(0, 1.0, &[(&[100.0, 0.0], 1e4)]));
        assert!(!balls.unreachable(0, 1.0, &[(&[100.0, 0.0], 1e4), (&[1.0, 0.5], 1.25)]));
        assert!(!balls.unreachable(0, 1e6, &[(&[100.0, 0.0], 1e4)]));
    }
}
