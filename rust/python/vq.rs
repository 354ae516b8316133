//! Bindings for vector quantization: nearest-codeword search.

use numpy::{PyArray1, PyReadonlyArrayDyn};
use pyo3::prelude::*;

use super::arrays::{filled, slice};
use super::errors::{run, to_py};
use crate::vq::{assign_into, Codebook, Metric};

type Assigned<'py> = (Bound<'py, PyArray1<u32>>, Option<Bound<'py, PyArray1<f32>>>);

/// Nearest codeword of every row of `x` (flat, rows of `d`) in `codebook` (flat, rows of `d`):
/// codes as uint32 and, if asked, the distances as float32.
#[pyfunction]
fn vq_assign<'py>(
    py: Python<'py>,
    x: PyReadonlyArrayDyn<'py, f32>,
    codebook: PyReadonlyArrayDyn<'py, f32>,
    d: usize,
    metric: &str,
    return_distances: bool,
) -> PyResult<Assigned<'py>> {
    let metric = Metric::from_name(metric).map_err(to_py)?;
    let (xs, cs) = (slice(&x, "x")?, slice(&codebook, "codebook")?);
    let cb = run(py, || Codebook::new(cs, d, metric))?;
    if xs.len() % d != 0 {
        return Err(to_py(crate::Error::Shape(format!("x holds {} values, not a multiple of d={d}", xs.len()))));
    }
    let n = xs.len() / d;
    if !return_distances {
        let codes = filled(py, n, |c| run(py, || assign_into(&cb, xs, c, None)))?;
        return Ok((codes, None));
    }
    let mut dists = vec![0f32; n];
    let codes = filled(py, n, |c| run(py, || assign_into(&cb, xs, c, Some(&mut dists))))?;
    Ok((codes, Some(PyArray1::from_vec(py, dists))))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(vq_assign, m)?)?;
    Ok(())
}
