//! IQ4_NL: blocks of 32 values, a float16 scale and 4-bit indices into ggml's non-uniform
//! `kvalues_iq4nl` levels (18 bytes). ggml's `quantize_iq4_nl` (`quantize_row_iq4_nl_impl` with
//! block 32, `ntry` 7; weights `x²`, or `qw·sqrt(2·mean(x²) + x²)` with importance weights) and
//! `dequantize_row_iq4_nl`. Eight or sixteen blocks are searched at once (one per SIMD lane).

use super::common::{f16_bytes, f16_value};
use super::symmetric_search::{iq4_weights, ops, symmetric_type_kernels, SymOps, KVALUES_IQ4NL};
use super::TypeKernels;
use crate::simd::Level;

const BLOCK_BYTES: usize = 18;

symmetric_type_kernels!(dequantize_iq4_nl);

/// Groups of sixteen blocks (one per AVX-512 lane); a short last group is padded with zero
/// blocks to a multiple of eight (scale 0, discarded).
fn quantize_with(k: &SymOps, src: &[f32], weights: Option<&[f32]>, dst: &mut [u8]) {
    const G: usize = 16;
    let n = src.len() / 32 * 32;
    for (g, out) in dst.chunks_mut(G * BLOCK_BYTES).enumerate().take(n.div_ceil(32 * G)) {
        let (a, b) = (32 * G * g, (32 * G * (g + 1)).min(n));
        let mut x = [0f32; 32 * G];
        let mut w = [0f32; 32 * G];
        x[..b - a].copy_from_slice(&src[a..b]);
        for j in 0..(b - a) / 32 {
            let r = 32 * j..32 * j + 32;
            iq4_weights(&x[r.clone()], weights.map(|q| &q[a + r.start..a + r.end]), &mut w[r]);
        }
        let len = (b - a).div_ceil(256) * 256;
        let mut scales = [0f32; G];
        (k.iq4_scales)(&x[..len], &w[..len], &mut scales[..len / 32]);
        for (j, o) in out.chunks_exact_mut(BLOCK_BYTES).enumerate() {
            let d = scales[j];
            o[..2].copy_from_slice(&f16_bytes(d));
            (k.iq4_pack)(&x[32 * j..32 * j + 32], if d != 0.0 { 1.0 / d } else { 0.0 }, &mut o[2..]);
        }
    }
}

/// `dequantize_row_iq4_nl`: `d · level[index]`.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(32)) {
        decode_block(&b[2..18], f16_value([b[0], b[1]]), y);
    }
}

/// 16 bytes of index pairs (low nibble: value `j`, high: `j + 16`) times `d` into 32 floats.
pub fn decode_block(qs: &[u8], d: f32, y: &mut [f32]) {
    for j in 0..16 {
        y[j] = d * KVALUES_IQ4NL[(qs[j] & 0xF) as usize] as f32;
        y[j + 16] = d * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
    }
}
