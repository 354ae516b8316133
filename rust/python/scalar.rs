//! Bindings for scalar quantization: GGUF legacy blocks, RTN groups, bit packing.

use half::f16;
use numpy::{PyArray1, PyReadonlyArrayDyn, PyReadwriteArrayDyn};
use pyo3::prelude::*;

use super::arrays::{filled, slice};
use super::errors::{run, to_py};
use crate::error::invalid;
use crate::pack;
use crate::scalar::gguf_legacy::{self, LegacyType};
use crate::scalar::kquants::{self, KType};
use crate::scalar::rtn::{RtnSpec, ScaleDtype, Scheme};
use crate::scalar::search::Weights;
use crate::scalar::{hqq, mse};

/// A GGUF type name: one of the legacy block types or a K-quant / IQ4 type.
enum GgufType {
    Legacy(LegacyType),
    K(KType),
}

fn gguf_type(name: &str) -> PyResult<GgufType> {
    if let Some(t) = KType::from_name(name) {
        return Ok(GgufType::K(t));
    }
    LegacyType::from_name(name).map(GgufType::Legacy).map_err(to_py)
}

/// Decodes into a float32 array (a reused buffer, or a new `np.empty` one from Python).
#[pyfunction]
fn gguf_dequantize_into<'py>(
    py: Python<'py>,
    raw: PyReadonlyArrayDyn<'py, u8>,
    qtype: &str,
    mut out: PyReadwriteArrayDyn<'py, f32>,
) -> PyResult<()> {
    let t = gguf_type(qtype)?;
    let src = slice(&raw, "raw")?;
    let dst = out.as_slice_mut().map_err(|_| to_py(invalid!("out must be a C-contiguous, writeable float32 array")))?;
    match t {
        GgufType::Legacy(t) => run(py, || gguf_legacy::dequantize_into(t, src, dst)),
        GgufType::K(t) => run(py, || kquants::dequantize_into(t, src, dst)),
    }
}

/// Quantizes into a uint8 array (a reused buffer, or a new `np.empty` one from Python).
/// `weights` (K-quant and IQ4 types only) holds one importance weight per value or per column.
#[pyfunction]
#[pyo3(signature = (x, row_len, qtype, out, weights=None))]
fn gguf_quantize_into<'py>(
    py: Python<'py>,
    x: PyReadonlyArrayDyn<'py, f32>,
    row_len: usize,
    qtype: &str,
    mut out: PyReadwriteArrayDyn<'py, u8>,
    weights: Option<PyReadonlyArrayDyn<'py, f32>>,
) -> PyResult<()> {
    let t = gguf_type(qtype)?;
    let src = slice(&x, "x")?;
    let w = match &weights {
        Some(a) => Some(slice(a, "weights")?),
        None => None,
    };
    let dst = out.as_slice_mut().map_err(|_| to_py(invalid!("out must be a C-contiguous, writeable uint8 array")))?;
    match t {
        GgufType::Legacy(t) if w.is_none() => run(py, || gguf_legacy::quantize_into(t, src, row_len, dst)),
        GgufType::Legacy(t) => Err(to_py(invalid!("importance weights apply to the K-quant and IQ4 types, not {}", t.name()))),
        GgufType::K(t) => {
            let weights = match w {
                None => Weights::None,
                Some(v) if v.len() == src.len() => Weights::PerValue(v),
                Some(w) => Weights::PerColumn { w, row_len },
            };
            run(py, || kquants::quantize_into(t, src, row_len, weights, dst))
        }
    }
}

fn spec(bits: u32, group_size: usize, scheme: &str, scale_dtype: &str) -> PyResult<RtnSpec> {
    let scheme = match scheme {
        "affine" => Scheme::Affine,
        "symmetric" => Scheme::Symmetric,
        "nf4" => Scheme::Nf4,
        other => return Err(to_py(invalid!("scheme must be 'affine', 'symmetric' or 'nf4', got {other:?}"))),
    };
    let scale_dtype = match scale_dtype {
        "float16" => ScaleDtype::F16,
        "float32" => ScaleDtype::F32,
        other => return Err(to_py(invalid!("scale_dtype must be 'float16' or 'float32', got {other:?}"))),
    };
    Ok(RtnSpec { bits, group_size, scheme, scale_dtype })
}

/// Scales or zero points, as float32 or (exactly converted, F16C-fast) float16 NumPy arrays.
fn grid_array<'py>(py: Python<'py>, v: &[f32], dtype: ScaleDtype) -> Bound<'py, PyAny> {
    match dtype {
        ScaleDtype::F32 => PyArray1::from_slice(py, v).into_any(),
        ScaleDtype::F16 => PyArray1::from_iter(py, v.iter().map(|&x| f16::from_f32(x))).into_any(),
    }
}

/// A float16 or float32 array of scales or zero points, as float32 values.
fn grid_values(a: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<f32>> {
    if let Ok(h) = a.extract::<PyReadonlyArrayDyn<'_, f16>>() {
        return Ok(slice(&h, what)?.iter().map(|x| x.to_f32()).collect());
    }
    let f = a.extract::<PyReadonlyArrayDyn<'_, f32>>().map_err(|_| to_py(invalid!("{what} must be a float16 or float32 array")))?;
    Ok(slice(&f, what)?.to_vec())
}

type RtnParts<'py> = (Bound<'py, PyArray1<u8>>, Bound<'py, PyAny>, Option<Bound<'py, PyAny>>);

/// Returns packed codes and scales (and zeros, affine only) in `scale_dtype`.
#[pyfunction]
fn rtn_quantize<'py>(
    py: Python<'py>,
    x: PyReadonlyArrayDyn<'py, f32>,
    bits: u32,
    group_size: usize,
    scheme: &str,
    scale_dtype: &str,
) -> PyResult<RtnParts<'py>> {
    let spec = spec(bits, group_size, scheme, scale_dtype)?;
    let src = slice(&x, "x")?;
    group_parts(py, spec, src, crate::scalar::rtn::quantize_into)
}

