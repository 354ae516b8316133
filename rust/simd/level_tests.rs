//! Checks shared by the tests of every SIMD level against the scalar oracle.

use super::scalar;

/// Compares a level's 4-bit pack/unpack with the scalar kernels on awkward lengths and on codes
/// with stray high bits (which packing must ignore).
pub fn check_nibble_kernels(pack: fn(&[u8], &mut [u8]), unpack: fn(&[u8], &mut [u8])) {
    let mut state = 0x2545F4914F6CDD1Du64;
    for n in (0usize..100).chain([129, 255, 256, 8193]) {
        let codes: Vec<u8> = (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let (mut want, mut got) = (vec![0u8; n.div_ceil(2)], vec![0u8; n.div_ceil(2)]);
        scalar::pack_nibbles(&codes, &mut want);
        pack(&codes, &mut got);
        assert_eq!(want, got, "pack, n = {n}");
        let (mut x, mut y) = (vec![0u8; n], vec![0u8; n]);
        scalar::unpack_nibbles(&want, &mut x);
        unpack(&want, &mut y);
        assert_eq!(x, y, "unpack, n = {n}");
        assert!(x.iter().zip(&codes).all(|(u, c)| *u == c & 0x0F));
    }
}

use super::GridsFn;

/// Compares a level's `grids` with the scalar kernel, bit for bit, for every scheme, width and
/// scale dtype, on ranges that include ±0, subnormals, float16 overflow and float32 overflow.
pub fn check_grids(grids: GridsFn) {
    // ranges that overflow (which only the flag must report) and ranges that do not
    let overflowing = [0.0f32, -0.0, 1e-39, -1e-39, 1e-45, 3e-8, -6e4, 6e4, 1e5, -3e38, 3e38, 0.5, -0.5, 7.0];
    let finite = [0.0f32, -0.0, 1e-39, -1e-39, 1e-45, 3e-8, 2e-5, -1e-6, 0.5, -0.5, 7.0, -7.0, 100.0];
    let mut compared = 0usize;
    let mut state = 0x9E3779B97F4A7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for bits in 1..=8u32 {
        for symmetric in [false, true] {
            if symmetric && bits < 2 {
                continue;
            }
            for f16 in [false, true] {
                let p = super::GridParams {
                    symmetric,
                    top: ((1u32 << bits) - 1) as f32,
                    qm: ((1u32 << (bits - 1)) - 1) as f32,
                    offset: (1u32 << (bits - 1)) as f32,
                    f16,
                };
                for (special, n) in
                    [&overflowing[..], &finite[..]].into_iter().flat_map(|sp| [1usize, 7, 8, 9, 31, 64, 257].map(|n| (sp, n)))
                {
                    let value = |r: u64| -> f32 {
                        if r.is_multiple_of(4) {
                            special[(r >> 8) as usize % special.len()]
                        } else {
                            ((r >> 11) as f32 / (1u64 << 53) as f32 - 0.5) * 10f32.powi((r % 9) as i32 - 4)
                        }
                    };
                    let (mut mins, mut maxs) = (Vec::new(), Vec::new());
                    for _ in 0..n {
                        let (a, b) = (value(next()), value(next()));
                        mins.push(a.min(b));
                        maxs.push(a.max(b));
                    }
                    let mut want = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
                    let mut got = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
                    let ok_want = scalar::grids(&mins, &maxs, &p, &mut want.0, &mut want.1, &mut want.2);
                    let ok_got = grids(&mins, &maxs, &p, &mut got.0, &mut got.1, &mut got.2);
                    assert_eq!(ok_want, ok_got, "{p:?} n={n}");
                    if !ok_want {
                        continue; // an overflowing call is an error; its values are not used
                    }
                    let bits_of = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits_of(&want.0), bits_of(&got.0), "scales {p:?} {mins:?} {maxs:?}");
                    assert_eq!(bits_of(&want.1), bits_of(&got.1), "zeros {p:?} {mins:?} {maxs:?}");
                    assert_eq!(bits_of(&want.2), bits_of(&got.2), "inverses {p:?}");
                    compared += 1;
                }
            }
        }
    }
    assert!(compared > 300, "only {compared} calls compared values");
}

/// Compares a level's NF4 kernels with the scalar ones: random blocks at many scales, the exact
/// thresholds and their neighbours, ±0, subnormals, infinities from `inv = 1/0` and NaN.
pub fn check_nf4_kernels(codes: fn(&[f32], f32, &mut [u8]), values: fn(&[u8], f32, &mut [f32])) {
    let mut state = 0x853C49E6748FEA9Bu64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut specials: Vec<f32> = vec![0.0, -0.0, 1.0, -1.0, 1e-39, -1e-45, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
    for &t in &scalar::NF4_MID {
        specials.extend([t, f32::from_bits(t.to_bits() + 1), f32::from_bits(t.to_bits() - 1)]);
    }
    for n in (1usize..=33).chain([64, 129, 8193]) {
        for inv in [1.0f32, 0.37, 12.5, 0.0, f32::INFINITY] {
            let x: Vec<f32> = (0..n)
                .map(|i| {
                    let r = next();
                    if r % 3 == 0 {
                        specials[(i + (r >> 8) as usize) % specials.len()]
                    } else {
                        ((r >> 11) as f32 / (1u64 << 53) as f32 - 0.5) * 2.5
                    }
                })
                .collect();
            let (mut want, mut got) = (vec![0u8; n], vec![0u8; n]);
            scalar::nf4_codes(&x, inv, &mut want);
            codes(&x, inv, &mut got);
            assert_eq!(want, got, "codes n={n} inv={inv}");
            let (mut vw, mut vg) = (vec![0f32; n], vec![0f32; n]);
            let raw: Vec<u8> = (0..n).map(|_| next() as u8).collect();
            scalar::nf4_values(&raw, inv, &mut vw);
            values(&raw, inv, &mut vg);
            let bits = |v: &[f32]| v.iter().map(|f| if f.is_nan() { u32::MAX } else { f.to_bits() }).collect::<Vec<_>>();
            assert_eq!(bits(&vw), bits(&vg), "values n={n} scale={inv}");
        }
    }
}
