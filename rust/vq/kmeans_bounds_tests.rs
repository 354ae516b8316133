//! Bounded assignment against brute force: at every SIMD level, over a sequence of moving
//! centroids, codes and distances equal `assign_batch_scalar`'s bit for bit, on random,
//! clustered, duplicate-heavy and tie-heavy data; and bounded Lloyd equals plain Lloyd.

use super::assign::Codebook;
use super::kmeans::{lloyd_iteration, lloyd_iteration_with};
use super::kmeans_bounds::{assign_bounded_at, Bounds};
use super::kmeans_test_data::{brute, clustered, ints, uniform};
use super::rng::Rng;
use super::Metric;
use crate::simd::available_levels;

/// Moves the centroids a little (and one a lot) as Lloyd would, `steps` times, checking every
/// level's bounded assignment against brute force each time.
fn check_sequence(x: &[f32], d: usize, c0: &[f32], steps: usize, rng: &mut Rng, what: &str) {
    for level in available_levels() {
        let mut b = Bounds::new();
        let mut c = c0.to_vec();
        let mut rng2 = Rng::new(rng.uniform().to_bits());
        for step in 0..steps {
            let cb = Codebook::new(&c, d, Metric::L2).unwrap();
            let (codes, dists) = assign_bounded_at(level, &cb, x, &mut b).unwrap();
            let got = (codes, dists.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            assert_eq!(got, brute(&cb, x), "{what}: level {level:?}, step {step}");
            let scale = if step % 3 == 2 { 0.0 } else { 0.05 };
            c.iter_mut().for_each(|v| *v += ((rng2.uniform() - 0.5) * scale) as f32);
            if step == 4 {
                c[..d].iter_mut().for_each(|v| *v += 3.0);
            }
        }
    }
}

#[test]
fn bounded_assignment_equals_brute_force() {
    let mut rng = Rng::new(17);
    // k = 600 and 1030: groups of 2 and 3 panels, the last one shorter.
    for (n, d, k) in
        [(3000, 8, 40), (2500, 3, 17), (1000, 64, 33), (700, 1, 5), (600, 17, 1), (5000, 2, 256), (3000, 3, 600), (4000, 2, 1030)]
    {
        let x = clustered(&mut rng, n, d, 20, 1.0);
        let c0: Vec<f32> = x[..k * d].to_vec();
        check_sequence(&x, d, &c0, 8, &mut rng, &format!("clustered n={n} d={d} k={k}"));
        let u = uniform(&mut rng, n * d, 3.0);
        check_sequence(&u, d, &u[..k * d], 6, &mut rng, &format!("uniform n={n} d={d} k={k}"));
    }
}

#[test]
fn ties_and_duplicates_go_to_the_lowest_index() {
    let mut rng = Rng::new(23);
    for (n, d, k) in [(2000, 2, 9), (1500, 4, 31), (800, 1, 4)] {
        let x = ints(&mut rng, n * d);
        // Duplicate centroids: every point is tied between two of them.
        let mut c0 = x[..k * d].to_vec();
        c0.extend_from_slice(&x[..k * d]);
        check_sequence(&x, d, &c0, 6, &mut rng, &format!("ints n={n} d={d} k={k}"));
        // Duplicate points: blocks of identical rows.
        let dup: Vec<f32> = (0..n).flat_map(|i| x[(i / 50) * d..(i / 50 + 1) * d].to_vec()).collect();
        check_sequence(&dup, d, &x[d..(k + 1) * d], 6, &mut rng, &format!("duplicates n={n} d={d} k={k}"));
    }
}

#[test]
fn bounded_lloyd_equals_plain_lloyd_and_skips_most_points() {
    let mut rng = Rng::new(5);
    let (n, d, k) = (6000, 4, 24);
    let x = clustered(&mut rng, n, d, 12, 2.0);
    let w: Vec<f32> = (0..n).map(|i| (i % 4) as f32 * 0.5).collect();
    for weights in [None, Some(w.as_slice())] {
        let mut c = x[..k * d].to_vec();
        c[d..2 * d].fill(1e4); // nobody picks it: re-seeded
        let mut b = Bounds::new();
        let mut reseeded = 0;
        for it in 0..12 {
            let plain = lloyd_iteration(&x, d, weights, &c, Metric::L2).unwrap();
            let fast = lloyd_iteration_with(&x, d, weights, &c, Metric::L2, Some(&mut b)).unwrap();
            assert_eq!(plain.codes, fast.codes, "iteration {it}");
            assert_eq!(
                plain.centroids.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                fast.centroids.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
            assert_eq!(plain.inertia.to_bits(), fast.inertia.to_bits());
            assert_eq!((plain.reseeded, plain.cluster_weight), (fast.reseeded, fast.cluster_weight));
            reseeded += fast.reseeded;
            c = fast.centroids;
        }
        assert!(reseeded >= 1);
        // Most groups are ruled out by their bounds once the centroids settle.
        let all = n * b.groups;
        assert!(b.groups_searched < all / 4, "{} of {all} (point, group) pairs searched at the last iteration", b.groups_searched);
    }
}

#[test]
fn other_points_start_afresh_and_bad_input_is_an_error() {
    let mut rng = Rng::new(9);
    let (x, y) = (uniform(&mut rng, 400 * 3, 1.0), uniform(&mut rng, 400 * 3, 1.0));
    let cb = Codebook::new(&x[..30], 3, Metric::L2).unwrap();
    let mut b = Bounds::new();
    for level in available_levels() {
        assert_eq!(assign_bounded_at(level, &cb, &x, &mut b).unwrap().0, brute(&cb, &x).0);
        assert_eq!(assign_bounded_at(level, &cb, &y, &mut b).unwrap().0, brute(&cb, &y).0);
        assert_eq!(assign_bounded_at(level, &cb, &x[..600], &mut b).unwrap().0, brute(&cb, &x[..600]).0);
    }
    let mut bad = x.clone();
    bad[7] = f32::NAN;
    assert!(assign_bounded_at(available_levels()[0], &cb, &bad, &mut Bounds::new()).is_err());
    assert!(assign_bounded_at(available_levels()[0], &cb, &x[..5], &mut b).is_err());
    let cos = Codebook::new(&x[..30], 3, Metric::Cosine).unwrap();
    assert!(assign_bounded_at(available_levels()[0], &cos, &x, &mut b).is_err());
}
