//! The one place that names synchronisation primitives.
//!
//! Every atomic, `Arc`, mutex and epoch operation in the crate is imported
//! from this module, so that the loom build (`--cfg snapmap_loom`) can swap
//! all of them at once for loom-visible versions. Nothing outside this file
//! may `use std::sync::atomic`, `parking_lot`, `crossbeam_epoch` or
//! `arc_swap` directly.
//!
//! # What is swapped
//!
//! | primitive | normal build | `--cfg snapmap_loom` |
//! |---|---|---|
//! | atomics | `std::sync::atomic` | `loom::sync::atomic` (added by the loom issue) |
//! | `Arc` | `std::sync::Arc` | `loom::sync::Arc` |
//! | `Mutex` | `parking_lot::Mutex` | a `lock()`-shaped wrapper over `loom::sync::Mutex` |
//! | epoch | `crossbeam_epoch` (global collector) | a stand-in that frees at the end of the execution |
//!
//! # The epoch surface
//!
//! The crate uses exactly three things from the epoch: [`epoch::pin`], the
//! [`epoch::Guard`] it returns (whose lifetime bounds every reference handed
//! to a user), and [`epoch::retire`], which frees a `Box` once every guard
//! that was pinned when it was retired has been dropped. Keeping the surface
//! this small is what makes a loom stand-in possible.

pub(crate) use std::sync::Arc;

/// Atomics: std's in normal builds.
pub(crate) mod atomic {
    pub(crate) use std::sync::atomic::{AtomicIsize, AtomicPtr, AtomicU64, Ordering};
}

/// The shard mutex.
///
/// `parking_lot::Mutex`: one word, no poisoning (a panic while the lock is
/// held unlocks it during unwinding; the shard protocol keeps its state
/// consistent at every point where user code can panic), and an inline
/// uncontended fast path.
pub(crate) type Mutex<T> = parking_lot::Mutex<T>;

/// Padding to a cache line (128 bytes on x86_64, where the adjacent-line
/// prefetcher pairs lines).
pub(crate) use crossbeam_utils::CachePadded;

/// Epoch-based reclamation: the only API the rest of the crate uses.
pub(crate) mod epoch {
    pub(crate) use crossbeam_epoch::{Guard, pin};

    /// Frees `ptr` (a `Box::into_raw` result) once no thread pinned now can
    /// still be reading it.
    ///
    /// # Safety
    ///
    /// - `ptr` came from `Box::<T>::into_raw` and is retired exactly once;
    /// - it has already been unlinked: no thread that pins after this call
    ///   can reach it;
    /// - `T` may be dropped on another thread at an arbitrary later time
    ///   (`T: Send + 'static` at every call site).
    #[inline]
    pub(crate) unsafe fn retire<T>(guard: &Guard, ptr: *mut T) {
        // SAFETY: the caller guarantees the pointer is unlinked, uniquely
        // owned by this retirement and droppable later on any thread;
        // `defer_unchecked` runs the closure after every guard pinned at
        // this point is gone, which is the reclamation contract we need.
        unsafe { guard.defer_unchecked(move || drop(Box::from_raw(ptr))) }
    }
}

/// The stats stripe that the current thread writes.
///
/// Threads are numbered round-robin the first time they ask; a map with `n`
/// stripes gives thread `i` stripe `i % n`, so up to `n` threads never share
/// a stripe. This is a hint for spreading writes, not part of any protocol,
/// so it uses std's atomics in every build.
#[inline]
pub(crate) fn thread_index() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    INDEX.with(|index| {
        let mut i = index.get();
        if i == usize::MAX {
            // Relaxed: only uniqueness of the number matters, not ordering.
            i = NEXT.fetch_add(1, Ordering::Relaxed);
            index.set(i);
        }
        i
    })
}
