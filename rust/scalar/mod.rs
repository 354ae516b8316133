//! Scalar quantization: round-to-nearest group quantizers, their MSE / HQQ searching variants
//! and the GGUF block types.

pub mod error_sums;
pub mod gguf_legacy;
pub mod hqq;
pub mod kquants;
pub mod mse;
pub mod rtn;
pub mod search;
