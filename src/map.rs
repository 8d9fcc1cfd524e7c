//! The public map type: a thin, safe face over the shards.
//!
//! Every method here hashes the key once, picks the shard from the
//! directory and delegates to the shard protocol in [`crate::shard`]. The
//! methods on [`SnapMap`] itself pin the epoch for one operation and return
//! owned values (clones); the [`Pinned`](crate::Pinned) handle from [`SnapMap::pin`] keeps
//! one pin across many operations and returns references.

use core::fmt;
use core::hash::{BuildHasher, Hash};

use equivalent::Equivalent;

use crate::batch::{Applied, Batch, BatchOp, RevisionConflict};
use crate::compute::{Compute, Operation};
use crate::hash::DefaultHashBuilder;
use crate::options::{Builder, DEFAULT_MAX_SHARDS, DEFAULT_SHARD_CAPACITY, DEFAULT_SHARDS};
use crate::raw::RawMap;
use crate::reader::Reader;
use crate::reload;
use crate::snapshot::Snapshot;
use crate::stats::{Event, Stats, retired_bytes};
use crate::sync::epoch;

/// A concurrent hash map for read-mostly data.
///
/// Reads never lock; new keys go to a per-shard dirty table under a mutex
/// and become lock-free after enough lookups (Go's `sync.Map` protocol,
/// per shard). See the [crate docs](crate) for the consistency guarantees,
/// the locking behaviour and when not to use it.
///
/// ```
/// use snapmap::SnapMap;
///
/// let map = SnapMap::new();
/// assert_eq!(map.insert("timeout", 30), None);
/// assert_eq!(map.insert("timeout", 60), Some(30));
/// assert_eq!(map.get("timeout"), Some(60));
///
/// // Many reads: pin once, get references.
/// let pinned = map.pin();
/// let total: u32 = pinned.iter().map(|(_, v)| *v).sum();
/// assert_eq!(total, 60);
/// ```
///
/// # Bounds
///
/// Keys and values must be `Send + Sync + 'static`: replaced values and
/// retired tables are freed by whichever thread next advances the global
/// epoch, possibly after the map itself is gone.
pub struct SnapMap<K, V, S = DefaultHashBuilder> {
    /// The fields and the write loop (`crate::raw`).
    pub(crate) raw: RawMap<K, V, S>,
}

impl<K, V> SnapMap<K, V, DefaultHashBuilder> {
    /// An empty map with [`DEFAULT_SHARDS`] shards and
    /// the default (HashDoS-resistant) hasher.
    ///
    /// ```
    /// let map: snapmap::SnapMap<u64, String> = snapmap::SnapMap::new();
    /// assert!(map.is_empty());
    /// ```
    pub fn new() -> Self {
        Self::with_hasher(DefaultHashBuilder::default())
    }

    /// An empty map pre-sized for `capacity` entries: it starts with
    /// enough shards that loading that many keys splits none of them (see
    /// [`Builder::capacity`], which this is with the default options).
    /// Like a `HashMap`'s capacity, the shards stay when the map empties.
    ///
    /// # Panics
    ///
    /// If `capacity` needs more than [`MAX_INITIAL_SHARDS`](crate::MAX_INITIAL_SHARDS)
    /// shards (more than 2^28 entries with the default shard capacity);
    /// [`Builder::capacity`] returns that as an error instead.
    ///
    /// ```
    /// let map: snapmap::SnapMap<u64, u64> = snapmap::SnapMap::with_capacity(10_000);
    /// assert_eq!(map.stats().shards, 64);
    /// for k in 0..10_000 {
    ///     map.insert(k, k);
    /// }
    /// assert_eq!(map.stats().splits, 0);
    /// ```
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity_and_hasher(capacity, DefaultHashBuilder::default())
    }

    /// A [`Builder`] for shard count, promotion threshold and hasher.
    ///
    /// ```
    /// let map = snapmap::SnapMap::<u64, u64>::builder().shards(4).build().unwrap();
    /// assert_eq!(map.stats().shards, 4);
    /// ```
    pub fn builder() -> Builder<K, V> {
        Builder::new()
    }
}

impl<K, V, S> SnapMap<K, V, S> {
    /// An empty map using `hasher`.
    ///
    /// ```
    /// use std::hash::RandomState;
    /// let map: snapmap::SnapMap<u64, u64, RandomState> =
    ///     snapmap::SnapMap::with_hasher(RandomState::new());
    /// map.insert(1, 1);
    /// assert_eq!(map.len(), 1);
    /// ```
    pub fn with_hasher(hasher: S) -> Self {
        Self::from_parts(
            DEFAULT_SHARDS.trailing_zeros(),
            DEFAULT_MAX_SHARDS.trailing_zeros(),
            DEFAULT_SHARD_CAPACITY,
            usize::MAX,
            false,
            false,
            hasher,
        )
    }

    /// [`with_capacity`](SnapMap::with_capacity) with `hasher`.
    ///
    /// # Panics
    ///
    /// As [`with_capacity`](SnapMap::with_capacity).
    ///
    /// ```
    /// use std::hash::RandomState;
    /// let map: snapmap::SnapMap<u64, u64, RandomState> =
    ///     snapmap::SnapMap::with_capacity_and_hasher(100_000, RandomState::new());
    /// assert_eq!(map.stats().shards, 512);
    /// ```
    pub fn with_capacity_and_hasher(capacity: usize, hasher: S) -> Self
    where
        S: BuildHasher,
    {
        Builder::new()
            .hasher(hasher)
            .capacity(capacity)
            .build()
            .unwrap_or_else(|error| panic!("SnapMap::with_capacity: {error}"))
    }

