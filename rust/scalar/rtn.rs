//! Round-to-nearest (RTN) group quantization, 1 to 8 bits, affine or symmetric.
//!
//! The input is a C-ordered run of groups of `group_size` values (the Python layer moves the
//! quantization axis last and flattens; per-tensor is one group, per-channel one group a row).
//! Each group gets a scale `s` (and, for affine, a zero point `z`) and codes `u` so that the value
//! is `(u - z) * s`:
//! * affine, `qmax = 2^bits - 1`: the range `[min(x, 0), max(x, 0)]` (zero is always exact),
//!   `s = (mx - mn) / qmax`, `z = round(-mn / s)` an integer in `[0, qmax]`;
//! * symmetric (bits >= 2), `qm = 2^(bits-1) - 1`: `s = max|x| / qm`, codes offset by the implicit
//!   `z = 2^(bits-1)` and restricted to `[1, 2^bits - 1]`, so `-qm*s ..= qm*s` is symmetric.
//!
//! A nonzero scale is raised to at least `f32::MIN_POSITIVE` (so `1/s` is finite), then rounded
//! *up* to the storage dtype (float16 or float32) before any code is computed,
//! so the stored grid covers the group and every value is within `s/2` of its reconstruction.
//! `u = clamp(round_half_even(x * (1/s)) + z, lo, hi)`; `1/s = 0` when `s = 0`.
//! * NF4 (4 bits): `u` = the number of bitsandbytes' 15 NF4 thresholds that `x * (1/absmax)`
//!   exceeds; the value is `NF4[u] * absmax` (bitsandbytes' blockwise NF4, codes bit-exact).
//!
//! Codes are packed in the bit order of [`crate::pack`].

use crate::error::{invalid, Error, Result};
use crate::pack;
use crate::parallel;
use crate::simd::{self, GridParams};

/// Values per parallel task, rounded to whole, byte-aligned groups.
const CHUNK_VALUES: usize = 1 << 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Affine,
    Symmetric,
    /// bitsandbytes' NF4: 4-bit codes into a fixed normal-quantile codebook, times the group's
    /// absmax; codes bit-exact to bitsandbytes' `quantize_4bit` (see [`nf4_grid`]).
    Nf4,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleDtype {
    F16,
    F32,
}

/// How to quantize: bit width, group size, scheme and scale storage dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtnSpec {
    pub bits: u32,
    pub group_size: usize,
    pub scheme: Scheme,
    pub scale_dtype: ScaleDtype,
}

impl RtnSpec {
    /// Checks the spec against an input of `n` values.
    pub fn validate(&self, n: usize) -> Result<()> {
        if !(1..=8).contains(&self.bits) {
            return Err(invalid!("bits must be between 1 and 8, got {}", self.bits));
        }
        if self.scheme == Scheme::Nf4 && self.bits != 4 {
            return Err(invalid!("NF4 codes are 4 bits wide, got bits={}", self.bits));
        }
        if self.scheme == Scheme::Symmetric && self.bits < 2 {
            return Err(invalid!("symmetric quantization needs at least 2 bits; use scheme='affine' for 1 bit"));
        }
        if self.group_size == 0 {
            return Err(invalid!("group size must be positive"));
        }
        if !n.is_multiple_of(self.group_size) {
            return Err(Error::Shape(format!("{n} values are not a whole number of groups of {}", self.group_size)));
        }
        Ok(())
    }

    pub fn n_groups(&self, n: usize) -> usize {
        n / self.group_size
    }

    /// The implicit zero point of the symmetric scheme (codes are stored offset by it).
    pub fn symmetric_offset(&self) -> f32 {
        (1u32 << (self.bits - 1)) as f32
    }

    /// The grid rules of this spec, for the `grids` kernels.
    pub fn grid_params(&self) -> GridParams {
        GridParams {
            symmetric: self.scheme == Scheme::Symmetric,
            top: ((1u32 << self.bits) - 1) as f32,
            qm: self.symmetric_offset() - 1.0,
            offset: self.symmetric_offset(),
            f16: self.scale_dtype == ScaleDtype::F16,
        }
    }

