//! The x86 group operations of k-means++ seeding (`seed_kernels::Ops`): AVX-512 and AVX2.
//!
//! SAFETY (every function here): the target features are those of the level the caller has
//! checked (`seed_kernels::gain`/`commit` dispatch on `simd::level`, which only reports levels
//! the CPU has). Every vector load and store stays within its slice: a group's `xn`, `closest`,
//! `w` and `lowered` are `[f32; 16]` arrays, read as one 16-lane or two 8-lane vectors; `xg` is
//! `d` rows of 16 (`dist16` asserts `xg.len() == 16 d`), read at `t * 16 (+ 8)` for `t < d`; a
//! set of boxes is `d` rows of 32 (`reach16` asserts `boxes.len() == 32 d` and `thr.len() ==
//! 16`), read at `t * 32`, `t * 32 + 16` (each `+ 8` for the second half).

/// A level's `gain` and `commit` entry points: the generic bodies with its `Ops`, compiled
/// with its target features.
macro_rules! entry_points {
    ($features:literal, $ops:ident) => {
        /// See `seed_kernels::gain_body`.
        ///
        /// # Safety
        /// The level's instructions (`$features`) must be available.
        #[target_feature(enable = $features)]
        pub(in super::super) unsafe fn gain(ch: &Chunk, closest: &[f32], gthr: &[f32], bthr: &[f32], c: &Centre, out: &mut Out) {
            super::super::gain_body::<$ops>(ch, closest, gthr, bthr, c, out)
        }

        /// See `seed_kernels::commit_body`.
        ///
        /// # Safety
        /// As for `gain`.
        #[target_feature(enable = $features)]
        pub(in super::super) unsafe fn commit(ch: &Chunk, closest: &mut [f32], groups: &mut BallState, blocks: &mut BallState, c: &Centre) {
            super::super::commit_body::<$ops>(ch, closest, groups, blocks, c)
        }
    };
}

pub(super) mod avx512 {
    //! The group operations with 16 points, or 16 boxes, in the lanes of 512-bit registers: the
    //! same IEEE operations as [`Plain`](super::super::Plain) (`vminps`/`vmaxps` return their second
    //! operand unless the first is smaller/greater, as the plain `if` does; no fused multiply-add
    //! where the plain code has none).
    use super::super::{BallState, Centre, Chunk, Ops, Out, GROUP};
    use std::arch::x86_64::*;

    pub(super) struct Avx512;

    entry_points!("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma", Avx512);

