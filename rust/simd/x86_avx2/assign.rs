//! Nearest-codeword search with AVX2 + FMA, bit-identical to `vq::assign::assign_batch_scalar`.
//!
//! Codewords sit in lanes: the codebook is pre-packed in transposed panels of 16 codewords
//! ([`Codebook::panels`]), so one dimension of a panel is two registers, and a register tile of
//! up to [`ROWS`] input rows x 16 codewords accumulates each (row, codeword) pair over the
//! dimensions in order, from 0, with one `vfmadd` (or, for L1, `sub`/`abs`/`add`) per dimension:
//! exactly the scalar `mul_add` chain. The score and a running argmin are fused into the tile's
//! epilogue; nothing of size `rows x k` is ever stored.
//!
//! The running argmin keeps, per row and per lane, the smallest score seen and its codeword
//! index. A lane sees its codewords in increasing index order and only a strictly smaller score
//! replaces its best (`vminps` returns its second operand unless the first is smaller, so NaN
//! never wins), which keeps the lowest index among ties; because the new index is always larger
//! than the kept one, the index update is `max(idx, mask & j)` (two cheap instructions instead of
//! a three-uop `vblendvps`). At the end the lanes are merged in scalar code: smallest score,
//! then lowest index, which is the first index of the minimum, as the scalar scan finds it.
//!
//! Rows are taken [`ROW_BLOCK`] at a time with their running minima kept in a small buffer, while
//! the codebook streams by in blocks of about [`CODEBOOK_BLOCK_BYTES`] (so a block stays in L1/L2
//! while every tile of the row block reads it): memory is O(block), never O(rows x k).

use std::arch::x86_64::*;

use crate::vq::assign::{Codebook, PanelRow, CODEBOOK_BLOCK_BYTES, PANEL, ROW_BLOCK, STEP_IP as IP, STEP_L1 as L1, STEP_L2 as L2};
use crate::vq::Metric;

/// Rows per register tile (6 accumulators, 3 running minima and indices, 2 panel registers).
const ROWS: usize = 3;

/// Running minimum of one row: per lane, the smallest score and its codeword index.
#[derive(Clone, Copy)]
struct State {
    best: __m256,
    idx: __m256i,
}

/// `(panels, panel norms, d, first panel, end panel, first row of x, states of the rows)`.
type Tile = unsafe fn(*const PanelRow, *const f32, usize, usize, usize, *const f32, *mut State);

/// Searches `codes.len()` rows of `x`: `codes[i]` is the nearest codeword and `best[i]` its
/// ranking score (see `vq::assign::score_scalar`), exactly as the scalar scan finds them.
pub fn search(cb: &Codebook, x: &[f32], codes: &mut [u32], best: &mut [f32]) {
    super::require_avx2();
    cb.assert_search_buffers(x, codes, best);
    // SAFETY: AVX2 and FMA were just checked; `assert_search_buffers` gives every bound the kernel's
    // pointer arithmetic relies on (x rows, output lengths, panel and norm counts).
    unsafe { search_inner(cb, x, codes, best) }
}

/// # Safety
/// AVX2 and FMA must be available; the slices must pass `Codebook::assert_search_buffers`.
#[target_feature(enable = "avx2,fma")]
unsafe fn search_inner(cb: &Codebook, x: &[f32], codes: &mut [u32], best: &mut [f32]) {
    let (d, n) = (cb.d, codes.len());
    let np = cb.k.div_ceil(PANEL);
    let block = (CODEBOOK_BLOCK_BYTES / (d * PANEL * 4)).max(1);
    let tiles = pick(cb.metric, d);
    let init = State { best: _mm256_set1_ps(f32::INFINITY), idx: _mm256_setzero_si256() };
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
#[target_feature(enable = "avx2,fma")]
unsafe fn merge(s: &State) -> (u32, f32) {
    let b = s.best;
    let mut m = _mm256_min_ps(b, _mm256_permute2f128_ps::<1>(b, b));
    m = _mm256_min_ps(m, _mm256_shuffle_ps::<0b01_00_11_10>(m, m));
    m = _mm256_min_ps(m, _mm256_shuffle_ps::<0b10_11_00_01>(m, m));
    // Every lane of m now equals the minimum (NaN never occurs: scores only replace on `<`).
    let eq = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_EQ_OQ>(b, m));
    // Lanes not at the minimum become u32::MAX, above any index (k <= u32::MAX).
    let c = _mm256_or_si256(s.idx, _mm256_andnot_si256(eq, _mm256_set1_epi32(-1)));
    let mut v = _mm256_min_epu32(c, _mm256_permute2x128_si256::<1>(c, c));
    v = _mm256_min_epu32(v, _mm256_shuffle_epi32::<0b01_00_11_10>(v));
    v = _mm256_min_epu32(v, _mm256_shuffle_epi32::<0b10_11_00_01>(v));
    let i = _mm256_cvtsi256_si32(v);
    let lane = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(c, v))).trailing_zeros();
    let mut out = [0f32; 8];
    _mm256_storeu_ps(out.as_mut_ptr(), b);
    (i as u32, out[lane as usize & 7])
}

