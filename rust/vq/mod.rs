//! Vector quantization: a codebook of `k` vectors of dimension `d`, every input vector replaced
//! by the index of its nearest codeword.
//!
//! * [`assign`]: nearest-codeword search (the kernel everything else stands on).
//! * [`kmeans`]: one Lloyd iteration; [`kmeans_init`]: greedy k-means++ seeding.
//! * [`kmeans1d`]: exact and fast 1-D k-means per row (weight sharing).
//! * [`adc`]: asymmetric-distance search of product-quantizer codes with lookup tables.
//!
//! Vectors are rows of a flat row-major `&[f32]` (`n * d` values); codes are `u32`, narrowed by
//! the caller to the smallest unsigned type that holds `k - 1`.

pub mod adc;
pub mod assign;
#[cfg(test)]
mod assign_tests;
pub mod kmeans;
pub mod kmeans1d;
pub mod kmeans_bounds;
#[cfg(test)]
mod kmeans_bounds_tests;
pub mod kmeans_filter;
mod kmeans_filter_kernels;
#[cfg(test)]
mod kmeans_filter_tests;
pub mod kmeans_init;
#[cfg(test)]
mod kmeans_test_data;
pub mod metric;
pub mod pq_tables;
pub(crate) mod rng;
mod seed_blocks;
mod seed_kernels;

pub use assign::{assign_into, Codebook};
pub use metric::Metric;
