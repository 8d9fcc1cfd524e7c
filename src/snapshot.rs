//! Snapshots: Go's `atomic.Value` copy-on-write idiom without its O(n) cost.
//!
//! A [`Snapshot`] is an immutable copy of the map at one point in time,
//! shared through an `Arc`: `Send + Sync + 'static`, cheap to clone, safe to
//! hold across `.await` or for minutes. It is made of one frozen **piece**
//! per shard: the shard's live entries as a contiguous `Box<[(K, V)]>` with
//! a small hash index beside it, so that iterating a snapshot is a walk over
//! slices and a lookup is one probe.
//!
//! ```text
//!   Snapshot ── Arc<Frozen> ── pieces: [Arc<Piece>, Arc<Piece>, ...]   (hash order)
//!                               slots:  [piece index; 2^G]              (top G hash bits)
//!   Piece { shard id, version, entries: [(K, V)], index: {(hash, position)} }
//! ```
//!
//! A lookup indexes `slots` by the top bits of the hash (as the map's
//! directory does), probes the piece's index, whose buckets hold the full
//! hash beside the position so that only a matching hash touches the entry,
//! and compares the key.
//!
//! ```text
//! ```
//!
//! # Building one: O(1) if nothing changed, O(changed shards) otherwise
//!
//! 1. **Unchanged?** The last snapshot is cached in the map's snapshot cell
//!    (`arc-swap`) with the write gate's completed-write count at the time.
//!    If no writer is inside the gate and the count is the same, nothing has
//!    changed: the cached snapshot is returned (an `Arc` clone, no
//!    allocation).
//! 2. **The cut, briefly.** Close the write gate (wait until no write is in
//!    progress), list the current shards, announce the build's number
//!    (`WriteGate::begin_build`) and reopen the gate. The snapshot will be
//!    the map as it was at this moment. Writers wait only for the writes
//!    already in progress and for a walk over the directory: no copying,
//!    no user code.
//! 3. **Capture, writers running.** For each listed shard, capture it:
//!    reuse the previous snapshot's piece if the shard's id and version are
//!    the same, otherwise copy it. Then assemble the pieces in hash order
//!    and publish.
//!
//! # Copy before write
//!
//! A writer that entered the gate after the cut and is about to change a
//! shard that has not been captured for this build captures it first
//! (`Snapshots::capture`; a second thread that wants the same shard waits
//! for the first). So a listed shard never changes before its capture, and
//! every capture is the shard as of the cut. Each shard is captured once
//! per build, by whoever needs it first: the build never re-copies, so its
//! work does not grow with the write rate.
//!
//! A capture copies *pointers* (the hash, key and value of each live
//! entry: `Refs`), not the entries: about a microsecond for a full shard,
//! and no user code. The build clones what they point to after all shards
//! are captured, while writers run freely; the epoch keeps those keys and
//! values alive because the build has been pinned since before its cut
//! (`Refs` explains why that suffices). So a writer never runs `Clone`, and
//! never waits for more than one or two shards' pointer copy (two when a
//! removal merges a shard with its buddy, which must be captured before it
//! is retired).
//!
//! This replaces an earlier scheme (copy optimistically while writers run,
//! then re-copy under the closed gate whatever changed meanwhile), which
//! DESIGN.md suggests. Under a writer that changes shards faster than a
//! build copies them, its optimistic passes never converged, and the gate
//! stayed closed for 65-110 ms while most of the map was re-copied
//! (BENCHMARKS.md, "Writers during a storm of snapshots").
//!
//! Shards made by a split or merge after the cut are born captured
//! (`Shard::born_during`): the snapshot uses the listed shards they
//! replaced, which were captured before the split or merge (the writer
//! splitting had captured the shard it wrote; a merge captures both
//! halves); capturing them again would only waste a copy. A capture for a
//! build that has already ended (by a writer that entered during it and
//! arrived late) is dropped.
//!
//! # Why it is one point in time
//!
//! Every write runs inside the gate. The cut closes it, so every write has
//! either completed before the cut (the gate's Release/Acquire hand-off
//! orders it before everything the build reads) or entered after it. A
//! writer that entered after the cut read the build's number (its Acquire
//! read of the gate's `pending` flag synchronises with the Release that
//! reopened it) and captures before changing anything; the capture's
//! Release store of the shard's `captured` mark, read with Acquire by
//! every later writer, orders the copy before their changes. Batches hold
//! the gate for all their writes, so a batch is wholly before the cut or
//! wholly after it.
//!
//! The version (bumped after every change, inside the gate) only decides
//! whether the previous snapshot's piece can be reused. A lock-free write
//! may go through a retired shard's view (its entries are shared with the
//! shards that replaced it); the writer therefore bumps the version of the
//! shard that holds the key *now*, found again after the write.
//!
//! # Memory
//!
//! Pieces are reference counted: a snapshot that shares a piece with a newer
//! one costs nothing extra, and a piece is freed when the last snapshot
//! holding it is dropped. `stats()` reports the bytes held by live pieces.
//!
//! The map itself holds its latest snapshot (that is what lets an unchanged
//! map answer in O(1) and a changed one copy only what changed), so one
//! snapshot's worth stays alive as long as the map, until the next build
//! replaces it or `SnapMap::forget_snapshot` drops it.

