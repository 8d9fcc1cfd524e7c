//! The entry: one key and its three-state value cell.
//!
//! An [`Entry`] lives **in a slot of a shard's read view** (`read_view`),
//! beside its key's full 64-bit hash, or, for a key only in the dirty
//! table (a new key since the last promotion), in an allocation of its own.
//! The dirty table shares the view's entries, as Go's `dirty` shares
//! `read.m`'s `*entry`: its elements ([`Hashed`]) are plain pointers
//! ([`EntryRef`]) into the view's slots, or to the heap entries of new
//! keys. The full hash is stored beside every pointer to an entry, so
//! tables rehash from the stored hash and never call the user's `Hash`
//! again (a panicking `Hash` can only panic before anything changes), and a
//! probe compares hashes before it touches an entry.
//!
//! A promotion cannot simply publish the dirty table, whose entries live in
//! the old view or on the heap: the new view is built by **moving** every
//! entry into its own slots. Each entry is first *sealed* (below), so that
//! a lock-free writer that still reaches the old one fails and retries on
//! the new one; the key's bits and the value (inline bits, or the node's
//! pointer) then move into the new slot, which owns them from then on.
//! Splits, merges and compactions build their views the same way.
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
//! | a live pointer or null with bit 1 set ([`SEALED`]) | **sealed** | the entry has been copied into a newer table (a promotion, split, merge or compaction), which owns its key and value now; readers still read the value, every lock-free operation fails and its caller retries on the copy ([`Entry::is_moved`]) |
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
//! | live or deleted → sealed (never left) | a promotion, split, merge or compaction copying the entry ([`Entry::move_into`]) | yes | [`Entry::seal_locked`] |
//!
//! Nothing but a lock holder ever stores into an expunged cell, and every
//! lock-free store first checks that the cell is not expunged: that is what
//! keeps a value from being stored into an entry the next promotion would
//! drop.
//!
//! # Inline values
//!
//! When `V` needs no drop (`core::mem::needs_drop`) and is a plain scalar
//! ([`plain_value`]: an integer, a float, `bool`, `char`, `()` or
//! `&'static str`), an entry carries its first value inline
//! ([`InlineEntry`]: the entry, then a `ValueNode`), and the cell points to
//! that inline node: in a view's slot, a read hit of a key written once
//! reads hash, key and value from one slot (32 bytes for `u64 -> u64`),
//! with no pointer to follow; a new key's heap entry is one allocation.
//!
//! Only those types, because an inline value is **copied** when its entry
//! moves (a promotion, split, merge or compaction, below), while readers
//! may still hold `&V` into the old slot. A value that is changed through
//! `&V` (an `AtomicU64` counter, a `Mutex`, which need no drop either)
//! would lose every change made to the old copy after the move, and a
//! change racing the copy would be a data race. Until 2026-12-07 every
//! `V` that needs no drop went inline, and `tests/interior.rs` (counters
//! incremented through `&AtomicU64` while other keys' inserts migrate
//! their shards) lost about 8,000 of 960,000 increments. Stable Rust
//! cannot ask whether a type has interior mutability (`Freeze` is
//! unstable), so the inline types are a closed list of type ids, plus any
//! `V: Copy` in a map built with `Builder::inline_values(true)` (a `Copy`
//! type cannot hold an `UnsafeCell`; the option exists only where the
//! bound holds, and reaches [`Entry::boxed`] through the operation's
//! context). Every other value (a `Copy` struct by default) lives in a
//! node of its own, which a move hands over by its pointer. Such an entry
//! keeps the inline allocation's layout, its node room unused.
//!
//! A value that replaces it, or that is stored after a removal, gets a node
//! of its own, as before: the inline bytes are **never written again**,
//! because a reader pinned before the replacement may still hold a
//! reference into them (the loom model `loom-tests/tests/inline.rs` and its
//! twin `ReuseInlineSlot`). When the inline value leaves the cell nothing is
//! retired: it needs no drop, and its bytes go with the slot (or heap
//! entry), which the epoch keeps alive for every reader that reached it. A
//! move copies the inline bits only while the cell points to them. Values
//! that need a drop (a `String`, an `Arc`) always live in nodes (their
//! slots' inline room stays unused): dropping a replaced inline value would
//! need a deferred drop ordered before the view's own free, which two epoch
//! retirements do not guarantee.
//!
//! # Reclamation
//!
//! A value node that leaves the cell (replaced or deleted) is retired
//! through the epoch, so a reader that loaded it while pinned may keep
//! using it until its guard drops. All methods that hand out `&'g V` take
//! the guard whose lifetime bounds the reference.
//!
//! Entries are not reference-counted. A view owns the keys and values of
//! its slots that are not sealed, and drops them when the epoch frees the
//! view; a sealed slot's belong to the newer view it was moved into (the
//! loom model `loom-tests/tests/reclaim.rs` and its twin `DropSealedKey`).
//! A heap entry is retired through the epoch by the lock holder who
//! unlinks it from the last current table:
//!
//! | how an entry leaves | who frees it |
//! |---|---|
//! | expunged by a dirty rebuild (so not in dirty), then its view is replaced by a promotion | the old view's drop, after the epoch |
//! | moved into a new view (promotion, split, merge, compaction) | the old slot: nothing (sealed); a heap entry: retired by the promotion or with the migrated shard (its drop frees memory only) |
//! | a new key (only in dirty) removed | `remove` retires the heap entry after unlinking it from dirty |
//! | `clear()` | the old view's drop; heap entries retired by `clear` |
//! | deleted or expunged when its shard is split or merged | the retired shard's view (or, a heap entry, retired with the shard) |
//! | the map is dropped | the views' drops and the map's `Drop` (heap entries), at once |
//!
//! Every table that still points to a freed entry was itself retired no
//! later than the entry (an old view, a retired shard), so a reader that can
//! reach the entry was pinned before its retirement and the epoch waits for
//! it. Freeing a view walks its slots once (sequentially, in one
//! allocation) to drop their keys and the nodes of replaced values; an
//! empty view skips the walk.
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

