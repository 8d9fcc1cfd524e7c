//! One shard: Go's `sync.Map` (Go <= 1.23, `src/sync/map.go`), line by line.
//!
//! A shard is a whole read/dirty map of its own. The map hashes a key once,
//! the directory picks the shard from the top bits, and everything below
//! happens inside that one shard, so the costs Go pays for the whole map
//! (the dirty rebuild, the promotion, the mutex) are paid per shard here.
//!
//! # State
//!
//! ```text
//!   Head (16 bytes, from crate::slab; the directory's slots point here)
//!    ├─ read:   AtomicPtr: view address | amended | 64 - log2(slots)  (lock-free readers)
//!    └─ shard ──► Shard
//!                  ├─ head, place (depth, prefix, id)
//!                  └─ locked: Mutex<Dirty>          (writers of new keys)
//!                       ├─ table: Option<Table>   every non-expunged read entry + new keys
//!                       └─ misses: usize          slow-path lookups since the last promotion
//! ```
//!
//! The two halves live apart: the head in a block of its own, packed with
//! the other shards' heads (`crate::slab` says why: a read hit at 1M keys
//! no longer misses on it), the lock and its state on their own cache
//! line, so writers taking the lock do not invalidate the line readers
//! load the view pointer from. A read hit touches the head only
//! ([`Head::get_fast_with`]); everything else goes from the head to the
//! shard.
//!
//! Invariants (all hold whenever the lock is free):
//!
//! 1. `amended` is set iff `table` is `Some` (Go: `dirty != nil` iff
//!    `read.amended`, after `dirtyLocked`).
//! 2. If `table` is `Some`, it holds every entry of the read view that is
//!    not expunged, plus the new keys; a key is in at most one entry.
//! 3. An entry is expunged only while `table` is `Some` and it is not in it.
//!    Promotion drops expunged entries from the next view.
//! 4. `dead` lists exactly the expunged entries of the view, each once
//!    (un-expunging takes an entry off the list as it puts it back in
//!    dirty). They are in no other current table, so the promotion that
//!    drops them from the view frees them with it. With invariants 2 and 3, the
//!    entries the shard's current tables hold are dirty's plus `dead`, or
//!    the view's when there is no dirty table. (A migration's drain also
//!    puts the entries it hands over on `dead`: the shard is retired right
//!    after, and the heap ones go with it.)
//!
//! # Paths (each Go function has a counterpart here)
//!
//! | Go | here | fast path (no lock) | slow path (lock) |
//! |---|---|---|---|
//! | `Load` | [`Head::get_fast_with`] / [`Shard::get_slow_with`] | hit in the view, or a miss in an un-amended view | re-check the view, look in dirty, count a miss |
//! | `Swap` | [`Shard::insert`] | `trySwap` on a view entry | un-expunge + put back, or swap a dirty entry, or add a new key |
//! | `LoadOrStore` | [`Shard::try_insert`] | `tryLoadOrStore` on a view entry | as `Swap`, counting a miss for a dirty hit |
//! | `LoadAndDelete` | [`Shard::remove`] | `delete` on a view entry | remove a new key from dirty, count a miss |
//! | `CompareAndSwap` / `CompareAndDelete` | [`Shard::compare_and_swap`], [`Shard::compare_and_delete`] | on a view entry | find in dirty, count a miss |
//! | `Range` + `CompareAndDelete` (retain), compute | [`Shard::remove_if_same`], [`Shard::compute`] | by identity on a view entry | find in dirty, count a miss; a new key as `LoadOrStore` |
//! | `Range` | [`Shard::view_for_iter`] | an un-amended view | promote, then walk the new view |
//! | `Clear` | [`Shard::clear`] | an empty view | expunge every entry, publish an empty view |
//! | `missLocked` | `miss_locked` | | promote when `misses >= min(len(dirty), threshold)` |
//! | `dirtyLocked` | `rebuild_dirty_locked` | | copy the view's live entries, expunging deleted ones |
//!
//! # Differences from Go
//!
//! - The dirty rebuild copies one shard, never the whole map.
//! - A promotion threshold (builder option) can promote earlier than Go's
//!   `misses >= len(dirty)`; the default is Go's rule.
//! - `clear()` expunges every entry it removes, so a writer holding a stale
//!   view cannot store into an entry that is no longer in the map: it finds
//!   the entry expunged and takes the lock, as in any other expunged case.
//! - Replaced views and values are freed through the epoch, not a GC.
//! - **Compaction** (issue 11): Go frees a removed key only after the next
//!   new key's `dirtyLocked` and the promotion after it, so a shard that
//!   only removes holds its removed keys forever. Here a removal that
//!   leaves the view holding more removed keys than live ones (plus
//!   [`REMOVED_KEYS_SLACK`]) asks the caller to [`Shard::compact`]: under
//!   the lock, promote pending keys, `dirtyLocked`, promote. Amortised over
//!   the removals that made the view sparse, it is O(1) per removal. Loom
//!   model: `loom-tests/tests/compact.rs`.
//! - Operations that run user code on an entry found in dirty (`update`,
//!   compare-and-swap, compare-and-delete) take its pointer under the lock
//!   and run the code after unlocking (the epoch keeps the entry alive), so
//!   user code never runs under the lock.
//! - **Retirement** (for migration, see `crate::migrate`): a shard replaced by
//!   a split or merge is marked `retired` under its lock and its view is
//!   tagged amended, so every miss reaches the lock. Every slow path checks
//!   `retired` right after locking and returns [`Retired`]; the caller then
//!   retries from the current directory. Reads keep working on a retired
//!   shard's view (its values are still there, readable through the seal);
//!   every lock-free write fails on it: its live entries were sealed when
//!   the new shards took them, and its deleted ones expunged, so the writer
//!   takes the lock, finds `retired` and retries.
//! - **Entries move, they are not shared across views** (issue 12: entries
//!   live in the view's slots). Go's promotion publishes `dirty` as the new
//!   `read`, sharing every `*entry`; here the new view is built by sealing
//!   each entry of dirty and moving its key and value into the new slots
//!   (`entry`, "The value cell"). A lock-free operation that finds a seal
//!   waits for the lock holder and retries on the current tables. Loom
//!   model: `loom-tests/tests/seal.rs`.

pub(crate) mod entry;
pub(crate) mod read_view;

use core::cell::Cell;

use equivalent::Equivalent;

use crate::compute::{Compute, Operation};
use crate::reclaim::{retire, retire_with};
use crate::stats::{Event, RetiredKind, Stripe};
use crate::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use crate::sync::epoch::Guard;
use crate::sync::stat_atomic::{AtomicIsize, Ordering as StatOrdering};
#[cfg(snapmap_loom)]
use crate::sync::unmodelled::{AtomicUsize, Ordering as UnmodelledOrdering};
use crate::sync::{CachePadded, Mutex, Published};
use crate::thread::next_unique_id;
use crate::twins::{Bug, injected};
use entry::{Entry, EntryRef, Hashed, LoadOrStore, ValueNode};
use read_view::{
    ReadView, Table, ViewHeader, find, rehash, shift, table_hash, untag, with_amended,
};

/// What a shard operation needs from the map around it, and what it tells
/// the map back (work done, migration wanted).
pub(crate) struct Ctx<'a> {
    /// Promote when `misses >= min(len(dirty), promote_after)`.
    pub(crate) promote_after: usize,
    /// A shard whose dirty table grows past this asks to be split.
    pub(crate) capacity: usize,
    /// Store new keys' first values inline whatever `V` (the map was
    /// built with `Builder::inline_values`, so `V: Copy`).
    pub(crate) inline_values: bool,
    /// The calling thread's stripe of the map's counters.
    pub(crate) stripe: &'a Stripe,
    /// Entries this operation copied (rebuilds, splits, merges).
    pub(crate) copied: Cell<u64>,
    /// Set when the shard passed its capacity.
    pub(crate) wants_split: Cell<bool>,
    /// Set when the shard became sparse enough to try a merge.
    pub(crate) wants_merge: Cell<bool>,
    /// Set when a removal left the shard's view holding more removed keys
    /// than live ones (see [`Shard::compact`]).
    pub(crate) wants_compact: Cell<bool>,
    /// The snapshot build this write must capture shards for before
    /// changing them, or 0 (`WriteGate::build_epoch`, read inside the
    /// gate). Shards made by a split or merge are born captured for it.
    pub(crate) build: u64,
    /// The mark of the cycle (between two cuts) this write belongs to:
    /// the last cut's number plus one, never 0 (`WriteGate::cycle`, read
    /// inside the gate); see [`Shard::list_once`].
    pub(crate) cycle_mark: u64,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
        promote_after: usize,
        capacity: usize,
        inline_values: bool,
        stripe: &'a Stripe,
        build: u64,
        cycle_mark: u64,
    ) -> Self {
        Ctx {
            promote_after,
            capacity,
            inline_values,
            stripe,
            build,
            cycle_mark,
            copied: Cell::new(0),
            wants_split: Cell::new(false),
            wants_merge: Cell::new(false),
            wants_compact: Cell::new(false),
        }
    }

    /// Counts entries copied by this operation.
    pub(crate) fn copied(&self, entries: u64) {
        self.copied.set(self.copied.get() + entries);
        self.stripe.count(Event::EntriesCopied, entries);
    }

    /// The most live entries two buddies may hold together to merge.
    pub(crate) fn merge_limit(&self) -> usize {
        (self.capacity / 4).max(1)
    }
}

