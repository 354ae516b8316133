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

/// Orders the `n` points so that every aligned run of `BLOCK` of them is spatially compact:
/// recursive splits along the widest dimension, with the left part always a whole number of
/// blocks. Deterministic (ties broken by index).
pub fn spatial_order(x: &[f32], d: usize) -> Vec<u32> {
    let n = x.len() / d;
    let mut idx: Vec<u32> = (0..n as u32).collect();
    let mut stack = vec![(0usize, n)];
    while let Some((lo, hi)) = stack.pop() {
        if hi - lo <= BLOCK {
            continue;
        }
        let part = &mut idx[lo..hi];
        let t = widest_dimension(x, d, part);
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

fn widest_dimension(x: &[f32], d: usize, part: &[u32]) -> usize {
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
    pub fn new(x: &[f32], d: usize, xn: &[f32]) -> BlockBalls {
        let n = x.len() / d;
        let nb = n.div_ceil(BLOCK);
        let (mut mean, mut spread) = (vec![0f64; nb * d], vec![0f64; nb]);
        for b in 0..nb {
            let pts = &x[b * BLOCK * d..n.min((b + 1) * BLOCK) * d];
            let m = &mut mean[b * d..(b + 1) * d];
            for p in pts.chunks_exact(d) {
                m.iter_mut().zip(p).for_each(|(a, &v)| *a += v as f64);
            }
            let count = (pts.len() / d) as f64;
            m.iter_mut().for_each(|a| *a /= count);
            let far = pts.chunks_exact(d).map(|p| sq(p.iter().zip(m.iter()).map(|(&v, &c)| v as f64 - c))).fold(0.0, f64::max);
            spread[b] = far.sqrt() * (1.0 + 1e-9);
        }
        let rel_err = 2.0 * (2 * d + 8) as f64 * (-24f64).exp2();
        let max_xn = xn.iter().fold(0f32, |a, &v| a.max(v)) as f64;
        BlockBalls { d, mean, spread, rel_err, max_xn }
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
            let gap = sq(c.iter().zip(m).map(|(&v, &mv)| v as f64 - mv)).sqrt() - self.spread[b];
            let err = self.rel_err * (self.max_xn + cn as f64);
            if !(gap > 0.0 && gap * gap * (1.0 - 1e-9) > radius as f64 + err) {
                mask |= 1 << l;
            }
        }
        mask
    }
}

fn sq(v: impl Iterator<Item = f64>) -> f64 {
    v.map(|e| e * e).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_a_permutation_with_compact_blocks() {
        // Points on a line, shuffled: the order must sort them into contiguous runs.
        let n = 5 * BLOCK + 17;
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % n) as f32).collect();
        let order = spatial_order(&x, 1);
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
        let balls = BlockBalls::new(&x, 2, &xn);
        assert!(balls.unreachable(0, 1.0, &[(&[100.0, 0.0], 1e4)]));
        assert!(!balls.unreachable(0, 1.0, &[(&[100.0, 0.0], 1e4), (&[1.0, 0.5], 1.25)]));
        assert!(!balls.unreachable(0, 1e6, &[(&[100.0, 0.0], 1e4)]));
    }
}
