//! Spatial groups for k-means++ seeding: the points are reordered so that every group of
//! [`GROUP`] consecutive points, and every block of [`BLOCK`], is compact (leaves of a median
//! split along the widest dimension), and each group and block gets a bounding box. A group or
//! block none of whose points can come nearer to a centre is skipped: its sums are unchanged.
//! (Boxes, not balls: the cells of a median split are boxes, and on the k = 4096 benchmark a
//! late candidate reached 11 blocks and 60 groups by box, 49 and 100 by ball.)
//!
//! Skipping is exact. For a point `x` in a box and a centre `c`, the true distance is at least
//! the box's distance `b` from `c`; the computed one (`seed_kernels::l2`, float32) is within
//! `err = 2 (2d + 8) 2^-24 (max|x|^2 + |c|^2)` of the true one ([`margin`]). So if
//! `b^2 > R + err` with `R` the box's largest `closest`, no point's `min(closest, dist)` can
//! change (`seed_kernels::threshold` covers the rounding of `b^2`).

use super::seed_kernels::{BLOCK, GROUP};
use crate::error::Result;
use crate::parallel;

/// Orders the `n` points so that every aligned run of `BLOCK`, and of `GROUP`, of them is
/// spatially compact: recursive splits along the widest dimension, with the left part a whole
/// number of blocks (of groups, once a part holds at most `BLOCK` points). Deterministic (ties broken by index). The ranges of one depth are disjoint and each
/// split depends only on its own points, so they run in parallel with the same result.
pub fn spatial_order(x: &[f32], d: usize) -> Result<Vec<u32>> {
    let n = x.len() / d;
    let mut idx: Vec<u32> = (0..n as u32).collect();
    let splits = |(lo, hi): &(usize, usize)| hi - lo > GROUP;
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

/// The size of the left part of a split of `len` points.
fn left_size(len: usize) -> usize {
    let unit = if len > BLOCK { BLOCK } else { GROUP };
    (len / 2 / unit).max(1) * unit
}

/// Splits `part` (more than `GROUP` points) along its widest dimension: the points with the
/// `left` smallest (coordinate, index) keys first. Returns `left` ([`left_size`]).
fn split(x: &[f32], d: usize, part: &mut [u32]) -> usize {
    let t = widest_dimension(x, d, part);
    let left = left_size(part.len());
    // Selecting `(x[i][t], i)` packed into one integer (the coordinate's `total_cmp` order in
    // the high half) makes exactly the moves that selecting `part` by that pair would (same
    // comparisons, same algorithm), with plain integer compares on contiguous keys.
    let mut keys: Vec<u64> = part.iter().map(|&i| (order_bits(x[i as usize * d + t]) as u64) << 32 | i as u64).collect();
    keys.select_nth_unstable(left);
    for (o, &k) in part.iter_mut().zip(&keys) {
        *o = k as u32;
    }
    left
}

/// `v`'s bits as an unsigned integer in `f32::total_cmp` order.
pub(super) fn order_bits(v: f32) -> u32 {
    let b = v.to_bits() as i32;
    // total_cmp's transform (flip the magnitude bits of negatives), then the sign bit, so that
    // unsigned order is signed order.
    ((b ^ (((b >> 31) as u32) >> 1) as i32) as u32) ^ 0x8000_0000
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

/// Bounding boxes of consecutive runs of `unit` points (the last run may be short), for box
/// tests 16 at a time: set `s` of 16 boxes is `data[s * 32 * d..(s + 1) * 32 * d]`, per
/// coordinate `t` the 16 lower bounds then the 16 upper bounds (`[t * 32 + q]`, `[t * 32 + 16 +
/// q]`), exact float32 minima and maxima. There are `count` boxes (a multiple of 16); those past
/// the points are empty (`+inf` to `-inf`).
#[derive(Clone)]
pub struct Boxes {
    pub data: Vec<f32>,
}

impl Boxes {
    pub fn new(x: &[f32], d: usize, unit: usize, count: usize) -> Result<Boxes> {
        debug_assert!(count.is_multiple_of(16));
        let mut data = vec![0f32; count * 2 * d];
        for set in data.chunks_exact_mut(32) {
            set[..16].fill(f32::INFINITY);
            set[16..].fill(f32::NEG_INFINITY);
        }
        // 16 boxes per job: each depends on its own points only.
        let jobs: Vec<_> = x.chunks(16 * unit * d).zip(data.chunks_mut(32 * d)).collect();
        parallel::try_for_each(jobs, |(xc, set)| {
            for (q, pts) in xc.chunks(unit * d).enumerate() {
                for p in pts.chunks_exact(d) {
                    for (t, &v) in p.iter().enumerate() {
                        let (lo, hi) = (&mut set[t * 32 + q], v);
                        *lo = if hi < *lo { hi } else { *lo };
                        let up = &mut set[t * 32 + 16 + q];
                        *up = if v > *up { v } else { *up };
                    }
                }
            }
            Ok(())
        })?;
        Ok(Boxes { data })
    }

    /// Set `s` of 16 boxes.
    #[cfg(test)]
    pub fn set(&self, s: usize, d: usize) -> &[f32] {
        &self.data[s * 32 * d..(s + 1) * 32 * d]
    }
}

/// The error bound of a computed distance to a centre of squared norm `cn`: the computed
/// distance (`seed_kernels::l2`, float32) is within `2 (2d + 8) 2^-24 (max|x|^2 + |c|^2)` of the
/// true one.
pub fn margin(d: usize, max_xn: f32, cn: f32) -> f64 {
    2.0 * (2 * d + 8) as f64 * (-24f64).exp2() * (max_xn as f64 + cn as f64)
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
            if hi - lo <= GROUP {
                continue;
            }
            let part = &mut idx[lo..hi];
            let t = widest_minmax(x, d, part);
            let left = left_size(hi - lo);
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
    fn order_bits_sort_as_total_cmp() {
        let vals = [f32::NEG_INFINITY, -1e30, -1.5, -1e-40, -0.0, 0.0, 1e-40, 1.5, 1e30, f32::INFINITY];
        for a in vals {
            for b in vals {
                assert_eq!(order_bits(a).cmp(&order_bits(b)), a.total_cmp(&b), "{a} vs {b}");
            }
        }
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
    fn boxes_hold_their_points_and_reach_only_what_they_may() {
        use crate::simd::Level;
        use crate::vq::seed_kernels::{reach, threshold};
        // 40 points on a line, in units of 16: boxes 0..2 hold 16, 16 and 8 points; 3..15 none.
        let x: Vec<f32> = (0..40).flat_map(|i| [i as f32 * 0.01, 0.5]).collect();
        let boxes = Boxes::new(&x, 2, 16, 16).unwrap();
        let set = boxes.set(0, 2);
        let v = |i: usize| i as f32 * 0.01;
        assert_eq!((set[0], set[16], set[2], set[18]), (v(0), v(15), v(32), v(39)));
        assert_eq!((set[32], set[48]), (0.5, 0.5));
        assert!(set[3..16].iter().all(|&v| v == f32::INFINITY) && set[19..32].iter().all(|&v| v == f32::NEG_INFINITY));
        let mut thr = [f32::NEG_INFINITY; 16];
        thr[..3].fill(threshold(1.0, margin(2, 0.4, 0.4), 2));
        let at = |c: &[f32]| reach(Level::Scalar, set, &thr, c);
        // Far away: nothing; within 1 of every box: boxes 0..2 only.
        assert_eq!(at(&[100.0, 0.0]), 0);
        assert_eq!(at(&[0.2, 1.0]), 0b111);
        // 0.95 from box 2's last point; boxes 0 and 1 are more than 1 away.
        assert_eq!(at(&[1.34, 0.5]), 0b100);
        // Just inside and just outside box 1's reach.
        assert_eq!(at(&[0.31 + 0.99, 0.5]) & 0b10, 0b10);
        assert_eq!(at(&[0.31 + 1.01, 0.5]) & 0b10, 0);
    }
}
