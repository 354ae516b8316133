//! Scalar quantization: round-to-nearest group quantizers and the GGUF block types.

pub mod gguf_legacy;
pub mod kquants;
pub mod rtn;
