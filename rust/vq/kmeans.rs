//! One Lloyd iteration of k-means: assign every point to its nearest centroid, then move each
//! centroid to the (weighted) mean of its points.
//!
//! The iteration loop, initialisation choice, tolerance and progress reporting live in Python
//! (`quantpress.KMeans`), which calls [`lloyd_iteration`] once per iteration with the GIL
//! released. Determinism: the assignment is per point; the sums are accumulated in float64 per
//! fixed chunk of points (the chunking depends only on n, k and d) and the chunk sums are added
//! in chunk order, so the result is bit-identical on any number of threads.

use super::assign::{assign_into, Codebook};
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
fn chunk_rows(n: usize, k: usize, d: usize) -> usize {
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
pub fn lloyd_iteration(x: &[f32], d: usize, weights: Option<&[f32]>, centroids: &[f32], metric: Metric) -> Result<Iteration> {
    if !matches!(metric, Metric::L2 | Metric::Cosine) {
        return Err(invalid!("k-means supports the 'l2' and 'cosine' metrics, not {:?}", metric.name()));
    }
    let cb = Codebook::new(centroids, d, metric)?;
    let (n, k) = (x.len() / d, cb.k);
    check_weights(weights, n)?;
    let mut codes = vec![0u32; n];
    let mut dists = vec![0f32; n];
    assign_into(&cb, x, &mut codes, Some(&mut dists))?;

    let rows = chunk_rows(n, k, d);
    let mut parts: Vec<Sums> =
        (0..n.div_ceil(rows)).map(|_| Sums { coords: vec![0.0; k * d], weight: vec![0.0; k], inertia: 0.0 }).collect();
    let jobs: Vec<_> = parts.iter_mut().enumerate().collect();
    parallel::try_for_each(jobs, |(i, acc)| {
        let r = i * rows..((i + 1) * rows).min(n);
        let w = weights.map(|w| &w[r.clone()]);
        accumulate(&x[r.start * d..r.end * d], d, w, &codes[r.clone()], &dists[r], metric, acc);
        Ok(())
    })?;
    let mut total = Sums { coords: vec![0.0; k * d], weight: vec![0.0; k], inertia: 0.0 };
    for p in &parts {
        total.coords.iter_mut().zip(&p.coords).for_each(|(a, b)| *a += b);
        total.weight.iter_mut().zip(&p.weight).for_each(|(a, b)| *a += b);
        total.inertia += p.inertia;
    }
    drop(parts);

    let cluster_weight = total.weight.clone();
    let reseeded = reseed_empty(x, d, weights, &codes, &dists, metric, &mut total);
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
    Ok(Iteration { centroids: new, codes, inertia: total.inertia, cluster_weight, reseeded, shift })
}

/// Re-seeds every empty cluster (in index order) on one of the points farthest from their own
/// centroid (largest weighted-nonzero cost first, lowest index on ties), moving that point's
/// weight out of its old cluster, as scikit-learn does. Returns how many were re-seeded.
fn reseed_empty(x: &[f32], d: usize, weights: Option<&[f32]>, codes: &[u32], dists: &[f32], metric: Metric, s: &mut Sums) -> usize {
    let empty: Vec<usize> = (0..s.weight.len()).filter(|&j| s.weight[j] == 0.0).collect();
    if empty.is_empty() {
        return 0;
    }
    let w = |i: usize| weights.map_or(1.0, |w| w[i] as f64);
    let mut far: Vec<usize> = (0..codes.len()).filter(|&i| w(i) > 0.0 && point_cost(metric, dists[i]) > 0.0).collect();
    let key = |&i: &usize| (std::cmp::Reverse(point_cost(metric, dists[i]).to_bits()), i);
    let m = empty.len().min(far.len());
    if m < far.len() {
        far.select_nth_unstable_by_key(m, key);
        far.truncate(m);
    }
    far.sort_unstable_by_key(key);
    let mut members = vec![0usize; s.weight.len()];
    codes.iter().for_each(|&c| members[c as usize] += 1);
    for (&j, &i) in empty.iter().zip(&far) {
        let (old, wi, xi) = (codes[i] as usize, w(i), &x[i * d..(i + 1) * d]);
        for (t, &v) in xi.iter().enumerate() {
            s.coords[old * d + t] -= wi * v as f64;
            s.coords[j * d + t] = wi * v as f64;
        }
        s.weight[old] -= wi;
        s.weight[j] = wi;
        members[old] -= 1;
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
    fn weights_and_bad_input() {
        let x = [0.0, 4.0];
        let it = lloyd_iteration(&x, 1, Some(&[3.0, 1.0]), &[2.0], Metric::L2).unwrap();
        assert_eq!(it.centroids, [1.0]);
        assert!(lloyd_iteration(&x, 1, Some(&[1.0]), &[2.0], Metric::L2).is_err());
        assert!(lloyd_iteration(&x, 1, Some(&[1.0, -1.0]), &[2.0], Metric::L2).is_err());
        assert!(lloyd_iteration(&x, 1, None, &[2.0], Metric::L1).is_err());
    }
}
