//! Scale searches of the symmetric and non-uniform types (Q6_K, Q3_K, IQ4_NL, IQ4_XS), written
//! exactly as ggml's `make_qx_quants`, `make_q3_quants` and the block search of
//! `quantize_row_iq4_nl_impl`, with the same float operations in the same order.
//!
//! These scalar versions are the oracle of the AVX2 kernels in
//! `simd::x86_avx2::kquants_symmetric` and the AVX-512 ones in
//! `simd::x86_avx512::kquants_symmetric`, which run eight or sixteen sub-blocks at once, one per
//! lane, and so keep ggml's sequential order of every sum: the bytes equal ggml's.

use crate::simd::Level;

/// ggml's `GROUP_MAX_EPS`: a group whose largest magnitude is below this is all zero.
pub const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `kvalues_iq4nl`: the sixteen IQ4 levels.
pub const KVALUES_IQ4NL: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// ggml's `nearest_int` (the 1.5·2^23 trick) without a range assertion: pathological inputs
/// (a NaN scale from an overflowing float16) give the same bits as the C code.
#[inline(always)]
pub fn nint(x: f32) -> i32 {
    let v = x + 12582912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// Value and magnitude of the first element of largest magnitude (`max` keeps its sign).
#[inline(always)]
pub(crate) fn signed_max(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// `make_qx_quants(n, nmax, x, L, rmse_type = 1, qw)`: codes `L` in `0..2*nmax` and the scale.
/// Without `qw` the weights are `x²`.
#[allow(clippy::needless_range_loop)] // one index walks x and the weights, in ggml's order
pub fn make_qx_quants(x: &[f32], nmax: i32, qw: Option<&[f32]>, l_out: &mut [i8]) -> f32 {
    let (max, amax) = signed_max(x);
    if amax < GROUP_MAX_EPS {
        l_out.iter_mut().for_each(|l| *l = 0);
        return 0.0;
    }
    let w = |i: usize| qw.map_or(x[i] * x[i], |q| q[i]);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for i in 0..x.len() {
            let l = nint(iscale * x[i]).clamp(-nmax, nmax - 1) as f32;
            sumlx += w(i) * x[i] * l;
            suml2 += w(i) * l * l;
        }
        (sumlx, suml2)
    };
    let mut best_iscale = -(nmax as f32) / max;
    let (sumlx, suml2) = sums(best_iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            scale = sumlx / suml2;
            best = scale * sumlx;
            best_iscale = iscale;
        }
    }
    for (l, &v) in l_out.iter_mut().zip(x) {
        *l = (nmax + nint(best_iscale * v).clamp(-nmax, nmax - 1)) as i8;
    }
    scale
}