use core::fmt;
use core::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use core::iter::FusedIterator;
use std::collections::HashMap;

use equivalent::Equivalent;
use hashbrown::HashTable;

use crate::directory::Directory;
use crate::gate::WriteGate;
use crate::hash::DefaultHashBuilder;
use crate::shard::Shard;
use crate::shard::read_view::table_hash;
use crate::stats::{Event, Stripe};
use crate::sync::epoch::Guard;
use crate::sync::stat_atomic::{AtomicIsize, Ordering as StatOrdering};
use crate::sync::{Arc, SnapshotCell};
use crate::twins::{Bug, injected};

/// Pieces by shard id, for one build.
type PieceMap<K, V> = HashMap<u64, Arc<Piece<K, V>>, BuildHasherDefault<IdHasher>>;

/// Shard ids are unique counters: one multiply (Fibonacci hashing) spreads
/// them over the table, far cheaper than SipHash.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8) | u64::from(byte);
        }
    }
    fn write_u64(&mut self, id: u64) {
        self.0 = id;
    }
}

/// Bytes held by the live pieces of one map's snapshots.
#[derive(Default)]
pub(crate) struct PieceBytes(AtomicIsize);

impl PieceBytes {
    fn add(&self, bytes: isize) {
        // Relaxed: a statistic.
        self.0.fetch_add(bytes, StatOrdering::Relaxed);
    }

    /// The current total.
    pub(crate) fn get(&self) -> usize {
        // Relaxed: a statistic.
        self.0.load(StatOrdering::Relaxed).max(0) as usize
    }
}

/// One shard, frozen.
pub(crate) struct Piece<K, V> {
    shard_id: u64,
    version: u64,
    entries: Box<[(K, V)]>,
    /// `(hash, position in entries)`, hashed by `table_hash`.
    index: HashTable<(u64, u32)>,
    bytes: usize,
    account: Arc<PieceBytes>,
}

impl<K, V> Piece<K, V> {
    /// Clones what a capture points to into a piece.
    ///
    /// # Safety
    ///
    /// Every pointer in `refs` must still be valid: the caller is the build
    /// that `refs` was captured for, pinned since before its cut (see
    /// [`Refs`]).
    unsafe fn from_refs(shard_id: u64, refs: &Refs<K, V>, account: &Arc<PieceBytes>) -> Self
    where
        K: Clone,
        V: Clone,
    {
        let mut entries = Vec::with_capacity(refs.entries.len());
        let mut index = HashTable::with_capacity(refs.entries.len());
        for (i, &(hash, key, value)) in refs.entries.iter().enumerate() {
            // SAFETY: valid per this function's contract; `K` and `V` are
            // `Sync`, and nobody writes through these pointers (keys and
            // value nodes are immutable once published).
            let (key, value) = unsafe { (&*key, &*value) };
            entries.push((key.clone(), value.clone()));
            index.insert_unique(table_hash(hash), (hash, i as u32), |&(h, _)| table_hash(h));
        }
        let entries = entries.into_boxed_slice();
        let bytes =
            size_of::<Self>() + entries.len() * size_of::<(K, V)>() + index.allocation_size();
        account.add(bytes as isize);
        Piece {
            shard_id,
            version: refs.version,
            entries,
            index,
            bytes,
            account: account.clone(),
        }
    }

    fn get<Q: ?Sized + Equivalent<K>>(&self, hash: u64, key: &Q) -> Option<&(K, V)> {
        let (_, i) = self.index.find(table_hash(hash), |&(h, i)| {
            h == hash && key.equivalent(&self.entries[i as usize].0)
        })?;
        Some(&self.entries[*i as usize])
    }
}

