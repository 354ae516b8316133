//! AVX2 kernels (placeholder: delegates to scalar until the SIMD versions land).
use super::scalar;
pub fn quantize_q8_0(s: &[f32], d: &mut [u8]) -> bool { scalar::quantize_q8_0(s, d) }
pub fn quantize_q4_0(s: &[f32], d: &mut [u8]) -> bool { scalar::quantize_q4_0(s, d) }
pub fn quantize_q4_1(s: &[f32], d: &mut [u8]) -> bool { scalar::quantize_q4_1(s, d) }
pub fn quantize_q5_0(s: &[f32], d: &mut [u8]) -> bool { scalar::quantize_q5_0(s, d) }
pub fn quantize_q5_1(s: &[f32], d: &mut [u8]) -> bool { scalar::quantize_q5_1(s, d) }
pub fn dequantize_q8_0(s: &[u8], d: &mut [f32]) { scalar::dequantize_q8_0(s, d) }
pub fn dequantize_q4_0(s: &[u8], d: &mut [f32]) { scalar::dequantize_q4_0(s, d) }
pub fn dequantize_q4_1(s: &[u8], d: &mut [f32]) { scalar::dequantize_q4_1(s, d) }
pub fn dequantize_q5_0(s: &[u8], d: &mut [f32]) { scalar::dequantize_q5_0(s, d) }
pub fn dequantize_q5_1(s: &[u8], d: &mut [f32]) { scalar::dequantize_q5_1(s, d) }
pub fn group_range(x: &[f32]) -> (f32, f32, bool) { scalar::group_range(x) }
pub fn group_codes(x: &[f32], inv: f32, zero: f32, lo: f32, hi: f32, out: &mut [u8]) { scalar::group_codes(x, inv, zero, lo, hi, out) }
pub fn group_values(c: &[u8], s: f32, z: f32, out: &mut [f32]) { scalar::group_values(c, s, z, out) }
