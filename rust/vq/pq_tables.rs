//! Product-quantizer lookup tables: the squared L2 distance of every query sub-vector to every
//! codeword of its sub-space, `(nq, m, ksub)` float32, the input of the ADC scan (`adc`).
//!
//! Each entry is `sum_t (q_t - c_t)^2` over the sub-vector's `ds` dimensions in order, from 0.0,
//! with a separate multiply and add in float32 (straight differences: no cancellation near a
//! codeword). The loop runs over the codewords of a transposed sub-codebook, so it vectorises
//! without changing any entry's operations; the NumPy oracle is a plain loop over `t`.

use crate::error::{Error, Result};
use crate::parallel;

/// Queries per parallel job.
const QUERIES_PER_JOB: usize = 16;

/// Tables for `nq` queries (`nq * m * ds` values) against codebooks `(m, ksub, ds)`.
pub fn distance_tables(queries: &[f32], codebooks: &[f32], m: usize, ksub: usize, ds: usize) -> Result<Vec<f32>> {
    let d = m * ds;
    if m == 0 || ksub == 0 || ds == 0 || codebooks.len() != m * ksub * ds || !queries.len().is_multiple_of(d) {
        return Err(Error::Shape(format!(
            "queries ({} values) and codebooks ({} values) do not fit m={m}, ksub={ksub}, ds={ds}",
            queries.len(),
            codebooks.len()
        )));
    }
    if let Some(index) = queries.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite { index });
    }
    let nq = queries.len() / d;
    // Sub-codebook j transposed: ct[j][t][c] = codebooks[j][c][t].
    let mut ct = vec![0f32; m * ksub * ds];
    for j in 0..m {
        for c in 0..ksub {
            for t in 0..ds {
                ct[(j * ds + t) * ksub + c] = codebooks[(j * ksub + c) * ds + t];
            }
        }
    }
    let mut out = vec![0f32; nq * m * ksub];
    let jobs: Vec<_> = out.chunks_mut(QUERIES_PER_JOB * m * ksub).zip(queries.chunks(QUERIES_PER_JOB * d)).collect();
    parallel::try_for_each(jobs, |(o, q)| {
        tables_level(q, &ct, m, ksub, ds, o);
        Ok(())
    })?;
    Ok(out)
}

#[inline(always)]
fn tables_body(queries: &[f32], ct: &[f32], m: usize, ksub: usize, ds: usize, out: &mut [f32]) {
    for (q, o) in queries.chunks_exact(m * ds).zip(out.chunks_exact_mut(m * ksub)) {
        for j in 0..m {
            let row = &mut o[j * ksub..(j + 1) * ksub];
            row.fill(0.0);
            for t in 0..ds {
                let v = q[j * ds + t];
                let col = &ct[(j * ds + t) * ksub..(j * ds + t + 1) * ksub];
                for (r, &c) in row.iter_mut().zip(col) {
                    let e = v - c;
                    *r += e * e;
                }
            }
        }
    }
}

/// The body compiled for AVX2 when the CPU has it (no FMA: the same separate multiply and add).
fn tables_level(queries: &[f32], ct: &[f32], m: usize, ksub: usize, ds: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(queries: &[f32], ct: &[f32], m: usize, ksub: usize, ds: usize, out: &mut [f32]) {
            tables_body(queries, ct, m, ksub, ds, out)
        }
        if crate::simd::level() != crate::simd::Level::Scalar {
            // SAFETY: a SIMD level above scalar is only in force on a CPU with AVX2 (simd::level).
            return unsafe { avx2(queries, ct, m, ksub, ds, out) };
        }
    }
    tables_body(queries, ct, m, ksub, ds, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_squared_distances_at_every_level() {
        let (m, ksub, ds, nq) = (3, 5, 2, 4);
        let cb: Vec<f32> = (0..m * ksub * ds).map(|i| (i as f32 * 0.37).sin()).collect();
        let q: Vec<f32> = (0..nq * m * ds).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut want = None;
        for level in crate::simd::available_levels() {
            crate::simd::force_level(level).unwrap();
            let t = distance_tables(&q, &cb, m, ksub, ds).unwrap();
            for (qi, j, c) in [(0, 0, 0), (3, 2, 4), (1, 1, 3)] {
                let mut e = 0f32;
                for s in 0..ds {
                    let diff = q[qi * m * ds + j * ds + s] - cb[(j * ksub + c) * ds + s];
                    e += diff * diff;
                }
                assert_eq!(t[(qi * m + j) * ksub + c], e);
            }
            let bits: Vec<u32> = t.iter().map(|v| v.to_bits()).collect();
            assert_eq!(*want.get_or_insert_with(|| bits.clone()), bits);
        }
        crate::simd::force_level(crate::simd::detected_level()).unwrap();
        assert!(distance_tables(&q[..5], &cb, m, ksub, ds).is_err());
        assert!(distance_tables(&[f32::NAN; 6], &cb, m, ksub, ds).is_err());
    }
}
