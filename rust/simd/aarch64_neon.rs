//! NEON kernels (aarch64 Advanced SIMD), bit-identical to [`super::scalar`].
//!
//! NEON is part of the aarch64 baseline (every `aarch64` Rust target enables it), so the public
//! kernels are safe functions that use the intrinsics directly; every `unsafe` block below is
//! either register-only NEON arithmetic or a load/store through a pointer taken from an array
//! of exactly the size it touches. A block of 32 floats lives in eight `float32x4_t`.
//!
//! How the scalar oracle is reproduced:
//! * products and sums are separate `vmulq_f32` / `vaddq_f32` / `vsubq_f32` (never `vfmaq` or
//!   `vmlaq`, which may be fused), in the scalar operand order;
//! * [`scalar::cvtt`] (x86 `cvttss2si`, then the low byte) is `vcvtq_s32_f32` with the lanes
//!   `>= 2^31` (and NaN) zeroed: NEON saturates `+big` to `i32::MAX` (low byte 255) where x86
//!   gives `i32::MIN` (low byte 0); `-big` saturates to `i32::MIN` on both, and NaN gives 0 on
//!   NEON, whose low byte equals that of x86's `i32::MIN`;
//! * Q8_0's `f32::round` (half away from zero) is `vrndaq_f32`, `round_ties_even` is
//!   `vrndnq_f32`, and Rust's saturating `as u8` is `vcvtq_u32_f32` + saturating narrows;
//! * the magnitude maximum is the integer maximum of `|x|`'s bit patterns (the float order for
//!   non-NaN values), which also flags non-finite blocks (`>= 0x7f80_0000`); NumPy's
//!   `argmax(abs)` (first index) and `min`/`max` on a zero extreme (last index) are found with
//!   lane-index reductions; blocks holding NaN or infinities (an error the flag reports) take
//!   the scalar helpers for their per-block scalars, so their bytes match too (not required);
//! * `vminq_f32` / `vmaxq_f32` propagate NaN, so `min > -inf && max < inf` is the finite flag;
//! * per-block scalars (`amax / 127`, `1 / d`, fp16 scales) use the scalar expressions and the
//!   `half` conversions of [`scalar`];
//! * NaN payloads of dequantized values follow the release build of the scalar kernels,
//!   including which NaN `d * q + m` returns when both terms are NaN (see `store_scaled`).

use std::arch::aarch64::*;

use super::scalar::{self, QK};

/// The 32 values of one block, four per register, in element order.
type Block = [float32x4_t; 8];

/// A magnitude's bit pattern is `>= NONFINITE` exactly for infinities and NaN.
const NONFINITE: u32 = 0x7f80_0000;
/// `2^31`: the first float `cvttss2si` maps to `i32::MIN` from above.
const TWO_31: f32 = 2_147_483_648.0;

/// `LANE[i] = i`: lane indices of a block.
static LANE: [u32; QK] = {
    let mut a = [0u32; QK];
    let mut i = 0;
    while i < QK {
        a[i] = i as u32;
        i += 1;
    }
    a
};

/// Bit `j % 8` in byte `j`: the weights that turn byte masks into `qh` bits (and back).
static BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];

/// Per-group grid arithmetic (a few operations a group): the scalar code serves.
pub use scalar::grids;
use scalar::inverse;
/// NF4 (no NEON version yet): the scalar code serves.
pub use scalar::{nf4_codes, nf4_values};

#[inline(always)]
fn put_f16(out: &mut [u8], x: f32) {
    out[..2].copy_from_slice(&scalar::f16_bits(x).to_le_bytes());
}

