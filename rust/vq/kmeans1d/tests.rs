//! Tests of the 1-D k-means: optimality against a brute-force DP, codes, edge cases, bad input,
//! the radix sort, the argmin lanes, and bit-identical results at every SIMD level.

use super::*;

/// The weighted SSE of the best partition of sorted (value, weight) pairs into at most `k`
/// runs, by the plain O(k n^2) DP.
fn brute_sse(x: &[f32], w: &[f32], k: usize) -> f64 {
    let mut p: Vec<(f64, f64)> = x.iter().zip(w).filter(|(_, &w)| w > 0.0).map(|(&x, &w)| (x as f64, w as f64)).collect();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = p.len();
    let cost = |i: usize, j: usize| {
        let (sw, su) = p[i..j].iter().fold((0.0, 0.0), |(a, b), &(x, w)| (a + w, b + w * x));
        let mean = su / sw;
        p[i..j].iter().map(|&(x, w)| w * (x - mean) * (x - mean)).sum::<f64>()
    };
    let mut d: Vec<f64> = (0..=n).map(|j| if j == 0 { 0.0 } else { cost(0, j) }).collect();
    for _ in 1..k {
        let next: Vec<f64> = (0..=n).map(|j| (0..j).map(|i| d[i] + cost(i, j)).fold(d[j], f64::min)).collect();
        d = next;
    }
    d[n]
}

/// A small deterministic generator (xorshift) so the tests need no extra crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

#[test]
fn exact_matches_the_brute_force_dp() {
    let mut rng = Rng(7);
    for trial in 0..300 {
        let n = 1 + trial % 23;
        let k = (1 + trial % 6).min(n);
        // Few levels in some trials: duplicates.
        let levels = if trial % 3 == 0 { 4.0 } else { 1e6 };
        let x: Vec<f32> = (0..n).map(|_| ((rng.next() * levels).floor() / levels) * 2.0 - 1.0).collect();
        let w: Vec<f32> = (0..n)
            .map(|i| {
                if trial % 2 == 0 {
                    1.0
                } else if i % 5 == 3 {
                    0.0
                } else {
                    rng.next() * 3.0
                }
            })
            .collect();
        let fit = kmeans1d(&x, n, k, Weights::PerValue(&w), true).unwrap();
        let want = brute_sse(&x, &w, k);
        let got = fit.inertia[0];
        assert!((got - want).abs() <= 1e-6 * want + 1e-9, "trial {trial}: {got} vs {want}");
        let lloyd = kmeans1d(&x, n, k, Weights::PerValue(&w), false).unwrap();
        assert!(lloyd.inertia[0] >= want - 1e-6 * want - 1e-9, "trial {trial}");
    }
}

#[test]
#[allow(clippy::needless_range_loop)]
fn codes_index_the_nearest_centroid_and_centroids_ascend() {
    let mut rng = Rng(3);
    let x: Vec<f32> = (0..4 * 300).map(|_| rng.next() - 0.5).collect();
    for exact in [true, false] {
        let fit = kmeans1d(&x, 300, 8, Weights::None, exact).unwrap();
        for r in 0..4 {
            let cb = &fit.codebook[r * 8..r * 8 + 8];
            assert!(cb.windows(2).all(|p| p[0] < p[1]));
            for i in r * 300..(r + 1) * 300 {
                let d = |j: usize| (x[i] as f64 - cb[j] as f64).abs();
                let best = (0..8).min_by(|&a, &b| d(a).total_cmp(&d(b))).unwrap();
                assert_eq!(fit.codes[i] as usize, best);
            }
        }
    }
}