/// A heap cell holding one value. Its alignment is at least 4, so the
/// address 1 can never be a real node and serves as the expunged marker,
/// and bit 1 of a cell is free for the seal ([`SEALED`]).
#[repr(align(4))]
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

/// The seal: bit 1 of a cell, set (under the shard lock) on an entry that
/// has been copied into a newer table. The entry's value stays readable
/// through it (readers mask the bit), but every lock-free operation that
/// finds it fails, and its caller finds the key again in the shard's
/// current tables ([`Entry::is_moved`]). A seal is never cleared.
const SEALED: usize = 2;

#[inline]
fn is_sealed<V>(p: *mut ValueNode<V>) -> bool {
    p.addr() & SEALED != 0
}

#[inline]
fn unsealed<V>(p: *mut ValueNode<V>) -> *mut ValueNode<V> {
    p.map_addr(|a| a & !SEALED)
}

/// The cell of a read view's empty slot (see `read_view`): expunged and
/// sealed at once, a state no entry is ever in. Every lock-free operation
/// treats it as sealed, and `Drop` as not the entry's own key, but no
/// operation reaches it: lookups compare the slot's hash first, and empty
/// slots carry hashes no key probing them can have. A walk that loads the
/// cell without that test ([`Entry::load_at`]) reads it as no value.
const EMPTY_ADDR: usize = EXPUNGED_ADDR | SEALED;

impl<K, V> Entry<K, V> {
    /// Marks the entry at `entry` (a read view's slot, otherwise
    /// uninitialised) as empty: only its cell is written.
    ///
    /// # Safety
    ///
    /// `entry` is valid for writes and not yet shared.
    #[inline]
    pub(crate) unsafe fn write_empty(entry: *mut Self) {
        // SAFETY: our contract.
        unsafe {
            ptr::addr_of_mut!((*entry).cell)
                .write(AtomicPtr::new(ptr::without_provenance_mut(EMPTY_ADDR)))
        };
    }

