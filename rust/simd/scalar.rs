//! Scalar kernels: always compiled, the oracle every SIMD level is tested against.
//!
//! The GGUF legacy kernels reproduce the `gguf` package's NumPy quantizers (and ggml's
//! `quantize_row_*_ref`) bit for bit, including its corner cases:
//! * float->integer casts behave like x86 `cvttss2si` followed by keeping the low byte
//!   (NaN, infinities and out-of-range values become 0, 300.0 becomes 44), see [`cvtt`];
//! * NumPy's `min`/`max` return the *last* element equal to the extreme (this decides the sign of
//!   a zero minimum), `argmax` the *first*;
//! * products and sums are rounded separately, never fused (no FMA).

use half::f16;

use super::GridParams;

pub const QK: usize = 32; // block size of every legacy GGUF type

/// `x as i32` the way x86 `cvttss2si` does it: truncation, and `i32::MIN` for NaN/out of range.
#[inline(always)]
pub fn cvtt(x: f32) -> i32 {
    if x > -2147483904.0 && x < 2147483648.0 {
        x as i32
    } else {
        i32::MIN
    }
}

/// IEEE float16 bits of `x`, rounded to nearest even (as NumPy's `astype(float16)`).
#[inline(always)]
pub fn f16_bits(x: f32) -> u16 {
    f16::from_f32(x).to_bits()
}

#[inline(always)]
pub fn f16_value(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}

/// NumPy `min` and `max` of a block: on ties the last equal element wins (matters for ±0).
#[inline(always)]
pub fn min_max_last(x: &[f32]) -> (f32, f32) {
    let (mut mn, mut mx) = (x[0], x[0]);
    for &v in &x[1..] {
        if v <= mn {
            mn = v;
        }
        if v >= mx {
            mx = v;
        }
    }
    (mn, mx)
}

/// The signed value of the first element with the largest magnitude (NumPy `argmax(abs(x))`).
#[inline(always)]
pub fn first_absmax(x: &[f32]) -> f32 {
    let mut best = x[0];
    for &v in &x[1..] {
        if v.abs() > best.abs() {
            best = v;
        }
    }
    best
}

/// `1/d`, or 0 when `d == 0` (the block formats' guard against dividing by zero).
#[inline(always)]
pub fn inverse(d: f32) -> f32 {
    if d == 0.0 {
        0.0
    } else {
        1.0 / d
    }
}

pub fn all_finite(x: &[f32]) -> bool {
    x.iter().all(|v| v.is_finite())
}

/// Q8_0: `d = amax/127` (fp16), 32 signed bytes `round_half_away(x/d)`. 34 bytes a block.
pub fn quantize_q8_0(src: &[f32], dst: &mut [u8]) -> bool {
    for (x, out) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(34)) {
        let amax = x.iter().fold(0.0f32, |m, v| if v.abs() >= m { v.abs() } else { m });
        let d = amax / 127.0;
        let id = inverse(d);
        out[..2].copy_from_slice(&f16_bits(d).to_le_bytes());
        for (o, &v) in out[2..].iter_mut().zip(x) {
            *o = cvtt((v * id).round()) as u8;
        }
    }
    all_finite(src)
}

/// Q4_0: `d = max/-8` with `max` the signed value of largest magnitude; nibbles
/// `min(15, trunc(x/d + 8.5))`, element j in the low nibble of byte j, j+16 in its high nibble.
pub fn quantize_q4_0(src: &[f32], dst: &mut [u8]) -> bool {
    for (x, out) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(18)) {
        let d = first_absmax(x) / -8.0;
        let id = inverse(d);
        out[..2].copy_from_slice(&f16_bits(d).to_le_bytes());
        let q = |v: f32| (cvtt(v * id + 8.5) as u8).min(15);
        for j in 0..16 {
            out[2 + j] = q(x[j]) | (q(x[j + 16]) << 4);
        }
    }
    all_finite(src)
}

/// Q4_1: `d = (max-min)/15`, `m = min` (both fp16), nibbles `min(15, trunc((x-min)/d + 0.5))`.
pub fn quantize_q4_1(src: &[f32], dst: &mut [u8]) -> bool {
    for (x, out) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(20)) {
        let (mn, mx) = min_max_last(x);
        let d = (mx - mn) / 15.0;
        let id = inverse(d);
        out[..2].copy_from_slice(&f16_bits(d).to_le_bytes());
        out[2..4].copy_from_slice(&f16_bits(mn).to_le_bytes());
        let q = |v: f32| (cvtt((v - mn) * id + 0.5) as u8).min(15);
        for j in 0..16 {
            out[4 + j] = q(x[j]) | (q(x[j + 16]) << 4);
        }
    }
    all_finite(src)
}

