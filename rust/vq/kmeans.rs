//! One Lloyd iteration of k-means: assign every point to its nearest centroid, then move each
//! centroid to the (weighted) mean of its points.
//!
//! The iteration loop, initialisation choice, tolerance and progress reporting live in Python
//! (`quantpress.KMeans`), which calls [`lloyd_iteration`] once per iteration with the GIL
//! released. Determinism: the assignment is per point; the sums are accumulated in float64 per
//! fixed chunk of points (the chunking depends only on n, k and d) and the chunk sums are added
//! in chunk order, so the result is bit-identical on any number of threads.

use super::assign::{assign_into, Codebook};
use super::kmeans_bounds::{assign_bounded, Bounds};
use super::kmeans_filter::{assign_filtered, Filter, LEAF};
use super::Metric;
use crate::error::{invalid, Error, Result};
use crate::parallel;

/// The outcome of one iteration.
#[derive(Clone, Debug)]
pub struct Iteration {
    /// The moved centroids, `k * d` (unit length for cosine).
    pub centroids: Vec<f32>,
    /// Nearest codeword of every point against the centroids the iteration started from.
    pub codes: Vec<u32>,
    /// `sum w_i * dist_i` against the starting centroids: squared L2, or `1 - cos` for cosine.
    pub inertia: f64,
    /// Total weight of each cluster (before re-seeding).
    pub cluster_weight: Vec<f64>,
    /// How many empty clusters were re-seeded on a far point.
    pub reseeded: usize,
    /// `sum_j |new_j - old_j|^2`.
    pub shift: f64,
}

/// Checks `weights` (one finite, non-negative value per point).
pub fn check_weights(weights: Option<&[f32]>, n: usize) -> Result<()> {
    let Some(w) = weights else { return Ok(()) };
    if w.len() != n {
        return Err(Error::Shape(format!("sample_weight holds {} values for {n} points", w.len())));
    }
    if let Some(i) = w.iter().position(|v| !v.is_finite() || *v < 0.0) {
        return Err(invalid!("sample_weight[{i}] = {} is not a finite, non-negative number", w[i]));
    }
    Ok(())
}

/// Per-chunk float64 sums: `k * d` coordinate sums, `k` weights, and the chunk's inertia.
struct Sums {
    coords: Vec<f64>,
    weight: Vec<f64>,
    inertia: f64,
}

/// Points per accumulation chunk, fixed by the input: enough chunks to keep two threads busy,
/// but never more than ~64 MiB of float64 accumulators in all.
pub fn chunk_rows(n: usize, k: usize, d: usize) -> usize {
    let per_chunk_bytes = (k * (d + 1) * 8).max(1);
    let max_chunks = ((64usize << 20) / per_chunk_bytes).clamp(1, 64);
    n.div_ceil(max_chunks).max(8192).min(n.max(1))
}

fn accumulate(x: &[f32], d: usize, w: Option<&[f32]>, codes: &[u32], dists: &[f32], metric: Metric, acc: &mut Sums) {
    for (i, (xi, &c)) in x.chunks_exact(d).zip(codes).enumerate() {
        let wi = w.map_or(1.0, |w| w[i] as f64);
        let c = c as usize;
        for (s, &v) in acc.coords[c * d..(c + 1) * d].iter_mut().zip(xi) {
            *s += wi * v as f64;
        }
        acc.weight[c] += wi;
        acc.inertia += wi * point_cost(metric, dists[i]);
    }
}

/// A point's cost from the distance `assign` reports: squared L2, or `1 - cos` for cosine.
fn point_cost(metric: Metric, reported: f32) -> f64 {
    match metric {
        Metric::Cosine => (1.0 - reported as f64).max(0.0),
        _ => reported as f64,
    }
}

