//! Greedy k-means++ seeding (Arthur & Vassilvitskii, with scikit-learn's greedy variant): each
//! new centre is the best of `2 + ln k` candidates drawn with probability proportional to
//! `w_i * D(x_i)^2`, "best" meaning the one that lowers the total potential most.
//!
//! Work is cut by the triangle inequality (Raff, "Exact acceleration of k-means++", 2021): every
//! point belongs to the group of its nearest chosen centre, and a candidate `c` can only bring a
//! point of group `j` closer if `|c - centre_j| < 2 * radius_j`, so most groups are never looked
//! at once there are many centres. Point distances are lane-order sums (`scalar::search::Lanes`,
//! separate multiply and add), centre distances run dimension by dimension over all centres;
//! both are plain float32 operations that any vectorisation reproduces exactly, and every sum
//! runs in a fixed order, so the centres depend only on the data and the seed, never on the
//! number of threads.

use super::kmeans::check_weights;
use super::rng::Rng;
use crate::error::{invalid, Error, Result};
use crate::parallel;

/// Points per block of the sampling sums.
const BLOCK: usize = 256;
/// Slack on the pruning test so float rounding never prunes a group that could change.
const SLACK: f32 = 1.0001;

/// `sum (a - b)^2` in the lane order of `scalar::search::Lanes` (value `t` into lane `t % 8`,
/// then `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`), written so it compiles to vector code.
#[inline(always)]
fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    let mut l = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for t in 0..8 {
            let e = x[t] - y[t];
            l[t] += e * e;
        }
    }
    for t in 0..ar.len() {
        let e = ar[t] - br[t];
        l[t] += e * e;
    }
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