/// Writes 32 five-bit values as ggml does: bit 4 of value j into bit j of a little-endian u32
/// `qh`, low nibbles as in Q4 (j low, j+16 high).
#[inline(always)]
fn put_q5(q: &[u8; QK], qh_out: &mut [u8], qs_out: &mut [u8]) {
    let mut qh = 0u32;
    for (j, &v) in q.iter().enumerate() {
        qh |= (((v >> 4) & 1) as u32) << j;
    }
    qh_out.copy_from_slice(&qh.to_le_bytes());
    for j in 0..16 {
        qs_out[j] = (q[j] & 0x0F) | (q[j + 16] << 4);
    }
}

/// Q5_0: `d = max/-16`, values `min(31, trunc(x/d + 16.5))`: fp16 d, u32 high bits, 16 nibble bytes.
pub fn quantize_q5_0(src: &[f32], dst: &mut [u8]) -> bool {
    for (x, out) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(22)) {
        let d = first_absmax(x) / -16.0;
        let id = inverse(d);
        out[..2].copy_from_slice(&f16_bits(d).to_le_bytes());
        let mut q = [0u8; QK];
        for (o, &v) in q.iter_mut().zip(x) {
            *o = (cvtt(v * id + 16.5) as u8).min(31);
        }
        let (qh, qs) = out[2..].split_at_mut(4);
        put_q5(&q, qh, qs);
    }
    all_finite(src)
}

/// Q5_1: `d = (max-min)/31`, `m = min`, values `min(31, trunc((x-min)/d + 0.5))`.
pub fn quantize_q5_1(src: &[f32], dst: &mut [u8]) -> bool {
    for (x, out) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(24)) {
        let (mn, mx) = min_max_last(x);
        let d = (mx - mn) / 31.0;
        let id = inverse(d);
        out[..2].copy_from_slice(&f16_bits(d).to_le_bytes());
        out[2..4].copy_from_slice(&f16_bits(mn).to_le_bytes());
        let mut q = [0u8; QK];
        for (o, &v) in q.iter_mut().zip(x) {
            *o = (cvtt((v - mn) * id + 0.5) as u8).min(31);
        }
        let (qh, qs) = out[4..].split_at_mut(4);
        put_q5(&q, qh, qs);
    }
    all_finite(src)
}

#[inline(always)]
fn half_at(b: &[u8], at: usize) -> f32 {
    f16_value(u16::from_le_bytes([b[at], b[at + 1]]))
}

#[inline(always)]
fn nibble(qs: &[u8], j: usize) -> u8 {
    if j < 16 {
        qs[j] & 0x0F
    } else {
        qs[j - 16] >> 4
    }
}

pub fn dequantize_q8_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(34).zip(dst.chunks_exact_mut(QK)) {
        let d = half_at(b, 0);
        for (o, &q) in y.iter_mut().zip(&b[2..]) {
            *o = q as i8 as f32 * d;
        }
    }
}

pub fn dequantize_q4_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(18).zip(dst.chunks_exact_mut(QK)) {
        let d = half_at(b, 0);
        for (j, o) in y.iter_mut().enumerate() {
            *o = d * (nibble(&b[2..], j) as i32 - 8) as f32;
        }
    }
}

pub fn dequantize_q4_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(20).zip(dst.chunks_exact_mut(QK)) {
        let (d, m) = (half_at(b, 0), half_at(b, 2));
        for (j, o) in y.iter_mut().enumerate() {
            *o = d * nibble(&b[4..], j) as f32 + m;
        }
    }
}

#[inline(always)]
fn q5_value(qh: u32, qs: &[u8], j: usize) -> u8 {
    nibble(qs, j) | ((((qh >> j) & 1) as u8) << 4)
}

pub fn dequantize_q5_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(22).zip(dst.chunks_exact_mut(QK)) {
        let d = half_at(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        for (j, o) in y.iter_mut().enumerate() {
            *o = d * (q5_value(qh, &b[6..], j) as i32 - 16) as f32;
        }
    }
}

pub fn dequantize_q5_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(24).zip(dst.chunks_exact_mut(QK)) {
        let (d, m) = (half_at(b, 0), half_at(b, 2));
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        for (j, o) in y.iter_mut().enumerate() {
            *o = d * q5_value(qh, &b[8..], j) as f32 + m;
        }
    }
}

// ---- round-to-nearest group quantization (the `rtn` module's inner loops) ----

/// Minimum and maximum of a group and whether every value is finite.
pub fn group_range(x: &[f32]) -> (f32, f32, bool) {
    let (mut mn, mut mx, mut finite) = (f32::INFINITY, f32::NEG_INFINITY, true);
    for &v in x {
        mn = mn.min(v);
        mx = mx.max(v);
        finite &= v.is_finite();
    }
    (mn, mx, finite)
}

/// A nonzero scale raised to at least `f32::MIN_POSITIVE` (so `1/s` is finite), then, for
/// float16 storage, rounded up to the smallest float16 `>= s` (infinite when it overflows).
pub fn round_up_scale(s: f32, f16: bool) -> f32 {
    let s = if s > 0.0 && s < f32::MIN_POSITIVE { f32::MIN_POSITIVE } else { s };
    if !f16 {
        return s;
    }
    let h = half::f16::from_f32(s);
    if h.to_f32() < s {
        half::f16::from_bits(h.to_bits() + 1).to_f32()
    } else {
        h.to_f32()
    }
}