impl<K, V> Drop for Piece<K, V> {
    fn drop(&mut self) {
        self.account.add(-(self.bytes as isize));
    }
}

/// The shared body of a snapshot.
pub(crate) struct Frozen<K, V, S> {
    pieces: Box<[Arc<Piece<K, V>>]>,
    /// The piece holding each `2^depth` slice of hash space.
    slots: Box<[u32]>,
    /// How many top hash bits index `slots` (the directory's depth when the
    /// snapshot was built).
    depth: u32,
    len: usize,
    /// The write gate's completed-write count when this was built.
    writes: u64,
    hasher: S,
}

/// An immutable, consistent copy of a [`SnapMap`](crate::SnapMap), from
/// [`SnapMap::snapshot`](crate::SnapMap::snapshot).
///
/// It is one point in time: every write, and every
/// [batch](crate::SnapMap::apply), is wholly in it or wholly absent. It owns
/// its data (`'static`), is `Send + Sync`, and clones in O(1):
///
/// ```
/// fn assert_static_send_sync<T: Send + Sync + 'static>(_: &T) {}
/// let map = snapmap::SnapMap::new();
/// map.insert("listen".to_string(), "0.0.0.0:80".to_string());
/// let snapshot = map.snapshot();
/// assert_static_send_sync(&snapshot);
/// map.insert("listen".to_string(), "0.0.0.0:8080".to_string());
/// drop(map);
/// // The snapshot outlives the map and still shows the old value.
/// assert_eq!(snapshot.get("listen").map(String::as_str), Some("0.0.0.0:80"));
/// ```
///
/// A snapshot cannot borrow from the map, so nothing about it is tied to
/// the map's lifetime; but its entries are tied to it:
///
/// ```compile_fail
/// let snapshot = snapmap::SnapMap::<u64, u64>::new().snapshot();
/// let value: &u64 = {
///     let copy = snapshot.clone();
///     copy.get(&1).unwrap()
/// }; // `copy` dropped while borrowed
/// println!("{value}");
/// ```
pub struct Snapshot<K, V, S = DefaultHashBuilder> {
    frozen: Arc<Frozen<K, V, S>>,
}

impl<K, V, S> Clone for Snapshot<K, V, S> {
    /// Another handle to the same snapshot (an `Arc` clone).
    fn clone(&self) -> Self {
        Snapshot {
            frozen: self.frozen.clone(),
        }
    }
}

impl<K, V, S> Snapshot<K, V, S> {
    /// The number of entries.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, 1);
    /// assert_eq!(map.snapshot().len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.frozen.len
    }

    /// Whether the snapshot has no entries.
    ///
    /// ```
    /// let map: snapmap::SnapMap<u8, u8> = snapmap::SnapMap::new();
    /// assert!(map.snapshot().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.frozen.len == 0
    }

    /// Iterates over the entries: a walk over contiguous slices, with no
    /// allocation and no lock. The order is unspecified.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, 10);
    /// map.insert(2, 20);
    /// let total: i32 = map.snapshot().iter().map(|(_, v)| v).sum();
    /// assert_eq!(total, 30);
    /// ```
    pub fn iter(&self) -> SnapshotIter<'_, K, V> {
        SnapshotIter {
            pieces: self.frozen.pieces.iter(),
            current: [].iter(),
            remaining: self.frozen.len,
        }
    }

    /// Iterates over the keys.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert("k", 1);
    /// assert_eq!(map.snapshot().keys().collect::<Vec<_>>(), [&"k"]);
    /// ```
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &K> + FusedIterator + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// Iterates over the values.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert("k", 1);
    /// assert_eq!(map.snapshot().values().sum::<i32>(), 1);
    /// ```
    pub fn values(&self) -> impl ExactSizeIterator<Item = &V> + FusedIterator + '_ {
        self.iter().map(|(_, v)| v)
    }

    /// Whether two handles are the same snapshot (not just equal contents).
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, 1);
    /// let (a, b) = (map.snapshot(), map.snapshot());
    /// assert!(snapmap::Snapshot::ptr_eq(&a, &b)); // nothing changed in between
    /// ```
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.frozen, &b.frozen)
    }
}