    pub(crate) fn from_parts(
        shard_bits: u32,
        max_shard_bits: u32,
        capacity: usize,
        promote_after: usize,
        huge_pages: bool,
        inline_values: bool,
        hasher: S,
    ) -> Self {
        SnapMap {
            raw: RawMap::new(
                shard_bits,
                max_shard_bits,
                capacity,
                promote_after,
                huge_pages,
                inline_values,
                hasher,
            ),
        }
    }

    /// The map's hasher.
    ///
    /// ```
    /// let map: snapmap::SnapMap<u8, u8> = snapmap::SnapMap::new();
    /// let _hasher: &snapmap::DefaultHashBuilder = map.hasher();
    /// ```
    pub fn hasher(&self) -> &S {
        &self.raw.hasher
    }

    /// The number of entries.
    ///
    /// Summed from per-thread counters: exact when no operation is in
    /// flight, and otherwise a value the length had at some recent point
    /// (never negative).
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, "a");
    /// map.insert(2, "b");
    /// map.remove(&1);
    /// assert_eq!(map.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.raw.stripes.len()
    }

    /// Whether [`len`](Self::len) is zero.
    ///
    /// ```
    /// let map: snapmap::SnapMap<u8, u8> = snapmap::SnapMap::new();
    /// assert!(map.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters describing what the protocol and the migrations have done
    /// (see [`Stats`]). Takes no lock and allocates nothing; counts the
    /// shards by walking the directory and the removed keys still held
    /// ([`Stats::removed_keys_held`]) by walking every shard's read view,
    /// so it costs O(entries): a diagnostic, not a hot-path call.
    ///
    /// ```
    /// let map = snapmap::SnapMap::<u64, u64>::builder().shards(1).build().unwrap();
    /// map.insert(1, 10); // a new key: rebuilds the (empty) dirty table
    /// assert_eq!(map.get(&1), Some(10)); // served from dirty: a slow-path lookup, then promoted
    /// assert_eq!(map.get(&1), Some(10)); // now a read-view hit
    /// let stats = map.stats();
    /// assert_eq!((stats.slow_path_lookups, stats.promotions, stats.read_hits), (1, 1, 1));
    /// ```
    pub fn stats(&self) -> Stats
    where
        K: Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        let guard = epoch::pin();
        let table = self.raw.directory.table(&guard);
        let sum = |event| self.raw.stripes.sum(event);
        let (mut shards, mut removed_keys_held) = (0, 0);
        for shard in table.distinct() {
            shards += 1;
            // SAFETY: a distinct slot value of a table loaded under `guard`
            // is a shard kept alive by the epoch for `guard`'s life.
            removed_keys_held += unsafe { &*shard }.removed_keys_held(&guard);
        }
        Stats {
            len: self.len(),
            shards,
            directory_slots: table.slots.len(),
            global_depth: table.depth(),
            read_hits: self.raw.stripes.read_hits(),
            slow_path_lookups: sum(Event::SlowLookups),
            promotions: sum(Event::Promotions),
            dirty_rebuilds: sum(Event::Rebuilds),
            entries_copied: sum(Event::EntriesCopied),
            expunges: sum(Event::Expunges),
            removed_keys_held,
            compactions: sum(Event::Compactions),
            splits: sum(Event::Splits),
            merges: sum(Event::Merges),
            directory_resizes: sum(Event::DirectoryResizes),
            max_entries_copied_by_one_operation: self.raw.stripes.max_copied(),
            retired: retired_bytes(),
            snapshot_builds: sum(Event::SnapshotBuilds),
            snapshot_shards_copied: sum(Event::SnapshotPiecesCopied),
            snapshot_shards_reused: sum(Event::SnapshotPiecesReused),
            snapshot_bytes: self.raw.snapshots.bytes.get(),
        }
    }
}

#[cfg(feature = "metrics")]
impl<K, V, S> SnapMap<K, V, S>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Publishes [`stats`](Self::stats) through the `metrics` facade, each
    /// figure named `{prefix}_{field}` (see [`Stats::publish`], which says
    /// which are gauges and which counters, and how often to call it).
    /// Feature `metrics`.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert("listen", "0.0.0.0:80");
    /// // With an exporter installed (`metrics-exporter-prometheus`, say),
    /// // this shows up as `config_len 1`, `config_read_hits ...`, ...
    /// map.publish_metrics("config");
    /// ```
    pub fn publish_metrics(&self, prefix: &str) {
        self.stats().publish(prefix);
    }
}

impl<K, V, S> SnapMap<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher,
{
    /// The value for `key`, cloned (Go: `Load`). Use [`pin`](Self::pin) to
    /// borrow instead.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(String::from("a"), 1);
    /// assert_eq!(map.get("a"), Some(1)); // look up a String key by &str
    /// assert_eq!(map.get("b"), None);
    /// ```
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
        V: Clone,
    {
        self.pin().get(key).cloned()
    }

