//! The NEON kernels against their scalar oracles: bit-identical bytes, f32 bit patterns and
//! all-finite flags on seeded random and adversarial inputs (NaN/infinity inputs: flag only).

use super::{aarch64_neon as neon, scalar};

/// xorshift64*: tiny, seeded, no dependencies.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
    /// A power of ten from 1e-45 to 1e38.
    fn magnitude(&mut self) -> f32 {
        10f32.powi(self.below(84) as i32 - 45)
    }
    /// Any finite float (random bit pattern).
    fn finite_bits(&mut self) -> f32 {
        loop {
            let v = f32::from_bits(self.next() as u32);
            if v.is_finite() {
                return v;
            }
        }
    }
}

const TINY: f32 = 1e-45; // rounds to the smallest positive subnormal, 2^-149

const SPECIALS: [f32; 22] = [
    0.0,
    -0.0,
    1e-39,
    -5e-40,
    TINY,
    -TINY,
    f32::MIN_POSITIVE,
    3e38,
    -3e38,
    f32::MAX,
    f32::MIN,
    7e4,
    -1e5,
    65504.0,
    65520.0,
    0.5,
    -0.5,
    1.5,
    -8.0,
    127.5,
    6e-8,
    -2.5,
];

/// NaNs (quiet of both signs, signalling) and infinities.
fn nonfinite() -> [f32; 5] {
    [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::from_bits(0x7f80_0001)]
}

type QuantizeFn = fn(&[f32], &mut [u8]) -> bool;
type DequantizeFn = fn(&[u8], &mut [f32]);

/// One GGUF legacy type: name, bytes per block, (scalar, NEON) quantizers and dequantizers.
struct Q {
    name: &'static str,
    bytes: usize,
    quantize: (QuantizeFn, QuantizeFn),
    dequantize: (DequantizeFn, DequantizeFn),
}

const TYPES: [Q; 5] = [
    Q {
        name: "q8_0",
        bytes: 34,
        quantize: (scalar::quantize_q8_0, neon::quantize_q8_0),
        dequantize: (scalar::dequantize_q8_0, neon::dequantize_q8_0),
    },
    Q {
        name: "q4_0",
        bytes: 18,
        quantize: (scalar::quantize_q4_0, neon::quantize_q4_0),
        dequantize: (scalar::dequantize_q4_0, neon::dequantize_q4_0),
    },
    Q {
        name: "q4_1",
        bytes: 20,
        quantize: (scalar::quantize_q4_1, neon::quantize_q4_1),
        dequantize: (scalar::dequantize_q4_1, neon::dequantize_q4_1),
    },
    Q {
        name: "q5_0",
        bytes: 22,
        quantize: (scalar::quantize_q5_0, neon::quantize_q5_0),
        dequantize: (scalar::dequantize_q5_0, neon::dequantize_q5_0),
    },
    Q {
        name: "q5_1",
        bytes: 24,
        quantize: (scalar::quantize_q5_1, neon::quantize_q5_1),
        dequantize: (scalar::dequantize_q5_1, neon::dequantize_q5_1),
    },
];

/// Values on rounding ties / truncation boundaries of every type: multiples of `s/2` for a
/// power of two `s`, with the block's extremes making the scale exactly `s`.
fn tie_block(r: &mut Rng) -> Vec<f32> {
    let s = 2f32.powi(r.below(60) as i32 - 30);
    let (lo, hi, ends): (i32, i32, &[f32]) =
        r.pick(&[(-126, 126, &[127.0][..]), (-7, 7, &[-8.0]), (-15, 15, &[-16.0]), (-4, 11, &[-4.0, 11.0]), (-10, 21, &[-10.0, 21.0])]);
    let s = if ends.len() == 1 && r.coin() { -s } else { s };
    let mut x: Vec<f32> = (0..32).map(|_| (2 * lo + r.below(2 * (hi - lo) as usize + 1) as i32) as f32 * 0.5 * s).collect();
    for &e in ends {
        x[r.below(32)] = e * s;
    }
    x
}

