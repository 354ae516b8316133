//! The AVX2 kernels against their scalar oracles: bit-identical bytes, f32 bit patterns and
//! all-finite flags on seeded random, adversarial and property-generated inputs.

use proptest::prelude::*;

use super::{scalar, x86_avx2 as avx, Level};

/// Whether the AVX2 kernels can run here; says so on stderr when they cannot.
fn avx2_here() -> bool {
    let ok = super::supported(Level::Avx2);
    if !ok {
        eprintln!("skipping AVX2 kernel test: this CPU lacks AVX2+FMA+F16C");
    }
    ok
}

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
}

const SPECIALS: [f32; 24] = [
    0.0,
    -0.0,
    1e-39,
    -5e-40,
    1e-45, // the smallest subnormal, f32::from_bits(1)
    -1e-45,
    f32::MIN_POSITIVE,
    -f32::MIN_POSITIVE,
    3e38,
    -3e38,
    f32::MAX,
    f32::MIN,
    1e5,
    -7e4,
    65504.0,
    65520.0,
    0.5,
    -0.5,
    1.5,
    -8.0,
    127.5,
    1e-7,
    6e-8,
    -2.5,
];

const NONFINITE: [f32; 3] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
}

const TYPES: [Kind; 5] = [Kind::Q8_0, Kind::Q4_0, Kind::Q4_1, Kind::Q5_0, Kind::Q5_1];

type QuantizeFn = fn(&[f32], &mut [u8]) -> bool;
type DequantizeFn = fn(&[u8], &mut [f32]);

impl Kind {
    fn bytes(self) -> usize {
        match self {
            Kind::Q8_0 => 34,
            Kind::Q4_0 => 18,
            Kind::Q4_1 => 20,
            Kind::Q5_0 => 22,
            Kind::Q5_1 => 24,
        }
    }
    fn quantizers(self) -> (QuantizeFn, QuantizeFn) {
        match self {
            Kind::Q8_0 => (scalar::quantize_q8_0, avx::quantize_q8_0),
            Kind::Q4_0 => (scalar::quantize_q4_0, avx::quantize_q4_0),
            Kind::Q4_1 => (scalar::quantize_q4_1, avx::quantize_q4_1),
            Kind::Q5_0 => (scalar::quantize_q5_0, avx::quantize_q5_0),
            Kind::Q5_1 => (scalar::quantize_q5_1, avx::quantize_q5_1),
        }
    }
    fn dequantizers(self) -> (DequantizeFn, DequantizeFn) {
        match self {
            Kind::Q8_0 => (scalar::dequantize_q8_0, avx::dequantize_q8_0),
            Kind::Q4_0 => (scalar::dequantize_q4_0, avx::dequantize_q4_0),
            Kind::Q4_1 => (scalar::dequantize_q4_1, avx::dequantize_q4_1),
            Kind::Q5_0 => (scalar::dequantize_q5_0, avx::dequantize_q5_0),
            Kind::Q5_1 => (scalar::dequantize_q5_1, avx::dequantize_q5_1),
        }
    }
    /// A block whose scale is a power of two `s` and whose values sit exactly on rounding ties
    /// (`x/d = k + 0.5`) or on truncation boundaries, extremes placed at random positions.
    fn tie_block(self, r: &mut Rng) -> Vec<f32> {
        let s = 2f32.powi(r.below(60) as i32 - 30) * if r.below(2) == 0 { 1.0 } else { -1.0 };
        let half = |r: &mut Rng, lo: i32, hi: i32| (lo * 2 + r.below((2 * (hi - lo)) as usize + 1) as i32) as f32 * 0.5;
        let (lo, hi, ends): (i32, i32, &[f32]) = match self {
            Kind::Q8_0 => (-126, 126, &[127.0]),
            Kind::Q4_0 => (-7, 7, &[-8.0]),
            Kind::Q5_0 => (-15, 15, &[-16.0]),
            Kind::Q4_1 => (-4, 11, &[-4.0, 11.0]),
            Kind::Q5_1 => (-10, 21, &[-10.0, 21.0]),
        };
        let s = if matches!(self, Kind::Q4_1 | Kind::Q5_1) { s.abs() } else { s };
        let mut x: Vec<f32> = (0..32).map(|_| half(r, lo, hi) * s).collect();
        for &e in ends {
            let i = r.below(32);
            x[i] = e * s;
        }
        if self == Kind::Q4_0 || self == Kind::Q5_0 {
            // The first extreme must be the one we placed: keep other magnitudes below it.
            let top = (hi as f32 + 0.5) * s.abs();
            for v in x.iter_mut() {
                if v.abs() > top && *v != ends[0] * s {
                    *v = 0.0;
                }
            }
        }
        x
    }
}