/// Runs one Lloyd iteration of the `n` points `x` (`n * d`) from `centroids` (`k * d`).
/// `metric` is L2 or cosine (spherical k-means; `x` should already have unit rows).
///
/// The same as [`lloyd_partial`] over all points with `chunk_rows(n, k, d)` rows per chunk,
/// the chunk sums added in order, then [`lloyd_finish`].
pub fn lloyd_iteration(x: &[f32], d: usize, weights: Option<&[f32]>, centroids: &[f32], metric: Metric) -> Result<Iteration> {
    lloyd_iteration_with(x, d, weights, centroids, metric, None)
}

/// [`lloyd_iteration`], with the L2 assignment accelerated by the distance `bounds` kept from
/// the previous call on the same `x` (`kmeans_bounds`): the same result, bit for bit.
pub fn lloyd_iteration_with(
    x: &[f32],
    d: usize,
    weights: Option<&[f32]>,
    centroids: &[f32],
    metric: Metric,
    bounds: Option<&mut Bounds>,
) -> Result<Iteration> {
    let cb = prepare(centroids, d, metric)?;
    check_weights(weights, x.len() / d)?;
    let (codes, dists) = match bounds {
        Some(b) if metric == Metric::L2 => assign_bounded(&cb, x, b)?,
        _ => assign_all(&cb, x)?,
    };
    iteration_from(x, d, weights, &cb, metric, codes, dists)
}

/// [`lloyd_iteration`], with the assignment accelerated by what `accel` keeps from the previous
/// call on the same `x` (see [`Accel`]): the same result, bit for bit.
pub fn lloyd_iteration_accel(
    x: &[f32],
    d: usize,
    weights: Option<&[f32]>,
    centroids: &[f32],
    metric: Metric,
    accel: &mut Accel,
) -> Result<Iteration> {
    let cb = prepare(centroids, d, metric)?;
    check_weights(weights, x.len() / d)?;
    let (codes, dists) = accel.assign(&cb, x)?;
    iteration_from(x, d, weights, &cb, metric, codes, dists)
}

/// The sums, re-seeding and new centroids of an iteration from its assignment.
fn iteration_from(
    x: &[f32],
    d: usize,
    weights: Option<&[f32]>,
    cb: &Codebook,
    metric: Metric,
    codes: Vec<u32>,
    dists: Vec<f32>,
) -> Result<Iteration> {
    let (n, k) = (x.len() / d, cb.k);
    let total = total_sums(x, d, weights, &codes, &dists, metric, k, chunk_rows(n, k, d))?;
    let empty = total.weight.iter().filter(|&&w| w == 0.0).count();
    let far = far_points(x, d, weights, &codes, &dists, metric, empty);
    let members = count_members(&codes, k);
    let inertia = total.inertia;
    let fin = lloyd_finish(cb, metric, total.coords, total.weight, &members, &far)?;
    Ok(Iteration { centroids: fin.centroids, codes, inertia, cluster_weight: fin.cluster_weight, reseeded: fin.reseeded, shift: fin.shift })
}

/// The exact acceleration of the assignment carried between the Lloyd iterations of one fit,
/// chosen on the first call from the shape (and again when the shape changes): the filtering
/// tree (`kmeans_filter`) up to d = 32 from k = 512 if a sample says it prunes enough, distance
/// bounds (`kmeans_bounds`) from d = 32 otherwise, brute force for the rest (and for cosine);
/// either acceleration gives way to brute force after a call where it did not pay. Every
/// choice gives the brute-force assignment.
#[derive(Default, Debug)]
pub struct Accel {
    /// `(n, d, k, metric)` the choice was made for.
    key: Option<(usize, usize, usize, Metric)>,
    /// Calls since the choice.
    calls: usize,
    pub kind: AccelKind,
}

#[derive(Default, Debug)]
pub enum AccelKind {
    #[default]
    Plain,
    Bounds(Bounds),
    Filter(Filter),
}