    /// Whether `key` is present.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, ());
    /// assert!(map.contains_key(&1));
    /// assert!(!map.contains_key(&2));
    /// ```
    #[inline]
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        self.pin().contains_key(key)
    }

    /// Stores `value` under `key` and returns the previous value, cloned
    /// (Go: `Swap`; `Store` ignores the result).
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// assert_eq!(map.insert(1, "a"), None);
    /// assert_eq!(map.insert(1, "b"), Some("a"));
    /// ```
    pub fn insert(&self, key: K, value: V) -> Option<V>
    where
        V: Clone,
    {
        self.pin().insert(key, value).cloned()
    }

    /// Returns the value for `key`, storing `value` first if the key is
    /// absent (Go: `LoadOrStore`, without the flag; see
    /// [`try_insert`](Self::try_insert)).
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// assert_eq!(map.get_or_insert(1, "first"), "first");
    /// assert_eq!(map.get_or_insert(1, "second"), "first");
    /// ```
    pub fn get_or_insert(&self, key: K, value: V) -> V
    where
        V: Clone,
    {
        self.pin().get_or_insert(key, value).clone()
    }

    /// Stores `value` only if `key` is absent: `Ok(())` if it was stored,
    /// `Err(value)` (handing it back) if a value was already there (Go:
    /// `LoadOrStore`'s `loaded` flag).
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// assert_eq!(map.try_insert(1, "a"), Ok(()));
    /// assert_eq!(map.try_insert(1, "b"), Err("b"));
    /// assert_eq!(map.get(&1), Some("a"));
    /// ```
    pub fn try_insert(&self, key: K, value: V) -> Result<(), V> {
        match self.pin().try_insert(key, value) {
            Ok(_) => Ok(()),
            Err(occupied) => Err(occupied.not_inserted),
        }
    }

    /// Removes `key`, returning its value, cloned (Go: `LoadAndDelete`).
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, "a");
    /// assert_eq!(map.remove(&1), Some("a"));
    /// assert_eq!(map.remove(&1), None);
    /// ```
    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
        V: Clone,
    {
        self.pin().remove(key).cloned()
    }

    /// Replaces the value for `key` with `new` if it equals `old` (Go:
    /// `CompareAndSwap`). False if the key is absent.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert("v", 1);
    /// assert!(map.compare_and_swap("v", &1, 2));
    /// assert!(!map.compare_and_swap("v", &1, 3));
    /// assert!(!map.compare_and_swap("absent", &1, 3));
    /// assert_eq!(map.get("v"), Some(2));
    /// ```
    pub fn compare_and_swap<Q>(&self, key: &Q, old: &V, new: V) -> bool
    where
        Q: ?Sized + Hash + Equivalent<K>,
        V: PartialEq,
    {
        self.pin().compare_and_swap(key, old, new)
    }

    /// Removes `key` if its value equals `old` (Go: `CompareAndDelete`).
    /// False if the key is absent.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert("v", 1);
    /// assert!(!map.compare_and_delete("v", &2));
    /// assert!(map.compare_and_delete("v", &1));
    /// assert!(!map.compare_and_delete("v", &1));
    /// ```
    pub fn compare_and_delete<Q>(&self, key: &Q, old: &V) -> bool
    where
        Q: ?Sized + Hash + Equivalent<K>,
        V: PartialEq,
    {
        self.pin().compare_and_delete(key, old)
    }

    /// Replaces an existing value with `f(&current)` and returns the new
    /// value, cloned; `None` (and `f` is not called) if `key` is absent.
    ///
    /// Lock-free: `f` may be called more than once if another thread changes
    /// the value meanwhile, so it should be a pure function of its input.
    /// If `f` panics the map is unchanged. Like every write, `f` runs inside
    /// the write gate: it must not call this map's
    /// [`snapshot`](Self::snapshot) (which panics there rather than wait for
    /// itself; other maps are fine), and a slow `f` delays
    /// snapshot builds, and the writers queued behind a waiting build.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert("hits", 1u64);
    /// assert_eq!(map.update("hits", |n| n + 1), Some(2));
    /// assert_eq!(map.update("misses", |n| n + 1), None);
    /// ```
    pub fn update<Q>(&self, key: &Q, f: impl FnMut(&V) -> V) -> Option<V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
        V: Clone,
    {
        self.pin().update(key, f).cloned()
    }

    /// Splits shards now so that the map holds `len() + additional`
    /// entries without splitting (the shard count
    /// [`Builder::capacity`] would start with for that size, at most
    /// `max_shards`): call it before a bulk load into a map that exists.
    ///
    /// Each split copies one shard's entry pointers (cheap on an empty or
    /// small map; on a large one, `reserve` copies it once, as growing
    /// would). Each split is its own write: it takes the shard's lock and
    /// the directory's resize lock, and waits for (or is waited for by) a
    /// snapshot build for that one shard only. Nothing about the content
    /// changes. Unlike [`Builder::capacity`], the shards reserved here are
    /// not a floor: removals that leave two buddy shards sparse merge them
    /// back, as usual.
    ///
    /// ```
    /// let map = snapmap::SnapMap::<u64, u64>::builder().shards(1).build().unwrap();
    /// map.reserve(10_000);
    /// assert_eq!(map.stats().shards, 64);
    /// let splits = map.stats().splits;
    /// for k in 0..10_000 {
    ///     map.insert(k, k);
    /// }
    /// assert_eq!(map.stats().splits, splits); // no split during the load
    /// ```
    pub fn reserve(&self, additional: usize) {
        let entries = self.len().saturating_add(additional);
        let shards = crate::options::shards_for_capacity(entries, self.raw.capacity)
            .unwrap_or(1 << (usize::BITS - 1));
        let guard = epoch::pin();
        self.raw
            .reserve_depth(shards.trailing_zeros(), &guard, self.raw.stripes.mine());
    }

    /// The stored key and the value for `key`, cloned. The stored key may
    /// differ from the one looked up (a `String` found by `&str`, or a key
    /// whose `Eq` ignores some fields).
    ///
    /// Linearizable; takes no lock for a key in the read view (as
    /// [`get`](Self::get)).
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(String::from("a"), 1);
    /// assert_eq!(map.get_key_value("a"), Some((String::from("a"), 1)));
    /// assert_eq!(map.get_key_value("b"), None);
    /// ```
    pub fn get_key_value<Q>(&self, key: &Q) -> Option<(K, V)>
    where
        Q: ?Sized + Hash + Equivalent<K>,
        K: Clone,
        V: Clone,
    {
        let pinned = self.pin();
        pinned
            .get_key_value(key)
            .map(|(k, v)| (k.clone(), v.clone()))
    }

    /// Removes `key`, returning the stored key and its value, cloned (Go:
    /// `LoadAndDelete`, with the key). Clones rather than moves because
    /// pinned readers may still hold references to both; the originals are
    /// dropped through the epoch.
    ///
    /// Linearizable. Lock-free for a key in the read view; takes the shard
    /// lock for a key still only in the dirty table.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(String::from("a"), 1);
    /// assert_eq!(map.remove_entry("a"), Some((String::from("a"), 1)));
    /// assert_eq!(map.remove_entry("a"), None);
    /// ```
    pub fn remove_entry<Q>(&self, key: &Q) -> Option<(K, V)>
    where
        Q: ?Sized + Hash + Equivalent<K>,
        K: Clone,
        V: Clone,
    {
        let pinned = self.pin();
        pinned
            .remove_entry(key)
            .map(|(k, v)| (k.clone(), v.clone()))
    }

    /// Returns the value for `key`, storing `make()` first if the key is
    /// absent (Go: `LoadOrStore`, with the value made only when needed).
    ///
    /// Linearizable: it returns the value the key held when its lookup
    /// found it, or the one its insert stored. `make` runs without any
    /// lock, and only if the key looked absent; if another thread stores
    /// the key between that lookup and the insert, the other value wins,
    /// is returned, and the made one is dropped. Lock-free when the key is
    /// in the read view; storing a new key takes the shard lock. If `make`
    /// panics, the map is unchanged.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// assert_eq!(map.get_or_insert_with("k", || 1), 1);
    /// assert_eq!(map.get_or_insert_with("k", || unreachable!()), 1);
    /// ```
    pub fn get_or_insert_with(&self, key: K, make: impl FnOnce() -> V) -> V
    where
        V: Clone,
    {
        self.pin().get_or_insert_with(key, make).clone()
    }

    /// Inserts, updates or removes `key` in one step, as `decide` says
    /// given the key's current value (papaya's `compute`; Java's
    /// `ConcurrentMap.compute`). Returns what it did, with the values
    /// involved cloned (see [`Compute`]).
    ///
    /// **Linearizable**: the decision is applied only if the key still
    /// holds the very value `decide` saw (compared by identity, not by
    /// `PartialEq`; absent counts as a value), in one atomic step on the
    /// entry. If another thread changed the key in between, `decide` runs
    /// again on the new value, so it may run more than once and should be
    /// a function of its input. It runs **without any lock**.
    ///
    /// Locking: updating or removing a key in the read view is lock-free;
    /// inserting a key that is not in the read view, or finding a key
    /// still only in the dirty table, takes the shard lock (as
    /// [`insert`](Self::insert) and [`get`](Self::get) do). Like every
    /// write it runs inside the write gate, so `decide` must not call this
    /// map's [`snapshot`](Self::snapshot) (see [`update`](Self::update)).
    ///
    /// If `decide` panics, the map is unchanged (and the value of an
    /// earlier, failed try has been dropped).
    ///
    /// ```
    /// use snapmap::{Compute, Operation};
    ///
    /// let stock = snapmap::SnapMap::new();
    /// stock.insert("apples", 3u32);
    /// // Take one; remove the key when the last one goes; refuse when none.
    /// let take = |current: Option<&u32>| match current {
    ///     Some(1) => Operation::Remove,
    ///     Some(n) => Operation::Insert(n - 1),
    ///     None => Operation::Abort("sold out"),
    /// };
    /// assert_eq!(stock.compute("apples", take), Compute::Updated { old: 3, new: 2 });
    /// assert_eq!(stock.compute("apples", take), Compute::Updated { old: 2, new: 1 });
    /// assert_eq!(stock.compute("apples", take), Compute::Removed(1));
    /// assert_eq!(stock.compute("apples", take), Compute::Aborted("sold out"));
    /// ```
    pub fn compute<T>(
        &self,
        key: K,
        decide: impl FnMut(Option<&V>) -> Operation<V, T>,
    ) -> Compute<V, T>
    where
        V: Clone,
    {
        self.pin().compute(key, decide).map(V::clone)
    }

    /// Replaces the value of `key` with `update(&current)`, or inserts
    /// `value` if the key is absent; returns the value stored, cloned
    /// (papaya's `update_or_insert`; dashmap's and scc's
    /// `entry(key).and_modify(update).or_insert(value)`).
    ///
    /// Linearizable ([`compute`](Self::compute) with a closure that always
    /// stores): `update` may run more than once, on whatever value the key
    /// holds at each try, and runs without any lock. If another thread
    /// inserts the key first, `update` runs on that value and `value` is
    /// dropped. Lock-free for a key in the read view; inserting a key that
    /// is not there takes the shard lock. If `update` panics, the map is
    /// unchanged.
    ///
    /// ```
    /// let hits = snapmap::SnapMap::new();
    /// for _ in 0..3 {
    ///     hits.update_or_insert("/index.html", |n| n + 1, 1);
    /// }
    /// assert_eq!(hits.get("/index.html"), Some(3));
    /// ```
    pub fn update_or_insert(&self, key: K, update: impl FnMut(&V) -> V, value: V) -> V
    where
        V: Clone,
    {
        self.pin().update_or_insert(key, update, value).clone()
    }

    /// [`update_or_insert`](Self::update_or_insert) with the value to
    /// insert made by `make`, which runs only if the key is absent (at most
    /// once, without any lock; its value is dropped if another thread
    /// inserts the key first, and `update` then runs on that thread's
    /// value). Linearizable; same locking. If `update` or `make` panics,
    /// the map is unchanged.
    ///
    /// ```
    /// let lists = snapmap::SnapMap::new();
    /// let push = |v: &Vec<u32>| {
    ///     let mut v = v.clone();
    ///     v.push(2);
    ///     v
    /// };
    /// lists.update_or_insert_with("k", push, || vec![1]);
    /// lists.update_or_insert_with("k", push, || vec![1]);
    /// assert_eq!(lists.get("k"), Some(vec![1, 2]));
    /// ```
    pub fn update_or_insert_with(
        &self,
        key: K,
        update: impl FnMut(&V) -> V,
        make: impl FnOnce() -> V,
    ) -> V
    where
        V: Clone,
    {
        self.pin().update_or_insert_with(key, update, make).clone()
    }

    /// Keeps only the entries for which `keep(&key, &value)` returns true,
    /// removing the others (Go: `Range` with `CompareAndDelete`).
    ///
    /// **Guarantee under concurrent writes:** `keep` is called once for
    /// each entry the walk yields (a pinned iteration: each key present
    /// for the whole walk exactly once, keys inserted or removed meanwhile
    /// maybe), without any lock. A rejected entry is removed only if it
    /// still holds the very value `keep` saw (a compare-and-delete by
    /// identity, not by `PartialEq`): a value written after `keep` looked
    /// is kept, as if that write came after the retain. If the key has
    /// meanwhile moved to another entry (the map's promotions, splits,
    /// merges and compactions copy entries without changing their values;
    /// or the key was removed and inserted again), `keep` is called again
    /// with the value that entry holds, and its answer decides. Each removal is
    /// linearizable on its own; the whole is not atomic (a reader may see
    /// some removals and not others). To make snapshots see all of it or
    /// none, run it in a batch: `map.batch(|m| m.retain(..))`.
    ///
    /// Locking: as iteration (a shard with new keys pending is promoted
    /// first, under its lock), then each removal is lock-free (every key
    /// walked is in its shard's read view) unless it leaves the shard
    /// sparse enough to merge or compact. Writes to the map from inside
    /// `keep` are allowed (its own `snapshot` is not, inside a batch).
    ///
    /// If `keep` panics, the entries removed so far stay removed, the
    /// entry it was looking at stays, and the map is consistent.
    ///
    /// ```
    /// let map: snapmap::SnapMap<u32, &str> = [(1, "a"), (2, ""), (3, "c")].into_iter().collect();
    /// map.retain(|_, v| !v.is_empty());
    /// assert_eq!(map.len(), 2);
    /// assert_eq!(map.get(&2), None);
    /// ```
    pub fn retain(&self, keep: impl FnMut(&K, &V) -> bool) {
        self.pin().retain(keep);
    }

    /// Removes every entry (Go: `Clear`). Shard by shard: a concurrent
    /// reader may see some shards cleared and others not yet.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, 1);
    /// map.clear();
    /// assert!(map.is_empty());
    /// assert_eq!(map.get(&1), None);
    /// ```
    pub fn clear(&self) {
        self.pin().clear();
    }
}

