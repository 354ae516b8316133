//! MSE scale search: per group, the scale (and minimum) minimising the weighted squared error,
//! as llama.cpp's K-quant helpers do, generalised to 1..8 bits and any group size.
//!
//! * affine: `make_qkx2_quants` (rmin = -1, rdelta = 0.1, nstep = 20): the min-max grid, then
//!   for each candidate `iscale = (-1 + 0.1*is + top) / (max - min)`, `is = 0..=20`, the codes
//!   `clamp(round(iscale * (x - min)), 0, top)` and a weighted least-squares refit of scale and
//!   min (`min <= 0`), kept when its weighted error is lower;
//! * symmetric: `make_qx_quants`: `iscale = (qm + 0.1*is) / max|x|` for `is = 0, -9..=9`, codes
//!   `clamp(round(iscale * x), -qm, qm)`, least-squares scale `sum(w*l*x) / sum(w*l*l)`, kept
//!   when `sum(w*l*x)^2 / sum(w*l*l)` is larger.
//!
//! The found scale is rounded to the nearest value of the scale dtype, the affine zero point
//! `-min / scale` likewise (it need not be an integer), and the codes are recomputed for the
//! stored values (`round(x/s + z)`, RTN's code rule for symmetric). The group's RTN result
//! ([`super::rtn`]) is the other candidate: whichever dequantizes with the lower weighted
//! squared error is stored (RTN on ties), so the error is never higher than RTN's on any group.
//! Sums run in the lane order of [`super::search`]; the NumPy oracle follows the same order.

use crate::error::{invalid, Result};
use crate::scalar::rtn::{RtnSpec, Scheme};
use crate::scalar::search::{self, lane_sum, Lanes, Weights};
use crate::simd;

/// `round_half_even(v)` for `|v| < 2^22` by adding and subtracting `1.5 * 2^23` (exact in float32
/// round-to-nearest-even arithmetic; a small negative `v` gives `+0.0`, not `-0.0`, which no
/// caller can tell apart: every result is clamped at 0 or multiplied into a sum). Baseline
/// x86-64 has no rounding instruction, and this keeps the search loops free of library calls.
#[inline(always)]
fn round_small(v: f32) -> f32 {
    const MAGIC: f32 = 12582912.0;
    (v + MAGIC) - MAGIC
}

/// `make_qkx2_quants`: `(scale, min)` of the best candidate, or `None` for a constant group.
fn affine_search(x: &[f32], w: &[f32], top: f32) -> Option<(f32, f32)> {
    let (mn, mx, _) = simd::scalar::group_range(x);
    let mn = if mn > 0.0 { 0.0 } else { mn };
    let rng = mx - mn;
    if rng <= 0.0 || rng.is_nan() {
        return None;
    }
    let n = x.len();
    let (sum_w, sum_x) = (lane_sum(n, |i| w[i]), lane_sum(n, |i| w[i] * x[i]));
    let level = |iscale: f32, v: f32| round_small(iscale * (v - mn)).clamp(0.0, top);
    let error = |iscale: f32, s: f32, m: f32| {
        lane_sum(n, |i| {
            let d = (s * level(iscale, x[i]) + m) - x[i];
            w[i] * (d * d)
        })
    };
    let iscale = top / rng;
    let (mut scale, mut min) = (1.0 / iscale, mn);
    let mut best = error(iscale, scale, min);
    for is in 0..=20 {
        let iscale = ((-1.0f32 + 0.1f32 * is as f32) + top) / rng;
        let (mut sl, mut sl2, mut sxl) = (Lanes::default(), Lanes::default(), Lanes::default());
        for i in 0..n {
            let l = level(iscale, x[i]);
            let wl = w[i] * l;
            sl.add(i, wl);
            sl2.add(i, wl * l);
            sxl.add(i, wl * x[i]);
        }
        let (sl, sl2, sxl) = (sl.total(), sl2.total(), sxl.total());
        let det = sum_w * sl2 - sl * sl;
        if det <= 0.0 || det.is_nan() {
            continue;
        }
        let (mut ts, mut tm) = ((sum_w * sxl - sum_x * sl) / det, (sl2 * sum_x - sl * sxl) / det);
        if tm > 0.0 {
            (ts, tm) = (sxl / sl2, 0.0);
        }
        let cur = error(iscale, ts, tm);
        if cur < best {
            (best, scale, min) = (cur, ts, tm);
        }
    }
    Some((scale, min))
}

/// `make_qx_quants` on a symmetric range: the best least-squares scale (0 for an all-zero group).
fn symmetric_search(x: &[f32], w: &[f32], qm: f32) -> f32 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 {
        return 0.0;
    }
    let (mut scale, mut best) = (0.0f32, 0.0f32);
    for is in [0, -9, -8, -7, -6, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6, 7, 8, 9] {
        let iscale = (qm + 0.1f32 * is as f32) / amax;
        let (mut slx, mut sl2) = (Lanes::default(), Lanes::default());
        for (i, &v) in x.iter().enumerate() {
            let l = round_small(iscale * v).clamp(-qm, qm);
            let wl = w[i] * l;
            slx.add(i, wl * v);
            sl2.add(i, wl * l);
        }
        let (slx, sl2) = (slx.total(), sl2.total());
        if is == 0 {
            scale = if sl2 != 0.0 { slx / sl2 } else { 0.0 };
            best = scale * slx;
        } else if sl2 > 0.0 && slx * slx > best * sl2 {
            scale = slx / sl2;
            best = scale * slx;
        }
    }
    scale
}

