//! Q5_K: like Q4_K (eight sub-blocks of 32, 6-bit scales and mins, float16 d and dmin) with
//! 5-bit codes: the low nibbles in `qs`, the fifth bits in `qh` (ggml's `block_q5_K`: d, dmin,
//! 12 scale bytes, 32 bytes of high bits, 128 bytes of nibbles). The quantizer is ggml's
//! `quantize_row_q5_K_ref` (no weights) or `quantize_row_q5_K_impl` (importance weights).

use super::affine_search::{quantize_8x32, scale_min_k4, AffineOps, ScalarOps, Search};
use super::common::f16_value;
use super::{TypeKernels, QK_K};
use crate::simd::Level;

/// Bytes per super-block.
pub const BLOCK_BYTES: usize = 176;
/// `make_qkx2_quants(32, 31, …, -0.5, 0.1, 15, false)`.
const REF: Search = Search { nmax: 31, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: false };
/// `make_qkx3_quants(32, 31, …, -0.9, 0.05, 36, false)`.
const IMPL: Search = Search { nmax: 31, rmin: -0.9, rdelta: 0.05, nstep: 36, use_mad: false };

pub fn kernels(level: Level) -> TypeKernels {
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 | Level::Avx512 => {
            use crate::simd::x86_avx2::kquants_affine as k;
            TypeKernels { quantize: quantize::<k::Avx2Ops>, dequantize: k::dequantize_q5_k }
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
        let (qh, ql) = y[16..].split_at_mut(32);
        qh.fill(0);
        for c in 0..4 {
            for k in 0..32 {
                let (l1, l2) = (l[64 * c + k], l[64 * c + k + 32]);
                qh[k] |= ((l1 > 15) as u8) << (2 * c) | ((l2 > 15) as u8) << (2 * c + 1);
                ql[32 * c + k] = (l1 & 0xF) | ((l2 & 0xF) << 4);
            }
        }
    }
}

/// `dequantize_row_q5_K`.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (x, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let (d, min) = (f16_value([x[0], x[1]]), f16_value([x[2], x[3]]));
        let qh = &x[16..48];
        for c in 0..4 {
            let (sc1, m1) = scale_min_k4(2 * c, &x[4..16]);
            let (sc2, m2) = scale_min_k4(2 * c + 1, &x[4..16]);
            let (d1, m1, d2, m2) = (d * sc1 as f32, min * m1 as f32, d * sc2 as f32, min * m2 as f32);
            let q = &x[48 + 32 * c..80 + 32 * c];
            let out = &mut y[64 * c..64 * c + 64];
            for k in 0..32 {
                let h1 = if qh[k] & (1 << (2 * c)) != 0 { 16 } else { 0 };
                let h2 = if qh[k] & (2 << (2 * c)) != 0 { 16 } else { 0 };
                out[k] = d1 * ((q[k] & 0xF) + h1) as f32 - m1;
                out[k + 32] = d2 * ((q[k] >> 4) + h2) as f32 - m2;
            }
        }
    }
}