    /// The error for a group whose scale overflows the scale dtype.
    pub(crate) fn overflow(&self, group: usize) -> Error {
        let hint = if self.scale_dtype == ScaleDtype::F16 { "float16; use scale_dtype='float32'" } else { "float32" };
        Error::Overflow(format!("the scale of group {group} overflows {hint}"))
    }
}

/// Runs `f` on a per-thread scratch buffer of `n` unpacked codes (see [`crate::scratch`]).
pub(crate) fn with_code_buffer<R>(n: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    crate::scratch::with_scratch(&BUF, n, f)
}

/// Groups a parallel chunk holds: a multiple of the groups that end on a byte boundary.
pub(crate) fn chunk_groups(spec: &RtnSpec) -> usize {
    let bits_per_group = spec.group_size * spec.bits as usize;
    let aligned = 8 / gcd(bits_per_group % 8, 8);
    aligned * (CHUNK_VALUES / (spec.group_size * aligned)).max(1)
}

fn gcd(a: usize, b: usize) -> usize {
    if a == 0 {
        b
    } else {
        gcd(b % a, a)
    }
}

fn check_outputs(spec: &RtnSpec, n: usize, codes: usize, scales: usize, zeros: usize) -> Result<()> {
    let g = spec.n_groups(n);
    let want_zeros = if spec.scheme == Scheme::Affine { g } else { 0 };
    if codes != pack::packed_len(n, spec.bits) || scales != g || zeros != want_zeros {
        return Err(Error::Shape(format!(
            "buffers hold {codes} code bytes, {scales} scales, {zeros} zero points; \
             {n} values need {}, {g}, {want_zeros}",
            pack::packed_len(n, spec.bits)
        )));
    }
    Ok(())
}

/// NF4 grids as bitsandbytes computes them: scale = absmax (rounded up for float16 storage)
/// and `inv = 1 / scale` with no guard, so an all-zero group gives `inv = inf`, NaN products and
/// code 0, exactly as its kernel does. False if a float16 scale overflowed.
fn nf4_grid(mins: &[f32], maxs: &[f32], f16: bool, scales: &mut [f32], invs: &mut [f32]) -> bool {
    let mut finite = true;
    for i in 0..mins.len() {
        let (a, b) = (mins[i].abs(), maxs[i].abs());
        let absmax = if a > b { a } else { b };
        let scale = if f16 && absmax > 0.0 { simd::scalar::round_up_scale(absmax, true) } else { absmax };
        finite &= scale.is_finite();
        scales[i] = scale;
        invs[i] = 1.0 / scale;
    }
    finite
}

/// One parallel chunk: its input, packed codes, scales and (affine only) zero points.
type QuantizeJob<'a> = (((&'a [f32], &'a mut [u8]), &'a mut [f32]), &'a mut [f32]);

