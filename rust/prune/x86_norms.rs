//! AVX2 and AVX-512 row/column norm kernels, bit-identical to the scalar ones in `norms.rs`:
//! each `f64` lane receives the same terms (`|x|` or `x * x` of the widened value, no FMA) in the
//! same order, so only the lane layout in registers differs.
//!
//! * Rows: 16 `f64` lanes (two `zmm`, four `ymm`), 16 elements per step, the scalar kernel
//!   finishing the tail into the same lanes.
//! * Columns: row after row, the sums of 16 (8) columns loaded, added to and stored back; the
//!   sums stay in L1 (`cols` doubles) while `x` streams through once.
//!
//! The loops prefetch [`super::PREFETCH`] elements ahead, one hint per cache line.
//!
//! Each public function asserts the CPU level before calling its `#[target_feature]` twin.

use std::arch::x86_64::*;

use super::norms::{row_scalar_from, Norm};
use super::{prefetch, NON_FINITE};
use crate::simd::{detected_level, Level};

fn require(l: Level) {
    let d = detected_level();
    assert!(d == l || (l == Level::Avx2 && d == Level::Avx512), "{l:?} norm kernel called on a CPU without it");
}

/// AVX2 row kernel, identical to [`super::norms::row_scalar`].
pub fn row_avx2(row: &[f32], norm: Norm, lanes: &mut [f64; 16]) -> bool {
    require(Level::Avx2);
    // SAFETY: `require` checked AVX2; loads stay within `row` and `lanes`.
    unsafe {
        match norm {
            Norm::L1 => row_avx2_impl::<false>(row, lanes),
            Norm::L2 => row_avx2_impl::<true>(row, lanes),
        }
    }
}

/// AVX-512 row kernel, identical to [`super::norms::row_scalar`].
pub fn row_avx512(row: &[f32], norm: Norm, lanes: &mut [f64; 16]) -> bool {
    require(Level::Avx512);
    // SAFETY: `require` checked AVX-512 F/BW/VL/DQ; loads stay within `row` and `lanes`.
    unsafe {
        match norm {
            Norm::L1 => row_avx512_impl::<false>(row, lanes),
            Norm::L2 => row_avx512_impl::<true>(row, lanes),
        }
    }
}

/// AVX2 column kernel, identical to [`super::norms::col_scalar`].
pub fn col_avx2(block: &[f32], cols: usize, norm: Norm, acc: &mut [f64]) -> bool {
    require(Level::Avx2);
    assert!(acc.len() == cols && cols > 0 && block.len().is_multiple_of(cols));
    // SAFETY: `require` checked AVX2; accesses stay within the rows of `block` and `acc`.
    unsafe {
        match norm {
            Norm::L1 => col_avx2_impl::<false>(block, cols, acc),
            Norm::L2 => col_avx2_impl::<true>(block, cols, acc),
        }
    }
}

/// AVX-512 column kernel, identical to [`super::norms::col_scalar`].
pub fn col_avx512(block: &[f32], cols: usize, norm: Norm, acc: &mut [f64]) -> bool {
    require(Level::Avx512);
    assert!(acc.len() == cols && cols > 0 && block.len().is_multiple_of(cols));
    // SAFETY: `require` checked AVX-512 F/BW/VL/DQ; accesses stay within the rows and `acc`.
    unsafe {
        match norm {
            Norm::L1 => col_avx512_impl::<false>(block, cols, acc),
            Norm::L2 => col_avx512_impl::<true>(block, cols, acc),
        }
    }
}

/// The terms of 4 widened values: `|x|` or `x * x`.
#[target_feature(enable = "avx2")]
fn term4<const L2: bool>(x: __m128) -> __m256d {
    let a = _mm256_cvtps_pd(x);
    if L2 {
        _mm256_mul_pd(a, a)
    } else {
        _mm256_andnot_pd(_mm256_set1_pd(-0.0), a)
    }
}

/// The terms of 8 widened values.
#[target_feature(enable = "avx512f")]
fn term8<const L2: bool>(x: __m256) -> __m512d {
    let a = _mm512_cvtps_pd(x);
    if L2 {
        _mm512_mul_pd(a, a)
    } else {
        _mm512_abs_pd(a)
    }
}

/// Any key of `v` (8 floats) non-finite, folded into `bad` (sign bit set).
#[target_feature(enable = "avx2")]
fn fold_bad8(bad: __m256i, v: __m256) -> __m256i {
    let k = _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x7fff_ffff));
    _mm256_or_si256(bad, _mm256_add_epi32(k, _mm256_set1_epi32(0x0080_0000)))
}