/// One block of 32 finite values of a random kind.
fn finite_block(r: &mut Rng) -> Vec<f32> {
    let mut x = vec![0f32; 32];
    match r.below(17) {
        0..=2 => {
            let m = r.magnitude();
            x.iter_mut().for_each(|v| *v = r.unit() * m);
        }
        3 => {} // all +0
        4 => x.iter_mut().for_each(|v| *v = -0.0),
        5 => x.iter_mut().for_each(|v| *v = if r.coin() { 0.0 } else { -0.0 }),
        6 => {
            let c = r.unit() * r.magnitude();
            x.iter_mut().for_each(|v| *v = c);
        }
        7 => {
            x.iter_mut().for_each(|v| *v = r.unit());
            x[r.below(32)] = r.pick(&[1e30, -1e30, 3e38, -3e38, 7e4, -1e5, 65520.0, 1e4]);
        }
        8 => {
            let sub = [1e-39, -5e-40, TINY, -TINY, 0.0, -0.0, f32::MIN_POSITIVE, 2.0 * TINY];
            x.iter_mut().for_each(|v| *v = r.pick(&sub) * if r.below(3) == 0 { r.unit() } else { 1.0 });
        }
        9 | 10 => x = tie_block(r),
        11 => x.iter_mut().for_each(|v| *v = r.pick(&[3e38, -3e38, f32::MAX, f32::MIN, 1e38, -2e38])),
        12 => x.iter_mut().for_each(|v| *v = if r.coin() { r.pick(&SPECIALS) } else { r.unit() * 7e4 }),
        13 => x.iter_mut().for_each(|v| *v = r.finite_bits()),
        14 => {
            // Small integers: many tied magnitudes (first argmax) and tied extremes.
            x.iter_mut().for_each(|v| *v = r.below(7) as f32 - 3.0);
        }
        15 => {
            // Zeros of both signs mixed with values of one sign: a zero minimum or maximum.
            let sign = if r.coin() { 1.0 } else { -1.0 };
            x.iter_mut().for_each(|v| *v = if r.coin() { r.pick(&[0.0, -0.0]) } else { sign * r.unit().abs() * r.magnitude() });
        }
        _ => {
            // Tied |max| with opposite signs at random positions.
            let m = r.magnitude();
            x.iter_mut().for_each(|v| *v = r.unit() * m * 0.5);
            let (i, j) = (r.below(32), r.below(32));
            x[i] = m;
            x[j] = -m;
        }
    }
    x
}

/// A block with one to three non-finite values, or random bits (which may be all finite).
fn nonfinite_block(r: &mut Rng) -> Vec<f32> {
    if r.below(4) == 0 {
        return (0..32).map(|_| f32::from_bits(r.next() as u32)).collect();
    }
    let mut x = finite_block(r);
    for _ in 0..1 + r.below(3) {
        x[r.below(32)] = r.pick(&nonfinite());
    }
    x
}

/// Quantizes with both kernels; equal flags, and equal bytes when the input is finite.
fn check_quantize(t: &Q, src: &[f32], dst_len: usize) {
    let (mut a, mut b) = (vec![0xA5u8; dst_len], vec![0xA5u8; dst_len]);
    let (fa, fb) = (t.quantize.0(src, &mut a), t.quantize.1(src, &mut b));
    assert_eq!(fa, fb, "{} finite flag differs for {src:?}", t.name);
    if fa {
        if let Some(i) = (0..dst_len).find(|&i| a[i] != b[i]) {
            let blk = i / t.bytes;
            let xs = src.get(blk * 32..blk * 32 + 32);
            panic!("{} byte {i} (block {blk}): scalar {:#04x} neon {:#04x}; block {xs:?}", t.name, a[i], b[i]);
        }
    }
}

#[test]
fn quantize_random_blocks_match_scalar() {
    let mut r = Rng::new(1);
    for t in &TYPES {
        for _ in 0..3000 {
            let x = if r.below(5) == 0 { nonfinite_block(&mut r) } else { finite_block(&mut r) };
            check_quantize(t, &x, t.bytes);
        }
    }
}