/// One block of 32 values of a random kind (`finite` false allows NaN and infinities).
fn block(r: &mut Rng, t: Kind, finite: bool) -> Vec<f32> {
    let kinds = if finite { 13 } else { 15 };
    let mut x = vec![0f32; 32];
    match r.below(kinds) {
        0..=2 => {
            let m = r.magnitude();
            x.iter_mut().for_each(|v| *v = r.unit() * m);
        }
        3 => {} // all +0
        4 => x.iter_mut().for_each(|v| *v = -0.0),
        5 => {
            // ±0 in random places, among positive values half the time (a zero minimum)
            let pos = r.below(2) == 0;
            x.iter_mut().for_each(|v| {
                *v = match r.below(3) {
                    0 => 0.0,
                    1 => -0.0,
                    _ if pos => r.unit().abs() + 0.25,
                    _ => -0.0,
                }
            });
        }
        6 => {
            let c = r.unit() * r.magnitude();
            x.iter_mut().for_each(|v| *v = c);
        }
        7 => {
            x.iter_mut().for_each(|v| *v = r.unit());
            let i = r.below(32);
            x[i] = r.pick(&[1e30, -1e30, 3e38, -3e38, 1e5, -7e4, 65520.0]);
        }
        8 => {
            let sub = [1e-39, -5e-40, f32::from_bits(1), -f32::from_bits(1), 0.0, -0.0, f32::MIN_POSITIVE];
            x.iter_mut().for_each(|v| *v = r.pick(&sub) * if r.below(3) == 0 { r.unit() } else { 1.0 });
        }
        9 | 10 => x = t.tie_block(r),
        11 => x.iter_mut().for_each(|v| *v = r.pick(&[3e38, -3e38, f32::MAX, f32::MIN, 1e38, -2e38])),
        12 => x.iter_mut().for_each(|v| *v = if r.below(2) == 0 { r.pick(&SPECIALS) } else { r.unit() * 7e4 }),
        13 => {
            x.iter_mut().for_each(|v| *v = r.unit() * r.magnitude());
            for _ in 0..1 + r.below(3) {
                let i = r.below(32);
                x[i] = r.pick(&NONFINITE);
            }
        }
        _ => x.iter_mut().for_each(|v| *v = f32::from_bits(r.next() as u32)),
    }
    x
}

/// Quantizes with both kernels and demands equal flags, and equal bytes when all is finite.
fn check_quantize(t: Kind, src: &[f32], dst_len: usize) {
    let (sq, aq) = t.quantizers();
    let (mut a, mut b) = (vec![0xA5u8; dst_len], vec![0xA5u8; dst_len]);
    let (fa, fb) = (sq(src, &mut a), aq(src, &mut b));
    assert_eq!(fa, fb, "{t:?} finite flag differs for {src:?}");
    if fa {
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            if x != y {
                let blk = i / t.bytes();
                let xs = src.get(blk * 32..blk * 32 + 32);
                panic!("{t:?} byte {i} (block {blk}): scalar {x:#04x} avx2 {y:#04x}; block {xs:?}");
            }
        }
    }
}

fn check_dequantize(t: Kind, src: &[u8]) {
    let (sd, ad) = t.dequantizers();
    let n = src.len() / t.bytes() * 32;
    let (mut a, mut b) = (vec![1.25f32; n], vec![1.25f32; n]);
    sd(src, &mut a);
    ad(src, &mut b);
    let is_nan16 = |h: &[u8]| u16::from_le_bytes([h[0], h[1]]) & 0x7fff > 0x7c00;
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let blk = &src[i / 32 * t.bytes()..];
        // `d * q + m` with both d and m NaN: which NaN's payload survives the add is up to the
        // compiler (Rust leaves it unspecified, LLVM may commute the operands) on both sides.
        let two_nans = matches!(t, Kind::Q4_1 | Kind::Q5_1) && is_nan16(&blk[0..2]) && is_nan16(&blk[2..4]);
        if two_nans && x.is_nan() && y.is_nan() {
            continue;
        }
        assert_eq!(x.to_bits(), y.to_bits(), "{t:?} value {i}: scalar {x:e} avx2 {y:e}");
    }
}

