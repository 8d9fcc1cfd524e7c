//! Reloads of the whole content (`SnapMap::replace_all`, `restore`): the
//! new content joined with the map in hash order, writing only what
//! differs.
//!
//! # The join
//!
//! ```text
//!   content ──hash (the map's S)──► buckets by the top `bits` hash bits
//!                                   (bits = the directory's depth now)
//!   map: shard by shard in hash order (as `Iter` walks), for shard [lo, hi]:
//!       for each content item in [lo, hi] (its buckets, filtered):
//!           its key in the view  -> mark the slot with the item
//!           not in the view      -> table of new keys
//!           (a repeated key: the last item's mark or table entry wins)
//!       for each slot of the view holding an entry (hash from the slot):
//!           deleted, marked        -> write (the key comes back)
//!           live, marked, equal    -> unchanged (the item is dropped)
//!           live, marked, other    -> write (replace)
//!           live, not marked       -> remove
//!       items in the table of new keys -> write
//!   then: the removals, then the writes (each with its hash: no rehash)
//! ```
//!
//! The diff reads only; the writes come after it, as one batch (the caller
//! holds the write gate). Every comparison happens against one shard at a
//! time, whose view and entries stay in cache between the two passes; the
//! items are found in the shard's own view (a probe of its slots, whose
//! hashes are stored), and only keys the view does not hold go into a
//! small table: no lookup of each content key through the map (a chain of
//! dependent loads, 70 ns a key at 1M keys) and no table of the whole
//! content (the cache miss per insert and per probe of a table the size of
//! the map: an earlier version's cost, see `SnapMap::replace_all`).
//!
//! A bucket is never larger than the shard or shards it covers, unless a
//! concurrent writer split a shard past `bits` during the walk (or the map
//! has more than 2^16 shards): the bucket then serves several shards, each
//! taking the items in its range, which is correct and only slower.
//!
//! Where the time goes (`perf`, 1M `u64` keys, 1 % of the values changed,
//! about 50 ms without the snapshot that makes it visible): about a
//! quarter bucketing the content (one hash and one write per item into
//! the bucket of its shard, 32 MB of fresh memory scattered over as many
//! write streams as there are shards), a fifth the probes (each item's
//! home slot, at random in its shard's view; the walk after it then finds
//! the view in cache), and the rest the walk and the writes. History: the
//! version before this one put every item of the shard in a table, then
//! walked the view looking each entry up in it: the entry misses came in
//! the walk, one after the other behind the table's probe. Probing the view
//! per item instead overlaps more of them (the items are independent, and
//! the probe loop is short): `replace_all` of 1M keys, 1 % changed, 83–91 →
//! 71–73 ms; 10K keys, 178–179 → 171–173 µs (median of many reloads, three
//! rounds alternated; entries then lived outside the views). Prefetching
//! the entry eight slots ahead in the old walk, measured and dropped: 1M
//! keys 80–92 → 68–72 ms, but 10K keys 183 → 200–236 µs. With the entries
//! inline in the views, the probe asks for the home slot of the item
//! [`PROBE_AHEAD`] places ahead (`ReadView::prefetch_home`): 1M keys 53–58
//! → 50–52 ms, 10K keys 217–240 → 203–213 µs (median of 10 and 400
//! reloads, three rounds alternated). The walk reads each slot by one load
//! of its cell (`ReadView::live_at`: an empty slot masks to no value, as
//! a deleted one does), not by a test of the slot's hash for emptiness
//! and then the cell: callgrind, 10K keys, 1 % changed, 181 → 172
//! instructions per key (1M: 222 → 212); 96.7–99.5 → 93.8–95.2 µs per
//! reload (median of 2,000, three rounds alternated), 1M unchanged within
//! the noise (51.7–54.8 ms against 53.0–53.3).
//!
//! Concurrent writers that are not part of the reload may write beside it
//! (the gate orders batches against snapshots, not against plain writers):
//! a key written between the diff and the reload's writes keeps the other
//! writer's value if the diff found it equal, as with any two writers.