#[test]
fn quantize_adversarial_blocks_match_scalar() {
    assert_eq!(TINY.to_bits(), 1);
    let mut r = Rng::new(2);
    let mut blocks: Vec<Vec<f32>> = vec![vec![0.0; 32], vec![-0.0; 32]];
    for c in [1.0f32, -1.0, 0.5, -2.5, 1e-39, -5e-40, TINY, -TINY, 3e38, -3e38, 7e4, -1e5, f32::MAX, f32::MIN] {
        blocks.push(vec![c; 32]);
    }
    for _ in 0..40 {
        // Mixed ±0 in random positions, alone and with one positive or negative value.
        let z: Vec<f32> = (0..32).map(|_| if r.coin() { 0.0 } else { -0.0 }).collect();
        blocks.push(z.clone());
        for v in [1.0, -1.0, TINY, -TINY] {
            let mut w = z.clone();
            w[r.below(32)] = v;
            blocks.push(w);
        }
    }
    for i in 0..32 {
        // A single huge outlier (or a single non-zero) at every position.
        for (base, out) in [(0.01f32, 1e30f32), (0.0, 5.0), (-0.0, -5.0), (1.0, -3e38), (0.5, 7e4), (0.0, TINY)] {
            let mut x = vec![base; 32];
            x[i] = out;
            blocks.push(x);
        }
    }
    // Subnormals: 1/d overflows to infinity, products become ±inf or NaN.
    blocks.push((0..32).map(|i| [1e-39, -5e-40, TINY, 0.0][i % 4]).collect());
    blocks.push((0..32).map(|i| [TINY, -TINY, -0.0, 2.0 * TINY][i % 4]).collect());
    blocks.push((0..32).map(|i| if i == 7 { 1e-39 } else { 1e-41 * i as f32 }).collect());
    // Rounding ties.
    for s in [1.0f32, -1.0, 0.25, 2f32.powi(-20)] {
        blocks.push((0..32).map(|i| (i as f32 - 16.0 + 0.5) * s).collect());
        blocks.push((0..32).map(|i| if i == 31 { 127.0 * s } else { (i as f32 * 4.0 - 63.5) * s }).collect());
        let mut halves = vec![-8.0 * s, 8.0 * s];
        halves.extend((0..30).map(|k| (-7.0 + 0.5 * k as f32) * s));
        blocks.push(halves.clone());
        halves.swap(0, 1);
        blocks.push(halves);
    }
    // Range overflow, values beyond float16, tied magnitudes with opposite signs.
    blocks.push((0..32).map(|i| if i % 2 == 0 { 3e38 } else { -3e38 }).collect());
    blocks.push((0..32).map(|i| [3e38, -1.0, 0.0, -3e38][i % 4]).collect());
    blocks.push((0..32).map(|i| [7e4, -1e5, 1.0, 65520.0][i % 4]).collect());
    blocks.push((0..32).map(|i| [1e6, 2e5, -7e4][i % 3]).collect());
    for first in [3.0f32, -3.0] {
        let mut x: Vec<f32> = (0..32).map(|_| r.unit() * 2.9).collect();
        x[0] = first;
        x[1] = -first;
        blocks.push(x.clone());
        x[0] = 0.5;
        x[20] = first;
        x[31] = -first;
        blocks.push(x);
    }
    for x in &blocks {
        for t in &TYPES {
            check_quantize(t, x, t.bytes);
        }
    }
    // Non-finite values at every position: compare the flag.
    for nf in nonfinite() {
        for i in 0..32 {
            for base in [0.0f32, -1.0, 3e38] {
                let mut x: Vec<f32> = (0..32).map(|j| base + j as f32).collect();
                x[i] = nf;
                for t in &TYPES {
                    check_quantize(t, &x, t.bytes);
                }
            }
        }
    }
}

#[test]
fn quantize_many_blocks_and_ragged_lengths_match_scalar() {
    let mut r = Rng::new(3);
    for round in 0..60 {
        let nb = 1 + r.below(40);
        let mut src: Vec<f32> = Vec::new();
        for _ in 0..nb {
            src.extend(if r.below(12) == 0 { nonfinite_block(&mut r) } else { finite_block(&mut r) });
        }
        if round % 3 == 1 {
            // A ragged tail (no block): it still counts for the flag.
            let tail = r.below(32);
            src.extend((0..tail).map(|_| if r.below(4) == 0 { r.pick(&nonfinite()) } else { r.unit() }));
        }
        for t in &TYPES {
            // Exact, shorter (blocks left out) and longer (bytes left alone) outputs.
            for dst_blocks in [nb, nb / 2, nb + 2] {
                check_quantize(t, &src, dst_blocks * t.bytes + if round % 2 == 0 { 0 } else { 5 });
            }
        }
    }
    for t in &TYPES {
        check_quantize(t, &[], 0);
        check_quantize(t, &[f32::NAN; 5], 0);
        check_quantize(t, &[1.0; 64], 0);
    }
}

