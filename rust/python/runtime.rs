//! Runtime settings: SIMD level and thread count.

use pyo3::prelude::*;

use super::errors::to_py;
use crate::{parallel, simd};

/// The SIMD level kernels run at now ('avx2', 'neon' or 'scalar').
#[pyfunction]
fn simd_level() -> &'static str {
    simd::level().name()
}

/// The best SIMD level this CPU supports.
#[pyfunction]
fn detected_simd_level() -> &'static str {
    simd::detected_level().name()
}

/// Forces a SIMD level (tests, debugging); refuses one the CPU lacks.
#[pyfunction]
fn _set_simd_level(name: &str) -> PyResult<()> {
    simd::force_level(simd::Level::from_name(name).map_err(to_py)?).map_err(to_py)
}

#[pyfunction]
fn set_num_threads(n: i64) -> PyResult<()> {
    let n = usize::try_from(n).unwrap_or(0);
    parallel::set_num_threads(n).map_err(to_py)
}

#[pyfunction]
fn get_num_threads() -> usize {
    parallel::num_threads()
}

#[pyfunction]
fn _reset_after_fork() {
    parallel::reset_after_fork()
}

/// Panics inside the core (with the GIL released): proves a panic reaches Python as a
/// `QuantpressError`, never as a crash. For tests only.
#[pyfunction]
fn _panic_for_tests(py: Python<'_>) -> PyResult<()> {
    super::errors::run(py, || -> crate::Result<()> { panic!("deliberate test panic") })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(detected_simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(_set_simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(_reset_after_fork, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    Ok(())
}