/// A shard whose view holds more removed keys than live ones plus this many
/// is compacted by the removal that tips it ([`Shard::compact`]). The slack
/// keeps tiny shards from rebuilding on every removal. Under loom the
/// compaction model lowers it ([`removed_keys_slack`]) so that a
/// two-key shard reaches the compaction; the other models keep 8 and so
/// never compact.
pub(crate) const REMOVED_KEYS_SLACK: usize = 8;

/// The removed keys a shard may hold beyond its live count before a removal
/// compacts it ([`REMOVED_KEYS_SLACK`]).
#[cfg(not(snapmap_loom))]
#[inline(always)]
pub(crate) const fn removed_keys_slack() -> usize {
    REMOVED_KEYS_SLACK
}

#[cfg(snapmap_loom)]
static REMOVED_KEYS_SLACK_NOW: AtomicUsize = AtomicUsize::new(REMOVED_KEYS_SLACK);

/// The removed keys a shard may hold beyond its live count before a removal
/// compacts it (a model may lower it with [`set_removed_keys_slack`]).
#[cfg(snapmap_loom)]
pub(crate) fn removed_keys_slack() -> usize {
    // Relaxed: set once before `loom::model`, a std atomic loom never sees.
    REMOVED_KEYS_SLACK_NOW.load(UnmodelledOrdering::Relaxed)
}

/// Sets the removed-keys slack for the rest of the process (loom builds
/// only; the compaction model sets 0 before `loom::model`).
#[cfg(snapmap_loom)]
pub fn set_removed_keys_slack(slack: usize) {
    // Relaxed: see `removed_keys_slack`.
    REMOVED_KEYS_SLACK_NOW.store(slack, UnmodelledOrdering::Relaxed);
}

/// What [`Shard::remove_if_same`] did.
pub(crate) enum Removal<'g, V> {
    Removed,
    /// The key is absent or holds another value.
    Kept,
    /// The key lives in another entry than the one `seen` came from (a
    /// copy, or a new entry), whose value, this one, is not `seen` by
    /// identity: ask again with it.
    Moved(&'g V),
}

/// The shard was retired by a split or merge: retry from the directory.
#[derive(Debug)]
pub(crate) struct Retired;

/// The lock-protected half of a shard.
pub(crate) struct Dirty<K, V> {
    /// Go's `dirty` (`None` is Go's `nil`).
    table: Option<Table<K, V>>,
    /// Go's `misses`.
    misses: usize,
    /// Replaced by a split or merge; every operation must retry.
    retired: bool,
    /// Entries expunged since the last promotion, to retire when they
    /// leave the view (invariant 4).
    dead: Vec<Hashed<K, V>>,
}

impl<K, V> Dirty<K, V> {
    fn find<Q: ?Sized + Equivalent<K>>(&self, hash: u64, key: &Q) -> Option<&Entry<K, V>> {
        self.find_ref(hash, key).map(|entry| &**entry)
    }

    /// The table's own pointer to the entry for `key` (to keep beyond the
    /// lock while pinned, see [`EntryRef::pinned`]).
    fn find_ref<Q: ?Sized + Equivalent<K>>(&self, hash: u64, key: &Q) -> Option<&EntryRef<K, V>> {
        self.table.as_ref().and_then(|t| find(t, hash, key))
    }

    /// Puts an un-expunged entry back (Go: `m.dirty[key] = e`) and takes
    /// it off `dead` (invariant 4).
    fn put_back(&mut self, entry: &Entry<K, V>) {
        debug_assert!(!entry.is_expunged(), "un-expunge before putting back");
        // A scan of at most one rebuild's expunged entries, on the rare
        // path that revives a key deleted before that rebuild. The pointer
        // put back is the one from `dead` (it carries the entry's
        // allocation's provenance, which its eventual free needs; one made
        // from `&Entry` would not).
        let at = self
            .dead
            .iter()
            .position(|e| e.entry.points_to(entry))
            .expect("invariant 4: an expunged entry is on `dead`");
        let entry = self.dead.swap_remove(at);
        let table = self
            .table
            .as_mut()
            .expect("invariant 3: an expunged entry implies a dirty table");
        table.insert_unique(rehash(&entry), entry, rehash);
    }

    /// Every entry the shard's current tables hold, each once (invariant
    /// 4). Copied out, so the caller may free or retire them.
    fn owned_entries(&self, view: &ReadView<K, V>) -> Vec<Hashed<K, V>> {
        match &self.table {
            Some(table) => table.iter().chain(&self.dead).copied().collect(),
            None => view.iter().hashed().collect(),
        }
    }

    /// Whether this shard has been replaced.
    pub(crate) fn is_retired(&self) -> bool {
        self.retired
    }
}

/// The read side of a shard: the one word a read hit loads, in a block of
/// its own from [`crate::slab`] (packed with the other shards' heads; see
/// there for why), which the directory's slots point to. It points back
/// to its shard for everything but a read hit.
pub(crate) struct Head<K, V> {
    /// Tagged pointer to the current [`ReadView`]; never null.
    read: AtomicPtr<ViewHeader<K, V>>,
    /// The shard this head belongs to, set once before the shard is
    /// published and fixed for its life.
    shard: AtomicPtr<Shard<K, V>>,
}

impl<K, V> Head<K, V> {
    /// The shard this head belongs to.
    #[inline]
    pub(crate) fn shard<'g>(&self, _guard: &'g Guard) -> &'g Shard<K, V> {
        // SAFETY: as `shard_ptr`; a shard lives as long as its head, which
        // the caller reached while pinned by `_guard` (a head is freed
        // with its shard, through the epoch once retired).
        unsafe { &*self.shard_ptr() }
    }

    /// The shard this head belongs to, as the pointer its `Box` gave
    /// (with that allocation's provenance: the map frees shards through
    /// it).
    #[inline]
    pub(crate) fn shard_ptr(&self) -> *mut Shard<K, V> {
        // Relaxed: stored before the head was published (the directory
        // slot's Release store, or the table's), which the caller's Acquire
        // load of the slot already ordered before this load.
        self.shard.load(Ordering::Relaxed)
    }

    /// The current view, its home-slot shift and its amended flag.
    #[inline]
    pub(crate) fn view_with_shift<'g>(&self, _guard: &'g Guard) -> (&'g ReadView<K, V>, u32, bool) {
        // Acquire: pairs with the Release stores in `publish_locked` and
        // `mark_amended_locked`: the view's table is visible.
        let word = self.read.load(Ordering::Acquire);
        let (view, amended) = untag(word);
        // SAFETY: the pointer is never null; a view is retired through the
        // epoch only after it is replaced (or with its retired shard), and
        // `_guard` was pinned before this load, so the view outlives `'g`.
        (unsafe { &*view }, shift(word), amended)
    }

    /// The lock-free half of `Load`: `Ok(found(entry))` (the value, or
    /// the key and the value for `get_key_value`) if the view answered,
    /// `Err(())` if the caller must take [`Shard::get_slow_with`]. From the
    /// head alone: a read hit touches no other part of the shard.
    #[inline]
    pub(crate) fn get_fast_with<'g, Q, R>(
        &self,
        hash: u64,
        key: &Q,
        guard: &'g Guard,
        speculate: bool,
        found: impl FnOnce(&'g Entry<K, V>) -> Option<R>,
    ) -> Result<Option<R>, ()>
    where
        Q: ?Sized + Equivalent<K>,
        K: 'g,
        V: 'g,
    {
        let (view, shift, amended) = self.view_with_shift(guard);
        match view.find_at(shift, hash, key, speculate) {
            Some(entry) => Ok(found(entry)),
            None if amended => Err(()),
            None => Ok(None),
        }
    }
}

/// Owns a shard's [`Head`] block (freed in the shard's `Drop`).
struct HeadBlock<K, V>(core::ptr::NonNull<Head<K, V>>);

