//! Nearest-codeword search with AVX-512, bit-identical to `vq::assign::assign_batch_scalar`.
//!
//! The scheme of `x86_avx2::assign` (codewords in lanes, pre-packed transposed panels, a register
//! tile accumulating each pair over the dimensions in order with one FMA per dimension, a fused
//! running argmin per row and lane, lanes merged at the end) with what AVX-512 adds: a panel of 16
//! codewords is one register, the 32 registers hold a tile of [`ROWS`] rows x 2 panels with every
//! row's running minimum, and the argmin update is a compare into a mask register, a `vminps`
//! and one masked move of the indices (a lane keeps its first, lowest, index among equal scores,
//! and NaN never compares smaller).

use std::arch::x86_64::*;

use crate::vq::assign::{Codebook, PanelRow, CODEBOOK_BLOCK_BYTES, PANEL, ROW_BLOCK, STEP_IP as IP, STEP_L1 as L1, STEP_L2 as L2};
use crate::vq::Metric;

/// Rows per register tile: 12 accumulators, 6 running minima and index vectors, 2 panel registers.
const ROWS: usize = 6;

/// Running minimum of one row: per lane, the smallest score and its codeword index.
#[derive(Clone, Copy)]
struct State {
    best: __m512,
    idx: __m512i,
}

/// `(panels, panel norms, d, first panel, end panel, first row of x, states of the rows)`.
type Tile = unsafe fn(*const PanelRow, *const f32, usize, usize, usize, *const f32, *mut State);

/// Searches `codes.len()` rows of `x`: `codes[i]` is the nearest codeword and `best[i]` its
/// ranking score (see `vq::assign::score_scalar`), exactly as the scalar scan finds them.
pub fn search(cb: &Codebook, x: &[f32], codes: &mut [u32], best: &mut [f32]) {
    super::require_avx512();
    cb.assert_search_buffers(x, codes, best);
    // SAFETY: the CPU features were just checked; `assert_search_buffers` gives every bound the
    // kernel's pointer arithmetic relies on (x rows, output lengths, panel and norm counts).
    unsafe { search_inner(cb, x, codes, best) }
}

/// # Safety
/// AVX-512 F/BW/VL/DQ must be available; the slices must pass `Codebook::assert_search_buffers`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn search_inner(cb: &Codebook, x: &[f32], codes: &mut [u32], best: &mut [f32]) {
    let (d, n) = (cb.d, codes.len());
    let np = cb.k.div_ceil(PANEL);
    // Whole panel pairs per block, so that only the last block can end on a single panel.
    let block = (CODEBOOK_BLOCK_BYTES / (d * PANEL * 4)).max(2) & !1;
    let tiles = pick(cb.metric, d);
    let init = State { best: _mm512_set1_ps(f32::INFINITY), idx: _mm512_setzero_si512() };
    let mut st = [init; ROW_BLOCK];
    for r0 in (0..n).step_by(ROW_BLOCK) {
        let rows = (n - r0).min(ROW_BLOCK);
        st[..rows].fill(init);
        for p0 in (0..np).step_by(block) {
            let p1 = (p0 + block).min(np);
            let mut r = 0;
            while r < rows {
                let m = (rows - r).min(ROWS);
                tiles[m - 1](cb.panels.as_ptr(), cb.panel_norms.as_ptr(), d, p0, p1, x.as_ptr().add((r0 + r) * d), st.as_mut_ptr().add(r));
                r += m;
            }
        }
        for (r, s) in st[..rows].iter().enumerate() {
            (codes[r0 + r], best[r0 + r]) = merge(s);
        }
    }
}

/// The lanes of a running minimum merged: smallest score, ties to the lowest index, without a
/// branch. A lane that never improved holds (+inf, 0), so a row where nothing beat +inf gets
/// code 0, as in scalar. The score returned is the chosen lane's own (equal scores may differ in
/// the sign of a zero).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn merge(s: &State) -> (u32, f32) {
    let m = _mm512_reduce_min_ps(s.best);
    let eq = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(s.best, _mm512_set1_ps(m));
    let i = _mm512_mask_reduce_min_epu32(eq, s.idx);
    let lane = (eq & _mm512_cmpeq_epi32_mask(s.idx, _mm512_set1_epi32(i as i32))).trailing_zeros();
    let mut b = [0f32; PANEL];
    _mm512_storeu_ps(b.as_mut_ptr(), s.best);
    (i, b[lane as usize & (PANEL - 1)])
}

