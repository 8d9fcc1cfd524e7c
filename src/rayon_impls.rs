//! Parallel iteration with rayon (feature `rayon`).
//!
//! - **A snapshot**: [`Snapshot::par_iter`], a `ParallelIterator` over
//!   `(&K, &V)`. A snapshot's pieces are slices (one per shard), so rayon
//!   splits the list of pieces and then each piece, as it splits any
//!   slice: no shared iterator, no lock.
//! - **The live map**: [`SnapMap::par_for_each`]. A [`Pinned`](crate::Pinned)
//!   handle (its epoch guard) belongs to one thread, and the references a
//!   walk yields are bounded by it, so a map walk cannot be one iterator
//!   handed between rayon's workers. Instead hash space is cut into
//!   ranges (about four per worker, never finer than the directory) and
//!   each worker pins itself and walks its ranges with the ordinary
//!   iterator bounded to the range ([`Iter`](crate::Iter) walks hash space,
//!   which is what makes a range walk exact while shards split and
//!   merge). The guarantee is the sequential walk's: each key at most
//!   once, a key present for the whole walk exactly once.

use core::hash::{BuildHasher, Hash};

use rayon::iter::{IntoParallelIterator, IntoParallelRefIterator, ParallelIterator};

use crate::iter::Iter;
use crate::map::SnapMap;
use crate::snapshot::Snapshot;

impl<K: Send + Sync, V: Send + Sync, S> Snapshot<K, V, S> {
    /// A rayon parallel iterator over the snapshot's entries (one point in
    /// time, as [`iter`](Self::iter)), in no particular order. Feature
    /// `rayon`.
    ///
    /// ```
    /// use rayon::iter::ParallelIterator;
    ///
    /// let map: snapmap::SnapMap<u64, u64> = (0..1000).map(|k| (k, k)).collect();
    /// let snapshot = map.snapshot();
    /// assert_eq!(snapshot.par_iter().map(|(_, v)| *v).sum::<u64>(), 499_500);
    /// ```
    pub fn par_iter(&self) -> impl ParallelIterator<Item = (&K, &V)> + '_ {
        let slices: Vec<&[(K, V)]> = self.slices().collect();
        slices
            .into_par_iter()
            .flat_map(|slice| slice.par_iter().map(|(k, v)| (k, v)))
    }
}

impl<K, V, S> SnapMap<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher + Send + Sync,
{
    /// Calls `f` on every entry from rayon's worker threads, each worker
    /// pinned on its own and walking its own ranges of hash space (see
    /// the module docs of `src/rayon_impls.rs`). Each key at most once; a
    /// key present for the whole walk exactly once; each shard as of when
    /// its range reaches it (not a snapshot: for one point in time, use
    /// [`Snapshot::par_iter`]). Takes the locks iteration takes (a shard
    /// with new keys pending is promoted first). Feature `rayon`.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// let map: snapmap::SnapMap<u64, u64> = (0..1000).map(|k| (k, k)).collect();
    /// let sum = AtomicU64::new(0);
    /// map.par_for_each(|_, v| {
    ///     sum.fetch_add(*v, Ordering::Relaxed);
    /// });
    /// assert_eq!(sum.into_inner(), 499_500);
    /// ```
    pub fn par_for_each(&self, f: impl Fn(&K, &V) + Sync + Send) {
        let bits = range_bits(self.directory_depth(), rayon::current_num_threads());
        let ranges = 1u64 << bits;
        (0..ranges).into_par_iter().for_each(|range| {
            let (first, last) = hash_range(range, bits);
            let pinned = self.pin();
            let raw = &self.raw;
            for (key, value) in Iter::range(
                &raw.directory,
                pinned.guard(),
                raw.ctx(raw.stripes.mine()),
                first,
                last,
            ) {
                f(key, value);
            }
        });
    }

    /// The directory's depth now (for cutting hash space).
    fn directory_depth(&self) -> u32 {
        let guard = crate::sync::epoch::pin();
        self.raw.directory.table(&guard).depth()
    }
}

/// How many top hash bits cut hash space into ranges: about four ranges
/// per worker, never more ranges than shards (a range finer than a shard
/// walks that shard's view once per range).
fn range_bits(directory_depth: u32, workers: usize) -> u32 {
    let wanted = (workers.max(1) * 4).next_power_of_two().trailing_zeros();
    wanted.min(directory_depth)
}

/// The hashes of range `index` when hash space is cut by its top `bits`.
fn hash_range(index: u64, bits: u32) -> (u64, u64) {
    if bits == 0 {
        (0, u64::MAX)
    } else {
        let first = index << (64 - bits);
        (first, first | (u64::MAX >> bits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_partition_hash_space() {
        for bits in 0..8 {
            let mut next = 0u64;
            for index in 0..(1u64 << bits) {
                let (first, last) = hash_range(index, bits);
                assert_eq!(first, next);
                next = last.wrapping_add(1);
            }
            assert_eq!(next, 0, "the last range ends at u64::MAX");
        }
        assert_eq!(range_bits(10, 2), 3);
        assert_eq!(range_bits(1, 64), 1);
    }
}