// SAFETY: the block holds two atomic pointers, which any thread may use;
// what they point to is governed by the shard (whose other fields decide
// its `Send`/`Sync`, as before the head moved out of it).
unsafe impl<K, V> Send for HeadBlock<K, V> {}
// SAFETY: as above.
unsafe impl<K, V> Sync for HeadBlock<K, V> {}

/// A shard's fixed identity.
struct Place {
    /// The shard holds every hash whose top `depth` bits equal `prefix`.
    depth: u32,
    prefix: u64,
    /// Unique for the life of the process (snapshots key their reusable
    /// pieces by it; an address could be reused after a free).
    id: u64,
    /// The map's `huge_pages` option: where the shard's views are
    /// allocated (`crate::arena`); shards made from it inherit it.
    huge_pages: bool,
}

/// The write side: the lock, and the live count merges look at.
struct Locked<K, V> {
    dirty: Mutex<Dirty<K, V>>,
    /// Live entries (approximate while operations are in flight).
    live: AtomicIsize,
    /// Bumped after every change to the shard's content, so that a snapshot
    /// can tell whether its copy of the shard is still current (see
    /// `crate::snapshot`).
    version: AtomicU64,
    /// The last snapshot build for which this shard's content (as of that
    /// build's cut) has been captured: writers that entered after the cut
    /// wait for it before changing the shard (`Shard::capture_once`).
    captured: AtomicU64,
    /// The last build for which a capture was claimed (in progress or
    /// done).
    capturing: AtomicU64,
    /// The mark of the last cycle between two cuts in which this shard was
    /// put on the map's list of changed shards (`Shard::list_once`).
    listed: AtomicU64,
}

/// One shard. See the module docs.
pub(crate) struct Shard<K, V> {
    head: HeadBlock<K, V>,
    /// Where the shard sits in hash space, and who it is. Fixed for the
    /// shard's life.
    place: Published<Place>,
    locked: CachePadded<Locked<K, V>>,
}

impl<K, V> Shard<K, V> {
    /// A shard at `(depth, prefix)` whose view holds `entries` (already
    /// promoted: no dirty table), `live` of them live.
    pub(crate) fn with_entries(
        depth: u32,
        prefix: u64,
        entries: Vec<Hashed<K, V>>,
        live: usize,
        huge_pages: bool,
    ) -> Self {
        let len = entries.len();
        Shard {
            head: HeadBlock(crate::slab::alloc(Head {
                read: AtomicPtr::new(ReadView::from_entries(entries, len, huge_pages)),
                shard: AtomicPtr::new(core::ptr::null_mut()),
            })),
            place: Published::new(Place {
                depth,
                prefix,
                id: next_unique_id(),
                huge_pages,
            }),
            locked: CachePadded::new(Locked {
                dirty: Mutex::new(Dirty {
                    table: None,
                    misses: 0,
                    retired: false,
                    dead: Vec::new(),
                }),
                live: AtomicIsize::new(live as isize),
                version: AtomicU64::new(0),
                captured: AtomicU64::new(0),
                capturing: AtomicU64::new(0),
                listed: AtomicU64::new(0),
            }),
        }
    }

    /// Moves the shard to the heap and points its head back at it: the
    /// pointer the directory's slots are given (through [`Shard::head_ptr`])
    /// and the map frees the shard with (`Box::from_raw`).
    pub(crate) fn boxed(self) -> *mut Self {
        let shard = Box::into_raw(Box::new(self));
        // Relaxed: the shard is not shared yet; the directory's Release
        // publication orders this store before any reader's load.
        // SAFETY: just allocated, not shared.
        unsafe { (*shard).head().shard.store(shard, Ordering::Relaxed) };
        shard
    }

    /// The shard's head block, which the directory's slots point to.
    #[inline]
    pub(crate) fn head_ptr(&self) -> *mut Head<K, V> {
        self.head.0.as_ptr()
    }

    /// The shard's head.
    #[inline]
    fn head(&self) -> &Head<K, V> {
        // SAFETY: the block is allocated with the shard and freed only in
        // its `Drop`.
        unsafe { self.head.0.as_ref() }
    }

    /// Marks a shard made by a split or merge during snapshot build
    /// `epoch` (0: none) as captured for it, so that no writer copies it
    /// for that build: it is not in the build's cut, whose shards it
    /// replaces were captured before the split or merge. Before
    /// publication.
    pub(crate) fn born_during(self, epoch: u64) -> Self {
        // Relaxed: the shard is not shared yet; the directory's Release
        // publication orders this store before anyone reads it. (Its
        // `capturing` claim may stay older: `capture_once` looks at it only
        // while the shard still needs a capture.)
        self.locked.captured.store(epoch, Ordering::Relaxed);
        self
    }

    /// Marks the shard as listed for the cycle `mark` (a number that
    /// differs between two cuts, never 0): true for the one caller that
    /// moved the mark, which puts the shard on the map's list of changed
    /// shards (`crate::snapshot`, "Changed shards"). Inside the gate.
    #[inline]
    pub(crate) fn list_once(&self, mark: u64) -> bool {
        // Relaxed: the mark only dedupes the list; what a build reads of
        // the shard is ordered by the gate (the list is taken at the cut,
        // after every writer that pushed to it has left the gate).
        self.locked.listed.load(Ordering::Relaxed) != mark
            // Relaxed: as above; the swap makes one of two racing writers
            // (lock-free writes of one shard) the one that lists it.
            && self.locked.listed.swap(mark, Ordering::Relaxed) != mark
    }

    /// Whether a writer must call [`Shard::capture_once`] for snapshot
    /// build `epoch` before changing this shard.
    #[inline]
    pub(crate) fn needs_capture(&self, epoch: u64) -> bool {
        // Acquire: pairs with the Release in `capture_once`: the capture's
        // reads of the entries happen before this writer's change.
        self.locked.captured.load(Ordering::Acquire) < epoch
    }

