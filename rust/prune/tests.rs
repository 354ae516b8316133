//! The pruning kernels against sort-based oracles, on random data, ties and edge cases.

use super::*;
use crate::error::Error;

fn lcg(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as i64 - (1 << 30)) as f32 / (1u64 << 30) as f32
        })
        .collect()
}

/// Oracle: sort flat indices by (key desc, index asc), keep the first `keep`.
fn oracle_mask(x: &[f32], keep: usize) -> Vec<u8> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by_key(|&i| (std::cmp::Reverse(key(x[i])), i));
    let mut m = vec![0u8; mask_len(x.len())];
    for &i in &idx[..keep] {
        m[i / 8] |= 1 << (i % 8);
    }
    m
}

fn masks_of(parts: &[&[f32]], keep: usize) -> Vec<Vec<u8>> {
    let mut masks: Vec<Vec<u8>> = parts.iter().map(|p| vec![0xAA; mask_len(p.len())]).collect();
    let mut refs: Vec<&mut [u8]> = masks.iter_mut().map(|m| m.as_mut_slice()).collect();
    magnitude_masks(parts, keep, &mut refs).unwrap();
    masks
}

#[test]
fn magnitude_matches_sort_oracle() {
    for &(n, seed) in &[(1usize, 1u64), (7, 2), (100, 3), (70_001, 4), (200_003, 5)] {
        let x = lcg(seed, n);
        for keep in [0, 1, n / 3, n / 2, n - 1, n] {
            assert_eq!(masks_of(&[&x], keep)[0], oracle_mask(&x, keep), "n={n} keep={keep}");
        }
    }
}

#[test]
fn ties_keep_lowest_index_across_chunks() {
    // Few distinct magnitudes, signs and zeros of both signs: ties straddle the 64Ki chunks.
    let x: Vec<f32> = (0..300_000).map(|i| [0.5f32, -0.5, 0.0, -0.0, 0.25][i % 5 * (i % 3 + 1) % 5]).collect();
    for keep in [1, 1000, 65_537, 150_000, 299_999] {
        let m = masks_of(&[&x], keep);
        assert_eq!(m[0], oracle_mask(&x, keep), "keep={keep}");
        assert_eq!(count_kept(&m[0], x.len()).unwrap(), keep);
    }
}

#[test]
fn global_equals_concatenation() {
    let (a, b, c) = (lcg(7, 1000), lcg(8, 70_000), lcg(9, 13));
    let all: Vec<f32> = [a.clone(), b.clone(), c.clone()].concat();
    let keep = all.len() * 3 / 10;
    let m = masks_of(&[&a, &b, &c], keep);
    let o = oracle_mask(&all, keep);
    // Rebuild the concatenated mask bit by bit.
    let bit = |mk: &[u8], i: usize| (mk[i / 8] >> (i % 8)) & 1;
    for i in 0..all.len() {
        let got = if i < 1000 {
            bit(&m[0], i)
        } else if i < 71_000 {
            bit(&m[1], i - 1000)
        } else {
            bit(&m[2], i - 71_000)
        };
        assert_eq!(got, bit(&o, i), "i={i}");
    }
}

#[test]
fn compress_expand_round_trip() {
    let x = lcg(11, 130_001);
    let mask = masks_of(&[&x], 40_000).remove(0);
    let mut packed = vec![0f32; 40_000];
    compress_into(&x, &mask, &mut packed).unwrap();
    let want: Vec<f32> = (0..x.len()).filter(|&i| mask[i / 8] >> (i % 8) & 1 == 1).map(|i| x[i]).collect();
    assert_eq!(packed, want);
    let mut dense = vec![1f32; x.len()];
    expand_into(&packed, &mask, &mut dense).unwrap();
    for i in 0..x.len() {
        let k = mask[i / 8] >> (i % 8) & 1 == 1;
        assert_eq!(dense[i].to_bits(), if k { x[i].to_bits() } else { 0 });
    }
}

