//! The directory: which shard a hash belongs to (extendible hashing).
//!
//! Shards are indexed by the **top** bits of the key's hash, as in Go 1.24's
//! swiss maps. The directory is a table of `2^G` slots (`G`, the *global
//! depth*); a shard with *local depth* `d <= G` and prefix `p` holds every
//! hash whose top `d` bits equal `p`, and occupies the `2^(G-d)` consecutive
//! slots starting at `p << (G-d)`:
//!
//! ```text
//!   G = 2          slots: [ 00 ][ 01 ][ 10 ][ 11 ]
//!                            |     |     \     /
//!   shards:               d=2,00 d=2,01  d=1,1
//! ```
//!
//! Splitting one shard (`d -> d+1`) rewrites only its own slots; when
//! `d == G` the table doubles first (pointers only). Merging two buddies
//! (`d -> d-1`) rewrites their slots; when no shard is left at depth `G`
//! the table halves. The procedures are in [`crate::migrate`].
//!
//! # Concurrency
//!
//! - The table pointer is an epoch-protected atomic: doubling and halving
//!   publish a new table (Release) and retire the old one.
//! - Slots are atomic pointers updated in place (Release), always under the
//!   `resize` lock, which serialises every change to the directory.
//! - A reader loads the table (Acquire), then its slot (Acquire), and may
//!   reach a shard that a concurrent split or merge has just retired. That
//!   is fine: a retired shard still answers hits correctly (its entries are
//!   shared with the shards that replaced it) and sends every other
//!   operation back to the directory (see `shard` module docs).
//! - A stale table (one replaced by a doubling) still points only at shards
//!   that are either current or retired, so the same argument applies.

use core::marker::PhantomData;

use crate::reclaim::retire;
use crate::shard::Shard;
use crate::shard::read_view::Table;
use crate::stats::RetiredKind;
use crate::sync::atomic::{AtomicPtr, Ordering};
use crate::sync::epoch::Guard;
use crate::sync::{CachePadded, Mutex, Published};

/// The deepest directory the builder accepts (`2^26` slots).
pub(crate) const MAX_DEPTH_LIMIT: u32 = 26;

/// One directory table: `2^depth` slots.
pub(crate) struct DirTable<K, V> {
    depth: Published<u32>,
    pub(crate) slots: Box<[AtomicPtr<Shard<K, V>>]>,
}

impl<K, V> DirTable<K, V> {
    /// A table of `2^depth` slots filled by `slot(i)`.
    pub(crate) fn boxed(depth: u32, mut slot: impl FnMut(usize) -> *mut Shard<K, V>) -> *mut Self {
        let slots = (0..1usize << depth)
            .map(|i| AtomicPtr::new(slot(i)))
            .collect();
        Box::into_raw(Box::new(DirTable {
            depth: Published::new(depth),
            slots,
        }))
    }

    /// The global depth.
    #[inline]
    pub(crate) fn depth(&self) -> u32 {
        *self.depth.get()
    }

    /// The slot index of `hash`: its top `depth` bits.
    #[inline]
    pub(crate) fn index(&self, hash: u64) -> usize {
        // Two shifts so that depth 0 shifts by 64 in total without
        // overflowing a single shift.
        ((hash >> (63 - self.depth())) >> 1) as usize
    }

    /// The shard in slot `index`.
    #[inline]
    pub(crate) fn shard_at<'g>(&self, index: usize, _guard: &'g Guard) -> &'g Shard<K, V> {
        // Acquire: pairs with the Release store that put the shard here
        // (`migrate`), or the table's publication: the shard is initialised.
        let shard = self.slots[index].load(Ordering::Acquire);
        // SAFETY: slots are never null; a shard is retired through the epoch
        // only after it has left every slot of the current table, and
        // `_guard` was pinned before this load.
        unsafe { &*shard }
    }

    /// Heap bytes of this table (for retirement accounting).
    pub(crate) fn heap_bytes(&self) -> usize {
        size_of::<Self>() + self.slots.len() * size_of::<AtomicPtr<Shard<K, V>>>()
    }

    /// The distinct shards, in slot order, as raw pointers.
    pub(crate) fn distinct(&self) -> impl Iterator<Item = *mut Shard<K, V>> + '_ {
        let mut previous = core::ptr::null_mut();
        self.slots.iter().filter_map(move |slot| {
            // Acquire: pairs with the Release store that put the shard in the
            // slot; callers may dereference it.
            let shard = slot.load(Ordering::Acquire);
            (shard != previous).then(|| {
                previous = shard;
                shard
            })
        })
    }
}

