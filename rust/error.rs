//! The one error type of the crate. The Python bindings map every variant to
//! `quantpress.QuantpressError` in one place (`rust/python/errors.rs`).

/// Everything that can go wrong in the core. Messages name the offending value.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// An argument is out of its documented range or inconsistent with another.
    #[error("{0}")]
    InvalidArgument(String),
    /// A length or shape does not match what the operation needs.
    #[error("{0}")]
    Shape(String),
    /// The input holds NaN or infinity where finite values are required.
    #[error("input contains a non-finite value (NaN or infinity) at flat index {index}")]
    NonFinite { index: usize },
    /// A computed scale does not fit the requested storage dtype.
    #[error("{0}")]
    Overflow(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for an [`Error::InvalidArgument`] built from `format!` arguments.
macro_rules! invalid {
    ($($arg:tt)*) => { $crate::error::Error::InvalidArgument(format!($($arg)*)) };
}
pub(crate) use invalid;
