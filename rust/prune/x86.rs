//! AVX2 and AVX-512 pruning kernels, identical in output to the scalar ones (they compare
//! integer keys only, so "bit-identical" is "the same bytes and candidate lists").
//!
//! * Bracket mask pass (`bracket.rs`): the `|x|` keys of 8 (16) elements against `hi` and
//!   `[lo, hi]`, `movemask` (an AVX-512 compare mask) straight into the mask byte(s);
//!   candidates, a few percent of the elements, are appended (AVX-512: `vpcompressd`).
//! * N:M with `m = 4`: a group is a 128-bit lane, so the three in-lane rotations of the keys
//!   give every pairwise comparison; "j beats i" is `k_j > k_i`, or equal with `j < i`. A lane
//!   is kept when fewer than `n` of the three others beat it, which is pure mask logic. The
//!   kept values are compressed (AVX-512 `vcompressps`; AVX2 `vpermps` with a 256-entry index
//!   table) and the positions of 4 groups (`n` bytes) come from a 16-entry nibble table.
//!
//! The streaming kernels prefetch [`super::PREFETCH`] elements ahead, one hint per cache line.
//!
//! Each public function asserts the CPU level before calling its `#[target_feature]` twin.

use std::arch::x86_64::*;

use super::bracket::{bracket_scalar_from, Cands, Scan};
use super::mask::compress_scalar_from;
use super::nm::nm_chunk;
use super::{prefetch, NON_FINITE};
use crate::simd::{detected_level, Level};

/// Vector steps between capacity checks of the candidate lists.
const BLOCK: usize = 256;

fn require(l: Level) {
    let d = detected_level();
    assert!(d == l || (l == Level::Avx2 && d == Level::Avx512), "{l:?} pruning kernel called on a CPU without it");
}

/// AVX2 bracket kernel, identical to [`super::bracket::bracket_scalar`].
pub fn bracket_avx2(x: &[f32], lo: u32, hi: u32, out: &mut [u8], c: &mut Cands) -> Scan {
    require(Level::Avx2);
    // SAFETY: `require` checked AVX2; the kernel stays within `x` and `out` (asserted lengths).
    unsafe { bracket_avx2_impl(x, lo, hi, out, c) }
}

/// AVX-512 bracket kernel, identical to [`super::bracket::bracket_scalar`].
pub fn bracket_avx512(x: &[f32], lo: u32, hi: u32, out: &mut [u8], c: &mut Cands) -> Scan {
    require(Level::Avx512);
    // SAFETY: `require` checked AVX-512 F/BW/VL/DQ; accesses stay within the slices.
    unsafe { bracket_avx512_impl(x, lo, hi, out, c) }
}

fn check_bracket_args(x: &[f32], lo: u32, hi: u32, out: &[u8], c: &Cands) {
    assert!(out.len() == x.len().div_ceil(8) && lo <= hi && hi <= 0x7fff_ffff && c.idx.len() == c.key.len());
    assert!(x.len() <= u32::MAX as usize, "candidate offsets are u32");
}

