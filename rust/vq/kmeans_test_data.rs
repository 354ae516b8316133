//! Test data shared by the k-means acceleration tests (`kmeans_bounds_tests`,
//! `kmeans_filter_tests`): random, clustered and tie-heavy points, and the brute-force oracle.

use super::assign::{assign_batch_scalar, Codebook};
use super::rng::Rng;

pub fn uniform(rng: &mut Rng, n: usize, scale: f64) -> Vec<f32> {
    (0..n).map(|_| ((rng.uniform() * 2.0 - 1.0) * scale) as f32).collect()
}

/// `n` points around `m` centres spread over [-10, 10]^d (spread `s`).
pub fn clustered(rng: &mut Rng, n: usize, d: usize, m: usize, s: f64) -> Vec<f32> {
    let c = uniform(rng, m * d, 10.0);
    (0..n).flat_map(|i| (0..d).map(|t| c[(i * 7 % m) * d + t] + ((rng.uniform() - 0.5) * s) as f32).collect::<Vec<_>>()).collect()
}

/// Small integers: many exact ties.
pub fn ints(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| ((rng.uniform() * 5.0) as i32 - 2) as f32).collect()
}

/// Brute-force codes and distance bits (the scalar oracle).
pub fn brute(cb: &Codebook, x: &[f32]) -> (Vec<u32>, Vec<u32>) {
    let n = x.len() / cb.d;
    let (mut c, mut d) = (vec![0u32; n], vec![0f32; n]);
    assign_batch_scalar(cb, x, &mut c, Some(&mut d));
    (c, d.iter().map(|v| v.to_bits()).collect())
}