/// `make_q3_quants(n, nmax, x, L, do_rmse = true)`: codes `L` in `0..2*nmax` and the scale,
/// refined by ggml's up to five passes of per-value coordinate descent.
pub fn make_q3_quants(x: &[f32], nmax: i32, l_out: &mut [i8]) -> f32 {
    let (max, amax) = signed_max(x);
    if amax < GROUP_MAX_EPS {
        l_out.iter_mut().for_each(|l| *l = 0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (l, &v) in l_out.iter_mut().zip(x) {
        let q = nint(iscale * v).clamp(-nmax, nmax - 1);
        *l = q as i8;
        let w = v * v;
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (l, &v) in l_out.iter_mut().zip(x) {
            let w = v * v;
            let old = *l as f32;
            let mut slx = sumlx - w * v * old;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * old * old;
                let new_l = nint(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != *l as i32 {
                    slx += w * v * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *l = new_l as i8;
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
    l_out.iter_mut().for_each(|l| *l += nmax as i8);
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// ggml's `best_index_int8(16, kvalues_iq4nl, x)`: the index of the nearest IQ4 level (the upper
/// one on a tie of the two rounded distances).
#[inline]
pub fn best_index_iq4(x: f32) -> u8 {
    let val = &KVALUES_IQ4NL;
    if x <= val[0] as f32 {
        return 0;
    }
    if x >= val[15] as f32 {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < val[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (val[mu - 1] as f32) < val[mu] as f32 - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// The scale search of one block of `quantize_row_iq4_nl_impl` (`ntry` = 7): the block's scale,
/// 0 for an all-zero block. `weight` holds the block's per-value weights.
pub fn iq4_block_scale(xb: &[f32], weight: &[f32]) -> f32 {
    const NTRY: i32 = 7;
    let (max, amax) = signed_max(xb);
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let v0 = KVALUES_IQ4NL[0] as f32;
    let sums = |id: f32| {
        let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
        for (&x, &w) in xb.iter().zip(weight) {
            let q = KVALUES_IQ4NL[best_index_iq4(id * x) as usize] as f32;
            sumqx += w * q * x;
            sumq2 += w * q * q;
        }
        (sumqx, sumq2)
    };
    let d0 = -max / v0;
    let (sumqx, sumq2) = sums(1.0 / d0);
    let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let id = (itry as f32 + v0) / max;
        let (sumqx, sumq2) = sums(id);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// ggml's IQ4 weights of one super-block: `qw·sqrt(sigma2 + x²)` with `sigma2 = 2·Σx²/n`, or
/// `x²` without importance weights.
pub fn iq4_weights(x: &[f32], qw: Option<&[f32]>, out: &mut [f32]) {
    match qw {
        Some(qw) => {
            let mut sigma2 = 0.0f32;
            for &v in x {
                sigma2 += v * v;
            }
            sigma2 *= 2.0 / x.len() as f32;
            for ((o, &v), &q) in out.iter_mut().zip(x).zip(qw) {
                *o = q * (sigma2 + v * v).sqrt();
            }
        }
        None => out.iter_mut().zip(x).for_each(|(o, &v)| *o = v * v),
    }
}

/// Defines a type's `kernels(level)` from its `quantize_with(&SymOps, src, weights, dst)`, its
/// scalar `dequantize` and the name of its AVX2 dequantizer in `x86_avx2::kquants_symmetric`.
macro_rules! symmetric_type_kernels {
    ($avx2_dequantize:ident) => {
        pub fn kernels(level: Level) -> TypeKernels {
            match level {
                #[cfg(target_arch = "x86_64")]
                Level::Avx2 => TypeKernels {
                    quantize: |s, w, d| quantize_with(ops(Level::Avx2), s, w, d),
                    dequantize: crate::simd::x86_avx2::kquants_symmetric::$avx2_dequantize,
                },
                #[cfg(target_arch = "x86_64")]
                Level::Avx512 => TypeKernels {
                    quantize: |s, w, d| quantize_with(ops(Level::Avx512), s, w, d),
                    dequantize: crate::simd::x86_avx2::kquants_symmetric::$avx2_dequantize,
                },
                _ => TypeKernels { quantize: |s, w, d| quantize_with(ops(Level::Scalar), s, w, d), dequantize },
            }
        }
    };
}
pub(crate) use symmetric_type_kernels;

/// The searches at one SIMD level (each SIMD kernel is bit-identical to its scalar twin here).
#[allow(clippy::type_complexity)] // plain fn-pointer fields, documented one by one
pub struct SymOps {
    /// `make_qx_quants` on 8 sub-blocks of 16 (128 values): scales and codes.
    pub qx8: fn(x: &[f32], qw: Option<&[f32]>, nmax: i32, scales: &mut [f32], l: &mut [i8]),
    /// `make_q3_quants(16, 4, .., true)` on the 16 sub-blocks of 16 of each super-block in `x`
    /// (`x.len() / 256` of them, any number; kernels gain from up to [`Q3_BATCH`]): scales and
    /// codes.
    pub q3_16: fn(x: &[f32], scales: &mut [f32], l: &mut [i8]),
    /// `L = nmax + clamp(nearest_int(x / d), -nmax, nmax - 1)` for 16 values.
    pub requant: fn(x: &[f32], d: f32, nmax: i32, l: &mut [i8]),
    /// [`iq4_block_scale`] of `x.len() / 32` blocks of 32 (a multiple of 8 blocks; kernels gain
    /// from 16), their weights `w`: the scales.
    pub iq4_scales: fn(x: &[f32], w: &[f32], scales: &mut [f32]),
    /// `best_index_iq4(id * x)` for 32 values, packed as IQ4 stores them: byte `i` holds the
    /// index of value `i` (low nibble) and of value `i + 16` (high nibble), 16 bytes.
    pub iq4_pack: fn(x: &[f32], id: f32, out: &mut [u8]),
    /// Q3_K's final codes of one super-block, packed: sub-block `j` requantized against
    /// `d[j]` ([`requant`] with `nmax` 4) where `d[j] != 0`, else its search codes `l`; then the
    /// 32 bytes of high-bit masks and 64 bytes of low bit pairs (`out[..96]`).
    pub q3_pack: fn(x: &[f32], d: &[f32; 16], l: &[i8], out: &mut [u8]),
}

static SCALAR: SymOps = SymOps { qx8, q3_16, requant, iq4_scales, iq4_pack, q3_pack };

/// Super-blocks per [`SymOps::q3_16`] call that the kernels gain from (a larger pool of
/// sub-blocks to compact the slow ones from).
pub const Q3_BATCH: usize = 32;

/// The search kernels of `level` (scalar for a level without its own).
pub fn ops(level: Level) -> &'static SymOps {
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => &crate::simd::x86_avx2::kquants_symmetric::OPS,
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => &crate::simd::x86_avx512::kquants_symmetric::OPS,
        _ => &SCALAR,
    }
}

#[allow(clippy::needless_range_loop)] // j picks the same sub-block of four slices
pub fn qx8(x: &[f32], qw: Option<&[f32]>, nmax: i32, scales: &mut [f32], l: &mut [i8]) {
    for j in 0..8 {
        let r = 16 * j..16 * j + 16;
        scales[j] = make_qx_quants(&x[r.clone()], nmax, qw.map(|q| &q[r.clone()]), &mut l[r]);
    }
}

#[allow(clippy::needless_range_loop)] // j picks the same sub-block of three slices
pub fn q3_16(x: &[f32], scales: &mut [f32], l: &mut [i8]) {
    for j in 0..x.len() / 16 {
        let r = 16 * j..16 * j + 16;
        scales[j] = make_q3_quants(&x[r.clone()], 4, &mut l[r]);
    }
}

pub fn requant(x: &[f32], d: f32, nmax: i32, l: &mut [i8]) {
    for (o, &v) in l[..16].iter_mut().zip(&x[..16]) {
        *o = (nmax + nint(v / d).clamp(-nmax, nmax - 1)) as i8;
    }
}

pub fn q3_pack(x: &[f32], d: &[f32; 16], l: &[i8], out: &mut [u8]) {
    let mut c = [0u8; 256];
    for (j, &dj) in d.iter().enumerate() {
        let r = 16 * j..16 * j + 16;
        let mut q = [0i8; 16];
        if dj != 0.0 {
            requant(&x[r.clone()], dj, 4, &mut q);
        } else {
            q.copy_from_slice(&l[r.clone()]);
        }
        for (o, v) in c[r].iter_mut().zip(q) {
            *o = v as u8;
        }
    }
    // The high bit of value `j` goes to bit `j / 32` of mask byte `j % 32`; the low two bits of
    // values `l, l+32, l+64, l+96` of each half share a byte (codes are 0..8, so `c - 4` for the
    // high ones is `c & 3`).
    for m in 0..32 {
        out[m] = (0..8).fold(0u8, |h, b| h | (((c[32 * b + m] >> 2) & 1) << b));
    }
    for h in 0..2 {
        for i in 0..32 {
            let j = 128 * h + i;
            out[32 + 32 * h + i] = (c[j] & 3) | ((c[j + 32] & 3) << 2) | ((c[j + 64] & 3) << 4) | ((c[j + 96] & 3) << 6);
        }
    }
}

pub fn iq4_scales(x: &[f32], w: &[f32], scales: &mut [f32]) {
    for j in 0..x.len() / 32 {
        scales[j] = iq4_block_scale(&x[32 * j..32 * j + 32], &w[32 * j..32 * j + 32]);
    }
}

pub fn iq4_pack(x: &[f32], id: f32, out: &mut [u8]) {
    for (i, o) in out[..16].iter_mut().enumerate() {
        *o = best_index_iq4(id * x[i]) | (best_index_iq4(id * x[i + 16]) << 4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The midpoint rule `#{j : 2x >= val[j-1] + val[j]}` that the AVX2 kernel uses equals
    /// ggml's binary search with its rounded distance comparison: checked on every float within
    /// 2^16 ulps of each midpoint and level, and on a dense sweep.
    #[test]
    fn best_index_equals_midpoint_rule() {
        let rule = |x: f32| (1..16).filter(|&j| 2.0 * x >= (KVALUES_IQ4NL[j - 1] as i32 + KVALUES_IQ4NL[j] as i32) as f32).count() as u8;
        let mut centres: Vec<f32> = (1..16).map(|j| (KVALUES_IQ4NL[j - 1] as f32 + KVALUES_IQ4NL[j] as f32) / 2.0).collect();
        centres.extend(KVALUES_IQ4NL.iter().map(|&v| v as f32));
        centres.push(0.0);
        for c in centres {
            for k in -(1i32 << 16)..(1 << 16) {
                let x = if c == 0.0 {
                    f32::from_bits(k.unsigned_abs()) * k.signum() as f32
                } else {
                    f32::from_bits((c.to_bits() as i64 + k as i64) as u32)
                };
                assert_eq!(best_index_iq4(x), rule(x), "{x}");
            }
        }
        for i in -3_000_000..3_000_000 {
            let x = i as f32 * 4.7e-5;
            assert_eq!(best_index_iq4(x), rule(x), "{x}");
        }
    }

    #[test]
    fn make_qx_quants_codes_reconstruct() {
        let x: Vec<f32> = (0..16).map(|i| ((i * 7 % 16) as f32 - 7.5) * 0.01).collect();
        let mut l = [0i8; 16];
        let d = make_qx_quants(&x, 32, None, &mut l);
        for (v, &q) in x.iter().zip(&l) {
            assert!((v - d * (q as f32 - 32.0)).abs() <= d.abs() * 0.51, "{v} {q} {d}");
        }
    }

    use crate::scalar::kquants::{dequantize_into_at, quantize_rows_512 as quantize, KType, Weights};
    use crate::simd::{available_levels, Level};

    const TYPES: [KType; 4] = [KType::Q6K, KType::Q3K, KType::Iq4Nl, KType::Iq4Xs];

    fn lcg(seed: u64) -> impl FnMut() -> f32 {
        let mut s = seed;
        move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    /// Inputs of 1024 values (4 super-blocks, 32 IQ4_NL blocks) that stress the searches.
    fn cases() -> Vec<(&'static str, Vec<f32>)> {
        let mut r = lcg(7);
        let random: Vec<f32> = (0..1024).map(|_| r()).collect();
        let heavy: Vec<f32> = (0..1024).map(|_| r() * r().abs().powi(6) * 50.0).collect();
        let mut outlier: Vec<f32> = (0..1024).map(|_| r() * 0.01).collect();
        for b in 0..32 {
            outlier[32 * b + (b * 7) % 32] = if b % 2 == 0 { 900.0 } else { -900.0 };
        }
        let subnormal: Vec<f32> =
            (0..1024).map(|i| f32::from_bits(1 + (i as u32 * 7919) % 0x7f_ffff) * if i % 3 == 0 { -1.0 } else { 1.0 }).collect();
        let tiny: Vec<f32> = (0..1024).map(|_| r() * 1e-12).collect();
        let mixed: Vec<f32> = (0..1024).map(|i| if i % 256 < 128 { 0.0 } else { r() }).collect();
        vec![
            ("random", random),
            ("heavy", heavy),
            ("zeros", vec![0.0; 1024]),
            ("constant", vec![0.37; 1024]),
            ("negative constant", vec![-2.5; 1024]),
            ("outlier", outlier),
            ("subnormal", subnormal),
            ("tiny", tiny),
            ("half zero", mixed),
        ]
    }

    #[test]
    fn every_level_matches_scalar_bytes() {
        let mut r = lcg(11);
        let imatrix: Vec<f32> = (0..1024).map(|_| r().abs() + 0.01).collect();
        for t in TYPES {
            for (name, x) in cases() {
                for w in [Weights::None, Weights::PerValue(&imatrix), Weights::PerColumn { w: &imatrix[..512], row_len: 512 }] {
                    let want = quantize(t, Level::Scalar, &x, w);
                    for &level in &available_levels()[1..] {
                        assert_eq!(quantize(t, level, &x, w), want, "{} {name} {level:?}", t.name());
                    }
                }
            }
        }
    }

    #[test]
    fn every_level_matches_scalar_dequantize() {
        let mut r = lcg(3);
        for t in TYPES {
            let mut raw: Vec<u8> = (0..t.block_bytes() * 8).map(|_| (r() * 1e4) as i32 as u8).collect();
            // Random bytes can hold float16 NaN or infinity scales: keep them finite here (those
            // propagate identically but NaN payloads are not compared by bits).
            for b in raw.chunks_mut(t.block_bytes()) {
                let d = match t {
                    KType::Q6K => 208,
                    KType::Q3K => 108,
                    _ => 0,
                };
                b[d + 1] &= 0x3f;
            }
            let n = raw.len() / t.block_bytes() * t.block_size();
            let mut want = vec![0f32; n];
            dequantize_into_at(t, crate::simd::Level::Scalar, &raw, &mut want).unwrap();
            for &level in &available_levels()[1..] {
                let mut got = vec![0f32; n];
                dequantize_into_at(t, level, &raw, &mut got).unwrap();
                assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{}", t.name());
            }
        }
    }

    #[test]
    fn reconstruction_error_is_small() {
        let mut r = lcg(5);
        let x: Vec<f32> = (0..4096).map(|_| r()).collect();
        for (t, bound) in [(KType::Q6K, 0.02), (KType::Q3K, 0.2), (KType::Iq4Nl, 0.1), (KType::Iq4Xs, 0.1)] {
            let q = quantize(t, crate::simd::Level::Scalar, &x, Weights::None);
            let mut y = vec![0f32; x.len()];
            dequantize_into_at(t, crate::simd::Level::Scalar, &q, &mut y).unwrap();
            let rmse = (x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / x.len() as f32).sqrt();
            assert!(rmse < bound * 0.6, "{} rmse {rmse}", t.name());
        }
    }

    /// Super-blocks (IQ4: groups of 8 blocks) of one kind of data, `n` of them.
    fn kernel_input(kind: usize, n: usize, r: &mut impl FnMut() -> f32) -> Vec<f32> {
        let mut x: Vec<f32> = (0..256 * n)
            .map(|i| match kind {
                0 => r(),
                1 => r() * r().abs().powi(6) * 50.0,
                2 => 0.0,
                3 => 0.37,
                4 => {
                    if i % 256 < 128 {
                        0.0
                    } else {
                        r()
                    }
                }
                5 => f32::from_bits(1 + (i as u32 * 7919) % 0x7f_ffff) * if i % 3 == 0 { -1.0 } else { 1.0 },
                6 => r() * 1e-12,
                7 => r() * 3e12,
                _ => (r() * 4.0).round() * 0.25 + if i % 16 == 5 { 1e-7 } else { 0.0 },
            })
            .collect();
        if kind == 0 {
            for (b, v) in x.chunks_mut(16).enumerate().filter(|(b, _)| b % 5 == 2) {
                v[b % 16] = if b % 2 == 0 { 900.0 } else { -900.0 };
            }
        }
        x
    }

    /// Every level's Q3_K search equals scalar on batches of every shape the kernels split
    /// differently (odd super-block counts, a batch and a remainder, groups of flagged
    /// sub-blocks from one to three), on random, heavy-tailed, zero, constant, half-zero,
    /// subnormal, tiny, huge and near-tie data.
    #[test]
    fn q3_search_matches_scalar_at_every_level() {
        let mut r = lcg(19);
        for n in [1, 3, 9, 16, 17, 24, 40, 64] {
            for kind in 0..9 {
                let x = kernel_input(kind, n, &mut r);
                let (mut s0, mut l0) = (vec![0f32; 16 * n], vec![0i8; 256 * n]);
                (ops(Level::Scalar).q3_16)(&x, &mut s0, &mut l0);
                for &level in &available_levels()[1..] {
                    let (mut s, mut l) = (vec![1f32; 16 * n], vec![9i8; 256 * n]);
                    (ops(level).q3_16)(&x, &mut s, &mut l);
                    assert_eq!(l, l0, "{level:?} n={n} kind={kind}");
                    assert!(s.iter().zip(&s0).all(|(a, b)| a.to_bits() == b.to_bits()), "{level:?} n={n} kind={kind}");
                }
            }
        }
    }

    /// Every level's IQ4 block-scale search equals scalar for 8 to 40 blocks (whole and half
    /// AVX-512 groups), with `x²` weights and with importance weights.
    #[test]
    fn iq4_scales_match_scalar_at_every_level() {
        let mut r = lcg(23);
        for groups in [1, 2, 3, 5] {
            for kind in 0..9 {
                let x = kernel_input(kind, groups, &mut r);
                let qw: Vec<f32> = (0..x.len()).map(|_| r().abs() + 1e-3).collect();
                for weighted in [false, true] {
                    let mut w = vec![0f32; x.len()];
                    for (b, o) in w.chunks_mut(32).enumerate() {
                        iq4_weights(&x[32 * b..32 * b + 32], weighted.then(|| &qw[32 * b..32 * b + 32]), o);
                    }
                    let mut s0 = vec![0f32; 8 * groups];
                    (ops(Level::Scalar).iq4_scales)(&x, &w, &mut s0);
                    for &level in &available_levels()[1..] {
                        let mut s = vec![1f32; 8 * groups];
                        (ops(level).iq4_scales)(&x, &w, &mut s);
                        let same = s.iter().zip(&s0).all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(same, "{level:?} groups={groups} kind={kind} weighted={weighted}");
                    }
                }
            }
        }
    }

    /// Every level's packed IQ4 indices equal scalar for any inverse scale: ordinary ones, ones
    /// that push `id·x` far past the table ends, and infinite ones (NaN products go to the top
    /// level, as in ggml's search).
    #[test]
    fn iq4_pack_matches_scalar_at_every_level() {
        let mut r = lcg(29);
        let ids = [0.0, 1.0, -1.0, 37.5, 1e-3, 1e4, 3e38, f32::INFINITY, f32::NEG_INFINITY, f32::MIN_POSITIVE];
        for kind in 0..9 {
            let x = kernel_input(kind, 1, &mut r);
            for b in x.chunks(32) {
                let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                let fit = if amax > 0.0 { 127.0 / amax } else { 1.0 };
                for id in ids.iter().copied().chain([fit, -fit, 1.7 * fit, fit * (1.0 + 1e-6)]) {
                    let mut want = [0u8; 16];
                    (ops(Level::Scalar).iq4_pack)(b, id, &mut want);
                    for &level in &available_levels()[1..] {
                        let mut got = [0xAAu8; 16];
                        (ops(level).iq4_pack)(b, id, &mut got);
                        assert_eq!(got, want, "{level:?} kind={kind} id={id}");
                    }
                }
            }
        }
    }
}