/// Q8_0's round-half-away on every tie and its neighbours, at every `d` power of two.
#[test]
fn q8_0_rounding_ties_and_neighbours_match_scalar() {
    let t = &TYPES[0];
    for e in -20..20 {
        let s = 2f32.powi(e);
        for k in -127i32..127 {
            let tie = k as f32 + 0.5;
            let mut x = vec![127.0 * s; 32];
            for (j, v) in x.iter_mut().enumerate().skip(1) {
                let p = match j % 3 {
                    0 => tie,
                    1 => f32::from_bits(tie.to_bits() + 1),
                    _ => f32::from_bits(tie.to_bits() - 1),
                };
                *v = p * s * if j % 2 == 0 { 1.0 } else { -1.0 };
            }
            check_quantize(t, &x, t.bytes);
        }
    }
}

fn check_dequantize(t: &Q, src: &[u8], dst_len: usize) {
    let (mut a, mut b) = (vec![-7.25f32; dst_len], vec![-7.25f32; dst_len]);
    t.dequantize.0(src, &mut a);
    t.dequantize.1(src, &mut b);
    let affine = matches!(t.name, "q4_1" | "q5_1");
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        if affine && x.is_nan() && x.to_bits() != y.to_bits() {
            // `d * q + m` with both terms NaN: `fadd` returns its first operand, and which one
            // that is in the scalar kernel is LLVM's choice (release: `m`, debug: `d * q`).
            // The NEON kernel always returns `m` there.
            let blk = &src[i / 32 * t.bytes..];
            let m = scalar::f16_value(u16::from_le_bytes([blk[2], blk[3]]));
            if m.is_nan() && y.to_bits() == m.to_bits() {
                continue;
            }
        }
        assert_eq!(
            x.to_bits(),
            y.to_bits(),
            "{} value {i}: scalar {x:e} ({:#010x}) neon {y:e} ({:#010x}); block {:?}",
            t.name,
            x.to_bits(),
            y.to_bits(),
            src.get(i / 32 * t.bytes..(i / 32 + 1) * t.bytes)
        );
    }
}

#[test]
fn dequantize_random_bytes_match_scalar() {
    let mut r = Rng::new(4);
    // fp16 scales worth forcing: NaNs (quiet, signalling, negative), infinities, subnormals,
    // zeros, the largest finite value, one.
    let halves: [u16; 12] = [0x7e00, 0x7c01, 0xfe00, 0x7d55, 0x7c00, 0xfc00, 0x0001, 0x8001, 0x0000, 0x8000, 0x7bff, 0x3c00];
    for t in &TYPES {
        for _ in 0..400 {
            let nb = 1 + r.below(8);
            let mut src: Vec<u8> = (0..nb * t.bytes).map(|_| r.next() as u8).collect();
            for blk in src.chunks_exact_mut(t.bytes) {
                for at in [0, 2] {
                    if r.below(3) == 0 && (at == 0 || matches!(t.name, "q4_1" | "q5_1")) {
                        blk[at..at + 2].copy_from_slice(&r.pick(&halves).to_le_bytes());
                    }
                }
                if r.below(6) == 0 {
                    // Zero codes (inf * 0 = NaN) or all-ones codes.
                    let fill = if r.coin() { 0 } else { 0xff };
                    blk[2..].iter_mut().skip(if t.bytes == 20 || t.bytes == 24 { 2 } else { 0 }).for_each(|b| *b = fill);
                }
            }
            let extra = r.below(3) * 32;
            check_dequantize(t, &src, nb * 32 + extra);
            check_dequantize(t, &src, (nb / 2) * 32);
            src.extend((0..r.below(t.bytes)).map(|_| r.next() as u8)); // ragged source
            check_dequantize(t, &src, nb * 32);
        }
        // Every scale pair of the special list, with random codes.
        for &d in &halves {
            for &m in &halves {
                let mut blk: Vec<u8> = (0..t.bytes).map(|_| r.next() as u8).collect();
                blk[..2].copy_from_slice(&d.to_le_bytes());
                if matches!(t.name, "q4_1" | "q5_1") {
                    blk[2..4].copy_from_slice(&m.to_le_bytes());
                }
                check_dequantize(t, &blk, 32);
            }
        }
    }
}

