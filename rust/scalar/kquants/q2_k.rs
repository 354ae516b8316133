//! Q2_K: super-blocks of 256 values in sixteen sub-blocks of 16, each `x ≈ d·sc·q - dmin·m` with
//! 2-bit codes and 4-bit sub-block scales/mins (ggml's `block_q2_K`: 16 scale bytes `sc | m<<4`,
//! 64 bytes of codes, then d and dmin as float16). The quantizer is ggml's
//! `quantize_row_q2_K_ref` (no weights) or `quantize_row_q2_K_impl` (importance weights).

use super::affine_search::{importance_weights, make_qp_quants, nearest_int_any, seq_sum, AffineOps, ScalarOps, Search};
use super::common::{f16_bytes, f16_value};
use super::{TypeKernels, QK_K};
use crate::simd::Level;

/// Bytes per super-block.
pub const BLOCK_BYTES: usize = 84;
/// `make_qkx2_quants(16, 3, …, -0.5, 0.1, 15, true)`.
const REF: Search = Search { nmax: 3, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: true };
/// `make_qkx3_quants(16, 3, …, -0.9, 0.05, 36, false)`.
const IMPL: Search = Search { nmax: 3, rmin: -0.9, rdelta: 0.05, nstep: 36, use_mad: false };

pub fn kernels(level: Level) -> TypeKernels {
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 | Level::Avx512 => {
            use crate::simd::x86_avx2::kquants_affine as k;
            TypeKernels { quantize: quantize::<k::Avx2Ops>, dequantize: k::dequantize_q2_k }
        }
        _ => TypeKernels { quantize: quantize::<ScalarOps>, dequantize },
    }
}

/// Quantizes whole super-blocks of `src` (with one importance weight per value, if given).
#[allow(clippy::needless_range_loop)]
pub fn quantize<O: AffineOps>(src: &[f32], weights: Option<&[f32]>, dst: &mut [u8]) {
    let mut l = [0u8; QK_K];
    for (i, (x, y)) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(BLOCK_BYTES)).enumerate() {
        let qw = weights.map(|w| &w[i * QK_K..(i + 1) * QK_K]);
        header::<O>(x, qw, y, &mut l);
        let (d, dmin) = (f16_value([y[80], y[81]]), f16_value([y[82], y[83]]));
        for j in 0..16 {
            let dj = d * (y[j] & 0xF) as f32;
            if dj == 0.0 {
                continue;
            }
            let r = 16 * j..16 * j + 16;
            O::requant(&x[r.clone()], dj, dmin * (y[j] >> 4) as f32, 3, &mut l[r]);
        }
        for h in 0..2 {
            for k in 0..32 {
                let b = 128 * h + k;
                y[16 + 32 * h + k] = l[b] | (l[b + 32] << 2) | (l[b + 64] << 4) | (l[b + 96] << 6);
            }
        }
    }
}

/// The 16 scale bytes and d, dmin of one super-block, and the search's codes in `l`.
fn header<O: AffineOps>(x: &[f32], qw: Option<&[f32]>, y: &mut [u8], l: &mut [u8; QK_K]) {
    let mut w = [0.0f32; QK_K];
    let (mut scales, mut mins) = ([0.0f32; 16], [0.0f32; 16]);
    let p = if qw.is_some() { &IMPL } else { &REF };
    match qw {
        Some(qw) => importance_weights(x, qw, 1.0, &mut w),
        None => w.iter_mut().zip(x).for_each(|(o, v)| *o = v.abs()),
    }
    for h in 0..2 {
        let r = 128 * h..128 * h + 128;
        let (s, m) = (&mut [0.0f32; 8], &mut [0.0f32; 8]);
        O::search8(&x[r.clone()], &w[r.clone()], p, &mut l[r], s, m);
        scales[8 * h..8 * h + 8].copy_from_slice(s);
        mins[8 * h..8 * h + 8].copy_from_slice(m);
    }
    let (d, dmin) = match qw {
        None => (quantize_ref_scales(&scales, &mut y[..16], 0), quantize_ref_scales(&mins, &mut y[..16], 4)),
        Some(_) => {
            let sw: [f32; 16] = std::array::from_fn(|j| seq_sum(&w[16 * j..16 * j + 16]));
            let (mut ls, mut lm) = ([0u8; 16], [0u8; 16]);
            let d = make_qp_quants(15, &scales, &mut ls, &sw);
            let m = make_qp_quants(15, &mins, &mut lm, &sw);
            for j in 0..16 {
                y[j] = ls[j] | (lm[j] << 4);
            }
            (d, m)
        }
    };
    y[80..82].copy_from_slice(&f16_bytes(d));
    y[82..84].copy_from_slice(&f16_bytes(dmin));
}

/// `quantize_row_q2_K_ref`'s 4-bit quantization of the scales (`shift` 0) or mins (`shift` 4)
/// relative to their maximum; returns the super-block factor (before float16 rounding).
fn quantize_ref_scales(v: &[f32; 16], out: &mut [u8], shift: u32) -> f32 {
    let max = v.iter().fold(0.0f32, |m, &s| if s > m { s } else { m });
    if max > 0.0 {
        let iscale = 15.0 / max;
        for j in 0..16 {
            let q = nearest_int_any(iscale * v[j]);
            out[j] = if shift == 0 { q as u8 } else { out[j] | (q << 4) as u8 };
        }
        max / 15.0
    } else {
        if shift == 0 {
            out[..16].fill(0);
        }
        0.0
    }
}

/// `dequantize_row_q2_K`.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (x, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let (d, min) = (f16_value([x[80], x[81]]), f16_value([x[82], x[83]]));
        for h in 0..2 {
            let q = &x[16 + 32 * h..48 + 32 * h];
            for j in 0..4 {
                for k in 0..2 {
                    let sc = x[8 * h + 2 * j + k];
                    let (dl, ml) = (d * (sc & 0xF) as f32, min * (sc >> 4) as f32);
                    let out = &mut y[128 * h + 32 * j + 16 * k..][..16];
                    for (i, o) in out.iter_mut().enumerate() {
                        *o = dl * ((q[16 * k + i] >> (2 * j)) & 3) as f32 - ml;
                    }
                }
            }
        }
    }
}
