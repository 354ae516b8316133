//! Packing of 1..8-bit codes into bytes, and back.
//!
//! One bit order everywhere (documented in docs/format.md): the codes form a little-endian bit
//! stream. Code `i` of width `b` occupies stream bits `i*b .. i*b + b`, least significant bit first,
//! and stream bit `k` is bit `k % 8` of byte `k / 8`. So for 4 bits, byte `j` holds code `2j` in its
//! low nibble and code `2j+1` in its high nibble; for 2 bits, code `4j` sits in bits 0-1. The last
//! byte is padded with zero bits. Widths 1, 2, 4 and 8 never split a code across bytes.

use crate::error::{invalid, Error, Result};

/// Number of bytes that `n` codes of `bits` bits occupy.
pub fn packed_len(n: usize, bits: u32) -> usize {
    (n * bits as usize).div_ceil(8)
}

fn check_bits(bits: u32) -> Result<()> {
    if !(1..=8).contains(&bits) {
        return Err(invalid!("bits must be between 1 and 8, got {bits}"));
    }
    Ok(())
}

/// Checks that every code fits in `bits` bits; returns the index of the first that does not.
pub fn check_codes(codes: &[u8], bits: u32) -> Result<()> {
    check_bits(bits)?;
    if bits == 8 {
        return Ok(());
    }
    let limit = 1u8 << bits;
    match codes.iter().position(|&c| c >= limit) {
        Some(i) => Err(invalid!("code {} at index {i} does not fit in {bits} bits", codes[i])),
        None => Ok(()),
    }
}

/// Packs `codes` (each `< 2^bits`; higher bits are ignored) into `out` of [`packed_len`] bytes.
pub fn pack(codes: &[u8], bits: u32, out: &mut [u8]) -> Result<()> {
    check_bits(bits)?;
    if out.len() != packed_len(codes.len(), bits) {
        return Err(Error::Shape(format!("packed output has {} bytes, expected {}", out.len(), packed_len(codes.len(), bits))));
    }
    let mask = ((1u16 << bits) - 1) as u8;
    match bits {
        8 => out.copy_from_slice(codes),
        4 => (crate::simd::kernels().pack_nibbles)(codes, out),
        2 => pack_aligned::<4>(codes, out, 2, mask),
        1 => pack_aligned::<8>(codes, out, 1, mask),
        3 => pack_wide::<3>(codes, out, mask),
        5 => pack_wide::<5>(codes, out, mask),
        6 => pack_wide::<6>(codes, out, mask),
        _ => pack_wide::<7>(codes, out, mask),
    }
    Ok(())
}

/// Unpacks `out.len()` codes of `bits` bits from `packed` (which must hold [`packed_len`] bytes).
pub fn unpack(packed: &[u8], bits: u32, out: &mut [u8]) -> Result<()> {
    check_bits(bits)?;
    if packed.len() != packed_len(out.len(), bits) {
        return Err(Error::Shape(format!(
            "packed input has {} bytes, {} codes of {bits} bits need {}",
            packed.len(),
            out.len(),
            packed_len(out.len(), bits)
        )));
    }
    let mask = ((1u16 << bits) - 1) as u8;
    match bits {
        8 => out.copy_from_slice(packed),
        4 => (crate::simd::kernels().unpack_nibbles)(packed, out),
        2 => unpack_aligned::<4>(packed, out, 2, mask),
        1 => unpack_aligned::<8>(packed, out, 1, mask),
        3 => unpack_wide::<3>(packed, out, mask),
        5 => unpack_wide::<5>(packed, out, mask),
        6 => unpack_wide::<6>(packed, out, mask),
        _ => unpack_wide::<7>(packed, out, mask),
    }
    Ok(())
}

/// Widths 3, 5, 6, 7: eight codes fill exactly `B` bytes, built in one u64 (a constant width,
/// so the shifts and the `B`-byte copy compile to straight-line code).
fn pack_wide<const B: usize>(codes: &[u8], out: &mut [u8], mask: u8) {
    let whole = codes.len() / 8;
    for (o, eight) in out.chunks_exact_mut(B).zip(codes.chunks_exact(8)) {
        let v = eight.iter().enumerate().fold(0u64, |v, (j, &c)| v | (((c & mask) as u64) << (j * B)));
        o.copy_from_slice(&v.to_le_bytes()[..B]);
    }
    pack_stream(&codes[whole * 8..], B as u32, mask, &mut out[whole * B..]);
}