// ---- group kernels ----

const AWKWARD: [usize; 3] = [129, 8193, 64];

fn group_lengths() -> impl Iterator<Item = usize> {
    (1..=33).chain(AWKWARD)
}

/// A group of `n` values of a random kind (`finite` false inserts NaN/infinities).
fn group(r: &mut Rng, n: usize, finite: bool) -> Vec<f32> {
    let mut x: Vec<f32> = match r.below(6) {
        0 => vec![if r.coin() { 0.0 } else { -0.0 }; n],
        1 => (0..n).map(|_| if r.coin() { r.pick(&[0.0, -0.0]) } else { r.pick(&[1.0, -1.0]) * r.unit().abs() }).collect(),
        2 => (0..n).map(|_| r.pick(&SPECIALS)).collect(),
        3 => (0..n).map(|_| r.finite_bits()).collect(),
        _ => {
            let m = r.magnitude();
            (0..n).map(|_| r.unit() * m).collect()
        }
    };
    if !finite {
        for _ in 0..1 + r.below(3) {
            let i = r.below(n);
            x[i] = r.pick(&nonfinite());
        }
    }
    x
}

fn same_value(a: f32, b: f32) -> bool {
    if a == 0.0 {
        b == 0.0 // a zero extreme may come back with either sign
    } else {
        a.to_bits() == b.to_bits()
    }
}

fn check_range(x: &[f32]) {
    let (s, v) = (scalar::group_range(x), neon::group_range(x));
    assert_eq!(s.2, v.2, "finite flag differs for {x:?}");
    if s.2 {
        assert!(same_value(s.0, v.0) && same_value(s.1, v.1), "scalar {s:?} neon {v:?} for {x:?}");
    }
}

#[test]
fn group_range_matches_scalar() {
    let mut r = Rng::new(5);
    for n in group_lengths() {
        for _ in 0..if n > 1000 { 20 } else { 200 } {
            let finite = r.below(4) != 0;
            let x = group(&mut r, n, finite);
            check_range(&x);
        }
        // A non-finite value at every position (every lane, the vector tail, the scalar tail).
        for i in (0..n).filter(|i| n < 200 || i % 97 == 0 || *i >= n - 40) {
            for nf in nonfinite() {
                let mut x: Vec<f32> = (0..n).map(|j| j as f32 - 3.0).collect();
                x[i] = nf;
                check_range(&x);
            }
            // The extremes at every position.
            let mut x = vec![0.5f32; n];
            x[i] = if i % 2 == 0 { -3e38 } else { f32::MAX };
            check_range(&x);
        }
    }
}

fn check_codes(x: &[f32], inv: f32, zero: f32, lo: f32, hi: f32, out_len: usize) {
    let (mut a, mut b) = (vec![0xA5u8; out_len], vec![0xA5u8; out_len]);
    scalar::group_codes(x, inv, zero, lo, hi, &mut a);
    neon::group_codes(x, inv, zero, lo, hi, &mut b);
    if let Some(i) = (0..out_len).find(|&i| a[i] != b[i]) {
        panic!("code {i}: scalar {} neon {}; x {:?} inv {inv:e} zero {zero} lo {lo} hi {hi}", a[i], b[i], x.get(i));
    }
}

/// Typical RTN parameters for a group, or odd ones.
fn code_params(r: &mut Rng, x: &[f32]) -> (f32, f32, f32, f32) {
    if r.below(3) != 0 {
        let hi = ((1u32 << (1 + r.below(8))) - 1) as f32;
        let (mn, mx, _) = scalar::group_range(x);
        let scale = (mx - mn) / hi;
        let inv = if scale == 0.0 { r.pick(&[0.0, 1.0]) } else { 1.0 / scale };
        let zero = if r.coin() { (-mn * inv).round_ties_even() } else { r.below(hi as usize + 1) as f32 };
        (inv, zero, 0.0, hi)
    } else {
        let inv = r.pick(&[0.0, -0.0, 1.0, 2.0, 0.5, -1.0, 1e30, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, TINY, 3e38, 1e-39]);
        let zero = r.pick(&[0.0, -0.0, 0.5, 8.0, 127.5, -300.0, 1e10, f32::NAN, f32::INFINITY, 255.0]);
        let (lo, hi) = r.pick(&[
            (0.0, 255.0),
            (0.0, 15.0),
            (3.0, 7.0),
            (-10.0, 300.0),
            (5.0, 5.0),
            (0.5, 2.5),
            (-0.0, 0.0),
            (f32::NEG_INFINITY, f32::INFINITY),
            (-1e10, 1e10),
        ]);
        (inv, zero, lo, hi)
    }
}