crate::simd::assign_tiles!(1, 2, 3);

/// One dimension of the pair accumulation: `x*c + acc` (the scalar `mul_add`), or for L1
/// `acc + |x - c|`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn step<const M: u8>(acc: __m256, xb: __m256, c: __m256) -> __m256 {
    if M == L1 {
        _mm256_add_ps(acc, _mm256_andnot_ps(_mm256_set1_ps(-0.0), _mm256_sub_ps(xb, c)))
    } else {
        _mm256_fmadd_ps(xb, c, acc)
    }
}

/// The ranking score of an accumulated pair: `fma(-2, dot, |c|^2)` for L2, `-dot` for IP and
/// cosine (a sign flip, exact), the sum itself for L1.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn score<const M: u8>(acc: __m256, norm: __m256) -> __m256 {
    match M {
        L2 => _mm256_fmadd_ps(_mm256_set1_ps(-2.0), acc, norm),
        IP => _mm256_xor_ps(acc, _mm256_set1_ps(-0.0)),
        _ => acc,
    }
}

/// Folds eight scores for codewords `j` into a running minimum (see the module doc).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn update(best: &mut __m256, idx: &mut __m256i, s: __m256, j: __m256i) {
    let less = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(s, *best));
    *best = _mm256_min_ps(s, *best);
    *idx = _mm256_max_epu32(*idx, _mm256_and_si256(less, j));
}

/// Scores panels `p0..p1` against `R` consecutive rows of `x` (row stride `d`) and folds them into
/// the rows' running minima. `D` is `d` when nonzero (a compile-time dimension loop).
///
/// # Safety
/// AVX2 and FMA must be available; `x` must hold `R * d` readable floats, `st` `R` states,
/// `panels` `p1 * d` rows and, for L2, `norms` `p1 * PANEL` floats.
#[target_feature(enable = "avx2,fma")]
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
    let mut best: [__m256; R] = std::array::from_fn(|r| (*st.add(r)).best);
    let mut idx: [__m256i; R] = std::array::from_fn(|r| (*st.add(r)).idx);
    let mut j = _mm256_add_epi32(_mm256_set1_epi32((p0 * PANEL) as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for p in p0..p1 {
        let w = panels.add(p * d).cast::<f32>();
        // Opaque to the optimiser, so that it broadcasts x from memory for every panel instead
        // of hoisting R*d broadcasts out of the panel loop and spilling them as whole registers.
        let x = std::hint::black_box(x);
        let mut a0 = [_mm256_setzero_ps(); R];
        let mut a1 = [_mm256_setzero_ps(); R];
        for t in 0..d {
            let c0 = _mm256_load_ps(w.add(t * PANEL));
            let c1 = _mm256_load_ps(w.add(t * PANEL + 8));
            for r in 0..R {
                let xb = _mm256_broadcast_ss(&*x.add(r * d + t));
                a0[r] = step::<M>(a0[r], xb, c0);
                a1[r] = step::<M>(a1[r], xb, c1);
            }
        }
        let (n0, n1) = if M == L2 {
            (_mm256_loadu_ps(norms.add(p * PANEL)), _mm256_loadu_ps(norms.add(p * PANEL + 8)))
        } else {
            (_mm256_setzero_ps(), _mm256_setzero_ps())
        };
        let j1 = _mm256_add_epi32(j, _mm256_set1_epi32(8));
        for r in 0..R {
            update(&mut best[r], &mut idx[r], score::<M>(a0[r], n0), j);
            update(&mut best[r], &mut idx[r], score::<M>(a1[r], n1), j1);
        }
        j = _mm256_add_epi32(j, _mm256_set1_epi32(PANEL as i32));
    }
    for r in 0..R {
        *st.add(r) = State { best: best[r], idx: idx[r] };
    }
}