    /// Whether the entry at `entry` (a read view's slot) is empty. Its key
    /// is not read (an empty slot has none).
    ///
    /// # Safety
    ///
    /// `entry` is a slot of a view the caller may read: a view's slots are
    /// written before it is published, and whether one is empty never
    /// changes.
    #[inline]
    pub(crate) unsafe fn is_empty_at(entry: *const Self) -> bool {
        // Relaxed: an empty slot's cell is written before the view is
        // published (the reader's Acquire load of the view word orders it),
        // and an occupied slot's cell never takes this value.
        // SAFETY: our contract; only the cell is read (an empty slot has no
        // key).
        unsafe { (*ptr::addr_of!((*entry).cell)).load(Ordering::Relaxed) }.addr() == EMPTY_ADDR
    }
}

impl<K, V> Entry<K, V> {
    /// [`Entry::is_empty_at`] with exclusive access: a plain read of the
    /// cell (loom counts every atomic load of a model as a branch).
    ///
    /// # Safety
    ///
    /// `entry` is a slot of a view the caller has exclusive access to.
    #[inline]
    pub(crate) unsafe fn is_empty_exclusive(entry: *mut Self) -> bool {
        // SAFETY: our contract; only the cell is touched (an empty slot has
        // no key).
        let cell = unsafe { &mut *ptr::addr_of_mut!((*entry).cell) };
        crate::sync::atomic::load_mut(cell).addr() == EMPTY_ADDR
    }
}

/// Live means neither null (deleted) nor the expunged marker, and not
/// sealed (a sealed cell's value is read through [`unsealed`], never
/// replaced).
#[inline]
fn is_live<V>(p: *mut ValueNode<V>) -> bool {
    p.addr() > EXPUNGED_ADDR && !is_sealed(p)
}