/// The filtering tree is used up to this dimension, from [`FILTER_MIN_K`] centroids and
/// [`FILTER_MIN_N`] points. Measured against brute force (one thread, every iteration from
/// k-means++ on `benches/bench_kmeans.py` data, the tree build included): n = 65536 and 11
/// iterations: d = 8 is 0.76x at k = 128, 1.09x at k = 256, 1.58x at k = 512, 2.8x at
/// k = 4096; d = 16 1.52x at k = 512; d = 24 1.18x at k = 256, 1.63x at k = 1024; d = 32
/// 1.08x at k = 256 and 1.45x at k = 1024, where the distance bounds give 1.07x and 0.99x;
/// 200k x 8, k = 256, 26 iterations: 1.46x. At d = 64 (100k, k = 256) the bounds are faster
/// (the tree gives 1.21x).
pub const FILTER_MAX_D: usize = 32;
/// The filtering tree is dropped for brute force after a call that scored more than this
/// fraction of all (point, centroid) pairs. Measured (2 threads, 10 iterations): isotropic
/// Gaussian points score 39% of the pairs at 200k x 8, k = 256 (1.9x slower than brute force),
/// 42% at 65,536 x 8, k = 4096 (1.36x slower), 92-99% at 1M x 16, k = 256 (2.8x slower); the
/// clustered bench data scores 2.4% at 200k x 8, k = 256 (even) and far less at k = 4096.
pub const FILTER_MAX_SCORED: f64 = 0.15;
/// Points of the sample that judges the tree before it is built over more points, and the
/// fraction of pairs the sample's tree may score. A sparser sample prunes less than the whole:
/// 6-16% of the pairs on the clustered bench data (k = 256 to 4096, d = 8 to 32) where all
/// points score 2-5%, and 61-100% on isotropic Gaussian points (where brute force is faster).
pub const FILTER_PROBE_POINTS: usize = 16_384;
pub const FILTER_PROBE_MAX_SCORED: f64 = 0.35;
/// Samples' worth of points up to which no sample is taken (`filter_pays_on_a_sample`).
pub const FILTER_PROBE_SKIP: usize = 4;
/// Distance bounds are dropped for brute force after a call (not the first) that searched more
/// than this fraction of the centroid groups: 23% on the clustered bench data at 100k x 64,
/// k = 256 (then fewer, and 1.1-1.4x faster than brute force), 100% on isotropic Gaussian
/// points at d = 64 and 128 (2x slower).
pub const BOUNDS_MAX_SEARCHED: f64 = 0.6;
/// From k = 512: at k = 256 the tree was 1.09-1.46x faster on one thread but no faster on two
/// over 10 iterations (it scales worse than brute force, and its build is one iteration).
pub const FILTER_MIN_K: usize = 512;
pub const FILTER_MIN_N: usize = 4 * LEAF;

impl Accel {
    pub fn new() -> Accel {
        Accel::default()
    }

    /// The acceleration for `n` points of dimension `d` and `k` centroids.
    pub fn choose(n: usize, d: usize, k: usize, metric: Metric) -> AccelKind {
        if metric != Metric::L2 {
            AccelKind::Plain
        } else if d <= FILTER_MAX_D && k >= FILTER_MIN_K && n >= FILTER_MIN_N {
            AccelKind::Filter(Filter::new())
        } else if d >= 32 {
            AccelKind::Bounds(Bounds::new())
        } else {
            AccelKind::Plain
        }
    }

    fn assign(&mut self, cb: &Codebook, x: &[f32]) -> Result<(Vec<u32>, Vec<f32>)> {
        let key = (x.len() / cb.d, cb.d, cb.k, cb.metric);
        if self.key != Some(key) {
            (self.key, self.kind, self.calls) = (Some(key), Accel::choose(key.0, key.1, key.2, key.3), 0);
            if matches!(self.kind, AccelKind::Filter(_)) && !filter_pays_on_a_sample(cb, x)? {
                self.kind = AccelKind::Plain;
            }
        }
        self.calls += 1;
        let pairs = key.0 as f64 * cb.k as f64;
        match &mut self.kind {
            AccelKind::Plain => assign_all(cb, x),
            AccelKind::Bounds(b) => {
                let out = assign_bounded(cb, x, b)?;
                // The first call searches everything; from the second on, bounds that leave most
                // groups to search cost more than brute force (unclustered data): switch for good.
                if self.calls > 1 && b.groups_searched as f64 > BOUNDS_MAX_SEARCHED * (key.0 * b.groups.max(1)) as f64 {
                    self.kind = AccelKind::Plain;
                }
                Ok(out)
            }
            AccelKind::Filter(f) => {
                let out = assign_filtered(cb, x, f)?;
                if f.scored as f64 > FILTER_MAX_SCORED * pairs {
                    self.kind = AccelKind::Plain;
                }
                Ok(out)
            }
        }
    }
}