impl<K, V, S> SnapMap<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Clone,
{
    /// A consistent, immutable copy of the map (the `atomic.Value` pattern).
    ///
    /// Every write, and every [batch](Self::apply), is wholly in it or
    /// wholly absent. If nothing changed since the last snapshot it returns
    /// that same snapshot in O(1), without allocating; otherwise it copies
    /// only the shards that changed and shares the rest with the previous
    /// snapshot. It is the map as of its *cut*, a short moment at the start
    /// of the build in which writers wait only for the writes already in
    /// progress. While the build then copies, a writer about to change a
    /// shard the build has not captured yet captures it first (once per
    /// shard and build; pointers only, the build clones later), so a writer
    /// waits for a snapshot about a microsecond at most, and never runs
    /// `Clone`.
    ///
    /// ```
    /// use snapmap::{Snapshot, SnapMap};
    ///
    /// let map = SnapMap::new();
    /// map.insert("mode", "fast");
    /// let before = map.snapshot();
    /// assert!(Snapshot::ptr_eq(&before, &map.snapshot())); // unchanged: same snapshot
    /// map.insert("mode", "safe");
    /// let after = map.snapshot();
    /// assert_eq!((before.get("mode"), after.get("mode")), (Some(&"fast"), Some(&"safe")));
    /// ```
    ///
    /// # Panics
    ///
    /// If called from inside a write *to this same map* (a
    /// [`batch`](Self::batch) closure, or the closure of
    /// [`update`](Self::update) or `get_or_insert_with`), which the snapshot
    /// would have to wait for: it panics rather than deadlock. Take the
    /// snapshot before or after the batch. A snapshot of *another* map is
    /// fine there, as is any write to another map: each map's gate is its
    /// own. Like nested locks, nested gates must not cross: a thread that
    /// snapshots `b` inside `a`'s batch while another snapshots `a` inside
    /// `b`'s batch deadlocks.
    ///
    /// ```should_panic
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, 1);
    /// map.batch(|_| map.snapshot()); // panics: "it would wait for itself"
    /// ```
    ///
    /// ```
    /// let (a, b) = (snapmap::SnapMap::new(), snapmap::SnapMap::new());
    /// a.batch(|a| {
    ///     a.insert(1, 1);
    ///     b.insert(1, 2);
    ///     assert_eq!(b.snapshot().get(&1), Some(&2)); // another map: fine
    /// });
    /// ```
    ///
    /// If a key's or value's `Clone` panics, the panic propagates
    /// from here; the map is unchanged and the next snapshot is built
    /// afresh.
    pub fn snapshot(&self) -> Snapshot<K, V, S> {
        self.raw.snapshot()
    }
}

