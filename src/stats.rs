//! Counters: what the map reports through [`SnapMap::stats`](crate::SnapMap::stats).
//!
//! # Keeping counters off the read path
//!
//! A read hit must not write shared memory, so it writes no counter at all:
//! a [`Pinned`](crate::Pinned) handle counts its hits in a plain field of
//! its own and adds them to the map once, when it is dropped.
//!
//! That add must not be a read-modify-write either, because a map-level
//! [`get`](crate::SnapMap::get) drops its handle after every lookup: a
//! locked add per `get` (beside the epoch pin's own barrier) cost about a
//! fifth of a 10K-key `get` (24–28 ns against 20–21 ns without it,
//! `lookup_cost snapmap-per-op`). So each stripe's read hits have an
//! **owner**: the first thread to use the stripe claims it (one CAS, once
//! per stripe), and adds its hits with a plain load and store to a counter
//! only it writes (no increment can be lost, and the line stays in its
//! core's cache). A thread whose stripe another thread owns (more threads
//! than stripes) adds with `fetch_add` to the stripe's shared counter, as
//! every other event does. Ownership belongs to a thread *number*, and an
//! exiting thread gives its number back (`crate::thread::thread_index`):
//! a thread that replaces another takes over its stripes, so a program
//! that starts threads often (a pool restarting workers, a benchmark
//! spawning fresh threads per run) does not end up with every thread on
//! the shared counters.
//!
//! Everything else is counted in **per-thread stripes** ([`Stripes`]): each
//! thread adds to its own cache-padded stripe and `stats()` sums them, so up
//! to `stripes` threads never share a counter line. Event counters are kept
//! per map, not per shard, because shards are replaced by splits and merges
//! and their counts would go with them.
//!
//! **Retired bytes** (memory unlinked and waiting for the epoch) are counted
//! process-wide ([`retired_bytes`]): the retirement and the free happen on
//! different threads, possibly after the map is gone, and the epoch
//! collector itself is shared by every map in the process.
//!
//! All counters are statistics: they order nothing, use `Relaxed`, are
//! std's atomics even under loom (see `sync::stat_atomic`), and are exact
//! only when the map is quiescent.

use crate::sync::CachePadded;
use crate::sync::stat_atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use crate::thread::{cpu_count, thread_index};

/// Events counted per stripe.
#[derive(Clone, Copy)]
pub(crate) enum Event {
    ReadHits,
    SlowLookups,
    Promotions,
    Rebuilds,
    EntriesCopied,
    Expunges,
    Splits,
    Merges,
    DirectoryResizes,
    SnapshotBuilds,
    SnapshotPiecesCopied,
    SnapshotPiecesReused,
    Compactions,
}

const EVENTS: usize = 13;

/// One thread's share of the map-wide counters.
#[derive(Default)]
pub(crate) struct Stripe {
    /// This stripe's share of the length (may be negative).
    pub(crate) len: AtomicIsize,
    events: [AtomicU64; EVENTS],
    /// The thread that owns `owned_hits`: its `thread_index() + 1`, or 0
    /// while no thread has claimed the stripe (module docs).
    owner: AtomicUsize,
    /// Read hits of the owner, written by the owner alone (a plain load
    /// and store), read by `stats()`.
    owned_hits: AtomicU64,
}