#[test]
fn quantize_blocks_match_scalar() {
    if !avx2_here() {
        return;
    }
    let mut r = Rng::new(1);
    for t in TYPES {
        for case in 0..4000 {
            // whole 8-block batches and the zero-padded remainder both get exercised
            let nblocks = 1 + r.below(20);
            let finite = case % 5 != 0;
            let src: Vec<f32> = (0..nblocks).flat_map(|_| block(&mut r, t, finite)).collect();
            check_quantize(t, &src, nblocks * t.bytes());
        }
    }
}

#[test]
fn quantize_fixed_adversarial_blocks() {
    if !avx2_here() {
        return;
    }
    let sub = f32::from_bits(1);
    let mut blocks: Vec<Vec<f32>> = vec![
        vec![0.0; 32],
        vec![-0.0; 32],
        vec![1.0; 32],
        vec![-3.5; 32],
        vec![1e-39; 32],
        vec![-5e-40; 32],
        vec![sub; 32],
        vec![-sub; 32],
        vec![7e4; 32],
        vec![-1e5; 32],
        vec![3e38; 32],
    ];
    let mut alt: Vec<f32> = (0..32).map(|i| if i % 2 == 0 { 3e38 } else { -3e38 }).collect();
    blocks.push(alt.clone());
    alt.reverse();
    blocks.push(alt);
    for z in [0.0f32, -0.0] {
        // a zero extreme (last/first occurrence rules) next to signed values
        let mut b: Vec<f32> = (0..32).map(|i| (i as f32 + 1.0) * 0.25).collect();
        b[5] = z;
        b[20] = -z;
        blocks.push(b.clone());
        b.iter_mut().for_each(|v| *v = -*v);
        blocks.push(b);
        let mut e: Vec<f32> = vec![z; 32];
        e[31] = -z;
        blocks.push(e.clone());
        e[0] = 1e-39;
        blocks.push(e);
    }
    let mut first: Vec<f32> = vec![0.25; 32];
    first[3] = 2.0;
    first[9] = -2.0;
    blocks.push(first.clone());
    first[3] = -2.0;
    first[9] = 2.0;
    blocks.push(first);
    // exact ties for Q8_0 with d = 1 and Q4_0 with d = 1
    blocks.push((0..32).map(|i| if i == 0 { 127.0 } else { i as f32 - 15.5 }).collect());
    blocks.push((0..32).map(|i| if i == 7 { -8.0 } else { (i % 16) as f32 * 0.5 - 3.5 }).collect());
    for t in TYPES {
        for b in &blocks {
            check_quantize(t, b, t.bytes());
        }
        // the same blocks in batches, at every offset within a batch of 8
        let all: Vec<f32> = blocks.concat();
        for skip in 0..8 {
            let src = &all[skip * 32..];
            check_quantize(t, src, src.len() / 32 * t.bytes());
        }
        for v in NONFINITE {
            for i in [0, 13, 31] {
                let mut b = vec![1.0f32; 32];
                b[i] = v;
                check_quantize(t, &b, t.bytes());
                let mut two: Vec<f32> = vec![0.5; 64];
                two[32 + i] = v;
                check_quantize(t, &two, 2 * t.bytes());
            }
        }
    }
}

#[test]
fn quantize_ragged_inputs_match_scalar() {
    if !avx2_here() {
        return;
    }
    // Input not a multiple of 32 and output shorter than the input: blocks are zipped, the
    // flag still covers the whole input.
    let mut r = Rng::new(7);
    for t in TYPES {
        for _ in 0..300 {
            let n = r.below(200);
            let mut src: Vec<f32> = (0..n).map(|_| r.unit() * 10.0).collect();
            if n > 0 && r.below(3) == 0 {
                let i = r.below(n);
                src[i] = r.pick(&NONFINITE);
            }
            let dst_len = r.below(8) * t.bytes() + r.below(t.bytes());
            check_quantize(t, &src, dst_len);
        }
    }
}