fn oracle_nm(s: &[f32], n: usize, m: usize) -> Vec<Vec<usize>> {
    s.chunks(m)
        .map(|g| {
            let mut idx: Vec<usize> = (0..m).collect();
            idx.sort_by_key(|&i| (std::cmp::Reverse(key(g[i])), i));
            let mut k = idx[..n].to_vec();
            k.sort();
            k
        })
        .collect()
}

#[test]
fn nm_matches_oracle_and_round_trips() {
    for &(n, m) in &[(1usize, 2usize), (2, 4), (1, 4), (4, 8), (3, 8), (5, 16)] {
        let mut s = lcg(n as u64 * 31 + m as u64, m * 20_001);
        for v in s.iter_mut().step_by(3) {
            *v = (*v * 4.0).round() / 4.0; // many ties
        }
        let v = lcg(99, s.len());
        let groups = s.len() / m;
        let (mut out, mut pos) = (vec![0f32; groups * n], vec![0u8; nm_positions_len(groups, n, m)]);
        nm_into(&s, &v, n, m, &mut out, &mut pos).unwrap();
        let bits = position_bits(m);
        let mut codes = vec![0u8; groups * n];
        crate::pack::unpack(&pos, bits, &mut codes).unwrap();
        for (g, keep) in oracle_nm(&s, n, m).iter().enumerate() {
            for (j, &i) in keep.iter().enumerate() {
                assert_eq!(codes[g * n + j] as usize, i);
                assert_eq!(out[g * n + j], v[g * m + i]);
            }
        }
        let mut dense = vec![7f32; s.len()];
        nm_expand_into(&out, &pos, n, m, &mut dense).unwrap();
        let kept = dense.iter().zip(&v).filter(|(d, x)| d == x && **d != 0.0).count();
        assert_eq!(dense.iter().filter(|d| **d != 0.0).count(), kept);
        assert_eq!(kept, groups * n);
    }
}

#[test]
fn bad_input_is_an_error() {
    let mut x = lcg(3, 100);
    let mut m = vec![0u8; 13];
    assert!(magnitude_masks(&[&x], 101, &mut [&mut m]).is_err());
    assert!(magnitude_masks(&[&x], 10, &mut [&mut m[..12]]).is_err());
    x[42] = f32::NAN;
    assert_eq!(magnitude_masks(&[&x], 10, &mut [&mut m]), Err(Error::NonFinite { index: 42 }));
    x[42] = 0.0;
    x[7] = f32::NEG_INFINITY;
    let (mut o, mut p) = (vec![0f32; 50], vec![0u8; 13]);
    assert_eq!(nm_into(&x, &x, 2, 4, &mut o, &mut p), Err(Error::NonFinite { index: 7 }));
    assert!(nm_into(&x[..99], &x[..99], 2, 4, &mut o, &mut p).is_err());
    assert!(nm_into(&x, &x, 4, 4, &mut o, &mut p).is_err());
    assert!(nm_into(&x, &x, 0, 4, &mut o, &mut p).is_err());
    // Corrupt positions (a repeated index) are refused.
    let bad = vec![0u8; 13];
    assert!(nm_expand_into(&[1.0; 50], &bad, 2, 4, &mut vec![0f32; 100]).is_err());
    // Mask padding bits must be zero.
    assert!(count_kept(&[0xFF, 0xFF], 9).is_err());
}

/// Awkward data: random, few distinct magnitudes of both signs, zeros and -0.0.
fn awkward(seed: u64, n: usize) -> Vec<f32> {
    let r = lcg(seed, n);
    r.iter()
        .enumerate()
        .map(|(i, &v)| match i % 7 {
            0 => 0.0,
            1 => -0.0,
            2 => [0.5f32, -0.5, 0.25][i % 3],
            _ => v,
        })
        .collect()
}

