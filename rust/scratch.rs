//! Per-thread scratch buffers, reused across calls: a fresh zeroed allocation per chunk of work
//! costs about a tenth of the chunk's own work in the streaming kernels that need one.

use std::cell::RefCell;
use std::thread::LocalKey;

/// Buffers above this many elements (per-tensor or per-channel groups of huge rows) are
/// allocated for the call alone rather than kept by every thread for good.
const KEEP: usize = 1 << 20;

/// Runs `f` on `n` elements of this thread's buffer `buf` (grown, never shrunk; contents are
/// whatever the last call left), or on a fresh buffer when `n` is above [`KEEP`].
pub(crate) fn with_scratch<T: Copy + Default, R>(buf: &'static LocalKey<RefCell<Vec<T>>>, n: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    if n > KEEP {
        return f(&mut vec![T::default(); n]);
    }
    buf.with(|b| {
        let mut v = b.take();
        if v.len() < n {
            v.resize(n, T::default());
        }
        let r = f(&mut v[..n]);
        b.replace(v);
        r
    })
}
