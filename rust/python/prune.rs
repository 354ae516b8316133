//! Bindings for pruning (`crate::prune`): magnitude masks, bitmask pack/unpack, N:M, row and
//! column norms.

use numpy::{PyArray1, PyReadonlyArrayDyn};
use pyo3::prelude::*;

use super::arrays::{filled, slice};
use super::errors::{run, to_py};
use crate::error::invalid;
use crate::prune;

/// Keep masks (uint8, LSB first) for every array of `scores`, keeping exactly `keep` elements of
/// them all together (largest `|score|`, ties to the lower flat index in list order).
#[pyfunction]
fn prune_magnitude_masks<'py>(
    py: Python<'py>,
    scores: Vec<PyReadonlyArrayDyn<'py, f32>>,
    keep: usize,
) -> PyResult<Vec<Bound<'py, PyArray1<u8>>>> {
    let parts = scores.iter().map(|a| slice(a, "scores")).collect::<PyResult<Vec<_>>>()?;
    let mut masks: Vec<Vec<u8>> = parts.iter().map(|p| vec![0u8; prune::mask_len(p.len())]).collect();
    run(py, || {
        let mut refs: Vec<&mut [u8]> = masks.iter_mut().map(|m| m.as_mut_slice()).collect();
        prune::magnitude_masks(&parts, keep, &mut refs).map(|_| ())
    })?;
    Ok(masks.into_iter().map(|m| PyArray1::from_vec(py, m)).collect())
}

/// The values whose mask bit is set, in flat order.
#[pyfunction]
fn prune_compress<'py>(
    py: Python<'py>,
    values: PyReadonlyArrayDyn<'py, f32>,
    mask: PyReadonlyArrayDyn<'py, u8>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let (v, m) = (slice(&values, "values")?, slice(&mask, "mask")?);
    let kept = prune::count_kept(m, v.len()).map_err(to_py)?;
    filled(py, kept, |o| run(py, || prune::compress_into(v, m, o)))
}

/// The dense array of `n` elements: `packed` at the set mask bits, zeros elsewhere.
#[pyfunction]
fn prune_expand<'py>(
    py: Python<'py>,
    packed: PyReadonlyArrayDyn<'py, f32>,
    mask: PyReadonlyArrayDyn<'py, u8>,
    n: usize,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let (p, m) = (slice(&packed, "values")?, slice(&mask, "mask")?);
    prune::count_kept(m, n).map_err(to_py)?;
    filled(py, n, |o| run(py, || prune::expand_into(p, m, o)))
}

/// Kept values and packed positions.
type ValuesAndPositions<'py> = (Bound<'py, PyArray1<f32>>, Bound<'py, PyArray1<u8>>);

/// N:M selection by `|scores|`: `(kept values, packed positions)`.
#[pyfunction]
fn prune_nm<'py>(
    py: Python<'py>,
    scores: PyReadonlyArrayDyn<'py, f32>,
    values: PyReadonlyArrayDyn<'py, f32>,
    n: usize,
    m: usize,
) -> PyResult<ValuesAndPositions<'py>> {
    let (s, v) = (slice(&scores, "scores")?, slice(&values, "values")?);
    if !(2..=16).contains(&m) || n == 0 || n >= m || s.len() % m != 0 {
        return Err(to_py(invalid!("N:M needs 1 <= N < M <= 16 and whole groups, got {n}:{m} on {} elements", s.len())));
    }
    let groups = s.len() / m;
    let mut pos = vec![0u8; prune::nm_positions_len(groups, n, m)];
    let out = filled(py, groups * n, |o| run(py, || prune::nm_into(s, v, n, m, o, &mut pos)))?;
    Ok((out, PyArray1::from_vec(py, pos)))
}

/// Dense array of `total` elements from N:M values and packed positions.
#[pyfunction]
fn prune_nm_expand<'py>(
    py: Python<'py>,
    values: PyReadonlyArrayDyn<'py, f32>,
    positions: PyReadonlyArrayDyn<'py, u8>,
    n: usize,
    m: usize,
    total: usize,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let (v, p) = (slice(&values, "values")?, slice(&positions, "positions")?);
    if !(2..=16).contains(&m) || n == 0 || n >= m || !total.is_multiple_of(m) || v.len() != total / m * n {
        return Err(to_py(invalid!("N:M values ({}) do not match {total} elements at {n}:{m}", v.len())));
    }
    filled(py, total, |o| run(py, || prune::nm_expand_into(v, p, n, m, o)))
}

/// The `p`-norm (1 or 2, `f64`) of every row (`rows`) or column of the row-major `x` (rows of `cols`).
#[pyfunction]
fn prune_norms<'py>(
    py: Python<'py>,
    x: PyReadonlyArrayDyn<'py, f32>,
    cols: usize,
    p: usize,
    rows: bool,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let xs = slice(&x, "x")?;
    let norm = prune::Norm::from_order(p).map_err(to_py)?;
    if cols == 0 || xs.len() % cols != 0 {
        return Err(to_py(crate::Error::Shape(format!("{} values do not make rows of {cols}", xs.len()))));
    }
    if rows {
        filled(py, xs.len() / cols, |o| run(py, || prune::row_norms(xs, cols, norm, o)))
    } else {
        filled(py, cols, |o| run(py, || prune::col_norms(xs, cols, norm, o)))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(prune_magnitude_masks, m)?)?;
    m.add_function(wrap_pyfunction!(prune_compress, m)?)?;
    m.add_function(wrap_pyfunction!(prune_expand, m)?)?;
    m.add_function(wrap_pyfunction!(prune_nm, m)?)?;
    m.add_function(wrap_pyfunction!(prune_nm_expand, m)?)?;
    m.add_function(wrap_pyfunction!(prune_norms, m)?)?;
    Ok(())
}