crate::simd::assign_tiles!(1, 2, 3, 4, 5, 6);

/// One dimension of the pair accumulation: `x*c + acc` (the scalar `mul_add`), or for L1
/// `acc + |x - c|`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn step<const M: u8>(acc: __m512, xb: __m512, c: __m512) -> __m512 {
    if M == L1 {
        _mm512_add_ps(acc, _mm512_abs_ps(_mm512_sub_ps(xb, c)))
    } else {
        _mm512_fmadd_ps(xb, c, acc)
    }
}

/// The ranking score of an accumulated pair: `fma(-2, dot, |c|^2)` for L2, `-dot` for IP and
/// cosine (a sign flip, exact), the sum itself for L1.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn score<const M: u8>(acc: __m512, norm: __m512) -> __m512 {
    match M {
        L2 => _mm512_fmadd_ps(_mm512_set1_ps(-2.0), acc, norm),
        IP => _mm512_xor_ps(acc, _mm512_set1_ps(-0.0)),
        _ => acc,
    }
}

/// Folds 16 scores for codewords `j` into a running minimum (see the module doc).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn update(best: &mut __m512, idx: &mut __m512i, s: __m512, j: __m512i) {
    let less = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(s, *best);
    *best = _mm512_min_ps(s, *best);
    *idx = _mm512_mask_mov_epi32(*idx, less, j);
}

/// Scores `P` panels from `p` against `R` rows and folds them into the running minima.
///
/// # Safety
/// As [`tile`], with panels `p..p + P` inside the packed codebook.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)] // tile indices, as in the math
unsafe fn panels_step<const M: u8, const R: usize, const P: usize>(
    panels: *const PanelRow,
    norms: *const f32,
    d: usize,
    p: usize,
    x: *const f32,
    best: &mut [__m512; R],
    idx: &mut [__m512i; R],
) {
    let w = panels.add(p * d).cast::<f32>();
    // Opaque to the optimiser, so that it broadcasts x from memory inside the FMAs instead of
    // hoisting R*d broadcasts out of the panel loop and spilling them as whole registers.
    let x = std::hint::black_box(x);
    let mut acc = [[_mm512_setzero_ps(); P]; R];
    for t in 0..d {
        let c: [__m512; P] = std::array::from_fn(|q| _mm512_load_ps(w.add((q * d + t) * PANEL)));
        for r in 0..R {
            let xb = _mm512_set1_ps(*x.add(r * d + t));
            for q in 0..P {
                acc[r][q] = step::<M>(acc[r][q], xb, c[q]);
            }
        }
    }
    let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for q in 0..P {
        let norm = if M == L2 { _mm512_loadu_ps(norms.add((p + q) * PANEL)) } else { _mm512_setzero_ps() };
        let j = _mm512_add_epi32(_mm512_set1_epi32(((p + q) * PANEL) as i32), iota);
        for r in 0..R {
            update(&mut best[r], &mut idx[r], score::<M>(acc[r][q], norm), j);
        }
    }
}

/// Scores panels `p0..p1` against `R` consecutive rows of `x` (row stride `d`) and folds them into
/// the rows' running minima. `D` is `d` when nonzero (a compile-time dimension loop).
///
/// # Safety
/// AVX-512 F/BW/VL/DQ must be available; `x` must hold `R * d` readable floats, `st` `R` states,
/// `panels` `p1 * d` rows and, for L2, `norms` `p1 * PANEL` floats.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn tile<const M: u8, const D: usize, const R: usize>(
    panels: *const PanelRow,
    norms: *const f32,
    d: usize,
    p0: usize,
    p1: usize,
    x: *const f32,
    st: *mut State,
) {
    let d = if D > 0 { D } else { d };
    let mut best: [__m512; R] = std::array::from_fn(|r| (*st.add(r)).best);
    let mut idx: [__m512i; R] = std::array::from_fn(|r| (*st.add(r)).idx);
    let mut p = p0;
    while p + 2 <= p1 {
        panels_step::<M, R, 2>(panels, norms, d, p, x, &mut best, &mut idx);
        p += 2;
    }
    if p < p1 {
        panels_step::<M, R, 1>(panels, norms, d, p, x, &mut best, &mut idx);
    }
    for r in 0..R {
        *st.add(r) = State { best: best[r], idx: idx[r] };
    }
}