#[inline(always)]
fn f16_at(b: &[u8], at: usize) -> f32 {
    scalar::f16_value(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// `N` bytes of `s` from `at` as an array (lengths are fixed by the callers' block sizes).
#[inline(always)]
fn bytes_mut<const N: usize>(s: &mut [u8], at: usize) -> &mut [u8; N] {
    (&mut s[at..at + N]).try_into().expect("slice of length N")
}

#[inline(always)]
fn bytes<const N: usize>(s: &[u8], at: usize) -> &[u8; N] {
    s[at..at + N].try_into().expect("slice of length N")
}

// ---------------------------------------------------------------------------------------------
// Register helpers.
// ---------------------------------------------------------------------------------------------

#[inline(always)]
fn load_block(x: &[f32; QK]) -> Block {
    let p = x.as_ptr();
    // SAFETY: NEON is baseline on aarch64; load k reads x[4k..4k+4], inside the 32-float array.
    std::array::from_fn(|k| unsafe { vld1q_f32(p.add(4 * k)) })
}

/// Lane indices `4k..4k+4` (plus `add`).
#[inline(always)]
fn lane_index(k: usize, add: u32) -> uint32x4_t {
    // SAFETY: NEON is baseline on aarch64; k < 8, so the load reads LANE[4k..4k+4] of 32.
    unsafe { vaddq_u32(vld1q_u32(LANE.as_ptr().add(4 * k)), vdupq_n_u32(add)) }
}

/// Bit patterns of `|x|` lane by lane.
#[inline(always)]
fn abs_bits(v: &Block) -> [uint32x4_t; 8] {
    // SAFETY: NEON is baseline on aarch64; register-only intrinsics.
    unsafe {
        let m = vdupq_n_u32(0x7fff_ffff);
        std::array::from_fn(|k| vandq_u32(vreinterpretq_u32_f32(v[k]), m))
    }
}

/// Largest lane of eight vectors.
#[inline(always)]
fn max_u32(a: &[uint32x4_t; 8]) -> u32 {
    // SAFETY: NEON is baseline on aarch64; register-only intrinsics.
    unsafe {
        let m0 = vmaxq_u32(vmaxq_u32(a[0], a[1]), vmaxq_u32(a[2], a[3]));
        let m1 = vmaxq_u32(vmaxq_u32(a[4], a[5]), vmaxq_u32(a[6], a[7]));
        vmaxvq_u32(vmaxq_u32(m0, m1))
    }
}

/// Smallest and largest value of a block (`fmin`/`fmax`: NaN if any lane is NaN; the sign of
/// a zero extreme is unspecified).
#[inline(always)]
fn block_min_max(v: &Block) -> (f32, f32) {
    // SAFETY: NEON is baseline on aarch64; register-only intrinsics.
    unsafe {
        let n0 = vminq_f32(vminq_f32(v[0], v[1]), vminq_f32(v[2], v[3]));
        let n1 = vminq_f32(vminq_f32(v[4], v[5]), vminq_f32(v[6], v[7]));
        let x0 = vmaxq_f32(vmaxq_f32(v[0], v[1]), vmaxq_f32(v[2], v[3]));
        let x1 = vmaxq_f32(vmaxq_f32(v[4], v[5]), vmaxq_f32(v[6], v[7]));
        (vminvq_f32(vminq_f32(n0, n1)), vmaxvq_f32(vmaxq_f32(x0, x1)))
    }
}

/// The index of the first lane (element order) whose mask is set; 32 if none.
#[inline(always)]
fn first_set(eq: [uint32x4_t; 8]) -> usize {
    // SAFETY: NEON is baseline on aarch64; register-only intrinsics.
    unsafe {
        let none = vdupq_n_u32(QK as u32);
        let s: [uint32x4_t; 8] = std::array::from_fn(|k| vbslq_u32(eq[k], lane_index(k, 0), none));
        let m0 = vminq_u32(vminq_u32(s[0], s[1]), vminq_u32(s[2], s[3]));
        let m1 = vminq_u32(vminq_u32(s[4], s[5]), vminq_u32(s[6], s[7]));
        vminvq_u32(vminq_u32(m0, m1)) as usize
    }
}

/// One more than the index of the last lane whose mask is set; 0 if none.
#[inline(always)]
fn last_set_end(eq: [uint32x4_t; 8]) -> usize {
    // SAFETY: NEON is baseline on aarch64; register-only intrinsics.
    let s: [uint32x4_t; 8] = std::array::from_fn(|k| unsafe { vandq_u32(eq[k], lane_index(k, 1)) });
    max_u32(&s) as usize
}

/// `cvtt(v)` lane by lane, exact in the low byte (all the kernels keep): `vcvtq_s32_f32`
/// truncates like `cvttss2si` in range and saturates outside it; lanes `>= 2^31` (where x86
/// gives `i32::MIN`, low byte 0, but NEON `i32::MAX`) and NaN lanes become 0.
#[inline(always)]
fn cvtt_lanes(v: float32x4_t) -> uint32x4_t {
    // SAFETY: NEON is baseline on aarch64; register-only intrinsics.
    unsafe {
        let i = vreinterpretq_u32_s32(vcvtq_s32_f32(v));
        vandq_u32(i, vcltq_f32(v, vdupq_n_f32(TWO_31)))
    }
}

/// The low bytes of 32 lanes, in element order (bytes 0..16, 16..32).
#[inline(always)]
fn low_bytes(q: [uint32x4_t; 8]) -> [uint8x16_t; 2] {
    // SAFETY: NEON is baseline on aarch64; register-only intrinsics.
    unsafe {
        let h: [uint16x8_t; 4] = std::array::from_fn(|k| vuzp1q_u16(vreinterpretq_u16_u32(q[2 * k]), vreinterpretq_u16_u32(q[2 * k + 1])));
        [
            vuzp1q_u8(vreinterpretq_u8_u16(h[0]), vreinterpretq_u8_u16(h[1])),
            vuzp1q_u8(vreinterpretq_u8_u16(h[2]), vreinterpretq_u8_u16(h[3])),
        ]
    }
}

/// `min(max, cvtt(x[j] * id + add) as u8)` for the 32 values of a block.
#[inline(always)]
fn codes_mul_add(v: &Block, id: f32, add: f32, max: u8) -> [uint8x16_t; 2] {
    // SAFETY: NEON is baseline on aarch64; register-only intrinsics.
    unsafe {
        let (idv, addv) = (vdupq_n_f32(id), vdupq_n_f32(add));
        let b = low_bytes(std::array::from_fn(|k| cvtt_lanes(vaddq_f32(vmulq_f32(v[k], idv), addv))));
        let m = vdupq_n_u8(max);
        [vminq_u8(b[0], m), vminq_u8(b[1], m)]
    }
}

/// Nibble bytes `(q[j] & 15) | (q[j + 16] << 4)`, `j < 16`.
#[inline(always)]
fn nibbles(q: [uint8x16_t; 2]) -> uint8x16_t {
    // SAFETY: NEON is baseline on aarch64; register-only intrinsics.
    unsafe { vsliq_n_u8::<4>(q[0], q[1]) }
}

/// The ggml `qh` word: bit j is bit 4 of `q[j]`.
#[inline(always)]
fn high_bits(q: [uint8x16_t; 2]) -> u32 {
    // SAFETY: NEON is baseline on aarch64; the load reads the 16-byte array BIT.
    unsafe {
        let (w, b4) = (vld1q_u8(BIT.as_ptr()), vdupq_n_u8(0x10));
        let lo = vandq_u8(vtstq_u8(q[0], b4), w);
        let hi = vandq_u8(vtstq_u8(q[1], b4), w);
        // Pairwise sums of 2, 4, then 8 distinct bits: bytes 0..4 of `s` are qh's bytes.
        let s = vpaddq_u8(lo, hi);
        let s = vpaddq_u8(s, s);
        let s = vpaddq_u8(s, s);
        vgetq_lane_u32::<0>(vreinterpretq_u32_u8(s))
    }
}

#[inline(always)]
fn store16(out: &mut [u8; 16], v: uint8x16_t) {
    // SAFETY: NEON is baseline on aarch64; writes exactly the 16 bytes of `out`.
    unsafe { vst1q_u8(out.as_mut_ptr(), v) }
}

// ---------------------------------------------------------------------------------------------
// GGUF legacy quantization.
// ---------------------------------------------------------------------------------------------

/// Runs `f` on each pair of (32-float block, `B`-byte block), as the scalar kernels zip them;
/// true iff every block reported finite and the values past the last block are finite.
#[inline(always)]
fn quantize_blocks<const B: usize>(src: &[f32], dst: &mut [u8], mut f: impl FnMut(&[f32; QK], &mut [u8; B]) -> bool) -> bool {
    let mut finite = true;
    let mut done = 0;
    for (x, out) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(B)) {
        let x: &[f32; QK] = x.try_into().expect("32-float chunk");
        finite &= f(x, out.try_into().expect("B-byte chunk"));
        done += QK;
    }
    finite && scalar::all_finite(&src[done..])
}

/// Q8_0 quantization, identical to [`scalar::quantize_q8_0`].
pub fn quantize_q8_0(src: &[f32], dst: &mut [u8]) -> bool {
    quantize_blocks::<34>(src, dst, |x, out| {
        let v = load_block(x);
        let am = max_u32(&abs_bits(&v));
        let finite = am < NONFINITE;
        let amax = if finite {
            f32::from_bits(am)
        } else {
            // NaN present (ignored by the scalar fold) or an infinity: the scalar expression.
            x.iter().fold(0.0f32, |m, v| if v.abs() >= m { v.abs() } else { m })
        };
        let d = amax / 127.0;
        put_f16(out, d);
        // SAFETY: NEON is baseline on aarch64; register-only intrinsics.
        let q = unsafe {
            let idv = vdupq_n_f32(inverse(d));
            low_bytes(std::array::from_fn(|k| cvtt_lanes(vrndaq_f32(vmulq_f32(v[k], idv)))))
        };
        store16(bytes_mut(out, 2), q[0]);
        store16(bytes_mut(out, 18), q[1]);
        finite
    })
}

/// Q4_0 / Q5_0 for one block: `(d, codes, finite)` with `d = first_absmax / div` and codes
/// `min(max, cvtt(x * (1/d) + add))`.
#[inline(always)]
fn block_sym(x: &[f32; QK], div: f32, add: f32, max: u8) -> (f32, [uint8x16_t; 2], bool) {
    let v = load_block(x);
    let a = abs_bits(&v);
    let am = max_u32(&a);
    let finite = am < NONFINITE;
    let best = if finite {
        // SAFETY: NEON is baseline on aarch64; register-only intrinsics.
        let eq = unsafe {
            let m = vdupq_n_u32(am);
            std::array::from_fn(|k| vceqq_u32(a[k], m))
        };
        // Some lane holds the maximum, so the index is < 32.
        x[first_set(eq)]
    } else {
        scalar::first_absmax(x)
    };
    let d = best / div;
    (d, codes_mul_add(&v, inverse(d), add, max), finite)
}

/// Q4_0 quantization, identical to [`scalar::quantize_q4_0`].
pub fn quantize_q4_0(src: &[f32], dst: &mut [u8]) -> bool {
    quantize_blocks::<18>(src, dst, |x, out| {
        let (d, q, finite) = block_sym(x, -8.0, 8.5, 15);
        put_f16(out, d);
        store16(bytes_mut(out, 2), nibbles(q));
        finite
    })
}

/// Q5_0 quantization, identical to [`scalar::quantize_q5_0`].
pub fn quantize_q5_0(src: &[f32], dst: &mut [u8]) -> bool {
    quantize_blocks::<22>(src, dst, |x, out| {
        let (d, q, finite) = block_sym(x, -16.0, 16.5, 31);
        put_f16(out, d);
        out[2..6].copy_from_slice(&high_bits(q).to_le_bytes());
        store16(bytes_mut(out, 6), nibbles(q));
        finite
    })
}

/// Q4_1 / Q5_1 for one block: `(d, m, codes, finite)` with `m` NumPy's minimum (a zero
/// minimum takes the sign of the last zero), `d = (max - min) / div` and codes
/// `min(max, cvtt((x - m) * (1/d) + 0.5))`.
#[inline(always)]
fn block_affine(x: &[f32; QK], div: f32, max: u8) -> (f32, f32, [uint8x16_t; 2], bool) {
    let v = load_block(x);
    let (mut mn, mut mx) = block_min_max(&v);
    let finite = mn > f32::NEG_INFINITY && mx < f32::INFINITY;
    if !finite {
        (mn, mx) = scalar::min_max_last(x);
    } else if mn == 0.0 || mx == 0.0 {
        // Rare: a zero extreme. NumPy returns the last element equal to it, i.e. the last zero
        // (there is one, so the end index is >= 1).
        // SAFETY: NEON is baseline on aarch64; register-only intrinsics.
        let eq = unsafe { std::array::from_fn(|k| vceqzq_f32(v[k])) };
        let z = x[last_set_end(eq) - 1];
        if mn == 0.0 {
            mn = z;
        }
        if mx == 0.0 {
            mx = z;
        }
    }
    let d = (mx - mn) / div;
    // SAFETY: NEON is baseline on aarch64; register-only intrinsics.
    let shifted: Block = unsafe {
        let mnv = vdupq_n_f32(mn);
        std::array::from_fn(|k| vsubq_f32(v[k], mnv))
    };
    (d, mn, codes_mul_add(&shifted, inverse(d), 0.5, max), finite)
}

/// Q4_1 quantization, identical to [`scalar::quantize_q4_1`].
pub fn quantize_q4_1(src: &[f32], dst: &mut [u8]) -> bool {
    quantize_blocks::<20>(src, dst, |x, out| {
        let (d, m, q, finite) = block_affine(x, 15.0, 15);
        put_f16(out, d);
        put_f16(&mut out[2..], m);
        store16(bytes_mut(out, 4), nibbles(q));
        finite
    })
}

/// Q5_1 quantization, identical to [`scalar::quantize_q5_1`].
pub fn quantize_q5_1(src: &[f32], dst: &mut [u8]) -> bool {
    quantize_blocks::<24>(src, dst, |x, out| {
        let (d, m, q, finite) = block_affine(x, 31.0, 31);
        put_f16(out, d);
        put_f16(&mut out[2..], m);
        out[4..8].copy_from_slice(&high_bits(q).to_le_bytes());
        store16(bytes_mut(out, 8), nibbles(q));
        finite
    })
}

// ---------------------------------------------------------------------------------------------
// GGUF legacy dequantization.
// ---------------------------------------------------------------------------------------------

/// Runs `f` on each pair of (`B`-byte block, 32-float block), as the scalar kernels zip them.
#[inline(always)]
fn dequantize_blocks<const B: usize>(src: &[u8], dst: &mut [f32], f: impl Fn(&[u8; B], &mut [f32; QK])) {
    for (b, y) in src.chunks_exact(B).zip(dst.chunks_exact_mut(QK)) {
        f(b.try_into().expect("B-byte chunk"), y.try_into().expect("32-float chunk"));
    }
}

/// Stores `d * q` (or `d * q + m`, two roundings) for the 32 signed bytes `q` (element order).
///
/// NaN payloads: when both `d * q` and `m` are NaN, `fadd` returns its first operand, and the
/// scalar kernels compile `d * q + m` to `fadd(m, d * q)` (LLVM orders the operands of
/// commutative operations as it likes, and does so differently for vectors). So a NaN `m`
/// (always quiet: it comes from an fp16 conversion) wins in every lane, as it does in scalar.
#[inline(always)]
fn store_scaled(q: [int8x16_t; 2], d: f32, m: Option<f32>, y: &mut [f32; QK]) {
    if let Some(m) = m.filter(|m| m.is_nan()) {
        y.fill(m);
        return;
    }
    let p = y.as_mut_ptr();
    // SAFETY: NEON is baseline on aarch64; store 4h+k writes y[16h+4k..16h+4k+4], h < 2, k < 4.
    unsafe {
        let dv = vdupq_n_f32(d);
        for (h, qv) in q.into_iter().enumerate() {
            let (lo, hi) = (vmovl_s8(vget_low_s8(qv)), vmovl_high_s8(qv));
            let parts = [vmovl_s16(vget_low_s16(lo)), vmovl_high_s16(lo), vmovl_s16(vget_low_s16(hi)), vmovl_high_s16(hi)];
            for (k, part) in parts.into_iter().enumerate() {
                let mut r = vmulq_f32(dv, vcvtq_f32_s32(part));
                if let Some(m) = m {
                    r = vaddq_f32(r, vdupq_n_f32(m));
                }
                vst1q_f32(p.add(16 * h + 4 * k), r);
            }
        }
    }
}

/// The 32 nibbles of 16 bytes in element order (low nibbles, then high nibbles).
#[inline(always)]
fn load_nibbles(qs: &[u8; 16]) -> [uint8x16_t; 2] {
    // SAFETY: NEON is baseline on aarch64; the load reads exactly the 16 bytes of `qs`.
    unsafe {
        let b = vld1q_u8(qs.as_ptr());
        [vandq_u8(b, vdupq_n_u8(0x0f)), vshrq_n_u8::<4>(b)]
    }
}

/// Adds bit j of the little-endian `qh` as bit 4 of value j.
#[inline(always)]
fn with_high_bits(q: [uint8x16_t; 2], qh: &[u8; 4]) -> [uint8x16_t; 2] {
    // SAFETY: NEON is baseline on aarch64; the load reads the 16-byte array BIT.
    unsafe {
        let (w, b4) = (vld1q_u8(BIT.as_ptr()), vdupq_n_u8(0x10));
        let lo = vcombine_u8(vdup_n_u8(qh[0]), vdup_n_u8(qh[1]));
        let hi = vcombine_u8(vdup_n_u8(qh[2]), vdup_n_u8(qh[3]));
        [vorrq_u8(q[0], vandq_u8(vtstq_u8(lo, w), b4)), vorrq_u8(q[1], vandq_u8(vtstq_u8(hi, w), b4))]
    }
}

/// `q - bias` as signed bytes (`q <= 31`, so every result fits).
#[inline(always)]
fn signed(q: [uint8x16_t; 2], bias: u8) -> [int8x16_t; 2] {
    // SAFETY: NEON is baseline on aarch64; register-only intrinsics.
    unsafe {
        let b = vdupq_n_u8(bias);
        [vreinterpretq_s8_u8(vsubq_u8(q[0], b)), vreinterpretq_s8_u8(vsubq_u8(q[1], b))]
    }
}

/// Q8_0 dequantization, identical to [`scalar::dequantize_q8_0`].
pub fn dequantize_q8_0(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks::<34>(src, dst, |b, y| {
        let qs: &[u8; 32] = bytes(b, 2);
        // SAFETY: NEON is baseline on aarch64; the loads read qs[0..16] and qs[16..32].
        let q = unsafe { [vld1q_s8(qs.as_ptr().cast()), vld1q_s8(qs.as_ptr().add(16).cast())] };
        store_scaled(q, f16_at(b, 0), None, y);
    })
}

/// Q4_0 dequantization, identical to [`scalar::dequantize_q4_0`].
pub fn dequantize_q4_0(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks::<18>(src, dst, |b, y| {
        store_scaled(signed(load_nibbles(bytes(b, 2)), 8), f16_at(b, 0), None, y);
    })
}

/// Q4_1 dequantization, identical to [`scalar::dequantize_q4_1`].
pub fn dequantize_q4_1(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks::<20>(src, dst, |b, y| {
        store_scaled(signed(load_nibbles(bytes(b, 4)), 0), f16_at(b, 0), Some(f16_at(b, 2)), y);
    })
}

/// Q5_0 dequantization, identical to [`scalar::dequantize_q5_0`].
pub fn dequantize_q5_0(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks::<22>(src, dst, |b, y| {
        let q = with_high_bits(load_nibbles(bytes(b, 6)), bytes(b, 2));
        store_scaled(signed(q, 16), f16_at(b, 0), None, y);
    })
}

/// Q5_1 dequantization, identical to [`scalar::dequantize_q5_1`].
pub fn dequantize_q5_1(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks::<24>(src, dst, |b, y| {
        let q = with_high_bits(load_nibbles(bytes(b, 8)), bytes(b, 4));
        store_scaled(signed(q, 0), f16_at(b, 0), Some(f16_at(b, 2)), y);
    })
}

// ---------------------------------------------------------------------------------------------
// Round-to-nearest group kernels.
// ---------------------------------------------------------------------------------------------

/// Minimum, maximum and all-finite flag of a group, as [`scalar::group_range`] (for finite
/// input the values are exact; a zero extreme may come back with either sign).
pub fn group_range(x: &[f32]) -> (f32, f32, bool) {
    let n4 = x.len() / 4 * 4;
    if n4 == 0 {
        return scalar::group_range(x);
    }
    let mut blocks = x[..n4].chunks_exact(QK);
    // SAFETY: NEON is baseline on aarch64; each load reads 4 floats of a 4-float chunk.
    let (mut lo, mut hi) = unsafe {
        let (mut mn, mut mx) = ([vdupq_n_f32(f32::INFINITY); 2], [vdupq_n_f32(f32::NEG_INFINITY); 2]);
        for b in blocks.by_ref() {
            let v = load_block(b.try_into().expect("32-float chunk"));
            mn[0] = vminq_f32(mn[0], vminq_f32(vminq_f32(v[0], v[1]), vminq_f32(v[2], v[3])));
            mn[1] = vminq_f32(mn[1], vminq_f32(vminq_f32(v[4], v[5]), vminq_f32(v[6], v[7])));
            mx[0] = vmaxq_f32(mx[0], vmaxq_f32(vmaxq_f32(v[0], v[1]), vmaxq_f32(v[2], v[3])));
            mx[1] = vmaxq_f32(mx[1], vmaxq_f32(vmaxq_f32(v[4], v[5]), vmaxq_f32(v[6], v[7])));
        }
        for c in blocks.remainder().chunks_exact(4) {
            let v = vld1q_f32(c.as_ptr());
            mn[0] = vminq_f32(mn[0], v);
            mx[0] = vmaxq_f32(mx[0], v);
        }
        (vminvq_f32(vminq_f32(mn[0], mn[1])), vmaxvq_f32(vmaxq_f32(mx[0], mx[1])))
    };
    // fmin/fmax propagate NaN; without NaN an infinity reaches an extreme.
    let mut finite = lo > f32::NEG_INFINITY && hi < f32::INFINITY;
    if n4 < x.len() {
        let (tl, th, tf) = scalar::group_range(&x[n4..]);
        lo = lo.min(tl);
        hi = hi.max(th);
        finite &= tf;
    }
    (lo, hi, finite)
}

/// `clamp(round_half_even(v*inv) + zero, lo, hi) as u8` lane by lane, as 32-bit lanes holding
/// `0..=255`. For `lo <= hi` the clamp equals `f32::clamp` up to the sign of a zero, NaN stays
/// NaN, and `vcvtq_u32_f32` (NaN -> 0, saturating) plus the saturating narrows of the callers
/// give Rust's `as u8`.
#[inline(always)]
fn code_lanes(v: float32x4_t, inv: float32x4_t, zero: float32x4_t, lo: float32x4_t, hi: float32x4_t) -> uint32x4_t {
    // SAFETY: NEON is baseline on aarch64; register-only intrinsics.
    unsafe {
        let r = vaddq_f32(vrndnq_f32(vmulq_f32(v, inv)), zero);
        vcvtq_u32_f32(vmaxq_f32(lo, vminq_f32(hi, r)))
    }
}

/// `clamp(round_half_even(x*inv) + zero, lo, hi) as u8`, identical to [`scalar::group_codes`].
pub fn group_codes(x: &[f32], inv: f32, zero: f32, lo: f32, hi: f32, out: &mut [u8]) {
    let ordered = lo <= hi;
    if !ordered {
        // `f32::clamp` panics here (when there is any element): let the scalar code do so.
        return scalar::group_codes(x, inv, zero, lo, hi, out);
    }
    let n = x.len().min(out.len());
    let (x, out) = (&x[..n], &mut out[..n]);
    let n4 = n / 4 * 4;
    // SAFETY: NEON is baseline on aarch64; each load reads 4 floats of a 4-float chunk of `x`
    // and each store writes the 16 bytes of a 16-byte chunk of `out`.
    unsafe {
        let (invv, zv, lov, hiv) = (vdupq_n_f32(inv), vdupq_n_f32(zero), vdupq_n_f32(lo), vdupq_n_f32(hi));
        let mut xb = x[..n4].chunks_exact(16);
        let mut ob = out[..n4].chunks_exact_mut(16);
        for (b, o) in xb.by_ref().zip(ob.by_ref()) {
            let c: [uint32x4_t; 4] = std::array::from_fn(|k| code_lanes(vld1q_f32(b.as_ptr().add(4 * k)), invv, zv, lov, hiv));
            let h0 = vqmovn_high_u32(vqmovn_u32(c[0]), c[1]);
            let h1 = vqmovn_high_u32(vqmovn_u32(c[2]), c[3]);
            vst1q_u8(o.as_mut_ptr(), vqmovn_high_u16(vqmovn_u16(h0), h1));
        }
        for (b, o) in xb.remainder().chunks_exact(4).zip(ob.into_remainder().chunks_exact_mut(4)) {
            let c = code_lanes(vld1q_f32(b.as_ptr()), invv, zv, lov, hiv);
            let w = vqmovn_u16(vcombine_u16(vqmovn_u32(c), vdup_n_u16(0)));
            o.copy_from_slice(&vget_lane_u32::<0>(vreinterpret_u32_u8(w)).to_le_bytes());
        }
    }
    scalar::group_codes(&x[n4..], inv, zero, lo, hi, &mut out[n4..]);
}

/// `(code - zero) * scale`, identical to [`scalar::group_values`].
pub fn group_values(codes: &[u8], scale: f32, zero: f32, out: &mut [f32]) {
    let n = codes.len().min(out.len());
    let (codes, out) = (&codes[..n], &mut out[..n]);
    let n4 = n / 4 * 4;
    // SAFETY: NEON is baseline on aarch64; each load reads the 16 bytes of a 16-byte chunk of
    // `codes` (or a local 4-lane array) and each store writes 4 floats inside a chunk of `out`
    // of 16 (store k at 4k) or 4 floats.
    unsafe {
        let (sv, zv) = (vdupq_n_f32(scale), vdupq_n_f32(zero));
        let value = |c: uint32x4_t| vmulq_f32(vsubq_f32(vcvtq_f32_u32(c), zv), sv);
        let mut cb = codes[..n4].chunks_exact(16);
        let mut ob = out[..n4].chunks_exact_mut(16);
        for (c, o) in cb.by_ref().zip(ob.by_ref()) {
            let b = vld1q_u8(c.as_ptr());
            let (lo, hi) = (vmovl_u8(vget_low_u8(b)), vmovl_high_u8(b));
            let parts = [vmovl_u16(vget_low_u16(lo)), vmovl_high_u16(lo), vmovl_u16(vget_low_u16(hi)), vmovl_high_u16(hi)];
            for (k, part) in parts.into_iter().enumerate() {
                vst1q_f32(o.as_mut_ptr().add(4 * k), value(part));
            }
        }
        for (c, o) in cb.remainder().chunks_exact(4).zip(ob.into_remainder().chunks_exact_mut(4)) {
            let lanes = [c[0] as u32, c[1] as u32, c[2] as u32, c[3] as u32];
            vst1q_f32(o.as_mut_ptr(), value(vld1q_u32(lanes.as_ptr())));
        }
    }
    scalar::group_values(&codes[n4..], scale, zero, &mut out[n4..]);
}

/// Two codes a byte, identical to [`scalar::pack_nibbles`]: `vld2q_u8` splits even and odd codes.
pub fn pack_nibbles(codes: &[u8], out: &mut [u8]) {
    let whole = (codes.len() / 32).min(out.len() / 16);
    for i in 0..whole {
        // SAFETY: i < whole, so bytes 32i..32i+32 of `codes` and 16i..16i+16 of `out` exist;
        // NEON is part of the aarch64 baseline.
        unsafe {
            let v = vld2q_u8(codes.as_ptr().add(32 * i));
            let lo = vandq_u8(v.0, vdupq_n_u8(0x0F));
            vst1q_u8(out.as_mut_ptr().add(16 * i), vorrq_u8(lo, vshlq_n_u8::<4>(v.1)));
        }
    }
    scalar::pack_nibbles(&codes[32 * whole..], &mut out[16 * whole..]);
}

/// Inverse of [`pack_nibbles`], identical to [`scalar::unpack_nibbles`].
pub fn unpack_nibbles(packed: &[u8], out: &mut [u8]) {
    let whole = (out.len() / 32).min(packed.len() / 16);
    for i in 0..whole {
        // SAFETY: i < whole, so bytes 16i..16i+16 of `packed` and 32i..32i+32 of `out` exist.
        unsafe {
            let b = vld1q_u8(packed.as_ptr().add(16 * i));
            let pair = uint8x16x2_t(vandq_u8(b, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(b));
            vst2q_u8(out.as_mut_ptr().add(32 * i), pair);
        }
    }
    scalar::unpack_nibbles(&packed[16 * whole..], &mut out[32 * whole..]);
}
