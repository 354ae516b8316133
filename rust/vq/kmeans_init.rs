//! Greedy k-means++ seeding (Arthur & Vassilvitskii, with scikit-learn's greedy variant): each
//! new centre is the best of `2 + ln k` candidates drawn with probability proportional to
//! `w_i * D(x_i)^2`, "best" meaning the one that lowers the total potential most.
//!
//! The points are reordered into spatially compact groups of 16 and blocks of 256
//! (`seed_blocks`), each with a bounding box. A candidate is scored by what it would take off
//! the potential, `sum w_i (D_i - min(D_i, |x_i - c|^2))`, over the blocks and then the groups
//! its box tests cannot rule out (`seed_kernels`); the chosen one is added the same way. Late
//! in a large-k seeding a candidate lowers a handful of points, so a step touches a few hundred
//! points, not all of them. Sampling searches the blocks' running potentials, then walks the
//! group and point potentials.
//!
//! Every float64 sum has one fixed order (within a block, point `q` of each group into partial
//! `q` and the partials as a tree; then the blocks of a chunk, then the chunks, in order) and
//! skipped groups would add exact zeros, so the centres depend only on the data and the seed,
//! never on the SIMD level or the number of threads.

use super::kmeans::check_weights;
use super::rng::Rng;
use super::seed_blocks::{margin, spatial_order, Boxes};
use super::seed_kernels::{self as kern, BallState, Centre, Chunk, Out, Update, BLOCK, FAN, GROUP};
use crate::error::{invalid, Error, Result};
use crate::parallel;
use crate::simd::{self, Level};

/// Points per chunk, the unit of parallel work.
const CHUNK: usize = FAN * BLOCK;

/// A value alone in its cache line.
#[derive(Clone)]
#[repr(align(64))]
struct Padded<T>(T);

/// Per-box state: largest `closest`, potential, reach threshold (`seed_kernels::threshold`).
#[derive(Clone)]
struct State {
    maxd: Vec<f32>,
    pot: Vec<f64>,
    thr: Vec<f32>,
}

impl State {
    /// `count` boxes; the first `real` hold points (no centre yet: reached by any), the others
    /// none (reached by none).
    fn new(count: usize, real: usize) -> State {
        let mut maxd = vec![0f32; count];
        maxd[..real].fill(f32::INFINITY);
        let thr = maxd.iter().map(|&m| if m > 0.0 { f32::INFINITY } else { f32::NEG_INFINITY }).collect();
        State { thr, maxd, pot: vec![0.0; count] }
    }
}

#[derive(Clone)]
struct Seeder {
    /// Points (before the padding) and dimension.
    n: usize,
    d: usize,
    level: Level,
    /// The points transposed in groups of 16 (`xt[(g * d + t) * 16 + q]`), padded with zeros
    /// to whole chunks; their squared norms, and their weights (padding 0).
    xt: Vec<f32>,
    xn: Vec<f32>,
    w: Option<Vec<f32>>,
    /// The error bound of a computed distance to any centre (a point: `|c|^2 <= max |x|^2`).
    err: f64,
    /// Squared distance of every point to its nearest chosen centre (padding: 0).
    closest: Vec<f32>,
    groups: Boxes,
    gstate: State,
    blocks: Boxes,
    bstate: State,
    /// (Candidate, block) pairs scored so far (for tests and tuning).
    scored: usize,
    /// Per chunk, the groups the candidates of the last scoring would lower.
    updates: Vec<Padded<Vec<Update>>>,
}

impl Seeder {
    fn weight(&self, i: usize) -> f64 {
        self.w.as_ref().map_or(1.0, |w| w[i] as f64)
    }

    /// Point `i`'s coordinates.
    fn point(&self, i: usize) -> Vec<f32> {
        let (g, q, d) = (i / GROUP, i % GROUP, self.d);
        (0..d).map(|t| self.xt[(g * d + t) * GROUP + q]).collect()
    }

    fn chunks(&self) -> usize {
        self.closest.len() / CHUNK
    }