impl<K, V, S> SnapMap<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Clone,
{
    /// A reader handle: a cached snapshot that refreshes itself only when
    /// the map has changed, at the cost of one load and a compare when it
    /// has not (see [`Reader`]). For readers that want one consistent view
    /// of a configuration on every lookup; keep one per thread.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert("limit", 10);
    /// let mut reader = map.reader();
    /// assert_eq!(reader.get("limit"), Some(&10));
    /// assert!(reader.is_current());
    /// map.insert("limit", 20);
    /// assert!(!reader.is_current());
    /// assert_eq!(reader.get("limit"), Some(&20)); // refreshed
    /// ```
    pub fn reader(&self) -> Reader<'_, K, V, S> {
        Reader::new(&self.raw)
    }

    /// Blocks until the map has changed since the snapshot whose
    /// [`revision`](Snapshot::revision) is given, and returns a snapshot
    /// that shows it: its revision is larger than `revision`, and it holds
    /// every write that completed before this returns. Returns at once if
    /// that is already so (a write has completed since, or a later
    /// snapshot exists).
    ///
    /// Any write counts, even one that changed nothing (removing an absent
    /// key), and a batch counts once: a waiter wakes when the batch is
    /// complete and gets all of it. The thread is woken by the first write
    /// that enters the map after the snapshot's cut, as that write leaves
    /// (for a batch: as the batch ends); a write that is still in progress
    /// then is either in the returned snapshot or after it, never half in.
    /// Revisions name snapshot builds, so a snapshot built without a write
    /// (after [`forget_snapshot`](Self::forget_snapshot)) also passes
    /// `revision`. A `revision` the map has not reached yet (one not taken
    /// from this map's snapshots) waits until builds pass it: one per
    /// change that wakes this waiter, or others' snapshots.
    ///
    /// While nobody waits, writers pay one plain load (of a count on a
    /// cache line they already read) and a branch: no locked instruction,
    /// no fence (see `docs/ARCHITECTURE.md`, "Change notification"). A
    /// waiter may also be woken by later writes; it then checks again and
    /// sleeps on. Like [`snapshot`](Self::snapshot), it
    /// panics inside a batch or write closure of this map (it would wait
    /// for itself).
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let map = Arc::new(snapmap::SnapMap::new());
    /// map.insert("limit", 10);
    /// let seen = map.snapshot();
    /// let watcher = {
    ///     let map = map.clone();
    ///     let revision = seen.revision();
    ///     std::thread::spawn(move || map.wait_for_change(revision))
    /// };
    /// map.insert("limit", 20);
    /// let changed = watcher.join().unwrap();
    /// assert!(changed.revision() > seen.revision());
    /// assert_eq!(changed.get("limit"), Some(&20));
    /// ```
    pub fn wait_for_change(&self, revision: u64) -> Snapshot<K, V, S> {
        self.raw
            .wait_for_change(revision, None)
            .expect("no deadline: the wait ends only with a change")
    }

    /// [`wait_for_change`](Self::wait_for_change) for at most `timeout`:
    /// `None` if the map has not changed since `revision` by then.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, "a");
    /// let seen = map.snapshot();
    /// // Nothing written since: times out.
    /// assert!(map.wait_for_change_timeout(seen.revision(), Duration::from_millis(10)).is_none());
    /// map.insert(1, "b");
    /// // Already changed: returns at once, with the change.
    /// let now = map.wait_for_change_timeout(seen.revision(), Duration::ZERO).unwrap();
    /// assert_eq!(now.get(&1), Some(&"b"));
    /// ```
    pub fn wait_for_change_timeout(
        &self,
        revision: u64,
        timeout: std::time::Duration,
    ) -> Option<Snapshot<K, V, S>> {
        // A timeout too large for an `Instant` waits without a deadline.
        let deadline = std::time::Instant::now().checked_add(timeout);
        self.raw.wait_for_change(revision, deadline)
    }

    /// [`wait_for_change`](Self::wait_for_change) as a future, for any
    /// async runtime (it is woken through the `event-listener` crate). To
    /// give up, drop it (or race it against a timer, as
    /// `tokio::time::timeout` does).
    ///
    /// The future makes its snapshot when it is polled, on the polling
    /// thread: the snapshot's cut waits briefly for writes in progress, as
    /// [`snapshot`](Self::snapshot) does.
    ///
    /// Not available in the crate's loom builds (`--cfg snapmap_loom`),
    /// whose stand-in for the event has no future.
    ///
    /// ```
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     // Any executor works; this one parks the thread between polls.
    /// #     struct Unpark(std::thread::Thread);
    /// #     impl std::task::Wake for Unpark {
    /// #         fn wake(self: std::sync::Arc<Self>) { self.0.unpark() }
    /// #     }
    /// #     let waker = std::sync::Arc::new(Unpark(std::thread::current())).into();
    /// #     let mut cx = std::task::Context::from_waker(&waker);
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop {
    /// #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; }
    /// #         std::thread::park();
    /// #     }
    /// # }
    /// use std::sync::Arc;
    ///
    /// let map = Arc::new(snapmap::SnapMap::new());
    /// map.insert("mode", "fast");
    /// let seen = map.snapshot().revision();
    /// let writer = {
    ///     let map = map.clone();
    ///     std::thread::spawn(move || map.insert("mode", "safe"))
    /// };
    /// let changed = block_on(map.changed(seen));
    /// assert!(changed.revision() > seen);
    /// assert_eq!(changed.get("mode"), Some(&"safe")); // the only write since
    /// writer.join().unwrap();
    /// ```
    #[cfg(not(snapmap_loom))]
    pub fn changed(&self, revision: u64) -> impl Future<Output = Snapshot<K, V, S>> + Send + '_
    where
        S: Send + Sync,
    {
        self.raw.changed(revision)
    }
}