    /// `max(0, fma(-2, dot, |c|^2) + |x|^2)` for 16 points, as `l2`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    unsafe fn dist16(xg: &[f32], xn: &[f32; GROUP], c: &Centre) -> __m512 {
        assert!(xg.len() == c.c.len() * GROUP);
        let mut acc = _mm512_setzero_ps();
        for (t, &ct) in c.c.iter().enumerate() {
            // SAFETY: row `t < d` of 16 lies within `xg` (asserted above).
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(xg.as_ptr().add(t * GROUP)), _mm512_set1_ps(ct), acc);
        }
        let v = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(-2.0), acc, _mm512_set1_ps(c.cn)), _mm512_loadu_ps(xn.as_ptr()));
        _mm512_max_ps(v, _mm512_setzero_ps())
    }

    impl Ops for Avx512 {
        type Acc = (__m512d, __m512d);

        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn zero() -> Self::Acc {
            (_mm512_setzero_pd(), _mm512_setzero_pd())
        }

        /// [`fold16`](super::super::fold16) of partials `0..8` in `lo`, `8..16` in `hi`.
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn fold((lo, hi): Self::Acc) -> f64 {
            let s = _mm512_add_pd(lo, hi);
            let s = _mm256_add_pd(_mm512_castpd512_pd256(s), _mm512_extractf64x4_pd::<1>(s));
            let s = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd::<1>(s));
            _mm_cvtsd_f64(s) + _mm_cvtsd_f64(_mm_unpackhi_pd(s, s))
        }

        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn reach16(boxes: &[f32], thr: &[f32], c: &[f32]) -> u32 {
            assert!(boxes.len() == 2 * c.len() * GROUP && thr.len() == GROUP);
            let (mut acc, zero) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            for (t, &ct) in c.iter().enumerate() {
                // SAFETY: row `t < d` of 32 lies within `boxes` (asserted above).
                let (p, cb) = (boxes.as_ptr().add(t * 2 * GROUP), _mm512_set1_ps(ct));
                let a = _mm512_sub_ps(_mm512_loadu_ps(p), cb);
                let b = _mm512_sub_ps(cb, _mm512_loadu_ps(p.add(GROUP)));
                let g = _mm512_max_ps(_mm512_max_ps(a, b), zero);
                acc = _mm512_fmadd_ps(g, g, acc);
            }
            // `!(acc > thr)`: NaN counts as near, as in the plain test.
            !(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(acc, _mm512_loadu_ps(thr.as_ptr())) as u32) & 0xffff
        }

        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn gain(
            acc: &mut Self::Acc,
            xg: &[f32],
            xn: &[f32; GROUP],
            cl: &[f32; GROUP],
            w: Option<&[f32; GROUP]>,
            c: &Centre,
            lowered: &mut [f32; GROUP],
        ) -> bool {
            let (clv, dist) = (_mm512_loadu_ps(cl.as_ptr()), dist16(xg, xn, c));
            let m = _mm512_min_ps(dist, clv);
            let any = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(dist, clv) != 0;
            if any {
                _mm512_storeu_ps(lowered.as_mut_ptr(), m);
            }
            let (cl_lo, cl_hi) = halves(clv);
            let (m_lo, m_hi) = halves(m);
            let (mut lo, mut hi) = (_mm512_sub_pd(cl_lo, m_lo), _mm512_sub_pd(cl_hi, m_hi));
            if let Some(w) = w {
                let (w_lo, w_hi) = halves(_mm512_loadu_ps(w.as_ptr()));
                lo = _mm512_mul_pd(lo, w_lo);
                hi = _mm512_mul_pd(hi, w_hi);
            }
            *acc = (_mm512_add_pd(acc.0, lo), _mm512_add_pd(acc.1, hi));
            any
        }

        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn lower(xg: &[f32], xn: &[f32; GROUP], cl: &mut [f32; GROUP], c: &Centre) -> bool {
            let (dist, clv) = (dist16(xg, xn, c), _mm512_loadu_ps(cl.as_ptr()));
            let lowered = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(dist, clv) != 0;
            _mm512_storeu_ps(cl.as_mut_ptr(), _mm512_min_ps(dist, clv));
            lowered
        }
    }

    /// The lanes `0..8` and `8..16` of 16 floats, widened to float64.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    unsafe fn halves(v: __m512) -> (__m512d, __m512d) {
        (_mm512_cvtps_pd(_mm512_castps512_ps256(v)), _mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(v)))
    }
}

pub(super) mod avx2 {
    //! The group operations with 16 points, or 16 boxes, in two 256-bit registers (float64
    //! partials in four): the same IEEE operations as [`Plain`](super::super::Plain).
    use super::super::{BallState, Centre, Chunk, Ops, Out, GROUP};
    use std::arch::x86_64::*;

    pub(super) struct Avx2;

    entry_points!("avx2,fma", Avx2);

