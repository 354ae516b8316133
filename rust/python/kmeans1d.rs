//! Binding for batched 1-D k-means (`crate::vq::kmeans1d`).

use numpy::{PyArray1, PyReadonlyArrayDyn};
use pyo3::prelude::*;

use super::arrays::{filled, slice};
use super::errors::{run, to_py};
use crate::error::invalid;
use crate::scalar::search::Weights;
use crate::vq::kmeans1d::{kmeans1d_into, Code};

type Parts<'py> = (Bound<'py, PyArray1<f32>>, Bound<'py, PyAny>, Bound<'py, PyArray1<f64>>);

/// Fits every row of `x` (rows of `row_len` values): `(codebook, codes, inertia)`, codes uint8
/// for `k <= 256`, else uint16. `weights`: one per value or one per position in a row.
#[pyfunction]
#[pyo3(signature = (x, row_len, k, weights=None, exact=true))]
fn kmeans1d<'py>(
    py: Python<'py>,
    x: PyReadonlyArrayDyn<'py, f32>,
    row_len: usize,
    k: usize,
    weights: Option<PyReadonlyArrayDyn<'py, f32>>,
    exact: bool,
) -> PyResult<Parts<'py>> {
    let src = slice(&x, "x")?;
    let w = match &weights {
        None => Weights::None,
        Some(a) => match slice(a, "weights")? {
            v if v.len() == src.len() => Weights::PerValue(v),
            v => Weights::PerColumn { w: v, row_len },
        },
    };
    if row_len == 0 || src.len() % row_len != 0 {
        return Err(to_py(invalid!("{} values do not form rows of {row_len}", src.len())));
    }
    if k > 256 {
        fit::<u16>(py, src, row_len, k, w, exact)
    } else {
        fit::<u8>(py, src, row_len, k, w, exact)
    }
}

fn fit<'py, C: Code + numpy::Element>(
    py: Python<'py>,
    src: &[f32],
    row_len: usize,
    k: usize,
    w: Weights<'_>,
    exact: bool,
) -> PyResult<Parts<'py>> {
    let rows = src.len() / row_len;
    let n_cb = rows.checked_mul(k).ok_or_else(|| to_py(invalid!("k={k} is too large")))?;
    if k > C::MAX + 1 {
        return Err(to_py(invalid!("k must be between 1 and 65536, got {k}")));
    }
    let (mut cb, mut inertia) = (vec![0f32; n_cb], vec![0f64; rows]);
    let codes = filled::<C>(py, src.len(), |c| run(py, || kmeans1d_into(src, row_len, k, w, exact, &mut cb, c, &mut inertia)))?;
    Ok((PyArray1::from_vec(py, cb), codes.into_any(), PyArray1::from_vec(py, inertia)))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(kmeans1d, m)?)?;
    Ok(())
}
