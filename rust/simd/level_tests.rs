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
