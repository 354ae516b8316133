//! quantpress: compress AI models on the CPU.
//!
//! Design notes:
//! * This crate is pure Rust. The PyO3 bindings live in `python/` behind the `python` feature and
//!   only convert arguments, release the GIL and map errors; `cargo test` without features proves
//!   that nothing else depends on Python.
//! * Every kernel has a scalar version in [`simd::scalar`] that is the oracle for the SIMD ones;
//!   the level is chosen once per call by [`simd::level`], never per element.
//! * Parallel work is cut into chunks that depend only on the input, each writing its own slice of
//!   the output, so results are bit-identical for any number of threads ([`parallel`]).
//! * Public functions validate lengths and parameters and return [`Error`]; they do not panic on
//!   bad input.

pub mod error;
pub mod pack;
pub mod parallel;
pub mod prune;
pub mod scalar;
mod scratch;
pub mod simd;
pub mod vq;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, Result};
