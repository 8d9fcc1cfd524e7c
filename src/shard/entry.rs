//! The entry: one key and its three-state value cell.
//!
//! An [`Entry`] is shared by a shard's read view and its dirty table,
//! exactly as Go's `*entry` is shared by `read.m` and `dirty`: both tables
//! hold the same [`EntryRef`] (a plain pointer). The key lives once, in the
//! entry; its full 64-bit hash is stored beside every table pointer to it
//! (the view's slots, the dirty table's [`Hashed`] elements), so tables
//! rehash from the stored hash and never call the user's `Hash` again (a
//! panicking `Hash` can only panic before anything changes), and a probe
//! compares hashes before it touches an entry.
//!
//! # The value cell (Go's `entry.p`)
//!
//! The cell is an atomic pointer with three kinds of value:
//!
//! | cell | state | meaning |
//! |---|---|---|
//! | pointer to a [`ValueNode`] (a node of its own, or the entry's inline node) | **live** | the key maps to that value |
//! | null | **deleted** | the key is absent, but the entry is still in the dirty table (if there is one), so it may be revived lock-free |
//! | `EXPUNGED` (address 1) | **expunged** | the key is absent and the entry is *not* in the dirty table; only a lock holder may revive it, after putting it back |
//!
//! Transitions, who makes them and under what condition:
//!
//! | from → to | operation | lock held? | method |
//! |---|---|---|---|
//! | live → live | insert / compare-and-swap / update | no | [`Entry::try_swap`], [`Entry::try_compare_and_swap`], [`Entry::update`] |
//! | deleted → live | insert / try-insert | no (entry reached through the read view, so it is in dirty or dirty is absent) | [`Entry::try_swap`], [`Entry::try_load_or_store`] |
//! | live → deleted | remove / compare-and-delete | no | [`Entry::delete`], [`Entry::compare_and_delete`] |
//! | deleted → expunged | dirty rebuild | yes | [`Entry::try_expunge_locked`] |
//! | expunged → deleted | un-expunge (then the entry goes back into dirty, then a value is stored, all under the lock) | yes | [`Entry::unexpunge_locked`] |
//! | any → expunged | `clear()` (the entry is then unreachable from the new view) | yes | [`Entry::expunge_for_clear`] |
//!
//! Nothing but a lock holder ever stores into an expunged cell, and every
//! lock-free store first checks that the cell is not expunged: that is what
//! keeps a value from being stored into an entry the next promotion would
//! drop.
//!
//! # Inline values
//!
//! When `V` needs no drop (`core::mem::needs_drop`: integers, `Copy`
//! structs, `&'static str`), a new key's entry is allocated together with
//! its first value (`InlineEntry`: the entry, then a `ValueNode`), and the
//! cell points to that inline node. A read hit of a key written once then
//! reads the value from the entry's own allocation: no pointer to a
//! separate node, and one allocation per new key instead of two.
//!
//! A value that replaces it, or that is stored after a removal, gets a node
//! of its own, as before: the inline bytes are **never written again**,
//! because a reader pinned before the replacement may still hold a
//! reference into them (the loom model `loom-tests/tests/inline.rs` and its
//! twin `ReuseInlineSlot`). When the inline value leaves the cell nothing is
//! retired: it needs no drop, and its bytes go with the entry, which the
//! epoch keeps alive for every reader that reached it. Values that need a
//! drop (a `String`, an `Arc`) always live in nodes: dropping a replaced
//! inline value would need a deferred drop ordered before the entry's own
//! free, which two epoch retirements do not guarantee.
//!
//! # Reclamation
//!
//! A value node that leaves the cell (replaced or deleted) is retired
//! through the epoch, so a reader that loaded it while pinned may keep
//! using it until its guard drops. All methods that hand out `&'g V` take
//! the guard whose lifetime bounds the reference.
//!
//! Entries themselves are not reference-counted: tables hold plain
//! [`EntryRef`] pointers, and an entry is retired through the epoch at the
//! one moment it leaves the last *current* table (the shard's published
//! view and its dirty table), by the lock holder who unlinks it:
//!
//! | how an entry leaves the map | who retires it |
//! |---|---|
//! | expunged by a dirty rebuild (so not in dirty), then the view it is in is replaced by a promotion | the promotion, from the shard's `dead` list (un-expunging takes an entry off it) |
//! | a new key (only in dirty) removed | `remove`, after unlinking it from dirty |
//! | `clear()` | `clear`, after publishing the empty view |
//! | deleted or expunged when its shard is split or merged | the migration, when it retires the old shard |
//! | the map is dropped | the map's `Drop`, at once (no reader is left) |
//!
//! Every table that still points to a retired entry was itself retired no
//! later than the entry (an old view, a retired shard), so a reader that can
//! reach the entry was pinned before its retirement and the epoch waits for
//! it. Dropping a retired view or shard frees its tables only and never
//! touches an entry: that keeps reclamation O(1) per table, where dropping
//! a table of `Arc`s cost one (usually cache-missing) decrement per entry
//! and made the collector pause writers for milliseconds.
//!
//! # Orderings
//!
//! Every store of a node pointer is a Release (or the Release half of an
//! AcqRel), every load that may dereference is an Acquire: the pair makes the
//! node's value, written before publication, visible to the reader. The
//! transitions between *deleted* and *expunged* carry no data and happen
//! under the shard lock, so they are Relaxed.