/// Every level's bracket kernel gives the scalar one's mask, candidates and scan of `x`.
fn check_bracket_levels(x: &[f32], lo: u32, hi: u32) {
    let n = x.len();
    let mut want = (vec![0u8; mask_len(n)], bracket::Cands::default());
    let scan = bracket::bracket_scalar(x, lo, hi, &mut want.0, &mut want.1);
    assert_eq!(scan.above, want.0.iter().map(|b| b.count_ones() as usize).sum::<usize>());
    for l in crate::simd::available_levels() {
        // Candidates already in the lists stay in front of the new ones.
        let mut got = (vec![0xAAu8; mask_len(n)], bracket::Cands { idx: vec![7], key: vec![9] });
        assert_eq!(bracket::kernel(l)(x, lo, hi, &mut got.0, &mut got.1), scan, "{l:?} n={n} lo={lo} hi={hi}");
        assert_eq!((got.1.idx[0], got.1.key[0]), (7, 9));
        assert_eq!((&got.0, &got.1.idx[1..], &got.1.key[1..]), (&want.0, &want.1.idx[..], &want.1.key[..]), "{l:?} n={n} lo={lo} hi={hi}");
    }
}

#[test]
fn bracket_kernels_match_scalar_at_every_level() {
    // Lengths around the 8/16/64-element steps and the 4096-element reserve blocks.
    for &n in &[0usize, 1, 7, 8, 15, 16, 17, 33, 63, 64, 65, 127, 129, 1000, 4095, 4099, 4167, 70_001] {
        let x = awkward(n as u64 + 5, n);
        let mut keys: Vec<u32> = x.iter().map(|&v| key(v)).collect();
        keys.sort();
        let pick = |f: f64| keys.get((f * n as f64) as usize).copied().unwrap_or(0);
        for (lo, hi) in
            [(0, 0), (0, bracket::MAX_FINITE), (pick(0.3), pick(0.6)), (pick(0.5), pick(0.5)), (pick(0.49), pick(0.51)), (1, 0x7fff_ffff)]
        {
            check_bracket_levels(&x, lo, hi);
        }
        if n > 0 {
            let mut y = x.clone();
            y[n - 1] = f32::INFINITY;
            for l in crate::simd::available_levels() {
                assert!(bracket::kernel(l)(&y, 0, 5, &mut vec![0u8; mask_len(n)], &mut bracket::Cands::default()).bad, "{l:?}");
            }
        }
    }
}

#[test]
fn bracket_kernels_all_equal_and_sparse_candidates() {
    // All keys equal (every element a candidate, or every one above); candidates that sit only
    // at the ends of 64-element blocks, so runs of empty blocks alternate with crossing ones.
    for &n in &[5usize, 64, 100, 4096 + 65] {
        let x: Vec<f32> = (0..n).map(|i| if i % 2 == 0 { 0.75 } else { -0.75 }).collect();
        let k = key(0.75);
        for (lo, hi) in [(k, k), (0, k - 1), (k + 1, k + 2), (0, 0x7fff_ffff)] {
            check_bracket_levels(&x, lo, hi);
        }
        let y: Vec<f32> = (0..n).map(|i| if matches!(i % 64, 0 | 63) || i % 193 == 5 { 2.0 } else { (i % 13) as f32 * 0.01 }).collect();
        check_bracket_levels(&y, key(2.0), key(2.0));
        check_bracket_levels(&y, key(0.05), key(2.0));
    }
}

#[test]
fn magnitude_all_equal_and_threshold_ties_at_every_level() {
    // Large enough to take the sampled bracket: all-equal keys and a threshold inside a big tie.
    let n = 100_003;
    let equal: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { -1.5 } else { 1.5 }).collect();
    let tied: Vec<f32> = (0..n).map(|i| if i % 5 < 3 { 0.5 } else { (i % 11) as f32 }).collect();
    for x in [&equal, &tied] {
        for keep in [1, n / 4, n / 2, n / 2 + 1, n - 3] {
            let want = oracle_mask(x, keep);
            for l in crate::simd::available_levels() {
                let mut m = vec![0xAAu8; mask_len(n)];
                magnitude_masks_at(l, &[x], keep, &mut [&mut m]).unwrap();
                assert_eq!(m, want, "{l:?} keep={keep}");
            }
        }
    }
}