#[test]
fn q8_0_round_half_away_on_every_float_to_127() {
    if !avx2_here() {
        return;
    }
    // A block led by 127.0 has d = 1 and 1/d = 1, so the other 31 values are rounded as is:
    // every float in [-127, 127] within one call per million blocks. ~2e9 floats: slow
    // in debug builds, so walk a strided subset there.
    let step: u32 = if cfg!(debug_assertions) { 9973 } else { 1 };
    let top = 127f32.to_bits();
    for sign in [0u32, 0x8000_0000] {
        let mut bits = 0u32;
        let mut src = Vec::with_capacity(1 << 21);
        while bits <= top {
            src.clear();
            while src.len() < (1 << 21) && bits <= top {
                if src.len() % 32 == 0 {
                    src.push(127.0);
                }
                src.push(f32::from_bits(bits | sign));
                bits = bits.saturating_add(step);
            }
            while src.len() % 32 != 0 {
                src.push(0.0);
            }
            check_quantize(Kind::Q8_0, &src, src.len() / 32 * 34);
        }
    }
}

#[test]
fn dequantize_random_bytes_match_scalar() {
    if !avx2_here() {
        return;
    }
    let mut r = Rng::new(3);
    for t in TYPES {
        for _ in 0..3000 {
            let nblocks = 1 + r.below(5);
            let src: Vec<u8> = (0..nblocks * t.bytes()).map(|_| r.next() as u8).collect();
            check_dequantize(t, &src);
        }
        // scales from real quantization, plus special fp16 scales (0, -0, subnormal, inf, NaN)
        for h in [0u16, 0x8000, 0x0001, 0x8001, 0x03ff, 0x7bff, 0x7c00, 0xfc00, 0x7e00, 0x7c01, 0x3c00] {
            let mut b: Vec<u8> = (0..t.bytes()).map(|_| r.next() as u8).collect();
            b[..2].copy_from_slice(&h.to_le_bytes());
            check_dequantize(t, &b);
            if matches!(t, Kind::Q4_1 | Kind::Q5_1) {
                b[2..4].copy_from_slice(&h.to_le_bytes());
                check_dequantize(t, &b);
            }
        }
        let src: Vec<f32> = (0..64 * 32).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.03).collect();
        let mut q = vec![0u8; 64 * t.bytes()];
        assert!((t.quantizers().0)(&src, &mut q));
        check_dequantize(t, &q);
        // ragged: a partial trailing block and a short output are zipped away
        let (sd, ad) = t.dequantizers();
        let (mut a, mut b) = (vec![9f32; 70], vec![9f32; 70]);
        sd(&q[..3 * t.bytes() - 1], &mut a);
        ad(&q[..3 * t.bytes() - 1], &mut b);
        assert_eq!(a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), b.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }
}

/// A group of `n` values of one random kind.
fn group(r: &mut Rng, n: usize, finite: bool) -> Vec<f32> {
    let kind = r.below(if finite { 6 } else { 8 });
    let m = r.magnitude();
    (0..n)
        .map(|_| match kind {
            0 | 1 => r.unit() * m,
            2 => r.pick(&SPECIALS),
            3 => r.pick(&[0.0, -0.0]),
            4 => r.pick(&[1e-39, -5e-40, f32::from_bits(1), 0.0, -0.0]),
            5 => (r.below(41) as f32 - 20.0) * 0.5,
            6 if r.below(n.max(2)) == 0 => r.pick(&NONFINITE),
            6 => r.unit(),
            _ => f32::from_bits(r.next() as u32),
        })
        .collect()
}

fn group_lengths(r: &mut Rng) -> Vec<usize> {
    let mut v: Vec<usize> = (1..=33).chain([63, 64, 65, 127, 128, 129, 4096, 8193]).collect();
    v.extend((0..20).map(|_| 1 + r.below(600)));
    v
}