/// Quantizes `src` into packed `codes`, per-group `scales` and (affine only) `zeros`.
pub fn quantize_into(spec: &RtnSpec, src: &[f32], codes: &mut [u8], scales: &mut [f32], zeros: &mut [f32]) -> Result<()> {
    spec.validate(src.len())?;
    check_outputs(spec, src.len(), codes.len(), scales.len(), zeros.len())?;
    let k = simd::kernels();
    let gs = spec.group_size;
    let cg = chunk_groups(spec);
    let code_bytes = cg * gs * spec.bits as usize / 8;
    let affine = spec.scheme == Scheme::Affine;
    let params = spec.grid_params();
    let n_chunks = spec.n_groups(src.len()).div_ceil(cg);
    let zero_chunks: Vec<&mut [f32]> =
        if affine { zeros.chunks_mut(cg).collect() } else { (0..n_chunks).map(|_| <&mut [f32]>::default()).collect() };
    let jobs: Vec<_> = src.chunks(cg * gs).zip(codes.chunks_mut(code_bytes)).zip(scales.chunks_mut(cg)).zip(zero_chunks).collect();
    let run = |(((x, c), s), z): QuantizeJob| -> Result<()> {
        // Three passes over the chunk's groups (ranges, grids, codes), so that the grid
        // arithmetic runs over many groups at once instead of one dependency chain a group.
        let ng = x.len() / gs;
        let (mut mins, mut maxs, mut finite) = (vec![0f32; ng], vec![0f32; ng], true);
        for (i, xg) in x.chunks_exact(gs).enumerate() {
            let (mn, mx, ok) = (k.group_range)(xg);
            (mins[i], maxs[i], finite) = (mn, mx, finite & ok);
        }
        if !finite {
            return Err(Error::NonFinite { index: 0 });
        }
        let (mut implicit_zeros, mut invs) = (Vec::new(), vec![0f32; ng]);
        let zero_points: &mut [f32] = if affine {
            z
        } else {
            implicit_zeros.resize(ng, 0.0);
            &mut implicit_zeros
        };
        let nf4 = spec.scheme == Scheme::Nf4;
        let finite_scales = if nf4 {
            nf4_grid(&mins, &maxs, params.f16, s, &mut invs)
        } else {
            (k.grids)(&mins, &maxs, &params, s, zero_points, &mut invs)
        };
        if !finite_scales {
            let first = s.iter().position(|v| v.is_infinite()).unwrap_or(0);
            return Err(spec.overflow(first));
        }
        let (lo, hi) = if affine { (0.0, params.top) } else { (1.0, params.top) };
        with_code_buffer(x.len(), |tmp| {
            for (i, (xg, tg)) in x.chunks_exact(gs).zip(tmp.chunks_exact_mut(gs)).enumerate() {
                if nf4 {
                    (k.nf4_codes)(xg, invs[i], tg);
                } else {
                    (k.group_codes)(xg, invs[i], zero_points[i], lo, hi, tg);
                }
            }
            pack::pack(tmp, spec.bits, c)
        })
    };
    let result = parallel::try_for_each(jobs, run);
    result.map_err(|e| match e {
        Error::NonFinite { .. } => Error::NonFinite { index: src.iter().position(|v| !v.is_finite()).unwrap_or(0) },
        other => other,
    })
}

/// Reconstructs `(u - z) * s` for every value into `dst`.
pub fn dequantize_into(spec: &RtnSpec, codes: &[u8], scales: &[f32], zeros: &[f32], dst: &mut [f32]) -> Result<()> {
    spec.validate(dst.len())?;
    check_outputs(spec, dst.len(), codes.len(), scales.len(), zeros.len())?;
    let k = simd::kernels();
    let gs = spec.group_size;
    let cg = chunk_groups(spec);
    let code_bytes = cg * gs * spec.bits as usize / 8;
    let offset = spec.symmetric_offset();
    let run = |ci: usize, (y, c): (&mut [f32], &[u8])| -> Result<()> {
        with_code_buffer(y.len(), |tmp| {
            pack::unpack(c, spec.bits, tmp)?;
            for (gi, (yg, tg)) in y.chunks_exact_mut(gs).zip(tmp.chunks_exact(gs)).enumerate() {
                let g = ci * cg + gi;
                match spec.scheme {
                    Scheme::Nf4 => (k.nf4_values)(tg, scales[g], yg),
                    Scheme::Affine => (k.group_values)(tg, scales[g], zeros[g], yg),
                    Scheme::Symmetric => (k.group_values)(tg, scales[g], offset, yg),
                }
            }
            Ok(())
        })
    };
    let jobs: Vec<_> = dst.chunks_mut(cg * gs).zip(codes.chunks(code_bytes)).enumerate().collect();
    parallel::try_for_each(jobs, |(ci, pair)| run(ci, pair))
}