    /// Runs `capture` once for snapshot build `epoch`, before any writer
    /// that entered after the build's cut changes the shard: the first
    /// caller claims the capture and runs it; later callers wait until it
    /// is done. If `capture` panics, the claim is released (another caller
    /// captures) and the panic propagates.
    pub(crate) fn capture_once(&self, epoch: u64, capture: impl FnOnce()) {
        struct Unclaim<'a>(&'a AtomicU64, u64);
        impl Drop for Unclaim<'_> {
            fn drop(&mut self) {
                // Relaxed: only picks who captures next (see below).
                self.0.store(self.1, Ordering::Relaxed);
            }
        }
        while self.needs_capture(epoch) {
            // Relaxed: the claim only decides who captures; what the
            // capture read is published by `captured` (Release below), and
            // the capturer is already ordered after every write before the
            // cut (it is the build, or a writer that entered after it).
            let claimed = self.locked.capturing.load(Ordering::Relaxed);
            if claimed < epoch
                && self
                    .locked
                    .capturing
                    .compare_exchange(claimed, epoch, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                let unclaim = Unclaim(&self.locked.capturing, claimed);
                capture();
                core::mem::forget(unclaim);
                // Release: pairs with the Acquire in `needs_capture`.
                self.locked.captured.store(epoch, Ordering::Release);
                return;
            }
            // Another thread is capturing (user `Clone` runs in it).
            crate::sync::yield_now();
        }
    }

    /// The shard's local depth.
    #[inline]
    pub(crate) fn depth(&self) -> u32 {
        self.place.get().depth
    }

    /// The shard's hash prefix (its top `depth()` bits).
    #[inline]
    pub(crate) fn prefix(&self) -> u64 {
        self.place.get().prefix
    }

    /// The shard's unique id.
    pub(crate) fn id(&self) -> u64 {
        self.place.get().id
    }

    /// Whether the shard's views come from huge-page regions (the map's
    /// `huge_pages` option).
    pub(crate) fn huge_pages(&self) -> bool {
        self.place.get().huge_pages
    }

    /// The content version (see [`Shard::bump_version`]).
    pub(crate) fn version(&self) -> u64 {
        // Acquire: pairs with the Release in `bump_version`: a copy made
        // after reading version `v` sees every change counted in `v`.
        self.locked.version.load(Ordering::Acquire)
    }

    /// Records that the shard's content changed. Called after the change,
    /// inside the write gate.
    ///
    /// A load and a store, not a read-modify-write (no locked instruction
    /// on the write path): two writers of one shard may both store the
    /// same number, and that loses nothing, because a version is only ever
    /// compared for *equality* with the one a capture recorded, and every
    /// store between two cuts is larger than it. A capture records the
    /// version at the cut (the first writer after a cut captures before it
    /// writes), and every writer inside the gate after that cut loads at
    /// least that number (the cut waited for the writers before it, and
    /// the ones after it synchronised with the gate's reopening), so it
    /// stores at least that number plus one; the next cut waits for all of
    /// them. The loom snapshot models run this code, and their twin
    /// `VersionNotBumped` shows what a version that fails to change costs:
    /// a stale piece reused.
    #[inline]
    pub(crate) fn bump_version(&self) {
        if injected(Bug::VersionNotBumped) {
            return;
        }
        // Relaxed: ordered before the store below, which publishes it.
        let version = self.locked.version.load(Ordering::Relaxed);
        // Release: a snapshot that reads the new version (Acquire) sees the
        // change; one that read the old version sees the new one when it
        // re-checks under the closed gate, and copies again.
        self.locked
            .version
            .store(version.wrapping_add(1), Ordering::Release);
    }

    /// The first and last hash this shard holds.
    pub(crate) fn hash_range(&self) -> (u64, u64) {
        let Place { depth, prefix, .. } = *self.place.get();
        if depth == 0 {
            (0, u64::MAX)
        } else {
            let first = prefix << (64 - depth);
            (first, first | (u64::MAX >> depth))
        }
    }

    /// The approximate number of live entries.
    pub(crate) fn live(&self) -> usize {
        // Relaxed: a size estimate.
        self.locked.live.load(StatOrdering::Relaxed).max(0) as usize
    }

    /// Takes the shard lock (for migration, which checks `retired` itself:
    /// it must also see the buddy's state).
    pub(crate) fn lock(&self) -> crate::sync::MutexGuard<'_, Dirty<K, V>> {
        self.locked.dirty.lock()
    }

    /// The prologue of every slow path: takes the shard lock, or returns
    /// [`Retired`] if a split or merge has replaced the shard (the caller
    /// retries from the directory). The guard it returns is the witness
    /// every `*_locked` method takes (`&mut Dirty`).
    #[inline]
    fn lock_current(&self) -> Result<crate::sync::MutexGuard<'_, Dirty<K, V>>, Retired> {
        let dirty = self.locked.dirty.lock();
        if dirty.retired {
            return Err(Retired);
        }
        Ok(dirty)
    }

    /// Frees every entry this (current) shard's tables hold, with its key
    /// and value, now, bypassing the epoch.
    ///
    /// # Safety
    ///
    /// The caller has exclusive access to the map that owns this shard, and
    /// every reference ever handed out borrowed that map. The shard is
    /// dropped right after (its tables then point to freed entries).
    pub(crate) unsafe fn free_entries_exclusive(&mut self) {
        // Relaxed: exclusive access; the `&mut` hand-over ordered all stores.
        let (view, _) = untag(self.head().read.load(Ordering::Relaxed));
        // SAFETY: the view pointer is never null and, with exclusive access,
        // not being freed concurrently.
        let view = unsafe { &*view };
        for entry in self.locked.dirty.get_mut().owned_entries(view) {
            if view.contains(&entry) {
                continue; // the view's own: dropped with it (`Drop`)
            }
            // SAFETY: exclusive access to the whole map (our contract), and
            // `owned_entries` lists each entry once; a heap entry is owned
            // by the tables alone.
            unsafe { entry.entry.free_exclusive() };
        }
    }

    /// Moves every live entry's key and value out of this (current) shard
    /// into `out`, freeing the entries now, and leaves the shard empty (an
    /// empty view, no dirty table), so that dropping it later touches none
    /// of them. For the map's owned `IntoIterator`.
    ///
    /// # Safety
    ///
    /// As [`Shard::free_entries_exclusive`]: the caller owns the map (it is
    /// being consumed) and every reference ever handed out borrowed it.
    pub(crate) unsafe fn drain_entries_exclusive(&mut self, out: &mut Vec<(K, V)>) {
        let empty = ReadView::from_entries([], 0, false);
        // Relaxed: exclusive access; the ownership hand-over ordered every
        // store.
        let old = self.head().read.swap(empty, Ordering::Relaxed);
        let (view_ptr, _) = untag(old);
        // SAFETY: the view pointer is never null; with exclusive access it
        // is not freed concurrently. It was owned by the shard and left it
        // just now: freed below, once, as `Drop` frees a shard's view.
        let view = unsafe { &*view_ptr };
        let dirty = self.locked.dirty.get_mut();
        let entries = dirty.owned_entries(view);
        dirty.table = None;
        dirty.dead.clear();
        for entry in entries {
            // SAFETY: exclusive access to the whole map (our contract);
            // `owned_entries` listed each entry once. Taking the parts
            // seals the entry, so its drop below leaves them.
            out.extend(unsafe { entry.take_parts_exclusive() });
            if !view.contains(&entry) {
                // SAFETY: as above; the shard's tables no longer reach this
                // heap entry, freed once, here.
                unsafe { entry.entry.free_exclusive() };
            }
        }
        // SAFETY: see above: the view left the shard, nothing else holds it,
        // and this is its one free.
        unsafe { ReadView::free(view_ptr) };
    }

    /// The current view and its amended flag.
    #[inline]
    fn view<'g>(&self, guard: &'g Guard) -> (&'g ReadView<K, V>, bool) {
        let (view, _, amended) = self.head().view_with_shift(guard);
        (view, amended)
    }

    /// Removed keys the view holds now (deleted or expunged entries): they
    /// are freed when the view is replaced. O(view); for `stats()`.
    pub(crate) fn removed_keys_held(&self, guard: &Guard) -> usize {
        let (view, _) = self.view(guard);
        view.iter().filter(|(_, entry)| !entry.is_live()).count()
    }
}

impl<K, V> Drop for Shard<K, V> {
    fn drop(&mut self) {
        // Relaxed: `&mut self`; nothing else can touch the shard.
        let (view, _) = untag(self.head().read.load(Ordering::Relaxed));
        // SAFETY: the current view was made by `ReadView::from_entries` and is
        // owned by this shard (a view is retired only when replaced). A
        // shard is dropped either with its map (no reader borrows it any
        // more) or through the epoch after being retired (no reader pinned
        // before its retirement is left). The view drops the keys and
        // values of its slots that were not sealed (moved to the shards
        // that replaced this one); the dirty table owns nothing (heap
        // entries are freed by `free_entries_exclusive` or retired on
        // their own).
        unsafe { ReadView::free(view) };
        // SAFETY: the head block was allocated with the shard and is freed
        // once, here; no reader holds it any more (as for the view above).
        unsafe { crate::slab::free(self.head.0) };
    }
}

/// The result of an operation that must be retried on a retired shard,
/// handing back what it was given.
pub(crate) type Retry<T, P> = Result<T, P>;