/// `out[j] = |c - centre_j|^2` for centres stored dimension-major (`ct[t * cap + j]`).
fn centre_dists_plain(ct: &[f32], cap: usize, c: &[f32], out: &mut [f32]) {
    out.fill(0.0);
    let kc = out.len();
    for (t, &ctv) in c.iter().enumerate() {
        for (o, &v) in out.iter_mut().zip(&ct[t * cap..t * cap + kc]) {
            let e = ctv - v;
            *o += e * e;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn centre_dists_avx2(ct: &[f32], cap: usize, c: &[f32], out: &mut [f32]) {
    // The same loop compiled for 8-wide registers: the same float operations per centre.
    centre_dists_plain(ct, cap, c, out)
}

fn centre_dists(ct: &[f32], cap: usize, c: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::level() == crate::simd::Level::Avx2 {
        // SAFETY: the AVX2 level is only in force when the CPU supports it (simd::level).
        return unsafe { centre_dists_avx2(ct, cap, c, out) };
    }
    centre_dists_plain(ct, cap, c, out)
}

struct Seeder<'a> {
    x: &'a [f32],
    d: usize,
    w: Option<&'a [f32]>,
    /// Squared distance of every point to its nearest chosen centre.
    closest: Vec<f32>,
    /// Points whose nearest chosen centre is `j`, and the largest of their `closest`.
    groups: Vec<Vec<u32>>,
    radius: Vec<f32>,
    /// Chosen centres, dimension-major with room for `cap` of them.
    ct: Vec<f32>,
    cap: usize,
    /// `sum w_i closest_i` per block of points.
    block_pot: Vec<f64>,
}

impl Seeder<'_> {
    fn point(&self, i: usize) -> &[f32] {
        &self.x[i * self.d..(i + 1) * self.d]
    }

    fn weight(&self, i: usize) -> f64 {
        self.w.map_or(1.0, |w| w[i] as f64)
    }

    /// The groups candidate `c` may improve, each with the bound `|c - centre_j|^2 / 4`: only
    /// members whose `closest` exceeds it can come nearer to `c` (triangle inequality).
    fn reachable(&self, c: &[f32]) -> Vec<(usize, f32)> {
        let mut dists = vec![0f32; self.groups.len()];
        centre_dists(&self.ct, self.cap, c, &mut dists);
        (0..dists.len()).map(|j| (j, dists[j] * (0.25 / SLACK))).filter(|&(j, b)| b < self.radius[j]).collect()
    }

    /// How much adding point `p` as a centre lowers the potential.
    fn gain(&self, p: usize) -> f64 {
        let c = self.point(p);
        let mut g = 0.0;
        for (j, bound) in self.reachable(c) {
            // Members are sorted by `closest`, largest first: stop at the first within the bound.
            for &i in &self.groups[j] {
                let i = i as usize;
                if self.closest[i] <= bound {
                    break;
                }
                let nd = sq_dist(self.point(i), c);
                if nd < self.closest[i] {
                    g += self.weight(i) * (self.closest[i] - nd) as f64;
                }
            }
        }
        g
    }

    /// Orders a group by `closest`, largest first (ties by index).
    fn sort_group(&self, g: &mut [u32]) {
        g.sort_unstable_by(|&a, &b| self.closest[b as usize].total_cmp(&self.closest[a as usize]).then(a.cmp(&b)));
    }

    /// Adds point `p` as a centre: points it is nearer to join its group.
    fn commit(&mut self, p: usize) {
        let c = self.point(p).to_vec();
        let reach = if self.groups.is_empty() { Vec::new() } else { self.reachable(&c) };
        let mut mine: Vec<u32> = Vec::new();
        let mut touched = vec![false; self.block_pot.len()];
        if self.groups.is_empty() {
            mine = (0..self.closest.len() as u32).collect();
            touched.fill(true);
        }
        for &i in &mine {
            self.closest[i as usize] = sq_dist(self.point(i as usize), &c);
        }
        for (j, bound) in reach {
            let mut group = std::mem::take(&mut self.groups[j]);
            group.retain(|&i| {
                if self.closest[i as usize] <= bound {
                    return true;
                }
                let nd = sq_dist(self.point(i as usize), &c);
                if nd < self.closest[i as usize] {
                    self.closest[i as usize] = nd;
                    touched[i as usize / BLOCK] = true;
                    mine.push(i);
                    return false;
                }
                true
            });
            // Removing members keeps the order: still sorted, largest `closest` first.
            self.radius[j] = group.first().map_or(0.0, |&i| self.closest[i as usize]);
            self.groups[j] = group;
        }
        self.sort_group(&mut mine);
        let j = self.groups.len();
        for (t, &v) in c.iter().enumerate() {
            self.ct[t * self.cap + j] = v;
        }
        self.radius.push(mine.first().map_or(0.0, |&i| self.closest[i as usize]));
        self.groups.push(mine);
        for (b, _) in touched.iter().enumerate().filter(|(_, t)| **t) {
            let r = b * BLOCK..self.closest.len().min((b + 1) * BLOCK);
            self.block_pot[b] = r.map(|i| self.weight(i) * self.closest[i] as f64).sum();
        }
    }

    /// The point where the running sum of `w_i closest_i` first exceeds `r` (never a point of
    /// zero potential): whole blocks are skipped by their sums, then one block is scanned.
    fn sample(&self, r: f64) -> usize {
        let mut acc = 0.0;
        let mut last_block = 0;
        for (b, &p) in self.block_pot.iter().enumerate() {
            if p <= 0.0 {
                continue;
            }
            last_block = b;
            if acc + p <= r {
                acc += p;
                continue;
            }
            return self.scan_block(b, r - acc);
        }
        // Rounding left r at or past the total.
        self.scan_block(last_block, f64::INFINITY)
    }

    /// The point of block `b` where the running sum first exceeds `r`, else its last point of
    /// non-zero potential.
    fn scan_block(&self, b: usize, r: f64) -> usize {
        let (mut acc, mut last) = (0.0, b * BLOCK);
        for i in b * BLOCK..self.closest.len().min((b + 1) * BLOCK) {
            let q = self.weight(i) * self.closest[i] as f64;
            if q > 0.0 {
                last = i;
                acc += q;
                if acc > r {
                    return i;
                }
            }
        }
        last
    }
}

/// Chooses `k` of the `n` rows of `x` as initial centres by greedy k-means++ (`trials`
/// candidates per centre; `None` means `2 + floor(ln k)`). Returns `k * d` values.
pub fn kmeans_plusplus(x: &[f32], d: usize, weights: Option<&[f32]>, k: usize, seed: u64, trials: Option<usize>) -> Result<Vec<f32>> {
    if d == 0 || x.is_empty() || !x.len().is_multiple_of(d) {
        return Err(Error::Shape(format!("x holds {} values, not a positive multiple of d={d}", x.len())));
    }
    let n = x.len() / d;
    if k == 0 || k > n {
        return Err(invalid!("k={k} must be between 1 and the number of points ({n})"));
    }
    check_weights(weights, n)?;
    if let Some(index) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite { index });
    }
    let total_w: f64 = weights.map_or(n as f64, |w| w.iter().map(|&v| v as f64).sum());
    if total_w <= 0.0 {
        return Err(invalid!("sample_weight sums to zero"));
    }
    let trials = trials.unwrap_or(2 + (k as f64).ln() as usize).max(1);
    let mut rng = Rng::new(seed);
    let mut s = Seeder {
        x,
        d,
        w: weights,
        closest: vec![f32::INFINITY; n],
        groups: Vec::with_capacity(k),
        radius: Vec::with_capacity(k),
        ct: vec![0.0; d * k],
        cap: k,
        block_pot: vec![0.0; n.div_ceil(BLOCK)],
    };
    // First centre: a point drawn with probability proportional to its weight.
    let mut chosen = vec![draw_by_weight(weights, n, total_w, rng.uniform())];
    let mut used = vec![false; n];
    used[chosen[0]] = true;
    s.commit(chosen[0]);
    while chosen.len() < k {
        let pot: f64 = s.block_pot.iter().sum();
        let p = if pot > 0.0 {
            let cands: Vec<usize> = (0..trials).map(|_| s.sample(rng.uniform() * pot)).collect();
            let mut gains = vec![0f64; cands.len()];
            let jobs: Vec<_> = cands.iter().zip(gains.iter_mut()).collect();
            parallel::try_for_each(jobs, |(&c, g)| {
                *g = s.gain(c);
                Ok(())
            })?;
            // Largest gain = lowest potential; ties to the earliest candidate.
            cands[(0..cands.len()).fold(0, |b, t| if gains[t] > gains[b] { t } else { b })]
        } else {
            // Every point sits on a centre already: take the next unused point.
            (0..n).find(|&i| !used[i]).unwrap_or(0)
        };
        used[p] = true;
        chosen.push(p);
        s.commit(p);
    }
    Ok(chosen.iter().flat_map(|&i| x[i * d..(i + 1) * d].iter().copied()).collect())
}