#[test]
fn magnitude_at_every_level_matches_oracle() {
    // Above the sampling size, so both the sampled bracket and the histogram fallback run.
    for &(n, seed) in &[(40_000usize, 21u64), (262_147, 22), (600_001, 23)] {
        let x = awkward(seed, n);
        for keep in [1, n / 10, n / 2, n / 2 + 1, n - n / 7, n - 1, n] {
            let want = oracle_mask(&x, keep);
            for l in crate::simd::available_levels() {
                let mut m = vec![0xAAu8; mask_len(n)];
                let t = magnitude_masks_at(l, &[&x], keep, &mut [&mut m]).unwrap();
                assert_eq!(m, want, "{l:?} n={n} keep={keep}");
                assert_eq!(t.above + t.ties, keep);
            }
        }
    }
}

#[test]
fn magnitude_sample_miss_falls_back() {
    // Sampled lines see only small values; the large ones sit where no line starts (a skewed
    // layout), so brackets from the sample can miss and the histogram path must take over.
    let n = 1 << 17;
    let x: Vec<f32> = (0..n).map(|i| if i % 256 >= 250 { 1000.0 + i as f32 } else { (i % 97) as f32 * 1e-3 }).collect();
    let jobs = select::chunks(&[&x], 1 << 18);
    let mut m = vec![0u8; mask_len(n)];
    let miss = bracket::bracketed(&jobs, &mut [&mut m[..]], 3000, 0, 1000, bracket::bracket_scalar).unwrap();
    assert_eq!(miss, None, "a bracket below the threshold must be refused");
    for keep in [10, 3000, 5000, 70_000] {
        for l in crate::simd::available_levels() {
            let mut m = vec![0u8; mask_len(n)];
            magnitude_masks_at(l, &[&x], keep, &mut [&mut m]).unwrap();
            assert_eq!(m, oracle_mask(&x, keep), "{l:?} keep={keep}");
        }
    }
}

#[test]
fn non_finite_reported_at_first_index_at_every_level() {
    let mut x = lcg(31, 300_000);
    x[280_000] = f32::NAN;
    x[123_457] = f32::INFINITY;
    for l in crate::simd::available_levels() {
        let mut m = vec![0u8; mask_len(x.len())];
        assert_eq!(magnitude_masks_at(l, &[&x], 1000, &mut [&mut m]), Err(Error::NonFinite { index: 123_457 }), "{l:?}");
        let (mut o, mut p) = (vec![0f32; 150_000], vec![0u8; 37_500]);
        assert_eq!(nm_into_at(l, &x, &x, 2, 4, &mut o, &mut p), Err(Error::NonFinite { index: 123_457 }));
    }
}

#[test]
fn nm4_kernels_match_scalar_at_every_level() {
    for n in 1..4 {
        for &groups in &[0usize, 1, 3, 4, 5, 17, 8192, 8195, 20_001] {
            let mut s = awkward(groups as u64 * 3 + n as u64, groups * 4);
            for (i, v) in s.iter_mut().enumerate().skip(3).step_by(11) {
                *v = if i % 2 == 0 { 0.0 } else { -0.0 };
            }
            let v = lcg(7, s.len());
            let len = (groups * n, nm_positions_len(groups, n, 4));
            let (mut wo, mut wp) = (vec![0f32; len.0], vec![0u8; len.1]);
            nm_into_at(crate::simd::Level::Scalar, &s, &v, n, 4, &mut wo, &mut wp).unwrap();
            let want = oracle_nm(&s, n, 4);
            let mut codes = vec![0u8; groups * n];
            crate::pack::unpack(&wp, 2, &mut codes).unwrap();
            assert_eq!(codes.iter().map(|&c| c as usize).collect::<Vec<_>>(), want.concat());
            for l in crate::simd::available_levels() {
                let (mut o, mut p) = (vec![9f32; len.0], vec![0xAAu8; len.1]);
                nm_into_at(l, &s, &v, n, 4, &mut o, &mut p).unwrap();
                assert_eq!(p, wp, "{l:?} {n}:4 groups={groups}");
                assert_eq!(o.iter().map(|f| f.to_bits()).collect::<Vec<_>>(), wo.iter().map(|f| f.to_bits()).collect::<Vec<_>>());
            }
        }
    }
}

