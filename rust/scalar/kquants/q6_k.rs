//! Q6_K: super-blocks of 256 values in 16 sub-blocks of 16, 6-bit codes, an int8 scale per
//! sub-block and a float16 super-block scale (210 bytes). ggml's `quantize_row_q6_K_ref`
//! (`make_qx_quants` with nmax 32, weights x²) and, with importance weights,
//! `quantize_row_q6_K_impl` (the weights used as they are); `dequantize_row_q6_K`.

use super::common::{f16_bytes, f16_value};
use super::symmetric_search::{ops, symmetric_type_kernels, SymOps, GROUP_MAX_EPS};
use super::{TypeKernels, QK_K};
use crate::simd::Level;

const BLOCK_BYTES: usize = 210;

symmetric_type_kernels!(dequantize_q6_k);

fn quantize_with(k: &SymOps, src: &[f32], weights: Option<&[f32]>, dst: &mut [u8]) {
    for (i, (x, out)) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(BLOCK_BYTES)).enumerate() {
        let qw = weights.map(|w| &w[i * QK_K..(i + 1) * QK_K]);
        quantize_block(k, x, qw, out.try_into().unwrap());
    }
}

fn quantize_block(k: &SymOps, x: &[f32], qw: Option<&[f32]>, out: &mut [u8; BLOCK_BYTES]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    for h in 0..2 {
        let r = 128 * h..128 * (h + 1);
        (k.qx8)(&x[r.clone()], qw.map(|q| &q[r.clone()]), 32, &mut scales[8 * h..8 * h + 8], &mut l[r]);
    }
    let (mut max_scale, mut max_abs) = (0f32, 0f32);
    for &s in &scales {
        if s.abs() > max_abs {
            max_abs = s.abs();
            max_scale = s;
        }
    }
    out.fill(0);
    if max_abs < GROUP_MAX_EPS {
        return;
    }
    let iscale = -128.0 / max_scale;
    out[208..210].copy_from_slice(&f16_bytes(1.0 / iscale));
    let d_all = f16_value([out[208], out[209]]);
    for j in 0..16 {
        let sc = super::symmetric_search::nint(iscale * scales[j]).min(127) as i8;
        out[192 + j] = sc as u8;
        let d = d_all * sc as f32;
        if d != 0.0 {
            (k.requant)(&x[16 * j..16 * j + 16], d, 32, &mut l[16 * j..16 * j + 16]);
        }
    }
    pack(&l, out);
}

/// ggml's layout: low nibbles of values `l` and `l+64` share a byte, high 2-bit pairs of four
/// values a quarter apart share a byte.
fn pack(l: &[i8; QK_K], out: &mut [u8; BLOCK_BYTES]) {
    let (ql, rest) = out.split_at_mut(128);
    let qh = &mut rest[..64];
    let l = l.map(|v| v as u8);
    for half in 0..2 {
        let (j, ql, qh) = (128 * half, &mut ql[64 * half..], &mut qh[32 * half..]);
        for i in 0..32 {
            let (a, b, c, d) = (l[j + i], l[j + i + 32], l[j + i + 64], l[j + i + 96]);
            ql[i] = (a & 0xF) | ((c & 0xF) << 4);
            ql[i + 32] = (b & 0xF) | ((d & 0xF) << 4);
            qh[i] = (a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((d >> 4) << 6);
        }
    }
}

/// `dequantize_row_q6_K`: `(d·scale)·(code − 32)`.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_value([b[208], b[209]]);
        for half in 0..2 {
            let (ql, qh, y) = (&b[64 * half..], &b[128 + 32 * half..], &mut y[128 * half..]);
            for i in 0..32 {
                let q = [
                    (ql[i] & 0xF) | ((qh[i] & 3) << 4),
                    (ql[i + 32] & 0xF) | (((qh[i] >> 2) & 3) << 4),
                    (ql[i] >> 4) | (((qh[i] >> 4) & 3) << 4),
                    (ql[i + 32] >> 4) | (((qh[i] >> 6) & 3) << 4),
                ];
                for (k, &q) in q.iter().enumerate() {
                    let sc = b[192 + 8 * half + i / 16 + 2 * k] as i8;
                    y[i + 32 * k] = d * sc as f32 * (q as i32 - 32) as f32;
                }
            }
        }
    }
}