impl<K, V, S: BuildHasher> Snapshot<K, V, S> {
    /// The value for `key`, as of the snapshot.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(String::from("a"), 1);
    /// let snapshot = map.snapshot();
    /// map.insert(String::from("a"), 2);
    /// assert_eq!(snapshot.get("a"), Some(&1));
    /// ```
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        self.get_key_value(key).map(|(_, v)| v)
    }

    /// The stored key and value for `key`.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(String::from("a"), 1);
    /// let snapshot = map.snapshot();
    /// assert_eq!(snapshot.get_key_value("a"), Some((&"a".to_string(), &1)));
    /// ```
    pub fn get_key_value<Q>(&self, key: &Q) -> Option<(&K, &V)>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let hash = self.frozen.hasher.hash_one(key);
        let slot = ((hash >> (63 - self.frozen.depth)) >> 1) as usize;
        let piece = self.frozen.slots[slot] as usize;
        self.frozen.pieces[piece]
            .get(hash, key)
            .map(|(k, v)| (k, v))
    }

    /// Whether `key` is in the snapshot.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, ());
    /// assert!(map.snapshot().contains_key(&1));
    /// ```
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        self.get(key).is_some()
    }
}

impl<'s, K, V, S> IntoIterator for &'s Snapshot<K, V, S> {
    type Item = (&'s K, &'s V);
    type IntoIter = SnapshotIter<'s, K, V>;

    fn into_iter(self) -> SnapshotIter<'s, K, V> {
        self.iter()
    }
}

impl<K: fmt::Debug, V: fmt::Debug, S> fmt::Debug for Snapshot<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(feature = "serde")]
impl<K: serde::Serialize, V: serde::Serialize, S> serde::Serialize for Snapshot<K, V, S> {
    /// Serialises as a map.
    fn serialize<Ser: serde::Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        serializer.collect_map(self.iter())
    }
}

/// An iterator over a snapshot's entries, from [`Snapshot::iter`].
pub struct SnapshotIter<'s, K, V> {
    pieces: core::slice::Iter<'s, Arc<Piece<K, V>>>,
    current: core::slice::Iter<'s, (K, V)>,
    remaining: usize,
}

impl<'s, K, V> Iterator for SnapshotIter<'s, K, V> {
    type Item = (&'s K, &'s V);

