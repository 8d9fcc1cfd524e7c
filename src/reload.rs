//! Reloads of the whole content (`SnapMap::replace_all`, `restore`): the
//! new content joined with the map's read views, writing only what
//! differs.
//!
//! # The join
//!
//! ```text
//!   map: shard by shard in hash order (as `Iter` walks): its view, promoted
//!        first if its dirty table holds keys the view lacks -> parts
//!        (each part: hashes [at, last], view, one mark bit per view slot)
//!   content, item by item, as it comes:
//!       hash (the map's S) -> its part (an index by the top hash bits)
//!       ask for its home slot; 8 items later, probe the view:
//!           its key in a slot, first time:
//!               live and equal     -> unchanged (the item is dropped)
//!               live and other     -> write (replace)
//!               deleted            -> write (the key comes back)
//!           its key in a slot already marked (a repeated key)
//!                                  -> the last item decides, counted once
//!           not in the view        -> write (a new key)
//!   removals: in each part where fewer slots were found live than the
//!             view holds entries, the live slots left unmarked
//!   then: the removals, then the writes (each with its hash: no rehash)
//! ```
//!
//! The diff reads only; the writes come after it, as one batch (the caller
//! holds the write gate). The views are taken once, before the first item;
//! the guard keeps them alive. Each item is probed in its shard's view
//! (whose slots hold the hashes) where it is read: no table of the content
//! and no copy of it. The writes (each a changed or new key) go into a
//! small table by key, so that a repeated key's last item replaces its
//! earlier write; a repeated key of the view finds its slot marked, and
//! the table says whether its earlier item was written or found unchanged.
//! A view whose every entry was found live (a reload that removes
//! nothing, and a view with no deleted entries) is not walked again.
//!
//! A part is a shard as the walk found it; a concurrent writer may split
//! or merge it meanwhile, and the items are still probed in the view taken
//! (as a plain reader would have seen it then); a hash range the walk met
//! twice (a merge behind it) belongs to the first part, and the second
//! removes nothing there.
//!
//! Measured (a scratch driver: `u64` keys and values, foldhash, a settled
//! map, `replace_all` of the same content with 1 % of the values changed,
//! no snapshot; median of 12 reloads at 1M keys, 100 at 100K, 1,000 at
//! 10K and 20K; rounds alternated, 2026-12-07): before this join, the
//! content was first hashed into buckets by the top bits of its hash (a
//! copy of every item, 32 bytes each for `u64 -> u64`, written and read
//! again), and each shard's buckets were joined with its view and the view
//! walked, slot by slot, for removals: 1M 52.9–54.6 → 42.8–43.6 ms, 100K
//! 2.29–2.36 → 2.09–2.11 ms, 20K 349–361 → 291–334 µs, 10K 99.3–99.8 →
//! 92.2–93.0 µs; callgrind, 10K, 191.6 → 186.9 instructions per key. The
//! same join with a `VecDeque` for the items in flight instead of an
//! array ring: 10K 106.1–106.9 µs (slower than the buckets), 20K
//! 315–334 µs. Then, with the same content reloaded (no writes, the
//! diff alone): [`Join::join`] inlined into the item loop (it was a call
//! saving and restoring registers per item) 10K 84.4–85.9 → 73.7–73.9 µs,
//! 20K 261–287 → 233–243 µs, 156.3 → 137.7 instructions per key; the view
//! walk comparing the hash before testing the slot for emptiness (a hit
//! at home needs no test: `ReadView::position_of`) 73.9–77.4 → 72.0 µs
//! at 10K, 20K within the noise, 135.7 instructions; the value read from
//! the slot the walk found, with no second bounds check
//! (`ReadView::position_and_value`) 72.0–74.0 → 71.2–71.6 µs at 10K,
//! 246–252 → 229–235 µs at 20K, 131.7 instructions. The prefetch
//! distance does not matter here: 4, 8 or 16 items ahead, 84.8–85.6 µs at
//! 10K and 261–265 µs at 20K alike. Before and after the three steps
//! (1 % changed, medians, three rounds alternated): 10K 98.6–99.5 →
//! 79.4–79.8 µs, 20K 350–360 → 247–257 µs, 100K 2.27–2.33 → 1.94 ms, 1M
//! 51.4–52.8 → 38.3–40.1 ms. For scale, in the same session a `HashMap`
//! built from the same pairs (what `ArcSwap<HashMap>` reloads with) took
//! 77 µs at 10K keys, 154 µs at 20K and 24.5 ms at 1M; a map-level `get`
//! of every key, as a plain loop, 5.1 ns a key at 10K and 41 ns at 1M. Earlier history, all with the buckets: putting every item
//! of the shard in a table and then walking the view looking each entry up
//! in it put the entry misses one after the other behind the table's
//! probe; probing the view per item overlaps more of them (1M keys 83–91
//! → 71–73 ms, entries then outside the views); prefetching the entry
//! eight slots ahead in that walk, dropped (1M 80–92 → 68–72 ms, but 10K
//! 183 → 200–236 µs); asking for the home slot [`PROBE_AHEAD`] items
//! ahead, kept (1M 53–58 → 50–52 ms, 10K 217–240 → 203–213 µs); reading a
//! slot by one load of its cell (`ReadView::live_at`: an empty slot masks
//! to no value, as a deleted one does) rather than testing its hash for
//! emptiness first, kept (callgrind, 10K: 181 → 172 instructions per key).
//!
//! Measured and dropped (2026-12-07): probing the pieces of the map's last
//! snapshot instead of the views when nothing was written since it was
//! taken (checked before the gate; a snapshot's entries take 16 bytes for
//! `u64 -> u64` against 32 and more in the views, but a probe loads a
//! bucket head and then the entry). `replace_all` after a snapshot, the
//! driver above, medians, two rounds alternated, views → pieces: 20K
//! 303–308 → 193–198 µs (and the snapshot after it 170–174 → 87–135 µs:
//! the views stay in cache), 100K 2.15–2.27 → 1.39–3.19 ms (noisy), but
//! 10K 81.6 → 90.6–92.7 µs and 1M 45.4–48.5 → 65.1–72.9 ms (two dependent
//! misses a probe, head then entry, where a view slot is one). Asking for
//! the entry halfway through the ring (the head read by then) brought 1M
//! back to 43.6–46.6 ms but cost 10K (110 µs) and 20K (225 µs) what the
//! head's read and compare add. A choice by size would depend on the
//! machine's caches; the views stay the one path.
//!
//! Concurrent writers that are not part of the reload may write beside it
//! (the gate orders batches against snapshots, not against plain writers):
//! a key written between the diff and the reload's writes keeps the other
//! writer's value if the diff found it equal, as with any two writers.

