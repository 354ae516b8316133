//! AVX2 kernels (x86-64 with AVX2, FMA and F16C), bit-identical to [`super::scalar`].
//!
//! Every public function is safe: it asserts that [`Level::Avx2`] is supported (a cached read:
//! the detected level is AVX2 or AVX-512) and then calls an `unsafe` inner function compiled with
//! `#[target_feature(enable = "avx2,fma,f16c")]`. The inner functions reproduce the scalar
//! oracle exactly:
//! * products and sums are separate instructions, never fused (no FMA intrinsic is used, and
//!   Rust never contracts `a * b + c` on its own);
//! * float->byte casts follow [`scalar::cvtt`] (`cvttps2dq`, then the low byte): NaN, infinities
//!   and out-of-range values give `0x8000_0000`, whose low byte is 0. Where the packing
//!   instructions saturate instead of truncating, the comments show why no value can differ;
//! * per-block scalars (`amax / 127`, `1 / d`, the fp16 scales) are the same IEEE operations,
//!   done for eight blocks at once; F16C `vcvtps2ph` with round-to-nearest-even is what the
//!   `half` crate itself uses on CPUs with F16C;
//! * Q8_0's round-half-away-from-zero is `trunc(|p| + 0.49999997)` with `p`'s sign put back
//!   (exact for every float; `avx2_tests` runs every `p` in `-127..=127` through the kernel);
//! * NumPy's tie rules for the sign of a zero extreme (`min`: the last element equal to it wins,
//!   `argmax(abs)`: the first) are applied with compare masks;
//! * the one thing left open is which payload survives when two NaNs meet (Q4_1/Q5_1
//!   dequantization with both scales NaN): Rust leaves that unspecified, for the scalar code too.
//!
//! Large inputs are prefetched in software a few KiB ahead (outputs for writing, where they are
//! floats): on the machines measured that about doubles the speed of data that is not in cache.
//!
//! Lengths are handled like the scalar kernels: blocks are zipped (the whole blocks that fit in
//! both input and output), and the finite flag covers the whole input slice.

use std::arch::x86_64::*;

use super::scalar;
use super::Level;

pub mod assign;
mod dequantize;
mod grids;
mod group;
pub mod hqq;
pub mod kquants_affine;
pub mod kquants_symmetric;
mod nf4;
mod nibbles;
mod quantize;

/// Panics unless this CPU has AVX2, FMA and F16C (the public kernels' soundness guard).
#[inline(always)]
fn require_avx2() {
    assert!(super::supported(Level::Avx2), "AVX2 kernel called on a CPU without AVX2+FMA+F16C");
}

/// Defines a safe public kernel that checks the CPU and calls its `#[target_feature]` twin.
macro_rules! safe_kernel {
    ($(#[$doc:meta])* $name:ident => $inner:path, ($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            require_avx2();
            // SAFETY: `require_avx2` just checked that the CPU supports AVX2, FMA and F16C, the
            // only precondition of the inner function (it keeps its memory accesses within the
            // slices it is given).
            unsafe { $inner($($arg),*) }
        }
    };
}