// `i` indexes the input (in eights), the mask bytes and the candidate positions at once.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,popcnt")]
unsafe fn bracket_avx2_impl(x: &[f32], lo: u32, hi: u32, out: &mut [u8], c: &mut Cands) -> Scan {
    check_bracket_args(x, lo, hi, out, c);
    let full = x.len() / 8;
    let abs = _mm256_set1_epi32(0x7fff_ffff);
    let (hiv, lov) = (_mm256_set1_epi32(hi as i32), _mm256_set1_epi32(lo as i32 - 1));
    let off = _mm256_set1_epi32(0x0080_0000);
    let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let mut bad = _mm256_setzero_si256();
    let mut above = 0usize;
    for b0 in (0..full).step_by(BLOCK) {
        // Room for every element of the next block: the stores below need no check.
        c.idx.reserve(8 * BLOCK);
        c.key.reserve(8 * BLOCK);
        let (pi, pk, mut len) = (c.idx.as_mut_ptr(), c.key.as_mut_ptr(), c.idx.len());
        for i in b0..(b0 + BLOCK).min(full) {
            prefetch(x, i * 8);
            // SAFETY: `i * 8 + 8 <= x.len()`; unaligned load.
            let k = _mm256_and_si256(unsafe { _mm256_loadu_si256(x.as_ptr().add(i * 8).cast()) }, abs);
            bad = _mm256_or_si256(bad, _mm256_add_epi32(k, off));
            // Keys and bounds are below 2^31, so signed compares order them as unsigned ones.
            let gt = _mm256_cmpgt_epi32(k, hiv);
            let inside = _mm256_andnot_si256(gt, _mm256_cmpgt_epi32(k, lov));
            let g = _mm256_movemask_ps(_mm256_castsi256_ps(gt)) as u32;
            out[i] = g as u8;
            above += g.count_ones() as usize;
            let m = _mm256_movemask_ps(_mm256_castsi256_ps(inside)) as usize;
            let at = _mm256_add_epi32(iota, _mm256_set1_epi32((i * 8) as i32));
            // SAFETY: the table row is 8 u32; both vectors have room for 8 more at `len` (the
            // block's reserve); only the `count` lanes written are later covered by `set_len`.
            unsafe {
                let perm = _mm256_loadu_si256(COMPRESS8[m].as_ptr().cast());
                _mm256_storeu_si256(pi.add(len).cast(), _mm256_permutevar8x32_epi32(at, perm));
                _mm256_storeu_si256(pk.add(len).cast(), _mm256_permutevar8x32_epi32(k, perm));
            }
            len += m.count_ones() as usize;
        }
        // SAFETY: `len <= capacity` (reserve) and the first `len` elements are written.
        unsafe {
            c.idx.set_len(len);
            c.key.set_len(len);
        }
    }
    let tail = bracket_scalar_from(x, full, lo, hi, out, c);
    Scan { bad: tail.bad || _mm256_movemask_ps(_mm256_castsi256_ps(bad)) != 0, above: above + tail.above }
}

/// 64-element blocks between capacity checks of the candidate lists (AVX-512).
const BLOCK64: usize = 64;

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,popcnt")]
unsafe fn bracket_avx512_impl(x: &[f32], lo: u32, hi: u32, out: &mut [u8], c: &mut Cands) -> Scan {
    check_bracket_args(x, lo, hi, out, c);
    let blocks = x.len() / 64;
    let abs = _mm512_set1_epi32(0x7fff_ffff);
    // Keys and bounds are below 2^31, so `k - lo` and `k - (hi + 1)` do not overflow as i32:
    // their sign bits (`vpmovd2m`, off the port the compares and compresses share) say
    // `k < lo` and `k <= hi`.
    let (hi1, lov) = (_mm512_set1_epi32(hi.wrapping_add(1) as i32), _mm512_set1_epi32(lo as i32));
    let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let mut maxk = _mm512_setzero_si512();
    let mut above = 0usize;
    for b0 in (0..blocks).step_by(BLOCK64) {
        // Room for every element of the next `BLOCK64` blocks: the stores below need no check.
        c.idx.reserve(64 * BLOCK64);
        c.key.reserve(64 * BLOCK64);
        let (pi, pk, mut len) = (c.idx.as_mut_ptr(), c.key.as_mut_ptr(), c.idx.len());
        for b in b0..(b0 + BLOCK64).min(blocks) {
            for q in 0..4 {
                prefetch(x, b * 64 + 16 * q);
            }
            // SAFETY: `b * 64 + 64 <= x.len()`; unaligned loads.
            let k: [__m512i; 4] =
                std::array::from_fn(|j| _mm512_and_si512(unsafe { _mm512_loadu_si512(x.as_ptr().add(b * 64 + 16 * j).cast()) }, abs));
            let (mut gt, mut inside) = (0u64, 0u64);
            for (j, &kj) in k.iter().enumerate() {
                maxk = _mm512_max_epu32(maxk, kj);
                gt |= (_mm512_movepi32_mask(_mm512_sub_epi32(kj, hi1)) as u64) << (16 * j);
                inside |= (_mm512_movepi32_mask(_mm512_sub_epi32(kj, lov)) as u64) << (16 * j);
            }
            let (gt, inside) = (!gt, !inside & gt);
            out[b * 8..b * 8 + 8].copy_from_slice(&gt.to_le_bytes());
            above += gt.count_ones() as usize;
            if inside == 0 {
                continue;
            }
            let at = _mm512_add_epi32(iota, _mm512_set1_epi32((b * 64) as i32));
            for (j, &kj) in k.iter().enumerate() {
                let m = (inside >> (16 * j)) as u16;
                let atj = _mm512_add_epi32(at, _mm512_set1_epi32(16 * j as i32));
                // SAFETY: both vectors have room for 16 more at `len` (at most 64 per block
                // within the reserve); only the `count` lanes written are covered by `set_len`.
                unsafe {
                    _mm512_storeu_si512(pi.add(len).cast(), _mm512_maskz_compress_epi32(m, atj));
                    _mm512_storeu_si512(pk.add(len).cast(), _mm512_maskz_compress_epi32(m, kj));
                }
                len += m.count_ones() as usize;
            }
        }
        // SAFETY: `len <= capacity` (reserve) and the first `len` elements are written.
        unsafe {
            c.idx.set_len(len);
            c.key.set_len(len);
        }
    }
    let tail = bracket_scalar_from(x, 8 * blocks, lo, hi, out, c);
    let bad = _mm512_cmpge_epu32_mask(maxk, _mm512_set1_epi32(NON_FINITE as i32)) != 0;
    Scan { bad: tail.bad || bad, above: above + tail.above }
}

