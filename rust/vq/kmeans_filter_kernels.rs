//! The per-node kernels of the filtering assignment (`kmeans_filter`): the pivot of a box, the
//! candidates that survive it, and the scores of a leaf's points against its candidates.
//!
//! Candidate sets are column-major (dimension `t` of candidate `j` at `coords[t * stride + j]`),
//! so that 16 consecutive candidates are one vector and a filter appends its survivors with one
//! compressed store per dimension. The plain bodies are the oracle (and every level but
//! AVX-512, through `per_level!`); the AVX-512 kernels perform the same IEEE operations per
//! lane (`vmaxps`/`vminps` return their second operand unless the first is greater/smaller, as
//! the plain `if` does), so every level gives the same sets and the same bits.

#![allow(clippy::needless_range_loop, clippy::too_many_arguments)] // lane loops, kernel args

use crate::simd::{per_level, Level};

/// Candidates per vector.
pub const LANES: usize = 16;
/// Rows scored together (the points of a leaf).
pub const ROWS: usize = super::kmeans_filter::LEAF;

/// Candidate centroids in ascending index order, column-major with `stride` (a multiple of
/// [`LANES`], at least `len` rounded up plus [`LANES`]: room for a whole vector store past the
/// end). `norms` (the computed `|c|^2`) are NaN past `len` up to the next
/// multiple of [`LANES`], so that padding lanes score NaN and never win.
#[derive(Default, Debug)]
pub struct Set {
    pub len: usize,
    pub stride: usize,
    pub idx: Vec<u32>,
    pub norms: Vec<f32>,
    pub coords: Vec<f32>,
}

/// A borrowed [`Set`]; `idx: None` is the identity (the whole codebook).
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub len: usize,
    pub stride: usize,
    pub idx: Option<&'a [u32]>,
    pub norms: &'a [f32],
    pub coords: &'a [f32],
}

impl Set {
    /// The `k` centroids (`data`, row-major) and their computed norms, all candidates.
    pub fn all(data: &[f32], norms: &[f32], d: usize) -> Set {
        let k = norms.len();
        let mut s = Set::default();
        s.reserve(k, d);
        s.len = k;
        s.norms[..k].copy_from_slice(norms);
        for (j, c) in data.chunks_exact(d).enumerate() {
            s.idx[j] = j as u32;
            for t in 0..d {
                s.coords[t * s.stride + j] = c[t];
            }
        }
        s
    }

    /// Room for up to `n` candidates of dimension `d` (contents unspecified).
    pub fn reserve(&mut self, n: usize, d: usize) {
        self.stride = n.div_ceil(LANES) * LANES + LANES;
        self.idx.resize(self.stride, 0);
        self.norms.resize(self.stride, f32::NAN);
        self.coords.resize(d * self.stride, 0.0);
    }

    pub fn view(&self) -> View<'_> {
        View { len: self.len, stride: self.stride, idx: Some(&self.idx), norms: &self.norms, coords: &self.coords }
    }
}

impl View<'_> {
    /// Panics unless the view holds its `len` candidates in whole vectors of `d` dimensions.
    fn check(&self, d: usize) {
        let np = self.len.div_ceil(LANES);
        assert!(self.stride >= np * LANES && self.norms.len() >= np * LANES && self.coords.len() >= d * self.stride);
        assert!(self.idx.is_none_or(|i| i.len() >= np * LANES));
    }
}

/// Bits of the lanes of vector `p` that hold one of `len` candidates.
#[inline(always)]
fn valid(len: usize, p: usize) -> u32 {
    let m = (len - p * LANES).min(LANES);
    ((1u64 << m) - 1) as u32
}

/// `out` = the position in `v` of the candidate nearest the box centre `m`, by
/// `|c|^2 + sum_t c_t m2_t` with `m2 = -2 m` (`|c - m|^2 - |m|^2`; a `mul_add` chain from the
/// computed norm; the lowest position on ties): a pivot for a box when no better guess is known
/// (any candidate would do: only speed depends on it).
#[inline(always)]
fn near_body(v: View, d: usize, m2: &[f32], out: &mut usize) {
    let (mut best, mut at) = (f32::INFINITY, 0);
    for p in 0..v.len.div_ceil(LANES) {
        let mut s: [f32; LANES] = v.norms[p * LANES..(p + 1) * LANES].try_into().unwrap();
        for t in 0..d {
            let c = &v.coords[t * v.stride + p * LANES..][..LANES];
            for l in 0..LANES {
                s[l] = c[l].mul_add(m2[t], s[l]);
            }
        }
        for l in 0..LANES.min(v.len - p * LANES) {
            if s[l] < best {
                (best, at) = (s[l], p * LANES + l);
            }
        }
    }
    *out = at;
}