    #[inline]
    fn next(&mut self) -> Option<(&'s K, &'s V)> {
        loop {
            if let Some((k, v)) = self.current.next() {
                self.remaining -= 1;
                return Some((k, v));
            }
            self.current = self.pieces.next()?.entries.iter();
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<K, V> ExactSizeIterator for SnapshotIter<'_, K, V> {}
impl<K, V> FusedIterator for SnapshotIter<'_, K, V> {}

impl<K, V> fmt::Debug for SnapshotIter<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotIter")
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

// ----- Building ---------------------------------------------------------------

/// A shard captured by pointer: the hash, key and value of each live
/// entry as of a build's cut, and the shard's version. Taking it copies
/// pointers only (no user code, no clone), so a writer that must capture a
/// shard before changing it pays about a microsecond; the build clones
/// what the pointers reach afterwards (`Piece::from_refs`).
///
/// The pointers stay valid until the build ends: every entry and value
/// they reach was current at the capture, hence at the cut (no write
/// changes a shard between the cut and its capture), so it was retired, if
/// at all, after the cut, while the build was pinned (it pins before the
/// cut and stays pinned until it has cloned everything), and the epoch
/// frees nothing retired while a thread is pinned before that thread
/// unpins.
struct Refs<K, V> {
    version: u64,
    entries: Vec<(u64, *const K, *const V)>,
}

// SAFETY: a `Refs` is a list of shared references in raw form (see its
// docs for why they stay valid); sending it to another thread shares the
// keys and values, which needs exactly `K: Sync` and `V: Sync`.
unsafe impl<K: Sync, V: Sync> Send for Refs<K, V> {}

/// What a build holds for one captured shard.
enum Captured<K, V> {
    /// The previous snapshot's piece (the shard's version is unchanged).
    Reused(Arc<Piece<K, V>>),
    /// Pointers to clone.
    Refs(Refs<K, V>),
}

/// One build in progress: its number, the previous snapshot's pieces (to
/// reuse) and the shards captured so far, by id.
struct Build<K, V> {
    epoch: u64,
    /// Shared with the build itself, which reads it without the lock.
    previous: Arc<PieceMap<K, V>>,
    captured: HashMap<u64, Captured<K, V>, BuildHasherDefault<IdHasher>>,
}

/// The map's snapshot machinery: the cell with the latest snapshot, the
/// lock that makes builds take turns (it holds the last build number), the
/// build in progress, and the byte account.
pub(crate) struct Snapshots<K, V, S> {
    cell: SnapshotCell<Frozen<K, V, S>>,
    builder: crate::sync::Mutex<u64>,
    build: crate::sync::Mutex<Option<Build<K, V>>>,
    pub(crate) bytes: Arc<PieceBytes>,
}

impl<K, V, S> Snapshots<K, V, S> {
    pub(crate) fn new() -> Self {
        Snapshots {
            cell: SnapshotCell::new(),
            builder: crate::sync::Mutex::new(0),
            build: crate::sync::Mutex::new(None),
            bytes: Arc::new(PieceBytes::default()),
        }
    }

    /// Drops the map's reference to its latest snapshot.
    pub(crate) fn forget(&self) {
        let _one_builder = self.builder.lock();
        self.cell.clear();
    }
}

impl<K, V, S> Snapshots<K, V, S>
where
    K: Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Captures `shard` for build `epoch`: its content as of the build's
    /// cut, as the previous snapshot's piece if the shard's version is
    /// unchanged, otherwise as pointers ([`Refs`]), before anyone who
    /// entered the gate after the cut changes it. Called by writers about
    /// to change the shard; the build captures the shards nobody changed
    /// itself (the same `capture_once`, keeping the result without this
    /// lock). Once per shard and build; a second caller waits for the
    /// first, which copies pointers only. A capture for a build that has
    /// ended (a slow writer's) is dropped.
    #[cold]
    #[inline(never)]
    pub(crate) fn capture(&self, shard: &Shard<K, V>, epoch: u64, guard: &Guard) {
        shard.capture_once(epoch, || {
            let previous = match &*self.build.lock() {
                Some(build) if build.epoch == epoch => build.previous.clone(),
                _ => return, // the build has ended
            };
            let Some(captured) = take_capture(shard, &previous, guard) else {
                return;
            };
            if let Some(build) = self.build.lock().as_mut().filter(|b| b.epoch == epoch) {
                build.captured.insert(shard.id(), captured);
            }
        });
    }
}

/// The capture itself (see [`Snapshots::capture`]), by whoever claimed
/// it: the previous snapshot's piece if the shard's version is unchanged,
/// otherwise pointers. `None` if the shard was retired (only the broken
/// twins get here).
fn take_capture<K, V>(
    shard: &Shard<K, V>,
    previous: &PieceMap<K, V>,
    guard: &Guard,
) -> Option<Captured<K, V>>
where
    K: Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    // No write can change the shard now (writers after the cut wait for
    // this capture, those before it have finished), so the version and the
    // content agree.
    let version = shard.version();
    if let Some(piece) = previous
        .get(&shard.id())
        .filter(|piece| piece.version == version)
    {
        return Some(Captured::Reused(piece.clone()));
    }
    let mut entries = Vec::with_capacity(shard.live());
    shard
        .for_each_live(guard, |hash, key, value| {
            entries.push((hash, core::ptr::from_ref(key), core::ptr::from_ref(value)));
        })
        .ok()?;
    Some(Captured::Refs(Refs { version, entries }))
}

/// Ends a build, also when a user `Clone` panics in it: writers stop
/// capturing and what was captured is dropped.
struct EndBuild<'a, K, V> {
    gate: &'a WriteGate,
    build: &'a crate::sync::Mutex<Option<Build<K, V>>>,
}

impl<K, V> EndBuild<'_, K, V> {
    /// Ends the build (through `drop`) and returns what it captured.
    fn take(self) -> Option<Build<K, V>> {
        self.build.lock().take()
    }
}

impl<K, V> Drop for EndBuild<'_, K, V> {
    fn drop(&mut self) {
        self.gate.end_build();
        drop(self.build.lock().take());
    }
}