    /// Chunk `ci`'s points and boxes.
    fn chunk(&self, ci: usize) -> Chunk<'_> {
        chunk_of(self.d, &self.xt, &self.xn, self.w.as_deref(), &self.groups, &self.blocks, self.err, ci)
    }

    /// What each candidate would take off the potential: per chunk in parallel, summed over the
    /// blocks of a chunk in order, then over the chunks in order. (The loop runs inside the
    /// pool, so a step's fork costs little.)
    fn score(&mut self, cands: &[usize]) -> Result<Vec<f64>> {
        let coords: Vec<Vec<f32>> = cands.iter().map(|&p| self.point(p)).collect();
        let centres: Vec<Centre> = coords.iter().map(|c| Centre { c, cn: kern::dot(c, c) }).collect();
        let lanes = centres.len();
        // Per chunk and candidate: the sum of its blocks' gains in block order. Every job's
        // outputs sit in cache lines of their own (jobs on other cores write next to them).
        let stride = lanes.next_multiple_of(8);
        let mut gains = vec![0f64; self.chunks() * stride];
        let mut scored = vec![Padded(0usize); self.chunks()];
        let mut updates = std::mem::take(&mut self.updates);
        let this = &*self;
        let jobs: Vec<_> = gains.chunks_mut(stride).zip(scored.iter_mut()).zip(updates.iter_mut()).enumerate().collect();
        parallel::try_for_each(jobs, |(ci, ((gains, Padded(scored)), Padded(updates)))| {
            let ch = this.chunk(ci);
            let closest = &this.closest[ci * CHUNK..(ci + 1) * CHUNK];
            let (gthr, bthr) = (&this.gstate.thr[ci * FAN * FAN..(ci + 1) * FAN * FAN], &this.bstate.thr[ci * FAN..(ci + 1) * FAN]);
            updates.clear();
            for (l, c) in centres.iter().enumerate() {
                let mut blocks = [0f64; FAN];
                let mut out = Out { gains: &mut blocks, stride: 1, scored: 0, lane: l as u32, updates };
                kern::gain(this.level, &ch, closest, gthr, bthr, c, &mut out);
                *scored += out.scored;
                gains[l] = blocks.iter().fold(0.0, |a, &g| a + g);
            }
            Ok(())
        })?;
        self.updates = updates;
        self.scored += scored.iter().map(|s| s.0).sum::<usize>();
        Ok((0..lanes).map(|l| gains.chunks_exact(stride).fold(0.0, |a, g| a + g[l])).collect())
    }

    /// Adds point `p` as a centre: lowers `closest` and refreshes the groups' and blocks' state
    /// wherever it reaches.
    fn commit(&mut self, p: usize) -> Result<()> {
        let coords = self.point(p);
        let c = Centre { c: &coords, cn: kern::dot(&coords, &coords) };
        let (d, level, err, w) = (self.d, self.level, self.err, self.w.as_deref());
        let (xt, xn, groups, blocks) = (&self.xt, &self.xn, &self.groups, &self.blocks);
        let (g, b) = (&mut self.gstate, &mut self.bstate);
        let (gn, bn) = (FAN * FAN, FAN);
        let jobs: Vec<_> = self
            .closest
            .chunks_mut(CHUNK)
            .zip(g.maxd.chunks_mut(gn).zip(g.pot.chunks_mut(gn)).zip(g.thr.chunks_mut(gn)))
            .zip(b.maxd.chunks_mut(bn).zip(b.pot.chunks_mut(bn)).zip(b.thr.chunks_mut(bn)))
            .enumerate()
            .collect();
        parallel::try_for_each(jobs, |(ci, ((closest, ((gmaxd, gpot), gthr)), ((bmaxd, bpot), bthr)))| {
            let ch = chunk_of(d, xt, xn, w, groups, blocks, err, ci);
            let mut gs = BallState { maxd: gmaxd, pot: gpot, thr: gthr };
            let mut bs = BallState { maxd: bmaxd, pot: bpot, thr: bthr };
            kern::commit(level, &ch, closest, &mut gs, &mut bs, &c);
            Ok(())
        })?;
        Ok(())
    }

    /// Adds the candidate of lane `lane` of the last scoring as a centre, from the groups the
    /// scoring found it lowers: what [`Seeder::commit`] would do, without a second pass.
    fn apply(&mut self, lane: usize) {
        let (d, err, w) = (self.d, self.err, self.w.as_deref());
        let (xt, xn, groups, blocks) = (&self.xt, &self.xn, &self.groups, &self.blocks);
        let (g, b) = (&mut self.gstate, &mut self.bstate);
        let (gn, bn) = (FAN * FAN, FAN);
        for (ci, Padded(updates)) in self.updates.iter().enumerate().filter(|(_, u)| !u.0.is_empty()) {
            let ch = chunk_of(d, xt, xn, w, groups, blocks, err, ci);
            let (gr, br) = (ci * gn..(ci + 1) * gn, ci * bn..(ci + 1) * bn);
            let mut gs = BallState { maxd: &mut g.maxd[gr.clone()], pot: &mut g.pot[gr.clone()], thr: &mut g.thr[gr] };
            let mut bs = BallState { maxd: &mut b.maxd[br.clone()], pot: &mut b.pot[br.clone()], thr: &mut b.thr[br] };
            kern::apply(&ch, &mut self.closest[ci * CHUNK..(ci + 1) * CHUNK], &mut gs, &mut bs, updates, lane as u32);
        }
    }

    /// The point where the running sum of `w_i closest_i` first exceeds `r` (never a point of
    /// zero potential): whole blocks are skipped by a binary search of `blocks`, their running
    /// sums ([`Running`]), then groups by their sums.
    fn sample(&self, blocks: &Running, r: f64) -> usize {
        let (b, r) = blocks.find(r);
        let (g, r) = walk(&self.gstate.pot[b * FAN..(b + 1) * FAN], r);
        let at = (b * FAN + g) * GROUP;
        let (mut acc, mut last) = (0.0, at);
        for i in at..at + GROUP {
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

    /// One greedy step: draw `trials` candidates, keep the one that lowers the potential most.
    fn step(&mut self, rng: &mut Rng, trials: usize, pot: f64) -> Result<usize> {
        let blocks = Running::new(&self.bstate.pot);
        let cands: Vec<usize> = (0..trials).map(|_| self.sample(&blocks, rng.uniform() * pot)).collect();
        let gains = self.score(&cands)?;
        // The largest gain; ties (and NaN, which finite input cannot give) to the earliest.
        let (mut best, mut top) = (0, f64::NEG_INFINITY);
        for (j, &g) in gains.iter().enumerate() {
            if g > top {
                (best, top) = (j, g);
            }
        }
        self.apply(best);
        Ok(cands[best])
    }

    fn potential(&self) -> f64 {
        self.bstate.pot.iter().fold(0.0, |a, &v| a + v)
    }
}

/// Chunk `ci` of the seeder's arrays.
#[allow(clippy::too_many_arguments)]
fn chunk_of<'a>(
    d: usize,
    xt: &'a [f32],
    xn: &'a [f32],
    w: Option<&'a [f32]>,
    groups: &'a Boxes,
    blocks: &'a Boxes,
    err: f64,
    ci: usize,
) -> Chunk<'a> {
    let r = ci * CHUNK..(ci + 1) * CHUNK;
    let (gr, br) = (ci * FAN * FAN..(ci + 1) * FAN * FAN, ci * FAN..(ci + 1) * FAN);
    Chunk {
        d,
        xt: &xt[r.start * d..r.end * d],
        xn: &xn[r.clone()],
        w: w.map(|w| &w[r]),
        gboxes: &groups.data[gr.start * 2 * d..gr.end * 2 * d],
        bboxes: &blocks.data[br.start * 2 * d..br.end * 2 * d],
        err,
    }
}

