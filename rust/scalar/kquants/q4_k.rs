//! Q4_K: super-blocks of 256 values in eight sub-blocks of 32, each `x ≈ d·sc·q - dmin·m` with
//! 4-bit codes `q` and 6-bit sub-block scales/mins `sc`, `m` (ggml's `block_q4_K`: d, dmin as
//! float16, 12 bytes of packed scales, 128 bytes of nibbles). The quantizer is ggml's
//! `quantize_row_q4_K_ref` (no weights) or `quantize_row_q4_K_impl` (importance weights).

use super::affine_search::{quantize_8x32, scale_min_k4, AffineOps, ScalarOps, Search};
use super::common::f16_value;
use super::{TypeKernels, QK_K};
use crate::simd::Level;

/// Bytes per super-block.
pub const BLOCK_BYTES: usize = 144;
/// `make_qkx2_quants(32, 15, …, -1, 0.1, 20, false)`.
const REF: Search = Search { nmax: 15, rmin: -1.0, rdelta: 0.1, nstep: 20, use_mad: false };
/// `make_qkx3_quants(32, 15, …, -0.9, 0.05, 36, false)`.
const IMPL: Search = Search { nmax: 15, rmin: -0.9, rdelta: 0.05, nstep: 36, use_mad: false };

pub fn kernels(level: Level) -> TypeKernels {
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 | Level::Avx512 => {
            use crate::simd::x86_avx2::kquants_affine as k;
            TypeKernels { quantize: quantize::<k::Avx2Ops>, dequantize: k::dequantize_q4_k }
        }
        _ => TypeKernels { quantize: quantize::<ScalarOps>, dequantize },
    }
}

/// Quantizes whole super-blocks of `src` (with one importance weight per value, if given).
pub fn quantize<O: AffineOps>(src: &[f32], weights: Option<&[f32]>, dst: &mut [u8]) {
    let mut l = [0u8; QK_K];
    for (i, (x, y)) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(BLOCK_BYTES)).enumerate() {
        let qw = weights.map(|w| &w[i * QK_K..(i + 1) * QK_K]);
        quantize_8x32::<O>(x, qw, &REF, &IMPL, &mut y[..16], &mut l);
        for (c, q) in y[16..].chunks_exact_mut(32).enumerate() {
            for (k, b) in q.iter_mut().enumerate() {
                *b = l[64 * c + k] | (l[64 * c + k + 32] << 4);
            }
        }
    }
}

/// `dequantize_row_q4_K`.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (x, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let (d, min) = (f16_value([x[0], x[1]]), f16_value([x[2], x[3]]));
        for c in 0..4 {
            let (sc1, m1) = scale_min_k4(2 * c, &x[4..16]);
            let (sc2, m2) = scale_min_k4(2 * c + 1, &x[4..16]);
            let (d1, m1, d2, m2) = (d * sc1 as f32, min * m1 as f32, d * sc2 as f32, min * m2 as f32);
            let q = &x[16 + 32 * c..48 + 32 * c];
            let out = &mut y[64 * c..64 * c + 64];
            for k in 0..32 {
                out[k] = d1 * (q[k] & 0xF) as f32 - m1;
                out[k + 32] = d2 * (q[k] >> 4) as f32 - m2;
            }
        }
    }
}