#[test]
fn group_codes_match_scalar() {
    let mut r = Rng::new(6);
    for n in group_lengths() {
        for _ in 0..if n > 1000 { 20 } else { 200 } {
            let finite = r.below(5) != 0;
            let x = group(&mut r, n, finite);
            let (inv, zero, lo, hi) = code_params(&mut r, &x);
            check_codes(&x, inv, zero, lo, hi, n);
            check_codes(&x, inv, zero, lo, hi, n / 2); // shorter output
            check_codes(&x, inv, zero, lo, hi, n + 3); // longer output (left alone)
        }
    }
    // Ties of round-half-even and of the clamp bounds.
    for inv in [1.0f32, 0.5, 4.0, -1.0] {
        let x: Vec<f32> = (-600..600).map(|k| k as f32 * 0.25 / inv).collect();
        for zero in [0.0f32, 0.5, 7.0, 128.0, -0.0] {
            for (lo, hi) in [(0.0, 255.0), (0.0, 15.0), (2.5, 9.5), (-3.0, 260.0)] {
                check_codes(&x, inv, zero, lo, hi, x.len());
            }
        }
    }
}

#[test]
#[should_panic]
fn group_codes_panics_like_scalar_when_lo_exceeds_hi() {
    neon::group_codes(&[1.0; 40], 1.0, 0.0, 5.0, 3.0, &mut [0u8; 40]);
}

#[test]
fn group_codes_with_unordered_bounds_and_no_element_does_nothing() {
    check_codes(&[], 1.0, 0.0, 5.0, 3.0, 0);
    check_codes(&[1.0; 8], 1.0, 0.0, f32::NAN, 3.0, 0);
}

fn check_values(c: &[u8], scale: f32, zero: f32, out_len: usize) {
    let (mut a, mut b) = (vec![-7.25f32; out_len], vec![-7.25f32; out_len]);
    scalar::group_values(c, scale, zero, &mut a);
    neon::group_values(c, scale, zero, &mut b);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x.to_bits(), y.to_bits(), "value {i}: scalar {x:e} neon {y:e}; code {:?} scale {scale:e} zero {zero:e}", c.get(i));
    }
}

#[test]
fn group_values_match_scalar() {
    let mut r = Rng::new(7);
    let odd = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.1,
        7.5,
        255.0,
        TINY,
        -1e-39,
        3e38,
        f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0x7fc0_1234),
        f32::from_bits(0xffc0_0007),
        f32::from_bits(0x7f80_0001),
    ];
    for n in group_lengths() {
        for _ in 0..if n > 1000 { 20 } else { 100 } {
            let c: Vec<u8> = (0..n).map(|_| r.next() as u8).collect();
            let (scale, zero) = if r.coin() { (r.unit() * r.magnitude(), r.below(256) as f32) } else { (r.pick(&odd), r.pick(&odd)) };
            check_values(&c, scale, zero, n);
            check_values(&c, scale, zero, n / 2);
            check_values(&c, scale, zero, n + 5);
        }
    }
    // Every pair of odd parameters over all codes.
    let all: Vec<u8> = (0..=255).collect();
    for &s in &odd {
        for &z in &odd {
            check_values(&all, s, z, all.len());
        }
    }
}

#[test]
fn nibble_pack_and_unpack_match_scalar() {
    super::level_tests::check_nibble_kernels(super::aarch64_neon::pack_nibbles, super::aarch64_neon::unpack_nibbles);
}

#[test]
fn grids_match_scalar() {
    super::level_tests::check_grids(super::aarch64_neon::grids);
}

#[test]
fn nf4_kernels_match_scalar() {
    super::level_tests::check_nf4_kernels(super::aarch64_neon::nf4_codes, super::aarch64_neon::nf4_values);
}
