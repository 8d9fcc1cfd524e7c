//! The read view: a shard's immutable table, read without locks.
//!
//! A [`ReadView`] is Go's `readOnly.m`: a hash table from key to entry that
//! is never modified after it is published. Writers replace the whole view
//! (promotion, `clear`) and retire the old one through the epoch; readers
//! load the current view and probe it under a guard.
//!
//! # The `amended` flag lives in the pointer
//!
//! Go keeps `amended` next to `m` in the `readOnly` struct, and setting it
//! allocates a new `readOnly` sharing `m`. Here the flag is the low bit of
//! the shard's view pointer (a view is at least 8-aligned), so a reader gets
//! the table and the flag from one atomic load, and amending a view is one
//! store of the same pointer with the bit set, with no allocation.
//!
//! ```text
//!   shard.read:  [ pointer to ReadView | amended bit ]
//!                         |
//!                         v
//!   ReadView { table: HashTable<EntryRef> }   (immutable once published)
//! ```
//!
//! # Hash bits
//!
//! The directory picks a shard by the *top* bits of the hash, and hashbrown
//! uses the top 7 bits of the hash it is given as its control byte. Tables
//! are therefore given [`table_hash`], the hash rotated by 32 bits, so keys
//! in one shard still differ in their control bytes.

use crate::shard::entry::{Entry, EntryRef};
use crate::sync::Published;
use equivalent::Equivalent;

/// A shard's table: entries shared between the read view and dirty. The
/// table does not own them (see `entry`'s "Reclamation"), so dropping a
/// table is one deallocation, whatever it holds.
pub(crate) type Table<K, V> = hashbrown::HashTable<EntryRef<K, V>>;

/// The hash a table is given (see the module docs).
#[inline]
pub(crate) fn table_hash(hash: u64) -> u64 {
    hash.rotate_left(32)
}

/// Rehashes a stored entry from its stored hash: never calls user code.
#[inline]
pub(crate) fn rehash<K, V>(entry: &EntryRef<K, V>) -> u64 {
    table_hash(entry.hash)
}

/// Looks `key` up in `table`.
#[inline]
pub(crate) fn find<'t, K, V, Q>(
    table: &'t Table<K, V>,
    hash: u64,
    key: &Q,
) -> Option<&'t Entry<K, V>>
where
    Q: ?Sized + Equivalent<K>,
{
    table
        .find(table_hash(hash), |e| {
            e.hash == hash && key.equivalent(e.key())
        })
        .map(|e| &**e)
}

/// An immutable table published to lock-free readers.
pub(crate) struct ReadView<K, V> {
    table: Published<Table<K, V>>,
}

impl<K, V> ReadView<K, V> {
    /// A heap-allocated view over `table`, ready to publish.
    pub(crate) fn boxed(table: Table<K, V>) -> *mut Self {
        Box::into_raw(Box::new(ReadView {
            table: Published::new(table),
        }))
    }

    /// Heap bytes of the view and its table (for retirement accounting).
    pub(crate) fn heap_bytes(&self) -> usize {
        size_of::<Self>() + self.table().allocation_size()
    }

    /// The table (loom checks that this read follows the publication).
    #[inline]
    pub(crate) fn table(&self) -> &Table<K, V> {
        self.table.get()
    }

    /// Looks `key` up.
    #[inline]
    pub(crate) fn find<Q>(&self, hash: u64, key: &Q) -> Option<&Entry<K, V>>
    where
        Q: ?Sized + Equivalent<K>,
    {
        find(self.table(), hash, key)
    }
}

/// The amended bit in a shard's view pointer.
const AMENDED: usize = 1;

/// Splits a tagged view pointer into the view and the amended flag.
#[inline]
pub(crate) fn untag<K, V>(tagged: *mut ReadView<K, V>) -> (*mut ReadView<K, V>, bool) {
    (
        tagged.map_addr(|a| a & !AMENDED),
        tagged.addr() & AMENDED != 0,
    )
}

/// The same view pointer with the amended bit set.
#[inline]
pub(crate) fn with_amended<K, V>(view: *mut ReadView<K, V>) -> *mut ReadView<K, V> {
    const { assert!(align_of::<ReadView<K, V>>() > AMENDED) };
    view.map_addr(|a| a | AMENDED)
}