/// AVX2 compress kernel, identical to [`super::mask::compress_scalar`].
pub fn compress_avx2(x: &[f32], mask: &[u8], out: &mut [f32]) -> bool {
    require(Level::Avx2);
    // SAFETY: `require` checked AVX2; stores are bounds-checked against `out`.
    unsafe { compress_avx2_impl(x, mask, out) }
}

/// AVX-512 compress kernel, identical to [`super::mask::compress_scalar`].
pub fn compress_avx512(x: &[f32], mask: &[u8], out: &mut [f32]) -> bool {
    require(Level::Avx512);
    // SAFETY: `require` checked AVX-512 F/BW/VL/DQ; stores are bounds-checked against `out`.
    unsafe { compress_avx512_impl(x, mask, out) }
}

#[target_feature(enable = "avx2,popcnt")]
unsafe fn compress_avx2_impl(x: &[f32], mask: &[u8], out: &mut [f32]) -> bool {
    assert_eq!(mask.len(), x.len().div_ceil(8));
    let full = x.len() / 8;
    let (abs, off) = (_mm256_set1_epi32(0x7fff_ffff), _mm256_set1_epi32(0x0080_0000));
    let mut bad = _mm256_setzero_si256();
    let mut at = 0usize;
    for i in 0..full {
        prefetch(x, i * 8);
        // SAFETY: `i * 8 + 8 <= x.len()`; unaligned load; the table row is 8 u32.
        let (v, perm) =
            unsafe { (_mm256_loadu_ps(x.as_ptr().add(i * 8)), _mm256_loadu_si256(COMPRESS8[mask[i] as usize].as_ptr().cast())) };
        bad = _mm256_or_si256(bad, _mm256_add_epi32(_mm256_and_si256(_mm256_castps_si256(v), abs), off));
        let packed = _mm256_permutevar8x32_ps(v, perm);
        let count = mask[i].count_ones() as usize;
        if at + 8 <= out.len() {
            // SAFETY: 8 floats fit at `at`; lanes past `count` are overwritten by the next store.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(at), packed) };
        } else {
            let mut tmp = [0f32; 8];
            // SAFETY: `tmp` holds 8 floats.
            unsafe { _mm256_storeu_ps(tmp.as_mut_ptr(), packed) };
            out[at..at + count].copy_from_slice(&tmp[..count]);
        }
        at += count;
    }
    let tail = compress_scalar_from(x, mask, full, &mut out[at..]);
    tail || _mm256_movemask_ps(_mm256_castsi256_ps(bad)) != 0
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,popcnt")]
unsafe fn compress_avx512_impl(x: &[f32], mask: &[u8], out: &mut [f32]) -> bool {
    assert_eq!(mask.len(), x.len().div_ceil(8));
    let full = x.len() / 16;
    let abs = _mm512_set1_epi32(0x7fff_ffff);
    let mut maxk = _mm512_setzero_si512();
    let mut at = 0usize;
    for i in 0..full {
        prefetch(x, i * 16);
        // SAFETY: `i * 16 + 16 <= x.len()`; unaligned load.
        let v = unsafe { _mm512_loadu_ps(x.as_ptr().add(i * 16)) };
        maxk = _mm512_max_epu32(maxk, _mm512_and_si512(_mm512_castps_si512(v), abs));
        let bits = u16::from_le_bytes([mask[2 * i], mask[2 * i + 1]]);
        let packed = _mm512_maskz_compress_ps(bits, v);
        let count = bits.count_ones() as usize;
        if at + 16 <= out.len() {
            // SAFETY: 16 floats fit at `at`; lanes past `count` are overwritten by the next store.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(at), packed) };
        } else {
            assert!(at + count <= out.len(), "compress output too short");
            // SAFETY: the `count` stored lanes fit (asserted).
            unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(at), ((1u32 << count) - 1) as u16, packed) };
        }
        at += count;
    }
    let tail = compress_scalar_from(x, mask, 2 * full, &mut out[at..]);
    tail || _mm512_cmpge_epu32_mask(maxk, _mm512_set1_epi32(NON_FINITE as i32)) != 0
}