impl Stripe {
    /// Counts `n` occurrences of `event`.
    #[inline]
    pub(crate) fn count(&self, event: Event, n: u64) {
        // Relaxed: a statistic.
        self.events[event as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n` read hits of the calling thread; `owned` is what
    /// [`Stripes::mine_for_hits`] said about this stripe.
    #[inline]
    pub(crate) fn count_hits(&self, n: u64, owned: bool) {
        if owned {
            // Relaxed: a statistic. Only the owner writes this counter, so
            // the load and the store lose no increment (no read-modify-write,
            // no locked instruction).
            let hits = self.owned_hits.load(Ordering::Relaxed);
            self.owned_hits
                .store(hits.wrapping_add(n), Ordering::Relaxed);
        } else {
            self.count(Event::ReadHits, n);
        }
    }

    /// Whether the thread numbered `me` (its `thread_index() + 1`) owns
    /// this stripe's hit counter, claiming it if no thread has.
    #[inline]
    fn owned_by(&self, me: usize) -> bool {
        // Relaxed: ownership orders no data (the counter it guards is a
        // statistic); the CAS only makes the claim unique.
        match self.owner.load(Ordering::Relaxed) {
            owner if owner == me => true,
            0 => self
                .owner
                .compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok(),
            _ => false,
        }
    }

    /// Adds `delta` to the length.
    #[inline]
    pub(crate) fn adjust_len(&self, delta: isize) {
        // Relaxed: the length is a statistic, exact only when quiescent.
        self.len.fetch_add(delta, Ordering::Relaxed);
    }
}

/// Cache-padded stripes, one per thread (modulo their number).
pub(crate) struct Stripes {
    stripes: Box<[CachePadded<Stripe>]>,
    /// The most entries one operation has copied (rebuild, split, merge).
    max_copied: AtomicU64,
}

impl Stripes {
    /// Enough stripes for the machine's threads (a power of two).
    pub(crate) fn new() -> Self {
        let threads = if cfg!(snapmap_loom) { 2 } else { cpu_count() };
        let count = (threads * 2).next_power_of_two().clamp(2, 128);
        Stripes {
            stripes: (0..count)
                .map(|_| CachePadded::new(Stripe::default()))
                .collect(),
            max_copied: AtomicU64::new(0),
        }
    }

    /// The calling thread's stripe.
    #[inline]
    pub(crate) fn mine(&self) -> &Stripe {
        let index = thread_index() & (self.stripes.len() - 1);
        &self.stripes[index]
    }

    /// The calling thread's stripe, and whether the thread owns its hit
    /// counter (see [`Stripe::count_hits`]).
    #[inline]
    pub(crate) fn mine_for_hits(&self) -> (&Stripe, bool) {
        let me = thread_index();
        let stripe = &self.stripes[me & (self.stripes.len() - 1)];
        (stripe, stripe.owned_by(me + 1))
    }

    /// The summed length (clamped at zero: stripes may be read mid-update).
    pub(crate) fn len(&self) -> usize {
        // Relaxed: a statistic, exact when quiescent.
        let sum: isize = self
            .stripes
            .iter()
            .map(|s| s.len.load(Ordering::Relaxed))
            .sum();
        sum.max(0) as usize
    }

    /// The summed count of `event`.
    pub(crate) fn sum(&self, event: Event) -> u64 {
        // Relaxed: a statistic.
        self.stripes
            .iter()
            .map(|s| s.events[event as usize].load(Ordering::Relaxed))
            .sum()
    }

    /// The summed read hits: the owners' counters and the shared ones.
    pub(crate) fn read_hits(&self) -> u64 {
        // Relaxed: a statistic.
        let owned: u64 = self
            .stripes
            .iter()
            .map(|s| s.owned_hits.load(Ordering::Relaxed))
            .sum();
        owned + self.sum(Event::ReadHits)
    }

    /// Records that one operation copied `entries` entries.
    #[inline]
    pub(crate) fn record_copied(&self, entries: u64) {
        // Relaxed: a statistic; the load avoids a read-modify-write when the
        // record stands.
        if entries > self.max_copied.load(Ordering::Relaxed) {
            // Relaxed: as above.
            self.max_copied.fetch_max(entries, Ordering::Relaxed);
        }
    }

    /// The most entries one operation has copied.
    pub(crate) fn max_copied(&self) -> u64 {
        // Relaxed: a statistic.
        self.max_copied.load(Ordering::Relaxed)
    }
}

// ----- Retired bytes (process-wide) -------------------------------------

/// What kind of memory was retired.
#[derive(Clone, Copy)]
pub(crate) enum RetiredKind {
    View,
    Shard,
    Directory,
    Value,
    Entry,
}

const RETIRED_KINDS: usize = 5;
const RETIRED_STRIPES: usize = 16;

static RETIRED: [CachePadded<[AtomicIsize; RETIRED_KINDS]>; RETIRED_STRIPES] =
    [const { CachePadded::new([const { AtomicIsize::new(0) }; RETIRED_KINDS]) }; RETIRED_STRIPES];

/// Adds `bytes` (negative when freed) to the retired count of `kind`.
#[inline]
pub(crate) fn count_retired(kind: RetiredKind, bytes: isize) {
    let stripe = &RETIRED[thread_index() % RETIRED_STRIPES];
    // Relaxed: a statistic.
    stripe[kind as usize].fetch_add(bytes, Ordering::Relaxed);
}

/// Bytes unlinked from every `SnapMap` in the process and not yet freed by
/// the epoch collector (shallow sizes: a value's own heap data is not
/// counted). Returns to zero once no thread is pinned and the collector
/// has run.
///
/// ```
/// let map = snapmap::SnapMap::new();
/// map.insert(1, 1);
/// map.insert(1, 2); // the old value is retired
/// assert!(snapmap::retired_bytes().values >= 0);
/// ```
pub fn retired_bytes() -> RetiredBytes {
    let mut sums = [0isize; RETIRED_KINDS];
    for stripe in &RETIRED {
        for (sum, counter) in sums.iter_mut().zip(stripe.iter()) {
            // Relaxed: a statistic.
            *sum += counter.load(Ordering::Relaxed);
        }
    }
    let [views, shards, directories, values, entries] = sums.map(|s| s.max(0) as usize);
    RetiredBytes {
        views,
        shards,
        directories,
        values,
        entries,
    }
}

/// Retired-but-not-yet-freed memory, by kind (see [`retired_bytes`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetiredBytes {
    /// Replaced read views (the view struct and its table).
    pub views: usize,
    /// Shards replaced by splits and merges.
    pub shards: usize,
    /// Directory tables replaced by doubling or halving.
    pub directories: usize,
    /// Replaced or removed value nodes.
    pub values: usize,
    /// Entries (key, hash and value cell) of removed keys, once the last
    /// table that held them is replaced.
    pub entries: usize,
}

impl RetiredBytes {
    /// The sum over all kinds.
    ///
    /// ```
    /// let r = snapmap::retired_bytes();
    /// assert_eq!(
    ///     r.total(),
    ///     r.views + r.shards + r.directories + r.values + r.entries
    /// );
    /// ```
    pub fn total(&self) -> usize {
        self.views + self.shards + self.directories + self.values + self.entries
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
    /// Number of shards now.
    pub shards: usize,
    /// Directory slots now (`2^global_depth`).
    pub directory_slots: usize,
    /// The directory's global depth: shards are picked by this many top
    /// bits of the hash.
    pub global_depth: u32,
    /// `get`/`contains_key` calls answered by a read view without a lock.
    pub read_hits: u64,
    /// Lookups that took a shard lock and looked in its dirty table (Go's
    /// `misses`, summed over shards and over every operation).
    pub slow_path_lookups: u64,
    /// Dirty tables promoted to read views.
    pub promotions: u64,
    /// Dirty tables rebuilt by copying a read view (Go's `dirtyLocked`).
    pub dirty_rebuilds: u64,
    /// Entries copied by rebuilds, splits and merges.
    pub entries_copied: u64,
    /// Deleted entries expunged (by rebuilds, splits and merges).
    pub expunges: u64,
    /// Removed keys the shards' read views still hold now (Go's deleted
    /// and expunged entries): a removed key, with its entry, is freed only
    /// when the view that holds it is replaced. Each shard keeps at most
    /// about as many as it has live keys, plus 8 (see
    /// [`compactions`](Self::compactions)). Counted by walking every
    /// shard's view, so this is the one field that costs O(entries).
    pub removed_keys_held: usize,
    /// Shards rebuilt to drop removed keys: after a removal leaves a
    /// shard's view holding more removed keys than live ones (plus 8), the
    /// remover rebuilds and promotes the shard (one shard's copy, paid for
    /// by the removals since the last one).
    pub compactions: u64,
    /// Shards split in two.
    pub splits: u64,
    /// Pairs of shards merged into one.
    pub merges: u64,
    /// Directory doublings and halvings.
    pub directory_resizes: u64,
    /// The most entries any single operation has copied: the bound on the
    /// work one call can do (a rebuild and a split of one shard).
    pub max_entries_copied_by_one_operation: u64,
    /// Memory retired and not yet freed, process-wide (see
    /// [`retired_bytes`]).
    pub retired: RetiredBytes,
    /// Snapshots built (not counting cached ones returned again).
    pub snapshot_builds: u64,
    /// Shards copied into new snapshot pieces by those builds.
    pub snapshot_shards_copied: u64,
    /// Shards whose piece was reused from the previous snapshot.
    pub snapshot_shards_reused: u64,
    /// Bytes held by the pieces of live snapshots (freed when the last
    /// snapshot holding a piece is dropped).
    pub snapshot_bytes: usize,
}

impl core::fmt::Display for Stats {
    /// One line per concern, aligned (the figures a tuning session looks at
    /// first come first):
    ///
    /// ```
    /// let map = snapmap::SnapMap::<u64, u64>::builder().shards(1).build().unwrap();
    /// map.insert(1, 10);
    /// let text = map.stats().to_string();
    /// assert!(text.starts_with("entries        1 in 1 shards (directory 2^0 = 1 slots)\n"));
    /// assert_eq!(text.lines().count(), 8);
    /// println!("{text}");
    /// ```
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        writeln!(
            f,
            "entries        {} in {} shards (directory 2^{} = {} slots)",
            self.len, self.shards, self.global_depth, self.directory_slots
        )?;
        writeln!(
            f,
            "lookups        {} read hits, {} on the slow path (under a shard lock)",
            self.read_hits, self.slow_path_lookups
        )?;
        writeln!(
            f,
            "protocol       {} promotions, {} dirty rebuilds, {} expunges, {} compactions",
            self.promotions, self.dirty_rebuilds, self.expunges, self.compactions
        )?;
        writeln!(
            f,
            "migration      {} splits, {} merges, {} directory resizes",
            self.splits, self.merges, self.directory_resizes
        )?;
        writeln!(
            f,
            "copying        {} entries copied, at most {} by one operation",
            self.entries_copied, self.max_entries_copied_by_one_operation
        )?;
        writeln!(
            f,
            "removed keys   {} still held in read views",
            self.removed_keys_held
        )?;
        writeln!(
            f,
            "retired bytes  {} (views {}, shards {}, directories {}, values {}, entries {}; process-wide)",
            self.retired.total(),
            self.retired.views,
            self.retired.shards,
            self.retired.directories,
            self.retired.values,
            self.retired.entries
        )?;
        write!(
            f,
            "snapshots      {} built ({} shards copied, {} reused), holding {} bytes",
            self.snapshot_builds,
            self.snapshot_shards_copied,
            self.snapshot_shards_reused,
            self.snapshot_bytes
        )
    }
}

#[cfg(feature = "metrics")]
impl Stats {
    /// Publishes these figures through the [`metrics`](https://docs.rs/metrics)
    /// facade, to whatever recorder the program installed (a Prometheus or
    /// StatsD exporter, say), each named `{prefix}_{field}`:
    ///
    /// - **gauges** for the levels: `len`, `shards`, `directory_slots`,
    ///   `global_depth`, `removed_keys_held`, `snapshot_bytes`,
    ///   `max_entries_copied_by_one_operation`, and `retired_bytes` with a
    ///   `kind` label (`views`, `shards`, `directories`, `values`,
    ///   `entries`; process-wide, as [`retired_bytes`]);
    /// - **counters** (set to their absolute value: they only grow) for
    ///   the events: `read_hits`, `slow_path_lookups`, `promotions`,
    ///   `dirty_rebuilds`, `entries_copied`, `expunges`, `compactions`,
    ///   `splits`, `merges`, `directory_resizes`, `snapshot_builds`,
    ///   `snapshot_shards_copied`, `snapshot_shards_reused`.
    ///
    /// The facade keeps no history: call it periodically, from a
    /// background thread or task at the exporter's scrape interval (every
    /// 10-15 s is plenty). [`SnapMap::stats`](crate::SnapMap::stats) walks
    /// every shard's read view (O(entries)), so do not call it per request.
    /// Feature `metrics`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let map = Arc::new(snapmap::SnapMap::<String, String>::new());
    /// // Once, at start-up, beside installing the exporter:
    /// let publisher = {
    ///     let map = Arc::clone(&map);
    ///     std::thread::spawn(move || {
    ///         for _ in 0..3 { // in a server: `loop`
    ///             map.stats().publish("config_cache");
    ///             std::thread::sleep(Duration::from_millis(1)); // say, 15 s
    ///         }
    ///     })
    /// };
    /// publisher.join().unwrap();
    /// ```
    pub fn publish(&self, prefix: &str) {
        let gauge = |name: &str, value: f64| {
            metrics::gauge!(format!("{prefix}_{name}")).set(value);
        };
        gauge("len", self.len as f64);
        gauge("shards", self.shards as f64);
        gauge("directory_slots", self.directory_slots as f64);
        gauge("global_depth", f64::from(self.global_depth));
        gauge("removed_keys_held", self.removed_keys_held as f64);
        gauge("snapshot_bytes", self.snapshot_bytes as f64);
        gauge(
            "max_entries_copied_by_one_operation",
            self.max_entries_copied_by_one_operation as f64,
        );
        let retired = format!("{prefix}_retired_bytes");
        for (kind, bytes) in [
            ("views", self.retired.views),
            ("shards", self.retired.shards),
            ("directories", self.retired.directories),
            ("values", self.retired.values),
            ("entries", self.retired.entries),
        ] {
            metrics::gauge!(retired.clone(), "kind" => kind).set(bytes as f64);
        }
        for (name, value) in [
            ("read_hits", self.read_hits),
            ("slow_path_lookups", self.slow_path_lookups),
            ("promotions", self.promotions),
            ("dirty_rebuilds", self.dirty_rebuilds),
            ("entries_copied", self.entries_copied),
            ("expunges", self.expunges),
            ("compactions", self.compactions),
            ("splits", self.splits),
            ("merges", self.merges),
            ("directory_resizes", self.directory_resizes),
            ("snapshot_builds", self.snapshot_builds),
            ("snapshot_shards_copied", self.snapshot_shards_copied),
            ("snapshot_shards_reused", self.snapshot_shards_reused),
        ] {
            metrics::counter!(format!("{prefix}_{name}")).absolute(value);
        }
    }
}