/// Packed codes, scales and zeros from a group quantizer `q(spec, src, codes, scales, zeros)`
/// (RTN or a searching one), run with the GIL released.
fn group_parts<'py>(
    py: Python<'py>,
    spec: RtnSpec,
    src: &[f32],
    q: impl FnOnce(&RtnSpec, &[f32], &mut [u8], &mut [f32], &mut [f32]) -> crate::Result<()> + Send,
) -> PyResult<RtnParts<'py>> {
    spec.validate(src.len()).map_err(to_py)?;
    let groups = spec.n_groups(src.len());
    let affine = spec.scheme == Scheme::Affine;
    let (mut s, mut z) = (vec![0f32; groups], vec![0f32; if affine { groups } else { 0 }]);
    let codes = filled(py, pack::packed_len(src.len(), spec.bits), |c| run(py, || q(&spec, src, c, &mut s, &mut z)))?;
    let zeros = affine.then(|| grid_array(py, &z, spec.scale_dtype));
    Ok((codes, grid_array(py, &s, spec.scale_dtype), zeros))
}

/// Like `rtn_quantize`, with scales searched for the lowest (weighted) squared error.
/// `weights`: one per value, or one per position in rows of `row_len` values.
#[pyfunction]
#[pyo3(signature = (x, bits, group_size, scheme, scale_dtype, weights=None, row_len=0))]
#[allow(clippy::too_many_arguments)]
fn mse_quantize<'py>(
    py: Python<'py>,
    x: PyReadonlyArrayDyn<'py, f32>,
    bits: u32,
    group_size: usize,
    scheme: &str,
    scale_dtype: &str,
    weights: Option<PyReadonlyArrayDyn<'py, f32>>,
    row_len: usize,
) -> PyResult<RtnParts<'py>> {
    let spec = spec(bits, group_size, scheme, scale_dtype)?;
    let src = slice(&x, "x")?;
    let w = match &weights {
        None => Weights::None,
        Some(a) if row_len == 0 => Weights::PerValue(slice(a, "weights")?),
        Some(a) => Weights::PerColumn { w: slice(a, "weights")?, row_len },
    };
    group_parts(py, spec, src, |sp, x, c, s, z| mse::quantize_into(sp, x, w, c, s, z))
}

/// Like `rtn_quantize` (affine only), with HQQ-optimised float zero points.
#[pyfunction]
fn hqq_quantize<'py>(
    py: Python<'py>,
    x: PyReadonlyArrayDyn<'py, f32>,
    bits: u32,
    group_size: usize,
    scheme: &str,
    scale_dtype: &str,
) -> PyResult<RtnParts<'py>> {
    let spec = spec(bits, group_size, scheme, scale_dtype)?;
    let src = slice(&x, "x")?;
    group_parts(py, spec, src, hqq::quantize_into)
}

#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn rtn_dequantize<'py>(
    py: Python<'py>,
    codes: PyReadonlyArrayDyn<'py, u8>,
    scales: Bound<'py, PyAny>,
    zeros: Option<Bound<'py, PyAny>>,
    n: usize,
    bits: u32,
    group_size: usize,
    scheme: &str,
    scale_dtype: &str,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let spec = spec(bits, group_size, scheme, scale_dtype)?;
    spec.validate(n).map_err(to_py)?;
    let c = slice(&codes, "codes")?;
    let s = grid_values(&scales, "scales")?;
    let z = match &zeros {
        Some(a) => grid_values(a, "zeros")?,
        None => Vec::new(),
    };
    if c.len() != pack::packed_len(n, bits) {
        return Err(to_py(invalid!("codes hold {} bytes, {n} values of {bits} bits need {}", c.len(), pack::packed_len(n, bits))));
    }
    filled(py, n, |dst| run(py, || crate::scalar::rtn::dequantize_into(&spec, c, &s, &z, dst)))
}

#[pyfunction]
fn pack_bits<'py>(py: Python<'py>, codes: PyReadonlyArrayDyn<'py, u8>, bits: u32) -> PyResult<Bound<'py, PyArray1<u8>>> {
    let src = slice(&codes, "codes")?;
    pack::check_codes(src, bits).map_err(to_py)?;
    filled(py, pack::packed_len(src.len(), bits), |dst| run(py, || pack::pack(src, bits, dst)))
}

#[pyfunction]
fn unpack_bits<'py>(py: Python<'py>, packed: PyReadonlyArrayDyn<'py, u8>, bits: u32, n: usize) -> PyResult<Bound<'py, PyArray1<u8>>> {
    let src = slice(&packed, "packed")?;
    if !(1..=8).contains(&bits) || src.len() != pack::packed_len(n, bits) {
        return Err(to_py(invalid!("{} packed bytes do not hold {n} codes of {bits} bits", src.len())));
    }
    filled(py, n, |dst| run(py, || pack::unpack(src, bits, dst)))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(gguf_quantize_into, m)?)?;
    m.add_function(wrap_pyfunction!(gguf_dequantize_into, m)?)?;
    m.add_function(wrap_pyfunction!(rtn_quantize, m)?)?;
    m.add_function(wrap_pyfunction!(rtn_dequantize, m)?)?;
    m.add_function(wrap_pyfunction!(mse_quantize, m)?)?;
    m.add_function(wrap_pyfunction!(hqq_quantize, m)?)?;
    m.add_function(wrap_pyfunction!(pack_bits, m)?)?;
    m.add_function(wrap_pyfunction!(unpack_bits, m)?)?;
    Ok(())
}