/// Whether the filtering tree prunes enough to pay, judged on a strided sample of at most
/// [`FILTER_PROBE_POINTS`] points (a small tree, one assignment, thrown away) before the tree
/// over every point is built: unclustered data leaves most pairs to score, and then brute force
/// is faster and the full tree's build is wasted. Up to [`FILTER_PROBE_SKIP`] samples' worth
/// of points the first call judges instead: the sample would cost a quarter of that call or
/// more (9 ms of a 30 ms first call at 65,536 x 8, k = 4096), and the fallback after the call
/// bounds the loss to that one call.
fn filter_pays_on_a_sample(cb: &Codebook, x: &[f32]) -> Result<bool> {
    let (n, d) = (x.len() / cb.d, cb.d);
    if n <= FILTER_PROBE_SKIP * FILTER_PROBE_POINTS {
        return Ok(true);
    }
    let sample: Vec<f32> = x.chunks_exact(d).step_by(n.div_ceil(FILTER_PROBE_POINTS)).flatten().copied().collect();
    let mut probe = Filter::new();
    assign_filtered(cb, &sample, &mut probe)?;
    Ok(probe.scored as f64 <= FILTER_PROBE_MAX_SCORED * (sample.len() / d) as f64 * cb.k as f64)
}

fn prepare(centroids: &[f32], d: usize, metric: Metric) -> Result<Codebook> {
    if !matches!(metric, Metric::L2 | Metric::Cosine) {
        return Err(invalid!("k-means supports the 'l2' and 'cosine' metrics, not {:?}", metric.name()));
    }
    Codebook::new(centroids, d, metric)
}

fn assign_all(cb: &Codebook, x: &[f32]) -> Result<(Vec<u32>, Vec<f32>)> {
    let n = x.len() / cb.d;
    let mut codes = vec![0u32; n];
    let mut dists = vec![0f32; n];
    assign_into(cb, x, &mut codes, Some(&mut dists))?;
    Ok((codes, dists))
}

/// Float64 sums of every chunk of `rows` points, computed in parallel, returned in order.
#[allow(clippy::too_many_arguments)]
fn chunk_sums(
    x: &[f32],
    d: usize,
    weights: Option<&[f32]>,
    codes: &[u32],
    dists: &[f32],
    metric: Metric,
    k: usize,
    rows: usize,
) -> Result<Vec<Sums>> {
    let n = codes.len();
    let rows = rows.max(1);
    let mut parts: Vec<Sums> =
        (0..n.div_ceil(rows)).map(|_| Sums { coords: vec![0.0; k * d], weight: vec![0.0; k], inertia: 0.0 }).collect();
    let jobs: Vec<_> = parts.iter_mut().enumerate().collect();
    parallel::try_for_each(jobs, |(i, acc)| {
        let r = i * rows..((i + 1) * rows).min(n);
        let w = weights.map(|w| &w[r.clone()]);
        accumulate(&x[r.start * d..r.end * d], d, w, &codes[r.clone()], &dists[r], metric, acc);
        Ok(())
    })?;
    Ok(parts)
}

/// One chunk's sums for the codes present in it: the codes, their coordinate sums (`d` each)
/// and weights, and the chunk's inertia.
#[derive(Default)]
struct SparseSums {
    present: Vec<u32>,
    sums: Vec<f64>,
    weight: Vec<f64>,
    inertia: f64,
}