impl<K, V, S> SnapMap<K, V, S> {
    /// Drops the map's own reference to its latest snapshot.
    ///
    /// The map keeps the last snapshot it built, so that an unchanged map
    /// can return it again in O(1) and the next build can reuse its
    /// unchanged shards. That snapshot's memory is therefore held until the
    /// next build replaces it, the map is dropped, or this is called; the
    /// next [`snapshot`](Self::snapshot) then copies every shard.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, 1);
    /// drop(map.snapshot());
    /// assert!(map.stats().snapshot_bytes > 0); // the map's cached copy
    /// map.forget_snapshot();
    /// assert_eq!(map.stats().snapshot_bytes, 0);
    /// ```
    pub fn forget_snapshot(&self) {
        self.raw.snapshots.forget();
    }
}

impl<K, V, S> SnapMap<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher,
{
    /// Applies every write of `batch` so that no snapshot contains part of
    /// it: a configuration reload is all-or-nothing.
    ///
    /// Plain reads are not held back: a concurrent `get` or iteration sees
    /// each write as it lands. Snapshot builds wait for the batch to finish
    /// (and writers that arrive while a snapshot is waiting wait too), so
    /// keep batches to what must be atomic.
    ///
    /// ```
    /// use snapmap::{Batch, SnapMap};
    ///
    /// let map = SnapMap::new();
    /// map.insert("a", 1);
    /// let applied = map.apply([("a", 10), ("b", 20)].into_iter().collect::<Batch<_, _>>());
    /// assert_eq!((applied.inserted, applied.replaced), (1, 1));
    /// ```
    pub fn apply(&self, batch: Batch<K, V>) -> Applied {
        let _gate = self.raw.enter_batch();
        self.apply_inside_gate(batch)
    }

