//! Greedy k-means++ seeding (Arthur & Vassilvitskii, with scikit-learn's greedy variant): each
//! new centre is the best of `2 + ln k` candidates drawn with probability proportional to
//! `w_i * D(x_i)^2`, "best" meaning the one that lowers the total potential most.
//!
//! One pass over the points per step scores all candidates at once and, in the same pass, lowers
//! every point's distance with the centre chosen at the step before (`seed_kernels`). Float64
//! sums are kept per block of points and added in block order, and every SIMD level performs the
//! same float operations, so the centres depend only on the data and the seed, never on the SIMD
//! level or the number of threads. The points are first reordered into spatially compact blocks
//! (`seed_blocks`), so that, per block, the candidates that cannot lower any of its points'
//! distances are skipped, exactly.

use super::kmeans::check_weights;
use super::rng::Rng;
use super::seed_blocks::{spatial_order, BlockBalls};
use super::seed_kernels::{self as kern, Panel, BLOCK, LANES};
use crate::error::{invalid, Error, Result};
use crate::parallel;
use crate::simd::{self, Level};

/// Points per parallel job (a multiple of `BLOCK`).
const CHUNK: usize = 4096;
/// Candidates per panel (the last lane carries the pending centre).
const PER_PANEL: usize = LANES - 1;

struct Seeder<'a> {
    x: &'a [f32],
    d: usize,
    w: Option<&'a [f32]>,
    level: Level,
    xn: Vec<f32>,
    /// The points transposed in groups of 16 (`seed_kernels::transpose`), for AVX-512.
    xt: Vec<f32>,
    /// Squared distance of every point to its nearest chosen centre, except `pending`.
    closest: Vec<f32>,
    /// The centre chosen last, not yet folded into `closest`.
    pending: Option<usize>,
    /// `sum w_i min(closest_i, |x_i - pending|^2)` per block of `BLOCK` points.
    block_pot: Vec<f64>,
    /// The largest `closest` of each block (pending centre not folded in), and block balls.
    radius: Vec<f32>,
    balls: BlockBalls,
    /// Blocks skipped so far (for tests and tuning).
    skipped: usize,
}