#[test]
fn compress_kernels_match_scalar_at_every_level() {
    for &n in &[0usize, 1, 7, 8, 9, 15, 16, 17, 31, 33, 64, 1000, 4099] {
        let x = awkward(n as u64 + 40, n);
        // Masks: none, all, random bits, and one keeping only each 16-lane step's last lane.
        let rand: Vec<u8> = lcg(n as u64, mask_len(n)).iter().map(|v| (v.to_bits() >> 3) as u8).collect();
        let pad = |mut m: Vec<u8>| {
            if n % 8 != 0 {
                let last = m.len() - 1;
                m[last] &= (1u8 << (n % 8)) - 1;
            }
            m
        };
        for mask in [
            vec![0u8; mask_len(n)],
            pad(vec![0xFF; mask_len(n)]),
            pad(rand),
            pad((0..mask_len(n)).map(|b| if b % 2 == 1 { 0x80 } else { 0 }).collect()),
        ] {
            let kept = count_kept(&mask, n).unwrap();
            let mut want = vec![0f32; kept];
            let bad = mask::compress_scalar(&x, &mask, &mut want);
            assert!(!bad);
            let oracle: Vec<f32> = (0..n).filter(|&i| mask[i / 8] >> (i % 8) & 1 == 1).map(|i| x[i]).collect();
            assert_eq!(want.iter().map(|f| f.to_bits()).collect::<Vec<_>>(), oracle.iter().map(|f| f.to_bits()).collect::<Vec<_>>());
            for l in crate::simd::available_levels() {
                let mut got = vec![9f32; kept];
                assert!(!mask::compress_kernel(l)(&x, &mask, &mut got), "{l:?}");
                assert_eq!(
                    got.iter().map(|f| f.to_bits()).collect::<Vec<_>>(),
                    oracle.iter().map(|f| f.to_bits()).collect::<Vec<_>>(),
                    "{l:?} n={n}"
                );
                let mut y = x.clone();
                if n > 0 {
                    // A non-finite value is reported whether or not it is kept.
                    y[n / 2] = f32::NAN;
                    assert!(mask::compress_kernel(l)(&y, &mask, &mut got), "{l:?} n={n}");
                }
            }
        }
    }
}

#[test]
fn compress_into_at_every_level() {
    let x = awkward(12, 600_003);
    let mask = masks_of(&[&x], 250_001).remove(0);
    let want: Vec<f32> = (0..x.len()).filter(|&i| mask[i / 8] >> (i % 8) & 1 == 1).map(|i| x[i]).collect();
    for l in crate::simd::available_levels() {
        let mut got = vec![0f32; want.len()];
        compress_into_at(l, &x, &mask, &mut got).unwrap();
        assert_eq!(got.iter().map(|f| f.to_bits()).collect::<Vec<_>>(), want.iter().map(|f| f.to_bits()).collect::<Vec<_>>(), "{l:?}");
        let mut y = x.clone();
        y[300_000] = f32::INFINITY;
        assert_eq!(compress_into_at(l, &y, &mask, &mut got), Err(Error::NonFinite { index: 300_000 }));
        assert!(compress_into_at(l, &x, &mask, &mut got[1..]).is_err());
    }
}