fn check_range(x: &[f32]) {
    let (sl, sh, sf) = scalar::group_range(x);
    let (al, ah, af) = avx::group_range(x);
    assert_eq!(sf, af, "group_range flag for {x:?}");
    if sf {
        // Values exact; a zero extreme may differ in sign only.
        assert!(sl == al && (sl == 0.0 || sl.to_bits() == al.to_bits()), "min {sl:e} vs {al:e} for {x:?}");
        assert!(sh == ah && (sh == 0.0 || sh.to_bits() == ah.to_bits()), "max {sh:e} vs {ah:e} for {x:?}");
    }
}

#[test]
fn group_range_matches_scalar() {
    if !avx2_here() {
        return;
    }
    let mut r = Rng::new(11);
    for round in 0..40 {
        for n in group_lengths(&mut r) {
            let mut x = group(&mut r, n, round % 4 != 0);
            check_range(&x);
            // a single extreme or non-finite value at every awkward position
            let i = r.below(n);
            x[i] = r.pick(&[3e38, -3e38, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0]);
            check_range(&x);
        }
    }
    check_range(&[100000.0; 100_000]);
}

/// RTN-like parameters (`inv`, `zero`, `lo`, `hi`) and some odd ones.
fn code_params(r: &mut Rng) -> (f32, f32, f32, f32) {
    let bits = 1 + r.below(8) as u32;
    let top = ((1u32 << bits) - 1) as f32;
    let inv = match r.below(6) {
        0 => 0.0,
        1 => f32::INFINITY,
        2 => 2f32.powi(r.below(40) as i32 - 20),
        _ => 1.0 / (r.unit().abs() * r.magnitude()),
    };
    match r.below(6) {
        0 if bits >= 2 => (inv, (1u32 << (bits - 1)) as f32, 1.0, top),
        1 => (inv, r.unit() * 300.0, r.unit() * 20.0 - 10.0, 250.0 + r.unit() * 20.0), // scalar path
        2 => (inv, (r.below(256) as f32) + 0.5, 0.0, 255.0),
        3 => (inv, r.pick(&[300.0, 65536.0, 65537.0, 1e9, -3.0, -0.0]), (r.below(3) as f32).min(top), top),
        _ => (inv, r.below(top as usize + 1) as f32, 0.0, top),
    }
}

fn check_codes(x: &[f32], p: (f32, f32, f32, f32)) {
    let (mut a, mut b) = (vec![0x5Au8; x.len()], vec![0x5Au8; x.len()]);
    scalar::group_codes(x, p.0, p.1, p.2, p.3, &mut a);
    avx::group_codes(x, p.0, p.1, p.2, p.3, &mut b);
    assert_eq!(a, b, "group_codes {p:?} for {x:?}");
}

#[test]
fn group_codes_match_scalar() {
    if !avx2_here() {
        return;
    }
    let mut r = Rng::new(13);
    for round in 0..40 {
        for n in group_lengths(&mut r) {
            let x = group(&mut r, n, round % 3 != 0);
            check_codes(&x, code_params(&mut r));
            // exact ties of round-half-even: half-integers times a power of two
            let s = 2f32.powi(r.below(20) as i32 - 10);
            let t: Vec<f32> = (0..n).map(|_| (r.below(512) as f32 - 256.0) * 0.5 * s).collect();
            let bits = 8;
            check_codes(&t, (1.0 / s, 128.0, 0.0, ((1 << bits) - 1) as f32));
        }
    }
    // every parameter kind against NaN, infinities, zeros and huge values
    let mut x: Vec<f32> = SPECIALS.iter().chain(&NONFINITE).copied().collect();
    x.extend((0..20).map(|i| i as f32 * 0.75 - 7.0));
    for zero in [-3.0, -0.0, 0.0, 7.0, 255.0, 300.0, 65536.0, 65537.0, 1e9, 2.5, f32::NAN] {
        for (lo, hi) in [(0.0, 15.0), (1.0, 255.0), (0.0, 0.0), (3.0, 3.0), (0.5, 200.5)] {
            for inv in [0.0, 1.0, 3.7, -2.0, 1e30, f32::INFINITY, f32::NAN] {
                check_codes(&x, (inv, zero, lo, hi));
            }
        }
    }
    // the output may be shorter than the input: zipped
    let x = group(&mut r, 100, true);
    let (mut a, mut b) = (vec![0u8; 77], vec![0u8; 77]);
    scalar::group_codes(&x, 3.0, 7.0, 0.0, 15.0, &mut a);
    avx::group_codes(&x, 3.0, 7.0, 0.0, 15.0, &mut b);
    assert_eq!(a, b);
    // lo > hi panics in both (f32::clamp)
    let s = std::panic::catch_unwind(|| scalar::group_codes(&[1.0; 40], 1.0, 0.0, 5.0, 2.0, &mut [0u8; 40]));
    let a = std::panic::catch_unwind(|| avx::group_codes(&[1.0; 40], 1.0, 0.0, 5.0, 2.0, &mut [0u8; 40]));
    assert_eq!(s.is_err(), a.is_err());
}