/// The chunks' sums ([`chunk_sums`]) added in chunk order. When a chunk holds fewer points than
/// there are clusters, each chunk keeps sums only for the codes present in it (its points
/// grouped by code, stably, so each code's terms are added in point order as `accumulate`
/// adds them): no `k x d` array per chunk to zero and add. The bits are the same: a code absent
/// from a chunk would add `+0.0`, which changes no running total that starts at `+0.0` (such a
/// total is never `-0.0`).
#[allow(clippy::too_many_arguments)]
fn total_sums(
    x: &[f32],
    d: usize,
    weights: Option<&[f32]>,
    codes: &[u32],
    dists: &[f32],
    metric: Metric,
    k: usize,
    rows: usize,
) -> Result<Sums> {
    let mut total = Sums { coords: vec![0.0; k * d], weight: vec![0.0; k], inertia: 0.0 };
    let n = codes.len();
    let rows = rows.max(1);
    if k <= rows {
        for p in chunk_sums(x, d, weights, codes, dists, metric, k, rows)? {
            total.coords.iter_mut().zip(&p.coords).for_each(|(a, b)| *a += b);
            total.weight.iter_mut().zip(&p.weight).for_each(|(a, b)| *a += b);
            total.inertia += p.inertia;
        }
        return Ok(total);
    }
    let mut parts: Vec<SparseSums> = (0..n.div_ceil(rows)).map(|_| SparseSums::default()).collect();
    let jobs: Vec<_> = parts.iter_mut().enumerate().collect();
    parallel::try_for_each(jobs, |(i, SparseSums { present, sums, weight, inertia })| {
        let r = i * rows..((i + 1) * rows).min(n);
        let (cs, w) = (&codes[r.clone()], |j: usize| weights.map_or(1.0, |w| w[r.start + j] as f64));
        // The chunk's points grouped by code, each group in point order (a counting sort).
        let mut start = vec![0u32; k + 1];
        cs.iter().for_each(|&c| start[c as usize + 1] += 1);
        (0..k).for_each(|c| start[c + 1] += start[c]);
        let mut order = vec![0u32; cs.len()];
        let mut next = start.clone();
        for (j, &c) in cs.iter().enumerate() {
            order[next[c as usize] as usize] = j as u32;
            next[c as usize] += 1;
        }
        for run in order.chunk_by(|&a, &b| cs[a as usize] == cs[b as usize]) {
            present.push(cs[run[0] as usize]);
            let (mut s, mut wt) = (vec![0f64; d], 0f64);
            for &j in run {
                let (j, wi) = (j as usize, w(j as usize));
                for (a, &v) in s.iter_mut().zip(&x[(r.start + j) * d..(r.start + j + 1) * d]) {
                    *a += wi * v as f64;
                }
                wt += wi;
            }
            sums.extend_from_slice(&s);
            weight.push(wt);
        }
        *inertia = (0..cs.len()).fold(0.0, |a, j| a + w(j) * point_cost(metric, dists[r.start + j]));
        Ok(())
    })?;
    for SparseSums { present, sums, weight, inertia } in &parts {
        for ((&c, s), &wt) in present.iter().zip(sums.chunks_exact(d)).zip(weight) {
            let c = c as usize;
            total.coords[c * d..(c + 1) * d].iter_mut().zip(s).for_each(|(a, b)| *a += b);
            total.weight[c] += wt;
        }
        total.inertia += inertia;
    }
    Ok(total)
}

fn count_members(codes: &[u32], k: usize) -> Vec<u64> {
    let mut members = vec![0u64; k];
    codes.iter().for_each(|&c| members[c as usize] += 1);
    members
}

/// A re-seeding candidate: a point far from its centroid.
#[derive(Clone, Debug)]
pub struct Far {
    /// Its cost (squared L2 or `1 - cos`), > 0.
    pub cost: f64,
    /// Its row (in the shard, or globally once the driver offsets it).
    pub index: usize,
    /// Its cluster.
    pub code: u32,
    /// Its weight (> 0).
    pub weight: f64,
    /// Its coordinates.
    pub point: Vec<f32>,
}

