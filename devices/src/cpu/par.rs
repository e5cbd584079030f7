//! How the cpu kernels split work: an output buffer is cut into chunks (a row, a group, a tile of
//! output channels), each chunk is computed whole by one call, on the calling thread when the
//! case is small (handing a few microseconds of work to the rayon pool costs more than it saves)
//! and across the pool otherwise. Either way every chunk goes through the same code in the same
//! order, so the bits never depend on the thread count.

use rayon::prelude::*;

/// Elements of work below which a case stays on the calling thread, and the least work per task.
const MIN_TASK_WORK: usize = 16 * 1024;

/// Cut `out` into chunks of `chunk` elements (the last may be shorter) and run
/// `f(scratch, index, chunk)` on each, collecting its results in chunk order. `work_each` is a
/// rough cost of one chunk (elements touched); `init` makes per-task scratch.
pub(crate) fn for_chunks<T, S, R>(
    out: &mut [T],
    chunk: usize,
    work_each: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut [T]) -> R + Sync + Send,
) -> Vec<R>
where
    T: Send,
    R: Send,
{
    if chunk == 0 || out.is_empty() {
        return Vec::new();
    }
    let chunks = out.len().div_ceil(chunk);
    let work_each = work_each.max(1);
    if chunks < 2 || chunks.saturating_mul(work_each) < 2 * MIN_TASK_WORK || rayon::current_num_threads() < 2 {
        let mut scratch = init();
        return out.chunks_mut(chunk).enumerate().map(|(i, c)| f(&mut scratch, i, c)).collect();
    }
    let per_task = (MIN_TASK_WORK / work_each).max(1);
    out.par_chunks_mut(chunk).with_min_len(per_task).enumerate().map_init(init, |s, (i, c)| f(s, i, c)).collect()
}

/// Run `f(scratch, i)` for every task `i in 0..count` and collect the results in task order, on
/// the calling thread when the work is small and across the pool otherwise (as [`for_chunks`]).
/// For tasks whose outputs are not one contiguous slice of a buffer (a tile of output columns
/// for every token): each result is computed whole by one call, so the bits never depend on the
/// thread count.
pub(crate) fn map_tasks<S, R>(
    count: usize,
    work_each: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize) -> R + Sync + Send,
) -> Vec<R>
where
    R: Send,
{
    let work_each = work_each.max(1);
    if count < 2 || count.saturating_mul(work_each) < 2 * MIN_TASK_WORK || rayon::current_num_threads() < 2 {
        let mut scratch = init();
        return (0..count).map(|i| f(&mut scratch, i)).collect();
    }
    let per_task = (MIN_TASK_WORK / work_each).max(1);
    (0..count).into_par_iter().with_min_len(per_task).map_init(init, f).collect()
}
