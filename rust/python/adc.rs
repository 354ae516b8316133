//! Bindings for the product-quantization ADC scan (top-k by lookup-table distances).

use numpy::{IntoPyArray, PyArray1, PyReadonlyArrayDyn};
use pyo3::prelude::*;

use super::arrays::slice;
use super::errors::{run, to_py};
use crate::vq::adc::{adc_search, Codes};
use crate::vq::pq_tables::distance_tables;

type Found<'py> = (Bound<'py, PyArray1<f32>>, Bound<'py, PyArray1<i64>>);

/// Top-`k` of every query: `tables` flat `(nq, m, ksub)`, `codes` flat `(n, m)` uint8 or
/// uint16; returns flat `(nq, k)` distances and indices.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn pq_adc_search<'py>(
    py: Python<'py>,
    tables: PyReadonlyArrayDyn<'py, f32>,
    nq: usize,
    m: usize,
    ksub: usize,
    codes: &Bound<'py, PyAny>,
    k: usize,
) -> PyResult<Found<'py>> {
    let t = slice(&tables, "tables")?;
    let found = if let Ok(c) = codes.extract::<PyReadonlyArrayDyn<'py, u8>>() {
        let cs = slice(&c, "codes")?;
        run(py, || adc_search(t, nq, m, ksub, Codes::U8(cs), k))?
    } else if let Ok(c) = codes.extract::<PyReadonlyArrayDyn<'py, u16>>() {
        let cs = slice(&c, "codes")?;
        run(py, || adc_search(t, nq, m, ksub, Codes::U16(cs), k))?
    } else {
        return Err(to_py(crate::Error::InvalidArgument("codes must be a uint8 or uint16 array".into())));
    };
    Ok((found.distances.into_pyarray(py), found.indices.into_pyarray(py)))
}

/// Lookup tables `(nq * m * ksub)` of queries `(nq, m * ds)` against codebooks `(m, ksub, ds)`.
#[pyfunction]
fn pq_distance_tables<'py>(
    py: Python<'py>,
    queries: PyReadonlyArrayDyn<'py, f32>,
    codebooks: PyReadonlyArrayDyn<'py, f32>,
    m: usize,
    ksub: usize,
    ds: usize,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let (q, cb) = (slice(&queries, "queries")?, slice(&codebooks, "codebooks")?);
    Ok(run(py, || distance_tables(q, cb, m, ksub, ds))?.into_pyarray(py))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(pq_adc_search, m)?)?;
    m.add_function(wrap_pyfunction!(pq_distance_tables, m)?)?;
    Ok(())
}
