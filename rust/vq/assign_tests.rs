//! Every SIMD level against the scalar oracle: codes equal, distances equal bit for bit, for
//! awkward dimensions and codebook sizes, ties, overflowing scores and every metric.

use super::assign::*;
use super::Metric;
use crate::simd::{available_levels, Level};

const METRICS: [Metric; 4] = [Metric::L2, Metric::Ip, Metric::Cosine, Metric::L1];

/// A small seeded generator (xorshift64*), so the cases are reproducible without a crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.unit()).collect()
    }

    /// Small integers in -2..=2: scores tie often.
    fn ints(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| (self.next() % 5) as f32 - 2.0).collect()
    }
}

/// Runs `x` through every level and checks codes and distance bits against scalar.
fn check(cb: &Codebook, x: &[f32], what: &str) {
    let n = x.len() / cb.d;
    let (mut c0, mut d0) = (vec![0u32; n], vec![0f32; n]);
    assign_batch_scalar(cb, x, &mut c0, Some(&mut d0));
    for level in available_levels() {
        let (mut c, mut d) = (vec![7u32; n], vec![7f32; n]);
        assign_batch_at(level, cb, x, &mut c, Some(&mut d));
        assert_eq!(c, c0, "{what}: codes differ at {level:?}");
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&d), bits(&d0), "{what}: distances differ at {level:?}");
        let mut c2 = vec![7u32; n];
        assign_batch_at(level, cb, x, &mut c2, None);
        assert_eq!(c2, c0, "{what}: codes without distances differ at {level:?}");
    }
}

#[test]
fn levels_match_scalar_for_awkward_shapes() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let dims: Vec<usize> = (1..=33).chain([64, 129]).collect();
    for &d in &dims {
        for k in [1, 2, 7, 15, 16, 17, 31, 33, 100, 256] {
            for m in METRICS {
                let cb = Codebook::new(&rng.vec(k * d), d, m).unwrap();
                let n = 1 + (rng.next() % 12) as usize;
                check(&cb, &rng.vec(n * d), &format!("{m:?} d={d} k={k} n={n}"));
            }
        }
    }
}

#[test]
fn levels_match_scalar_for_many_rows_and_blocks() {
    // More rows than one row block and codebooks of several cache blocks.
    let mut rng = Rng(42);
    for (d, k, n) in [(8, 4096, 300), (3, 5000, 200), (64, 700, 250), (129, 300, 97), (16, 2049, 1100)] {
        for m in METRICS {
            let cb = Codebook::new(&rng.vec(k * d), d, m).unwrap();
            check(&cb, &rng.vec(n * d), &format!("{m:?} d={d} k={k} n={n}"));
        }
    }
}

#[test]
fn levels_match_scalar_for_the_largest_codebooks() {
    let mut rng = Rng(7);
    for (d, k) in [(1, 65536), (8, 65536), (5, 40_000)] {
        for m in [Metric::L2, Metric::Ip] {
            let cb = Codebook::new(&rng.vec(k * d), d, m).unwrap();
            check(&cb, &rng.vec(5 * d), &format!("{m:?} d={d} k={k}"));
        }
    }
}

#[test]
fn ties_go_to_the_lowest_index_at_every_level() {
    let mut rng = Rng(3);
    for d in [1, 2, 3, 8, 17] {
        for m in METRICS {
            // Integer data ties constantly; duplicated codewords tie exactly.
            let base = rng.ints(20 * d);
            let mut book = base.clone();
            book.extend_from_slice(&base);
            book.extend_from_slice(&rng.ints(30 * d));
            let cb = Codebook::new(&book, d, m).unwrap();
            let x = rng.ints(64 * d);
            check(&cb, &x, &format!("ties {m:?} d={d}"));
            let n = x.len() / d;
            let mut codes = vec![0u32; n];
            assign_batch(&cb, &x, &mut codes, None);
            for (xi, &c) in x.chunks_exact(d).zip(&codes) {
                let best = score_scalar(&cb, xi, c as usize);
                assert!((0..c as usize).all(|j| score_scalar(&cb, xi, j) > best), "a lower index ties");
            }
        }
    }
}

#[test]
fn every_codeword_identical_gives_code_zero() {
    for level in available_levels() {
        let cb = Codebook::new(&[0.5; 3 * 40], 3, Metric::L2).unwrap();
        let mut codes = vec![9u32; 4];
        assign_batch_at(level, &cb, &[1.0; 12], &mut codes, None);
        assert_eq!(codes, [0; 4], "{level:?}");
    }
}

#[test]
fn overflowing_scores_match_scalar() {
    // Finite inputs whose dot products overflow to +-inf (and to NaN in L2, inf - inf): NaN
    // never wins, and a row where nothing beats +inf gets code 0.
    let mut rng = Rng(11);
    for m in METRICS {
        for d in [1, 4, 8, 9] {
            let book: Vec<f32> = rng.vec(40 * d).iter().map(|v| v * 3e38).collect();
            let x: Vec<f32> = rng.vec(10 * d).iter().map(|v| v * 3e38).collect();
            let cb = Codebook::new(&book, d, m).unwrap();
            check(&cb, &x, &format!("overflow {m:?} d={d}"));
        }
    }
}

#[test]
fn zero_vectors_match_scalar() {
    for m in METRICS {
        let cb = Codebook::new(&[0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 2.0], 2, m).unwrap();
        check(&cb, &[0.0, 0.0, -0.0, 0.0, 1.0, -3.0], &format!("zeros {m:?}"));
    }
}

#[test]
fn thread_count_does_not_change_results() {
    let mut rng = Rng(5);
    let (d, k, n) = (8, 256, 20_000);
    let cb = Codebook::new(&rng.vec(k * d), d, Metric::L2).unwrap();
    let x = rng.vec(n * d);
    let run = |threads: usize| {
        crate::parallel::set_num_threads(threads).unwrap();
        let (mut c, mut dist) = (vec![0u32; n], vec![0f32; n]);
        assign_into(&cb, &x, &mut c, Some(&mut dist)).unwrap();
        (c, dist.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
    let mut c0 = vec![0u32; n];
    assign_batch_at(Level::Scalar, &cb, &x, &mut c0, None);
    assert_eq!(one.0, c0);
}
