//! Bindings for the error sums behind compression reports (`crate::scalar::error_sums`).

use half::f16;
use numpy::PyReadonlyArrayDyn;
use pyo3::prelude::*;

use super::arrays::slice;
use super::errors::{run, to_py};
use crate::error::invalid;
use crate::scalar::error_sums::{self as sums_core, Sums};
use crate::scalar::rtn::{RtnSpec, ScaleDtype, Scheme};

type SumsTuple = (f64, f64, f64, f64);

fn tuple(s: Sums) -> SumsTuple {
    (s.signal, s.cross, s.approx, s.error)
}

/// `(sum x^2, sum x*y, sum y^2, sum (x-y)^2)` in f64 of two C-contiguous float32 arrays.
#[pyfunction]
fn error_sums<'py>(py: Python<'py>, x: PyReadonlyArrayDyn<'py, f32>, y: PyReadonlyArrayDyn<'py, f32>) -> PyResult<SumsTuple> {
    let (a, b) = (slice(&x, "x")?, slice(&y, "y")?);
    run(py, || sums_core::error_sums(a, b)).map(tuple)
}

/// Float32 values of a float16 or float32 array of scales or zero points.
fn grid(a: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<f32>> {
    if let Ok(h) = a.extract::<PyReadonlyArrayDyn<'_, f16>>() {
        return Ok(slice(&h, what)?.iter().map(|v| v.to_f32()).collect());
    }
    let f = a.extract::<PyReadonlyArrayDyn<'_, f32>>().map_err(|_| to_py(invalid!("{what} must be a float16 or float32 array")))?;
    Ok(slice(&f, what)?.to_vec())
}

/// The same sums for RTN codes (as `rtn_dequantize` decodes them) against their source `x`
/// (the quantized layout: axis moved last, flattened), without a full decoded copy.
#[pyfunction]
#[pyo3(signature = (x, codes, scales, zeros, bits, group_size, scheme))]
#[allow(clippy::too_many_arguments)]
fn rtn_error_sums<'py>(
    py: Python<'py>,
    x: PyReadonlyArrayDyn<'py, f32>,
    codes: PyReadonlyArrayDyn<'py, u8>,
    scales: Bound<'py, PyAny>,
    zeros: Option<Bound<'py, PyAny>>,
    bits: u32,
    group_size: usize,
    scheme: &str,
) -> PyResult<SumsTuple> {
    let scheme = match scheme {
        "affine" => Scheme::Affine,
        "symmetric" => Scheme::Symmetric,
        "nf4" => Scheme::Nf4,
        other => return Err(to_py(invalid!("scheme must be 'affine', 'symmetric' or 'nf4', got {other:?}"))),
    };
    // The scale dtype only matters when quantizing: decoding reads the values as given.
    let spec = RtnSpec { bits, group_size, scheme, scale_dtype: ScaleDtype::F32 };
    let (src, c) = (slice(&x, "x")?, slice(&codes, "codes")?);
    let s = grid(&scales, "scales")?;
    let z = match &zeros {
        Some(a) => grid(a, "zeros")?,
        None => Vec::new(),
    };
    run(py, || sums_core::rtn_error_sums(&spec, src, c, &s, &z)).map(tuple)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(error_sums, m)?)?;
    m.add_function(wrap_pyfunction!(rtn_error_sums, m)?)?;
    Ok(())
}