use core::hash::{BuildHasher, Hash};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry as TableEntry;

use crate::batch::Applied;
use crate::hash::top_bits;
use crate::raw::RawMap;
use crate::shard::read_view::table_hash;
use crate::stats::Stripe;
use crate::sync::epoch::Guard;

/// How many items ahead of its probe the diff asks for an item's home
/// slot.
const PROBE_AHEAD: usize = 8;

/// The most hash bits the content is bucketed by (2^16 buckets).
const MAX_BUCKET_BITS: u32 = 16;

/// An item of the new content: owned pairs (`replace_all`) or a
/// snapshot's borrowed ones (`restore`, which clones only what it writes).
pub(crate) trait Item<K, V> {
    fn key(&self) -> &K;
    fn value(&self) -> &V;
    fn into_pair(self) -> (K, V);
}

impl<K, V> Item<K, V> for (K, V) {
    #[inline]
    fn key(&self) -> &K {
        &self.0
    }
    #[inline]
    fn value(&self) -> &V {
        &self.1
    }
    #[inline]
    fn into_pair(self) -> (K, V) {
        self
    }
}

impl<K: Clone, V: Clone> Item<K, V> for (&K, &V) {
    #[inline]
    fn key(&self) -> &K {
        self.0
    }
    #[inline]
    fn value(&self) -> &V {
        self.1
    }
    #[inline]
    fn into_pair(self) -> (K, V) {
        (self.0.clone(), self.1.clone())
    }
}

/// The content, hashed and bucketed by the top bits of the hash, so that a
/// shard's items are the items of the buckets its hash range covers. An
/// item is taken (`None`) once it is written or found unchanged.
struct Buckets<T> {
    bits: u32,
    buckets: Vec<Vec<Option<(u64, T)>>>,
}

impl<T> Buckets<T> {
    fn new<K, V, S: BuildHasher>(
        hasher: &S,
        bits: u32,
        content: impl IntoIterator<Item = T>,
    ) -> Self
    where
        K: Hash,
        T: Item<K, V>,
    {
        let content = content.into_iter();
        let count = 1usize << bits;
        let expected = content.size_hint().0 / count;
        let mut buckets: Vec<Vec<_>> = (0..count)
            .map(|_| Vec::with_capacity(expected + expected / 4))
            .collect();
        for item in content {
            let hash = hasher.hash_one(item.key());
            buckets[top_bits(hash, bits)].push(Some((hash, item)));
        }
        Buckets { bits, buckets }
    }

    #[inline]
    fn bucket(&self, hash: u64) -> usize {
        top_bits(hash, self.bits)
    }

    /// The item at `at`, which has not been taken.
    #[inline]
    fn get(&self, at: (u32, u32)) -> &(u64, T) {
        self.buckets[at.0 as usize][at.1 as usize]
            .as_ref()
            .expect("an item in the join table has not been taken")
    }

    #[inline]
    fn take(&mut self, at: (u32, u32)) -> (u64, T) {
        self.buckets[at.0 as usize][at.1 as usize]
            .take()
            .expect("an item is taken once")
    }
}

/// No item for a view slot (in `marks`).
const UNMARKED: u64 = u64::MAX;

/// An item's place in [`Buckets`] as one word, for `marks`.
#[inline]
fn mark((bucket, index): (u32, u32)) -> u64 {
    (u64::from(bucket) << 32) | u64::from(index)
}

/// The item a `marks` word names, if any.
#[inline]
fn unmark(word: u64) -> Option<(u32, u32)> {
    (word != UNMARKED).then_some(((word >> 32) as u32, word as u32))
}