#[test]
fn edge_cases() {
    // Constant row: one distinct centroid, repeated; fewer distinct values than k; k = 1.
    let fit = kmeans1d(&[2.0; 5], 5, 4, Weights::None, true).unwrap();
    assert_eq!(fit.codebook, [2.0; 4]);
    assert_eq!((fit.codes, fit.inertia), (vec![0; 5], vec![0.0]));
    let fit = kmeans1d(&[3.0, 1.0, -0.0, 0.0], 4, 4, Weights::None, false).unwrap();
    assert_eq!(fit.codebook, [0.0, 1.0, 3.0, 3.0]);
    assert_eq!(fit.codes, [2, 1, 0, 0]);
    let fit = kmeans1d(&[1.0, 2.0, 6.0], 3, 1, Weights::PerValue(&[1.0, 1.0, 2.0]), true).unwrap();
    assert_eq!(fit.codebook, [3.75]);
    // All-zero weights: fitted with unit weights, weighted SSE zero.
    let fit = kmeans1d(&[0.0, 1.0, 10.0, 11.0], 4, 2, Weights::PerColumn { w: &[0.0; 4], row_len: 4 }, true).unwrap();
    assert_eq!((fit.codebook, fit.inertia), (vec![0.5, 10.5], vec![0.0]));
    // Zero-weight points do not pull the centroids, but get codes.
    let fit = kmeans1d(&[0.0, 1.0, 10.0, 100.0], 4, 2, Weights::PerValue(&[1.0, 1.0, 1.0, 0.0]), true).unwrap();
    assert_eq!(fit.codebook, [0.5, 10.0]);
    assert_eq!(fit.codes, [0, 0, 1, 1]);
}

#[test]
fn bad_input_is_an_error() {
    let x = [1.0f32, 2.0, 3.0, 4.0];
    assert!(kmeans1d(&x, 3, 2, Weights::None, true).is_err());
    assert!(kmeans1d(&x, 0, 2, Weights::None, true).is_err());
    assert!(kmeans1d(&x, 4, 0, Weights::None, true).is_err());
    assert!(kmeans1d(&x, 2, 3, Weights::None, false).is_err());
    assert_eq!(kmeans1d(&[1.0, f32::NAN], 2, 1, Weights::None, true).unwrap_err(), Error::NonFinite { index: 1 });
    assert!(kmeans1d(&x, 4, 2, Weights::PerValue(&[1.0, -1.0, 1.0, 1.0]), true).is_err());
    assert!(kmeans1d(&x, 4, 2, Weights::PerValue(&[1.0, f32::INFINITY, 1.0, 1.0]), false).is_err());
    assert!(kmeans1d(&x, 4, 2, Weights::PerValue(&[1.0; 3]), false).is_err());
    let (mut cb, mut codes, mut e) = (vec![0.0; 257], vec![0u8; 4], vec![0.0; 1]);
    assert!(kmeans1d_into(&x, 4, 257, Weights::None, true, &mut cb, &mut codes, &mut e).is_err());
    assert!(kmeans1d_into(&x, 4, 2, Weights::None, true, &mut cb, &mut codes, &mut e).is_err());
    let big = vec![0.0f32; 1 << 16];
    assert!(kmeans1d(&big, 1 << 16, 1 << 12, Weights::None, true).is_err());
}

#[test]
fn radix_sort_orders_like_the_float_order() {
    let mut rng = Rng(5);
    for n in [1, 7, 256, 257, 1000, 4096] {
        let mut x: Vec<f32> = (0..n).map(|_| (rng.next() - 0.5) * 1e3 * rng.next().powi(8)).collect();
        for (i, v) in [0.0f32, -0.0, f32::MIN_POSITIVE / 4.0, -f32::MIN_POSITIVE / 4.0, f32::MAX, f32::MIN].into_iter().enumerate() {
            if i < n {
                x[(i * 37) % n] = v;
            }
        }
        let mut want: Vec<f32> = x.iter().map(|&v| v + 0.0).collect();
        want.sort_by(f32::total_cmp);
        let mut s = sort::Scratch::default();
        // Unweighted: bare keys.
        let m = s.load(&x, None);
        let sorted: Vec<f32> = s.keys.iter().map(|&k| sort::unkey(k)).collect();
        assert_eq!(bits(&sorted), bits(&want));
        assert_eq!((s.lo.to_bits(), s.hi.to_bits()), (want[0].to_bits(), want[n - 1].to_bits()));
        // Weighted: the weights come along (a weight of 2 everywhere: the counts doubled).
        assert_eq!(s.load(&x, Some(&vec![2.0; n])), m);
        let sorted: Vec<f32> = s.items.iter().map(|&kv| sort::unkey((kv >> 32) as u32)).collect();
        assert_eq!(bits(&sorted), bits(&want));
        assert!(s.items.iter().all(|&kv| f32::from_bits(kv as u32) == 2.0));
        // With positions: stable, every position once.
        s.sort_positions(&x);
        let sorted: Vec<f32> = s.items.iter().map(|&kv| sort::unkey((kv >> 32) as u32)).collect();
        assert_eq!(bits(&sorted), bits(&want));
        assert!(s.items.windows(2).all(|p| p[0] < p[1]));
        let mut pos: Vec<u32> = s.items.iter().map(|&kv| kv as u32).collect();
        pos.sort_unstable();
        assert!(pos.iter().enumerate().all(|(i, &p)| p as usize == i));
        want.dedup();
        assert_eq!(m, want.len());
    }
}