safe_kernel!(
    /// Q8_0 quantization, identical to [`scalar::quantize_q8_0`].
    quantize_q8_0 => quantize::q8_0, (src: &[f32], dst: &mut [u8]) -> bool
);
safe_kernel!(
    /// Q4_0 quantization, identical to [`scalar::quantize_q4_0`].
    quantize_q4_0 => quantize::q4_0, (src: &[f32], dst: &mut [u8]) -> bool
);
safe_kernel!(
    /// Q4_1 quantization, identical to [`scalar::quantize_q4_1`].
    quantize_q4_1 => quantize::q4_1, (src: &[f32], dst: &mut [u8]) -> bool
);
safe_kernel!(
    /// Q5_0 quantization, identical to [`scalar::quantize_q5_0`].
    quantize_q5_0 => quantize::q5_0, (src: &[f32], dst: &mut [u8]) -> bool
);
safe_kernel!(
    /// Q5_1 quantization, identical to [`scalar::quantize_q5_1`].
    quantize_q5_1 => quantize::q5_1, (src: &[f32], dst: &mut [u8]) -> bool
);
safe_kernel!(
    /// Q8_0 dequantization, identical to [`scalar::dequantize_q8_0`].
    dequantize_q8_0 => dequantize::q8_0, (src: &[u8], dst: &mut [f32])
);
safe_kernel!(
    /// Q4_0 dequantization, identical to [`scalar::dequantize_q4_0`].
    dequantize_q4_0 => dequantize::q4_0, (src: &[u8], dst: &mut [f32])
);
safe_kernel!(
    /// Q4_1 dequantization, identical to [`scalar::dequantize_q4_1`].
    dequantize_q4_1 => dequantize::q4_1, (src: &[u8], dst: &mut [f32])
);
safe_kernel!(
    /// Q5_0 dequantization, identical to [`scalar::dequantize_q5_0`].
    dequantize_q5_0 => dequantize::q5_0, (src: &[u8], dst: &mut [f32])
);
safe_kernel!(
    /// Q5_1 dequantization, identical to [`scalar::dequantize_q5_1`].
    dequantize_q5_1 => dequantize::q5_1, (src: &[u8], dst: &mut [f32])
);
safe_kernel!(
    /// Minimum, maximum and all-finite flag of a group, as [`scalar::group_range`] (for finite
    /// input the values are exact; a zero extreme may come back with either sign).
    group_range => group::range, (x: &[f32]) -> (f32, f32, bool)
);
safe_kernel!(
    /// `clamp(round_half_even(x*inv) + zero, lo, hi) as u8`, identical to [`scalar::group_codes`].
    group_codes => group::codes, (x: &[f32], inv: f32, zero: f32, lo: f32, hi: f32, out: &mut [u8])
);
safe_kernel!(
    /// `(code - zero) * scale`, identical to [`scalar::group_values`].
    group_values => group::values, (codes: &[u8], scale: f32, zero: f32, out: &mut [f32])
);

safe_kernel!(
    /// Eight groups' scales, zero points and inverses at a time, identical to [`scalar::grids`].
    grids => grids::grids, (mins: &[f32], maxs: &[f32], p: &super::GridParams, scales: &mut [f32], zeros: &mut [f32], invs: &mut [f32]) -> bool
);
safe_kernel!(
    /// NF4 codes of a block, identical to [`scalar::nf4_codes`].
    nf4_codes => nf4::codes, (x: &[f32], inv: f32, out: &mut [u8])
);
safe_kernel!(
    /// `NF4[code] * scale`, identical to [`scalar::nf4_values`].
    nf4_values => nf4::values, (codes: &[u8], scale: f32, out: &mut [f32])
);
safe_kernel!(
    /// Two codes a byte, identical to [`scalar::pack_nibbles`].
    pack_nibbles => nibbles::pack, (codes: &[u8], out: &mut [u8])
);
safe_kernel!(
    /// Two codes a byte, identical to [`scalar::unpack_nibbles`].
    unpack_nibbles => nibbles::unpack, (packed: &[u8], out: &mut [u8])
);

// ---- helpers shared by the submodules -------------------------------------------------------
// All are `unsafe` because of `#[target_feature]`: callers must run on a CPU with AVX2, FMA and
// F16C. Those taking raw pointers state their extra requirement.

/// Loads 32 consecutive floats.
///
/// # Safety
/// AVX2 must be available and `p..p+32` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load32(p: *const f32) -> [__m256; 4] {
    [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)), _mm256_loadu_ps(p.add(16)), _mm256_loadu_ps(p.add(24))]
}

/// Packs four vectors of 32-bit lanes into 32 bytes in element order with unsigned
/// saturation: lanes in `0..=255` are kept exactly and negative lanes (such as `0x8000_0000`
/// from `cvttps2dq`, whose low byte is 0) become 0. (The kernels produce no other lanes.)
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_u8(q: [__m256i; 4]) -> __m256i {
    let p01 = _mm256_packus_epi32(q[0], q[1]);
    let p23 = _mm256_packus_epi32(q[2], q[3]);
    // dwords now: q0[0..4] q1[0..4] q2[0..4] q3[0..4] | q0[4..8] q1[4..8] q2[4..8] q3[4..8]
    let b = _mm256_packus_epi16(p01, p23);
    _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}