/// In-group positions (2 bits each, ascending) of a kept nibble.
const NIBBLE_POS: [u32; 16] = {
    let mut t = [0u32; 16];
    let mut m = 0;
    while m < 16 {
        let (mut j, mut p) = (0, 0);
        while p < 4 {
            if m >> p & 1 == 1 {
                t[m] |= (p as u32) << (2 * j);
                j += 1;
            }
            p += 1;
        }
        m += 1;
    }
    t
};

/// `vpermps` indices moving the set lanes of an 8-bit mask to the front, in order.
static COMPRESS8: [[u32; 8]; 256] = {
    let mut t = [[0u32; 8]; 256];
    let mut m = 0;
    while m < 256 {
        let (mut j, mut p) = (0, 0);
        while p < 8 {
            if m >> p & 1 == 1 {
                t[m][j] = p as u32;
                j += 1;
            }
            p += 1;
        }
        m += 1;
    }
    t
};

/// Lanes kept of 16 (4 groups) given the "beaten by the lane `d` further" masks: fewer than `n`.
#[inline(always)]
fn kept16(b1: u16, b2: u16, b3: u16, n: usize) -> u16 {
    match n {
        1 => !(b1 | b2 | b3),
        2 => !((b1 & b2) | (b1 & b3) | (b2 & b3)),
        _ => !(b1 & b2 & b3),
    }
}

/// Writes the positions of 4 groups (`n` bytes, little-endian bit stream).
#[inline(always)]
fn put_positions(kept: u16, n: usize, p: &mut [u8]) {
    let mut code = 0u32;
    for g in 0..4 {
        code |= NIBBLE_POS[(kept >> (4 * g) & 15) as usize] << (2 * n * g);
    }
    p[..n].copy_from_slice(&code.to_le_bytes()[..n]);
}

/// AVX2 groups-of-4 N:M kernel, identical to [`nm_chunk::<4>`].
pub fn nm4_avx2(s: &[f32], v: &[f32], n: usize, o: &mut [f32], p: &mut [u8]) {
    require(Level::Avx2);
    // SAFETY: `require` checked AVX2; accesses stay within the slices (asserted lengths).
    unsafe { nm4_avx2_impl(s, v, n, o, p) }
}

/// AVX-512 groups-of-4 N:M kernel, identical to [`nm_chunk::<4>`].
pub fn nm4_avx512(s: &[f32], v: &[f32], n: usize, o: &mut [f32], p: &mut [u8]) {
    require(Level::Avx512);
    // SAFETY: `require` checked AVX-512 F/BW/VL/DQ; accesses stay within the slices.
    unsafe { nm4_avx512_impl(s, v, n, o, p) }
}

/// "Beaten by the lane `d` further in its group" for 8 lanes (2 groups) of keys `k`.
#[target_feature(enable = "avx2")]
fn beaten8<const R: i32>(k: __m256i, low: i32) -> u32 {
    let r = _mm256_shuffle_epi32::<R>(k);
    let low = _mm256_setr_epi32(low & 1, low >> 1 & 1, low >> 2 & 1, low >> 3 & 1, low & 1, low >> 1 & 1, low >> 2 & 1, low >> 3 & 1);
    let low = _mm256_sub_epi32(_mm256_setzero_si256(), low);
    let b = _mm256_or_si256(_mm256_cmpgt_epi32(r, k), _mm256_and_si256(_mm256_cmpeq_epi32(r, k), low));
    _mm256_movemask_ps(_mm256_castsi256_ps(b)) as u32
}