/// The `m` points with the largest cost (and non-zero weight), largest first, lowest index
/// on ties: the re-seeding candidates.
#[allow(clippy::too_many_arguments)]
fn far_points(x: &[f32], d: usize, weights: Option<&[f32]>, codes: &[u32], dists: &[f32], metric: Metric, m: usize) -> Vec<Far> {
    if m == 0 {
        return Vec::new();
    }
    let w = |i: usize| weights.map_or(1.0, |w| w[i] as f64);
    let mut far: Vec<usize> = (0..codes.len()).filter(|&i| w(i) > 0.0 && point_cost(metric, dists[i]) > 0.0).collect();
    let key = |&i: &usize| (std::cmp::Reverse(point_cost(metric, dists[i]).to_bits()), i);
    let m = m.min(far.len());
    if m < far.len() {
        far.select_nth_unstable_by_key(m, key);
        far.truncate(m);
    }
    far.sort_unstable_by_key(key);
    far.into_iter()
        .map(|i| Far { cost: point_cost(metric, dists[i]), index: i, code: codes[i], weight: w(i), point: x[i * d..(i + 1) * d].to_vec() })
        .collect()
}

/// The partial result of one shard of points: what the driver needs to finish an iteration.
#[derive(Clone, Debug)]
pub struct Partial {
    /// Per chunk of `rows` points, in order: `k * d` coordinate sums.
    pub coords: Vec<f64>,
    /// Per chunk: `k` cluster weights.
    pub weight: Vec<f64>,
    /// Per chunk: the inertia.
    pub inertia: Vec<f64>,
    /// Points per cluster.
    pub members: Vec<u64>,
    /// Up to as many re-seeding candidates as this shard has empty clusters, best first (see
    /// [`far_points`]).
    pub far: Vec<Far>,
    /// Nearest codeword of every point.
    pub codes: Vec<u32>,
}

/// Assignment and per-chunk sums of one shard (`rows` points per chunk, counted from the
/// shard's first row). Summing the chunks of the shards in order and calling [`lloyd_finish`]
/// gives exactly [`lloyd_iteration`] on the concatenated points when every shard but the last
/// holds a multiple of `rows = chunk_rows(n_total, k, d)` points.
pub fn lloyd_partial(
    x: &[f32],
    d: usize,
    weights: Option<&[f32]>,
    centroids: &[f32],
    metric: Metric,
    rows: usize,
    accel: Option<&mut Accel>,
) -> Result<Partial> {
    let cb = prepare(centroids, d, metric)?;
    let (n, k) = (x.len() / d, cb.k);
    check_weights(weights, n)?;
    if rows == 0 {
        return Err(invalid!("rows per chunk must be positive"));
    }
    let (codes, dists) = match accel {
        Some(a) => a.assign(&cb, x)?,
        None => assign_all(&cb, x)?,
    };
    let parts = chunk_sums(x, d, weights, &codes, &dists, metric, k, rows)?;
    let mut p = Partial {
        coords: Vec::new(),
        weight: Vec::new(),
        inertia: Vec::new(),
        members: count_members(&codes, k),
        far: Vec::new(),
        codes: Vec::new(),
    };
    for s in parts {
        p.coords.extend_from_slice(&s.coords);
        p.weight.extend_from_slice(&s.weight);
        p.inertia.push(s.inertia);
    }
    // A cluster empty over all shards is empty in this one, so this shard's candidates are
    // needed only when it has empty clusters, and then at most as many as it has: the driver's
    // merged best-first list keeps the same head (and a shard without empties costs nothing).
    let locally_empty = p.members.iter().filter(|&&m| m == 0).count();
    p.far = far_points(x, d, weights, &codes, &dists, metric, locally_empty);
    p.codes = codes;
    Ok(p)
}

/// The end of an iteration: centroids, cluster weights (before re-seeding), re-seeds, shift.
#[derive(Clone, Debug)]
pub struct Finish {
    pub centroids: Vec<f32>,
    pub cluster_weight: Vec<f64>,
    pub reseeded: usize,
    pub shift: f64,
}

