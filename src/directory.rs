//! The directory: which shard a hash belongs to.
//!
//! Shards are indexed by the **top** bits of the key's hash (extendible
//! hashing, as in Go 1.24's swiss maps). With `2^bits` shards, shard `i`
//! owns every hash whose top `bits` bits equal `i`. Indexing by the top bits
//! is what lets a later split of one shard divide it by the *next* bit
//! without touching any other shard.
//!
//! In this version the shard count is fixed when the map is built (a
//! builder option); the directory is its own module so that splitting and
//! merging shards can replace it without touching the shard protocol.

use crate::shard::Shard;

/// The most shard-index bits the builder accepts (65 536 shards).
pub(crate) const MAX_BITS: u32 = 16;

/// A fixed array of `2^bits` shards.
pub(crate) struct Directory<K, V> {
    shards: Box<[Shard<K, V>]>,
    bits: u32,
}

impl<K, V> Directory<K, V> {
    /// `2^bits` empty shards.
    pub(crate) fn new(bits: u32) -> Self {
        debug_assert!(bits <= MAX_BITS);
        Directory {
            shards: (0..1usize << bits).map(|_| Shard::new()).collect(),
            bits,
        }
    }

    /// The index of the shard that owns `hash`: its top `bits` bits.
    #[inline]
    pub(crate) fn index(&self, hash: u64) -> usize {
        // Two shifts so that `bits == 0` shifts by 64 in total without
        // overflowing a single shift.
        ((hash >> (63 - self.bits)) >> 1) as usize
    }

    /// The shard that owns `hash`.
    #[inline]
    pub(crate) fn shard(&self, hash: u64) -> &Shard<K, V> {
        &self.shards[self.index(hash)]
    }

    /// All shards, in index order.
    pub(crate) fn shards(&self) -> &[Shard<K, V>] {
        &self.shards
    }

    /// All shards, mutably (for the map's `Drop`).
    pub(crate) fn shards_mut(&mut self) -> &mut [Shard<K, V>] {
        &mut self.shards
    }
}
