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

/// What the Lloyd iterations of one fit on one `x` carry over (`vq::kmeans::Accel`: a filtering
/// tree or distance bounds, chosen from the shape): the iterations give the same result, faster.
#[pyclass(module = "quantpress._core")]
#[derive(Default)]
struct LloydState {
    accel: kmeans::Accel,
}

#[pymethods]
impl LloydState {
    #[new]
    fn new() -> Self {
        LloydState::default()
    }
}

/// One Lloyd iteration: `(centroids, codes, inertia, cluster_weight, reseeded, shift)`.
#[pyfunction]
#[pyo3(signature = (x, d, centroids, metric, weights=None, state=None))]
#[allow(clippy::too_many_arguments)]
fn lloyd_iteration<'py>(
    py: Python<'py>,
    x: PyReadonlyArrayDyn<'py, f32>,
    d: usize,
    centroids: PyReadonlyArrayDyn<'py, f32>,
    metric: &str,
    weights: Option<PyReadonlyArrayDyn<'py, f32>>,
    state: Option<PyRefMut<'py, LloydState>>,
) -> PyResult<IterationParts<'py>> {
    let metric = Metric::from_name(metric).map_err(to_py)?;
    let (src, c) = (slice(&x, "x")?, slice(&centroids, "centroids")?);
    let w = weights.as_ref().map(|w| slice(w, "sample_weight")).transpose()?;
    let mut state = state;
    let accel = state.as_mut().map(|s| &mut s.accel);
    let it = run(py, || match accel {
        Some(a) => kmeans::lloyd_iteration_accel(src, d, w, c, metric, a),
        None => kmeans::lloyd_iteration(src, d, w, c, metric),
    })?;
    Ok((it.centroids.into_pyarray(py), it.codes.into_pyarray(py), it.inertia, it.cluster_weight.into_pyarray(py), it.reseeded, it.shift))
}

/// Rows per float64 accumulation chunk of a Lloyd iteration over `n` points.
#[pyfunction]
fn kmeans_chunk_rows(n: usize, k: usize, d: usize) -> usize {
    kmeans::chunk_rows(n, k, d)
}

type PartialParts<'py> = (
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<u64>>,
    (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<u64>>, Bound<'py, PyArray1<u32>>, Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f32>>),
    Bound<'py, PyArray1<u32>>,
);

/// One shard's part of a Lloyd iteration: `(coords, weight, inertia, members, far, codes)`, the
/// first three per chunk of `rows` points; `far` = `(cost, index, code, weight, points)`.
#[pyfunction]
#[pyo3(signature = (x, d, centroids, metric, rows, weights=None, state=None))]
#[allow(clippy::too_many_arguments)]
fn lloyd_partial<'py>(
    py: Python<'py>,
    x: PyReadonlyArrayDyn<'py, f32>,
    d: usize,
    centroids: PyReadonlyArrayDyn<'py, f32>,
    metric: &str,
    rows: usize,
    weights: Option<PyReadonlyArrayDyn<'py, f32>>,
    state: Option<PyRefMut<'py, LloydState>>,
) -> PyResult<PartialParts<'py>> {
    let metric = Metric::from_name(metric).map_err(to_py)?;
    let (src, c) = (slice(&x, "x")?, slice(&centroids, "centroids")?);
    let w = weights.as_ref().map(|w| slice(w, "sample_weight")).transpose()?;
    let mut state = state;
    let accel = state.as_mut().map(|s| &mut s.accel);
    let p = run(py, || kmeans::lloyd_partial(src, d, w, c, metric, rows, accel))?;
    let far = (
        p.far.iter().map(|f| f.cost).collect::<Vec<_>>().into_pyarray(py),
        p.far.iter().map(|f| f.index as u64).collect::<Vec<_>>().into_pyarray(py),
        p.far.iter().map(|f| f.code).collect::<Vec<_>>().into_pyarray(py),
        p.far.iter().map(|f| f.weight).collect::<Vec<_>>().into_pyarray(py),
        p.far.iter().flat_map(|f| f.point.iter().copied()).collect::<Vec<_>>().into_pyarray(py),
    );
    Ok((
        p.coords.into_pyarray(py),
        p.weight.into_pyarray(py),
        p.inertia.into_pyarray(py),
        p.members.into_pyarray(py),
        far,
        p.codes.into_pyarray(py),
    ))
}

/// `(centroids, cluster weights, re-seeded, shift)`.
type FinishParts<'py> = (Bound<'py, PyArray1<f32>>, Bound<'py, PyArray1<f64>>, usize, f64);

/// The end of a sharded Lloyd iteration: `(centroids, cluster_weight, reseeded, shift)` from the
/// summed `coords`/`weight`/`members` and the re-seeding candidates (best first).
#[pyfunction]
#[pyo3(signature = (centroids, d, metric, coords, weight, members, far_code, far_weight, far_points))]
#[allow(clippy::too_many_arguments)]
fn lloyd_finish<'py>(
    py: Python<'py>,
    centroids: PyReadonlyArrayDyn<'py, f32>,
    d: usize,
    metric: &str,
    coords: PyReadonlyArrayDyn<'py, f64>,
    weight: PyReadonlyArrayDyn<'py, f64>,
    members: PyReadonlyArrayDyn<'py, u64>,
    far_code: PyReadonlyArrayDyn<'py, u32>,
    far_weight: PyReadonlyArrayDyn<'py, f64>,
    far_points: PyReadonlyArrayDyn<'py, f32>,
) -> PyResult<FinishParts<'py>> {
    let metric = Metric::from_name(metric).map_err(to_py)?;
    let c = slice(&centroids, "centroids")?;
    let (fc, fw, fp) = (slice(&far_code, "far_code")?, slice(&far_weight, "far_weight")?, slice(&far_points, "far_points")?);
    if fw.len() != fc.len() || fp.len() != fc.len() * d.max(1) {
        return Err(to_py(crate::error::Error::Shape("re-seeding candidate arrays differ in length".into())));
    }
    let far: Vec<kmeans::Far> = (0..fc.len())
        .map(|i| kmeans::Far { cost: 0.0, index: i, code: fc[i], weight: fw[i], point: fp[i * d..(i + 1) * d].to_vec() })
        .collect();
    let (co, we, me) = (slice(&coords, "coords")?.to_vec(), slice(&weight, "weight")?.to_vec(), slice(&members, "members")?.to_vec());
    let f = run(py, || kmeans::lloyd_finish_raw(c, d, metric, co, we, &me, &far))?;
    Ok((f.centroids.into_pyarray(py), f.cluster_weight.into_pyarray(py), f.reseeded, f.shift))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(kmeans_plusplus, m)?)?;
    m.add_class::<LloydState>()?;
    m.add_function(wrap_pyfunction!(lloyd_iteration, m)?)?;
    m.add_function(wrap_pyfunction!(kmeans_chunk_rows, m)?)?;
    m.add_function(wrap_pyfunction!(lloyd_partial, m)?)?;
    m.add_function(wrap_pyfunction!(lloyd_finish, m)?)?;
    Ok(())
}