/// Finishes an iteration from the total sums: re-seeds the empty clusters on `far` (the
/// candidates, best first), moves each centroid to its mean (unit length for cosine).
pub fn lloyd_finish_raw(
    centroids: &[f32],
    d: usize,
    metric: Metric,
    coords: Vec<f64>,
    weight: Vec<f64>,
    members: &[u64],
    far: &[Far],
) -> Result<Finish> {
    let cb = prepare(centroids, d, metric)?;
    let k = cb.k;
    if coords.len() != k * d || weight.len() != k || members.len() != k {
        return Err(Error::Shape(format!("sums for k={k}, d={d} expected")));
    }
    if far.iter().any(|f| f.point.len() != d || f.code as usize >= k) {
        return Err(Error::Shape("re-seeding candidates do not match the centroids".into()));
    }
    lloyd_finish(&cb, metric, coords, weight, members, far)
}

fn lloyd_finish(cb: &Codebook, metric: Metric, coords: Vec<f64>, weight: Vec<f64>, members: &[u64], far: &[Far]) -> Result<Finish> {
    let (k, d) = (cb.k, cb.d);
    let mut total = Sums { coords, weight, inertia: 0.0 };
    let cluster_weight = total.weight.clone();
    let reseeded = reseed_empty(d, far, members, &mut total);
    let mut new = cb.data.clone();
    for j in 0..k {
        if total.weight[j] > 0.0 {
            let inv = 1.0 / total.weight[j];
            for (c, s) in new[j * d..(j + 1) * d].iter_mut().zip(&total.coords[j * d..(j + 1) * d]) {
                *c = (s * inv) as f32;
            }
        }
    }
    if metric == Metric::Cosine {
        new.chunks_exact_mut(d).for_each(super::assign::normalize);
    }
    let shift = new.iter().zip(&cb.data).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    Ok(Finish { centroids: new, cluster_weight, reseeded, shift })
}