    /// Applies `batch` as [`apply`](Self::apply) does, but only if the map
    /// has not been written since the snapshot whose
    /// [`revision`](crate::Snapshot::revision) is given: an optimistic
    /// reload. Two reloaders that both read revision `r` and both call
    /// `apply_if(r, ..)` cannot both succeed; the loser gets a
    /// [`RevisionConflict`] and nothing of its batch is applied.
    ///
    /// The check and the mark that makes later conditional applies fail
    /// are one atomic step when the batch enters the write gate. The batch
    /// is then applied like any batch: all or nothing for snapshots, while
    /// plain writers that start after the check may still run beside it
    /// (this orders reloaders among themselves, it does not lock the map).
    /// Any write since the snapshot counts, even one that changed nothing,
    /// and so does a new snapshot of an unchanged map after
    /// [`forget_snapshot`](Self::forget_snapshot) (revisions name snapshot
    /// builds).
    ///
    /// ```
    /// use snapmap::{Batch, SnapMap};
    ///
    /// let map = SnapMap::new();
    /// map.insert("limit", 10);
    /// let seen = map.snapshot();
    /// // Someone else reloads first.
    /// map.insert("limit", 20);
    /// let mut mine = Batch::new();
    /// mine.insert("limit", 11);
    /// let err = map.apply_if(seen.revision(), mine).unwrap_err();
    /// assert_eq!(err.expected, seen.revision());
    /// assert_eq!(map.get("limit"), Some(20)); // nothing applied
    ///
    /// // Rebased on the current content, it applies.
    /// let now = map.snapshot();
    /// let mut mine = Batch::new();
    /// mine.insert("limit", now.get("limit").unwrap() + 1);
    /// assert!(map.apply_if(now.revision(), mine).is_ok());
    /// assert_eq!(map.get("limit"), Some(21));
    /// ```
    pub fn apply_if(&self, revision: u64, batch: Batch<K, V>) -> Result<Applied, RevisionConflict> {
        let _gate = self
            .raw
            .gate
            .enter_if_unchanged(revision)
            .map_err(|changed| RevisionConflict {
                expected: revision,
                latest: changed.latest,
                written_since: changed.written_since,
            })?;
        Ok(self.apply_inside_gate(batch))
    }

    /// Applies `batch`; the caller holds the write gate.
    fn apply_inside_gate(&self, batch: Batch<K, V>) -> Applied {
        let pinned = self.pin();
        let mut applied = Applied::default();
        for op in batch.ops {
            match op {
                BatchOp::Insert(key, value) => match pinned.insert(key, value) {
                    Some(_) => applied.replaced += 1,
                    None => applied.inserted += 1,
                },
                BatchOp::Remove(key) => {
                    if pinned.remove(&key).is_some() {
                        applied.removed += 1;
                    }
                }
            }
        }
        applied
    }
}

