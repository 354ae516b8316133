//! Q3_K: super-blocks of 256 values in 16 sub-blocks of 16, 3-bit codes (2 low bits plus a
//! high-bit mask), 6-bit sub-block scales and a float16 super-block scale (110 bytes). ggml's
//! `quantize_row_q3_K_ref` (`make_q3_quants` with coordinate descent) and, with importance
//! weights, `quantize_row_q3_K_impl` (`make_qx_quants` with `qw·sqrt(2·mean(x²) + x²)`, the
//! scales themselves quantized by `make_qx_quants` weighted by each sub-block's weight sum);
//! `dequantize_row_q3_K`.

use super::common::{f16_bytes, f16_value};
use super::symmetric_search::{make_qx_quants, nint, ops, symmetric_type_kernels, SymOps, Q3_BATCH};
use super::{TypeKernels, QK_K};
use crate::simd::Level;

const BLOCK_BYTES: usize = 110;
/// Offsets of the parts of a block.
const QS: usize = 32;
const SCALES: usize = 96;
const D: usize = 108;

symmetric_type_kernels!(dequantize_q3_k);

/// Without weights, super-blocks go in batches of [`Q3_BATCH`]: the AVX2 descent runs four
/// chains at once, the AVX-512 one compacts the sub-blocks that need a sequential descent.
fn quantize_with(k: &SymOps, src: &[f32], weights: Option<&[f32]>, dst: &mut [u8]) {
    let n = src.len() / QK_K;
    let mut i = 0;
    while i < n {
        let m = if weights.is_none() { Q3_BATCH.min(n - i) } else { 1 };
        let x = &src[i * QK_K..(i + m) * QK_K];
        let out = &mut dst[i * BLOCK_BYTES..(i + m) * BLOCK_BYTES];
        let mut l = [0i8; Q3_BATCH * QK_K];
        let mut scales = [0f32; 16 * Q3_BATCH];
        let mut codes = [[0u8; 16]; Q3_BATCH];
        match weights {
            None => {
                (k.q3_16)(x, &mut scales[..16 * m], &mut l[..QK_K * m]);
                for b in 0..m {
                    codes[b] = reference_scales(scales[16 * b..16 * (b + 1)].try_into().unwrap(), &mut out[BLOCK_BYTES * b..]);
                }
            }
            Some(w) => {
                let (l, s) = (l[..QK_K].as_mut().try_into().unwrap(), scales[..16].as_mut().try_into().unwrap());
                codes[0] = weighted_scales(k, x, &w[i * QK_K..(i + 1) * QK_K], l, s, out)
            }
        }
        for b in 0..m {
            let lb = l[QK_K * b..QK_K * (b + 1)].try_into().unwrap();
            finish(k, &x[QK_K * b..QK_K * (b + 1)], lb, &codes[b], &mut out[BLOCK_BYTES * b..BLOCK_BYTES * (b + 1)]);
        }
        i += m;
    }
}

/// Packs the 6-bit scale codes, requantizes every sub-block against its final scale and packs
/// the codes (`out[..SCALES]`).
fn finish(k: &SymOps, x: &[f32], l: &[i8; QK_K], codes: &[u8; 16], out: &mut [u8]) {
    pack_scales(codes, out);
    let d_all = f16_value([out[D], out[D + 1]]);
    let d: [f32; 16] = std::array::from_fn(|j| d_all * (codes[j] as i32 - 32) as f32);
    (k.q3_pack)(x, &d, l, &mut out[..SCALES]);
}

/// `quantize_row_q3_K_ref`'s scales: `make_q3_quants` per sub-block, 6-bit codes against the
/// largest. Stores the super-block scale; returns the codes.
fn reference_scales(scales: &[f32; 16], out: &mut [u8]) -> [u8; 16] {
    let (mut max_scale, mut amax) = (0f32, 0f32);
    for &s in scales.iter() {
        if s.abs() > amax {
            amax = s.abs();
            max_scale = s;
        }
    }
    let mut codes = [0u8; 16]; // ggml leaves the scale bytes zero for an all-zero super-block
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for (c, &s) in codes.iter_mut().zip(scales) {
            *c = (nint(iscale * s).clamp(-32, 31) + 32) as u8;
        }
        out[D..D + 2].copy_from_slice(&f16_bytes(1.0 / iscale));
    } else {
        out[D..D + 2].copy_from_slice(&f16_bytes(0.0));
    }
    codes
}

/// `quantize_row_q3_K_impl`'s scales: stores the super-block scale, returns the 6-bit codes.
fn weighted_scales(k: &SymOps, x: &[f32], qw: &[f32], l: &mut [i8; QK_K], scales: &mut [f32; 16], out: &mut [u8]) -> [u8; 16] {
    let mut sumx2 = 0f32;
    for &v in x {
        sumx2 += v * v;
    }
    let sigma2 = 2.0 * sumx2 / QK_K as f32;
    let mut weight = [0f32; QK_K];
    let mut sw = [0f32; 16];
    for (j, s) in sw.iter_mut().enumerate() {
        for i in 16 * j..16 * j + 16 {
            weight[i] = qw[i] * (sigma2 + x[i] * x[i]).sqrt();
        }
        *s = weight[16 * j..16 * j + 16].iter().fold(0.0, |a, &w| a + w);
    }
    for h in 0..2 {
        let r = 128 * h..128 * h + 128;
        (k.qx8)(&x[r.clone()], Some(&weight[r.clone()]), 4, &mut scales[8 * h..8 * h + 8], &mut l[r]);
    }
    let mut ls = [0i8; 16];
    let d_block = make_qx_quants(scales, 32, Some(&sw), &mut ls);
    out[D..D + 2].copy_from_slice(&f16_bytes(d_block));
    ls.map(|c| c as u8)
}

/// Packs the 6-bit scale codes: low nibbles of `j` and `j + 8` in byte `j` (0-7), the high bit
/// pairs of `j`, `j + 4`, `j + 8`, `j + 12` in byte `8 + j` (0-3).
fn pack_scales(c: &[u8; 16], out: &mut [u8]) {
    let s = &mut out[SCALES..SCALES + 12];
    for j in 0..8 {
        s[j] = (c[j] & 0xF) | ((c[j + 8] & 0xF) << 4);
    }
    for j in 0..4 {
        s[8 + j] = (c[j] >> 4) | ((c[j + 4] >> 4) << 2) | ((c[j + 8] >> 4) << 4) | ((c[j + 12] >> 4) << 6);
    }
}

/// The signed scale of sub-block `j` (6-bit code − 32).
fn scale_code(b: &[u8], j: usize) -> i32 {
    let s = &b[SCALES..SCALES + 12];
    let lo = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
    (lo | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i32 - 32
}

/// `dequantize_row_q3_K`: `(d·scale) · (low2 − (high ? 0 : 4))`.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d_all = f16_value([b[D], b[D + 1]]);
        for (v, y) in y.iter_mut().enumerate() {
            let (h, jj, i) = (v / 128, v / 32 % 4, v % 32);
            let q = ((b[QS + 32 * h + i] >> (2 * jj)) & 3) as i32;
            let high = (b[i] >> (4 * h + jj)) & 1;
            let dl = d_all * scale_code(b, 8 * h + 2 * jj + i / 16) as f32;
            *y = dl * (q - if high != 0 { 0 } else { 4 }) as f32;
        }
    }
}