impl Seeder<'_> {
    fn weight(&self, i: usize) -> f64 {
        self.w.map_or(1.0, |w| w[i] as f64)
    }

    fn point(&self, i: usize) -> &[f32] {
        &self.x[i * self.d..(i + 1) * self.d]
    }

    /// Per-block, per-lane potentials of up to 15 candidates (folding in `pending` first).
    /// A block no lane can reach keeps its sums (`block_pot`) for every lane.
    fn score(&mut self, cands: &[usize]) -> Result<Vec<[f64; LANES]>> {
        let (x, d, level, w, xn, xt) = (self.x, self.d, self.level, self.w, &self.xn, &self.xt);
        let panel = Panel::new(x, d, cands, self.pending.take());
        let centres: Vec<(&[f32], f32)> = (0..panel.lanes()).map(|l| (panel.col(l), panel.norms[l])).collect();
        let prev_lane = panel.prev.then_some(panel.cands);
        let mut sums = vec![[0f64; LANES]; self.block_pot.len()];
        let per = CHUNK / BLOCK;
        let (block_pot, radius, balls) = (&self.block_pot, &mut self.radius, &self.balls);
        let mut skipped = vec![0usize; self.closest.len().div_ceil(CHUNK)];
        let jobs: Vec<_> = self
            .closest
            .chunks_mut(CHUNK)
            .zip(sums.chunks_mut(per))
            .zip(radius.chunks_mut(per))
            .zip(skipped.iter_mut())
            .enumerate()
            .collect();
        parallel::try_for_each(jobs, |(ci, (((closest, sums), radius), skipped))| {
            for (o, (s, rad)) in sums.iter_mut().zip(radius.iter_mut()).enumerate() {
                let b = ci * per + o;
                *s = [block_pot[b]; LANES];
                // The lanes that may lower some point's distance; the others' sums are the
                // block's potential as it stands.
                let reach = balls.reachable(b, *rad, &centres);
                if reach == 0 {
                    *skipped += 1;
                    continue;
                }
                let r = b * BLOCK..(b * BLOCK + BLOCK).min(ci * CHUNK + closest.len());
                let cl = &mut closest[r.start - ci * CHUNK..r.end - ci * CHUNK];
                let xs = &x[r.start * d..r.end * d];
                let xt = if xt.is_empty() { &xt[..] } else { &xt[r.start * d..(r.start + r.len().div_ceil(kern::PART) * kern::PART) * d] };
                kern::score(level, xs, xt, d, &xn[r.clone()], cl, w.map(|w| &w[r]), &panel, reach, std::slice::from_mut(s));
                if prev_lane.is_some_and(|l| reach >> l & 1 == 1) {
                    *rad = largest(cl);
                }
            }
            Ok(())
        })?;
        self.skipped += skipped.iter().sum::<usize>();
        Ok(sums)
    }

    /// Folds centre `p` into `closest` at once (the first centre, and the rare fallback).
    fn commit_now(&mut self, p: usize) -> Result<()> {
        if let Some(q) = self.pending.take() {
            self.commit_now(q)?;
        }
        let (x, d, level, w, xn) = (self.x, self.d, self.level, self.w, &self.xn);
        let centre = &x[p * d..(p + 1) * d];
        let cn = kern::dot(centre, centre);
        let jobs: Vec<_> = self.closest.chunks_mut(CHUNK).zip(self.block_pot.chunks_mut(CHUNK / BLOCK)).enumerate().collect();
        parallel::try_for_each(jobs, |(ci, (closest, blocks))| {
            let r = ci * CHUNK..ci * CHUNK + closest.len();
            kern::commit(level, &x[r.start * d..r.end * d], d, &xn[r.clone()], closest, w.map(|w| &w[r]), centre, cn, blocks);
            Ok(())
        })?;
        for (rad, block) in self.radius.iter_mut().zip(self.closest.chunks(BLOCK)) {
            *rad = largest(block);
        }
        Ok(())
    }

    /// The distances of block `b` with the pending centre folded in.
    fn block_closest(&self, b: usize) -> Vec<f32> {
        let r = b * BLOCK..self.closest.len().min((b + 1) * BLOCK);
        let Some(p) = self.pending else { return self.closest[r].to_vec() };
        let centre = self.point(p);
        let mut out = vec![0f32; r.len()];
        let (d, x) = (self.d, &self.x[r.start * self.d..r.end * self.d]);
        let xt = if self.xt.is_empty() {
            &self.xt[..]
        } else {
            &self.xt[r.start * d..(r.start + r.len().div_ceil(kern::PART) * kern::PART) * d]
        };
        kern::lowered(self.level, x, xt, d, &self.xn[r.clone()], &self.closest[r], centre, kern::dot(centre, centre), &mut out);
        out
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
        for (o, &c) in self.block_closest(b).iter().enumerate() {
            let i = b * BLOCK + o;
            let q = self.weight(i) * c as f64;
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

    /// One greedy step: draw `trials` candidates, keep the one with the lowest potential.
    fn step(&mut self, rng: &mut Rng, trials: usize) -> Result<usize> {
        let pot: f64 = self.block_pot.iter().sum();
        let cands: Vec<usize> = (0..trials).map(|_| self.sample(rng.uniform() * pot)).collect();
        let (mut best, mut best_pot, mut best_blocks) = (0, f64::INFINITY, Vec::new());
        for (g, group) in cands.chunks(PER_PANEL).enumerate() {
            let sums = self.score(group)?;
            for l in 0..group.len() {
                let total: f64 = sums.iter().map(|s| s[l]).sum();
                // Lowest potential; ties to the earliest candidate.
                if total < best_pot {
                    (best, best_pot) = (g * PER_PANEL + l, total);
                    best_blocks = sums.iter().map(|s| s[l]).collect();
                }
            }
        }
        if best_blocks.is_empty() {
            // Every candidate scored NaN: cannot happen with finite input; keep the first.
            best_blocks = self.score(&cands[..1])?.iter().map(|s| s[0]).collect();
        }
        self.block_pot = best_blocks;
        self.pending = Some(cands[best]);
        Ok(cands[best])
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
    // A vectorisable test first; the position only when it fails.
    if !x.chunks(4096).all(|c| c.iter().fold(true, |a, v| a & v.is_finite())) {
        let index = x.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(Error::NonFinite { index });
    }
    let total_w: f64 = weights.map_or(n as f64, |w| w.iter().map(|&v| v as f64).sum());
    if total_w <= 0.0 {
        return Err(invalid!("sample_weight sums to zero"));
    }
    let trials = trials.unwrap_or(2 + (k as f64).ln() as usize).max(1);
    // Work on the points in block order; report the chosen ones from the caller's `x`.
    let order = spatial_order(x, d)?;
    let xp = gather_rows(x, d, &order)?;
    let wp: Option<Vec<f32>> = weights.map(|w| order.iter().map(|&i| w[i as usize]).collect());
    let weights = wp.as_deref();
    let mut s = seeder(&xp, d, weights, simd::level())?;
    let chosen = seed_loop(&mut s, k, trials, seed, total_w)?;
    Ok(chosen.iter().flat_map(|&i| xp[i * d..(i + 1) * d].iter().copied()).collect())
}

/// The greedy loop: `k` chosen point indices (in the seeder's order).
fn seed_loop(s: &mut Seeder, k: usize, trials: usize, seed: u64, total_w: f64) -> Result<Vec<usize>> {
    let n = s.closest.len();
    let mut rng = Rng::new(seed);
    // First centre: a point drawn with probability proportional to its weight.
    let mut chosen = vec![draw_by_weight(s.w, n, total_w, rng.uniform())];
    let mut used = vec![false; n];
    used[chosen[0]] = true;
    s.commit_now(chosen[0])?;
    while chosen.len() < k {
        let p = if s.block_pot.iter().sum::<f64>() > 0.0 {
            s.step(&mut rng, trials)?
        } else {
            // Every point sits on a centre already: take the next unused point.
            let p = (0..n).find(|&i| !used[i]).unwrap_or(0);
            s.commit_now(p)?;
            p
        };
        used[p] = true;
        chosen.push(p);
    }
    Ok(chosen)
}

fn seeder<'a>(x: &'a [f32], d: usize, w: Option<&'a [f32]>, level: Level) -> Result<Seeder<'a>> {
    let n = x.len() / d;
    let mut xn = vec![0f32; n];
    let mut xt = if level == Level::Avx512 { vec![0f32; n.div_ceil(kern::PART) * kern::PART * d] } else { Vec::new() };
    // Norms and the transposed copy, per chunk of points in parallel (CHUNK is a multiple of 16).
    let mut xt_chunks: Vec<&mut [f32]> = xt.chunks_mut(CHUNK * d).collect();
    xt_chunks.resize_with(n.div_ceil(CHUNK), Default::default);
    let jobs: Vec<_> = x.chunks(CHUNK * d).zip(xn.chunks_mut(CHUNK)).zip(xt_chunks).collect();
    parallel::try_for_each(jobs, |((xc, xnc), xtc)| {
        kern::norms(level, xc, d, xnc);
        if !xtc.is_empty() {
            kern::transpose_into(xc, d, xtc);
        }
        Ok(())
    })?;
    let nb = n.div_ceil(BLOCK);
    let balls = BlockBalls::new(x, d, &xn)?;
    Ok(Seeder {
        x,
        d,
        w,
        level,
        xn,
        xt,
        closest: vec![f32::INFINITY; n],
        pending: None,
        block_pot: vec![0.0; nb],
        radius: vec![f32::INFINITY; nb],
        balls,
        skipped: 0,
    })
}

/// The rows of `x` in `order`, copied in parallel (fixed chunks).
fn gather_rows(x: &[f32], d: usize, order: &[u32]) -> Result<Vec<f32>> {
    let mut xp = vec![0f32; order.len() * d];
    let jobs: Vec<_> = xp.chunks_mut(CHUNK * d).zip(order.chunks(CHUNK)).collect();
    parallel::try_for_each(jobs, |(dst, idx)| {
        for (row, &i) in dst.chunks_exact_mut(d).zip(idx) {
            row.copy_from_slice(&x[i as usize * d..(i as usize + 1) * d]);
        }
        Ok(())
    })?;
    Ok(xp)
}

/// The largest of `v` (all >= 0; 0 if empty), over 16 running maxima: the compiler vectorises
/// it, and the maximum of non-NaN values does not depend on the order.
fn largest(v: &[f32]) -> f32 {
    let mut m = [0f32; 16];
    let chunks = v.chunks_exact(16);
    let tail = chunks.remainder().iter().fold(0f32, |a, &x| if x > a { x } else { a });
    for c in chunks {
        for (mj, &x) in m.iter_mut().zip(c) {
            *mj = if x > *mj { x } else { *mj };
        }
    }
    m.iter().fold(tail, |a, &x| if x > a { x } else { a })
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

    #[test]
    fn every_level_scores_and_folds_the_same_bits() {
        let mut rng = Rng::new(11);
        // Weighted and unweighted (the AVX-512 kernel has a path of its own for the latter).
        for (n, d, weighted) in
            [(9000, 8, true), (5000, 3, true), (700, 33, true), (300, 1, true), (1000, 64, true), (9000, 8, false), (1000, 64, false)]
        {
            let x: Vec<f32> = (0..n * d).map(|_| (rng.uniform() * 10.0 - 5.0) as f32).collect();
            let w: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.5).collect();
            let mut want = None;
            for level in simd::available_levels() {
                let mut s = seeder(&x, d, weighted.then_some(&w[..]), level).unwrap();
                s.commit_now(3).unwrap();
                let first = s.score(&[5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59]).unwrap();
                s.pending = Some(61);
                let sample = s.sample(0.37 * s.block_pot.iter().sum::<f64>());
                let lowered: Vec<u32> = (0..s.block_pot.len()).flat_map(|b| s.block_closest(b)).map(f32::to_bits).collect();
                let second = s.score(&[2, 4, 6]).unwrap();
                let bits = |v: &[[f64; LANES]]| v.iter().flatten().map(|f| f.to_bits()).collect::<Vec<_>>();
                let got = (s.closest.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), bits(&first), bits(&second), sample, lowered);
                assert_eq!(*want.get_or_insert_with(|| got.clone()), got, "level {level:?}, n={n} d={d}");
            }
        }
    }

    #[test]
    fn skipping_unreachable_blocks_changes_nothing() {
        // Clustered data, so that many blocks are skipped; compare with a seeder that never skips.
        let mut rng = Rng::new(3);
        let (n, d, k) = (20_000, 4, 200);
        let centres: Vec<f32> = (0..50 * d).map(|_| (rng.uniform() * 100.0) as f32).collect();
        let raw: Vec<f32> =
            (0..n).flat_map(|i| (0..d).map(|t| centres[(i % 50) * d + t] + rng.uniform() as f32).collect::<Vec<_>>()).collect();
        let order = spatial_order(&raw, d).unwrap();
        let x: Vec<f32> = order.iter().flat_map(|&i| raw[i as usize * d..(i as usize + 1) * d].to_vec()).collect();
        let mut pruned = seeder(&x, d, None, simd::level()).unwrap();
        let mut full = seeder(&x, d, None, simd::level()).unwrap();
        full.balls = BlockBalls::never_skip(n, d);
        let a = seed_loop(&mut pruned, k, 7, 9, n as f64).unwrap();
        let b = seed_loop(&mut full, k, 7, 9, n as f64).unwrap();
        assert_eq!(a, b);
        assert!(pruned.skipped > pruned.block_pot.len() * k / 2, "skipped only {} blocks", pruned.skipped);
        assert_eq!(full.skipped, 0);
        assert_eq!(pruned.closest, full.closest);
        assert_eq!(pruned.block_pot, full.block_pot);
    }

    #[test]
    fn every_level_seeds_clustered_data_alike() {
        // Clustered data: blocks are reached by some lanes only, so every level's kernel runs
        // on partial lane sets (the AVX-512 one batching groups of points when few lanes are
        // left), with weights and without.
        let mut rng = Rng::new(8);
        let (n, d, k) = (6000, 3, 60);
        let centres: Vec<f32> = (0..30 * d).map(|_| (rng.uniform() * 100.0) as f32).collect();
        let raw: Vec<f32> =
            (0..n).flat_map(|i| (0..d).map(|t| centres[(i % 30) * d + t] + rng.uniform() as f32).collect::<Vec<_>>()).collect();
        let order = spatial_order(&raw, d).unwrap();
        let x: Vec<f32> = order.iter().flat_map(|&i| raw[i as usize * d..(i as usize + 1) * d].to_vec()).collect();
        let w: Vec<f32> = (0..n).map(|i| 0.5 + (i % 3) as f32).collect();
        for weights in [Some(&w[..]), None] {
            let total = weights.map_or(n as f64, |w| w.iter().map(|&v| v as f64).sum());
            let mut want = None;
            for level in simd::available_levels() {
                let mut s = seeder(&x, d, weights, level).unwrap();
                let chosen = seed_loop(&mut s, k, 5, 4, total).unwrap();
                let got = (
                    chosen,
                    s.closest.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    s.block_pot.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                );
                assert!(s.skipped > 0);
                assert_eq!(*want.get_or_insert_with(|| got.clone()), got, "level {level:?}, weighted {}", weights.is_some());
            }
        }
    }

    #[test]
    fn pending_centre_is_folded_exactly_as_an_immediate_commit() {
        let mut rng = Rng::new(5);
        let (n, d) = (3000, 5);
        let x: Vec<f32> = (0..n * d).map(|_| rng.uniform() as f32).collect();
        let mut lazy = seeder(&x, d, None, simd::level()).unwrap();
        let mut eager = seeder(&x, d, None, simd::level()).unwrap();
        lazy.commit_now(0).unwrap();
        eager.commit_now(0).unwrap();
        lazy.pending = Some(9);
        eager.commit_now(9).unwrap();
        assert_eq!(lazy.block_closest(2), eager.closest[2 * BLOCK..3 * BLOCK].to_vec());
        lazy.score(&[1]).unwrap();
        assert_eq!(lazy.closest, eager.closest);
    }
}
