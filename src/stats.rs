//! Counters: what the map reports through [`SnapMap::stats`](crate::SnapMap::stats).
//!
//! # Keeping counters off the read path
//!
//! A read hit must not write shared memory, so it writes no counter at all:
//! a [`Pinned`](crate::Pinned) handle counts its hits in a plain field of
//! its own and adds them to the map once, when it is dropped.
//!
//! Counts that change on writes are kept in two places:
//!
//! - **Per-thread stripes** ([`Stripes`]): the length and the flushed hit
//!   counts. Each thread adds to its own cache-padded stripe; `stats()` and
//!   `len()` sum them. Up to `stripes` threads never share a line.
//! - **Per-shard counters** ([`ShardCounters`]): slow-path lookups,
//!   promotions, rebuilds and expunges. They change only under the shard
//!   lock, so a plain load-and-store suffices, and they live on the lock's
//!   cache line, which the writer already owns.
//!
//! All counters are statistics: they order nothing, use `Relaxed`, and are
//! exact only when the map is quiescent.

use crate::sync::CachePadded;
use crate::sync::stat_atomic::{AtomicIsize, AtomicU64, Ordering};

/// A counter written only by the holder of one shard lock.
#[derive(Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. The caller holds the lock that guards this counter.
    #[inline]
    pub(crate) fn add_locked(&self, n: u64) {
        // Relaxed: one writer at a time (the lock holder); readers of
        // statistics need no ordering. A load and a store, not an RMW.
        let current = self.0.load(Ordering::Relaxed);
        // Relaxed: as above.
        self.0.store(current + n, Ordering::Relaxed);
    }

    /// The current value.
    pub(crate) fn get(&self) -> u64 {
        // Relaxed: a statistic.
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters one shard keeps under its lock.
#[derive(Default)]
pub(crate) struct ShardCounters {
    /// Lookups that took the lock and looked in dirty (Go's `misses`).
    pub(crate) slow_lookups: Counter,
    /// Dirty tables promoted to read views (by misses or by iteration).
    pub(crate) promotions: Counter,
    /// Dirty tables rebuilt from a read view (Go's `dirtyLocked`).
    pub(crate) rebuilds: Counter,
    /// Entries copied by those rebuilds.
    pub(crate) entries_copied: Counter,
    /// Deleted entries expunged by those rebuilds.
    pub(crate) expunges: Counter,
}

/// One thread's share of the map-wide counters.
#[derive(Default)]
pub(crate) struct Stripe {
    /// This stripe's share of the length (may be negative).
    pub(crate) len: AtomicIsize,
    /// Read-view hits flushed by pinned handles.
    pub(crate) read_hits: AtomicU64,
}

/// Cache-padded stripes, one per thread (modulo their number).
pub(crate) struct Stripes {
    stripes: Box<[CachePadded<Stripe>]>,
}

impl Stripes {
    /// Enough stripes for the machine's threads (a power of two).
    pub(crate) fn new() -> Self {
        let threads = if cfg!(snapmap_loom) {
            2
        } else {
            std::thread::available_parallelism().map_or(4, |n| n.get())
        };
        let count = (threads * 2).next_power_of_two().clamp(2, 128);
        Stripes {
            stripes: (0..count).map(|_| CachePadded::new(Stripe::default())).collect(),
        }
    }

    /// The calling thread's stripe.
    #[inline]
    pub(crate) fn mine(&self) -> &Stripe {
        let index = crate::sync::thread_index() & (self.stripes.len() - 1);
        &self.stripes[index]
    }

    /// The summed length (clamped at zero: stripes may be read mid-update).
    pub(crate) fn len(&self) -> usize {
        // Relaxed: a statistic, exact when quiescent.
        let sum: isize = self.stripes.iter().map(|s| s.len.load(Ordering::Relaxed)).sum();
        sum.max(0) as usize
    }

    /// The summed flushed read hits.
    pub(crate) fn read_hits(&self) -> u64 {
        // Relaxed: a statistic.
        self.stripes.iter().map(|s| s.read_hits.load(Ordering::Relaxed)).sum()
    }
}

impl Stripe {
    /// Adds hits counted locally by a pinned handle.
    #[inline]
    pub(crate) fn add_read_hits(&self, n: u64) {
        // Relaxed: a statistic.
        self.read_hits.fetch_add(n, Ordering::Relaxed);
    }
}

/// What the map has done, for tuning and for tests that prove a protocol
/// step happened. Returned by [`SnapMap::stats`](crate::SnapMap::stats).
///
/// Counters are cumulative since the map was built and exact when the map
/// is quiescent (no operation in flight and every [`Pinned`](crate::Pinned)
/// handle dropped: handles flush their read-hit counts when dropped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Number of entries (the same as [`SnapMap::len`](crate::SnapMap::len)).
    pub len: usize,
    /// Number of shards.
    pub shards: usize,
    /// `get`/`contains_key` calls answered by a read view without a lock.
    pub read_hits: u64,
    /// Lookups that took a shard lock and looked in its dirty table (Go's
    /// `misses`, summed over shards and over every operation).
    pub slow_path_lookups: u64,
    /// Dirty tables promoted to read views.
    pub promotions: u64,
    /// Dirty tables rebuilt by copying a read view (Go's `dirtyLocked`).
    pub dirty_rebuilds: u64,
    /// Entries copied by those rebuilds (the rebuild cost).
    pub entries_copied: u64,
    /// Deleted entries expunged by those rebuilds.
    pub expunges: u64,
}

impl core::fmt::Display for Stats {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "len {} | shards {} | read hits {} | slow-path lookups {} | promotions {} | \
             dirty rebuilds {} (entries copied {}) | expunges {}",
            self.len,
            self.shards,
            self.read_hits,
            self.slow_path_lookups,
            self.promotions,
            self.dirty_rebuilds,
            self.entries_copied,
            self.expunges
        )
    }
}