/// The searched candidate's stored scale and zero point, codes in `codes`; `None` if unusable.
fn candidate(spec: &RtnSpec, x: &[f32], w: &[f32], codes: &mut [u8]) -> Option<(f32, f32)> {
    let p = spec.grid_params();
    let (scale, min) = match spec.scheme {
        Scheme::Affine => affine_search(x, w, p.top)?,
        _ => (symmetric_search(x, w, p.qm), 0.0),
    };
    let s = search::round_nearest(scale, p.f16);
    if !(s.is_finite() && s >= f32::MIN_POSITIVE) {
        return None;
    }
    let inv = 1.0 / s;
    if spec.scheme == Scheme::Affine {
        let z = search::round_nearest(-min * inv, p.f16) + 0.0;
        if !z.is_finite() {
            return None;
        }
        search::zero_codes(x, inv, z, p.top, codes);
        Some((s, z))
    } else {
        simd::scalar::group_codes(x, inv, p.offset, 1.0, p.top, codes);
        Some((s, p.offset))
    }
}

/// One group: RTN, then the searched candidate if its weighted squared error is lower.
fn group(spec: &RtnSpec, x: &[f32], w: &[f32], codes: &mut [u8], index: usize) -> Result<(f32, f32)> {
    let p = spec.grid_params();
    let (mn, mx, _) = simd::scalar::group_range(x);
    let (s, z, inv) = search::rtn_grid(spec, mn, mx, index)?;
    let lo = if p.symmetric { 1.0 } else { 0.0 };
    simd::scalar::group_codes(x, inv, z, lo, p.top, codes);
    let rtn_error = search::sq_error(x, Some(w), s, z, |i| codes[i] as f32);
    let mut tmp = vec![0u8; x.len()];
    if let Some((cs, cz)) = candidate(spec, x, w, &mut tmp) {
        if search::sq_error(x, Some(w), cs, cz, |i| tmp[i] as f32) < rtn_error {
            codes.copy_from_slice(&tmp);
            return Ok((cs, cz));
        }
    }
    Ok((s, z))
}

/// Quantizes `src` with searched scales into RTN's layout (affine or symmetric scheme).
pub fn quantize_into(
    spec: &RtnSpec,
    src: &[f32],
    weights: Weights<'_>,
    codes: &mut [u8],
    scales: &mut [f32],
    zeros: &mut [f32],
) -> Result<()> {
    if spec.scheme == Scheme::Nf4 {
        return Err(invalid!("method='mse' supports the affine and symmetric schemes, not nf4"));
    }
    weights.validate(src.len())?;
    let gs = spec.group_size;
    search::quantize_groups(spec, src, codes, scales, zeros, &|i, x, c| {
        let mut buf = Vec::new();
        let w = weights.group(i * gs, gs, &mut buf);
        group(spec, x, w, c, i)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scalar::rtn::ScaleDtype;

    fn default_spec(bits: u32, group_size: usize, scheme: Scheme) -> RtnSpec {
        RtnSpec { bits, group_size, scheme, scale_dtype: ScaleDtype::F16 }
    }

    fn data(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 * 0.61).sin() * 2.0).powi(3) * 0.02).collect()
    }

    fn error_of(spec: &RtnSpec, x: &[f32], codes: &[u8], s: &[f32], z: &[f32]) -> f64 {
        let mut y = vec![0f32; x.len()];
        crate::scalar::rtn::dequantize_into(spec, codes, s, z, &mut y).unwrap();
        x.iter().zip(&y).map(|(a, b)| ((a - b) as f64).powi(2)).sum()
    }

    #[test]
    fn never_worse_than_rtn() {
        let x = data(64 * 40);
        for scheme in [Scheme::Affine, Scheme::Symmetric] {
            for bits in [2, 3, 4, 8] {
                let spec = default_spec(bits, 64, scheme);
                let g = x.len() / 64;
                let nz = if scheme == Scheme::Affine { g } else { 0 };
                let (mut c, mut s, mut z) = (vec![0u8; crate::pack::packed_len(x.len(), bits)], vec![0f32; g], vec![0f32; nz]);
                crate::scalar::rtn::quantize_into(&spec, &x, &mut c, &mut s, &mut z).unwrap();
                let rtn = error_of(&spec, &x, &c, &s, &z);
                quantize_into(&spec, &x, Weights::None, &mut c, &mut s, &mut z).unwrap();
                let mse = error_of(&spec, &x, &c, &s, &z);
                assert!(mse < rtn, "{scheme:?} {bits}: {mse} vs {rtn}");
            }
        }
    }

    #[test]
    fn refuses_bad_weights() {
        let spec = default_spec(4, 4, Scheme::Affine);
        let (mut c, mut s, mut z) = (vec![0u8; 2], vec![0f32; 1], vec![0f32; 1]);
        let x = [1.0, 2.0, 3.0, 4.0];
        assert!(quantize_into(&spec, &x, Weights::PerValue(&[1.0, -1.0, 1.0, 1.0]), &mut c, &mut s, &mut z).is_err());
        assert!(quantize_into(&spec, &x, Weights::PerValue(&[1.0, 1.0]), &mut c, &mut s, &mut z).is_err());
        assert!(quantize_into(&spec, &x, Weights::PerColumn { w: &[1.0, f32::NAN], row_len: 2 }, &mut c, &mut s, &mut z).is_err());
        assert!(quantize_into(&spec, &x, Weights::PerColumn { w: &[1.0, 2.0], row_len: 2 }, &mut c, &mut s, &mut z).is_ok());
    }
}
