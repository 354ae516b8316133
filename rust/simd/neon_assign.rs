//! Nearest-codeword search with NEON (aarch64), bit-identical to
//! `vq::assign::assign_batch_scalar`: the edge devices' encoder.
//!
//! The same plan as the x86 kernels (`x86_avx2::assign`): codewords sit in lanes of the
//! pre-packed transposed panels ([`Codebook::panels`], 16 codewords, four registers per
//! dimension), and a register tile of up to [`ROWS`] rows x 16 codewords accumulates each pair
//! over the dimensions in order from 0 with one `vfmaq_f32` per dimension (a fused multiply-add,
//! the scalar `mul_add`), or for L1 `vsubq`/`vabsq`/`vaddq` (the scalar `acc + |x - c|`). The
//! score and a running argmin are fused into the tile; nothing of size `rows x k` is stored.
//!
//! A lane's running minimum is replaced only where the new score is strictly smaller
//! (`vcltq_f32` + bit selects; never `vminq_f32`, which propagates NaN), and a lane sees its
//! codewords in increasing index order, so it keeps the lowest index among ties and the NaN of
//! padding slots never wins. The 16 lanes are merged in scalar code: the smallest score, then
//! the lowest index among the lanes holding it, which is the first index of the minimum.
//!
//! NEON is part of the aarch64 baseline, so the entry point is safe; every `unsafe` block is
//! NEON arithmetic on registers or a load/store whose bounds `assert_search_buffers` checked.

// The tile loops index several register arrays by row and quarter at once.
#![allow(clippy::needless_range_loop)]

use std::arch::aarch64::*;

use crate::vq::assign::{Codebook, PanelRow, CODEBOOK_BLOCK_BYTES, PANEL, ROW_BLOCK, STEP_IP as IP, STEP_L1 as L1, STEP_L2 as L2};
use crate::vq::Metric;

/// Rows per register tile: 4 x 4 accumulators, 4 panel registers, minima in the row states.
const ROWS: usize = 4;

/// Running minimum of one row: per lane, the smallest score and its codeword index.
#[derive(Clone, Copy)]
struct State {
    best: [float32x4_t; 4],
    idx: [uint32x4_t; 4],
}

/// `(panels, panel norms, d, first panel, end panel, first row of x, states of the rows)`.
type Tile = unsafe fn(*const PanelRow, *const f32, usize, usize, usize, *const f32, *mut State);

/// Searches `codes.len()` rows of `x`: `codes[i]` is the nearest codeword and `best[i]` its
/// ranking score (see `vq::assign::score_scalar`), exactly as the scalar scan finds them.
pub fn search(cb: &Codebook, x: &[f32], codes: &mut [u32], best: &mut [f32]) {
    cb.assert_search_buffers(x, codes, best);
    let (d, n) = (cb.d, codes.len());
    let np = cb.k.div_ceil(PANEL);
    let block = (CODEBOOK_BLOCK_BYTES / (d * PANEL * 4)).max(1);
    let tiles = pick(cb.metric, d);
    // SAFETY: register-only NEON (part of the aarch64 baseline).
    let init = unsafe { State { best: [vdupq_n_f32(f32::INFINITY); 4], idx: [vdupq_n_u32(0); 4] } };
    let mut st = [init; ROW_BLOCK];
    for r0 in (0..n).step_by(ROW_BLOCK) {
        let rows = (n - r0).min(ROW_BLOCK);
        st[..rows].fill(init);
        for p0 in (0..np).step_by(block) {
            let p1 = (p0 + block).min(np);
            let mut r = 0;
            while r < rows {
                let m = (rows - r).min(ROWS);
                // SAFETY: `assert_search_buffers` checked `x` holds `n` rows of `d`, that the
                // panels (`np * d` rows) and, for L2, the norms (`np * PANEL`) are complete;
                // rows `r0 + r .. r0 + r + m` are within `n` and `st` holds `ROW_BLOCK` states.
                unsafe {
                    tiles[m - 1](
                        cb.panels.as_ptr(),
                        cb.panel_norms.as_ptr(),
                        d,
                        p0,
                        p1,
                        x.as_ptr().add((r0 + r) * d),
                        st.as_mut_ptr().add(r),
                    )
                };
                r += m;
            }
        }
        for (r, s) in st[..rows].iter().enumerate() {
            (codes[r0 + r], best[r0 + r]) = merge(s);
        }
    }
}

