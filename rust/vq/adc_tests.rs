//! The ADC scan against its naive oracle: u8 and u16 codes, ties, awkward shapes, database
//! splits and thread counts, and bad input.

use super::*;
use crate::vq::rng::Rng;

fn tables(rng: &mut Rng, len: usize, ties: bool) -> Vec<f32> {
    (0..len)
        .map(|_| {
            let u = (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
            if ties {
                (u * 4.0).floor()
            } else {
                u * 10.0 - 2.0
            }
        })
        .collect()
}

fn codes(rng: &mut Rng, len: usize, ksub: usize) -> Vec<usize> {
    (0..len).map(|_| (rng.next_u64() % ksub as u64) as usize).collect()
}

fn check(nq: usize, m: usize, ksub: usize, n: usize, k: usize, ties: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let t = tables(&mut rng, nq * m * ksub, ties);
    let c = codes(&mut rng, n * m, ksub);
    let want = adc_search_naive(&t, nq, m, ksub, &c, k);
    let c16: Vec<u16> = c.iter().map(|&v| v as u16).collect();
    assert_eq!(adc_search(&t, nq, m, ksub, Codes::U16(&c16), k).unwrap(), want, "u16 nq={nq} m={m} ksub={ksub} n={n} k={k}");
    if ksub <= 256 {
        let c8: Vec<u8> = c.iter().map(|&v| v as u8).collect();
        let got = adc_search(&t, nq, m, ksub, Codes::U8(&c8), k).unwrap();
        for (a, b) in got.distances.iter().zip(&want.distances) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
        assert_eq!(got, want, "u8 nq={nq} m={m} ksub={ksub} n={n} k={k}");
    }
}

#[test]
fn adc_matches_naive_on_awkward_shapes() {
    for (i, &(nq, m, ksub, n, k)) in
        [(1, 1, 1, 1, 1), (3, 1, 2, 7, 7), (5, 3, 5, 9, 4), (9, 16, 256, 2500, 10), (17, 7, 100, 1031, 33), (2, 4, 300, 600, 5)]
            .iter()
            .enumerate()
    {
        check(nq, m, ksub, n, k, false, i as u64);
        check(nq, m, ksub, n, k, true, 100 + i as u64);
    }
}

#[test]
fn adc_splits_and_threads_do_not_change_results() {
    // Few queries over a large database: split across the database and merged.
    check(2, 8, 16, 3 * MIN_SPLIT + 5, 20, true, 7);
    check(1, 2, 4, 2 * MIN_SPLIT + 1, 3 * MIN_SPLIT / 2, true, 8);
    let mut rng = Rng::new(9);
    let (nq, m, ksub, n) = (3, 4, 8, 2 * MIN_SPLIT + 77);
    let t = tables(&mut rng, nq * m * ksub, true);
    let c: Vec<u8> = codes(&mut rng, n * m, ksub).into_iter().map(|v| v as u8).collect();
    let before = parallel::num_threads();
    parallel::set_num_threads(1).unwrap();
    let one = adc_search(&t, nq, m, ksub, Codes::U8(&c), 50).unwrap();
    parallel::set_num_threads(5).unwrap();
    let five = adc_search(&t, nq, m, ksub, Codes::U8(&c), 50).unwrap();
    parallel::set_num_threads(before).unwrap();
    assert_eq!(one, five);
}

#[test]
fn adc_ties_go_to_the_lower_index() {
    let t = vec![1.0f32, 1.0]; // nq=1, m=1, ksub=2: every vector at distance 1
    let c = [1u8, 0, 1, 0, 1];
    let got = adc_search(&t, 1, 1, 2, Codes::U8(&c), 3).unwrap();
    assert_eq!(got.indices, vec![0, 1, 2]);
    assert_eq!(got.distances, vec![1.0; 3]);
}

#[test]
fn adc_rejects_bad_input() {
    let t = vec![0.5f32; 2 * 3 * 4];
    let c = [0u8, 1, 2, 3, 0, 1];
    assert!(adc_search(&t, 2, 3, 4, Codes::U8(&c), 2).is_ok());
    assert!(matches!(adc_search(&t, 2, 3, 4, Codes::U8(&c), 3), Err(Error::InvalidArgument(_))));
    assert!(matches!(adc_search(&t, 2, 3, 4, Codes::U8(&c), 0), Err(Error::InvalidArgument(_))));
    assert!(matches!(adc_search(&t[1..], 2, 3, 4, Codes::U8(&c), 1), Err(Error::Shape(_))));
    assert!(matches!(adc_search(&t, 2, 3, 4, Codes::U8(&c[1..]), 1), Err(Error::Shape(_))));
    assert!(matches!(adc_search(&t, 2, 3, 4, Codes::U8(&[0, 4, 0]), 1), Err(Error::InvalidArgument(_))));
    assert!(matches!(adc_search(&vec![0.0; 2 * 3 * 300], 2, 3, 300, Codes::U8(&c), 1), Err(Error::InvalidArgument(_))));
    assert!(matches!(adc_search(&[], 0, 0, 4, Codes::U8(&[]), 1), Err(Error::InvalidArgument(_))));
    let mut bad = t.clone();
    bad[5] = f32::NAN;
    assert_eq!(adc_search(&bad, 2, 3, 4, Codes::U8(&c), 1), Err(Error::NonFinite { index: 5 }));
    bad[5] = f32::MAX / 2.0;
    assert!(matches!(adc_search(&bad, 2, 3, 4, Codes::U8(&c), 1), Err(Error::InvalidArgument(_))));
    // No queries: an empty result.
    let none = adc_search(&[], 0, 3, 4, Codes::U8(&c), 1).unwrap();
    assert!(none.indices.is_empty());
}
