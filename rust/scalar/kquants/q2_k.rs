//! Placeholder: replaced by the type's implementation.

use super::TypeKernels;
use crate::simd::Level;

pub fn kernels(_level: Level) -> TypeKernels {
    unimplemented!("not yet implemented")
}
