//! The crate's thread pool.
//!
//! One rayon pool, sized by [`set_num_threads`], else `QUANTPRESS_NUM_THREADS`, else the number of
//! CPUs. Work is always cut into chunks whose size depends only on the input, never on the thread
//! count, and every chunk writes its own slice of the output, so results are identical on 1 or 64
//! threads. After `fork()` the child must call [`reset_after_fork`]: the parent's worker threads do
//! not exist there (the Python package registers this with `os.register_at_fork`).

use std::sync::{Arc, RwLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::{invalid, Result};

static POOL: RwLock<Option<Arc<ThreadPool>>> = RwLock::new(None);

fn default_threads() -> usize {
    std::env::var("QUANTPRESS_NUM_THREADS")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

fn build(n: usize) -> Result<Arc<ThreadPool>> {
    ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("quantpress-{i}"))
        .build()
        .map(Arc::new)
        .map_err(|e| invalid!("cannot start {n} threads: {e}"))
}

fn pool() -> Result<Arc<ThreadPool>> {
    if let Some(p) = POOL.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return Ok(p.clone());
    }
    let mut slot = POOL.write().unwrap_or_else(|e| e.into_inner());
    if slot.is_none() {
        *slot = Some(build(default_threads())?);
    }
    Ok(slot.as_ref().expect("just set").clone())
}

/// Sets the number of worker threads (1 to 1024) used by all later calls.
pub fn set_num_threads(n: usize) -> Result<()> {
    if n == 0 || n > 1024 {
        return Err(invalid!("number of threads must be between 1 and 1024, got {n}"));
    }
    let new = build(n)?;
    *POOL.write().unwrap_or_else(|e| e.into_inner()) = Some(new);
    Ok(())
}

/// The number of worker threads calls will use.
pub fn num_threads() -> usize {
    pool().map(|p| p.current_num_threads()).unwrap_or(1)
}

/// Forgets the pool inherited from the parent process; a new one is built on next use.
pub fn reset_after_fork() {
    let mut slot = POOL.write().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = slot.take() {
        // The pool's threads do not exist in the child: dropping it would wait on them forever.
        std::mem::forget(p);
    }
}

/// Runs `f` on a pool thread (on the calling thread with one thread), so that the parallel
/// calls it makes are forks within the pool, not wake-ups of it from outside: for loops of
/// many short parallel steps.
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> Result<R> {
    let pool = pool()?;
    if pool.current_num_threads() == 1 {
        return Ok(f());
    }
    Ok(pool.install(f))
}

/// Runs `f` on every job, stopping at the first error. With more than one job and more than
/// one thread the jobs run in the pool; otherwise they run in order on the calling thread,
/// whose caches hold the data the caller just touched (a pool thread may sit on another core).
/// Each job owns its slice of the output, so both ways give the same result.
pub fn try_for_each<T: Send>(jobs: Vec<T>, f: impl Fn(T) -> Result<()> + Sync + Send) -> Result<()> {
    if jobs.len() <= 1 {
        return jobs.into_iter().try_for_each(f);
    }
    let pool = pool()?;
    if pool.current_num_threads() == 1 {
        return jobs.into_iter().try_for_each(f);
    }
    use rayon::prelude::*;
    pool.install(|| jobs.into_par_iter().try_for_each(f))
}
