//! IQ4_XS: super-blocks of 256 values in 8 blocks of 32, 4-bit indices into ggml's non-uniform
//! `kvalues_iq4nl` levels, a 6-bit scale per block and a float16 super-block scale (136 bytes).
//! ggml's `quantize_iq4_xs` (`quantize_row_iq4_nl_impl` with super-block 256, block 32, `ntry`
//! 7; weights `x²`, or `qw·sqrt(2·mean(x²) + x²)` with importance weights) and
//! `dequantize_row_iq4_xs`.

use super::common::{f16_bytes, f16_value};
use super::iq4_nl::decode_block;
use super::symmetric_search::{iq4_weights, nint, ops, symmetric_type_kernels, SymOps};
use super::{TypeKernels, QK_K};
use crate::simd::Level;

const BLOCK_BYTES: usize = 136;

symmetric_type_kernels!(dequantize_iq4_xs);

/// Super-blocks go in pairs (16 blocks: one per AVX-512 lane).
fn quantize_with(k: &SymOps, src: &[f32], weights: Option<&[f32]>, dst: &mut [u8]) {
    let n = src.len() / QK_K;
    for p in 0..n.div_ceil(2) {
        let m = (n - 2 * p).min(2);
        let x = &src[2 * p * QK_K..(2 * p + m) * QK_K];
        let mut w = [0f32; 2 * QK_K];
        for b in 0..m {
            let r = b * QK_K..(b + 1) * QK_K;
            iq4_weights(&x[r.clone()], weights.map(|q| &q[(2 * p + b) * QK_K..(2 * p + b + 1) * QK_K]), &mut w[r]);
        }
        let mut scales = [0f32; 16];
        (k.iq4_scales)(x, &w[..m * QK_K], &mut scales[..8 * m]);
        for b in 0..m {
            let out = &mut dst[(2 * p + b) * BLOCK_BYTES..(2 * p + b + 1) * BLOCK_BYTES];
            encode(k, &x[b * QK_K..(b + 1) * QK_K], scales[8 * b..8 * b + 8].try_into().unwrap(), out);
        }
    }
}

/// The super-block part of `quantize_row_iq4_nl_impl`: 6-bit block scales, then the indices.
fn encode(k: &SymOps, x: &[f32], scales: &[f32; 8], out: &mut [u8]) {
    let (mut max_scale, mut amax) = (0f32, 0f32);
    for &s in scales {
        if s.abs() > amax {
            amax = s.abs();
            max_scale = s;
        }
    }
    let d = -max_scale / 32.0;
    out[..2].copy_from_slice(&f16_bytes(d));
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut scales_h = 0u16;
    out[4..8].fill(0);
    for ib in 0..8 {
        let l = nint(id * scales[ib]).clamp(-32, 31);
        let dl = d * l as f32;
        (k.iq4_pack)(&x[32 * ib..32 * ib + 32], if dl != 0.0 { 1.0 / dl } else { 0.0 }, &mut out[8 + 16 * ib..]);
        let l = (l + 32) as u8;
        out[4 + ib / 2] |= (l & 0xF) << (4 * (ib % 2));
        scales_h |= ((l >> 4) as u16) << (2 * ib);
    }
    out[2..4].copy_from_slice(&scales_h.to_le_bytes());
}

/// `dequantize_row_iq4_xs`: `(d·(scale − 32)) · level[index]`.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_value([b[0], b[1]]);
        let sh = u16::from_le_bytes([b[2], b[3]]);
        for ib in 0..8 {
            let ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) as i32 | ((((sh >> (2 * ib)) & 3) as i32) << 4);
            decode_block(&b[8 + 16 * ib..24 + 16 * ib], d * (ls - 32) as f32, &mut y[32 * ib..32 * ib + 32]);
        }
    }
}
