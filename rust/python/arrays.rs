//! NumPy array helpers: contiguous views in, new (uninitialised, then filled) arrays out.

use numpy::{Element, PyArray1, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;

use super::errors::QuantpressError;

/// A C-contiguous view of `a`, or a `QuantpressError` naming the argument.
pub fn slice<'a, T: Element>(a: &'a PyReadonlyArrayDyn<'_, T>, what: &str) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| QuantpressError::new_err(format!("{what} must be a C-contiguous array (got strides {:?})", a.strides())))
}

/// A new 1-D array of `n` elements, filled by `fill` (which must overwrite every element)
/// through rust-numpy's borrow-checked writeable view.
pub fn filled<'py, T: Element>(
    py: Python<'py>,
    n: usize,
    fill: impl FnOnce(&mut [T]) -> PyResult<()>,
) -> PyResult<Bound<'py, PyArray1<T>>> {
    // SAFETY: the array is uninitialised; `fill` overwrites all `n` elements before the array is
    // returned to Python, and on an error the array is dropped without being read.
    let array = unsafe { PyArray1::<T>::new(py, n, false) };
    {
        let mut view = array.readwrite();
        fill(view.as_slice_mut().expect("a new 1-D array is contiguous"))?;
    }
    Ok(array)
}