fn unpack_wide<const B: usize>(packed: &[u8], out: &mut [u8], mask: u8) {
    let whole = out.len() / 8;
    for (eight, i) in out.chunks_exact_mut(8).zip(packed.chunks_exact(B)) {
        let mut word = [0u8; 8];
        word[..B].copy_from_slice(i);
        let v = u64::from_le_bytes(word);
        for (j, c) in eight.iter_mut().enumerate() {
            *c = (v >> (j * B)) as u8 & mask;
        }
    }
    unpack_stream(&packed[whole * B..], B as u32, mask, &mut out[whole * 8..]);
}

/// Any width, a code at a time through a bit accumulator (the tails of the generic widths).
fn pack_stream(codes: &[u8], bits: u32, mask: u8, out: &mut [u8]) {
    let (mut acc, mut nbits, mut w) = (0u32, 0u32, 0usize);
    for &c in codes {
        acc |= ((c & mask) as u32) << nbits;
        nbits += bits;
        while nbits >= 8 {
            out[w] = acc as u8;
            w += 1;
            acc >>= 8;
            nbits -= 8;
        }
    }
    if nbits > 0 {
        out[w] = acc as u8;
    }
}

fn unpack_stream(packed: &[u8], bits: u32, mask: u8, out: &mut [u8]) {
    let (mut acc, mut nbits, mut r) = (0u32, 0u32, 0usize);
    for c in out.iter_mut() {
        while nbits < bits {
            acc |= (packed[r] as u32) << nbits;
            r += 1;
            nbits += 8;
        }
        *c = (acc as u8) & mask;
        acc >>= bits;
        nbits -= bits;
    }
}

/// Widths that divide 8: `PER` codes a byte. Fixed-size inner loops so LLVM vectorizes them.
#[inline(always)]
fn pack_aligned<const PER: usize>(codes: &[u8], out: &mut [u8], bits: u32, mask: u8) {
    let whole = codes.len() / PER;
    for (o, chunk) in out[..whole].iter_mut().zip(codes.chunks_exact(PER)) {
        *o = chunk.iter().enumerate().fold(0u8, |b, (j, &c)| b | ((c & mask) << (j as u32 * bits)));
    }
    let tail = &codes[whole * PER..];
    if !tail.is_empty() {
        out[whole] = tail.iter().enumerate().fold(0u8, |b, (j, &c)| b | ((c & mask) << (j as u32 * bits)));
    }
}

#[inline(always)]
fn unpack_aligned<const PER: usize>(packed: &[u8], out: &mut [u8], bits: u32, mask: u8) {
    let whole = out.len() / PER;
    for (chunk, &byte) in out.chunks_exact_mut(PER).zip(packed) {
        for (j, c) in chunk.iter_mut().enumerate() {
            *c = (byte >> (j as u32 * bits)) & mask;
        }
    }
    for (j, c) in out[whole * PER..].iter_mut().enumerate() {
        *c = (packed[whole] >> (j as u32 * bits)) & mask;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn four_bit_order_is_low_nibble_first() {
        let mut out = [0u8; 2];
        pack(&[0x1, 0x2, 0x3], 4, &mut out).unwrap();
        assert_eq!(out, [0x21, 0x03]);
    }

    #[test]
    fn three_bit_stream_crosses_bytes() {
        // codes 0b101, 0b011, 0b111 -> stream bits 101 110 111 (LSB first) = 0b11_011_101, 0b1
        let mut out = [0u8; 2];
        pack(&[5, 3, 7], 3, &mut out).unwrap();
        assert_eq!(out, [0b1101_1101, 0b0000_0001]);
    }

    #[test]
    fn wrong_lengths_are_errors() {
        assert!(pack(&[1, 2, 3], 4, &mut [0u8; 1]).is_err());
        assert!(unpack(&[0u8; 1], 4, &mut [0u8; 3]).is_err());
        assert!(pack(&[1], 0, &mut []).is_err());
        assert!(pack(&[1], 9, &mut [0u8; 2]).is_err());
        assert!(check_codes(&[0, 16], 4).is_err());
    }

    proptest! {
        #[test]
        fn pack_unpack_identity(bits in 1u32..=8, raw in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mask = ((1u16 << bits) - 1) as u8;
            let codes: Vec<u8> = raw.iter().map(|c| c & mask).collect();
            let mut packed = vec![0u8; packed_len(codes.len(), bits)];
            pack(&codes, bits, &mut packed).unwrap();
            let mut back = vec![0u8; codes.len()];
            unpack(&packed, bits, &mut back).unwrap();
            prop_assert_eq!(back, codes);
        }
    }
}