/// Re-seeds every empty cluster (in index order) on the next of the `far` candidates (the
/// points farthest from their own centroid, largest cost first, lowest index on ties), moving
/// that point's weight out of its old cluster, as scikit-learn does. Returns how many were
/// re-seeded.
fn reseed_empty(d: usize, far: &[Far], members: &[u64], s: &mut Sums) -> usize {
    let empty: Vec<usize> = (0..s.weight.len()).filter(|&j| s.weight[j] == 0.0).collect();
    if empty.is_empty() {
        return 0;
    }
    let m = empty.len().min(far.len());
    let mut members = members.to_vec();
    for (&j, f) in empty.iter().zip(far) {
        let (old, wi) = (f.code as usize, f.weight);
        for (t, &v) in f.point.iter().enumerate() {
            s.coords[old * d + t] -= wi * v as f64;
            s.coords[j * d + t] = wi * v as f64;
        }
        s.weight[old] -= wi;
        s.weight[j] = wi;
        members[old] = members[old].saturating_sub(1);
        if members[old] == 0 {
            // Exactly empty now (float64 subtraction could leave dust): it keeps its old centroid.
            s.weight[old] = 0.0;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_chunk_sums_are_the_dense_ones_bit_for_bit() {
        let mut rng = super::super::rng::Rng::new(6);
        for (n, d, k, rows, weighted) in
            [(5000, 3, 3000, 512, true), (5000, 3, 3000, 512, false), (777, 8, 900, 100, true), (64, 1, 70, 7, false)]
        {
            let x: Vec<f32> = (0..n * d).map(|_| (rng.uniform() * 20.0 - 10.0) as f32).collect();
            // Codes bunched on a few clusters, so that chunks share some and miss most.
            let codes: Vec<u32> = (0..n).map(|_| ((rng.uniform().powi(3) * k as f64) as u32).min(k as u32 - 1)).collect();
            let dists: Vec<f32> = (0..n).map(|_| rng.uniform() as f32).collect();
            let w: Vec<f32> = (0..n).map(|i| if i % 7 == 0 { 0.0 } else { rng.uniform() as f32 * 3.0 }).collect();
            let w = weighted.then_some(&w[..]);
            let got = total_sums(&x, d, w, &codes, &dists, Metric::L2, k, rows).unwrap();
            let mut want = Sums { coords: vec![0.0; k * d], weight: vec![0.0; k], inertia: 0.0 };
            for p in chunk_sums(&x, d, w, &codes, &dists, Metric::L2, k, rows).unwrap() {
                want.coords.iter_mut().zip(&p.coords).for_each(|(a, b)| *a += b);
                want.weight.iter_mut().zip(&p.weight).for_each(|(a, b)| *a += b);
                want.inertia += p.inertia;
            }
            let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got.coords), bits(&want.coords), "n={n} k={k}");
            assert_eq!(bits(&got.weight), bits(&want.weight));
            assert_eq!(got.inertia.to_bits(), want.inertia.to_bits());
        }
    }

    #[test]
    fn two_clusters_move_to_their_means() {
        let x = [0.0, 0.0, 0.0, 2.0, 10.0, 10.0, 10.0, 12.0];
        let it = lloyd_iteration(&x, 2, None, &[1.0, 1.0, 9.0, 9.0], Metric::L2).unwrap();
        assert_eq!(it.codes, [0, 0, 1, 1]);
        assert_eq!(it.centroids, [0.0, 1.0, 10.0, 11.0]);
        assert_eq!(it.inertia, 2.0 + 2.0 + 2.0 + 10.0);
        assert_eq!(it.reseeded, 0);
    }

    #[test]
    fn an_empty_cluster_takes_the_farthest_point() {
        let x = [0.0, 1.0, 2.0, 100.0];
        let it = lloyd_iteration(&x, 1, None, &[1.0, 500.0], Metric::L2).unwrap();
        // Everything goes to centroid 0; 100 is the farthest and becomes cluster 1.
        assert_eq!(it.reseeded, 1);
        assert_eq!(it.centroids, [1.0, 100.0]);
    }

    #[test]
    fn partial_then_finish_is_one_iteration() {
        let x: Vec<f32> = (0..40).map(|i| ((i * 37 % 23) as f32) - 11.0).collect();
        let c = [0.0, 0.0, 5.0, 5.0, 500.0, 500.0]; // the last centroid is empty: re-seeded
        let it = lloyd_iteration(&x, 2, None, &c, Metric::L2).unwrap();
        let p = lloyd_partial(&x, 2, None, &c, Metric::L2, chunk_rows(20, 3, 2), None).unwrap();
        assert_eq!(p.inertia.len(), 1);
        let f = lloyd_finish_raw(&c, 2, Metric::L2, p.coords, p.weight, &p.members, &p.far[..1]).unwrap();
        assert_eq!((f.centroids, f.reseeded, p.codes), (it.centroids, it.reseeded, it.codes));
        assert_eq!(f.cluster_weight, it.cluster_weight);
        assert!(lloyd_partial(&x, 2, None, &c, Metric::L2, 0, None).is_err());
        assert!(lloyd_finish_raw(&c, 2, Metric::L2, vec![0.0; 5], vec![0.0; 3], &[0; 3], &[]).is_err());
    }

    #[test]
    fn weights_and_bad_input() {
        let x = [0.0, 4.0];
        let it = lloyd_iteration(&x, 1, Some(&[3.0, 1.0]), &[2.0], Metric::L2).unwrap();
        assert_eq!(it.centroids, [1.0]);
        assert!(lloyd_iteration(&x, 1, Some(&[1.0]), &[2.0], Metric::L2).is_err());
        assert!(lloyd_iteration(&x, 1, Some(&[1.0, -1.0]), &[2.0], Metric::L2).is_err());
        assert!(lloyd_iteration(&x, 1, None, &[2.0], Metric::L1).is_err());
    }
}