impl<K, V> Shard<K, V>
where
    K: Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Counts a live entry added (`+1`) or removed (`-1`), and asks for a
    /// merge when the shard has become sparse.
    #[inline]
    fn adjust_live(&self, ctx: &Ctx<'_>, delta: isize) {
        ctx.stripe.adjust_len(delta);
        // Relaxed: a size estimate for merge decisions.
        let live = self.locked.live.fetch_add(delta, StatOrdering::Relaxed) + delta;
        if delta < 0 && live <= (ctx.merge_limit() / 2) as isize {
            ctx.wants_merge.set(true);
        }
    }

    /// Counts a live entry removed, and asks for a merge if the shard has
    /// become sparse, or for a compaction if its view now holds more
    /// removed keys than live ones (plus [`REMOVED_KEYS_SLACK`]).
    #[inline]
    fn removed_one(&self, ctx: &Ctx<'_>, guard: &Guard) {
        self.adjust_live(ctx, -1);
        if self.holds_too_many_removed(guard) {
            ctx.wants_compact.set(true);
        }
    }

    /// Whether the view holds more removed keys than live ones, plus the
    /// slack: `held - live > live + slack`. `live` counts new keys still
    /// only in dirty too, so this errs on the side of not compacting.
    #[inline]
    fn holds_too_many_removed(&self, guard: &Guard) -> bool {
        let held = self.view(guard).0.len();
        // Relaxed: a size estimate for a tuning decision.
        let live = self.locked.live.load(StatOrdering::Relaxed).max(0) as usize;
        held.saturating_sub(live) > live + removed_keys_slack()
    }

    /// Drops the removed keys the view holds: promotes pending new keys,
    /// rebuilds dirty from the view (expunging every deleted entry), and
    /// promotes again, so the new view holds only live entries and the
    /// expunged ones are retired with the old view. One shard's copy,
    /// paid for by the removals that made the view hold more removed keys
    /// than live ones; without it a shard that only ever removes would hold
    /// its removed keys until its next new key (Go's `sync.Map` holds them
    /// until the next `dirtyLocked` and promotion).
    ///
    /// The content does not change (the same keys with the same values),
    /// so neither the shard's version nor a snapshot build's capture is
    /// involved; each step is one the protocol already takes (promotion,
    /// Go's `dirtyLocked`), in an order it already takes them.
    pub(crate) fn compact(&self, ctx: &Ctx<'_>, guard: &Guard) {
        let Ok(mut dirty) = self.lock_current() else {
            return; // replaced: the shards that replaced it hold no removed keys
        };
        if !self.holds_too_many_removed(guard) {
            return; // compacted by another remover meanwhile
        }
        if dirty.table.is_some() {
            self.promote_locked(&mut dirty, ctx, guard);
        }
        let (view, _) = self.view(guard);
        if injected(Bug::CompactWithoutExpunge) {
            // The broken twin: leave the deleted entries out without
            // expunging them (and leak them: the model reports the lost
            // store instead of a use after free).
            let live: Vec<_> = view.iter().hashed().filter(|e| e.is_live()).collect();
            let len = live.len();
            self.publish_locked(ReadView::from_entries(live, len, self.huge_pages()), guard);
            return;
        }
        self.rebuild_dirty_locked(&mut dirty, view, ctx);
        self.promote_locked(&mut dirty, ctx, guard);
        ctx.stripe.count(Event::Compactions, 1);
    }

    // ----- Load -------------------------------------------------------

    /// The locked half of `Load`, answering with `found(entry)` (see
    /// [`Head::get_fast_with`]).
    #[cold]
    pub(crate) fn get_slow_with<'g, Q, R>(
        &self,
        hash: u64,
        key: &Q,
        ctx: &Ctx<'_>,
        guard: &'g Guard,
        found: impl Fn(&'g Entry<K, V>) -> Option<R>,
    ) -> Retry<Option<R>, Retired>
    where
        Q: ?Sized + Equivalent<K>,
    {
        self.lookup_locked(hash, key, ctx, guard, &found, &found)
    }

    /// Finds `key` on a slow path. Used by the operations that may run user
    /// code on the entry, after the lock is released: an entry found in
    /// dirty stays alive for the guard's life (the epoch), even if it is
    /// unlinked meanwhile.
    #[cold]
    fn find_slow<'g, Q>(
        &self,
        hash: u64,
        key: &Q,
        ctx: &Ctx<'_>,
        guard: &'g Guard,
    ) -> Retry<Option<&'g Entry<K, V>>, Retired>
    where
        Q: ?Sized + Equivalent<K>,
    {
        self.lookup_locked(hash, key, ctx, guard, Some, Some)
    }

    /// Go's `Load` after `m.mu.Lock()`: re-check the view (a promotion may
    /// have moved the key there while we waited for the lock), then look in
    /// dirty and count a miss. `in_view` and `in_dirty` turn the entry found
    /// into the caller's result (`in_dirty` runs under the lock).
    fn lookup_locked<'g, Q, R>(
        &self,
        hash: u64,
        key: &Q,
        ctx: &Ctx<'_>,
        guard: &'g Guard,
        in_view: impl FnOnce(&'g Entry<K, V>) -> Option<R>,
        in_dirty: impl FnOnce(&'g Entry<K, V>) -> Option<R>,
    ) -> Retry<Option<R>, Retired>
    where
        Q: ?Sized + Equivalent<K>,
    {
        let mut dirty = self.lock_current()?;
        if injected(Bug::NoRecheckUnderLock) {
            // The broken twin trusts the view it saw before locking; after a
            // promotion there is no dirty table left to look in.
            if dirty.table.is_none() {
                return Ok(None);
            }
        } else {
            let (view, amended) = self.view(guard);
            if let Some(entry) = view.find(hash, key) {
                return Ok(in_view(entry));
            }
            if !amended {
                return Ok(None);
            }
        }
        let found = dirty
            .find_ref(hash, key)
            // SAFETY: found in dirty, under the lock, while pinned.
            .map(|e| unsafe { e.pinned(guard) })
            .and_then(in_dirty);
        self.miss_locked(&mut dirty, ctx, guard);
        Ok(found)
    }

    /// Finds `key` anywhere: the view without the lock, then the slow path
    /// if the view is amended.
    #[inline]
    fn find_any<'g, Q>(
        &self,
        hash: u64,
        key: &Q,
        ctx: &Ctx<'_>,
        guard: &'g Guard,
    ) -> Retry<Option<&'g Entry<K, V>>, Retired>
    where
        Q: ?Sized + Equivalent<K>,
    {
        let (view, amended) = self.view(guard);
        match view.find(hash, key) {
            Some(entry) => Ok(Some(entry)),
            None if amended => self.find_slow(hash, key, ctx, guard),
            None => Ok(None),
        }
    }

    /// After a lock-free operation failed on an entry that turned out to be
    /// moved (`Entry::is_moved`): waits for the lock holder that sealed it
    /// to publish the table holding the copy (taking and releasing the
    /// lock orders that publication before the caller's retry).
    #[cold]
    fn wait_for_move(&self) -> Retry<(), Retired> {
        drop(self.lock_current()?);
        Ok(())
    }

    // ----- Swap (insert) ----------------------------------------------

    /// Go's `Swap`: stores `value` under `key`, returning the previous
    /// value. A new key's value goes inline in its entry (when `V` needs no
    /// drop); a replacing value gets a node of its own.
    pub(crate) fn insert<'g>(
        &self,
        hash: u64,
        key: K,
        value: V,
        ctx: &Ctx<'_>,
        guard: &'g Guard,
    ) -> Retry<Option<&'g V>, (K, V)> {
        let (view, _) = self.view(guard);
        let value = match view.find(hash, &key) {
            Some(entry) => match entry.try_swap(ValueNode::boxed(value), guard) {
                Ok(previous) => {
                    if previous.is_none() {
                        self.adjust_live(ctx, 1);
                    }
                    return Ok(previous);
                }
                Err(node) => (*node).into_value(),
            },
            None => value,
        };
        self.insert_slow(hash, key, value, ctx, guard)
    }

    #[cold]
    fn insert_slow<'g>(
        &self,
        hash: u64,
        key: K,
        value: V,
        ctx: &Ctx<'_>,
        guard: &'g Guard,
    ) -> Retry<Option<&'g V>, (K, V)> {
        let Ok(mut dirty) = self.lock_current() else {
            return Err((key, value));
        };
        let (view, amended) = self.view(guard);
        let previous = if let Some(entry) = view.find(hash, &key) {
            // Go's order: un-expunge, put the entry back in dirty, store.
            if entry.unexpunge_locked() && !injected(Bug::SkipPutBack) {
                dirty.put_back(entry);
            }
            entry.swap_locked(ValueNode::boxed(value), guard)
        } else if let Some(entry) = dirty.find(hash, &key) {
            entry.swap_locked(ValueNode::boxed(value), guard)
        } else {
            self.insert_new_locked(
                &mut dirty,
                view,
                amended,
                Hashed {
                    hash,
                    entry: Entry::boxed(key, value, ctx.inline_values),
                },
                ctx,
                guard,
            );
            return Ok(None);
        };
        if previous.is_none() {
            self.adjust_live(ctx, 1);
        }
        Ok(previous)
    }

    /// Adds a new key to dirty, rebuilding dirty and amending the view
    /// first if the view is not amended. Returns the stored value, and asks
    /// for a split if dirty has passed the shard capacity.
    fn insert_new_locked<'g>(
        &self,
        dirty: &mut Dirty<K, V>,
        view: &ReadView<K, V>,
        amended: bool,
        entry: Hashed<K, V>,
        ctx: &Ctx<'_>,
        guard: &'g Guard,
    ) -> &'g V {
        if !amended {
            self.rebuild_dirty_locked(dirty, view, ctx);
            self.mark_amended_locked();
        }
        // SAFETY: we created the entry while pinned; it goes into dirty
        // below, and only a later lock holder can retire it.
        let value = unsafe { entry.entry.pinned(guard) }
            .load(guard)
            .expect("a new entry is live");
        let table = dirty
            .table
            .as_mut()
            .expect("invariant 1: amended implies a dirty table");
        table.insert_unique(rehash(&entry), entry, rehash);
        if table.len() > ctx.capacity {
            ctx.wants_split.set(true);
        }
        self.adjust_live(ctx, 1);
        value
    }

    // ----- LoadOrStore (try_insert) -------------------------------------

    /// Go's `LoadOrStore`: `Ok(Ok(stored))` or `Ok(Err((current, key,
    /// value)))`, the key and value handed back.
    #[allow(clippy::type_complexity)]
    pub(crate) fn try_insert<'g>(
        &self,
        hash: u64,
        key: K,
        value: V,
        ctx: &Ctx<'_>,
        guard: &'g Guard,
    ) -> Retry<Result<&'g V, (&'g V, K, V)>, (K, V)> {
        let (view, _) = self.view(guard);
        let value = match view.find(hash, &key) {
            Some(entry) => match entry.try_load_or_store(value, guard) {
                LoadOrStore::Loaded(current, value) => return Ok(Err((current, key, value))),
                LoadOrStore::Stored(stored) => {
                    self.adjust_live(ctx, 1);
                    return Ok(Ok(stored));
                }
                LoadOrStore::Expunged(value) => value,
            },
            None => value,
        };
        self.try_insert_slow(hash, key, value, ctx, guard)
    }

    #[cold]
    #[allow(clippy::type_complexity)]
    fn try_insert_slow<'g>(
        &self,
        hash: u64,
        key: K,
        value: V,
        ctx: &Ctx<'_>,
        guard: &'g Guard,
    ) -> Retry<Result<&'g V, (&'g V, K, V)>, (K, V)> {
        let Ok(mut dirty) = self.lock_current() else {
            return Err((key, value));
        };
        let (view, amended) = self.view(guard);
        if let Some(entry) = view.find(hash, &key) {
            if entry.unexpunge_locked() {
                dirty.put_back(entry);
            }
            let outcome = self.load_or_store_locked(entry, value, ctx, guard);
            return Ok(outcome.map_err(|(current, value)| (current, key, value)));
        }
        if let Some(entry) = dirty.find(hash, &key) {
            let outcome = self.load_or_store_locked(entry, value, ctx, guard);
            self.miss_locked(&mut dirty, ctx, guard);
            return Ok(outcome.map_err(|(current, value)| (current, key, value)));
        }
        let entry = Hashed {
            hash,
            entry: Entry::boxed(key, value, ctx.inline_values),
        };
        Ok(Ok(self.insert_new_locked(
            &mut dirty, view, amended, entry, ctx, guard,
        )))
    }

    fn load_or_store_locked<'g>(
        &self,
        entry: &Entry<K, V>,
        value: V,
        ctx: &Ctx<'_>,
        guard: &'g Guard,
    ) -> Result<&'g V, (&'g V, V)> {
        match entry.try_load_or_store(value, guard) {
            LoadOrStore::Loaded(current, value) => Err((current, value)),
            LoadOrStore::Stored(stored) => {
                self.adjust_live(ctx, 1);
                Ok(stored)
            }
            LoadOrStore::Expunged(_) => unreachable!("un-expunged under the lock"),
        }
    }

    // ----- LoadAndDelete (remove) ---------------------------------------

    /// Go's `LoadAndDelete`: the removed entry's key and value.
    pub(crate) fn remove<'g, Q>(
        &self,
        hash: u64,
        key: &Q,
        ctx: &Ctx<'_>,
        guard: &'g Guard,
    ) -> Retry<Option<(&'g K, &'g V)>, Retired>
    where
        Q: ?Sized + Equivalent<K>,
    {
        let (view, amended) = self.view(guard);
        let removed = match view.find(hash, key) {
            Some(entry) => match entry.delete(guard) {
                Some(v) => Some((entry.key(), v)),
                None if entry.is_moved() => return self.remove_slow(hash, key, ctx, guard),
                None => None,
            },
            None if amended => return self.remove_slow(hash, key, ctx, guard),
            None => None,
        };
        if removed.is_some() {
            self.removed_one(ctx, guard);
        }
        Ok(removed)
    }

    #[cold]
    fn remove_slow<'g, Q>(
        &self,
        hash: u64,
        key: &Q,
        ctx: &Ctx<'_>,
        guard: &'g Guard,
    ) -> Retry<Option<(&'g K, &'g V)>, Retired>
    where
        Q: ?Sized + Equivalent<K>,
    {
        let mut dirty = self.lock_current()?;
        let (view, amended) = self.view(guard);
        let removed = if let Some(entry) = view.find(hash, key) {
            // Under the lock: nothing seals the entry meanwhile.
            let removed = entry.delete(guard).map(|v| (entry.key(), v));
            drop(dirty);
            removed
        } else if amended {
            // A new key (only in dirty, never in a view): unlink it, empty
            // its cell and retire it. A thread that found it under the lock
            // before (`find_slow`) is pinned, so the epoch keeps it alive
            // for that thread; nothing can store a value into it any more
            // (stores into a deleted cell need the view or the lock).
            let detached = dirty.table.as_mut().and_then(|table| {
                let found = table.find_entry(table_hash(hash), |e| {
                    e.hash == hash && key.equivalent(e.key())
                });
                found.ok().map(|occupied| occupied.remove().0)
            });
            self.miss_locked(&mut dirty, ctx, guard);
            let removed = detached.and_then(|e| {
                // SAFETY: read from dirty under the lock while pinned, and
                // retired only below.
                let entry = unsafe { e.entry.pinned(guard) };
                entry.delete(guard).map(|v| (entry.key(), v))
            });
            if let Some(entry) = detached {
                // SAFETY: just unlinked from dirty, its only current table,
                // under the lock we hold; retired once, here.
                unsafe { entry.entry.retire(guard) };
            }
            drop(dirty);
            removed
        } else {
            None
        };
        if removed.is_some() {
            self.removed_one(ctx, guard);
        }
        Ok(removed)
    }

    // ----- CompareAndSwap / CompareAndDelete / update ---------------------

    /// Go's `CompareAndSwap`. On a retired shard, hands `new` back.
    pub(crate) fn compare_and_swap<Q>(
        &self,
        hash: u64,
        key: &Q,
        old: &V,
        new: V,
        ctx: &Ctx<'_>,
        guard: &Guard,
    ) -> Retry<bool, V>
    where
        Q: ?Sized + Equivalent<K>,
        V: PartialEq,
    {
        let mut new = new;
        loop {
            match self.find_any(hash, key, ctx, guard) {
                Ok(Some(entry)) => match entry.try_compare_and_swap(old, new, guard) {
                    Ok(swapped) => return Ok(swapped),
                    Err(back) => new = back,
                },
                Ok(None) => return Ok(false),
                Err(Retired) => return Err(new),
            }
            // Moved: find the copy.
            if self.wait_for_move().is_err() {
                return Err(new);
            }
        }
    }

    /// Go's `CompareAndDelete`.
    pub(crate) fn compare_and_delete<Q>(
        &self,
        hash: u64,
        key: &Q,
        old: &V,
        ctx: &Ctx<'_>,
        guard: &Guard,
    ) -> Retry<bool, Retired>
    where
        Q: ?Sized + Equivalent<K>,
        V: PartialEq,
    {
        let deleted = loop {
            match self.find_any(hash, key, ctx, guard)? {
                Some(entry) if entry.compare_and_delete(old, guard) => break true,
                Some(entry) if entry.is_moved() => self.wait_for_move()?,
                _ => break false,
            }
        };
        if deleted {
            self.removed_one(ctx, guard);
        }
        Ok(deleted)
    }

    /// Read-modify-write of an existing value. Returns the new value.
    pub(crate) fn update<'g, Q>(
        &self,
        hash: u64,
        key: &Q,
        f: &mut impl FnMut(&V) -> V,
        ctx: &Ctx<'_>,
        guard: &'g Guard,
    ) -> Retry<Option<&'g V>, Retired>
    where
        Q: ?Sized + Equivalent<K>,
    {
        loop {
            match self.find_any(hash, key, ctx, guard)? {
                Some(entry) => match entry.update(&mut *f, guard) {
                    Some(new) => return Ok(Some(new)),
                    None if entry.is_moved() => self.wait_for_move()?,
                    None => return Ok(None),
                },
                None => return Ok(None),
            }
        }
    }

    /// Removes `key` only if it still holds the value `seen` (loaded by
    /// this thread while pinned with `guard`): a compare-and-delete by
    /// identity ([`Entry::delete_if_same`]), running no user code but `Eq`.
    /// `retain` removes through it, so a value written after the predicate
    /// saw the old one is kept.
    ///
    /// A promotion, split, merge or compaction copies the entry without
    /// changing its value; the copy holds the same node, or, for an inline
    /// value, a copy of its bits at another address. `seen_key` is the key
    /// of the entry `seen` came from (the same reference the walk gave):
    /// when the key now lives in another entry (a copy, or a new entry for
    /// a key removed and inserted again meanwhile), and that entry's value
    /// is not `seen` by identity, this answers [`Removal::Moved`] with it,
    /// and `retain` asks its predicate again.
    pub(crate) fn remove_if_same<'g, Q>(
        &self,
        hash: u64,
        key: &Q,
        seen_key: &K,
        seen: &'g V,
        ctx: &Ctx<'_>,
        guard: &'g Guard,
    ) -> Retry<Removal<'g, V>, Retired>
    where
        Q: ?Sized + Equivalent<K>,
    {
        loop {
            let Some(entry) = self.find_any(hash, key, ctx, guard)? else {
                return Ok(Removal::Kept);
            };
            if entry.delete_if_same(seen, guard) {
                self.removed_one(ctx, guard);
                return Ok(Removal::Removed);
            }
            if entry.is_moved() {
                self.wait_for_move()?;
                continue;
            }
            return Ok(match entry.load(guard) {
                Some(current) if !core::ptr::eq(entry.key(), seen_key) => Removal::Moved(current),
                _ => Removal::Kept,
            });
        }
    }

    /// Insert, update or remove `key` in one linearizable step, deciding
    /// with `decide(current value)` (papaya's `compute`; see
    /// `crate::compute`). `decide` runs without the lock, and again
    /// whenever the value changed between its call and the step that
    /// applies its decision; a value it asked to insert into an absent key
    /// that someone else filled meanwhile is handed to `unused` (the
    /// upsert family keeps it for the next try). On a retired shard, hands
    /// the key back.
    pub(crate) fn compute<'g, T>(
        &self,
        hash: u64,
        mut key: K,
        decide: &mut impl FnMut(Option<&'g V>) -> Operation<V, T>,
        unused: &mut impl FnMut(V),
        ctx: &Ctx<'_>,
        guard: &'g Guard,
    ) -> Retry<Compute<&'g V, T>, K> {
        loop {
            let entry = match self.find_any(hash, &key, ctx, guard) {
                Ok(entry) => entry,
                Err(Retired) => return Err(key),
            };
            let current = entry.and_then(|entry| entry.load(guard).map(|v| (entry, v)));
            match (current, decide(current.map(|(_, v)| v))) {
                (_, Operation::Abort(out)) => return Ok(Compute::Aborted(out)),
                (None, Operation::Remove) => return Ok(Compute::Absent),
                (Some((entry, old)), Operation::Insert(value)) => {
                    // Dropped if the value changed meanwhile: `decide`
                    // runs again on the new one.
                    if let Ok(new) = entry.swap_if_same(old, ValueNode::boxed(value), guard) {
                        return Ok(Compute::Updated { old, new });
                    }
                    if entry.is_moved() && self.wait_for_move().is_err() {
                        return Err(key);
                    }
                }
                (Some((entry, old)), Operation::Remove) => {
                    if entry.delete_if_same(old, guard) {
                        self.removed_one(ctx, guard);
                        return Ok(Compute::Removed(old));
                    }
                    if entry.is_moved() && self.wait_for_move().is_err() {
                        return Err(key);
                    }
                }
                (None, Operation::Insert(value)) => {
                    match self.try_insert(hash, key, value, ctx, guard) {
                        Ok(Ok(stored)) => return Ok(Compute::Inserted(stored)),
                        // Filled meanwhile: decide again on its value.
                        Ok(Err((_, back, value))) => {
                            unused(value);
                            key = back;
                        }
                        Err((key, value)) => {
                            unused(value);
                            return Err(key);
                        }
                    }
                }
            }
        }
    }

    // ----- Range (iteration) and Clear ----------------------------------

    /// Go's `Range` prologue: promotes an amended shard, then returns the
    /// view to walk. Every key in the shard when this returns is in it.
    pub(crate) fn view_for_iter<'g>(
        &self,
        ctx: &Ctx<'_>,
        guard: &'g Guard,
    ) -> Retry<&'g ReadView<K, V>, Retired> {
        let (view, amended) = self.view(guard);
        if !amended || injected(Bug::IterSkipsPromotion) {
            return Ok(view);
        }
        let mut dirty = self.lock_current()?;
        let (view, amended) = self.view(guard);
        if !amended {
            return Ok(view);
        }
        self.promote_locked(&mut dirty, ctx, guard);
        Ok(self.view(guard).0)
    }

    /// Go's `Clear`, with every removed entry expunged (see module docs).
    pub(crate) fn clear(&self, ctx: &Ctx<'_>, guard: &Guard) -> Retry<(), Retired> {
        let (view, amended) = self.view(guard);
        if view.is_empty() && !amended {
            return Ok(());
        }
        let mut dirty = self.lock_current()?;
        let (view, _) = self.view(guard);
        let doomed = dirty.owned_entries(view);
        let old_dirty = dirty.table.take();
        dirty.dead.clear();
        let mut removed = 0;
        for entry in &doomed {
            if entry.expunge_for_clear(guard) {
                removed += 1;
            }
        }
        self.publish_locked(ReadView::from_entries([], 0, false), guard);
        for entry in doomed {
            if view.contains(&entry) {
                continue; // dropped with the old view, just retired
            }
            // SAFETY: the empty view just replaced the old one and dirty is
            // gone, so the heap entry is in no current table; under the
            // lock, each retired once.
            unsafe { entry.entry.retire(guard) };
        }
        dirty.misses = 0;
        self.bump_version();
        drop(dirty);
        ctx.stripe.adjust_len(-removed);
        // Relaxed: a size estimate.
        self.locked.live.fetch_sub(removed, StatOrdering::Relaxed);
        drop(old_dirty);
        Ok(())
    }

    // ----- Snapshot support (called by `crate::snapshot`) ---------------

    /// Calls `f` with every live entry's hash, key and value, as of now;
    /// the references live as long as `guard`. Returns `Err(Retired)` if
    /// the shard has been replaced, else the slot count of the view it
    /// walked, in slot order (`None`: it walked the dirty table, in no
    /// order): the order of home slots, but for the entries at the start
    /// that wrapped around from the end (`ReadView`'s "Probing").
    ///
    /// The lock is held only to find the complete table (dirty if new keys
    /// are pending, else the view) and, for dirty, to copy the entry
    /// pointers (the guard keeps the entries alive outside it); `f` runs
    /// without it.
    pub(crate) fn for_each_live<'g>(
        &self,
        guard: &'g Guard,
        mut f: impl FnMut(u64, &'g K, &'g V),
    ) -> Retry<Option<usize>, Retired> {
        let dirty = self.lock_current()?;
        match &dirty.table {
            // Promoted: the view holds every entry, is immutable, and stays
            // alive for `guard`'s life.
            None => {
                let (view, _) = self.view(guard);
                drop(dirty);
                view.for_each_value(guard, f);
                Ok(Some(view.positions()))
            }
            Some(table) => {
                let entries: Vec<Hashed<K, V>> = table.iter().copied().collect();
                drop(dirty);
                for e in entries {
                    // SAFETY: copied out of dirty under the lock, while
                    // `guard` was pinned.
                    let entry = unsafe { e.entry.pinned(guard) };
                    if let Some(value) = entry.load(guard) {
                        f(e.hash, entry.key(), value);
                    }
                }
                Ok(None)
            }
        }
    }

    // ----- Migration support (called by `crate::migrate`) ---------------

    /// Whether the shard's dirty table has passed `capacity` (split wanted).
    pub(crate) fn over_capacity_locked(&self, dirty: &Dirty<K, V>, capacity: usize) -> bool {
        dirty.table.as_ref().is_some_and(|t| t.len() > capacity)
    }

    /// Heap bytes the shard itself owns: its struct, its view and the
    /// view's table, its dirty table (entries are counted where they are
    /// retired). For the retired-bytes account of a retired shard.
    pub(crate) fn heap_bytes_locked(&self, dirty: &Dirty<K, V>, guard: &Guard) -> usize {
        size_of::<Self>()
            + self.view(guard).0.heap_bytes()
            + dirty.table.as_ref().map_or(0, Table::allocation_size)
            + dirty.dead.capacity() * size_of::<Hashed<K, V>>()
    }

    /// How many entries [`Shard::drain_for_migration_locked`] will look at
    /// (an upper bound on what it hands over), to size the new tables.
    pub(crate) fn migration_len_locked(&self, dirty: &Dirty<K, V>, guard: &Guard) -> usize {
        match &dirty.table {
            Some(table) => table.len(),
            None => self.view(guard).0.len(),
        }
    }

    /// Hands every entry the shard holds to `sink`, expunging deleted ones
    /// (which are then left out, as in a dirty rebuild, and retired with
    /// the shard by [`Shard::retire_locked`]). The caller holds the lock
    /// and is about to retire the shard. Returns the number of entries
    /// handed over.
    pub(crate) fn drain_for_migration_locked(
        &self,
        dirty: &mut Dirty<K, V>,
        ctx: &Ctx<'_>,
        guard: &Guard,
        mut sink: impl FnMut(Hashed<K, V>),
    ) -> u64 {
        let (mut moved, mut expunged) = (0, 0);
        let (view, _) = self.view(guard);
        let dead = &mut dirty.dead;
        let mut hand_over = |entry: Hashed<K, V>| {
            if entry.try_expunge_locked() {
                expunged += 1;
            } else {
                // The new shard's view seals it and takes its key and value
                // (`ReadView::from_entries`, under this lock still); the
                // sealed original goes with this shard (`retire_locked`).
                sink(entry);
                moved += 1;
            }
            dead.push(entry);
        };
        // Dirty, if present, holds every non-expunged entry of the view.
        match &dirty.table {
            Some(table) => table.iter().copied().for_each(&mut hand_over),
            None => view.iter().hashed().for_each(&mut hand_over),
        }
        ctx.stripe.count(Event::Expunges, expunged);
        ctx.copied(moved);
        moved
    }

    /// Marks the shard retired: every later slow path returns [`Retired`],
    /// and the view is tagged amended so that every miss reaches one.
    pub(crate) fn retire_locked(&self, dirty: &mut Dirty<K, V>, guard: &Guard) {
        if injected(Bug::SplitWithoutRetire) {
            return;
        }
        dirty.retired = true;
        self.mark_amended_locked();
        // The shards that replace this one hold copies of every entry that
        // is not expunged; the originals (sealed) and the expunged ones are
        // on `dead` and leave the map with this shard.
        let (view, _) = self.view(guard);
        self.retire_dead_locked(dirty, view, guard);
    }

    /// Retires the heap entries on `dead`; those in `view`'s slots (the
    /// view just unlinked) go with it. The caller holds the lock and has
    /// just unlinked that view (a promotion) or the whole shard (a
    /// migration), and every entry on `dead` is expunged or sealed.
    fn retire_dead_locked(&self, dirty: &mut Dirty<K, V>, view: &ReadView<K, V>, guard: &Guard) {
        let heap: Vec<EntryRef<K, V>> = dirty
            .dead
            .drain(..)
            .filter(|entry| !view.contains(entry))
            .map(|entry| entry.entry)
            .collect();
        // SAFETY: a heap entry on `dead` is expunged or sealed, in no dirty
        // table (invariants 3 and 4, and a migration's drain) and listed
        // once, and the table that held it was just unlinked, under the
        // lock we hold; it cannot be un-expunged meanwhile (that needs this
        // lock).
        unsafe { Self::retire_heap_entries(heap, guard) };
    }

    /// Retires `entries` (heap entries, each sealed or expunged) through
    /// the epoch as one batch: one deferred free for all of them, where one
    /// each made a split of a 512-entry shard pay hundreds of deferrals.
    ///
    /// # Safety
    ///
    /// The caller holds the lock of the shard whose tables held them, has
    /// just unlinked them from every current table, and retires each once.
    unsafe fn retire_heap_entries(entries: Vec<EntryRef<K, V>>, guard: &Guard) {
        if entries.is_empty() {
            return;
        }
        debug_assert!(entries.iter().all(|entry| !entry.is_live()));
        let bytes = entries.len() * Entry::<K, V>::ALLOCATION_SIZE;
        let batch = Box::into_raw(Box::new(entry::RetiredEntries(entries)));
        // SAFETY: per our contract: unlinked, retired once; a reader that
        // can still reach one through an old table is pinned, and the epoch
        // waits for it.
        unsafe { retire(guard, batch, RetiredKind::Entry, bytes) };
    }

    // ----- Locked helpers (Go's missLocked, dirtyLocked) -----------------

    /// Go's `missLocked`: counts a slow-path lookup and promotes dirty when
    /// the misses have paid for the copy.
    fn miss_locked(&self, dirty: &mut Dirty<K, V>, ctx: &Ctx<'_>, guard: &Guard) {
        dirty.misses += 1;
        ctx.stripe.count(Event::SlowLookups, 1);
        let len = dirty.table.as_ref().map_or(0, Table::len);
        if dirty.misses < len.min(ctx.promote_after) {
            return;
        }
        self.promote_locked(dirty, ctx, guard);
    }

    /// Replaces the view with the dirty table (Go:
    /// `m.read.Store(&readOnly{m: m.dirty}); m.dirty = nil; m.misses = 0`).
    fn promote_locked(&self, dirty: &mut Dirty<K, V>, ctx: &Ctx<'_>, guard: &Guard) {
        let table = dirty
            .table
            .take()
            .expect("invariant 1: promotion needs an amended shard");
        let (old, _) = self.view(guard);
        // Every entry of dirty is sealed and moved into the new view's
        // slots (`ReadView::from_entries`): the old view's (its retirement
        // below drops only the expunged ones, on `dead`) and the heap
        // entries of new keys, retired here once the view that replaces
        // them is published (their drop frees memory only).
        self.publish_locked(ReadView::boxed(&table, self.huge_pages()), guard);
        self.retire_dead_locked(dirty, old, guard);
        let moved: Vec<EntryRef<K, V>> = table
            .iter()
            .filter(|entry| !old.contains(entry))
            .map(|entry| entry.entry)
            .collect();
        // SAFETY: heap entries, sealed and moved into the new view just
        // published, in no current table any more (dirty was taken), under
        // the lock we hold; retired once, here.
        unsafe { Self::retire_heap_entries(moved, guard) };
        dirty.misses = 0;
        ctx.stripe.count(Event::Promotions, 1);
    }

    /// Publishes `new` as the (un-amended) view and retires the old one.
    /// The caller holds the lock.
    fn publish_locked(&self, new: *mut ViewHeader<K, V>, guard: &Guard) {
        // Release: publishes the new view's table (and the entries it points
        // to) to readers' Acquire loads in `view`. AcqRel's Acquire half is
        // not needed: the old pointer was stored under the lock we hold.
        let publish = if injected(Bug::RelaxedViewPublish) {
            Ordering::Relaxed
        } else {
            Ordering::Release
        };
        let old = self.head().read.swap(new, publish);
        let (old, _) = untag(old);
        if injected(Bug::FreeEntryWithoutEpoch) {
            // SAFETY: none; the broken twin of the entry reclamation model:
            // the keys and values the old view owns are dropped now, under
            // possible readers, instead of when the epoch frees the view.
            unsafe { (*old).drop_entries_now() };
        }
        // SAFETY: reading the old view's size: it is still alive (we hold
        // the lock, and only lock holders retire views).
        let bytes = unsafe { (*old).heap_bytes() };
        // SAFETY: `old` was the published view; it is unlinked now, so only
        // readers pinned before this point can hold it, and the epoch waits
        // for them, then frees it once with `ReadView::free` (from its
        // block's source). It is retired once: only the lock holder swaps
        // views.
        unsafe {
            retire_with(guard, old, RetiredKind::View, bytes, |old| {
                ReadView::free(old)
            })
        };
    }

    /// Sets the amended bit on the current view (Go:
    /// `m.read.Store(&readOnly{m: read.m, amended: true})`).
    fn mark_amended_locked(&self) {
        // Relaxed: only lock holders store the view word, and we hold the
        // lock. The amended word is derived from the stored pointer (not
        // from a `&ReadView`): it carries the allocation's provenance,
        // which the view's eventual free needs.
        let tagged = with_amended(self.head().read.load(Ordering::Relaxed));
        // Release, not Relaxed: a reader that Acquire-loads this tagged
        // pointer must see the view's table, and it no longer reads from the
        // Release store that first published the view (a later plain store
        // is not part of that store's release sequence).
        self.head().read.store(tagged, Ordering::Release);
    }

    /// Go's `dirtyLocked`: builds dirty from the view, expunging deleted
    /// entries. Costs one shard's copy, never the map's.
    fn rebuild_dirty_locked(&self, dirty: &mut Dirty<K, V>, view: &ReadView<K, V>, ctx: &Ctx<'_>) {
        if dirty.table.is_some() {
            return;
        }
        debug_assert!(dirty.dead.is_empty(), "invariant 4: retired at promotion");
        let mut table = Table::with_capacity(view.len());
        let mut expunged = 0;
        for entry in view.iter().hashed() {
            if entry.try_expunge_locked() {
                dirty.dead.push(entry);
                expunged += 1;
            } else {
                table.insert_unique(rehash(&entry), entry, rehash);
            }
        }
        ctx.stripe.count(Event::Rebuilds, 1);
        ctx.stripe.count(Event::Expunges, expunged);
        ctx.copied(table.len() as u64);
        dirty.table = Some(table);
    }
}