/// The running sums of non-negative terms, added in order from 0: [`Running::find`] gives what
/// [`walk`] gives, by binary search.
struct Running {
    sums: Vec<f64>,
    /// The last positive term.
    last: usize,
}

impl Running {
    fn new(terms: &[f64]) -> Running {
        let mut acc = 0.0;
        let sums = terms.iter().map(|&p| {
            acc += p;
            acc
        });
        Running { sums: sums.collect(), last: terms.iter().rposition(|&p| p > 0.0).unwrap_or(0) }
    }

    /// The first entry whose running sum exceeds `r` (its term is positive: the sum rose
    /// there), and what is left of `r` at it; past the end, the last positive entry with `r`
    /// infinite.
    fn find(&self, r: f64) -> (usize, f64) {
        let j = self.sums.partition_point(|&s| s <= r);
        if j == self.sums.len() {
            return (self.last, f64::INFINITY);
        }
        (j, r - if j == 0 { 0.0 } else { self.sums[j - 1] })
    }
}

/// The entry of `sums` (all >= 0) where their running sum first exceeds `r`, and what is left
/// of `r` there; past the end (rounding), the last positive entry with `r` infinite.
fn walk(sums: &[f64], r: f64) -> (usize, f64) {
    let (mut acc, mut last) = (0.0, 0);
    for (j, &p) in sums.iter().enumerate() {
        if p <= 0.0 {
            continue;
        }
        last = j;
        if acc + p > r {
            return (j, r - acc);
        }
        acc += p;
    }
    (last, f64::INFINITY)
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
    // Work on the points in group order; report the chosen ones from the caller's `x`.
    let order = spatial_order(x, d)?;
    let mut s = {
        let xp = gather_rows(x, d, &order)?;
        let wp: Option<Vec<f32>> = weights.map(|w| order.iter().map(|&i| w[i as usize]).collect());
        seeder(&xp, d, wp.as_deref(), simd::level())?
    };
    let chosen = parallel::install(|| seed_loop(&mut s, k, trials, seed, total_w))??;
    Ok(chosen.iter().flat_map(|&i| x[order[i] as usize * d..(order[i] as usize + 1) * d].iter().copied()).collect())
}