use core::marker::PhantomData;
use core::ptr;

use crate::reclaim::retire_small;
use crate::stats::RetiredKind;
use crate::sync::Published;
use crate::sync::atomic::{AtomicPtr, Ordering};
use crate::sync::epoch::Guard;
use crate::twins::{Bug, injected};

/// A heap cell holding one value. Its alignment is at least 2, so the
/// address 1 can never be a real node and serves as the expunged marker.
#[repr(align(2))]
pub(crate) struct ValueNode<V> {
    value: Published<V>,
}

impl<V> ValueNode<V> {
    #[inline]
    pub(crate) fn boxed(value: V) -> Box<Self> {
        let node = crate::pool::boxed(ValueNode {
            value: Published::new(value),
        });
        // SAFETY: `pool::boxed` gives a block of `Self`'s own layout
        // holding the node, which a `Box` may own and free.
        unsafe { Box::from_raw(node) }
    }

    /// The value (loom checks that this read follows the publication).
    #[inline]
    pub(crate) fn value(&self) -> &V {
        self.value.get()
    }

    pub(crate) fn into_value(self) -> V {
        self.value.into_inner()
    }
}

const EXPUNGED_ADDR: usize = 1;

#[inline]
fn expunged<V>() -> *mut ValueNode<V> {
    ptr::without_provenance_mut(EXPUNGED_ADDR)
}

/// Live means neither null (deleted) nor the expunged marker.
#[inline]
fn is_live<V>(p: *mut ValueNode<V>) -> bool {
    p.addr() > EXPUNGED_ADDR
}