fn draw_by_weight(weights: Option<&[f32]>, n: usize, total: f64, u: f64) -> usize {
    let Some(w) = weights else { return ((u * n as f64) as usize).min(n - 1) };
    let r = u * total;
    let mut acc = 0.0;
    for (i, &v) in w.iter().enumerate() {
        acc += v as f64;
        if acc > r && v > 0.0 {
            return i;
        }
    }
    w.iter().rposition(|&v| v > 0.0).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_spread_over_separated_blobs() {
        // Four tight blobs far apart: k-means++ picks one point in each.
        let mut x = Vec::new();
        for b in 0..4 {
            for i in 0..50 {
                x.extend([b as f32 * 100.0 + (i % 7) as f32 * 0.01, (i % 5) as f32 * 0.01]);
            }
        }
        let c = kmeans_plusplus(&x, 2, None, 4, 3, None).unwrap();
        let mut blobs: Vec<i32> = c.chunks(2).map(|p| (p[0] / 100.0).round() as i32).collect();
        blobs.sort();
        assert_eq!(blobs, [0, 1, 2, 3]);
        assert_eq!(c, kmeans_plusplus(&x, 2, None, 4, 3, None).unwrap());
    }

    #[test]
    fn duplicates_and_bad_input() {
        let x = [1.0f32; 6];
        assert_eq!(kmeans_plusplus(&x, 1, None, 3, 0, None).unwrap(), [1.0; 3]);
        assert!(kmeans_plusplus(&x, 1, None, 7, 0, None).is_err());
        assert!(kmeans_plusplus(&x, 1, Some(&[0.0; 6]), 2, 0, None).is_err());
        assert!(kmeans_plusplus(&[f32::NAN], 1, None, 1, 0, None).is_err());
    }

    #[test]
    fn zero_weight_points_are_never_chosen() {
        let x = [0.0, 1.0, 2.0, 50.0];
        let c = kmeans_plusplus(&x, 1, Some(&[1.0, 1.0, 1.0, 0.0]), 3, 1, None).unwrap();
        assert!(!c.contains(&50.0));
    }
}