#[target_feature(enable = "avx2")]
unsafe fn row_avx2_impl<const L2: bool>(row: &[f32], lanes: &mut [f64; 16]) -> bool {
    let full = row.len() / 16;
    let p = row.as_ptr();
    // SAFETY: `lanes` holds 16 doubles.
    let mut a: [__m256d; 4] = std::array::from_fn(|q| unsafe { _mm256_loadu_pd(lanes.as_ptr().add(4 * q)) });
    let mut bad = _mm256_setzero_si256();
    for i in 0..full {
        prefetch(row, 16 * i);
        // SAFETY: `i * 16 + 16 <= row.len()`; unaligned loads.
        let (v0, v1) = unsafe { (_mm256_loadu_ps(p.add(16 * i)), _mm256_loadu_ps(p.add(16 * i + 8))) };
        bad = fold_bad8(fold_bad8(bad, v0), v1);
        a[0] = _mm256_add_pd(a[0], term4::<L2>(_mm256_castps256_ps128(v0)));
        a[1] = _mm256_add_pd(a[1], term4::<L2>(_mm256_extractf128_ps::<1>(v0)));
        a[2] = _mm256_add_pd(a[2], term4::<L2>(_mm256_castps256_ps128(v1)));
        a[3] = _mm256_add_pd(a[3], term4::<L2>(_mm256_extractf128_ps::<1>(v1)));
    }
    for (q, v) in a.iter().enumerate() {
        // SAFETY: `lanes` holds 16 doubles.
        unsafe { _mm256_storeu_pd(lanes.as_mut_ptr().add(4 * q), *v) };
    }
    let norm = if L2 { Norm::L2 } else { Norm::L1 };
    let tail = row_scalar_from(row, 16 * full, norm, lanes);
    tail || _mm256_movemask_ps(_mm256_castsi256_ps(bad)) != 0
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2")]
unsafe fn row_avx512_impl<const L2: bool>(row: &[f32], lanes: &mut [f64; 16]) -> bool {
    let full = row.len() / 16;
    let p = row.as_ptr();
    // SAFETY: `lanes` holds 16 doubles.
    let (mut a0, mut a1) = unsafe { (_mm512_loadu_pd(lanes.as_ptr()), _mm512_loadu_pd(lanes.as_ptr().add(8))) };
    let abs = _mm512_set1_epi32(0x7fff_ffff);
    let mut maxk = _mm512_setzero_si512();
    for i in 0..full {
        prefetch(row, 16 * i);
        // SAFETY: `i * 16 + 16 <= row.len()`; unaligned load.
        let v = unsafe { _mm512_loadu_ps(p.add(16 * i)) };
        maxk = _mm512_max_epu32(maxk, _mm512_and_si512(_mm512_castps_si512(v), abs));
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        a0 = _mm512_add_pd(a0, term8::<L2>(_mm512_castps512_ps256(v)));
        a1 = _mm512_add_pd(a1, term8::<L2>(hi));
    }
    // SAFETY: `lanes` holds 16 doubles.
    unsafe {
        _mm512_storeu_pd(lanes.as_mut_ptr(), a0);
        _mm512_storeu_pd(lanes.as_mut_ptr().add(8), a1);
    }
    let norm = if L2 { Norm::L2 } else { Norm::L1 };
    let tail = row_scalar_from(row, 16 * full, norm, lanes);
    tail || _mm512_cmpge_epu32_mask(maxk, _mm512_set1_epi32(NON_FINITE as i32)) != 0
}

/// The scalar columns `from..` of one row (the SIMD column kernels' tail).
#[inline(always)]
fn col_tail<const L2: bool>(row: &[f32], from: usize, acc: &mut [f64]) -> bool {
    let norm = if L2 { Norm::L2 } else { Norm::L1 };
    let mut bad = false;
    for (a, &v) in acc[from..].iter_mut().zip(&row[from..]) {
        bad |= !v.is_finite();
        *a += norm.term(v);
    }
    bad
}

#[target_feature(enable = "avx2")]
unsafe fn col_avx2_impl<const L2: bool>(block: &[f32], cols: usize, acc: &mut [f64]) -> bool {
    let full = cols / 8;
    let mut bad = _mm256_setzero_si256();
    let mut tail = false;
    let s = acc.as_mut_ptr();
    for row in block.chunks_exact(cols) {
        for c in 0..full {
            if c % 2 == 0 {
                prefetch(row, 8 * c);
            }
            // SAFETY: `c * 8 + 8 <= cols == row.len() == acc.len()`; unaligned accesses.
            unsafe {
                let v = _mm256_loadu_ps(row.as_ptr().add(8 * c));
                bad = fold_bad8(bad, v);
                let lo = _mm256_add_pd(_mm256_loadu_pd(s.add(8 * c)), term4::<L2>(_mm256_castps256_ps128(v)));
                let hi = _mm256_add_pd(_mm256_loadu_pd(s.add(8 * c + 4)), term4::<L2>(_mm256_extractf128_ps::<1>(v)));
                _mm256_storeu_pd(s.add(8 * c), lo);
                _mm256_storeu_pd(s.add(8 * c + 4), hi);
            }
        }
        tail |= col_tail::<L2>(row, 8 * full, acc);
    }
    tail || _mm256_movemask_ps(_mm256_castsi256_ps(bad)) != 0
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2")]
unsafe fn col_avx512_impl<const L2: bool>(block: &[f32], cols: usize, acc: &mut [f64]) -> bool {
    let full = cols / 16;
    let abs = _mm512_set1_epi32(0x7fff_ffff);
    let mut maxk = _mm512_setzero_si512();
    let mut tail = false;
    let s = acc.as_mut_ptr();
    for row in block.chunks_exact(cols) {
        for c in 0..full {
            prefetch(row, 16 * c);
            // SAFETY: `c * 16 + 16 <= cols == row.len() == acc.len()`; unaligned accesses.
            unsafe {
                let v = _mm512_loadu_ps(row.as_ptr().add(16 * c));
                maxk = _mm512_max_epu32(maxk, _mm512_and_si512(_mm512_castps_si512(v), abs));
                let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
                let a0 = _mm512_add_pd(_mm512_loadu_pd(s.add(16 * c)), term8::<L2>(_mm512_castps512_ps256(v)));
                let a1 = _mm512_add_pd(_mm512_loadu_pd(s.add(16 * c + 8)), term8::<L2>(hi));
                _mm512_storeu_pd(s.add(16 * c), a0);
                _mm512_storeu_pd(s.add(16 * c + 8), a1);
            }
        }
        tail |= col_tail::<L2>(row, 16 * full, acc);
    }
    tail || _mm512_cmpge_epu32_mask(maxk, _mm512_set1_epi32(NON_FINITE as i32)) != 0
}