/// The lanes of a running minimum merged: smallest score, ties to the lowest index. A lane
/// that never improved holds (+inf, 0), so a row where nothing beat +inf gets code 0, as in
/// scalar. The score returned is the chosen lane's own.
fn merge(s: &State) -> (u32, f32) {
    let (mut b, mut i) = ([0f32; PANEL], [0u32; PANEL]);
    for q in 0..4 {
        // SAFETY: each store writes 4 lanes into a 16-lane array at offset 4q <= 12.
        unsafe {
            vst1q_f32(b.as_mut_ptr().add(4 * q), s.best[q]);
            vst1q_u32(i.as_mut_ptr().add(4 * q), s.idx[q]);
        }
    }
    let m = b.iter().fold(f32::INFINITY, |m, &v| if v < m { v } else { m });
    let lane = (0..PANEL).filter(|&l| b[l] == m).min_by_key(|&l| i[l]).unwrap_or(0);
    (i[lane], b[lane])
}

crate::simd::assign_tiles!(1, 2, 3, 4);

/// One dimension of the pair accumulation: `fma(x, c, acc)`, or for L1 `acc + |x - c|`.
#[inline(always)]
unsafe fn step<const M: u8>(acc: float32x4_t, xb: float32x4_t, c: float32x4_t) -> float32x4_t {
    if M == L1 {
        vaddq_f32(acc, vabsq_f32(vsubq_f32(xb, c)))
    } else {
        vfmaq_f32(acc, xb, c)
    }
}

/// The ranking score of an accumulated pair: `fma(-2, dot, |c|^2)` for L2, `-dot` for IP and
/// cosine (a sign flip, exact), the sum itself for L1.
#[inline(always)]
unsafe fn score<const M: u8>(acc: float32x4_t, norm: float32x4_t) -> float32x4_t {
    match M {
        L2 => vfmaq_f32(norm, vdupq_n_f32(-2.0), acc),
        IP => vnegq_f32(acc),
        _ => acc,
    }
}

/// Folds four scores for codewords `j` into a running minimum (see the module doc).
#[inline(always)]
unsafe fn update(best: &mut float32x4_t, idx: &mut uint32x4_t, s: float32x4_t, j: uint32x4_t) {
    let less = vcltq_f32(s, *best);
    *best = vbslq_f32(less, s, *best);
    *idx = vbslq_u32(less, j, *idx);
}

/// Scores panels `p0..p1` against `R` consecutive rows of `x` (row stride `d`) and folds them
/// into the rows' running minima. `D` is `d` when nonzero (a compile-time dimension loop).
///
/// # Safety
/// `x` must hold `R * d` readable floats, `st` `R` states, `panels` `p1 * d` rows and, for L2,
/// `norms` `p1 * PANEL` floats.
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
    let mut s: [State; R] = std::array::from_fn(|r| *st.add(r));
    let lanes: [u32; 4] = [0, 1, 2, 3];
    let mut j = vaddq_u32(vdupq_n_u32((p0 * PANEL) as u32), vld1q_u32(lanes.as_ptr()));
    for p in p0..p1 {
        let w = panels.add(p * d).cast::<f32>();
        let mut acc = [[vdupq_n_f32(0.0); 4]; R];
        for t in 0..d {
            let c = [
                vld1q_f32(w.add(t * PANEL)),
                vld1q_f32(w.add(t * PANEL + 4)),
                vld1q_f32(w.add(t * PANEL + 8)),
                vld1q_f32(w.add(t * PANEL + 12)),
            ];
            for r in 0..R {
                let xb = vld1q_dup_f32(x.add(r * d + t));
                for q in 0..4 {
                    acc[r][q] = step::<M>(acc[r][q], xb, c[q]);
                }
            }
        }
        for q in 0..4 {
            let norm = if M == L2 { vld1q_f32(norms.add(p * PANEL + 4 * q)) } else { vdupq_n_f32(0.0) };
            let jq = vaddq_u32(j, vdupq_n_u32(4 * q as u32));
            for r in 0..R {
                update(&mut s[r].best[q], &mut s[r].idx[q], score::<M>(acc[r][q], norm), jq);
            }
        }
        j = vaddq_u32(j, vdupq_n_u32(PANEL as u32));
    }
    for (r, v) in s.iter().enumerate() {
        *st.add(r) = *v;
    }
}