/// State kept under the directory's resize lock, changed by the split,
/// merge, doubling and halving procedures (`crate::migrate`).
pub(crate) struct Resize {
    /// How many distinct shards sit at the global depth (the directory can
    /// halve when none does).
    pub(crate) at_global_depth: usize,
}

/// The directory. See the module docs.
pub(crate) struct Directory<K, V> {
    table: CachePadded<AtomicPtr<DirTable<K, V>>>,
    /// Serialises splits, merges, doubling and halving.
    pub(crate) resize: Mutex<Resize>,
    /// Shards never merge below this depth (the initial shard count).
    pub(crate) min_depth: u32,
    /// Shards never split beyond this depth (the builder's shard limit).
    pub(crate) max_depth: u32,
    /// The directory owns its shards (through raw pointers): this makes the
    /// map `Send`/`Sync` exactly when a shard is, i.e. when `K` and `V` are.
    _owns: PhantomData<Box<Shard<K, V>>>,
}

impl<K, V> Directory<K, V> {
    /// `2^depth` empty shards, each at local depth `depth`.
    pub(crate) fn new(depth: u32, max_depth: u32) -> Self {
        debug_assert!(depth <= max_depth && max_depth <= MAX_DEPTH_LIMIT);
        let table = DirTable::boxed(depth, |i| {
            Box::into_raw(Box::new(Shard::with_table(
                depth,
                i as u64,
                Table::new(),
                0,
            )))
        });
        Directory {
            table: CachePadded::new(AtomicPtr::new(table)),
            resize: Mutex::new(Resize {
                at_global_depth: 1 << depth,
            }),
            min_depth: depth,
            max_depth,
            _owns: PhantomData,
        }
    }

    /// The current table.
    #[inline]
    pub(crate) fn table<'g>(&self, _guard: &'g Guard) -> &'g DirTable<K, V> {
        // Acquire: pairs with the Release in `publish_table`: the table's
        // depth and slots are visible.
        let table = self.table.load(Ordering::Acquire);
        // SAFETY: never null; a table is retired through the epoch only
        // after being replaced, and `_guard` was pinned before this load.
        unsafe { &*table }
    }

    /// The shard that holds `hash` now (it may be retired a moment later;
    /// see the module docs).
    #[inline]
    pub(crate) fn locate<'g>(&self, hash: u64, guard: &'g Guard) -> &'g Shard<K, V> {
        let table = self.table(guard);
        table.shard_at(table.index(hash), guard)
    }

    /// The current table, for a caller that has exclusive access.
    fn table_exclusive(&mut self) -> &mut DirTable<K, V> {
        // Relaxed: `&mut self` is exclusive.
        let table = self.table.load(Ordering::Relaxed);
        // SAFETY: never null, and `&mut self` excludes every other access.
        unsafe { &mut *table }
    }

    /// Calls `f` on every distinct shard, with exclusive access (the map's
    /// `Drop`).
    pub(crate) fn for_each_shard_exclusive(&mut self, mut f: impl FnMut(&mut Shard<K, V>)) {
        for shard in self.table_exclusive().distinct() {
            // SAFETY: `&mut self` is exclusive, and each distinct pointer is a
            // live shard owned by the current table.
            f(unsafe { &mut *shard });
        }
    }
}

impl<K, V> Directory<K, V>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Replaces the table with `new` and retires the old one. The caller
    /// holds the resize lock.
    pub(crate) fn publish_table<'g>(
        &self,
        new: *mut DirTable<K, V>,
        guard: &'g Guard,
    ) -> &'g DirTable<K, V> {
        // Release: publishes the new table's depth and slots (and, through
        // them, the shards) to `table`'s Acquire load. Swapped under the
        // resize lock, so the old pointer needs no Acquire.
        let old = self.table.swap(new, Ordering::Release);
        // SAFETY: reading the old table's size; we hold the resize lock, and
        // only its holder retires tables.
        let bytes = unsafe { (*old).heap_bytes() };
        // SAFETY: `old` is unlinked; readers pinned before now may still
        // hold it and the epoch waits for them. Retired once, by the lock
        // holder.
        unsafe { retire(guard, old, RetiredKind::Directory, bytes) };
        // SAFETY: `new` is the current table, retired only after being
        // replaced, and `guard` is pinned.
        unsafe { &*new }
    }
}

impl<K, V> Drop for Directory<K, V> {
    fn drop(&mut self) {
        let table = self.table_exclusive() as *mut DirTable<K, V>;
        // SAFETY: exclusive access; the current table owns its distinct
        // shards (retired ones went to the epoch), each freed once here, and
        // then the table itself.
        unsafe {
            for shard in (*table).distinct() {
                drop(Box::from_raw(shard));
            }
            drop(Box::from_raw(table));
        }
    }
}