/// `out` = the candidates of `v` (in order) that the pivot `z` (any centroid, `dz` its value
/// of the first sum) does not beat everywhere in the box `mid +- h` by more than `margin`: with
/// `w = c - z`, `g = (|c|^2 + sum_t c_t m_t - dz) - 2 sum_t h_t |w_t|` where `m = -2 mid` and
/// `|c|^2` is the computed norm (the sums `mul_add` chains), kept unless `g > margin` (see
/// `kmeans_filter` for why this is exact).
#[inline(always)]
fn filter_body(v: View, d: usize, m2: &[f32], z: &[f32], dz: f32, h: &[f32], margin: f32, out: &mut Set) {
    let mut m = 0;
    for p in 0..v.len.div_ceil(LANES) {
        let mut q: [f32; LANES] = v.norms[p * LANES..(p + 1) * LANES].try_into().unwrap();
        let mut a = [0f32; LANES];
        for t in 0..d {
            let c = &v.coords[t * v.stride + p * LANES..][..LANES];
            for l in 0..LANES {
                q[l] = c[l].mul_add(m2[t], q[l]);
                a[l] = h[t].mul_add((c[l] - z[t]).abs(), a[l]);
            }
        }
        let mut keep = 0u32;
        for l in 0..LANES {
            let g = (-2.0f32).mul_add(a[l], q[l] - dz);
            // `vcmpngtps`: NaN keeps the candidate.
            keep |= ((g <= margin || g.is_nan()) as u32) << l;
        }
        keep &= valid(v.len, p);
        while keep != 0 {
            let l = keep.trailing_zeros() as usize;
            keep &= keep - 1;
            let j = p * LANES + l;
            out.idx[m] = v.idx.map_or(j as u32, |i| i[j]);
            out.norms[m] = v.norms[j];
            for t in 0..d {
                out.coords[t * out.stride + m] = v.coords[t * v.stride + j];
            }
            m += 1;
        }
    }
    out.len = m;
}

/// Scores the [`ROWS`] rows `xs` against every candidate of `v`, each score exactly
/// `assign::score_scalar`'s: `best[r]` is row `r`'s lowest score and `code[r]` its position in
/// `v` (the lowest among equal scores). Padding lanes score NaN and never count.
#[inline(always)]
fn score_body(xs: &[f32], d: usize, v: View, best: &mut [f32; ROWS], code: &mut [u32; ROWS]) {
    let xs = &xs[..ROWS * d];
    let mut lb = [[f32::INFINITY; LANES]; ROWS];
    let mut li = [[0u32; LANES]; ROWS];
    for p in 0..v.len.div_ceil(LANES) {
        let norms = &v.norms[p * LANES..][..LANES];
        for r in 0..ROWS {
            let mut acc = [0f32; LANES];
            for t in 0..d {
                let c = &v.coords[t * v.stride + p * LANES..][..LANES];
                for l in 0..LANES {
                    acc[l] = xs[r * d + t].mul_add(c[l], acc[l]);
                }
            }
            for l in 0..LANES {
                let s = (-2.0f32).mul_add(acc[l], norms[l]);
                let lt = s < lb[r][l];
                lb[r][l] = if lt { s } else { lb[r][l] };
                li[r][l] = if lt { (p * LANES + l) as u32 } else { li[r][l] };
            }
        }
    }
    for r in 0..ROWS {
        (best[r], code[r]) = merge(&lb[r], &li[r]);
    }
}