/// What [`Entry::try_load_or_store`] did.
pub(crate) enum LoadOrStore<'g, V> {
    /// A live value was there; the offered value is handed back.
    Loaded(&'g V, V),
    /// The offered value was stored (the cell was deleted).
    Stored(&'g V),
    /// The cell is expunged or sealed; the caller must take the lock. Value
    /// handed back.
    Expunged(V),
}

/// One key and its value cell. See the module docs. The key's hash is
/// not stored here but beside every table pointer to the entry
/// ([`Hashed`], and the read view's slots), where probes compare it
/// before they touch the entry: an entry of a `u64 -> u64` map is 24
/// bytes with its value inline (a 32-byte allocation, not 48).
pub(crate) struct Entry<K, V> {
    /// Dropped by `Drop` unless the cell is sealed: a sealed entry's key
    /// belongs to its copy.
    key: core::mem::ManuallyDrop<Published<K>>,
    cell: AtomicPtr<ValueNode<V>>,
    /// The entry owns the node the cell points to (for drop check and for
    /// `Send`/`Sync`: an entry is as thread-safe as a `V` it owns).
    _owns: PhantomData<Box<ValueNode<V>>>,
}

/// An entry with its first value inline: the allocation of every entry
/// whose value type needs no drop (see the module docs, "Inline values").
///
/// A read view's slot holds one too, whatever `V` (see
/// `read_view`): its node is used only when [`Entry::INLINE`], and is
/// initialised only while the cell points to it or a sealed copy may read it.
#[repr(C)]
pub(crate) struct InlineEntry<K, V> {
    pub(crate) entry: Entry<K, V>,
    pub(crate) node: core::mem::MaybeUninit<ValueNode<V>>,
}

impl<K, V> Entry<K, V> {
    /// Whether entries of this type carry their first value inline: when
    /// `V` needs no drop (so a replaced inline value needs no deferred
    /// drop, only its bytes, which go with the entry).
    pub(crate) const INLINE: bool = !core::mem::needs_drop::<V>();

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
    /// A table pointer to `entry` (an entry in a read view's slot, which
    /// the dirty table shares with the view).
    #[inline]
    pub(crate) fn to(entry: &Entry<K, V>) -> Self {
        EntryRef(ptr::NonNull::from(entry))
    }

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

/// Heap entries retired together through the epoch (one deferred free for
/// a promotion's or a migration's entries instead of one per entry). Each
/// is sealed (its drop frees memory only: a view took its key and value)
/// or expunged (its drop drops the key).
pub(crate) struct RetiredEntries<K, V>(pub(crate) Vec<EntryRef<K, V>>);

impl<K, V> Drop for RetiredEntries<K, V> {
    fn drop(&mut self) {
        for entry in self.0.drain(..) {
            if Entry::<K, V>::INLINE {
                // SAFETY: retired through the epoch once, as a batch, by the
                // lock holder that unlinked every entry in it; allocated as an
                // `InlineEntry` (`Entry::boxed`), by `pool::boxed`.
                unsafe { crate::pool::free(entry.0.as_ptr().cast::<InlineEntry<K, V>>()) };
            } else {
                // SAFETY: as above; allocated as a plain `Entry`.
                unsafe { crate::pool::free(entry.0.as_ptr()) };
            }
        }
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
            // reclamation model (heap entries; a view's own are dropped
            // early in `publish_locked`). It runs the destructor (dropping
            // the key) under possible readers, but keeps the memory, so
            // the model reports the early drop instead of crashing.
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

/// Whether `V` is one of the types known to hold no interior mutability
/// in their own bytes (integers, floats, `bool`, `char`, `()`,
/// `&'static str`): the value types whose first value may be stored
/// inline (see the module docs, "Inline values"). Rust has no stable way
/// to ask this of any type (`Freeze` is unstable), so the list is closed;
/// the comparisons of type ids fold to a constant when compiled.
#[inline]
pub(crate) fn plain_value<V: 'static>() -> bool {
    use core::any::TypeId;
    let id = TypeId::of::<V>();
    macro_rules! any_of {
        ($($t:ty),*) => { false $(|| id == TypeId::of::<$t>())* };
    }
    any_of!(
        u8,
        u16,
        u32,
        u64,
        u128,
        usize,
        i8,
        i16,
        i32,
        i64,
        i128,
        isize,
        f32,
        f64,
        bool,
        char,
        (),
        &'static str
    )
}

impl<K, V: 'static> Entry<K, V> {
    /// A new live entry on the heap, ready to go into a dirty table: one
    /// allocation holding the value too if `V` needs no drop and is a
    /// [`plain_value`] or `inline` says so (the map's
    /// `Builder::inline_values`, only for `V: Copy`), otherwise the entry
    /// and a value node.
    pub(crate) fn boxed(key: K, value: V, inline: bool) -> EntryRef<K, V> {
        if Self::INLINE {
            // A value that may be changed through `&V` (an atomic, a lock)
            // must never be copied while it is shared, as the move of an
            // inline value into a new view would: it lives in a node, which
            // moves by its pointer. The allocation keeps the inline layout
            // either way (the node room then unused, never initialised),
            // which every free of an entry of this type expects.
            let in_place = inline || plain_value::<V>() || injected(Bug::InlineAnyValue);
            let (cell, node) = if in_place {
                let node = ValueNode {
                    value: Published::new(value),
                };
                (ptr::null_mut(), core::mem::MaybeUninit::new(node))
            } else {
                let node = Box::into_raw(ValueNode::boxed(value));
                (node, core::mem::MaybeUninit::uninit())
            };
            // From the thread's cache of freed blocks when it has one of
            // this size (`crate::pool`); freed by `retire_small` or `Box`.
            let inline = crate::pool::boxed(InlineEntry {
                entry: Entry {
                    key: core::mem::ManuallyDrop::new(Published::new(key)),
                    cell: AtomicPtr::new(cell),
                    _owns: PhantomData,
                },
                node,
            });
            if in_place {
                // SAFETY: `inline` is a fresh, unshared allocation; the cell
                // gets a pointer to its own node, derived from the
                // allocation's pointer (so it may be read through for the
                // entry's life).
                unsafe {
                    let node = ptr::addr_of_mut!((*inline).node).cast::<ValueNode<V>>();
                    (*inline).entry.cell = AtomicPtr::new(node);
                }
            }
            EntryRef(ptr::NonNull::new(inline.cast::<Entry<K, V>>()).expect("Box is non-null"))
        } else {
            let entry = crate::pool::boxed(Entry {
                key: core::mem::ManuallyDrop::new(Published::new(key)),
                cell: AtomicPtr::new(Box::into_raw(ValueNode::boxed(value))),
                _owns: PhantomData,
            });
            EntryRef(ptr::NonNull::new(entry).expect("an allocation is non-null"))
        }
    }
}

impl<K, V> Entry<K, V> {
    /// The key.
    #[inline]
    pub(crate) fn key(&self) -> &K {
        self.key.get()
    }

    /// Go: `entry.load`.
    #[inline]
    pub(crate) fn load<'g>(&self, guard: &'g Guard) -> Option<&'g V> {
        Self::load_cell(&self.cell, guard)
    }

    /// [`Entry::load`] for a walk of a view's slots that has not asked
    /// whether the slot is empty: an empty slot's cell (`EMPTY_ADDR`) loses
    /// its two tag bits to the same mask that turns a deleted or expunged
    /// cell into null, so it reads as no value. One load per slot, and no
    /// test of the slot's hash (a snapshot's capture walks views this way).
    ///
    /// # Safety
    ///
    /// `entry` is a slot of a view the caller may read, which `guard`
    /// keeps alive.
    #[inline]
    pub(crate) unsafe fn load_at(entry: *const Self, guard: &Guard) -> Option<&V> {
        // SAFETY: our contract; only the cell is read (an empty slot has no
        // key).
        let cell = unsafe { &*ptr::addr_of!((*entry).cell) };
        Self::load_cell(cell, guard)
    }

    /// [`Entry::load`] of `cell`, an entry's cell.
    #[inline]
    fn load_cell<'g>(cell: &AtomicPtr<ValueNode<V>>, _guard: &'g Guard) -> Option<&'g V> {
        // Acquire: pairs with the Release half of the operation that stored
        // this node; its value is initialised before publication.
        let word = cell.load(Ordering::Acquire);
        // Both tag bits cleared: a node (nodes are aligned to 4), sealed or
        // not, stays itself; deleted (null), expunged (1), sealed deleted (2)
        // and empty (3) all become null. One `and` and a test on a read
        // hit, where `unsealed` and `is_live` took five instructions.
        const { assert!(EXPUNGED_ADDR | SEALED == 3 && align_of::<ValueNode<V>>() >= 4) };
        let p = word.map_addr(|a| a & !(EXPUNGED_ADDR | SEALED));
        debug_assert_eq!(!p.is_null(), is_live(unsealed(word)));
        if !p.is_null() {
            // SAFETY: a live pointer came from `Box::into_raw`; it is retired
            // only through the epoch after leaving the cell (a sealed cell's
            // node is the copy's, retired the same way), and we loaded it
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

    /// Whether the entry has been copied into a newer table (its cell is
    /// sealed). A lock-free operation that failed on an entry it found in a
    /// view asks this: if so, the key lives on in the shard's current
    /// tables, and the caller finds it there under the lock. A seal is
    /// never cleared, so asking after the failure is enough.
    #[inline]
    pub(crate) fn is_moved(&self) -> bool {
        // Acquire: a caller that sees the seal goes on to the shard's
        // current tables under its lock, which orders the rest; Acquire
        // keeps the answer from being older than the failure it explains.
        is_sealed(self.cell.load(Ordering::Acquire))
    }

    /// Seals the cell, under the shard lock, before the entry is copied
    /// into a new table, and returns the value it held at that moment (a
    /// live node, or null). Every lock-free operation that reaches the cell
    /// afterwards fails (`is_moved`); one that got in first is in the value
    /// returned.
    pub(crate) fn seal_locked(&self) -> *mut ValueNode<V> {
        // Acquire: the copy reads the value the node holds.
        let mut p = self.cell.load(Ordering::Acquire);
        if injected(Bug::CopyWithoutSeal) {
            // The broken twin: seal by a blind swap of the value read above,
            // not a compare-exchange, so an update that lands between the
            // load and the swap is overwritten (its node leaks) and the copy
            // takes the value from before it.
            self.cell.swap(p.map_addr(|a| a | SEALED), Ordering::AcqRel);
            return p;
        }
        loop {
            debug_assert!(
                !is_sealed(p) && p != expunged(),
                "only a live or deleted entry is copied, and only once"
            );
            // AcqRel on success: Acquire as above; Release is not needed by
            // anyone (a writer that fails on the seal takes the lock, which
            // orders it) but costs nothing on a CAS. Acquire on failure: the
            // fresh value is the one copied.
            match self.cell.compare_exchange_weak(
                p,
                p.map_addr(|a| a | SEALED),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return p,
                Err(actual) => p = actual,
            }
        }
    }

    /// Writes into `dest` (a read view's slot) an entry that takes over
    /// this sealed entry's key and `value` (what [`Entry::seal_locked`]
    /// returned): the key's bits are moved, an inline value's bits are
    /// copied into `dest`'s own inline node (its cell then points there),
    /// and a node is handed over as it is.
    ///
    /// # Safety
    ///
    /// The caller holds the shard lock, sealed this entry with
    /// `seal_locked`, which returned `value`, and calls this once: from now
    /// on the copy owns the key and the value (the sealed entry never drops
    /// them, see `Drop`). `dest` is valid for writes and not yet shared.
    pub(crate) unsafe fn move_into(&self, value: *mut ValueNode<V>, dest: *mut InlineEntry<K, V>) {
        // SAFETY: the key is moved out bitwise; this sealed entry never uses
        // it as its own again (its `Drop` skips it), and readers that still
        // reach it through an old table read the same bits, which the copy
        // keeps alive at least as long (the copy's table is retired after
        // the old one, through the same epoch).
        let key = Published::new(unsafe { ptr::read(self.key()) });
        let old = self.inline_node();
        // SAFETY: `dest` is writable and unshared (our contract).
        unsafe {
            let cell = if Self::INLINE && value == old {
                // SAFETY (of the read): the cell points to the inline node,
                // so it is initialised (a value never written again); `V`
                // needs no drop, so its bits may be duplicated.
                let first = Published::new(ptr::read((*old).value()));
                ptr::addr_of_mut!((*dest).node)
                    .write(core::mem::MaybeUninit::new(ValueNode { value: first }));
                ptr::addr_of_mut!((*dest).node).cast::<ValueNode<V>>()
            } else {
                value
            };
            ptr::addr_of_mut!((*dest).entry).write(Entry {
                key: core::mem::ManuallyDrop::new(key),
                cell: AtomicPtr::new(cell),
                _owns: PhantomData,
            });
        }
    }

    /// Moves the key and the live value out of the entry, and seals its
    /// cell so that its drop (with its view, or
    /// [`EntryRef::free_exclusive`] for a heap entry) leaves them (`None`,
    /// after dropping the key, if the entry holds no value).
    ///
    /// # Safety
    ///
    /// The caller owns the map (it is being consumed): nothing else reads
    /// the entry, and this is the one call that takes its parts.
    pub(crate) unsafe fn take_parts_exclusive(&self) -> Option<(K, V)> {
        // Relaxed: exclusive access; the ownership hand-over ordered every
        // store.
        let cell = self.cell.load(Ordering::Relaxed);
        debug_assert!(!is_sealed(cell), "a sealed entry's parts are its copy's");
        // Relaxed: as above. The seal makes `Drop` leave the key and value.
        self.cell
            .store(ptr::without_provenance_mut(SEALED), Ordering::Relaxed);
        // SAFETY: the key is the entry's own (not sealed); moved out once.
        let key = unsafe { ptr::read(self.key()) };
        if !is_live(cell) {
            drop(key);
            return None;
        }
        let value = if cell == self.inline_node() {
            // SAFETY: the cell points to the initialised inline node; `V`
            // needs no drop, so reading its bits out leaves nothing behind.
            unsafe { ptr::read((*cell).value()) }
        } else {
            // SAFETY: a live node other than the inline one is owned by the
            // cell (see `Drop`), taken once.
            unsafe { Box::from_raw(cell) }.into_value()
        };
        Some((key, value))
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
            if is_sealed(current) {
                // Moved: the caller stores under the lock, into the copy.
                // SAFETY: `new` was never published; we still own it.
                return Err(unsafe { Box::from_raw(new) });
            }
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
            if p == expunged() || is_live(p) || is_sealed(p) {
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
    /// `new` is dropped if the swap does not happen, and handed back
    /// (`Err`) if the entry is moved (then the caller tries the copy).
    pub(crate) fn try_compare_and_swap(&self, old: &V, new: V, guard: &Guard) -> Result<bool, V>
    where
        V: PartialEq,
    {
        // Acquire: we dereference the loaded node to compare it.
        let mut p = self.cell.load(Ordering::Acquire);
        let mut node: Option<Box<ValueNode<V>>> = None;
        let mut new = Some(new);
        loop {
            if is_sealed(p) {
                return Err(match node {
                    Some(node) => (*node).into_value(),
                    None => new.take().expect("new value held until stored"),
                });
            }
            // SAFETY: live pointer loaded with Acquire while `guard` is pinned.
            if !is_live(p) || unsafe { (*p).value() } != old {
                return Ok(false);
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
                return Ok(true);
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
                    return Ok(true);
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

impl<K, V> Entry<K, V> {
    /// The broken twin `Bug::DropSealedKey`: drops the key whatever the
    /// seal says.
    ///
    /// # Safety
    ///
    /// None: only the twin calls it, for loom to report the double drop.
    pub(crate) unsafe fn drop_key_even_if_sealed(&self) {
        // SAFETY: none (see above); the key is read out and dropped.
        drop(unsafe { ptr::read(self.key()) });
    }
}

impl<K, V> Entry<K, V> {
    /// For the broken twin `Bug::FreeEntryWithoutEpoch` only: seals the
    /// cell whatever it holds (a value then leaks), so that `Drop` leaves
    /// the key the twin dropped already.
    pub(crate) fn seal_for_twin(&self) {
        // Relaxed: a twin's bookkeeping; nothing reads the cell for data.
        self.cell
            .store(ptr::without_provenance_mut(SEALED), Ordering::Relaxed);
    }
}

impl<K, V> Drop for Entry<K, V> {
    fn drop(&mut self) {
        // `&mut self`: the entry is freed either by the collector (whose
        // epoch synchronisation ordered every store into the cell before
        // this) or by the map's `Drop` (exclusive access).
        let p = crate::sync::atomic::load_mut(&mut self.cell);
        if is_sealed(p) {
            // Copied into a newer table: the copy owns the key and the value.
            return;
        }
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
        // SAFETY: dropped once, here; the entry is not sealed, so the key
        // is its own.
        unsafe { core::mem::ManuallyDrop::drop(&mut self.key) };
    }
}
