//! The "scale + min" searches shared by Q2_K, Q4_K and Q5_K, ported literally from ggml's
//! `ggml-quants.c`: `make_qkx2_quants` / `make_qkx3_quants` (a grid search for the affine
//! scale and minimum of one sub-block), `make_qp_quants` (the weighted quantization of the
//! sub-block scales with importance weights) and the 6-bit scale/min packing of Q4_K/Q5_K.
//!
//! The scalar code does the same float operations in the same order as ggml's C (built without
//! FMA contraction), so its bytes equal ggml's. The sub-block search is the hot loop; the AVX2
//! kernel (`simd::x86_avx2::kquants_affine`) runs eight sub-blocks at once, one per lane, each
//! lane doing exactly the sequence of [`make_qkx`], so every level gives identical bytes.

use super::common::{f16_bytes, f16_value};

/// ggml's `nearest_int` bit trick for any input: for |x| <= 2^22 it rounds half to even; beyond
/// that (or for NaN/inf, which degenerate scales can produce) it gives the same garbage as ggml,
/// and the callers clamp the result.
#[inline(always)]
pub fn nearest_int_any(x: f32) -> i32 {
    let v = x + 12582912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// Parameters of one `make_qkx2_quants`/`make_qkx3_quants` call.
#[derive(Clone, Copy, Debug)]
pub struct Search {
    pub nmax: i32,
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: i32,
    /// Sum of weighted absolute (rather than squared) errors.
    pub use_mad: bool,
}

/// `make_qkx2_quants` (identical to `make_qkx3_quants` when weights are given): the affine
/// codes `l` of `x` under weights `w`, returning `(scale, min)` with `x ≈ scale*l - min`.
pub fn make_qkx(x: &[f32], w: &[f32], p: &Search, l: &mut [u8]) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l[..n].fill(0);
        return (0.0, -min);
    }
    let nmax = p.nmax as f32;
    let mut iscale = nmax / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best = 0.0f32;
    for i in 0..n {
        let q = nearest_int_any(iscale * (x[i] - min)).clamp(0, p.nmax);
        l[i] = q as u8;
        best += w[i] * err(scale * q as f32 + min - x[i], p.use_mad);
    }
    let mut laux = [0u8; 32];
    for is in 0..=p.nstep {
        iscale = (p.rmin + p.rdelta * is as f32 + nmax) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let q = nearest_int_any(iscale * (x[i] - min)).clamp(0, p.nmax);
            laux[i] = q as u8;
            let q = q as f32;
            sum_l += w[i] * q;
            sum_l2 += w[i] * q * q;
            sum_xl += w[i] * q * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur = 0.0f32;
            for i in 0..n {
                cur += w[i] * err(this_scale * laux[i] as f32 + this_min - x[i], p.use_mad);
            }
            if cur < best {
                l[..n].copy_from_slice(&laux[..n]);
                best = cur;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

#[inline(always)]
fn err(diff: f32, use_mad: bool) -> f32 {
    if use_mad {
        diff.abs()
    } else {
        diff * diff
    }
}

/// `make_qp_quants`: codes `l` in `0..=nmax` for the non-negative `x` (sub-block scales or
/// mins) under weights `qw`, returning the scale.
pub fn make_qp_quants(nmax: i32, x: &[f32], l: &mut [u8], qw: &[f32]) -> f32 {
    let n = x.len();
    let max = x.iter().fold(0.0f32, |m, &v| if m > v { m } else { v });
    if max < 1e-15 {
        l[..n].fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / max;
    for i in 0..n {
        l[i] = nearest_int_any(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best = 0.0f32;
    for i in 0..n {
        // ggml keeps L[i] in a uint8_t here: the value reread is the truncated byte.
        let diff = x[i] - scale * l[i] as f32;
        best += qw[i] * diff * diff;
    }
    for is in -4i32..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1 * is as f32 + nmaxf) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for i in 0..n {
            let q = nearest_int_any(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * q as f32;
            mse += qw[i] * diff * diff;
        }
        if mse < best {
            best = mse;
            iscale = iscale_is;
        }
    }
    qp_refine(nmax, iscale, x, l, qw)
}

/// The final pass of `make_qp_quants`: codes at `iscale`, then up to five rounds of
/// per-element moves that raise the fitted scale's explained energy.
fn qp_refine(nmax: i32, iscale: f32, x: &[f32], l: &mut [u8], qw: &[f32]) -> f32 {
    let n = x.len();
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..n {
        let q = nearest_int_any(iscale * x[i]).min(nmax);
        l[i] = q as u8;
        let q = q as f32;
        sumlx += qw[i] * x[i] * q;
        suml2 += qw[i] * q * q;
    }
    for _ in 0..5 {
        let mut changed = false;
        for i in 0..n {
            let w = qw[i];
            let li = l[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int_any(x[i] * sl2 / slx).min(nmax);
                if new_l != l[i] as i32 {
                    let nl = new_l as f32;
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Packs eight 6-bit scales and mins into Q4_K/Q5_K's 12 bytes (read by [`scale_min_k4`]).
pub fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8], out: &mut [u8]) {
    for j in 0..8 {
        let (s, m) = (ls[j], lm[j]);
        if j < 4 {
            out[j] = s;
            out[j + 4] = m;
        } else {
            out[j + 4] = (s & 0xF) | ((m & 0xF) << 4);
            out[j - 4] |= (s >> 4) << 6;
            out[j] |= (m >> 4) << 6;
        }
    }
}

/// ggml's `get_scale_min_k4`: sub-block `j`'s 6-bit scale and min.
#[inline(always)]
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// The pieces of the super-block quantizers that SIMD levels replace.
pub trait AffineOps {
    /// [`make_qkx`] on eight sub-blocks of `x.len() / 8` (16 or 32) values each.
    fn search8(x: &[f32], w: &[f32], p: &Search, l: &mut [u8], scales: &mut [f32; 8], mins: &mut [f32; 8]);
    /// `l[i] = clamp(nearest_int((x[i] + dm) / d), 0, nmax)` (the final requantization).
    fn requant(x: &[f32], d: f32, dm: f32, nmax: i32, l: &mut [u8]);
}

/// The scalar oracle.
pub struct ScalarOps;

impl AffineOps for ScalarOps {
    fn search8(x: &[f32], w: &[f32], p: &Search, l: &mut [u8], scales: &mut [f32; 8], mins: &mut [f32; 8]) {
        let n = x.len() / 8;
        for j in 0..8 {
            let r = j * n..(j + 1) * n;
            (scales[j], mins[j]) = make_qkx(&x[r.clone()], &w[r.clone()], p, &mut l[r]);
        }
    }

    fn requant(x: &[f32], d: f32, dm: f32, nmax: i32, l: &mut [u8]) {
        for (q, &v) in l.iter_mut().zip(x) {
            *q = nearest_int_any((v + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

/// ggml's impl-path weights of one super-block: `qw[i] * sqrt(sigma2 + x[i]^2)` with
/// `sigma2 = factor * sum(x^2) / 256` (factor 2 for Q4_K/Q5_K, 1 for Q2_K).
pub fn importance_weights(x: &[f32], qw: &[f32], factor: f32, out: &mut [f32]) {
    let mut sum_x2 = 0.0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    let sigma2 = factor * sum_x2 / x.len() as f32;
    for ((o, &v), &q) in out.iter_mut().zip(x).zip(qw) {
        *o = q * (sigma2 + v * v).sqrt();
    }
}

/// Sequential sum (ggml's order).
pub fn seq_sum(v: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for &x in v {
        s += x;
    }
    s
}

/// The 16 header bytes (d, dmin, 12 scale bytes) and 256 codes of one Q4_K/Q5_K super-block:
/// ggml's `quantize_row_q{4,5}_K_ref` without importance weights (`search` = `refp`) and
/// `quantize_row_q{4,5}_K_impl` with them (`search` = `impp`).
pub fn quantize_8x32<O: AffineOps>(x: &[f32], qw: Option<&[f32]>, refp: &Search, impp: &Search, head: &mut [u8], l: &mut [u8; 256]) {
    let mut w = [0.0f32; 256];
    let (mut scales, mut mins) = ([0.0f32; 8], [0.0f32; 8]);
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    let (d, dmin) = match qw {
        None => {
            for j in 0..8 {
                let xs = &x[32 * j..32 * j + 32];
                let mut sum_x2 = 0.0f32;
                for &v in xs {
                    sum_x2 += v * v;
                }
                let av_x = (sum_x2 / 32.0).sqrt();
                for (o, &v) in w[32 * j..32 * j + 32].iter_mut().zip(xs) {
                    *o = av_x + v.abs();
                }
            }
            O::search8(x, &w, refp, l, &mut scales, &mut mins);
            let max_scale = scales.iter().fold(0.0f32, |m, &s| if s > m { s } else { m });
            let max_min = mins.iter().fold(0.0f32, |m, &s| if s > m { s } else { m });
            let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
            let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
            for j in 0..8 {
                ls[j] = (nearest_int_any(inv_scale * scales[j]) as u8).min(63);
                lm[j] = (nearest_int_any(inv_min * mins[j]) as u8).min(63);
            }
            (max_scale / 63.0, max_min / 63.0)
        }
        Some(qw) => {
            importance_weights(x, qw, 2.0, &mut w);
            let mut sw = [0.0f32; 8];
            for j in 0..8 {
                sw[j] = seq_sum(&w[32 * j..32 * j + 32]);
            }
            O::search8(x, &w, impp, l, &mut scales, &mut mins);
            let d = make_qp_quants(63, &scales, &mut ls, &sw);
            let m = make_qp_quants(63, &mins, &mut lm, &sw);
            ls.iter_mut().chain(lm.iter_mut()).for_each(|v| *v = (*v).min(63));
            (d, m)
        }
    };
    head[..2].copy_from_slice(&f16_bytes(d));
    head[2..4].copy_from_slice(&f16_bytes(dmin));
    head[4..16].fill(0);
    pack_scale_min_k4(&ls, &lm, &mut head[4..16]);
    let (d, dmin) = (f16_value([head[0], head[1]]), f16_value([head[2], head[3]]));
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &head[4..16]);
        let dj = d * sc as f32;
        if dj == 0.0 {
            continue;
        }
        let r = 32 * j..32 * j + 32;
        O::requant(&x[r.clone()], dj, dmin * m as f32, refp.nmax, &mut l[r]);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{dequantize_into_at, quantize_rows_512 as quantize, KType, Weights};
    use crate::simd::available_levels;

    const TYPES: [KType; 3] = [KType::Q4K, KType::Q5K, KType::Q2K];

    fn rand_vals(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
            })
            .collect()
    }

    /// Awkward inputs, 4 super-blocks each.
    fn cases() -> Vec<(&'static str, Vec<f32>)> {
        let n = 1024;
        let r = rand_vals(1, n);
        let mut outlier = rand_vals(2, n);
        for b in 0..n / 256 {
            outlier[256 * b + 37 * b + 5] = 5000.0 * if b % 2 == 0 { 1.0 } else { -1.0 };
        }
        vec![
            ("random", r.clone()),
            ("zeros", vec![0.0; n]),
            ("negative zeros", vec![-0.0; n]),
            ("constant", vec![0.75; n]),
            ("negative constant", vec![-3.0; n]),
            ("outlier", outlier),
            ("subnormal", r.iter().map(|v| v * 1e-39).collect()),
            ("tiny", r.iter().map(|v| v * 1e-20).collect()),
            ("positive", r.iter().map(|v| v.abs() + 1.0).collect()),
            ("large", r.iter().map(|v| v * 3e4).collect()),
        ]
    }

    #[test]
    fn every_level_matches_scalar_bytes() {
        for t in TYPES {
            for (name, x) in cases() {
                let qw: Vec<f32> = rand_vals(9, x.len()).iter().map(|v| v.abs() * 4.0).collect();
                let col = &qw[..512];
                for w in [Weights::None, Weights::PerValue(&qw), Weights::PerColumn { w: col, row_len: 512 }] {
                    let want = quantize(t, crate::simd::Level::Scalar, &x, w);
                    for level in available_levels() {
                        assert!(quantize(t, level, &x, w) == want, "{} {name} at {level:?}", t.name());
                    }
                }
            }
        }
    }

    #[test]
    fn every_level_matches_scalar_floats() {
        for t in TYPES {
            let junk: Vec<u8> = rand_vals(5, 8 * t.block_bytes()).iter().map(|v| (v.to_bits() >> 7) as u8).collect();
            let mut want = vec![0.0f32; 8 * 256];
            dequantize_into_at(t, crate::simd::Level::Scalar, &junk, &mut want).unwrap();
            for level in available_levels() {
                let mut got = vec![1.0f32; 8 * 256];
                dequantize_into_at(t, level, &junk, &mut got).unwrap();
                let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{} at {level:?}", t.name());
            }
        }
    }

    #[test]
    fn roundtrip_error_is_small() {
        for (t, bound) in [(KType::Q4K, 0.1), (KType::Q5K, 0.06), (KType::Q2K, 0.5)] {
            for (name, x) in cases() {
                let raw = quantize(t, crate::simd::Level::Scalar, &x, Weights::None);
                let mut y = vec![0.0f32; x.len()];
                dequantize_into_at(t, crate::simd::Level::Scalar, &raw, &mut y).unwrap();
                for b in 0..x.len() / 256 {
                    let xs = &x[256 * b..256 * b + 256];
                    let span = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    for (i, (a, v)) in y[256 * b..].iter().zip(xs).enumerate() {
                        assert!(a.is_finite(), "{} {name} block {b}: {a}", t.name());
                        // One outlier flattens the rest of its block: the other mins are off by
                        // up to a step of the min grid (span/63). Below float16's range the
                        // scales round to zero (as in ggml), so every value decodes to 0.
                        let tol = match name {
                            "outlier" => span / 63.0,
                            "tiny" | "subnormal" => span,
                            _ => bound * span,
                        };
                        assert!((a - v).abs() <= tol.max(1e-37), "{} {name} value {i}: {a} vs {v}", t.name());
                    }
                }
            }
        }
    }

    #[test]
    fn scale_min_packing_roundtrips() {
        let ls: [u8; 8] = std::array::from_fn(|j| (j as u8 * 9 + 3) % 64);
        let lm: [u8; 8] = std::array::from_fn(|j| 63 - (j as u8 * 7) % 64);
        let mut b = [0u8; 12];
        super::pack_scale_min_k4(&ls, &lm, &mut b);
        for j in 0..8 {
            assert_eq!(super::scale_min_k4(j, &b), (ls[j], lm[j]));
        }
    }
}