/// The lanes of a running minimum merged: the lowest score, the lowest position among the
/// lanes holding it (`(inf, 0)` if nothing beat +inf). Scores are never NaN or -0 (a score is
/// `fma(-2, dot, |c|^2)` with `|c|^2` a `mul_add` chain from +0), so the order of the minima
/// does not matter.
#[inline(always)]
fn merge(b: &[f32; LANES], i: &[u32; LANES]) -> (f32, u32) {
    let m = b.iter().fold(f32::INFINITY, |a, &v| if v < a { v } else { a });
    (m, (0..LANES).filter(|&l| b[l] == m).map(|l| i[l]).min().unwrap_or(0))
}

per_level!(near_plain, near_body, (v: View, d: usize, m2: &[f32], out: &mut usize));
per_level!(filter_plain, filter_body, (v: View, d: usize, m2: &[f32], z: &[f32], dz: f32, h: &[f32], margin: f32, out: &mut Set));
per_level!(score_plain, score_body, (xs: &[f32], d: usize, v: View, best: &mut [f32; ROWS], code: &mut [u32; ROWS]));

/// See [`near_body`].
pub fn near(level: Level, v: View, d: usize, m2: &[f32], out: &mut usize) {
    v.check(d);
    assert!(m2.len() == d);
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 {
        // SAFETY: the level is only in force when the CPU supports AVX-512 (simd::level); the
        // checks give every bound the kernel reads within.
        return unsafe { avx512::near(v, d, m2, out) };
    }
    near_plain(level, v, d, m2, out)
}

/// See [`filter_body`] (`m2 = -2 mid`); `out` is resized to hold every candidate of `v`.
pub fn filter(level: Level, v: View, d: usize, m2: &[f32], z: &[f32], dz: f32, h: &[f32], margin: f32, out: &mut Set) {
    v.check(d);
    assert!(m2.len() == d && z.len() == d && h.len() == d);
    out.reserve(v.len, d);
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 {
        // SAFETY: as in `near`; `reserve` leaves room for a whole vector past `v.len` in every
        // output column, which bounds the kernel's stores.
        unsafe { avx512::filter(v, d, m2, z, dz, h, margin, out) };
    } else {
        filter_plain(level, v, d, m2, z, dz, h, margin, out);
    }
    #[cfg(not(target_arch = "x86_64"))]
    filter_plain(level, v, d, m2, z, dz, h, margin, out);
    let end = out.len.div_ceil(LANES) * LANES;
    out.norms[out.len..end].fill(f32::NAN);
}

