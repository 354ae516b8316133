//! NumPy array helpers: contiguous views in, new (uninitialised, then filled) arrays out.

use numpy::{Element, PyArray1, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;

use super::errors::QuantpressError;

/// A C-contiguous view of `a`, or a `QuantpressError` naming the argument.
pub fn slice<'a, T: Element>(a: &'a PyReadonlyArrayDyn<'_, T>, what: &str) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| {
        QuantpressError::new_err(format!("{what} must be a C-contiguous array (got strides {:?})", a.strides()))
    })
}

/// A new 1-D array of `n` elements whose contents the caller must fully overwrite.
pub fn uninit<T: Element>(py: Python<'_>, n: usize) -> Bound<'_, PyArray1<T>> {
    // SAFETY: every caller writes all `n` elements (through `as_slice_mut`) before the array is
    // returned to Python; on an error the array is dropped without being read.
    unsafe { PyArray1::<T>::new(py, n, false) }
}

/// The mutable contents of an array made by [`uninit`].
pub fn contents<'a, T: Element>(a: &'a Bound<'_, PyArray1<T>>) -> &'a mut [T] {
    // SAFETY: the array was just created by `uninit`, is contiguous, and no other reference to
    // its data exists until it is returned to Python.
    unsafe { a.as_slice_mut().expect("a new 1-D array is contiguous") }
}
