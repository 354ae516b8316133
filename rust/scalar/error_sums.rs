//! The sums behind an error report (signal energy, cross term, approximation energy, squared
//! error) of an approximation `y` of `x`, and the same for an RTN-quantized tensor decoded chunk
//! by chunk into a per-thread buffer, so that measuring a compressed tensor never allocates its
//! full decoded copy.
//!
//! Sums are float32 over runs of 256 values, float64 across runs (see [`sums`]). Chunks are
//! fixed (a whole number of runs for [`error_sums`]; the dequantizer's chunks of groups for
//! [`rtn_error_sums`]) and their partial sums are added in chunk order, so each function gives
//! the same bits for any thread count, and the two agree to float32 rounding (exactly, when the
//! RTN chunks are a multiple of 256 values, as for groups of 128 or rows of a power of two).

use crate::error::{invalid, Result};
use crate::pack;
use crate::parallel;
use crate::scalar::rtn::{self, RtnSpec, Scheme};

/// Values per parallel task of [`error_sums`].
const CHUNK_VALUES: usize = 1 << 16;
const LANES: usize = 8;
/// Values summed in float32 before their sum joins the float64 total.
const RUN: usize = 256;

/// `sum x^2`, `sum x*y`, `sum y^2` and `sum (x-y)^2`, in f64.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sums {
    pub signal: f64,
    pub cross: f64,
    pub approx: f64,
    pub error: f64,
}

impl Sums {
    fn add(self, o: Sums) -> Sums {
        Sums { signal: self.signal + o.signal, cross: self.cross + o.cross, approx: self.approx + o.approx, error: self.error + o.error }
    }
}

/// The sums of `x` against `y`: runs of [`RUN`] values are summed in float32 over [`LANES`]
/// independent lanes (a loop that vectorises without reordering any addition), each run's lanes
/// are added in float64, then the runs in order. The relative rounding error of a total stays
/// near float32's 6e-8 whatever the length.
pub fn sums(x: &[f32], y: &[f32]) -> Sums {
    debug_assert_eq!(x.len(), y.len());
    let mut out = Sums::default();
    for (xr, yr) in x.chunks(RUN).zip(y.chunks(RUN)) {
        let (mut s, mut c, mut a, mut e) = ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
        let (xc, yc) = (xr.chunks_exact(LANES), yr.chunks_exact(LANES));
        let (xt, yt) = (xc.remainder(), yc.remainder());
        for (xs, ys) in xc.zip(yc) {
            let u: &[f32; LANES] = xs.try_into().expect("chunks_exact");
            let v: &[f32; LANES] = ys.try_into().expect("chunks_exact");
            for j in 0..LANES {
                let d = u[j] - v[j];
                s[j] += u[j] * u[j];
                c[j] += u[j] * v[j];
                a[j] += v[j] * v[j];
                e[j] += d * d;
            }
        }
        for (j, (&u, &v)) in xt.iter().zip(yt).enumerate() {
            let d = u - v;
            s[j] += u * u;
            c[j] += u * v;
            a[j] += v * v;
            e[j] += d * d;
        }
        let total = |l: [f32; LANES]| l.iter().map(|&v| v as f64).sum::<f64>();
        out = out.add(Sums { signal: total(s), cross: total(c), approx: total(a), error: total(e) });
    }
    out
}

/// Adds per-chunk partial sums in chunk order (the same result for any thread count).
fn in_order<T: Send>(jobs: Vec<T>, f: impl Fn(T) -> Result<Sums> + Sync + Send) -> Result<Sums> {
    let mut parts = vec![Sums::default(); jobs.len()];
    let work: Vec<_> = jobs.into_iter().zip(parts.iter_mut()).collect();
    parallel::try_for_each(work, |(job, slot)| {
        *slot = f(job)?;
        Ok(())
    })?;
    Ok(parts.into_iter().fold(Sums::default(), Sums::add))
}

/// The sums of `y` against `x` (same length), in parallel chunks.
pub fn error_sums(x: &[f32], y: &[f32]) -> Result<Sums> {
    if x.len() != y.len() {
        return Err(invalid!("x has {} values, y has {}", x.len(), y.len()));
    }
    in_order(x.chunks(CHUNK_VALUES).zip(y.chunks(CHUNK_VALUES)).collect(), |(a, b)| Ok(sums(a, b)))
}

/// Runs `f` on a per-thread scratch buffer of `n` floats (see [`crate::scratch`]).
fn with_value_buffer<R>(n: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    crate::scratch::with_scratch(&BUF, n, f)
}