/// What [`Entry::try_load_or_store`] did.
pub(crate) enum LoadOrStore<'g, V> {
    /// A live value was there; the offered value is handed back.
    Loaded(&'g V, V),
    /// The offered value was stored (the cell was deleted).
    Stored(&'g V),
    /// The cell is expunged; the caller must take the lock. Value handed back.
    Expunged(V),
}

/// One key and its value cell. See the module docs. The key's hash is
/// not stored here but beside every table pointer to the entry
/// ([`Hashed`], and the read view's slots), where probes compare it
/// before they touch the entry: an entry of a `u64 -> u64` map is 24
/// bytes with its value inline (a 32-byte allocation, not 48).
pub(crate) struct Entry<K, V> {
    key: Published<K>,
    cell: AtomicPtr<ValueNode<V>>,
    /// The entry owns the node the cell points to (for drop check and for
    /// `Send`/`Sync`: an entry is as thread-safe as a `V` it owns).
    _owns: PhantomData<Box<ValueNode<V>>>,
}

/// An entry with its first value inline: the allocation of every entry
/// whose value type needs no drop (see the module docs, "Inline values").
#[repr(C)]
struct InlineEntry<K, V> {
    entry: Entry<K, V>,
    node: ValueNode<V>,
}

impl<K, V> Entry<K, V> {
    /// Whether entries of this type carry their first value inline: when
    /// `V` needs no drop (so a replaced inline value needs no deferred
    /// drop, only its bytes, which go with the entry).
    const INLINE: bool = !core::mem::needs_drop::<V>();

    /// Bytes of one entry's allocation (for retired-bytes accounting).
    pub(crate) const ALLOCATION_SIZE: usize = if Self::INLINE {
        size_of::<InlineEntry<K, V>>()
    } else {
        size_of::<Entry<K, V>>()
    };

    /// The address of this entry's inline node (compared, never read
    /// through: the node is reached through the pointer in the cell, which
    /// carries the whole allocation's provenance). Null if the entry has
    /// none.
    #[inline]
    fn inline_node(&self) -> *mut ValueNode<V> {
        if Self::INLINE {
            let entry = ptr::from_ref(self).cast::<InlineEntry<K, V>>();
            // `repr(C)`: the node follows the entry in the same allocation.
            entry
                .cast::<u8>()
                .wrapping_add(core::mem::offset_of!(InlineEntry<K, V>, node))
                .cast::<ValueNode<V>>()
                .cast_mut()
        } else {
            ptr::null_mut()
        }
    }
}

/// A table's pointer to an [`Entry`]. Tables do not own entries: see
/// "Reclamation" in the module docs for who frees them, and when.
pub(crate) struct EntryRef<K, V>(ptr::NonNull<Entry<K, V>>);

impl<K, V> Clone for EntryRef<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for EntryRef<K, V> {}

// SAFETY: an `EntryRef` is a shared reference to an entry in all but
// lifetime (it never frees or mutates through the pointer except through
// the entry's own atomics), so it may cross threads exactly when
// `&Entry<K, V>` may: when `Entry<K, V>: Sync`. `Send` additionally needs
// `Entry: Send`, because the holder of the last table pointer retires the
// entry, and it is dropped on whatever thread the collector runs.
unsafe impl<K, V> Send for EntryRef<K, V> where Entry<K, V>: Send + Sync {}
// SAFETY: as above; sharing an `&EntryRef` only shares `&Entry`.
unsafe impl<K, V> Sync for EntryRef<K, V> where Entry<K, V>: Sync {}

/// A table's pointer to an entry with the key's full hash beside it (a
/// dirty table's element, and every list of entries a rebuild, split or
/// merge passes around): rehashing and probing never touch the entry, and
/// never call user code.
pub(crate) struct Hashed<K, V> {
    pub(crate) hash: u64,
    pub(crate) entry: EntryRef<K, V>,
}

impl<K, V> Clone for Hashed<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for Hashed<K, V> {}

impl<K, V> core::ops::Deref for Hashed<K, V> {
    type Target = Entry<K, V>;

    #[inline]
    fn deref(&self) -> &Entry<K, V> {
        &self.entry
    }
}

impl<K, V> EntryRef<K, V> {
    /// The entry, for as long as the table it was read from is reachable.
    ///
    /// # Safety
    ///
    /// As for `Deref`: `'t` does not outlive the table this was read from
    /// (a view under the guard it was loaded with, or a dirty table under
    /// the shard lock).
    #[inline]
    pub(crate) unsafe fn get<'t>(self) -> &'t Entry<K, V> {
        // SAFETY: our contract.
        unsafe { self.0.as_ref() }
    }
}

impl<K, V> core::ops::Deref for EntryRef<K, V> {
    type Target = Entry<K, V>;

    #[inline]
    fn deref(&self) -> &Entry<K, V> {
        // SAFETY: an `EntryRef` is only read out of a table that is
        // reachable to the caller: a view loaded under a guard, or a dirty
        // table under the shard lock. An entry is retired only after it
        // has left every current table, and freed only after every guard
        // pinned before that has dropped (module docs, "Reclamation"), so
        // it outlives the borrow of the table this reference came from.
        unsafe { self.0.as_ref() }
    }
}

impl<K, V> EntryRef<K, V> {
    /// Whether this points to `entry` (compares addresses only).
    #[inline]
    pub(crate) fn points_to(&self, entry: &Entry<K, V>) -> bool {
        ptr::eq(self.0.as_ptr(), entry)
    }

    /// The entry, for as long as `_guard` stays pinned.
    ///
    /// # Safety
    ///
    /// The caller read this pointer from a current table (the dirty table
    /// under the shard lock, or a view loaded under `_guard`), or created
    /// the entry, while `_guard` was pinned. The entry is then retired no
    /// earlier than that read, so the epoch keeps it alive for the guard's
    /// whole life.
    #[inline]
    pub(crate) unsafe fn pinned(self, _guard: &Guard) -> &Entry<K, V> {
        // SAFETY: per the contract.
        unsafe { self.0.as_ref() }
    }

    /// Frees the entry now, dropping its key and any live value.
    ///
    /// # Safety
    ///
    /// No table that anyone can still reach points to it (the map is being
    /// dropped with exclusive access), and it is freed exactly once.
    pub(crate) unsafe fn free_exclusive(self) {
        if Entry::<K, V>::INLINE {
            // SAFETY: per the contract, this is the only pointer left; an
            // entry of this type was allocated as an `InlineEntry`
            // (`Entry::boxed`), whose first field it is.
            drop(unsafe { Box::from_raw(self.0.as_ptr().cast::<InlineEntry<K, V>>()) });
        } else {
            // SAFETY: per the contract, this is the only pointer left.
            drop(unsafe { Box::from_raw(self.0.as_ptr()) });
        }
    }
}

impl<K, V> EntryRef<K, V> {
    /// Frees the entry now and hands back its key and live value, moved
    /// out (`None`, after dropping the key, if the entry holds no value).
    ///
    /// # Safety
    ///
    /// As [`EntryRef::free_exclusive`]: no table anyone can still reach
    /// points to the entry (the map is consumed), and this is the one call
    /// that frees it.
    pub(crate) unsafe fn into_parts_exclusive(self) -> Option<(K, V)> {
        // Relaxed: exclusive access; the `&mut`/ownership hand-over
        // ordered every store.
        let cell = self.cell.load(Ordering::Relaxed);
        let inline = self.inline_node();
        let (key, inline_value) = if Entry::<K, V>::INLINE {
            // SAFETY: per the contract this is the only pointer left, and an
            // entry of this type was allocated as an `InlineEntry`. Moving
            // it out of its box frees the allocation; `ManuallyDrop` keeps
            // `Entry::drop` from touching the cell, read above.
            let InlineEntry { entry, node } =
                *unsafe { Box::from_raw(self.0.as_ptr().cast::<InlineEntry<K, V>>()) };
            let entry = core::mem::ManuallyDrop::new(entry);
            // SAFETY: read once out of an entry that is never used again
            // (not dropped: `ManuallyDrop`).
            let key = unsafe { ptr::read(&entry.key) }.into_inner();
            (key, (cell == inline).then(|| node.into_value()))
        } else {
            // SAFETY: as above, allocated as a plain `Entry`.
            let entry = core::mem::ManuallyDrop::new(*unsafe { Box::from_raw(self.0.as_ptr()) });
            // SAFETY: as above.
            let key = unsafe { ptr::read(&entry.key) }.into_inner();
            (key, None)
        };
        if let Some(value) = inline_value {
            return Some((key, value));
        }
        if !is_live(cell) {
            return None;
        }
        // SAFETY: a live node other than the inline one is owned by the
        // cell (see `Drop for Entry`), and the entry is gone: taken once.
        Some((key, unsafe { Box::from_raw(cell) }.into_value()))
    }
}

impl<K: Send + 'static, V: Send + 'static> EntryRef<K, V> {
    /// Retires the entry through the epoch: it is freed, with its key,
    /// once every thread pinned now has unpinned.
    ///
    /// # Safety
    ///
    /// The caller holds the lock of the shard whose tables held the entry,
    /// has just unlinked it from the last current table (the published
    /// view and the dirty table), and retires it exactly once. Its cell is
    /// deleted or expunged.
    pub(crate) unsafe fn retire(self, guard: &Guard) {
        // Relaxed: a check; the cell was emptied or expunged under the lock
        // we hold, and nothing stores into it any more.
        debug_assert!(!is_live(self.cell.load(Ordering::Relaxed)));
        if injected(Bug::FreeEntryWithoutEpoch) {
            // SAFETY: none; the deliberately broken twin of the entry
            // reclamation model. It runs the destructor (dropping the key)
            // under possible readers, but keeps the memory, so the model
            // reports the early drop instead of crashing.
            unsafe { ptr::drop_in_place(self.0.as_ptr()) };
            return;
        }
        let bytes = Entry::<K, V>::ALLOCATION_SIZE;
        if Entry::<K, V>::INLINE {
            // SAFETY: per the contract: unlinked, retired once, and a reader
            // that can still reach it through an old table is pinned. The
            // entry was allocated as an `InlineEntry` (`Entry::boxed`).
            unsafe {
                retire_small(
                    guard,
                    self.0.as_ptr().cast::<InlineEntry<K, V>>(),
                    RetiredKind::Entry,
                    bytes,
                )
            };
        } else {
            // SAFETY: as above; allocated as a plain `Entry`.
            unsafe { retire_small(guard, self.0.as_ptr(), RetiredKind::Entry, bytes) };
        }
    }
}

impl<K, V> Entry<K, V> {
    /// A new live entry on the heap, ready to go into a dirty table: one
    /// allocation holding the value too if `V` needs no drop, otherwise
    /// the entry and a value node.
    pub(crate) fn boxed(key: K, value: V) -> EntryRef<K, V> {
        if Self::INLINE {
            // From the thread's cache of freed blocks when it has one of
            // this size (`crate::pool`); freed by `retire_small` or `Box`.
            let inline = crate::pool::boxed(InlineEntry {
                entry: Entry {
                    key: Published::new(key),
                    cell: AtomicPtr::new(ptr::null_mut()),
                    _owns: PhantomData,
                },
                node: ValueNode {
                    value: Published::new(value),
                },
            });
            // SAFETY: `inline` is a fresh, unshared allocation; the cell
            // gets a pointer to its own node, derived from the allocation's
            // pointer (so it may be read through for the entry's life).
            unsafe {
                let node = ptr::addr_of_mut!((*inline).node);
                (*inline).entry.cell = AtomicPtr::new(node);
            }
            EntryRef(ptr::NonNull::new(inline.cast::<Entry<K, V>>()).expect("Box is non-null"))
        } else {
            let entry = crate::pool::boxed(Entry {
                key: Published::new(key),
                cell: AtomicPtr::new(Box::into_raw(ValueNode::boxed(value))),
                _owns: PhantomData,
            });
            EntryRef(ptr::NonNull::new(entry).expect("an allocation is non-null"))
        }
    }

    /// The key.
    #[inline]
    pub(crate) fn key(&self) -> &K {
        self.key.get()
    }

    /// Go: `entry.load`.
    #[inline]
    pub(crate) fn load<'g>(&self, _guard: &'g Guard) -> Option<&'g V> {
        // Acquire: pairs with the Release half of the operation that stored
        // this node; its value is initialised before publication.
        let p = self.cell.load(Ordering::Acquire);
        if is_live(p) {
            // SAFETY: a live pointer came from `Box::into_raw`; it is retired
            // only through the epoch after leaving the cell, and we loaded it
            // while `_guard` is pinned, so it outlives `'g`.
            Some(unsafe { (*p).value() })
        } else {
            None
        }
    }

    /// Whether the cell holds a value (a heuristic count for merges).
    pub(crate) fn is_live(&self) -> bool {
        // Relaxed: a size estimate under the shard lock; no data is read.
        is_live(self.cell.load(Ordering::Relaxed))
    }

    /// Whether the cell is expunged (debug assertions and tests).
    pub(crate) fn is_expunged(&self) -> bool {
        // Relaxed: a diagnostic read; callers hold the lock or are quiescent.
        self.cell.load(Ordering::Relaxed) == expunged()
    }
}