impl<K, V, S> SnapMap<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: PartialEq + Send + Sync + 'static,
    S: BuildHasher,
{
    /// Makes `content` the map's whole content in one batch (a full
    /// configuration reload): keys not in `content` are removed, keys whose
    /// value differs (by `PartialEq`) or that are new are written, and keys
    /// whose value is equal are **not rewritten**, so the shards holding
    /// only those keep their version and the next snapshot shares their
    /// pieces with the last one (it costs O(changed shards), not O(map)).
    ///
    /// Snapshots see the whole reload or none of it, as with any batch.
    /// The difference is computed inside the batch; writers that are not
    /// part of the reload may still write beside it, so the map equals
    /// `content` afterwards when nobody else writes meanwhile.
    ///
    /// Costs one hash of each content key (with the map's hasher) and one
    /// probe of its shard's read view (where the keys' hashes are stored;
    /// no table of the content is built), a walk of the views in which some
    /// entry was not found (for the removals), then the writes
    /// (`src/reload.rs`). Measured at 1M `u64` keys (foldhash) with 1 % of
    /// the values changed, made visible with the next snapshot (which
    /// copies every shard here: 1 % of random keys touch nearly every
    /// shard): 70–78 ms, against 53–55 ms for `ArcSwap<HashMap>` to build
    /// and store a new map from the same content (BENCHMARKS.md, group
    /// `reload_1M`, the last three runs, before the diff probed the views
    /// item by item, which took `replace_all` alone from 51–53 to 38–40 ms
    /// in a scratch driver; the `ArcSwap` figure moves with the heap the
    /// rows before it leave, 28–56 ms in other runs; 99 ms before the read
    /// views held their entries; the earlier version of the diff, a SipHash
    /// table of the content, took about 0.25 s). At 10K keys the gap is
    /// wider (0.28–0.30 ms against 43–45 µs: a small map builds in cache,
    /// while the diff still hashes and probes every item and the snapshot
    /// copies every shard). When the changes themselves are known,
    /// [`apply`](Self::apply) them instead: its cost is the changes' (29–33
    /// ms at 1M with the snapshot, most of it the snapshot).
    ///
    /// A key given more than once takes its last value, and counts once in
    /// the [`Applied`] it returns.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert("a", 1);
    /// map.insert("b", 2);
    /// map.insert("c", 3);
    /// let applied = map.replace_all([("a", 1), ("b", 20), ("d", 4)]);
    /// assert_eq!(
    ///     (applied.unchanged, applied.replaced, applied.inserted, applied.removed),
    ///     (1, 1, 1, 1)
    /// );
    /// assert_eq!(map.get("c"), None);
    /// assert_eq!(map.get("b"), Some(20));
    /// ```
    pub fn replace_all(&self, content: impl IntoIterator<Item = (K, V)>) -> Applied {
        let _gate = self.raw.enter_batch();
        let guard = epoch::pin();
        reload::replace_all(&self.raw, content, &guard, self.raw.stripes.mine())
    }

    /// Rolls the map back to `snapshot`'s content, as one batch
    /// ([`replace_all`](Self::replace_all) with the snapshot's entries:
    /// entries equal to the snapshot's are not rewritten). The snapshot's
    /// entries are compared by reference; only the keys and values written
    /// are cloned.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert("limit", 10);
    /// let good = map.snapshot();
    /// map.insert("limit", 0); // a bad reload
    /// map.insert("debug", 1);
    /// map.restore(&good);
    /// assert_eq!(map.get("limit"), Some(10));
    /// assert_eq!(map.get("debug"), None);
    /// ```
    pub fn restore<S2>(&self, snapshot: &Snapshot<K, V, S2>) -> Applied
    where
        V: Clone,
    {
        let _gate = self.raw.enter_batch();
        let guard = epoch::pin();
        reload::replace_all(&self.raw, snapshot.iter(), &guard, self.raw.stripes.mine())
    }
}

impl<K, V, S> Drop for SnapMap<K, V, S> {
    fn drop(&mut self) {
        self.raw.directory.for_each_shard_exclusive(|shard| {
            // SAFETY: `&mut self`: no operation is in flight, and every
            // reference the map handed out borrowed it (through a `Pinned`),
            // so none is alive. Entries, keys and values are freed now
            // instead of through the epoch; the directory's `Drop` then frees
            // the shards. Retired views and shards still in the epoch point
            // to these entries but never touch them when freed.
            unsafe { shard.free_entries_exclusive() };
        });
    }
}

impl<K, V, S: Default> Default for SnapMap<K, V, S> {
    /// An empty map (see [`SnapMap::new`]).
    fn default() -> Self {
        Self::with_hasher(S::default())
    }
}

impl<K, V, S> fmt::Debug for SnapMap<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static + fmt::Debug,
    V: Send + Sync + 'static + fmt::Debug,
    S: BuildHasher,
{
    /// Formats the entries as a map, shard by shard (each shard is read at
    /// one point in time; the whole is not a snapshot).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.pin().iter()).finish()
    }
}

impl<K, V, S> FromIterator<(K, V)> for SnapMap<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher + Default,
{
    /// Collects pairs into a map; a later pair replaces an earlier one with
    /// the same key.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = Self::default();
        map.extend(iter);
        map
    }
}

impl<K, V, S> Extend<(K, V)> for SnapMap<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher,
{
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        (&*self).extend(iter);
    }
}

impl<K, V, S> Extend<(K, V)> for &SnapMap<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher,
{
    /// Inserts every pair, pinning once for the whole batch.
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        let pinned = self.pin();
        for (key, value) in iter {
            pinned.insert(key, value);
        }
    }
}
