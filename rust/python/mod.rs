//! PyO3 bindings: the only place that names PyO3. Each function extracts its arguments, runs the
//! core with the GIL released (`errors::run`), and converts the result.

use pyo3::prelude::*;

mod adc;
mod arrays;
mod errors;
mod kmeans;
mod kmeans1d;
mod prune;
mod runtime;
mod scalar;
mod stats;
mod vq;

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("QuantpressError", m.py().get_type::<errors::QuantpressError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    runtime::register(m)?;
    scalar::register(m)?;
    kmeans::register(m)?;
    vq::register(m)?;
    kmeans1d::register(m)?;
    adc::register(m)?;
    prune::register(m)?;
    stats::register(m)?;
    Ok(())
}
