//! The distances a codeword search can rank by.

use crate::error::{invalid, Result};

/// How "nearest" is measured. Ties always go to the lowest codeword index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Squared Euclidean distance, smallest wins. Ranked by `|c|^2 - 2 x.c` (the `|x|^2` term is
    /// the same for every codeword); the reported distance adds `|x|^2` back, clamped at 0.
    L2,
    /// Inner product, largest wins; the reported value is `x.c`.
    Ip,
    /// Cosine similarity, largest wins: inner product of the vectors scaled to unit length (a zero
    /// vector stays zero, so every codeword scores 0 and code 0 wins).
    Cosine,
    /// Sum of absolute differences, smallest wins.
    L1,
}

impl Metric {
    pub fn from_name(name: &str) -> Result<Metric> {
        match name.to_ascii_lowercase().as_str() {
            "l2" => Ok(Metric::L2),
            "ip" => Ok(Metric::Ip),
            "cosine" => Ok(Metric::Cosine),
            "l1" => Ok(Metric::L1),
            other => Err(invalid!("unknown metric {other:?}: expected 'l2', 'ip', 'cosine' or 'l1'")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::L2 => "l2",
            Metric::Ip => "ip",
            Metric::Cosine => "cosine",
            Metric::L1 => "l1",
        }
    }
}
