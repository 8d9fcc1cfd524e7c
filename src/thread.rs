//! Numbering threads and objects: how many hardware threads there are,
//! which stripe the calling thread writes, and process-unique ids.
//!
//! None of these is part of a protocol. The CPU count and the thread index
//! only spread writers over the striped counters and the write gate's
//! stripes; a unique id only has to differ from every other (gate and shard
//! identities). So they use std's primitives in every build
//! (`crate::sync::unmodelled`): under loom they stay invisible, and loom's
//! state space is spent on the protocols.

use crate::sync::unmodelled::{AtomicU64, AtomicUsize, Mutex, OnceLock, Ordering};

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
/// Threads are numbered the first time they ask; a map with `n` stripes
/// gives thread `i` stripe `i % n`, so up to `n` threads never share a
/// stripe. This is a hint for spreading writes, not part of any protocol,
/// so it uses std's atomics and std's thread-local in every build.
///
/// **Numbers are reused.** A thread that exits gives its number back, and
/// the next thread to ask takes the most recently freed one; only when
/// none is free does the count grow. So the numbers in use stay as dense
/// as the threads alive, and a thread that replaces another (a pool
/// restarting a worker, a benchmark spawning fresh threads per run) also
/// takes over the stripes that thread owned: a stripe's hit counter
/// belongs to a *number* (`Stripes::mine_for_hits`), and its owner adds to
/// it with a plain load and store. Without reuse every thread after the
/// first few shared the `fetch_add` counters for good, and a map-level
/// `get` paid a locked add each time: 13.2 against 16.7 ns per `get` at
/// 10K keys, 92 against 107 ns at 1M (`lookup_cost snapmap-per-op`, best
/// of three, two rounds).
///
/// Handing a number over is ordered by the free list's mutex: the exiting
/// thread's last counter store happens before its number is pushed, and
/// the push before the next owner's pop, so the new owner's first load
/// sees the old owner's last store and no hit is lost. A handle dropped
/// by another thread-local's destructor after the number went back would
/// write a counter it no longer owns (a statistic off by that handle's
/// hits, never memory unsafety); that thread then takes a fresh number.
#[inline]
pub(crate) fn thread_index() -> usize {
    let i = INDEX.with(Cell::get);
    if i != usize::MAX { i } else { assign_index() }
}

use std::cell::Cell;

/// The number by which the calling thread owns a stripe that only its
/// owner writes (the write gate's, `crate::gate`, "One writer per
/// stripe"): unique among the threads alive. [`thread_index`] in normal
/// builds; under loom, the model thread's own number
/// (`crate::sync::model_thread_number`), since loom's model threads share
/// this thread's thread-locals and so its index.
#[cfg(not(snapmap_loom))]
#[inline]
pub(crate) fn owner_index() -> usize {
    thread_index()
}

/// See the normal build's `owner_index`.
#[cfg(snapmap_loom)]
pub(crate) fn owner_index() -> usize {
    crate::sync::model_thread_number()
}

std::thread_local! {
    /// This thread's number, `usize::MAX` until it asks. No destructor, so
    /// reading it costs no registration check (see `gate.rs`, "Nesting
    /// record").
    static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    /// Gives the number back when the thread exits. Touched once, when the
    /// number is assigned (which registers its destructor).
    static RELEASE: Release = const { Release };
}

/// Numbers given back by exited threads.
static FREE: Mutex<Vec<usize>> = Mutex::new(Vec::new());
/// The next number never handed out.
static NEXT: AtomicUsize = AtomicUsize::new(0);

struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        // `try_with`: the number's cell has no destructor, so it is always
        // there; the check only keeps a future change from panicking here.
        let i = INDEX
            .try_with(|index| index.replace(usize::MAX))
            .unwrap_or(usize::MAX);
        if i != usize::MAX {
            free_list().push(i);
        }
    }
}

/// The free list, also after a panic while it was held (a `Vec` push or
/// pop leaves it whole).
fn free_list() -> std::sync::MutexGuard<'static, Vec<usize>> {
    FREE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cold]
#[inline(never)]
fn assign_index() -> usize {
    // Relaxed: only uniqueness of the number matters, not ordering (the
    // free list's mutex orders a reused number after its release).
    let i = free_list()
        .pop()
        .unwrap_or_else(|| NEXT.fetch_add(1, Ordering::Relaxed));
    INDEX.with(|index| index.set(i));
    // Registers the destructor that gives the number back. During the
    // thread's own teardown this fails, and the number is simply not
    // reused.
    let _ = RELEASE.try_with(|_| ());
    i
}

#[cfg(test)]
mod tests {
    use super::thread_index;

    /// Threads that run one after another reuse numbers: the count of
    /// distinct numbers is bounded by the threads alive at once (the test
    /// runner's other threads included), not by the threads ever started.
    /// Without reuse, 200 threads took 200 numbers.
    #[test]
    fn exited_threads_give_their_numbers_back() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let i = std::thread::spawn(thread_index).join().expect("no panic");
            seen.insert(i);
        }
        assert!(
            seen.len() < 100,
            "{} distinct numbers for 200 threads run one at a time",
            seen.len()
        );
    }

    #[test]
    fn a_thread_keeps_its_number() {
        let (a, b) = std::thread::spawn(|| (thread_index(), thread_index()))
            .join()
            .expect("no panic");
        assert_eq!(a, b);
    }

    /// Threads alive together never share a number.
    #[test]
    fn live_threads_have_distinct_numbers() {
        let barrier = std::sync::Barrier::new(8);
        let numbers: Vec<usize> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        let i = thread_index();
                        // Nobody exits before all have their number.
                        barrier.wait();
                        i
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("no panic"))
                .collect()
        });
        let distinct: std::collections::HashSet<_> = numbers.iter().collect();
        assert_eq!(distinct.len(), 8, "{numbers:?}");
    }
}