use core::hash::{BuildHasher, Hash};

use hashbrown::HashTable;

use crate::batch::Applied;
use crate::hash::top_bits;
use crate::raw::RawMap;
use crate::shard::read_view::{ReadView, table_hash};
use crate::stats::Stripe;
use crate::sync::epoch::Guard;

/// How many items ahead of its probe the diff asks for an item's home
/// slot.
const PROBE_AHEAD: usize = 8;

/// The most hash bits the index of the views is built on (2^16 entries).
const MAX_INDEX_BITS: u32 = 16;

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

/// One shard's read view as the diff found it, for the hashes
/// `at..=last` (`at` is past the shards before it: a shard merged during
/// the walk may reach further back, and those hashes are not its).
struct Part<'g, K, V> {
    at: u64,
    last: u64,
    view: &'g ReadView<K, V>,
    /// Where this view's bits start in [`Join::marks`].
    marks: usize,
    /// Distinct slots found holding a live entry of the content.
    found: usize,
}

/// The diff's state: the views, one bit per view slot (the slot's key is
/// in the content), and the writes so far.
struct Join<'g, K, V, T> {
    parts: Vec<Part<'g, K, V>>,
    /// The part of each of the `bits`-bit hash prefixes' first hash, so
    /// that an item's part is found with no search when parts are no
    /// smaller than a prefix (the common case: `bits` is the depth).
    index: Vec<u32>,
    bits: u32,
    marks: Vec<u64>,
    /// Writes in content order; `None` once a repeated key's later item
    /// found its value current (the write is cancelled).
    writes: Vec<Option<(u64, T)>>,
    /// The written keys: their index in `writes` (a repeated key finds its
    /// earlier write here).
    written: HashTable<usize>,
    applied: Applied,
}

impl<'g, K: Eq, V: PartialEq, T: Item<K, V>> Join<'g, K, V, T> {
    /// The part holding `hash`.
    #[inline]
    fn part(&self, hash: u64) -> usize {
        let prefix = top_bits(hash, self.bits);
        let first = self.index[prefix] as usize;
        if self.parts[first].last >= hash {
            return first;
        }
        let end = self
            .index
            .get(prefix + 1)
            .map_or(self.parts.len(), |&i| i as usize + 1);
        first + self.parts[first..end].partition_point(|p| p.last < hash)
    }

    /// The earlier write of `item`'s key, if any.
    fn earlier(&self, hash: u64, key: &K) -> Option<usize> {
        self.written
            .find(table_hash(hash), |&i| {
                matches!(&self.writes[i], Some((h, other)) if *h == hash && other.key() == key)
            })
            .copied()
    }

    /// Makes `item` the write of its key: it replaces an earlier item's
    /// write, if any (the last item of a repeated key wins).
    fn write(&mut self, hash: u64, item: T) {
        match self.earlier(hash, item.key()) {
            Some(i) => self.writes[i] = Some((hash, item)),
            None => {
                let i = self.writes.len();
                self.writes.push(Some((hash, item)));
                let writes = &self.writes;
                self.written.insert_unique(table_hash(hash), i, |&j| {
                    table_hash(writes[j].as_ref().map_or(0, |w| w.0))
                });
            }
        }
    }

