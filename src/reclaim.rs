//! Retiring memory: the crate's one way to free what readers may still see.
//!
//! Everything unlinked from the map (a replaced read view, value or
//! directory table, a removed key's entry, a shard replaced by a split or
//! merge) goes through [`retire`]. It wraps the epoch primitive of
//! `crate::sync` (free once every thread pinned now has unpinned) with the
//! crate's policy:
//!
//! - **Accounting.** The bytes are counted as retired
//!   (`crate::stats::count_retired`, read back by `retired_bytes()`) when
//!   retired, and uncounted by the closure that frees them.
//! - **Flushing by weight.** crossbeam collects garbage only when threads
//!   pin, not when they retire it; a writer that retires faster than that
//!   hands its garbage to the collector itself, every [`FLUSH_EVERY`] units
//!   of weight (see there for the measurements behind it).
//! - **The `FreeWithoutEpoch` twin.** In loom builds, the reclamation
//!   model's broken twin destroys at once instead (`crate::twins`).

use crate::stats::{RetiredKind, count_retired};
use crate::sync::epoch::{self, Guard};
use crate::twins::{Bug, injected};

/// Retired weight between two flushes of this thread's garbage: each
/// retirement weighs one, plus one per KiB it retires.
///
/// crossbeam collects garbage only when threads pin (one collection
/// every 128 pins, of at most 8 bags of 64 objects), not when they
/// retire it. A writer that replaces many values under one pin (a
/// configuration reload) retires faster than that, and retired memory
/// grew by megabytes per second in the `config_cache` example. Flushing
/// after every bag's worth of retirements hands the bag to the global
/// queue and runs a collection, so collection keeps pace with
/// retirement.
///
/// Weighing by size bounds the work of one collection, which frees up
/// to 8 bags at once on whichever thread runs it. With a plain count
/// of 64, a bag could hold 64 retired shards (two tables each), and
/// during rapid growth one insert that ran the collection spent up to
/// 2-5 ms freeing 8 such bags. By weight, a bag holds about 2 retired
/// shards, 5 retired views or 32 small values. 32 rather than 64: in
/// the RapidGrow mix (removes and updates retire many small values) the
/// largest per-insert work fell from about 1.3 ms to 0.3 ms
/// (`cargo bench -p snapmap-benches --bench growth -- growth`), while the update benchmark
/// (`cargo bench -p snapmap-benches --bench maps -- update_1M/snapmap/`) showed no
/// difference within its noise.
const FLUSH_EVERY: usize = 32;

// The weight retired since this thread's last flush. A std thread-local in
// every build: under loom it only decides when to call `epoch::flush`,
// which the loom builds make a no-op.
std::thread_local! {
    static SINCE_FLUSH: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
}

/// Frees `ptr` (a `Box::into_raw` result) once no thread pinned now can
/// still be reading it, counting `bytes` as retired until then.
///
/// # Safety
///
/// - `ptr` came from `Box::<T>::into_raw` and is retired exactly once;
/// - it has already been unlinked: no thread that pins after this call
///   can reach it.
#[inline]
pub(crate) unsafe fn retire<T: ?Sized + Send + 'static>(
    guard: &Guard,
    ptr: *mut T,
    kind: RetiredKind,
    bytes: usize,
) {
    // SAFETY: forwarded from our caller; `ptr` is a `Box::into_raw` result,
    // so `Box::from_raw` frees it, once (the epoch runs the closure once).
    unsafe { retire_with(guard, ptr, kind, bytes, |ptr| drop(Box::from_raw(ptr))) }
}

/// [`retire`] for a sized `T` whose block, once the epoch releases it, may
/// be kept in the freeing thread's cache of small blocks for its next
/// allocation of that size (`crate::pool`): value nodes and entries.
///
/// # Safety
///
/// As for [`retire`]; `ptr` may also come from `pool::boxed`.
#[inline]
pub(crate) unsafe fn retire_small<T: Send + 'static>(
    guard: &Guard,
    ptr: *mut T,
    kind: RetiredKind,
    bytes: usize,
) {
    // SAFETY: forwarded from our caller; `pool::free` takes a
    // `Box::into_raw` or `pool::boxed` pointer, freed once.
    unsafe { retire_with(guard, ptr, kind, bytes, |ptr| crate::pool::free(ptr)) }
}

/// What [`retire`] and [`retire_small`] share, and the way to retire what
/// is freed neither as a `Box` nor by the pool (a read view, through
/// `ReadView::free`): count, defer `free`, flush by weight. `free`
/// captures nothing (a zero-sized closure), so the
/// deferred closure stays three words for a sized `T`, which crossbeam
/// stores without allocating; a read view is a slice-tailed type whose
/// pointer is two words, so crossbeam boxes that closure (one small
/// allocation per retired view: once per promotion, never per write).
///
/// # Safety
///
/// As for [`retire`], and `free(ptr)` must be a sound way to drop and free
/// `ptr` once no thread can read it.
#[inline]
pub(crate) unsafe fn retire_with<T: ?Sized + Send + 'static>(
    guard: &Guard,
    ptr: *mut T,
    kind: RetiredKind,
    bytes: usize,
    free: impl FnOnce(*mut T) + Send + 'static,
) {
    // SAFETY: forwarded from our caller.
    let Some(bytes) = (unsafe { begin_retire(ptr, kind, bytes) }) else {
        return;
    };
    // SAFETY: the caller guarantees the pointer is unlinked and uniquely
    // owned by this retirement; `T: Send + 'static` lets it be dropped
    // later on any thread. `defer_unchecked` runs the closure after every
    // guard pinned at this point is gone.
    unsafe {
        epoch::defer_unchecked(guard, move || {
            free(ptr);
            count_retired(kind, -bytes);
        })
    }
    if weigh(bytes) {
        epoch::flush(guard);
    }
}

/// Adds one retirement of `bytes` to this thread's weight since its last
/// flush; returns whether it is time to flush (and then starts over).
#[inline]
fn weigh(bytes: isize) -> bool {
    let weight = 1 + bytes.unsigned_abs() / 1024;
    SINCE_FLUSH.with(|since| {
        let n = since.get() + weight;
        since.set(if n >= FLUSH_EVERY { 0 } else { n });
        n >= FLUSH_EVERY
    })
}

/// What every retirement does first: count the bytes as retired, or, in
/// the `FreeWithoutEpoch` twin, destroy at once. Returns the byte count to
/// subtract when freed, or `None` if already destroyed.
///
/// # Safety
///
/// As for [`retire`].
unsafe fn begin_retire<T: ?Sized>(ptr: *mut T, kind: RetiredKind, bytes: usize) -> Option<isize> {
    if injected(Bug::FreeWithoutEpoch) {
        // SAFETY: none; this is the deliberately broken twin of the
        // reclamation model. It runs the destructor at once but keeps the
        // memory, so the model reports a value destroyed under a reader
        // instead of crashing on freed memory.
        unsafe { core::ptr::drop_in_place(ptr) };
        return None;
    }
    count_retired(kind, bytes as isize);
    Some(bytes as isize)
}