/// Naive `f64` norms (plain order) of the rows (`rows == true`) or columns of `x`.
fn oracle_norms(x: &[f32], cols: usize, norm: Norm, rows: bool) -> Vec<f64> {
    let r = x.len() / cols;
    let (outer, inner) = if rows { (r, cols) } else { (cols, r) };
    (0..outer)
        .map(|o| {
            let s: f64 = (0..inner).map(|i| norm.term(x[if rows { o * cols + i } else { i * cols + o }])).sum();
            if norm == Norm::L2 {
                s.sqrt()
            } else {
                s
            }
        })
        .collect()
}

#[test]
fn norms_match_scalar_at_every_level_and_oracle() {
    // Shapes around the 8/16-lane steps, one-column and one-row matrices, several row blocks.
    for &(rows, cols) in &[(1usize, 1usize), (3, 17), (5, 16), (7, 33), (2, 100), (1000, 3), (600, 1000), (9, 4099)] {
        let x = awkward(rows as u64 * 7 + cols as u64, rows * cols);
        let ints: Vec<f32> = x.iter().map(|v| (v * 64.0).round()).collect();
        for norm in [Norm::L1, Norm::L2] {
            for (data, exact) in [(&x, false), (&ints, true)] {
                let mut want = (vec![0f64; rows], vec![0f64; cols]);
                norms::row_norms_at(crate::simd::Level::Scalar, data, cols, norm, &mut want.0).unwrap();
                norms::col_norms_at(crate::simd::Level::Scalar, data, cols, norm, &mut want.1).unwrap();
                for (got, o) in [(&want.0, oracle_norms(data, cols, norm, true)), (&want.1, oracle_norms(data, cols, norm, false))] {
                    for (g, o) in got.iter().zip(&o) {
                        // Integer data sums exactly in any order; otherwise the orders differ.
                        let tol = if exact { 0.0 } else { 1e-12 * o.abs().max(1.0) };
                        assert!((g - o).abs() <= tol, "{rows}x{cols} {norm:?}: {g} vs {o}");
                    }
                }
                for l in crate::simd::available_levels() {
                    let mut got = (vec![1f64; rows], vec![1f64; cols]);
                    norms::row_norms_at(l, data, cols, norm, &mut got.0).unwrap();
                    norms::col_norms_at(l, data, cols, norm, &mut got.1).unwrap();
                    let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got.0), bits(&want.0), "{l:?} rows {rows}x{cols} {norm:?}");
                    assert_eq!(bits(&got.1), bits(&want.1), "{l:?} cols {rows}x{cols} {norm:?}");
                }
            }
        }
    }
}

#[test]
fn norms_bad_input_is_an_error() {
    let mut x = lcg(5, 600 * 1000);
    for l in crate::simd::available_levels() {
        assert!(norms::row_norms_at(l, &x, 7, Norm::L1, &mut [0.0; 1]).is_err());
        assert!(norms::row_norms_at(l, &x, 1000, Norm::L1, &mut [0.0; 599]).is_err());
        assert!(norms::col_norms_at(l, &x, 1000, Norm::L2, &mut [0.0; 999]).is_err());
        assert!(norms::col_norms_at(l, &x, 0, Norm::L2, &mut []).is_err());
    }
    x[432_109] = f32::NAN;
    x[500_000] = f32::INFINITY;
    for l in crate::simd::available_levels() {
        assert_eq!(norms::row_norms_at(l, &x, 1000, Norm::L1, &mut [0.0; 600]), Err(Error::NonFinite { index: 432_109 }), "{l:?}");
        assert_eq!(norms::col_norms_at(l, &x, 1000, Norm::L2, &mut [0.0; 1000]), Err(Error::NonFinite { index: 432_109 }), "{l:?}");
    }
    assert!(Norm::from_order(3).is_err());
}