fn check_values(c: &[u8], scale: f32, zero: f32) {
    let (mut a, mut b) = (vec![0f32; c.len()], vec![0f32; c.len()]);
    scalar::group_values(c, scale, zero, &mut a);
    avx::group_values(c, scale, zero, &mut b);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x.to_bits(), y.to_bits(), "group_values[{i}] scale {scale:e} zero {zero}: {x:e} vs {y:e}");
    }
}

#[test]
fn group_values_match_scalar() {
    if !avx2_here() {
        return;
    }
    let mut r = Rng::new(17);
    for _ in 0..40 {
        for n in group_lengths(&mut r) {
            let c: Vec<u8> = (0..n).map(|_| r.next() as u8).collect();
            let s = [r.unit() * r.magnitude(), 0.0, -0.0, f32::from_bits(1), 3e38, f32::INFINITY];
            let scale = r.pick(&s);
            let z = [0.0, 8.0, 128.0, r.below(256) as f32, r.unit() * 1000.0, -0.0];
            let zero = r.pick(&z);
            check_values(&c, scale, zero);
        }
    }
    check_values(&[7; 40], f32::NAN, 3.0);
    check_values(&[7; 40], 2.0, f32::NAN);
}

fn any_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -1e3f32..1e3f32,
        2 => any::<u32>().prop_map(f32::from_bits),
        1 => proptest::sample::select(SPECIALS.to_vec()),
        1 => proptest::sample::select(vec![0.0f32, -0.0]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn prop_quantize_matches_scalar(blocks in proptest::collection::vec(proptest::collection::vec(any_f32(), 32), 1..20)) {
        if avx2_here() {
            let src: Vec<f32> = blocks.concat();
            for t in TYPES {
                check_quantize(t, &src, src.len() / 32 * t.bytes());
            }
        }
    }

    #[test]
    fn prop_dequantize_matches_scalar(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if avx2_here() {
            for t in TYPES {
                check_dequantize(t, &bytes);
            }
        }
    }

    #[test]
    fn prop_group_kernels_match_scalar(x in proptest::collection::vec(any_f32(), 1..300), inv in any_f32(), zero in 0u8..=255, bits in 1u32..=8) {
        if avx2_here() {
            check_range(&x);
            let top = ((1u32 << bits) - 1) as f32;
            check_codes(&x, (inv, (zero as f32).min(top), 0.0, top));
            let codes: Vec<u8> = x.iter().map(|v| v.to_bits() as u8).collect();
            check_values(&codes, inv, zero as f32);
        }
    }
}

#[test]
fn nibble_pack_and_unpack_match_scalar() {
    if !super::supported(super::Level::Avx2) {
        eprintln!("AVX2 not available: skipped");
        return;
    }
    super::level_tests::check_nibble_kernels(super::x86_avx2::pack_nibbles, super::x86_avx2::unpack_nibbles);
}

#[test]
fn grids_match_scalar() {
    if !super::supported(super::Level::Avx2) {
        eprintln!("AVX2 not available: skipped");
        return;
    }
    super::level_tests::check_grids(super::x86_avx2::grids);
}

#[test]
fn nf4_kernels_match_scalar() {
    if !super::supported(super::Level::Avx2) {
        eprintln!("AVX2 not available: skipped");
        return;
    }
    super::level_tests::check_nf4_kernels(super::x86_avx2::nf4_codes, super::x86_avx2::nf4_values);
}