/// The greedy loop: `k` chosen point indices (in the seeder's order).
fn seed_loop(s: &mut Seeder, k: usize, trials: usize, seed: u64, total_w: f64) -> Result<Vec<usize>> {
    let n = s.n;
    let mut rng = Rng::new(seed);
    // First centre: a point drawn with probability proportional to its weight.
    let mut chosen = vec![draw_by_weight(s.w.as_ref().map(|w| &w[..n]), n, total_w, rng.uniform())];
    let mut used = vec![false; n];
    used[chosen[0]] = true;
    s.commit(chosen[0])?;
    while chosen.len() < k {
        let pot = s.potential();
        let p = if pot > 0.0 {
            s.step(&mut rng, trials, pot)?
        } else {
            // Every point sits on a centre already: take the next unused point.
            let p = (0..n).find(|&i| !used[i]).unwrap_or(0);
            s.commit(p)?;
            p
        };
        used[p] = true;
        chosen.push(p);
    }
    Ok(chosen)
}

/// The seeder over `xp` (points in group order) at `level`.
fn seeder(xp: &[f32], d: usize, w: Option<&[f32]>, level: Level) -> Result<Seeder> {
    let n = xp.len() / d;
    let np = n.div_ceil(CHUNK) * CHUNK;
    let mut xn = vec![0f32; np];
    let mut xt = vec![0f32; np * d];
    // Norms and the transposed copy, per chunk of points in parallel.
    let jobs: Vec<_> = xp.chunks(CHUNK * d).zip(xn.chunks_mut(CHUNK)).zip(xt.chunks_mut(CHUNK * d)).collect();
    parallel::try_for_each(jobs, |((xc, xnc), xtc)| {
        kern::norms(level, xc, d, &mut xnc[..xc.len() / d]);
        transpose_into(xc, d, xtc);
        Ok(())
    })?;
    let max_xn = xn.iter().fold(0f32, |a, &v| if v > a { v } else { a });
    let mut closest = vec![0f32; np];
    closest[..n].fill(f32::INFINITY);
    let w = w.map(|w| {
        let mut v = vec![0f32; np];
        v[..n].copy_from_slice(w);
        v
    });
    Ok(Seeder {
        n,
        d,
        level,
        xt,
        xn,
        w,
        err: margin(d, max_xn, max_xn),
        closest,
        groups: Boxes::new(xp, d, GROUP, np / GROUP)?,
        gstate: State::new(np / GROUP, n.div_ceil(GROUP)),
        blocks: Boxes::new(xp, d, BLOCK, np / BLOCK)?,
        bstate: State::new(np / BLOCK, n.div_ceil(BLOCK)),
        scored: 0,
        updates: vec![Padded(Vec::new()); np / CHUNK],
    })
}

