//! Filtered assignment against brute force: at every SIMD level, over a sequence of moving
//! centroids, codes and distances equal `assign_batch_scalar`'s bit for bit on random,
//! clustered, tie-heavy and duplicate-heavy data, tiny and ragged shapes; filtered Lloyd equals
//! plain Lloyd; and the filter really prunes.

use super::assign::Codebook;
use super::kmeans::{lloyd_iteration, lloyd_iteration_accel, Accel, AccelKind};
use super::kmeans_filter::{assign_filtered_at, Filter, LEAF, LEVELS};
use super::kmeans_test_data::{brute, clustered, ints, uniform};
use super::rng::Rng;
use super::Metric;
use crate::simd::available_levels;

/// Moves the centroids a little (and one a lot) `steps` times, checking every level's filtered
/// assignment (one tree kept across the steps) against brute force each time.
/// Every level also prunes exactly the same pairs (the kernels perform the same operations).
fn check_sequence(x: &[f32], d: usize, c0: &[f32], steps: usize, what: &str) {
    let mut scored: Vec<Vec<u64>> = Vec::new();
    for level in available_levels() {
        let mut rng = Rng::new(x.len() as u64 + 3);
        let mut f = Filter::new();
        let mut c = c0.to_vec();
        scored.push(Vec::new());
        for step in 0..steps {
            let cb = Codebook::new(&c, d, Metric::L2).unwrap();
            let (codes, dists) = assign_filtered_at(level, &cb, x, &mut f).unwrap();
            let got = (codes, dists.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            assert!(got == brute(&cb, x), "{what}: level {level:?}, step {step}");
            scored.last_mut().unwrap().push(f.scored);
            let scale = if step % 3 == 2 { 0.0 } else { 0.05 };
            c.iter_mut().for_each(|v| *v += ((rng.uniform() - 0.5) * scale) as f32);
            if step == 1 {
                c[..d].iter_mut().for_each(|v| *v += 3.0);
            }
        }
    }
    assert!(scored.iter().all(|s| *s == scored[0]), "{what}: pairs scored per level {scored:?}");
}

#[test]
fn filtered_assignment_equals_brute_force() {
    let mut rng = Rng::new(17);
    let big = LEVELS[0] * 2 + 3 * LEAF + 5; // ragged nodes at every level
    for (n, d, k) in
        [(big, 8, 40), (3000, 3, 17), (2000, 16, 300), (700, 1, 5), (600, 5, 1), (5000, 2, 256), (1500, 8, 1400), (900, 40, 33)]
    {
        let x = clustered(&mut rng, n, d, 20, 1.0);
        check_sequence(&x, d, &x[..k * d], 4, &format!("clustered n={n} d={d} k={k}"));
        let u = uniform(&mut rng, n * d, 3.0);
        check_sequence(&u, d, &u[(n - k) * d..], 3, &format!("uniform n={n} d={d} k={k}"));
    }
}

#[test]
fn tiny_shapes_equal_brute_force() {
    let mut rng = Rng::new(2);
    for (n, d, k) in [(1, 3, 1), (5, 2, 3), (LEAF - 1, 4, 7), (LEAF, 1, 2), (LEAF + 1, 3, 20), (LEVELS[1] + 7, 2, 9)] {
        let x = uniform(&mut rng, n * d, 2.0);
        let c = uniform(&mut rng, k * d, 2.0);
        check_sequence(&x, d, &c, 2, &format!("tiny n={n} d={d} k={k}"));
    }
}

#[test]
fn ties_and_duplicates_go_to_the_lowest_index() {
    let mut rng = Rng::new(23);
    for (n, d, k) in [(2000, 2, 9), (1500, 4, 31), (800, 1, 4), (3000, 8, 100)] {
        let x = ints(&mut rng, n * d);
        // Duplicate centroids: every point is tied between two of them.
        let mut c0 = x[..k * d].to_vec();
        c0.extend_from_slice(&x[..k * d]);
        check_sequence(&x, d, &c0, 3, &format!("ints n={n} d={d} k={k}"));
        // Duplicate points: runs of identical rows.
        let dup: Vec<f32> = (0..n).flat_map(|i| x[(i / 50) * d..(i / 50 + 1) * d].to_vec()).collect();
        check_sequence(&dup, d, &x[d..(k + 1) * d], 3, &format!("duplicates n={n} d={d} k={k}"));
    }
}

#[test]
fn huge_and_tiny_magnitudes_equal_brute_force() {
    let mut rng = Rng::new(4);
    for scale in [1e13, 1e11, 1e-18, 1e-30] {
        let x = uniform(&mut rng, 800 * 3, scale);
        check_sequence(&x, 3, &x[..50 * 3], 2, &format!("scale {scale}"));
    }
}

#[test]
fn the_filter_prunes_most_pairs_on_clustered_data() {
    let mut rng = Rng::new(8);
    let (n, d, k) = (16384, 4, 512);
    let x = clustered(&mut rng, n, d, 64, 2.0);
    let cb = Codebook::new(&x[..k * d], d, Metric::L2).unwrap();
    let mut f = Filter::new();
    let got = assign_filtered_at(available_levels()[0], &cb, &x, &mut f).unwrap();
    assert_eq!(got.0, brute(&cb, &x).0);
    let all = (n * k) as u64;
    assert!(f.scored * 10 < all, "{} of {all} pairs scored", f.scored);
}

#[test]
fn changed_points_rebuild_the_tree_and_bad_input_is_an_error() {
    let mut rng = Rng::new(9);
    let mut x = uniform(&mut rng, 3000 * 3, 1.0);
    let cb = Codebook::new(&x[..90], 3, Metric::L2).unwrap();
    let level = available_levels()[0];
    let mut f = Filter::new();
    assert_eq!(assign_filtered_at(level, &cb, &x, &mut f).unwrap().0, brute(&cb, &x).0);
    // The same buffer with other values: the tree must notice.
    x.iter_mut().for_each(|v| *v = -*v * 3.0);
    assert_eq!(assign_filtered_at(level, &cb, &x, &mut f).unwrap().0, brute(&cb, &x).0);
    assert_eq!(assign_filtered_at(level, &cb, &x[..1500], &mut f).unwrap().0, brute(&cb, &x[..1500]).0);
    let mut bad = x.clone();
    bad[7] = f32::NAN;
    assert!(assign_filtered_at(level, &cb, &bad, &mut Filter::new()).is_err());
    assert!(assign_filtered_at(level, &cb, &x[..5], &mut f).is_err());
    let cos = Codebook::new(&x[..30], 3, Metric::Cosine).unwrap();
    assert!(assign_filtered_at(level, &cos, &x, &mut f).is_err());
    // Fewer centroids than the last call's codes reach: the pivots must not use them.
    for k in [30, 4, 1] {
        let cb = Codebook::new(&x[..k * 3], 3, Metric::L2).unwrap();
        assert_eq!(assign_filtered_at(level, &cb, &x, &mut f).unwrap().0, brute(&cb, &x).0, "k={k}");
    }
}

#[test]
fn accelerated_lloyd_equals_plain_lloyd() {
    let mut rng = Rng::new(5);
    for (n, d, k) in [(6000, 4, 600), (3000, 8, 900), (2000, 40, 50), (2000, 20, 50), (2000, 3, 60)] {
        let x = clustered(&mut rng, n, d, 12, 2.0);
        let w: Vec<f32> = (0..n).map(|i| (i % 4) as f32 * 0.5).collect();
        for weights in [None, Some(w.as_slice())] {
            let mut c = x[..k * d].to_vec();
            c[d..2 * d].fill(1e4); // nobody picks it: re-seeded
            let mut a = Accel::new();
            for it in 0..6 {
                let plain = lloyd_iteration(&x, d, weights, &c, Metric::L2).unwrap();
                let fast = lloyd_iteration_accel(&x, d, weights, &c, Metric::L2, &mut a).unwrap();
                assert_eq!(plain.codes, fast.codes, "n={n} d={d} k={k} iteration {it}");
                let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&plain.centroids), bits(&fast.centroids));
                assert_eq!(plain.inertia.to_bits(), fast.inertia.to_bits());
                assert_eq!((plain.reseeded, plain.cluster_weight), (fast.reseeded, fast.cluster_weight));
                c = fast.centroids;
            }
            // The shape's choice, or brute force where it stopped paying.
            let want = Accel::choose(n, d, k, Metric::L2);
            assert!(matches!(a.kind, AccelKind::Plain) || std::mem::discriminant(&a.kind) == std::mem::discriminant(&want));
        }
    }
    assert!(matches!(Accel::choose(65536, 8, 4096, Metric::L2), AccelKind::Filter(_)));
    assert!(matches!(Accel::choose(65536, 64, 256, Metric::L2), AccelKind::Bounds(_)));
    assert!(matches!(Accel::choose(65536, 8, 4096, Metric::Cosine), AccelKind::Plain));
}

