//! The one mapping point from core errors (and panics) to Python exceptions.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::error::Error;

pyo3::create_exception!(
    quantpress,
    QuantpressError,
    PyValueError,
    "Bad input or parameters for a quantpress operation (a subclass of ValueError)."
);

pub fn to_py(e: Error) -> PyErr {
    QuantpressError::new_err(e.to_string())
}

/// Runs `f` with the GIL released; a panic becomes a `QuantpressError`, never a crash.
pub fn run<T: Send>(py: Python<'_>, f: impl FnOnce() -> crate::Result<T> + Send) -> PyResult<T> {
    match py.detach(|| catch_unwind(AssertUnwindSafe(f))) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(to_py(e)),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(QuantpressError::new_err(format!("internal error in quantpress (please report): {msg}")))
        }
    }
}