#[test]
fn argmin_is_the_first_minimum() {
    let mut rng = Rng(9);
    for n in 1..40 {
        // Few levels: many ties between lanes and within lanes.
        let a: Vec<f64> = (0..n).map(|_| (rng.next() * 4.0).floor() as f64).collect();
        let w: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let s = vec![0.0; n];
        let want = a.iter().cloned().fold(f64::INFINITY, f64::min);
        let want = (want, a.iter().position(|&x| x == want).unwrap());
        assert_eq!(dp::argmin::<false, false>(&a, &w, &s, &s, n as f64 + 1.0, 0.0, 0.0), want, "n={n}");
        assert_eq!(dp::argmin::<false, true>(&a, &w, &s, &s, n as f64 + 1.0, 0.0, 0.0), want, "n={n}");
    }
    assert_eq!(dp::argmin::<false, true>(&[f64::INFINITY; 3], &[0.0; 3], &[0.0; 3], &[0.0; 3], 1.0, 0.0, 0.0), (f64::INFINITY, 0));
    // A run weight lost to rounding (`wj - w = 0`, `inf` or NaN quotient): the run's SSE is
    // capped at zero (`a - (qj - q)`) with `CAP`, never `-inf` or NaN.
    // Candidate 1 has an `inf` quotient against `sj = -1` and `0 / 0` against `sj = 1`,
    // candidate 2 the reverse.
    let (a, w, s, q) = ([1.0, 0.5, 0.3], [0.0, 2.0, 2.0], [0.0, 1.0, -1.0], [0.0, 0.75, 1.0]);
    assert_eq!(dp::argmin::<false, true>(&a, &w, &s, &q, 2.0, -1.0, 1.0), (0.25, 1));
    assert_eq!(dp::argmin::<false, true>(&a, &w, &s, &q, 2.0, 1.0, 1.0), (0.25, 1));
}

#[test]
fn exact_matches_the_brute_force_dp_on_longer_rows() {
    // Long enough rows that the divide and conquer splits blocks before sweeping them.
    let mut rng = Rng(21);
    for trial in 0..12 {
        let n = 120 + 37 * trial;
        let k = 2 + trial % 11;
        let x: Vec<f32> = (0..n).map(|_| heavy(&mut rng) * if trial % 3 == 0 { 1.0 } else { 1e3 }).collect();
        let x: Vec<f32> = if trial % 4 == 1 { x.iter().map(|v| (v * 8.0).round() / 8.0).collect() } else { x };
        let w: Vec<f32> = (0..n)
            .map(|i| {
                if trial % 2 == 0 {
                    1.0
                } else if i % 7 == 2 {
                    0.0
                } else {
                    rng.next() * 2.0
                }
            })
            .collect();
        let want = brute_sse(&x, &w, k);
        let got = kmeans1d(&x, n, k, Weights::PerValue(&w), true).unwrap().inertia[0];
        assert!((got - want).abs() <= 1e-9 * want + 1e-12, "trial {trial}: {got} vs {want}");
    }
}