    /// `max(0, fma(-2, dot, |c|^2) + |x|^2)` for 16 points (two halves), as `l2`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dist16(xg: &[f32], xn: &[f32; GROUP], c: &Centre) -> [__m256; 2] {
        assert!(xg.len() == c.c.len() * GROUP);
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for (t, &ct) in c.c.iter().enumerate() {
            // SAFETY: row `t < d` of 16 lies within `xg` (asserted above).
            let (p, cb) = (xg.as_ptr().add(t * GROUP), _mm256_set1_ps(ct));
            lo = _mm256_fmadd_ps(_mm256_loadu_ps(p), cb, lo);
            hi = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(8)), cb, hi);
        }
        let (m2, cn, zero) = (_mm256_set1_ps(-2.0), _mm256_set1_ps(c.cn), _mm256_setzero_ps());
        let lo = _mm256_add_ps(_mm256_fmadd_ps(m2, lo, cn), _mm256_loadu_ps(xn.as_ptr()));
        let hi = _mm256_add_ps(_mm256_fmadd_ps(m2, hi, cn), _mm256_loadu_ps(xn.as_ptr().add(8)));
        [_mm256_max_ps(lo, zero), _mm256_max_ps(hi, zero)]
    }

    /// The four quarters of 16 floats (two halves), widened to float64.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn quarters(v: [__m256; 2]) -> [__m256d; 4] {
        let q = |h: __m256, top: bool| _mm256_cvtps_pd(if top { _mm256_extractf128_ps::<1>(h) } else { _mm256_castps256_ps128(h) });
        [q(v[0], false), q(v[0], true), q(v[1], false), q(v[1], true)]
    }

    impl Ops for Avx2 {
        type Acc = [__m256d; 4];

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn zero() -> Self::Acc {
            [_mm256_setzero_pd(); 4]
        }

        /// [`fold16`](super::super::fold16): partials `i` and `i + 8`, then `i + 4`, `i + 2`.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn fold(acc: Self::Acc) -> f64 {
            let u = _mm256_add_pd(_mm256_add_pd(acc[0], acc[2]), _mm256_add_pd(acc[1], acc[3]));
            let v = _mm_add_pd(_mm256_castpd256_pd128(u), _mm256_extractf128_pd::<1>(u));
            _mm_cvtsd_f64(v) + _mm_cvtsd_f64(_mm_unpackhi_pd(v, v))
        }

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn reach16(boxes: &[f32], thr: &[f32], c: &[f32]) -> u32 {
            assert!(boxes.len() == 2 * c.len() * GROUP && thr.len() == GROUP);
            let (mut acc, zero) = ([_mm256_setzero_ps(); 2], _mm256_setzero_ps());
            for (t, &ct) in c.iter().enumerate() {
                let cb = _mm256_set1_ps(ct);
                for (h, a) in acc.iter_mut().enumerate() {
                    // SAFETY: half `h` of row `t < d` of 32 lies within `boxes` (asserted above).
                    let p = boxes.as_ptr().add(t * 2 * GROUP + h * 8);
                    let below = _mm256_sub_ps(_mm256_loadu_ps(p), cb);
                    let above = _mm256_sub_ps(cb, _mm256_loadu_ps(p.add(GROUP)));
                    let g = _mm256_max_ps(_mm256_max_ps(below, above), zero);
                    *a = _mm256_fmadd_ps(g, g, *a);
                }
            }
            let [lo, hi] = acc;
            // `!(acc > thr)`: NaN counts as near, as in the plain test.
            let far_lo = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(lo, _mm256_loadu_ps(thr.as_ptr()))) as u32;
            let far_hi = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(hi, _mm256_loadu_ps(thr.as_ptr().add(8)))) as u32;
            !(far_lo | far_hi << 8) & 0xffff
        }

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn gain(
            acc: &mut Self::Acc,
            xg: &[f32],
            xn: &[f32; GROUP],
            cl: &[f32; GROUP],
            w: Option<&[f32; GROUP]>,
            c: &Centre,
            lowered: &mut [f32; GROUP],
        ) -> bool {
            let dist = dist16(xg, xn, c);
            let clv = [_mm256_loadu_ps(cl.as_ptr()), _mm256_loadu_ps(cl.as_ptr().add(8))];
            let m = [_mm256_min_ps(dist[0], clv[0]), _mm256_min_ps(dist[1], clv[1])];
            let lt = |h: usize| _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(dist[h], clv[h]));
            let any = (lt(0) | lt(1)) != 0;
            if any {
                _mm256_storeu_ps(lowered.as_mut_ptr(), m[0]);
                _mm256_storeu_ps(lowered.as_mut_ptr().add(8), m[1]);
            }
            let (cq, mq) = (quarters(clv), quarters(m));
            let wq = w.map(|w| quarters([_mm256_loadu_ps(w.as_ptr()), _mm256_loadu_ps(w.as_ptr().add(8))]));
            for i in 0..4 {
                let term = _mm256_sub_pd(cq[i], mq[i]);
                let term = match wq {
                    Some(wq) => _mm256_mul_pd(term, wq[i]),
                    None => term,
                };
                acc[i] = _mm256_add_pd(acc[i], term);
            }
            any
        }

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn lower(xg: &[f32], xn: &[f32; GROUP], cl: &mut [f32; GROUP], c: &Centre) -> bool {
            let dist = dist16(xg, xn, c);
            let mut lowered = 0;
            for (h, d) in dist.iter().enumerate() {
                // SAFETY: half `h < 2` of the 16-float array `cl`.
                let p = cl.as_mut_ptr().add(h * 8);
                let clv = _mm256_loadu_ps(p);
                lowered |= _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(*d, clv));
                _mm256_storeu_ps(p, _mm256_min_ps(*d, clv));
            }
            lowered != 0
        }
    }
}
