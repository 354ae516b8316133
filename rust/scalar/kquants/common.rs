//! Small helpers shared by the K-quant and IQ4 types, with ggml's exact arithmetic.

use half::f16;

/// ggml's `nearest_int`: round to nearest, ties to even, via the 1.5·2^23 trick (valid for
/// |x| <= 2^22, which every caller guarantees by clamping first or by construction).
#[inline(always)]
pub fn nearest_int(x: f32) -> i32 {
    debug_assert!(x.abs() <= 4194303.0);
    let v = x + 12582912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// `GGML_FP32_TO_FP16` then back: the value a stored float16 scale decodes to.
#[inline(always)]
pub fn f16_round(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Little-endian float16 bits of `x` (round to nearest even), as stored in block headers.
#[inline(always)]
pub fn f16_bytes(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_le_bytes()
}

/// The float32 value of little-endian float16 bytes.
#[inline(always)]
pub fn f16_value(b: [u8; 2]) -> f32 {
    f16::from_le_bytes(b).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        for (x, want) in [(0.5f32, 0), (1.5, 2), (2.5, 2), (-0.5, 0), (-1.5, -2), (3.49, 3), (-7.51, -8), (127.0, 127)] {
            assert_eq!(nearest_int(x), want, "{x}");
        }
        for i in -100_000..100_000 {
            let x = i as f32 * 0.37;
            assert_eq!(nearest_int(x), x.round_ties_even() as i32);
        }
    }
}