#[test]
fn every_simd_level_gives_the_same_bits() {
    let mut rng = Rng(13);
    let (rows, n) = (6, 1500);
    let x: Vec<f32> = (0..rows * n).map(|_| heavy(&mut rng) * 0.02).collect();
    let w: Vec<f32> = (0..rows * n).map(|_| rng.next()).collect();
    // Weights 10^-30 .. 1: the capped costs of rows with tiny weights.
    let tiny: Vec<f32> = (0..rows * n).map(|_| 10f32.powf(-30.0 * rng.next())).collect();
    for exact in [true, false] {
        for weights in [Weights::None, Weights::PerValue(&w), Weights::PerValue(&tiny)] {
            let want = kmeans1d_at(Level::Scalar, &x, n, 16, weights, exact);
            for level in crate::simd::available_levels() {
                let got = kmeans1d_at(level, &x, n, 16, weights, exact);
                assert_eq!(bits(&got.codebook), bits(&want.codebook), "{level:?} exact={exact}");
                assert_eq!(got.codes, want.codes, "{level:?} exact={exact}");
                assert_eq!(
                    got.inertia.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.inertia.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                );
            }
        }
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A heavy-tailed value (a Cauchy variate's cube root), like weight matrices.
fn heavy(rng: &mut Rng) -> f32 {
    let u = rng.next() as f64 * 0.998 + 0.001;
    ((u - 0.5) * std::f64::consts::PI).tan().cbrt() as f32
}

/// [`kmeans1d`] at a given SIMD level, one row at a time (no thread pool).
fn kmeans1d_at(level: Level, x: &[f32], n: usize, k: usize, weights: Weights<'_>, exact: bool) -> Fit {
    let rows = x.len() / n;
    let mut fit = Fit { codebook: vec![0.0; rows * k], codes: vec![0; x.len()], inertia: vec![0.0; rows] };
    fit_chunk(
        level,
        Job {
            x,
            weights: &weights,
            row_len: n,
            k,
            exact,
            row0: 0,
            cb: &mut fit.codebook,
            codes: &mut fit.codes,
            inertia: &mut fit.inertia,
        },
    );
    fit
}

#[test]
fn unit_weight_table_agrees_with_the_division() {
    // Unit weights (reciprocal table) against the same rows weighted 2 (division): the same
    // partition, so the same codebook, and twice the SSE up to rounding.
    let mut rng = Rng(29);
    let (rows, n) = (4, 900);
    let x: Vec<f32> = (0..rows * n).map(|_| heavy(&mut rng) * 0.02).collect();
    let two = vec![2.0f32; rows * n];
    let unit = kmeans1d(&x, n, 16, Weights::None, true).unwrap();
    let div = kmeans1d(&x, n, 16, Weights::PerValue(&two), true).unwrap();
    assert_eq!(bits(&unit.codebook), bits(&div.codebook));
    assert_eq!(unit.codes, div.codes);
    for (u, d) in unit.inertia.iter().zip(&div.inertia) {
        assert!((2.0 * u - d).abs() <= 1e-12 * d, "{u} vs {d}");
    }
}

#[test]
fn rounded_distance_ties_go_to_the_lower_code() {
    // 1 is as far from 0 as from 1e-30 in f64: code 0, though the walk has moved past 0
    // (the zero-weight 1 does not move the centroids 0 and 1e-30).
    let fit = kmeans1d(&[1e-30, 0.0, 1.0], 3, 2, Weights::PerValue(&[1.0, 1.0, 0.0]), true).unwrap();
    assert_eq!(bits(&fit.codebook), bits(&[0.0, 1e-30]));
    assert_eq!(fit.codes, [1, 0, 0]);
}

/// The nearest entry of `cb` to `x`: `|x - c|` in f64, ties to the lowest index (the oracle).
fn nearest(x: f32, cb: &[f32]) -> usize {
    let d = |j: usize| (x as f64 - cb[j] as f64).abs();
    (0..cb.len()).fold(0, |b, j| if d(j) < d(b) { j } else { b })
}

/// Every code of `fit` (rows of `n`) is the oracle's nearest centroid of its row's codebook.
fn assert_nearest_codes(x: &[f32], n: usize, k: usize, fit: &Fit) {
    for (i, &v) in x.iter().enumerate() {
        let r = i / n;
        assert_eq!(fit.codes[i] as usize, nearest(v, &fit.codebook[r * k..(r + 1) * k]), "element {i} = {v:e}");
    }
}

#[test]
fn thresholds_count_like_the_nearest_rule() {
    let mut rng = Rng(31);
    for trial in 0..200 {
        let k = 2 + trial % 40; // above 32 thresholds: the binary-search path
        let scale = [1.0f32, 1e-3, 1e6, 1e-30][trial % 4];
        let mut cb: Vec<f32> = (0..k).map(|_| (rng.next() - 0.5) * scale).collect();
        if trial % 5 == 0 {
            cb[0] = 0.0; // a centroid at zero: thresholds near subnormals
        }
        cb.sort_by(f32::total_cmp);
        cb.dedup();
        let (lo, hi) = (cb[0] - scale, cb[cb.len() - 1] + scale);
        let mut thr = Vec::new();
        assert!(codes::thresholds(&cb, lo, hi, &mut thr), "trial {trial}");
        // Probe every threshold, its f32 neighbours, the exact midpoints and the centroids.
        let mut probe = vec![lo, hi];
        for (c, &t) in thr.iter().enumerate() {
            probe.extend([t, t.next_down(), t.next_up(), t.next_down().next_down(), cb[c]]);
            probe.push((0.5 * (cb[c] as f64 + cb[c + 1] as f64)) as f32);
        }
        for &x in &probe {
            let code = thr.partition_point(|&t| t <= x);
            assert_eq!(code, nearest(x, &cb), "trial {trial}: x = {x:e}");
        }
        // Each threshold is the first value that goes up.
        for (c, &t) in thr.iter().enumerate() {
            assert!(cb[c] < t && t <= cb[c + 1]);
            assert_eq!((nearest(t, &cb), nearest(t.next_down(), &cb)), (c + 1, c), "trial {trial}");
        }
    }
    // Centroids packed against the range: rounded distances can tie across a centroid.
    assert!(!codes::thresholds(&[0.0, 1e-30], 0.0, 1.0, &mut Vec::new()));
    assert!(codes::thresholds(&[0.0, 1e-30], 0.0, 1e-29, &mut Vec::new()));
}

#[test]
fn values_on_midpoints_go_to_the_lower_code() {
    // Centroids 0 and 1 (the weighted points), zero-weight probes at the midpoint 0.5 and its
    // neighbours, and at the midpoint of 1 and 3 (the third centroid).
    let probes = [0.5f32, 0.5f32.next_up(), 0.5f32.next_down(), 2.0, 2.0f32.next_up(), 2.0f32.next_down()];
    let mut x = vec![0.0f32, 0.0, 1.0, 1.0, 3.0, 3.0];
    let mut w = vec![1.0f32; 6];
    x.extend(probes);
    w.extend([0.0; 6]);
    for exact in [true, false] {
        let fit = kmeans1d(&x, x.len(), 3, Weights::PerValue(&w), exact).unwrap();
        assert_eq!(fit.codebook, [0.0, 1.0, 3.0]);
        assert_eq!(fit.codes[6..], [0, 1, 0, 1, 2, 1]);
        assert_eq!(fit.inertia, [0.0]);
    }
}

#[test]
fn codes_are_nearest_on_duplicates_zero_weights_and_constant_rows() {
    let mut rng = Rng(37);
    let n = 700;
    let mut x = Vec::new();
    let mut w = Vec::new();
    for r in 0..6 {
        x.extend((0..n).map(|_| match r {
            0 => ((rng.next() - 0.5) * 8.0).round() / 8.0, // few levels: duplicates
            1 => 2.5,                                      // constant
            _ => heavy(&mut rng) * 0.02,
        }));
        w.extend((0..n).map(|i| if r == 3 || i % 3 == 0 { 0.0 } else { rng.next() }));
    }
    for exact in [true, false] {
        for k in [1, 5, 16, 40] {
            let unweighted = kmeans1d(&x, n, k, Weights::None, exact).unwrap();
            let weighted = kmeans1d(&x, n, k, Weights::PerValue(&w), exact).unwrap();
            for (fit, wv) in [(&unweighted, None), (&weighted, Some(&w))] {
                assert_nearest_codes(&x, n, k, fit);
                for r in 0..6 {
                    let cb = &fit.codebook[r * k..(r + 1) * k];
                    let want: f64 = (r * n..(r + 1) * n)
                        .map(|i| {
                            let d = x[i] as f64 - cb[fit.codes[i] as usize] as f64;
                            wv.map_or(1.0, |w| w[i] as f64) * d * d
                        })
                        .sum();
                    assert!((fit.inertia[r] - want).abs() <= 1e-12 * want, "row {r} k={k}");
                }
            }
            // The constant row and the all-zero-weight row.
            assert!(unweighted.codebook[k..2 * k].iter().all(|&v| v == 2.5) && unweighted.inertia[1] == 0.0);
            assert_eq!(weighted.inertia[3], 0.0);
        }
    }
}

#[test]
fn every_simd_level_gives_the_same_bits_on_duplicates_and_zero_weights() {
    let mut rng = Rng(41);
    let (rows, n) = (4, 1003); // a partial last group of sixteen
    let x: Vec<f32> = (0..rows * n).map(|i| if i % 2 == 0 { (heavy(&mut rng) * 4.0).round() / 4.0 } else { heavy(&mut rng) }).collect();
    let w: Vec<f32> = (0..rows * n).map(|i| if i % 4 == 1 { 0.0 } else { rng.next() }).collect();
    for exact in [true, false] {
        for (k, weights) in [(16, Weights::None), (16, Weights::PerValue(&w)), (48, Weights::PerValue(&w))] {
            let want = kmeans1d_at(Level::Scalar, &x, n, k, weights, exact);
            assert_nearest_codes(&x, n, k, &want);
            for level in crate::simd::available_levels() {
                let got = kmeans1d_at(level, &x, n, k, weights, exact);
                assert_eq!(bits(&got.codebook), bits(&want.codebook), "{level:?} exact={exact} k={k}");
                assert_eq!(got.codes, want.codes, "{level:?} exact={exact} k={k}");
                assert_eq!(
                    got.inertia.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.inertia.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                );
            }
        }
    }
}

/// The weighted SSE of the runs `s.bounds` of the loaded row, from its prefix sums.
fn runs_sse(s: &sort::Scratch) -> f64 {
    s.bounds.windows(2).map(|b| (s.pq[b[1]] - s.pq[b[0]]) - (s.ps[b[1]] - s.ps[b[0]]).powi(2) / (s.pw[b[1]] - s.pw[b[0]])).sum()
}

#[test]
fn band_refinement_never_loses_to_the_coarse_dp() {
    let mut rng = Rng(43);
    let (mut s, mut d) = (sort::Scratch::default(), dp::Dp::default());
    for trial in 0..24 {
        let n = [100, 300, 1000, 3000][trial % 4];
        let k = [2, 16, 32, 40, 100][trial % 5].min(n);
        let x: Vec<f32> = (0..n).map(|_| heavy(&mut rng) * 0.02).collect();
        let w: Vec<f32> = (0..n).map(|i| if i % 6 == 0 { 0.0 } else { rng.next() }).collect();
        let m = s.load(&x, if trial % 2 == 0 { None } else { Some(&w) });
        let kk = k.min(m);
        dp::dp_bounds(&mut s, &mut d, kk, false);
        let coarse = runs_sse(&s);
        dp::band_refine(&mut s, &mut d, kk);
        let band = runs_sse(&s);
        assert!(s.bounds.len() == kk + 1 && s.bounds[0] == 0 && s.bounds[kk] == m);
        assert!(s.bounds.windows(2).all(|b| b[0] < b[1]), "trial {trial}");
        // The coarse grid lies in the fine one for k <= 32.
        if k <= dp::COARSE_GRID / 2 {
            assert!(band <= coarse * (1.0 + 1e-12) + 1e-18, "trial {trial}: {band} vs {coarse}");
        }
        dp::dp_bounds(&mut s, &mut d, kk, true);
        let exact = runs_sse(&s);
        assert!(band >= exact * (1.0 - 1e-12) - 1e-18, "trial {trial}");
    }
}

#[test]
fn a_weight_lost_in_the_prefix_sum_is_not_a_free_run() {
    // Sorted -1, 0, 1 with weights 1, 1, 2^-52: the prefix weight 2 + 2^-52 rounds to 2, so the
    // run {1} had weight 0, a quotient `2^-104 / 0 = inf` and an SSE of -inf, and the fit chose
    // {-1, 0}, {1} (SSE 0.5) over the optimum {-1}, {0, 1} (SSE ~ 2^-52).
    for exact in [true, false] {
        for t in [1e-3, 1e-8, 2f32.powi(-52), 2f32.powi(-53), 1e-20] {
            let (x, w) = ([0.0f32, -1.0, 1.0], [1.0f32, 1.0, t]);
            // Capped costs below `4 * 3 * eps * (2 + t)`; the others keep the plain quotient.
            let mut s = sort::Scratch::default();
            s.load(&x, Some(&w));
            assert_eq!(s.tiny, t < 1e-14, "t={t}");
            let fit = kmeans1d(&x, 3, 2, Weights::PerValue(&w), exact).unwrap();
            let want = brute_sse(&x, &w, 2);
            assert_eq!(fit.codes, [1, 0, 1], "t={t} exact={exact}");
            assert_eq!(fit.codebook[0], -1.0, "t={t} exact={exact}");
            assert!((fit.inertia[0] - want).abs() <= 1e-6 * want, "t={t} exact={exact}: {} vs {want}", fit.inertia[0]);
            // k = 3: every value its own centroid. Lloyd's mean of the run {1} from prefix
            // differences was `2^-52 / 0 = inf`, which emptied the run.
            let fit = kmeans1d(&x, 3, 3, Weights::PerValue(&w), exact).unwrap();
            assert_eq!((fit.codebook, fit.inertia), (vec![-1.0, 0.0, 1.0], vec![0.0]), "t={t} exact={exact}");
        }
    }
}

#[test]
fn weights_spanning_thirty_decades_give_the_optimum() {
    // Weights 10^-30 .. 1 (some zero; capped costs), or 10^-12 .. 1 (just above the cap's
    // threshold: plain quotients of run weights far below the row's). The DP's costs are
    // prefix-sum differences, off by about `n * eps * (total weight) * (largest |x - shift|)^2`;
    // the optimum is found within a small multiple of that (`tol`, which also covers rounding
    // the centroids to f32: (total weight) * 2^-48 at most for |x| <= 1).
    let mut rng = Rng(99);
    for trial in 0..400 {
        let n = 2 + trial % 23;
        let k = (2 + trial % 5).min(n);
        let levels = if trial % 3 == 0 { 4.0 } else { 1e6 };
        let x: Vec<f32> = (0..n).map(|_| ((rng.next() * levels).floor() / levels) * 2.0 - 1.0).collect();
        let decades = if trial % 2 == 0 { 30.0 } else { 12.0 };
        let w: Vec<f32> = (0..n).map(|_| if rng.next() < 0.1 { 0.0 } else { 10f32.powf(-decades * rng.next()) }).collect();
        if w.iter().all(|&v| v == 0.0) {
            continue;
        }
        let want = brute_sse(&x, &w, k);
        let total: f64 = w.iter().map(|&v| v as f64).sum();
        let tol = 1e-9 * want + 64.0 * n as f64 * f64::EPSILON * total * 4.0;
        let fit = kmeans1d(&x, n, k, Weights::PerValue(&w), true).unwrap();
        assert!((fit.inertia[0] - want).abs() <= tol, "trial {trial}: {} vs {want}", fit.inertia[0]);
        let fast = kmeans1d(&x, n, k, Weights::PerValue(&w), false).unwrap();
        assert!(fast.inertia[0] >= want - tol, "trial {trial}");
    }
}
