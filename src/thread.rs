//! Numbering threads and objects: how many hardware threads there are,
//! which stripe the calling thread writes, and process-unique ids.
//!
//! None of these is part of a protocol. The CPU count and the thread index
//! only spread writers over the striped counters and the write gate's
//! stripes; a unique id only has to differ from every other (gate and shard
//! identities). So they use std's primitives in every build
//! (`crate::sync::unmodelled`): under loom they stay invisible, and loom's
//! state space is spent on the protocols.

use crate::sync::unmodelled::{AtomicU64, AtomicUsize, OnceLock, Ordering};

/// The number of hardware threads, asked once per process (asking reads
/// cgroup files and allocates; maps are built often in some programs).
pub(crate) fn cpu_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| std::thread::available_parallelism().map_or(4, |n| n.get()))
}

/// A number no earlier call returned (shard identities for snapshot reuse,
/// gate identities for the threads' nesting records). Uniqueness is all
/// that matters, so it uses std's atomics in every build.
pub(crate) fn next_unique_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // Relaxed: only uniqueness of the number matters, not ordering.
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The stats stripe that the current thread writes.
///
/// Threads are numbered round-robin the first time they ask; a map with `n`
/// stripes gives thread `i` stripe `i % n`, so up to `n` threads never share
/// a stripe. This is a hint for spreading writes, not part of any protocol,
/// so it uses std's atomics and std's thread-local in every build.
#[inline]
pub(crate) fn thread_index() -> usize {
    use std::cell::Cell;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    std::thread_local! {
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
