//! A counting global allocator, shared by snapmap's allocation tests
//! (`tests/alloc.rs`, `tests/memory.rs`) and its memory benchmarks
//! (`benches/growth.rs`).
//!
//! [`CountingAlloc`] forwards every call to [`System`] unchanged and counts
//! two things:
//!
//! - **Per thread, always:** the calling thread's allocations (`alloc`,
//!   `alloc_zeroed` and `realloc` each count one), in a const-initialised
//!   thread-local that never allocates. Tests that run in parallel in one
//!   binary, and the test harness's own threads, do not disturb each other's
//!   counts: [`allocations_in`], [`thread_allocations`].
//! - **Process-wide, only while counting is on:** allocations, bytes
//!   allocated and bytes freed, on every thread, in relaxed atomic
//!   counters ([`counting`], [`totals`], [`counted`]). While no
//!   [`Counting`] guard is alive an allocation costs one relaxed load more
//!   than `System`'s, and threads share no counter's cache line, so timed
//!   code outside a counting window is not slowed down. A `realloc` counts
//!   as freeing the old size and allocating the new one.
//!
//! Byte counts are requested sizes (`Layout::size`), not the allocator's
//! size classes.
//!
//! Why not a crate from crates.io: `stats_alloc` counts process-wide only
//! and always (a shared atomic per allocation on every thread), and `dhat`
//! records a backtrace per allocation; neither gives per-thread counts.
//!
//! # Example
//!
//! Install it in a test or bench binary (each binary has one global
//! allocator), then measure:
//!
//! ```
//! use snapmap_counting_alloc::{CountingAlloc, allocations_in, counted};
//!
//! #[global_allocator]
//! static ALLOCATOR: CountingAlloc = CountingAlloc;
//!
//! fn main() {
//!     // This thread's allocations while the closure runs.
//!     let (v, allocations) = allocations_in(|| vec![1u64, 2, 3]);
//!     assert_eq!(allocations, 1);
//!     let (sum, allocations) = allocations_in(|| v.iter().sum::<u64>());
//!     assert_eq!((sum, allocations), (6, 0));
//!
//!     // Every thread's allocations and bytes while the closure runs.
//!     let (kept, counts) = counted(|| {
//!         drop(vec![0u8; 100]);
//!         vec![0u8; 64]
//!     });
//!     assert_eq!(counts.allocs, 2);
//!     assert_eq!(counts.alloc_bytes, 164);
//!     assert_eq!(counts.live_delta(), 64); // what is still allocated
//!     drop(kept);
//! }
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ops::Sub;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// The counting global allocator: `#[global_allocator] static ALLOCATOR:
/// CountingAlloc = CountingAlloc;`. See the crate docs for what it counts.
#[derive(Clone, Copy, Debug, Default)]
pub struct CountingAlloc;

std::thread_local! {
    /// Allocations made by this thread.
    static THREAD_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// Live [`Counting`] guards; the process-wide counters move only while it
/// is above zero.
static COUNTING: AtomicUsize = AtomicUsize::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);
static FREED_BYTES: AtomicU64 = AtomicU64::new(0);

// All counters are Relaxed: they are statistics read after the measured
// code returned (or after its threads were joined); they order no memory.

#[inline]
fn on_alloc(size: usize) {
    // `try_with`: the slot may be gone while the thread is being torn down.
    let _ = THREAD_ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    if COUNTING.load(Relaxed) > 0 {
        ALLOCS.fetch_add(1, Relaxed);
        ALLOC_BYTES.fetch_add(size as u64, Relaxed);
    }
}

#[inline]
fn on_free(size: usize) {
    if COUNTING.load(Relaxed) > 0 {
        FREED_BYTES.fetch_add(size as u64, Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees are ours; counting touches only a
// thread-local `Cell` and atomics, and never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        // SAFETY: forwarded unchanged (the caller upholds `alloc`'s contract).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        on_free(layout.size());
        on_alloc(new_size);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_free(layout.size());
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

// ----- Per thread ----------------------------------------------------------------

/// Allocations made by the calling thread so far (0 unless
/// [`CountingAlloc`] is the global allocator).
pub fn thread_allocations() -> u64 {
    THREAD_ALLOCATIONS.with(Cell::get)
}

/// Runs `f` and returns its result with the allocations the calling thread
/// made meanwhile (allocations `f` caused on other threads are not seen).
pub fn allocations_in<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = thread_allocations();
    let result = f();
    (result, thread_allocations() - before)
}

// ----- Process-wide -------------------------------------------------------------

/// What every thread allocated and freed, counted while counting was on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Allocations (`alloc`, `alloc_zeroed`, `realloc`).
    pub allocs: u64,
    /// Bytes requested by those allocations.
    pub alloc_bytes: u64,
    /// Bytes freed (`dealloc`, and the old size of a `realloc`).
    pub freed_bytes: u64,
}

impl Counts {
    /// Bytes allocated minus bytes freed: how much the live heap grew.
    pub fn live_delta(&self) -> i64 {
        self.alloc_bytes as i64 - self.freed_bytes as i64
    }
}

impl Sub for Counts {
    type Output = Counts;

    /// What happened between two readings of [`totals`].
    fn sub(self, earlier: Counts) -> Counts {
        Counts {
            allocs: self.allocs - earlier.allocs,
            alloc_bytes: self.alloc_bytes - earlier.alloc_bytes,
            freed_bytes: self.freed_bytes - earlier.freed_bytes,
        }
    }
}

/// Keeps process-wide counting on while it lives (see [`counting`]).
#[derive(Debug)]
#[must_use = "counting stops when the guard is dropped"]
pub struct Counting(());

/// Turns process-wide counting on until the returned guard is dropped
/// (guards nest: counting stays on while any is alive). Differences of
/// [`totals`] taken while a guard lives are exact.
pub fn counting() -> Counting {
    COUNTING.fetch_add(1, Relaxed);
    Counting(())
}

impl Drop for Counting {
    fn drop(&mut self) {
        COUNTING.fetch_sub(1, Relaxed);
    }
}

/// The process-wide counters: everything counted while counting was on,
/// since the program started. Subtract two readings for a window.
pub fn totals() -> Counts {
    Counts {
        allocs: ALLOCS.load(Relaxed),
        alloc_bytes: ALLOC_BYTES.load(Relaxed),
        freed_bytes: FREED_BYTES.load(Relaxed),
    }
}

/// Runs `f` with process-wide counting on and returns its result with what
/// every thread allocated and freed meanwhile.
pub fn counted<R>(f: impl FnOnce() -> R) -> (R, Counts) {
    let on = counting();
    let before = totals();
    let result = f();
    let counts = totals() - before;
    drop(on);
    (result, counts)
}