/// Points transposed in groups of 16 (`xt[(g * d + t) * 16 + q]` = coordinate `t` of point
/// `16 g + q`); `xt` must hold zeros for the padding.
fn transpose_into(x: &[f32], d: usize, xt: &mut [f32]) {
    for (i, xi) in x.chunks_exact(d).enumerate() {
        let (g, q) = (i / GROUP, i % GROUP);
        for (t, &v) in xi.iter().enumerate() {
            xt[(g * d + t) * GROUP + q] = v;
        }
    }
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

    /// Clustered points (`blobs` centres in a box of side 100, unit spread), in group order.
    fn clustered(n: usize, d: usize, blobs: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let centres: Vec<f32> = (0..blobs * d).map(|_| (rng.uniform() * 100.0) as f32).collect();
        let raw: Vec<f32> =
            (0..n).flat_map(|i| (0..d).map(|t| centres[(i % blobs) * d + t] + rng.uniform() as f32).collect::<Vec<_>>()).collect();
        let order = spatial_order(&raw, d).unwrap();
        gather_rows(&raw, d, &order).unwrap()
    }

    fn bits64(v: &[f64]) -> Vec<u64> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    /// Everything a seeding leaves: the chosen points and the bits of every distance and sum.
    fn outcome(s: &Seeder, chosen: Vec<usize>) -> (Vec<usize>, Vec<u32>, Vec<u64>, Vec<u64>) {
        (chosen, s.closest.iter().map(|v| v.to_bits()).collect(), bits64(&s.gstate.pot), bits64(&s.bstate.pot))
    }

    #[test]
    fn every_level_seeds_alike() {
        // Uniform and clustered points (clustered: boxes skip, so every level's kernels run on
        // partial sets of blocks and groups), awkward sizes, with weights and without.
        let mut rng = Rng::new(11);
        let mut cases: Vec<(Vec<f32>, usize, usize)> = [(9000, 8, 40), (5000, 3, 30), (700, 33, 20), (300, 1, 10), (1000, 64, 12)]
            .into_iter()
            .map(|(n, d, k)| ((0..n * d).map(|_| (rng.uniform() * 10.0 - 5.0) as f32).collect(), d, k))
            .collect();
        cases.push((clustered(6000, 3, 30, 8), 3, 60));
        cases.push((clustered(20_000, 8, 50, 9), 8, 300));
        for (x, d, k) in &cases {
            let n = x.len() / d;
            let w: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.5).collect();
            for weights in [Some(&w[..]), None] {
                let total = weights.map_or(n as f64, |w| w.iter().map(|&v| v as f64).sum());
                let mut want = None;
                for level in simd::available_levels() {
                    let mut s = seeder(x, *d, weights, level).unwrap();
                    let chosen = seed_loop(&mut s, *k, 5, 4, total).unwrap();
                    let got = outcome(&s, chosen);
                    assert_eq!(
                        *want.get_or_insert_with(|| got.clone()),
                        got,
                        "level {level:?}, n={n} d={d}, weighted {}",
                        weights.is_some()
                    );
                }
            }
        }
    }

    #[test]
    fn skipping_unreachable_groups_changes_nothing() {
        // Compare with a seeder whose balls never exclude anything.
        let (n, d, k) = (20_000, 4, 200);
        let x = clustered(n, d, 50, 3);
        let mut pruned = seeder(&x, d, None, simd::level()).unwrap();
        let mut full = seeder(&x, d, None, simd::level()).unwrap();
        // Boxes of every real group and block widened to everything.
        for set in full.groups.data.chunks_exact_mut(32).chain(full.blocks.data.chunks_exact_mut(32)) {
            for q in 0..16 {
                if set[q] <= set[16 + q] {
                    (set[q], set[16 + q]) = (f32::NEG_INFINITY, f32::INFINITY);
                }
            }
        }
        let a = seed_loop(&mut pruned, k, 7, 9, n as f64).unwrap();
        let b = seed_loop(&mut full, k, 7, 9, n as f64).unwrap();
        assert_eq!(outcome(&pruned, a), outcome(&full, b));
        assert!(pruned.scored * 10 < full.scored, "scored {} of {} blocks", pruned.scored, full.scored);
    }

    /// Brute force, in float64: `sum w (closest - min(closest, |x - c|^2))` with the kernels'
    /// distances, and the potential `sum w closest`.
    fn brute_gain(s: &Seeder, c: &[f32]) -> f64 {
        let cn = kern::dot(c, c);
        (0..s.n)
            .map(|i| {
                let dist = kern::l2(kern::dot(&s.point(i), c), cn, s.xn[i]);
                s.weight(i) * (s.closest[i] as f64 - dist.min(s.closest[i]) as f64)
            })
            .sum()
    }

    #[test]
    fn gains_potentials_and_samples_match_brute_force() {
        let (n, d) = (9000, 5);
        let x = clustered(n, d, 20, 6);
        let w: Vec<f32> = (0..n).map(|i| 0.25 + (i % 3) as f32).collect();
        let mut s = seeder(&x, d, Some(&w), simd::level()).unwrap();
        let mut rng = Rng::new(2);
        s.commit(17).unwrap();
        for step in 0..40 {
            let pot = s.potential();
            let brute_pot: f64 = (0..n).map(|i| s.weight(i) * s.closest[i] as f64).sum();
            assert!((pot - brute_pot).abs() <= 1e-12 * brute_pot, "step {step}: {pot} vs {brute_pot}");
            let cands: Vec<usize> = (0..6).map(|_| (rng.uniform() * n as f64) as usize).collect();
            let gains = s.score(&cands).unwrap();
            for (l, (&p, &g)) in cands.iter().zip(&gains).enumerate() {
                let want = brute_gain(&s, &s.point(p));
                assert!((g - want).abs() <= 1e-12 * pot, "step {step}: gain {g} vs {want}");
                // Adding a candidate from what its scoring found equals adding it afresh.
                let (mut applied, mut committed) = (s.clone(), s.clone());
                applied.apply(l);
                committed.commit(p).unwrap();
                let state = |s: &Seeder| {
                    let f = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    (f(&s.closest), f(&s.gstate.maxd), f(&s.gstate.thr), bits64(&s.gstate.pot), f(&s.bstate.thr), bits64(&s.bstate.pot))
                };
                assert!(state(&applied) == state(&committed), "step {step}, lane {l}");
            }
            // A sample is a point of positive potential where the running sum passes r.
            let r = rng.uniform() * pot;
            let i = s.sample(&Running::new(&s.bstate.pot), r);
            let before: f64 = (0..i).map(|j| s.weight(j) * s.closest[j] as f64).sum();
            let mine = s.weight(i) * s.closest[i] as f64;
            assert!(mine > 0.0 && before <= r * (1.0 + 1e-12) && r <= (before + mine) * (1.0 + 1e-12), "step {step}");
            let best = s.step(&mut rng, 3, pot).unwrap();
            assert!(s.closest[best] == 0.0);
        }
    }

    #[test]
    fn running_sums_find_what_the_walk_finds() {
        let mut rng = Rng::new(4);
        for len in [1, 2, 7, 256, 1000] {
            // Zeros (never chosen) among positive terms of many magnitudes.
            let terms: Vec<f64> = (0..len).map(|_| if rng.uniform() < 0.3 { 0.0 } else { rng.uniform().powi(8) * 1e3 }).collect();
            let running = Running::new(&terms);
            let total = terms.iter().fold(0.0, |a, &v| a + v);
            let mut rs: Vec<f64> = (0..200).map(|_| rng.uniform() * total).collect();
            rs.extend([0.0, total, total * 2.0]);
            rs.extend(running.sums.iter().copied());
            for r in rs {
                let (a, b) = (running.find(r), walk(&terms, r));
                assert!(a.0 == b.0 && a.1.to_bits() == b.1.to_bits(), "len {len}, r {r}: {a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn every_point_sits_on_a_centre_then_the_next_unused_is_taken() {
        // 3 distinct points repeated: after 3 centres the potential is 0.
        let x: Vec<f32> = (0..60).map(|i| (i % 3) as f32).collect();
        let c = kmeans_plusplus(&x, 1, None, 5, 1, None).unwrap();
        let mut firsts = c[..3].to_vec();
        firsts.sort_by(f32::total_cmp);
        assert_eq!(firsts, [0.0, 1.0, 2.0]);
    }
}
