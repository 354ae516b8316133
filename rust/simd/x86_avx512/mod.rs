//! AVX-512 kernels (x86-64 with AVX-512 F/BW/VL/DQ as well as AVX2, FMA and F16C), bit-identical
//! to the scalar oracle. Only kernels that gain from 512-bit registers, 32 of them and mask
//! registers live here; every other kernel runs the AVX2 version at this level (the kernel
//! tables map [`Level::Avx512`] to [`super::x86_avx2`]).
//!
//! As in [`super::x86_avx2`], each public function is safe: it asserts that
//! [`super::detected_level`] is [`Level::Avx512`] and then calls its `#[target_feature]` twin.

use super::Level;

pub mod assign;
pub mod kquants_symmetric;

/// Panics unless this CPU has AVX-512 F/BW/VL/DQ (and AVX2, FMA, F16C): the soundness guard of
/// the public kernels.
#[inline(always)]
fn require_avx512() {
    assert!(super::detected_level() == Level::Avx512, "AVX-512 kernel called on a CPU without AVX-512 F/BW/VL/DQ");
}