/// Scale, zero point and `1/scale` of every group from its minimum and maximum; false if a
/// scale overflowed (is infinite). Zero points are never `-0.0`.
pub fn grids(mins: &[f32], maxs: &[f32], p: &GridParams, scales: &mut [f32], zeros: &mut [f32], invs: &mut [f32]) -> bool {
    let mut finite = true;
    for i in 0..mins.len() {
        let (gmin, gmax) = (mins[i], maxs[i]);
        let (scale, zero) = if p.symmetric {
            let (a, b) = (gmin.abs(), gmax.abs());
            (round_up_scale(if a > b { a } else { b } / p.qm, p.f16), p.offset)
        } else {
            // No negative zeros: mn is +0 or negative, mx is +0 or positive.
            let mn = if gmin < 0.0 { gmin } else { 0.0 };
            let mx = if gmax > 0.0 { gmax } else { 0.0 };
            let scale = round_up_scale((mx - mn) / p.top, p.f16);
            (scale, if scale > 0.0 { (-mn / scale).round_ties_even().clamp(0.0, p.top) + 0.0 } else { 0.0 })
        };
        finite &= scale.is_finite();
        scales[i] = scale;
        zeros[i] = zero;
        invs[i] = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    }
    finite
}

/// Codes `clamp(round_half_even(x*inv) + zero, lo, hi)` of one group.
pub fn group_codes(x: &[f32], inv: f32, zero: f32, lo: f32, hi: f32, out: &mut [u8]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = ((v * inv).round_ties_even() + zero).clamp(lo, hi) as u8;
    }
}

/// Values `(code - zero) * scale` of one group.
pub fn group_values(codes: &[u8], scale: f32, zero: f32, out: &mut [f32]) {
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = (c as f32 - zero) * scale;
    }
}

// ---- 4-bit packing (the hot width of `crate::pack`) ----

/// Packs codes two to a byte, code `2j` in the low nibble (high bits of each code ignored);
/// `out.len() == codes.len().div_ceil(2)`.
pub fn pack_nibbles(codes: &[u8], out: &mut [u8]) {
    let pairs = codes.chunks_exact(2);
    let tail = pairs.remainder();
    for (o, p) in out.iter_mut().zip(pairs) {
        *o = (p[0] & 0x0F) | (p[1] << 4);
    }
    if let [last] = tail {
        out[codes.len() / 2] = last & 0x0F;
    }
}

/// Inverse of [`pack_nibbles`]: `out.len()` codes from `packed.len() == out.len().div_ceil(2)`.
pub fn unpack_nibbles(packed: &[u8], out: &mut [u8]) {
    let n = out.len();
    let mut pairs = out.chunks_exact_mut(2);
    for (p, &b) in (&mut pairs).zip(packed) {
        p[0] = b & 0x0F;
        p[1] = b >> 4;
    }
    if let [last] = pairs.into_remainder() {
        *last = packed[n / 2] & 0x0F;
    }
}

// ---- NF4 (bitsandbytes' 4-bit NormalFloat codebook) ----

/// The 16 NF4 values (bitsandbytes `create_normal_map`, as float32), code order.
// bitsandbytes' literals verbatim: Rust rounds them to float32 exactly as C's `f` suffix does.
#[allow(clippy::excessive_precision)]
pub const NF4: [f32; 16] = [
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
];

/// The 15 decision thresholds of bitsandbytes' `dQuantizeNF4`, low to high.
#[allow(clippy::excessive_precision)]
pub const NF4_MID: [f32; 15] = [
    -0.8480964004993439,
    -0.6106329262256622,
    -0.4599952697753906,
    -0.33967943489551544,
    -0.23460740596055984,
    -0.13791173323988914,
    -0.045525018125772476,
    0.03979014977812767,
    0.1202552504837513,
    0.2035212516784668,
    0.2920137718319893,
    0.3893125355243683,
    0.5016634166240692,
    0.6427869200706482,
    0.8614784181118011,
];

/// NF4 codes of one block: `x * inv` (one float32 product, as bitsandbytes' kernel) and the
/// number of thresholds it exceeds (`dQuantizeNF4`'s tree: strict `>`, so NaN gives code 0).
pub fn nf4_codes(x: &[f32], inv: f32, out: &mut [u8]) {
    for (o, &v) in out.iter_mut().zip(x) {
        let n = v * inv;
        *o = NF4_MID.iter().map(|&t| (n > t) as u8).sum();
    }
}

/// `NF4[code] * scale` for every code of a block.
pub fn nf4_values(codes: &[u8], scale: f32, out: &mut [f32]) {
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = NF4[(c & 0x0F) as usize] * scale;
    }
}