impl<K, V: Send + 'static> Entry<K, V> {
    /// Retires a node that just left the cell and returns its value for
    /// the rest of the guard's life. `None` for null / expunged.
    ///
    /// # Safety
    ///
    /// `prev` was just swapped out of this cell by the caller (so the caller
    /// is its unique retirer), and `K`, `V` may be dropped on another thread.
    #[inline]
    unsafe fn retire_previous<'g>(
        &self,
        prev: *mut ValueNode<V>,
        guard: &'g Guard,
    ) -> Option<&'g V> {
        if !is_live(prev) {
            return None;
        }
        if prev == self.inline_node() {
            // The inline value: its bytes belong to the entry, which the
            // epoch keeps alive for every thread that reached it while
            // pinned, and it needs no drop. Nothing to retire; it is never
            // stored into again (a later value gets a node).
            // SAFETY: `prev` points into this entry, alive for `'g` (the
            // caller reached the entry while `guard` was pinned).
            return Some(unsafe { (*prev).value() });
        }
        // SAFETY: `prev` left the cell by our swap/CAS, so no thread pinning
        // later can load it and nobody else retires it; the reference we
        // return is bounded by `guard`, which delays the free.
        unsafe {
            retire_small(guard, prev, RetiredKind::Value, size_of::<ValueNode<V>>());
            Some((*prev).value())
        }
    }

    /// Go: `entry.trySwap`. Stores `node` unless the cell is expunged.
    ///
    /// Returns `Ok(previous live value)` or, if expunged, `Err(node)`.
    #[inline]
    pub(crate) fn try_swap<'g>(
        &self,
        node: Box<ValueNode<V>>,
        guard: &'g Guard,
    ) -> Result<Option<&'g V>, Box<ValueNode<V>>> {
        let new = Box::into_raw(node);
        // Relaxed: the value is only compared against the marker; the CAS
        // below re-reads with Acquire before anything is dereferenced.
        let mut current = self.cell.load(Ordering::Relaxed);
        loop {
            if current == expunged() && !injected(Bug::StoreIntoExpunged) {
                // SAFETY: `new` was never published; we still own it.
                return Err(unsafe { Box::from_raw(new) });
            }
            if current.is_null() && Self::INLINE && injected(Bug::ReuseInlineSlot) {
                // The broken twin: overwrite the inline value in place.
                let inline = self.inline_node();
                // SAFETY: none (the twin writes under possible readers).
                // `new` was never published; its value moves into the
                // inline node's bytes, which need no drop.
                unsafe { ptr::write(inline, *Box::from_raw(new)) };
                // Release: as in the real path.
                self.cell.store(inline, Ordering::Release);
                return Ok(None);
            }
            // AcqRel on success: Release publishes `new`'s value; Acquire
            // makes the previous node's value readable (we return it).
            // Relaxed on failure: we only compare the fresh value again.
            match self
                .cell
                .compare_exchange_weak(current, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                // SAFETY: `prev` just left the cell through our CAS.
                Ok(prev) => return Ok(unsafe { self.retire_previous(prev, guard) }),
                Err(actual) => current = actual,
            }
        }
    }

    /// Go: `entry.swapLocked`. The caller holds the shard lock and has made
    /// sure the cell is not expunged.
    pub(crate) fn swap_locked<'g>(
        &self,
        node: Box<ValueNode<V>>,
        guard: &'g Guard,
    ) -> Option<&'g V> {
        // AcqRel: Release publishes the new node; Acquire makes the
        // previous node's value readable (we return it).
        let prev = self.cell.swap(Box::into_raw(node), Ordering::AcqRel);
        debug_assert!(prev != expunged(), "swap_locked on an expunged entry");
        // SAFETY: `prev` just left the cell through our swap.
        unsafe { self.retire_previous(prev, guard) }
    }

    /// Go: `entry.unexpungeLocked`: expunged → deleted. Returns whether the
    /// entry was expunged (then the caller must put it back into dirty
    /// before storing into it).
    pub(crate) fn unexpunge_locked(&self) -> bool {
        // Relaxed: neither state carries data, and the caller holds the
        // shard lock, which orders this against the rebuild that expunged it.
        self.cell
            .compare_exchange(
                expunged(),
                ptr::null_mut(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Go: `entry.tryExpungeLocked`: deleted → expunged, during a dirty
    /// rebuild. Returns whether the entry is (now) expunged.
    pub(crate) fn try_expunge_locked(&self) -> bool {
        // Relaxed: deleted and expunged carry no data; a concurrent lock-free
        // store races with us on this one word and the CAS picks a winner.
        let mut p = self.cell.load(Ordering::Relaxed);
        while p.is_null() {
            // Relaxed: as above.
            match self.cell.compare_exchange(
                ptr::null_mut(),
                expunged(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => p = actual,
            }
        }
        p == expunged()
    }

    /// Go: `entry.delete`: live → deleted. Returns the removed value.
    pub(crate) fn delete<'g>(&self, guard: &'g Guard) -> Option<&'g V> {
        // Relaxed: only compared; the CAS's Acquire covers the dereference.
        let mut p = self.cell.load(Ordering::Relaxed);
        loop {
            if !is_live(p) {
                return None;
            }
            // AcqRel on success: Acquire makes the removed value readable
            // (we return it); Release orders our earlier reads of it before
            // a later reviver's store. Relaxed on failure: re-checked above.
            match self.cell.compare_exchange_weak(
                p,
                ptr::null_mut(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                // SAFETY: `prev` just left the cell through our CAS.
                Ok(prev) => return unsafe { self.retire_previous(prev, guard) },
                Err(actual) => p = actual,
            }
        }
    }

    /// Go: `entry.tryLoadOrStore`. Loads a live value, or stores `value`
    /// into a deleted cell; refuses an expunged one. Allocates only when it
    /// actually stores.
    pub(crate) fn try_load_or_store<'g>(&self, value: V, guard: &'g Guard) -> LoadOrStore<'g, V> {
        // Acquire: we may return the loaded value; pairs with the store
        // that published it.
        let mut p = self.cell.load(Ordering::Acquire);
        let mut pending: Option<Box<ValueNode<V>>> = None;
        let mut value = Some(value);
        loop {
            if p == expunged() || is_live(p) {
                let back = match pending {
                    Some(node) => (*node).into_value(),
                    None => value.take().expect("value is held until stored"),
                };
                return if is_live(p) {
                    // SAFETY: live pointer loaded with Acquire while pinned.
                    LoadOrStore::Loaded(unsafe { (*p).value() }, back)
                } else {
                    LoadOrStore::Expunged(back)
                };
            }
            let node = pending.take().unwrap_or_else(|| {
                ValueNode::boxed(value.take().expect("value is held until stored"))
            });
            let new = Box::into_raw(node);
            // Release on success: publishes the new node. Acquire on failure:
            // the fresh value may be live and then we return it.
            match self.cell.compare_exchange(
                ptr::null_mut(),
                new,
                Ordering::Release,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    let _ = guard;
                    // SAFETY: `new` is now in the cell; it can only be freed
                    // through the epoch after leaving it, and we are pinned.
                    return LoadOrStore::Stored(unsafe { (*new).value() });
                }
                Err(actual) => {
                    // SAFETY: the CAS failed, so `new` was never published.
                    pending = Some(unsafe { Box::from_raw(new) });
                    p = actual;
                }
            }
        }
    }

    /// Go: `entry.tryCompareAndSwap`: replaces a live value equal to `old`.
    /// `new` is dropped if the swap does not happen.
    pub(crate) fn try_compare_and_swap(&self, old: &V, new: V, guard: &Guard) -> bool
    where
        V: PartialEq,
    {
        // Acquire: we dereference the loaded node to compare it.
        let mut p = self.cell.load(Ordering::Acquire);
        let mut node: Option<Box<ValueNode<V>>> = None;
        let mut new = Some(new);
        loop {
            // SAFETY: live pointer loaded with Acquire while `guard` is pinned.
            if !is_live(p) || unsafe { (*p).value() } != old {
                return false;
            }
            let raw = Box::into_raw(node.take().unwrap_or_else(|| {
                ValueNode::boxed(new.take().expect("new value held until stored"))
            }));
            if injected(Bug::CasNotAtomic) {
                // The broken twin: a separate store after the compare.
                // AcqRel: as in the real path; the bug is the gap, not the
                // ordering.
                let prev = self.cell.swap(raw, Ordering::AcqRel);
                // SAFETY: `prev` just left the cell through our swap.
                unsafe { self.retire_previous(prev, guard) };
                return true;
            }
            // AcqRel on success: Release publishes the new node; Acquire
            // orders the retired node's reads. Acquire on failure: we
            // dereference the fresh value to compare it again.
            match self
                .cell
                .compare_exchange(p, raw, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(prev) => {
                    // SAFETY: `prev` just left the cell through our CAS.
                    unsafe { self.retire_previous(prev, guard) };
                    return true;
                }
                Err(actual) => {
                    // SAFETY: the CAS failed; `raw` was never published.
                    node = Some(unsafe { Box::from_raw(raw) });
                    p = actual;
                }
            }
        }
    }

    /// Go: `CompareAndDelete`'s loop: live value equal to `old` → deleted.
    pub(crate) fn compare_and_delete(&self, old: &V, guard: &Guard) -> bool
    where
        V: PartialEq,
    {
        // Acquire: we dereference the loaded node to compare it.
        let mut p = self.cell.load(Ordering::Acquire);
        loop {
            // SAFETY: live pointer loaded with Acquire while `guard` is pinned.
            if !is_live(p) || unsafe { (*p).value() } != old {
                return false;
            }
            // AcqRel on success: as in `delete`. Acquire on failure: we
            // dereference the fresh value to compare it again.
            match self.cell.compare_exchange(
                p,
                ptr::null_mut(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(prev) => {
                    // SAFETY: `prev` just left the cell through our CAS.
                    unsafe { self.retire_previous(prev, guard) };
                    return true;
                }
                Err(actual) => p = actual,
            }
        }
    }

    /// Read-modify-write of a live value: live → live. `f` may run more
    /// than once if the value changes under it; if it panics nothing has
    /// changed. Returns the value now stored, or `None` if not live.
    pub(crate) fn update<'g>(&self, mut f: impl FnMut(&V) -> V, guard: &'g Guard) -> Option<&'g V> {
        // Acquire: `f` reads the loaded value.
        let mut p = self.cell.load(Ordering::Acquire);
        loop {
            if !is_live(p) {
                return None;
            }
            // SAFETY: live pointer loaded with Acquire while `guard` is pinned.
            let next = f(unsafe { (*p).value() });
            let raw = Box::into_raw(ValueNode::boxed(next));
            // AcqRel on success: Release publishes the new node. Acquire on
            // failure: `f` reads the fresh value.
            match self
                .cell
                .compare_exchange(p, raw, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(prev) => {
                    // SAFETY: `prev` just left the cell through our CAS; `raw`
                    // is now in the cell and freed only through the epoch.
                    unsafe {
                        self.retire_previous(prev, guard);
                        return Some((*raw).value());
                    }
                }
                Err(actual) => {
                    // SAFETY: the CAS failed; `raw` was never published.
                    drop(unsafe { Box::from_raw(raw) });
                    p = actual;
                }
            }
        }
    }

    /// Replaces the value `seen` (a reference this thread loaded from this
    /// cell, while pinned with `guard`) with `node`, only if the cell
    /// still holds that very value: a compare-and-swap by identity, not by
    /// `PartialEq` (it runs no user code). Returns the value now stored, or
    /// `Err(node)` if the cell changed since `seen` was loaded.
    ///
    /// Identity is sound because the node `seen` lives in cannot be freed
    /// and reused while the caller is pinned (it is retired through the
    /// epoch only after leaving the cell), and the inline node is never
    /// stored into again. A zero-sized `V` has one address for all its
    /// nodes: then a replacement meanwhile is not seen, which no caller can
    /// tell apart (every value of the type is the same value).
    pub(crate) fn swap_if_same<'g>(
        &self,
        seen: &'g V,
        node: Box<ValueNode<V>>,
        guard: &'g Guard,
    ) -> Result<&'g V, Box<ValueNode<V>>> {
        let new = Box::into_raw(node);
        // Acquire: the identity check below reaches the value through this
        // pointer (the node's value address), so the node must be
        // published to us: with Relaxed, loom reports that read as racing
        // with the store that published a node another compute just put
        // in (model `loom-tests/tests/compute.rs`). Free on x86.
        let current = self.cell.load(Ordering::Acquire);
        // SAFETY: a live pointer loaded while `guard` is pinned (see above).
        if !is_live(current) || !ptr::eq(unsafe { (*current).value() }, seen) {
            // SAFETY: `new` was never published; we still own it.
            return Err(unsafe { Box::from_raw(new) });
        }
        if injected(Bug::ComputeNotAtomic) {
            // The broken twin: the identity check above and this store are
            // two steps, so two computes that saw the same value both
            // store, and one update is lost.
            // AcqRel: as the compare-and-swap below.
            let prev = self.cell.swap(new, Ordering::AcqRel);
            // SAFETY: `prev` just left the cell through our swap; `new`
            // is now in the cell and freed only through the epoch.
            return unsafe {
                self.retire_previous(prev, guard);
                Ok((*new).value())
            };
        }
        // AcqRel on success: Release publishes the new node; Acquire orders
        // the retired node's reads before its retirement. Relaxed on
        // failure: nothing is read through the fresh value.
        match self
            .cell
            .compare_exchange(current, new, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(prev) => {
                // SAFETY: `prev` just left the cell through our CAS; `new`
                // is now in the cell and freed only through the epoch.
                unsafe {
                    self.retire_previous(prev, guard);
                    Ok((*new).value())
                }
            }
            // SAFETY: the CAS failed; `new` was never published.
            Err(_) => Err(unsafe { Box::from_raw(new) }),
        }
    }

    /// Deletes the value `seen` (loaded from this cell while pinned with
    /// `guard`) only if the cell still holds that very value: live →
    /// deleted, by identity (see [`Entry::swap_if_same`]). Returns whether
    /// it deleted.
    pub(crate) fn delete_if_same(&self, seen: &V, guard: &Guard) -> bool {
        // Acquire: as in `swap_if_same` (the check reads through it).
        let current = self.cell.load(Ordering::Acquire);
        // SAFETY: a live pointer loaded while `guard` is pinned.
        if !is_live(current) || !ptr::eq(unsafe { (*current).value() }, seen) {
            return false;
        }
        // AcqRel on success: as in `delete`. Relaxed on failure: nothing is
        // read through the fresh value.
        match self.cell.compare_exchange(
            current,
            ptr::null_mut(),
            Ordering::AcqRel,
            Ordering::Relaxed,
        ) {
            Ok(prev) => {
                // SAFETY: `prev` just left the cell through our CAS.
                unsafe { self.retire_previous(prev, guard) };
                true
            }
            Err(_) => false,
        }
    }

    /// `clear()`: any state → expunged, under the lock. Returns whether a
    /// live value was removed (it is retired).
    pub(crate) fn expunge_for_clear(&self, guard: &Guard) -> bool {
        // AcqRel: Acquire for the retired node (it is dropped later, possibly
        // on another thread, after being read here); Release is harmless.
        let prev = self.cell.swap(expunged(), Ordering::AcqRel);
        // SAFETY: `prev` just left the cell through our swap.
        unsafe { self.retire_previous(prev, guard) }.is_some()
    }
}

impl<K, V> Drop for Entry<K, V> {
    fn drop(&mut self) {
        // Relaxed: `&mut self`: the entry is freed either by the collector
        // (whose epoch synchronisation ordered every store into the cell
        // before this) or by the map's `Drop` (exclusive access).
        let p = self.cell.load(Ordering::Relaxed);
        // An entry is freed only after leaving every table. Retired entries
        // are deleted or expunged (checked when retired); the map's `Drop`
        // frees entries with their live values, which no reader can hold
        // any more.
        if is_live(p) && p != self.inline_node() {
            // SAFETY: no table reaches the entry any more, and a live node
            // other than the inline one is owned by its cell: freed once,
            // here. (The inline node needs no drop and goes with the entry's
            // allocation.)
            drop(unsafe { Box::from_raw(p) });
        }
    }
}