#[target_feature(enable = "avx2")]
unsafe fn nm4_avx2_impl(s: &[f32], v: &[f32], n: usize, o: &mut [f32], p: &mut [u8]) {
    let quads = s.len() / 16;
    assert!((1..4).contains(&n) && v.len() == s.len() && o.len() == s.len() / 4 * n && p.len() >= quads * n);
    let abs = _mm256_set1_epi32(0x7fff_ffff);
    let mut at = 0;
    for q in 0..quads {
        let (mut b1, mut b2, mut b3) = (0u32, 0u32, 0u32);
        for h in 0..2 {
            // SAFETY: `q * 16 + h * 8 + 8 <= s.len()`; unaligned load.
            let k = _mm256_and_si256(unsafe { _mm256_loadu_si256(s.as_ptr().add(q * 16 + h * 8).cast()) }, abs);
            b1 |= beaten8::<0x39>(k, 0x8) << (8 * h);
            b2 |= beaten8::<0x4e>(k, 0xc) << (8 * h);
            b3 |= beaten8::<0x93>(k, 0xe) << (8 * h);
        }
        let kept = kept16(b1 as u16, b2 as u16, b3 as u16, n);
        for h in 0..2 {
            let m = (kept >> (8 * h)) as u8 as usize;
            // SAFETY: in bounds as above; the table row is 8 u32.
            let (x, idx) = unsafe { (_mm256_loadu_ps(v.as_ptr().add(q * 16 + h * 8)), _mm256_loadu_si256(COMPRESS8[m].as_ptr().cast())) };
            let packed = _mm256_permutevar8x32_ps(x, idx);
            if at + 8 <= o.len() {
                // SAFETY: 8 floats fit at `at`; lanes past `2n` are overwritten by the next store.
                unsafe { _mm256_storeu_ps(o.as_mut_ptr().add(at), packed) };
            } else {
                let mut tmp = [0f32; 8];
                // SAFETY: `tmp` holds 8 floats.
                unsafe { _mm256_storeu_ps(tmp.as_mut_ptr(), packed) };
                o[at..at + 2 * n].copy_from_slice(&tmp[..2 * n]);
            }
            at += 2 * n;
        }
        put_positions(kept, n, &mut p[q * n..]);
    }
    nm_chunk::<4>(&s[quads * 16..], &v[quads * 16..], n, &mut o[at..], &mut p[quads * n..]);
}

/// "Beaten by the lane `d` further in its group" for 16 lanes (4 groups); `low` marks the lanes
/// whose rotated partner sits at a lower position (wins ties).
#[target_feature(enable = "avx512f")]
fn beaten16<const R: i32>(k: __m512i, low: u16) -> u16 {
    let r = _mm512_shuffle_epi32::<R>(k);
    _mm512_cmpgt_epu32_mask(r, k) | (_mm512_cmpeq_epu32_mask(r, k) & low)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2")]
unsafe fn nm4_avx512_impl(s: &[f32], v: &[f32], n: usize, o: &mut [f32], p: &mut [u8]) {
    let quads = s.len() / 16;
    assert!((1..4).contains(&n) && v.len() == s.len() && o.len() == s.len() / 4 * n && p.len() >= quads * n);
    let abs = _mm512_set1_epi32(0x7fff_ffff);
    let mut at = 0;
    for q in 0..quads {
        prefetch(s, q * 16);
        prefetch(v, q * 16);
        // SAFETY: `q * 16 + 16 <= s.len() == v.len()`; unaligned loads.
        let (k, x) = unsafe { (_mm512_loadu_si512(s.as_ptr().add(q * 16).cast()), _mm512_loadu_ps(v.as_ptr().add(q * 16))) };
        let k = _mm512_and_si512(k, abs);
        let kept = kept16(beaten16::<0x39>(k, 0x8888), beaten16::<0x4e>(k, 0xcccc), beaten16::<0x93>(k, 0xeeee), n);
        let packed = _mm512_maskz_compress_ps(kept, x);
        if at + 16 <= o.len() {
            // SAFETY: 16 floats fit at `at`; lanes past `4n` are overwritten by the next store.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr().add(at), packed) };
        } else {
            // SAFETY: the `4n` stored lanes fit: `o` holds `n` per group.
            unsafe { _mm512_mask_storeu_ps(o.as_mut_ptr().add(at), ((1u32 << (4 * n)) - 1) as u16, packed) };
        }
        at += 4 * n;
        put_positions(kept, n, &mut p[q * n..]);
    }
    nm_chunk::<4>(&s[quads * 16..], &v[quads * 16..], n, &mut o[at..], &mut p[quads * n..]);
}