/// See [`score_body`].
pub fn score(level: Level, xs: &[f32], d: usize, v: View, best: &mut [f32; ROWS], code: &mut [u32; ROWS]) {
    v.check(d);
    assert!(xs.len() >= ROWS * d);
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 {
        // SAFETY: as in `near`.
        return unsafe { avx512::score(xs, d, v, best, code) };
    }
    score_plain(level, xs, d, v, best, code)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{valid, Set, View, LANES, ROWS};
    use std::arch::x86_64::*;

    /// Rows whose running minima live in registers at once.
    const HALF: usize = 8;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    fn iota(p: usize) -> __m512i {
        _mm512_add_epi32(_mm512_set1_epi32((p * LANES) as i32), _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15))
    }

    /// Lane-wise running minimum (strictly smaller wins: the first, lowest, position stays).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    fn update(best: &mut __m512, idx: &mut __m512i, s: __m512, j: __m512i) {
        let lt = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(s, *best);
        *best = _mm512_min_ps(s, *best);
        *idx = _mm512_mask_mov_epi32(*idx, lt, j);
    }

    /// [`super::merge`]: the lowest value, the lowest position among the lanes holding it.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    fn merge(best: __m512, idx: __m512i) -> (f32, u32) {
        let m = _mm512_reduce_min_ps(best);
        let eq = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(best, _mm512_set1_ps(m));
        (m, if eq == 0 { 0 } else { _mm512_mask_reduce_min_epu32(eq, idx) })
    }

    /// # Safety
    /// AVX-512 F/BW/VL/DQ must be available; `v` must pass `View::check` and `m2` hold `d`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn near(v: View, d: usize, m2: &[f32], out: &mut usize) {
        let (mut best, mut idx) = (_mm512_set1_ps(f32::INFINITY), _mm512_setzero_si512());
        let (c, n) = (v.coords.as_ptr(), v.norms.as_ptr());
        for p in 0..v.len.div_ceil(LANES) {
            let mut s = _mm512_loadu_ps(n.add(p * LANES));
            for t in 0..d {
                s = _mm512_fmadd_ps(_mm512_loadu_ps(c.add(t * v.stride + p * LANES)), _mm512_set1_ps(m2[t]), s);
            }
            // Lanes past the end never count.
            s = _mm512_mask_blend_ps(valid(v.len, p) as u16, _mm512_set1_ps(f32::INFINITY), s);
            update(&mut best, &mut idx, s, iota(p));
        }
        *out = merge(best, idx).1 as usize;
    }

    /// # Safety
    /// As [`near`], with `z`, `h` holding `d` values and `out` reserved for `v.len`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn filter(v: View, d: usize, m2: &[f32], z: &[f32], dz: f32, h: &[f32], margin: f32, out: &mut Set) {
        let (c, n) = (v.coords.as_ptr(), v.norms.as_ptr());
        let (oc, on, oi) = (out.coords.as_mut_ptr(), out.norms.as_mut_ptr(), out.idx.as_mut_ptr());
        let (mg, abs, dz) = (_mm512_set1_ps(margin), _mm512_set1_epi32(0x7fff_ffff), _mm512_set1_ps(dz));
        let mut m = 0;
        for p in 0..v.len.div_ceil(LANES) {
            let norms = _mm512_loadu_ps(n.add(p * LANES));
            let (mut q, mut a) = (norms, _mm512_setzero_ps());
            for t in 0..d {
                let col = _mm512_loadu_ps(c.add(t * v.stride + p * LANES));
                q = _mm512_fmadd_ps(col, _mm512_set1_ps(m2[t]), q);
                let w = _mm512_sub_ps(col, _mm512_set1_ps(z[t]));
                let w = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(w), abs));
                a = _mm512_fmadd_ps(_mm512_set1_ps(h[t]), w, a);
            }
            let g = _mm512_fmadd_ps(_mm512_set1_ps(-2.0), a, _mm512_sub_ps(q, dz));
            let keep = _mm512_cmp_ps_mask::<_CMP_NGT_UQ>(g, mg) & valid(v.len, p) as u16;
            // No branch on `keep` (unpredictable): an empty mask stores zeros past the end.
            let ids = match v.idx {
                Some(i) => _mm512_loadu_si512(i.as_ptr().add(p * LANES).cast()),
                None => iota(p),
            };
            _mm512_storeu_si512(oi.add(m).cast(), _mm512_maskz_compress_epi32(keep, ids));
            _mm512_storeu_ps(on.add(m), _mm512_maskz_compress_ps(keep, norms));
            for t in 0..d {
                let col = _mm512_loadu_ps(c.add(t * v.stride + p * LANES));
                _mm512_storeu_ps(oc.add(t * out.stride + m), _mm512_maskz_compress_ps(keep, col));
            }
            m += keep.count_ones() as usize;
        }
        out.len = m;
    }

    /// # Safety
    /// As [`near`], with `xs` holding `ROWS * d` values.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn score(xs: &[f32], d: usize, v: View, best: &mut [f32; ROWS], code: &mut [u32; ROWS]) {
        let (c, n) = (v.coords.as_ptr(), v.norms.as_ptr());
        let m2 = _mm512_set1_ps(-2.0);
        for h in 0..ROWS / HALF {
            let x = xs.as_ptr().add(h * HALF * d);
            let mut b = [_mm512_set1_ps(f32::INFINITY); HALF];
            let mut bi = [_mm512_setzero_si512(); HALF];
            for p in 0..v.len.div_ceil(LANES) {
                let mut acc = [_mm512_setzero_ps(); HALF];
                for t in 0..d {
                    let col = _mm512_loadu_ps(c.add(t * v.stride + p * LANES));
                    for r in 0..HALF {
                        acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(*x.add(r * d + t)), col, acc[r]);
                    }
                }
                let (norms, j) = (_mm512_loadu_ps(n.add(p * LANES)), iota(p));
                for r in 0..HALF {
                    update(&mut b[r], &mut bi[r], _mm512_fmadd_ps(m2, acc[r], norms), j);
                }
            }
            for r in 0..HALF {
                (best[h * HALF + r], code[h * HALF + r]) = merge(b[r], bi[r]);
            }
        }
    }
}
