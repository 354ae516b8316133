//! Bindings for k-means: k-means++ seeding and one Lloyd iteration (the loop is in Python).

use numpy::{IntoPyArray, PyArray1, PyReadonlyArrayDyn};
use pyo3::prelude::*;

use super::arrays::slice;
use super::errors::{run, to_py};
use crate::vq::{kmeans, kmeans_init, Metric};

/// `k * d` initial centres chosen among the rows of `x` (`n * d` values) by greedy k-means++.
#[pyfunction]
#[pyo3(signature = (x, d, k, seed, weights=None, trials=None))]
fn kmeans_plusplus<'py>(
    py: Python<'py>,
    x: PyReadonlyArrayDyn<'py, f32>,
    d: usize,
    k: usize,
    seed: u64,
    weights: Option<PyReadonlyArrayDyn<'py, f32>>,
    trials: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let src = slice(&x, "x")?;
    let w = weights.as_ref().map(|w| slice(w, "sample_weight")).transpose()?;
    Ok(run(py, || kmeans_init::kmeans_plusplus(src, d, w, k, seed, trials))?.into_pyarray(py))
}

type IterationParts<'py> = (Bound<'py, PyArray1<f32>>, Bound<'py, PyArray1<u32>>, f64, Bound<'py, PyArray1<f64>>, usize, f64);

/// One Lloyd iteration: `(centroids, codes, inertia, cluster_weight, reseeded, shift)`.
#[pyfunction]
#[pyo3(signature = (x, d, centroids, metric, weights=None))]
fn lloyd_iteration<'py>(
    py: Python<'py>,
    x: PyReadonlyArrayDyn<'py, f32>,
    d: usize,
    centroids: PyReadonlyArrayDyn<'py, f32>,
    metric: &str,
    weights: Option<PyReadonlyArrayDyn<'py, f32>>,
) -> PyResult<IterationParts<'py>> {
    let metric = Metric::from_name(metric).map_err(to_py)?;
    let (src, c) = (slice(&x, "x")?, slice(&centroids, "centroids")?);
    let w = weights.as_ref().map(|w| slice(w, "sample_weight")).transpose()?;
    let it = run(py, || kmeans::lloyd_iteration(src, d, w, c, metric))?;
    Ok((it.centroids.into_pyarray(py), it.codes.into_pyarray(py), it.inertia, it.cluster_weight.into_pyarray(py), it.reseeded, it.shift))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(kmeans_plusplus, m)?)?;
    m.add_function(wrap_pyfunction!(lloyd_iteration, m)?)?;
    Ok(())
}