/// Makes `content` the map's content: the diff (module docs), then the
/// removals and the writes. The caller holds the write gate (one batch).
pub(crate) fn replace_all<'g, K, V, S, T>(
    raw: &RawMap<K, V, S>,
    content: impl IntoIterator<Item = T>,
    guard: &'g Guard,
    stripe: &Stripe,
) -> Applied
where
    K: Hash + Eq + Send + Sync + 'static,
    V: PartialEq + Send + Sync + 'static,
    S: BuildHasher,
    T: Item<K, V>,
{
    let bits = raw.directory.table(guard).depth().min(MAX_BUCKET_BITS);
    let mut content = Buckets::new(&raw.hasher, bits, content);
    let mut applied = Applied::default();
    let mut gone: Vec<(u64, &'g K)> = Vec::new();
    let mut writes: Vec<(u64, T)> = Vec::new();
    // One shard's new keys: (bucket, index) in `content`. Reused.
    let mut table: HashTable<(u32, u32)> = HashTable::new();
    // Per slot of the shard's view, the item for its key (`mark`). Reused.
    let mut marks: Vec<u64> = Vec::new();
    let ctx = raw.ctx(stripe);
    let mut cursor = Some(0u64);
    while let Some(at) = cursor {
        let shard = raw.shard(at, guard);
        // On `Err(Retired)` the shard was split or merged meanwhile: look
        // the cursor up again (as `Iter` does).
        let Ok(view) = shard.view_for_iter(&ctx, guard) else {
            continue;
        };
        let last = shard.hash_range().1;
        cursor = last.checked_add(1);

        // Each item against the view: the slot holding its key, or the
        // table of new keys. A repeated key keeps its last item (the
        // earlier ones stay in `content`, dropped at the end).
        marks.clear();
        marks.resize(view.positions(), UNMARKED);
        table.clear();
        for b in content.bucket(at)..=content.bucket(last) {
            let bucket = &content.buckets[b];
            for (i, slot) in bucket.iter().enumerate() {
                if let Some(Some((ahead, _))) = bucket.get(i + PROBE_AHEAD) {
                    view.prefetch_home(*ahead);
                }
                let Some((hash, item)) = slot else { continue };
                if !(at..=last).contains(hash) {
                    continue;
                }
                let here = (b as u32, i as u32);
                if let Some(position) = view.position_of(*hash, item.key()) {
                    marks[position] = mark(here);
                    continue;
                }
                let found = table.entry(
                    table_hash(*hash),
                    |&other| {
                        let (h, other) = content.get(other);
                        h == hash && other.key() == item.key()
                    },
                    |&other| table_hash(content.get(other).0),
                );
                match found {
                    TableEntry::Occupied(mut earlier) => *earlier.get_mut() = here,
                    TableEntry::Vacant(vacant) => {
                        vacant.insert(here);
                    }
                }
            }
        }

        // The view's entries against their items, slot by slot.
        for (position, &mark) in marks.iter().enumerate() {
            // An empty slot and a deleted entry both read as `None`; a
            // marked slot holds an entry (its item's key), in range.
            let live = view.live_at(position, guard);
            match (unmark(mark), live) {
                (None, None) => {}
                // Deleted: its item is a write (the key comes back).
                (Some(item), None) => writes.push(content.take(item)),
                (Some(item), Some((_, _, current))) if content.get(item).1.value() == current => {
                    applied.unchanged += 1;
                    drop(content.take(item));
                }
                (Some(item), Some(_)) => writes.push(content.take(item)),
                // Not in the content: a removal, unless walked already,
                // before a merge.
                (None, Some((hash, key, _))) => {
                    if hash >= at {
                        gone.push((hash, key));
                    }
                }
            }
        }
        // New keys.
        for at in table.drain() {
            writes.push(content.take(at));
        }
    }
    drop(content); // the repeated keys' earlier items

    for (hash, key) in gone {
        if raw.remove(hash, key, guard, stripe).is_some() {
            applied.removed += 1;
        }
    }
    for (hash, item) in writes {
        let (key, value) = item.into_pair();
        match raw.insert(hash, key, value, guard, stripe) {
            Some(_) => applied.replaced += 1,
            None => applied.inserted += 1,
        }
    }
    applied
}
