//! Greedy k-means++ seeding (Arthur & Vassilvitskii, with scikit-learn's greedy variant): each
//! new centre is the best of `2 + ln k` candidates drawn with probability proportional to
//! `w_i * D(x_i)^2`, "best" meaning the one that lowers the total potential most.
//!
//! Distances are computed directly as `sum (x - c)^2` (no cancellation). Sums of the potential
//! run over fixed chunks of points and are added in chunk order, so the centres depend only on
//! the data and the seed, never on the number of threads.

use super::kmeans::check_weights;
use super::rng::Rng;
use crate::error::{invalid, Error, Result};
use crate::parallel;

/// Points per chunk of the potential sums (fixed, so the float64 sums are thread-independent).
const CHUNK: usize = 4096;

#[inline]
fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0f32, |acc, (x, y)| {
        let t = x - y;
        t.mul_add(t, acc)
    })
}

struct State<'a> {
    x: &'a [f32],
    d: usize,
    w: Option<&'a [f32]>,
    /// Squared distance of every point to its nearest chosen centre.
    closest: Vec<f32>,
    /// `sum w_i closest_i` per chunk of points.
    chunk_pot: Vec<f64>,
}

impl State<'_> {
    fn weight(&self, i: usize) -> f64 {
        self.w.map_or(1.0, |w| w[i] as f64)
    }

    fn n(&self) -> usize {
        self.closest.len()
    }

    /// Potential of every candidate (`sum w_i min(closest_i, |x_i - c|^2)`), and with
    /// `commit`, the new closest distances for the single candidate given.
    fn potentials(&mut self, cands: &[usize], commit: bool) -> Result<Vec<f64>> {
        let (x, d, w) = (self.x, self.d, self.w);
        let centres: Vec<&[f32]> = cands.iter().map(|&c| &x[c * d..(c + 1) * d]).collect();
        let mut parts = vec![vec![0f64; cands.len()]; self.chunk_pot.len()];
        let jobs: Vec<_> = self.closest.chunks_mut(CHUNK).zip(parts.iter_mut()).enumerate().collect();
        parallel::try_for_each(jobs, |(ci, (closest, pot))| {
            let base = ci * CHUNK;
            for (o, cl) in closest.iter_mut().enumerate() {
                let i = base + o;
                let xi = &x[i * d..(i + 1) * d];
                let wi = w.map_or(1.0, |w| w[i] as f64);
                for (p, c) in pot.iter_mut().zip(&centres) {
                    *p += wi * sq_dist(xi, c).min(*cl) as f64;
                }
                if commit {
                    *cl = sq_dist(xi, centres[0]).min(*cl);
                }
            }
            Ok(())
        })?;
        if commit {
            self.chunk_pot = parts.iter().map(|p| p[0]).collect();
        }
        Ok((0..cands.len()).map(|t| parts.iter().map(|p| p[t]).sum()).collect())
    }

    /// The point where the running sum of `w_i closest_i` first exceeds `r`.
    fn sample(&self, r: f64) -> usize {
        let mut acc = 0.0;
        let mut last = 0;
        for (ci, &p) in self.chunk_pot.iter().enumerate() {
            if p > 0.0 {
                last = ci;
            }
            if acc + p > r {
                return self.sample_in_chunk(ci, r - acc).unwrap_or(ci * CHUNK);
            }
            acc += p;
        }
        // Rounding left r at or past the total: the last point with non-zero potential.
        let start = last * CHUNK;
        (start..self.n().min(start + CHUNK)).rev().find(|&i| self.weight(i) * self.closest[i] as f64 > 0.0).unwrap_or(start)
    }

    fn sample_in_chunk(&self, ci: usize, r: f64) -> Option<usize> {
        let mut acc = 0.0;
        let mut last = None;
        for i in ci * CHUNK..self.n().min((ci + 1) * CHUNK) {
            let p = self.weight(i) * self.closest[i] as f64;
            if p > 0.0 {
                last = Some(i);
            }
            acc += p;
            if acc > r && p > 0.0 {
                return Some(i);
            }
        }
        last
    }
}

/// Chooses `k` of the `n` rows of `x` as initial centres by greedy k-means++ (`trials`
/// candidates per centre; `None` means `2 + floor(ln k)`). Returns `k * d` values.
pub fn kmeans_plusplus(x: &[f32], d: usize, weights: Option<&[f32]>, k: usize, seed: u64, trials: Option<usize>) -> Result<Vec<f32>> {
    if d == 0 || x.is_empty() || x.len() % d != 0 {
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
    let mut st = State { x, d, w: weights, closest: vec![f32::INFINITY; n], chunk_pot: vec![0.0; n.div_ceil(CHUNK)] };

    // First centre: a point drawn with probability proportional to its weight.
    let first = draw_by_weight(weights, n, total_w, rng.uniform());
    let mut chosen = vec![first];
    st.potentials(&[first], true)?;
    while chosen.len() < k {
        let pot: f64 = st.chunk_pot.iter().sum();
        let cands: Vec<usize> = if pot > 0.0 {
            (0..trials).map(|_| st.sample(rng.uniform() * pot)).collect()
        } else {
            // Every point sits on a centre already: take the next unused points in order.
            vec![(0..n).find(|i| !chosen.contains(i)).unwrap_or(0)]
        };
        let pots = st.potentials(&cands, false)?;
        let best = (0..cands.len()).fold(0, |b, t| if pots[t] < pots[b] { t } else { b });
        st.potentials(&[cands[best]], true)?;
        chosen.push(cands[best]);
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