/// Runs `calls` accelerated iterations (checked against plain ones) and returns the state.
fn iterate(x: &[f32], d: usize, k: usize, calls: usize) -> Accel {
    let mut a = Accel::new();
    let mut c = x[..k * d].to_vec();
    for it in 0..calls {
        let plain = lloyd_iteration(x, d, None, &c, Metric::L2).unwrap();
        let fast = lloyd_iteration_accel(x, d, None, &c, Metric::L2, &mut a).unwrap();
        assert_eq!(plain.codes, fast.codes, "iteration {it}");
        assert_eq!(plain.inertia.to_bits(), fast.inertia.to_bits());
        c = fast.centroids;
    }
    a
}

#[test]
fn acceleration_that_does_not_pay_falls_back_to_brute_force() {
    let mut rng = Rng::new(21);
    // Unclustered points: the sample's tree scores most pairs, so the full tree is never
    // built; with fewer points than a sample, the first call judges.
    let (n, d, k) = (40_000, 8, 600);
    let a = iterate(&uniform(&mut rng, n * d, 1.0), d, k, 2);
    assert!(matches!(Accel::choose(n, d, k, Metric::L2), AccelKind::Filter(_)));
    assert!(matches!(a.kind, AccelKind::Plain));
    let a = iterate(&uniform(&mut rng, 5000 * d, 1.0), d, k, 2);
    assert!(matches!(a.kind, AccelKind::Plain));
    // Clustered points keep the tree.
    let a = iterate(&clustered(&mut rng, n, d, 600, 0.5), d, k, 3);
    assert!(matches!(a.kind, AccelKind::Filter(_)));
    // Distance bounds: judged from the second call on.
    let (n, d, k) = (6000, 48, 64);
    let a = iterate(&uniform(&mut rng, n * d, 1.0), d, k, 1);
    assert!(matches!(a.kind, AccelKind::Bounds(_)));
    let a = iterate(&uniform(&mut rng, n * d, 1.0), d, k, 2);
    assert!(matches!(a.kind, AccelKind::Plain));
    let a = iterate(&clustered(&mut rng, n, d, 64, 0.5), d, k, 3);
    assert!(matches!(a.kind, AccelKind::Bounds(_)));
}