    /// Cancels the earlier write of a repeated key whose last item is
    /// its current value.
    fn cancel(&mut self, hash: u64, at: usize) {
        if let Ok(found) = self.written.find_entry(table_hash(hash), |&i| i == at) {
            found.remove();
        }
        self.writes[at] = None;
    }

    /// One item against its part's view (see the module docs).
    #[inline(always)]
    fn join(&mut self, hash: u64, part: usize, item: T, guard: &'g Guard) {
        let Part { view, marks, .. } = self.parts[part];
        let Some((position, current)) = view.position_and_value(hash, item.key(), guard) else {
            // Not in the view: a new key (or one only in a dirty table
            // written after the walk, which the write then replaces).
            self.write(hash, item);
            return;
        };
        let word = &mut self.marks[marks + position / 64];
        let bit = 1u64 << (position % 64);
        let repeated = *word & bit != 0;
        *word |= bit;
        if !repeated {
            match current {
                Some(value) if item.value() == value => {
                    self.parts[part].found += 1;
                    self.applied.unchanged += 1;
                }
                Some(_) => {
                    self.parts[part].found += 1;
                    self.write(hash, item);
                }
                // Deleted: the key comes back.
                None => self.write(hash, item),
            }
            return;
        }
        // A repeated key: its last item decides, and it counts once. The
        // earlier items left a write, or (none) counted it unchanged.
        let earlier = self.earlier(hash, item.key());
        if earlier.is_none() {
            self.applied.unchanged -= 1;
        }
        match (current, earlier) {
            (Some(value), _) if item.value() == value => {
                self.applied.unchanged += 1;
                if let Some(at) = earlier {
                    self.cancel(hash, at);
                }
            }
            (_, Some(at)) => self.writes[at] = Some((hash, item)),
            (_, None) => self.write(hash, item),
        }
    }
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
    let ctx = raw.ctx(stripe);
    // The views, in hash order (as `Iter` walks), each promoted first if
    // it lacks keys of its dirty table.
    let mut parts: Vec<Part<'g, K, V>> = Vec::new();
    let mut slots = 0;
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
        parts.push(Part {
            at,
            last,
            view,
            marks: slots,
            found: 0,
        });
        slots += view.positions().div_ceil(64);
    }
    let bits = raw.directory.table(guard).depth().min(MAX_INDEX_BITS);
    let mut index = Vec::with_capacity(1 << bits);
    let mut part = 0;
    for prefix in 0..1u64 << bits {
        let first = if bits == 0 { 0 } else { prefix << (64 - bits) };
        // The last part ends at `u64::MAX`.
        while parts[part].last < first {
            part += 1;
        }
        index.push(u32::try_from(part).expect("fewer than 2^32 shards"));
    }
    let mut join = Join {
        parts,
        index,
        bits,
        marks: vec![0; slots],
        writes: Vec::new(),
        written: HashTable::new(),
        applied: Applied::default(),
    };

    // Each item against its view, [`PROBE_AHEAD`] items after asking for
    // its home slot (a ring of the items in flight).
    let mut ahead: [Option<(u64, usize, T)>; PROBE_AHEAD] = core::array::from_fn(|_| None);
    let mut next = 0;
    for item in content {
        let hash = raw.hasher.hash_one(item.key());
        let part = join.part(hash);
        join.parts[part].view.prefetch_home(hash);
        if let Some((hash, part, item)) = ahead[next].replace((hash, part, item)) {
            join.join(hash, part, item, guard);
        }
        next = (next + 1) % PROBE_AHEAD;
    }
    for i in 0..PROBE_AHEAD {
        if let Some((hash, part, item)) = ahead[(next + i) % PROBE_AHEAD].take() {
            join.join(hash, part, item, guard);
        }
    }

    // Removals: the live entries no item found, in the views where some
    // entry was not found live (every entry of a view with as many found
    // is in the content).
    let mut gone: Vec<(u64, &'g K)> = Vec::new();
    for part in &join.parts {
        if part.found == part.view.len() {
            continue;
        }
        let marks = &join.marks[part.marks..];
        for position in 0..part.view.positions() {
            if marks[position / 64] & (1 << (position % 64)) != 0 {
                continue;
            }
            // An empty slot and a deleted entry both read as `None`.
            if let Some((hash, key, _)) = part.view.live_at(position, guard) {
                // Not the hashes of a part walked before a merge.
                if (part.at..=part.last).contains(&hash) {
                    gone.push((hash, key));
                }
            }
        }
    }

    let mut applied = join.applied;
    for (hash, key) in gone {
        if raw.remove(hash, key, guard, stripe).is_some() {
            applied.removed += 1;
        }
    }
    for (hash, item) in join.writes.into_iter().flatten() {
        let (key, value) = item.into_pair();
        match raw.insert(hash, key, value, guard, stripe) {
            Some(_) => applied.replaced += 1,
            None => applied.inserted += 1,
        }
    }
    applied
}