/// The sums of an RTN-quantized tensor (`codes`, float32 `scales`, `zeros` for affine) decoded
/// as [`rtn::dequantize_into`] does, against its source `x`, one chunk of groups at a time.
pub fn rtn_error_sums(spec: &RtnSpec, x: &[f32], codes: &[u8], scales: &[f32], zeros: &[f32]) -> Result<Sums> {
    spec.validate(x.len())?;
    let groups = spec.n_groups(x.len());
    let want_zeros = if spec.scheme == Scheme::Affine { groups } else { 0 };
    if codes.len() != pack::packed_len(x.len(), spec.bits) || scales.len() != groups || zeros.len() != want_zeros {
        return Err(invalid!(
            "{} code bytes, {} scales, {} zero points do not describe {} values",
            codes.len(),
            scales.len(),
            zeros.len(),
            x.len()
        ));
    }
    let cg = rtn::chunk_groups(spec);
    let code_bytes = cg * spec.group_size * spec.bits as usize / 8;
    let jobs: Vec<_> = x.chunks(cg * spec.group_size).zip(codes.chunks(code_bytes)).enumerate().collect();
    in_order(jobs, |(ci, (xs, c))| {
        let (g0, g1) = (ci * cg, ci * cg + xs.len() / spec.group_size);
        let z = if want_zeros > 0 { &zeros[g0..g1] } else { &zeros[..0] };
        with_value_buffer(xs.len(), |y| {
            rtn::dequantize_into(spec, c, &scales[g0..g1], z, y)?;
            Ok(sums(xs, y))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scalar::rtn::ScaleDtype;

    fn data(n: usize) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.37).sin() * 3.0 + (i % 7) as f32 * 0.01).collect()
    }

    fn naive(x: &[f32], y: &[f32]) -> [f64; 4] {
        let mut r = [0f64; 4];
        for (&u, &v) in x.iter().zip(y) {
            let (u, v) = (u as f64, v as f64);
            r[0] += u * u;
            r[1] += u * v;
            r[2] += v * v;
            r[3] += (u - v) * (u - v);
        }
        r
    }

    fn close(s: Sums, r: [f64; 4]) -> bool {
        [s.signal, s.cross, s.approx, s.error].iter().zip(r).all(|(&a, b)| (a - b).abs() <= 1e-6 * b.abs().max(1e-300))
    }

    #[test]
    fn error_sums_match_naive_sums() {
        for n in [1, 7, 8, 9, 1000, CHUNK_VALUES + 3] {
            let x = data(n);
            let y: Vec<f32> = x.iter().map(|v| v * 0.9 + 0.01).collect();
            assert!(close(error_sums(&x, &y).unwrap(), naive(&x, &y)), "n={n}");
        }
        assert!(error_sums(&[1.0], &[1.0, 2.0]).is_err());
    }

    #[test]
    fn rtn_error_sums_match_a_full_decode() {
        for (bits, gs, scheme) in [(4, 128, Scheme::Affine), (8, 1000, Scheme::Symmetric), (3, 64, Scheme::Affine), (4, 64, Scheme::Nf4)] {
            let spec = RtnSpec { bits, group_size: gs, scheme, scale_dtype: ScaleDtype::F16 };
            let x = data(gs * 301);
            let g = spec.n_groups(x.len());
            let (mut c, mut s) = (vec![0u8; pack::packed_len(x.len(), bits)], vec![0f32; g]);
            let mut z = vec![0f32; if scheme == Scheme::Affine { g } else { 0 }];
            rtn::quantize_into(&spec, &x, &mut c, &mut s, &mut z).unwrap();
            let mut y = vec![0f32; x.len()];
            rtn::dequantize_into(&spec, &c, &s, &z, &mut y).unwrap();
            let fused = rtn_error_sums(&spec, &x, &c, &s, &z).unwrap();
            assert!(close(fused, naive(&x, &y)), "{bits} {gs} {scheme:?}");
            assert!(fused.error > 0.0);
            assert!(rtn_error_sums(&spec, &x, &c[1..], &s, &z).is_err());
        }
    }

    #[test]
    fn sums_do_not_depend_on_the_thread_count() {
        let x = data(5 * CHUNK_VALUES + 11);
        let y: Vec<f32> = x.iter().map(|v| v.round()).collect();
        parallel::set_num_threads(1).unwrap();
        let one = error_sums(&x, &y).unwrap();
        parallel::set_num_threads(3).unwrap();
        let three = error_sums(&x, &y).unwrap();
        assert_eq!(one, three);
    }
}