impl<K, V, S> Snapshots<K, V, S>
where
    K: Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: Clone,
{
    /// The cached snapshot, if no write has completed or begun since it was
    /// built.
    #[inline]
    fn unchanged(&self, gate: &WriteGate) -> Option<Snapshot<K, V, S>> {
        let cached = self.cell.load_full()?;
        (gate.quiet_writes() == Some(cached.writes)).then_some(Snapshot { frozen: cached })
    }

    /// Builds (or returns the cached) snapshot. See the module docs.
    pub(crate) fn snapshot(
        &self,
        directory: &Directory<K, V>,
        gate: &WriteGate,
        hasher: &S,
        stripe: &Stripe,
        guard: &Guard,
    ) -> Snapshot<K, V, S> {
        assert!(
            !gate.held_by_current_thread(),
            "SnapMap::snapshot() called inside a batch or a write closure of the same map: \
             it would wait for itself. Take the snapshot before or after the batch (a \
             snapshot of another map is fine here), or read the batch's own writes \
             through its handle"
        );
        if let Some(snapshot) = self.unchanged(gate) {
            return snapshot;
        }
        let mut last_epoch = self.builder.lock();
        if let Some(snapshot) = self.unchanged(gate) {
            return snapshot;
        }
        *last_epoch += 1;
        let epoch = *last_epoch;
        let previous: Arc<PieceMap<K, V>> = self
            .cell
            .load_full()
            .map(|frozen| {
                frozen
                    .pieces
                    .iter()
                    .map(|p| (p.shard_id, p.clone()))
                    .collect::<PieceMap<K, V>>()
            })
            .unwrap_or_default()
            .into();
        *self.build.lock() = Some(Build {
            epoch,
            previous: previous.clone(),
            captured: HashMap::default(),
        });
        let end = EndBuild {
            gate,
            build: &self.build,
        };

        // Step 2: the cut. With the gate closed no write is in progress:
        // list the current shards and announce the build, then reopen.
        let (writes, closed) = if injected(Bug::SnapshotWithoutGate) {
            (gate.quiet_writes().unwrap_or(u64::MAX), None)
        } else {
            let (writes, closed) = gate.close();
            (writes, Some(closed))
        };
        let table = directory.table(guard);
        let depth = table.depth();
        let cut: Vec<*mut Shard<K, V>> = table.distinct().collect();
        gate.begin_build(epoch);
        drop(closed);

        // Step 3: capture every shard of the cut that no writer has
        // captured yet (writers capture what they are about to change).
        // Pointers only: writers wait for a capture, never for a clone.
        // The build keeps its own captures here, by cut position, without
        // the build lock; writers' captures are in `Build::captured`.
        let mut own: Vec<Option<Captured<K, V>>> = Vec::with_capacity(cut.len());
        for &shard in &cut {
            // SAFETY: a distinct slot value of a table loaded under `guard`
            // is a shard kept alive by the epoch for `guard`'s life.
            let shard = unsafe { &*shard };
            let mut mine = None;
            shard.capture_once(epoch, || mine = take_capture(shard, &previous, guard));
            own.push(mine);
        }
        let mut build = end
            .take()
            .expect("the build ends only here or on unwinding");

        // Step 4: clone what was captured by pointer, assemble in hash
        // order and publish. Writers now change shards freely; what the
        // pointers reach stays alive while `guard` is pinned (`Refs`).
        let mut slots = vec![0u32; 1 << depth];
        let (mut pieces, mut len) = (Vec::with_capacity(cut.len()), 0);
        let (mut copied, mut reused) = (0, 0);
        for (&shard, mine) in cut.iter().zip(own) {
            // SAFETY: as above.
            let shard = unsafe { &*shard };
            // Every shard of the cut was captured above, by the build or a
            // writer; only the broken twin that skips the gate can miss one
            // (a writer that was not waited for retired it uncaptured).
            let Some(captured) = mine.or_else(|| build.captured.remove(&shard.id())) else {
                continue;
            };
            let piece = match captured {
                Captured::Reused(piece) => {
                    reused += 1;
                    piece
                }
                Captured::Refs(refs) => {
                    copied += 1;
                    // SAFETY: `refs` was captured for this build, and
                    // `guard` has been pinned since before its cut.
                    Arc::new(unsafe { Piece::from_refs(shard.id(), &refs, &self.bytes) })
                }
            };
            len += piece.entries.len();
            let span = 1usize << (depth - shard.depth());
            let first = (shard.prefix() as usize) << (depth - shard.depth());
            slots[first..first + span].fill(pieces.len() as u32);
            pieces.push(piece);
        }
        let frozen = Arc::new(Frozen {
            pieces: pieces.into_boxed_slice(),
            slots: slots.into_boxed_slice(),
            depth,
            len,
            writes,
            hasher: hasher.clone(),
        });
        self.cell.store(frozen.clone());
        drop(last_epoch);
        stripe.count(Event::SnapshotBuilds, 1);
        stripe.count(Event::SnapshotPiecesCopied, copied);
        stripe.count(Event::SnapshotPiecesReused, reused);
        Snapshot { frozen }
    }
}
