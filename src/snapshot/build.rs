//! The build protocol: the cut, the captures, the clone and the
//! publication (the steps of "Building one" in the `snapshot` module
//! docs).
//!
//! [`Snapshots::snapshot`] returns the cached snapshot if nothing changed;
//! otherwise it takes the build lock, announces a build, closes the write
//! gate for the cut (listing the shards), captures every shard no writer
//! has captured yet, clones what was captured by pointer
//! ([`Piece::from_refs`]) while writers run, assembles the pieces in hash
//! order and publishes. [`EndBuild`] ends the build on every path,
//! unwinding from a user `Clone` included.

use std::collections::HashMap;

use crate::directory::Directory;
use crate::gate::WriteGate;
use crate::shard::Shard;
use crate::stats::{Event, Stripe};
use crate::sync::Arc;
use crate::sync::epoch::Guard;
use crate::twins::{Bug, injected};

use super::ChangeList;
use super::Snapshots;
use super::capture::{Build, Captured, Refs, take_capture};
use super::frozen::{
    BUCKET_LOAD, CHUNK, Chunk, Frozen, Head, IdIndex, Piece, PiecePtr, Pieces, Region,
    SLOTS_PER_BUCKET, Snapshot, bucket, tag,
};
use core::alloc::Layout;

/// Where one piece goes in its build's [`Region`]: the byte offsets of its
/// heads and of its entries ([`plan`]).
#[derive(Clone, Copy)]
struct Place {
    heads: usize,
    entries: usize,
}

/// The number of buckets of a piece of `n` entries.
fn buckets_for(n: usize) -> usize {
    (n / BUCKET_LOAD).next_power_of_two()
}

/// Lays out pieces of `(entries, buckets)` in one region: every piece's
/// heads first, then every piece's entries, so that the entries of all
/// the pieces are one contiguous run that a walk streams through. The
/// region's layout and each piece's place.
///
/// Heads and entries interleaved piece by piece (the layout before) made
/// a walk of a 1M-key snapshot 3.4–3.9× a `Vec<(u64, u64)>` walk of the
/// same entries on the AMD EPYC host (1.9–2.2 ms against 0.49–0.66 ms per
/// pass, three rounds, passes alternated); with the entries in one run it
/// is 1.17–1.31× (0.51–0.72 ms). Lookups are unchanged (they touch one
/// head and one entry either way: `lookup_cost snapmap-reader`, callgrind
/// 44.3 / 44.5 instructions and 1.80 / 2.99 first-level misses at 10K /
/// 1M keys before and after).
fn plan<K, V>(sizes: impl Iterator<Item = (usize, usize)> + Clone) -> (Layout, Vec<Place>) {
    let too_large = "a snapshot's pieces exceed the address space";
    let mut layout = Layout::from_size_align(0, align_of::<Head<K, V>>()).expect(too_large);
    let mut heads = Vec::new();
    for (_, buckets) in sizes.clone() {
        let array = Layout::array::<Head<K, V>>(buckets + 1).expect(too_large);
        let (with_heads, at) = layout.extend(array).expect(too_large);
        layout = with_heads;
        heads.push(at);
    }
    let places = heads
        .into_iter()
        .zip(sizes)
        .map(|(heads, (n, _))| {
            let array = Layout::array::<(K, V)>(n).expect(too_large);
            let (with_entries, entries) = layout.extend(array).expect(too_large);
            layout = with_entries;
            Place { heads, entries }
        })
        .collect();
    (layout.pad_to_align(), places)
}

/// Entries cloned into a region so far, dropped if a `Clone` panics
/// before the piece that owns them is made.
struct Filled<K, V> {
    at: *mut (K, V),
    len: usize,
}

impl<K, V> Drop for Filled<K, V> {
    fn drop(&mut self) {
        // SAFETY: the first `len` entries at `at` were written, and only
        // this guard owns them (it is forgotten once a piece does).
        unsafe {
            core::ptr::drop_in_place(core::ptr::slice_from_raw_parts_mut(self.at, self.len));
        }
    }
}

/// The entries [`Piece::from_refs`] has cloned so far (the first `len`
/// of `positions`), dropped if a `Clone` panics before the piece that
/// owns them is made.
struct Scattered<'s, K, V> {
    base: *mut (K, V),
    positions: &'s [u32],
    len: usize,
}

impl<K, V> Drop for Scattered<'_, K, V> {
    fn drop(&mut self) {
        for &at in &self.positions[..self.len] {
            // SAFETY: the first `len` positions were written, once each,
            // and only this guard owns them (it is forgotten once a piece
            // does).
            unsafe { core::ptr::drop_in_place(self.base.add(at as usize)) };
        }
    }
}

impl<K, V> Piece<K, V> {
    /// Makes a piece at `place` in `region` from `n` entries cloned in
    /// bucket order (`clone_at(i)` is the `i`-th) and `heads` (tags set,
    /// `starts[b]` the position of bucket `b`'s first entry).
    ///
    /// # Safety
    ///
    /// `place` was planned for `n` entries and `heads.len() - 1` buckets
    /// in `region`, and no other piece uses it.
    unsafe fn write(
        region: &Arc<Region>,
        place: Place,
        mut heads: Vec<Head<K, V>>,
        starts: impl Iterator<Item = usize>,
        n: usize,
        version: u64,
        mut clone_at: impl FnMut(usize) -> (K, V),
    ) -> Self {
        let base = region.at(place.entries).cast::<(K, V)>();
        let mut filled = Filled { at: base, len: 0 };
        for i in 0..n {
            let entry = clone_at(i);
            // SAFETY: `place` holds `n` entries (contract), `i < n`, and
            // the slot is not yet written.
            unsafe { base.add(i).write(entry) };
            filled.len += 1;
        }
        core::mem::forget(filled);
        for (head, start) in heads.iter_mut().zip(starts) {
            // `start <= n`: inside the entries or one past their end.
            head.first = base.wrapping_add(start).cast_const();
        }
        let at = region.at(place.heads).cast::<Head<K, V>>();
        // SAFETY: `place` holds `heads.len()` heads (contract), apart
        // from the entries; `Head` is `Copy`.
        unsafe { core::ptr::copy_nonoverlapping(heads.as_ptr(), at, heads.len()) };
        // SAFETY: the heads and the `n` entries were just written.
        unsafe { Self::assembled(region, place, heads.len() - 1, n, version) }
    }

    /// The piece at `place` in `region`, whose `buckets + 1` heads and `n`
    /// entries are written, counted in the region's live bytes.
    ///
    /// # Safety
    ///
    /// `place` was planned for `n` entries and `buckets` buckets, all of
    /// them written (the entries owned by no one else).
    unsafe fn assembled(
        region: &Arc<Region>,
        place: Place,
        buckets: usize,
        n: usize,
        version: u64,
    ) -> Self {
        region.account.add_live(Self::bytes(buckets, n) as isize);
        Piece {
            // SAFETY: inside the region's allocation, so not null.
            heads: unsafe { core::ptr::NonNull::new_unchecked(region.at(place.heads).cast()) },
            // SAFETY: as above.
            entries: unsafe { core::ptr::NonNull::new_unchecked(region.at(place.entries).cast()) },
            len: n,
            mask: buckets as u64 - 1,
            version,
            region: region.clone(),
        }
    }

    /// Clones what a capture points to into a piece at `place`. Entries
    /// walked from a view of [`SLOTS_PER_BUCKET`] slots per bucket of the
    /// piece come in
    /// bucket order once rotated ([`rotation_start`]) and take
    /// [`Piece::from_ordered`], one sequential pass (the `snapshot` module
    /// docs, "What a rebuilt shard costs"). Any others: a counting sort by
    /// bucket. The heads are written straight into the
    /// region and every entry's position is found first; then each entry
    /// is cloned straight to its position, in the order of `refs`, by a
    /// loop that does nothing else. `scratch` (positions and counts) is
    /// reused from piece to piece.
    ///
    /// The earlier version built the heads in a vector, listed the entries
    /// in bucket order, and cloned through that list (four allocations per
    /// piece). A snapshot after a change to every shard (`apply` of 1 % of
    /// the keys, then `snapshot()`, median of many, three rounds
    /// alternated): 10K keys 66.5 µs → 58.7 µs, 1M keys 36.0–36.9 ms →
    /// 33.2–35.7 ms. Cloning as each position is found (one loop instead
    /// of two) was faster at 10K keys (55 µs) but slower at 1M (38 ms
    /// against 36): the larger loop overlaps fewer of the cache misses on
    /// the keys and values. A first full snapshot of 1M keys now makes
    /// 4,938 allocations (45.4 MB) instead of 14,284 (56.2 MB); after one
    /// update, 17 instead of 20 (`cargo bench -p snapmap-benches --bench
    /// growth -- memory`).
    ///
    /// Measured and dropped: the build cloning each shard it captures at
    /// once (while the capture's keys and values should still be in
    /// cache) into a vector of its own, moved into the region once every
    /// size is known: 1M keys, every shard changed, 35.0–36.6 ms against
    /// 33.7–35.0 ms (three rounds alternated). The clone's loads of the
    /// keys still stalled as much, and the vectors and the copy cost more.
    ///
    /// # Safety
    ///
    /// Every pointer in `refs` must still be valid: the caller is the build
    /// that `refs` was captured for, pinned since before its cut (see
    /// [`Refs`]). `place` was planned for `refs.entries.len()` entries in
    /// `region`, and no other piece uses it.
    unsafe fn from_refs(
        refs: &Refs<K, V>,
        region: &Arc<Region>,
        place: Place,
        scratch: &mut Vec<u32>,
    ) -> Self
    where
        K: Clone,
        V: Clone,
    {
        let n = refs.entries.len();
        assert!(
            u32::try_from(n).is_ok(),
            "a shard of 2^32 entries or more cannot be frozen into a snapshot piece"
        );
        let buckets = buckets_for(n);
        let mask = buckets as u64 - 1;
        // A view walked in slot order is in bucket order (but for one
        // rotation) when each bucket covers `SLOTS_PER_BUCKET` of its
        // slots: a slot's bucket is its home divided by that.
        if refs.view_slots == Some(SLOTS_PER_BUCKET * buckets) {
            let start = rotation_start(&refs.entries, mask);
            // SAFETY: forwarded from our caller; `place` was planned for
            // `buckets_for(n)` buckets.
            if let Some(piece) = unsafe { Self::from_ordered(refs, region, place, buckets, start) }
            {
                return piece;
            }
        }
        let base = region.at(place.entries).cast::<(K, V)>();
        let heads = region.at(place.heads).cast::<Head<K, V>>();
        // `scratch`: each bucket's next free position, then each entry's
        // position (in the order of `refs`).
        scratch.clear();
        scratch.resize(buckets + 1 + n, 0);
        let (next, positions) = scratch.split_at_mut(buckets + 1);
        for &(hash, _, _) in &refs.entries {
            next[(bucket(hash) & mask) as usize] += 1;
        }
        let mut start = 0;
        for (b, next) in next.iter_mut().enumerate() {
            let count = *next;
            *next = start;
            // SAFETY: `place` holds `buckets + 1` heads (contract); `b` is
            // one of them. `start <= n`: inside the entries or one past.
            unsafe {
                heads.add(b).write(Head {
                    tags: [0; 8],
                    first: base.wrapping_add(start as usize).cast_const(),
                });
            }
            start += count;
        }
        for (&(hash, _, _), position) in refs.entries.iter().zip(positions.iter_mut()) {
            let b = (bucket(hash) & mask) as usize;
            *position = next[b];
            next[b] += 1;
            // SAFETY: `b` is one of the heads written above; the tags are
            // plain bytes.
            let head = unsafe { &mut *heads.add(b) };
            // The bucket's first position, from the head just written (a
            // separate array of starts was 10 % slower at 10K keys: one
            // more load per entry, where this one hits the head's line).
            let first = (head.first.addr() - base.addr()) / size_of::<(K, V)>().max(1);
            if let Some(t) = head.tags.get_mut(*position as usize - first) {
                *t = tag(hash);
            }
        }
        // Cloned in the order of `refs`, each straight to its position: a
        // loop with nothing else in it, so that the processor overlaps the
        // cache misses on the keys and values of many entries.
        let mut filled = Scattered {
            base,
            positions,
            len: 0,
        };
        for (i, &(_, key, value)) in refs.entries.iter().enumerate() {
            // SAFETY: valid per this function's contract; `K` and `V` are
            // `Sync`, and nobody writes through these pointers (keys and
            // value nodes are immutable once published).
            let entry = unsafe { ((*key).clone(), (*value).clone()) };
            // SAFETY: the positions are distinct and below `n`: inside the
            // entries of `place`, each written once.
            unsafe { base.add(filled.positions[i] as usize).write(entry) };
            filled.len += 1;
        }
        core::mem::forget(filled);
        // SAFETY: every head and entry of `place` was written above.
        unsafe { Self::assembled(region, place, buckets, n, refs.version) }
    }

    /// [`Piece::from_refs`] for entries in bucket order once rotated to
    /// start at `start` ([`rotation_start`]): one pass that writes each
    /// head as its bucket begins and clones each entry to the next
    /// position, with no count and no positions. The pass checks the order
    /// as it goes (a bucket below the one being filled): if the entries
    /// are not in order from `start`, it drops what it cloned and returns
    /// `None`, and the caller sorts them ([`Piece::from_refs`]).
    ///
    /// # Safety
    ///
    /// As for [`Piece::from_refs`], with `place` planned for `buckets`
    /// buckets.
    unsafe fn from_ordered(
        refs: &Refs<K, V>,
        region: &Arc<Region>,
        place: Place,
        buckets: usize,
        start: usize,
    ) -> Option<Self>
    where
        K: Clone,
        V: Clone,
    {
        let n = refs.entries.len();
        let mask = buckets as u64 - 1;
        let base = region.at(place.entries).cast::<(K, V)>();
        let heads = region.at(place.heads).cast::<Head<K, V>>();
        let (wrapped, rest) = refs.entries.split_at(start);
        let mut filled = Filled { at: base, len: 0 };
        // Heads below `written` are written; `first` is the position of
        // the last one's first entry.
        let (mut written, mut first) = (0, 0);
        for part in [rest, wrapped] {
            for &(hash, key, value) in part {
                let b = (bucket(hash) & mask) as usize;
                let at = filled.len;
                if b >= written {
                    let head = Head {
                        tags: [0; 8],
                        first: base.wrapping_add(at).cast_const(),
                    };
                    for h in written..=b {
                        // SAFETY: `h <= b < buckets`: a head of `place`
                        // (contract); `at < n`: inside the entries.
                        unsafe { heads.add(h).write(head) };
                    }
                    written = b + 1;
                    first = at;
                } else if b + 1 != written {
                    // Below the bucket being filled: not in order from
                    // `start`. `filled` drops the entries cloned so far.
                    return None;
                }
                if at - first < Head::<K, V>::TAGS {
                    // SAFETY: head `b` was written above; the tags are
                    // plain bytes, and `at - first` is one of them.
                    unsafe { (*heads.add(b)).tags[at - first] = tag(hash) };
                }
                // SAFETY: as in `from_refs`: the pointers are valid
                // (contract) and nobody writes through them.
                let entry = unsafe { ((*key).clone(), (*value).clone()) };
                // SAFETY: `at < n`, the next unwritten entry of `place`.
                unsafe { base.add(at).write(entry) };
                filled.len += 1;
            }
        }
        core::mem::forget(filled);
        while written <= buckets {
            // SAFETY: `place` holds `buckets + 1` heads; the rest (and the
            // bound) start past the last entry.
            unsafe {
                heads.add(written).write(Head {
                    tags: [0; 8],
                    first: base.wrapping_add(n).cast_const(),
                });
            }
            written += 1;
        }
        // SAFETY: every head and entry of `place` was written above.
        Some(unsafe { Self::assembled(region, place, buckets, n, refs.version) })
    }

    /// Clones a piece of an earlier build into `place`: the same buckets,
    /// tags and order (a repacking build,
    /// [`should_repack`](super::frozen::PieceBytes::should_repack)).
    ///
    /// # Safety
    ///
    /// `place` was planned for `source.len()` entries in `region`, and no
    /// other piece uses it.
    unsafe fn from_piece(source: &Self, region: &Arc<Region>, place: Place) -> Self
    where
        K: Clone,
        V: Clone,
    {
        let heads = source.heads().to_vec();
        let size = size_of::<(K, V)>().max(1);
        let base = source.entries.as_ptr() as usize;
        let starts: Vec<usize> = heads
            .iter()
            .map(|head| (head.first as usize - base) / size)
            .collect();
        let entries = source.entries();
        // SAFETY: `place` is this piece's (contract), planned for as many
        // entries and buckets as `source` has.
        unsafe {
            Self::write(
                region,
                place,
                heads,
                starts.into_iter(),
                entries.len(),
                source.version,
                |i| entries[i].clone(),
            )
        }
    }
}

/// Where `entries`, walked from a view, start in bucket order (`bucket &
/// mask`): the index after their first descent, or 0. A view's walk is in
/// bucket order but for the entries at its start that wrapped around from
/// its end (`ReadView`'s "Probing"), whose buckets are at least the last
/// entry's; so when the first entry's bucket is below the last's, nothing
/// wrapped and the answer is 0 with no scan, and otherwise the scan stops
/// at the end of the wrapped entries. This is a guess, not a check:
/// [`Piece::from_ordered`] checks the order as it writes, and a view's
/// entries always pass.
///
/// A full pass that checked the order first (and found the start) cost
/// 10 of the build's 46 instructions per entry (callgrind, 10K keys,
/// every shard rebuilt).
fn rotation_start<K, V>(entries: &[(u64, *const K, *const V)], mask: u64) -> usize {
    let b = |&(hash, _, _): &(u64, *const K, *const V)| bucket(hash) & mask;
    match (entries.first(), entries.last()) {
        (Some(first), Some(last)) if b(first) >= b(last) => entries
            .windows(2)
            .position(|pair| b(&pair[1]) < b(&pair[0]))
            .map_or(0, |i| i + 1),
        _ => 0,
    }
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
    /// built. Needs no pin: the cell holds its own reference. Inside the
    /// gate (a batch, a write closure) it is always `None`: entering the
    /// gate marks the change word before anything else.
    #[inline]
    pub(crate) fn unchanged(&self, gate: &WriteGate) -> Option<Snapshot<K, V, S>> {
        let cached = self.cell.load_full()?;
        gate.unchanged_since(cached.stamp)
            .then_some(Snapshot { frozen: cached })
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
        // The caller has found the cached snapshot stale (`unchanged`,
        // checked before it pinned); another thread may have built a newer
        // one while this one waited for the build lock.
        let mut last_epoch = self.builder.lock();
        if let Some(snapshot) = self.unchanged(gate) {
            return snapshot;
        }
        // The previous snapshot, if it is the last cut's (not one kept
        // from before a build that failed, nor dropped by `forget`): then
        // the list of changed shards covers everything since its cut.
        let previous = self.cell.load_full();
        let previous_pieces = previous.as_ref().map(|frozen| frozen.pieces.clone());
        let last_cut = *last_epoch;
        *last_epoch += 1;
        let epoch = *last_epoch;
        *self.build.lock() = Some(Build {
            epoch,
            previous: previous_pieces.clone(),
            captured: HashMap::default(),
        });
        let end = EndBuild {
            gate,
            build: &self.build,
        };

        // Step 2: the cut. With the gate closed no write is in progress:
        // take the list of changed shards, list the current shards (or only
        // the changed ones, if the layout is the previous snapshot's) and
        // announce the build, then reopen.
        let closed = (!injected(Bug::SnapshotWithoutGate)).then(|| gate.close());
        let changed = core::mem::replace(
            &mut *self.changed.lock(),
            ChangeList {
                shards: Vec::new(),
                overflowed: false,
            },
        );
        let generation = directory.generation();
        let table = directory.table(guard);
        let depth = table.depth();
        // Copy every piece into one new region if the old regions are
        // mostly pieces replaced since (a full build, nothing reused).
        let repack = self.bytes.should_repack();
        let incremental = previous.filter(|previous| {
            !repack
                && !changed.overflowed
                && crate::gate::revision_of(previous.stamp) == last_cut
                && previous.pieces.generation == generation
                && previous.depth == depth
        });
        let cut: Vec<*const Shard<K, V>> = match &incremental {
            Some(_) => changed.shards.iter().map(|shard| shard.0).collect(),
            None => table.distinct().map(|shard| shard.cast_const()).collect(),
        };
        let stamp = gate.begin_build(epoch);
        drop(closed);

        // Step 3: capture every shard of the cut that no writer has
        // captured yet (writers capture what they are about to change).
        // Pointers only: writers wait for a capture, never for a clone.
        // The build keeps its own captures here, by cut position, without
        // the build lock; writers' captures are in `Build::captured`.
        let mut own: Vec<Option<Captured<K, V>>> = Vec::with_capacity(cut.len());
        for &shard in &cut {
            // SAFETY: a distinct slot value of a table loaded under `guard`
            // is a shard kept alive by the epoch for `guard`'s life; a
            // listed shard, when the generation is unchanged, was live at
            // the cut (`ShardPtr`), after `guard` was pinned.
            let shard = unsafe { &*shard };
            let mut mine = None;
            shard.capture_once(epoch, || {
                mine = take_capture(shard, previous_pieces.as_deref(), guard);
            });
            own.push(mine);
        }
        drop(previous_pieces);
        let mut build = end
            .take()
            .expect("the build ends only here or on unwinding");

        // Step 4: clone what was captured by pointer, assemble in hash
        // order and publish. Writers now change shards freely; what the
        // pointers reach stays alive while `guard` is pinned (`Refs`).
        let mut taken = Vec::with_capacity(cut.len());
        for (&shard, mine) in cut.iter().zip(own) {
            // SAFETY: as above.
            let shard = unsafe { &*shard };
            // Every shard of the cut was captured above, by the build or a
            // writer; only the broken twin that skips the gate can miss one
            // (a writer that was not waited for retired it uncaptured).
            if let Some(captured) = mine.or_else(|| build.captured.remove(&shard.id())) {
                taken.push((shard, captured));
            }
        }
        // One region for every piece this build copies.
        let (region_layout, places) =
            plan::<K, V>(taken.iter().filter_map(|(_, captured)| match captured {
                Captured::Refs(refs) => Some((refs.entries.len(), buckets_for(refs.entries.len()))),
                Captured::Reused(piece) => repack.then(|| (piece.len(), piece.buckets())),
            }));
        let region = (!places.is_empty()).then(|| Region::new(region_layout, &self.bytes));
        let mut places = places.into_iter();
        // The region and the next place in it, for a piece this build copies.
        let mut place = || {
            let region = region
                .as_ref()
                .expect("a copied piece was planned a region");
            (region, places.next().expect("a place per copied piece"))
        };
        let mut scratch = Vec::new();
        let mut fresh = Vec::with_capacity(taken.len());
        let (mut copied, mut reused) = (0, 0);
        for (shard, captured) in taken {
            let piece = match captured {
                Captured::Reused(piece) if !repack => {
                    reused += 1;
                    piece
                }
                Captured::Reused(piece) => {
                    copied += 1;
                    let (region, place) = place();
                    // SAFETY: `place` was planned for this piece's length,
                    // in `region`, for it alone.
                    Arc::new(unsafe { Piece::from_piece(&piece, region, place) })
                }
                Captured::Refs(refs) => {
                    copied += 1;
                    let (region, place) = place();
                    // SAFETY: `refs` was captured for this build, and
                    // `guard` has been pinned since before its cut; `place`
                    // was planned for its length, in `region`, for it alone.
                    Arc::new(unsafe { Piece::from_refs(&refs, region, place, &mut scratch) })
                }
            };
            fresh.push((shard, piece));
        }
        let (pieces, slots, len) = match &incremental {
            Some(previous) => {
                reused += previous.pieces.count() - fresh.len();
                previous.update(fresh)
            }
            None => layout(depth, generation, fresh),
        };
        let frozen = Arc::new(Frozen {
            pieces,
            slots,
            shift: 64 - slot_bits(depth),
            depth,
            len,
            stamp,
            hasher: hasher.clone(),
        });
        self.cell.store(frozen.clone());
        drop(last_epoch);
        stripe.count(Event::SnapshotBuilds, 1);
        stripe.count(Event::SnapshotPiecesCopied, copied);
        stripe.count(Event::SnapshotPiecesReused, reused as u64);
        Snapshot { frozen }
    }
}

/// The pieces a build made or reused for the shards it listed, by shard.
type Fresh<'g, K, V> = Vec<(&'g Shard<K, V>, Arc<Piece<K, V>>)>;

/// What a build assembles: the pieces, the slot table, the entry count.
type Assembled<K, V> = (Arc<Pieces<K, V>>, Box<[PiecePtr<K, V>]>, usize);

/// How many top hash bits index a snapshot's slot table, for a directory
/// of depth `depth`: the depth, but at least 1, so that a lookup finds its
/// slot with one shift by `64 - bits` (a map of one shard, depth 0, gets
/// two slots holding the same piece).
pub(super) fn slot_bits(depth: u32) -> u32 {
    depth.max(1)
}

/// A full build's layout: every shard of the cut, in hash order, a new
/// index of their positions, every slot filled.
fn layout<K, V>(depth: u32, generation: u64, fresh: Fresh<'_, K, V>) -> Assembled<K, V> {
    let bits = slot_bits(depth);
    let mut slots: Vec<Option<PiecePtr<K, V>>> = vec![None; 1 << bits];
    let mut index = IdIndex::default();
    let mut chunks = Vec::with_capacity(fresh.len().div_ceil(CHUNK));
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut len = 0;
    for (position, (shard, piece)) in fresh.into_iter().enumerate() {
        len += piece.len();
        let span = 1usize << (bits - shard.depth());
        let first = (shard.prefix() as usize) << (bits - shard.depth());
        // The pointer stays valid while `pieces` holds the `Arc`.
        slots[first..first + span].fill(Some(piece.ptr()));
        index.insert(shard.id(), position as u32);
        chunk.push(piece);
        if chunk.len() == CHUNK {
            chunks.push(Arc::new(Chunk(
                core::mem::take(&mut chunk).into_boxed_slice(),
            )));
        }
    }
    if !chunk.is_empty() {
        chunks.push(Arc::new(Chunk(chunk.into_boxed_slice())));
    }
    let pieces = Pieces {
        chunks: chunks.into_boxed_slice(),
        index: Arc::new(index),
        generation,
    };
    // The cut's shards tile the hash space, so every slot is filled.
    // Only the broken twin that skips the gate can miss a shard; its
    // slots then show the first piece (as an index of 0 did), so that
    // the twin's wrong content, not a panic here, is what its model
    // catches.
    debug_assert!(
        injected(Bug::SnapshotWithoutGate) || slots.iter().all(Option::is_some),
        "the cut's shards cover every directory slot"
    );
    let first = pieces.iter().next().map(|piece| piece.ptr());
    let slots = slots
        .into_iter()
        .map(|slot| {
            slot.or(first)
                .expect("a cut lists at least one shard (the directory is never empty)")
        })
        .collect();
    (Arc::new(pieces), slots, len)
}

impl<K, V, S> Frozen<K, V, S> {
    /// An incremental build's layout: this snapshot's, with the pieces of
    /// the changed shards (`fresh`) put in their places. The slot table is
    /// copied (pointers), the chunks holding no changed piece are shared,
    /// the others copied; the unchanged pieces themselves are not touched.
    fn update(&self, fresh: Fresh<'_, K, V>) -> Assembled<K, V> {
        let mut slots = self.slots.clone();
        let mut chunks = self.pieces.chunks.to_vec();
        let mut copied = vec![false; chunks.len()];
        let mut len = self.len;
        for (shard, piece) in fresh {
            let position = *self
                .pieces
                .index
                .get(&shard.id())
                .expect("an unchanged layout holds every current shard")
                as usize;
            len = len - self.pieces.at(position).len() + piece.len();
            let bits = slot_bits(self.depth);
            let span = 1usize << (bits - shard.depth());
            let first = (shard.prefix() as usize) << (bits - shard.depth());
            slots[first..first + span].fill(piece.ptr());
            let chunk = &mut chunks[position / CHUNK];
            if !copied[position / CHUNK] {
                *chunk = Arc::new(Chunk(chunk.0.clone()));
                copied[position / CHUNK] = true;
            }
            Arc::get_mut(chunk)
                .expect("a chunk copied by this build is not shared")
                .0[position % CHUNK] = piece;
        }
        let pieces = Pieces {
            chunks: chunks.into_boxed_slice(),
            index: self.pieces.index.clone(),
            generation: self.pieces.generation,
        };
        (Arc::new(pieces), slots, len)
    }
}

#[cfg(test)]
mod tests {
    use super::super::capture::Refs;
    use super::super::frozen::{Piece, PieceBytes, Region, bucket, tag};
    use super::{Head, buckets_for, plan, rotation_start};
    use crate::sync::Arc;

    /// Every piece's heads come first, then every piece's entries, one
    /// contiguous run in the pieces' order (a walk streams through it).
    #[test]
    fn plan_puts_all_heads_before_one_run_of_entries() {
        let head = size_of::<Head<u64, u64>>();
        let entry = size_of::<(u64, u64)>();
        let sizes = [(3, 1), (0, 1), (9, 2)];
        let (layout, places) = plan::<u64, u64>(sizes.into_iter());
        let heads: Vec<usize> = places.iter().map(|p| p.heads).collect();
        let entries: Vec<usize> = places.iter().map(|p| p.entries).collect();
        // Heads: 2, 2 and 3 of them (buckets + 1), back to back.
        assert_eq!(heads, [0, 2 * head, 4 * head]);
        // Entries: after the 7 heads, 3, 0 and 9 of them, back to back.
        assert_eq!(
            entries,
            [7 * head, 7 * head + 3 * entry, 7 * head + 3 * entry]
        );
        assert_eq!(layout.size(), 7 * head + 12 * entry);
        assert_eq!(layout.align(), align_of::<Head<u64, u64>>());
    }

    /// Entries with these hashes (bucket = hash / 4, mask 7).
    fn entries(hashes: &[u64]) -> Vec<(u64, *const (), *const ())> {
        hashes
            .iter()
            .map(|&h| (h, core::ptr::null(), core::ptr::null()))
            .collect()
    }

    #[test]
    fn the_rotation_starts_after_the_wrapped_entries() {
        let start = |hashes: &[u64]| rotation_start(&entries(hashes), 7);
        assert_eq!(start(&[]), 0);
        assert_eq!(start(&[5]), 0);
        assert_eq!(start(&[0, 4, 5, 12, 31]), 0);
        // Wrapped from the end of the view (buckets 7, 7), then 0 up.
        assert_eq!(start(&[28, 30, 1, 8, 27]), 2);
        // All in one bucket: nothing to rotate.
        assert_eq!(start(&[8, 9, 10]), 0);
        // Only bucket bits count: 33 is bucket 8, masked to 0.
        assert_eq!(start(&[4, 33]), 1);
        // A guess for any order: the first descent (checked by the build).
        assert_eq!(start(&[12, 0, 8, 4]), 1);
    }

    /// Builds a piece from entries with `hashes` (key = value = hash),
    /// captured as if walked from a view with `view_slots` slots, and
    /// checks it: each entry in its bucket's run, under its tag, once.
    fn built(hashes: &[u64], view_slots: Option<usize>) {
        let pairs: Vec<(u64, u64)> = hashes.iter().map(|&h| (h, h)).collect();
        let refs = Refs {
            version: 0,
            entries: pairs
                .iter()
                .map(|(k, v)| (*k, core::ptr::from_ref(k), core::ptr::from_ref(v)))
                .collect(),
            view_slots,
        };
        let buckets = buckets_for(pairs.len());
        let (layout, places) = plan::<u64, u64>([(pairs.len(), buckets)].into_iter());
        let region = Region::new(layout, &Arc::new(PieceBytes::default()));
        // SAFETY: the pointers are into `pairs`, alive for the call; the
        // place was planned for these entries in this region.
        let piece = unsafe { Piece::from_refs(&refs, &region, places[0], &mut Vec::new()) };
        let (heads, entries) = (piece.heads(), piece.entries());
        let mask = buckets as u64 - 1;
        let position = |head: &Head<u64, u64>| {
            (head.first.addr() - entries.as_ptr().addr()) / size_of::<(u64, u64)>()
        };
        let mut seen = Vec::new();
        for (b, pair) in heads.windows(2).enumerate() {
            let (from, to) = (position(&pair[0]), position(&pair[1]));
            for (i, &(key, value)) in entries[from..to].iter().enumerate() {
                assert_eq!(bucket(key) & mask, b as u64, "{key} in bucket {b}");
                assert_eq!(key, value);
                if let Some(&t) = pair[0].tags.get(i) {
                    assert_eq!(t, tag(key));
                }
                seen.push(key);
            }
        }
        seen.sort_unstable();
        let mut expected = hashes.to_vec();
        expected.sort_unstable();
        assert_eq!(seen, expected);
    }

    /// The ordered pass takes a view's walk (rotated or not); entries that
    /// claim a view's order but break it are sorted instead, whatever
    /// `rotation_start` guessed.
    #[test]
    fn a_piece_holds_its_entries_in_bucket_order() {
        // 16 entries, 4 buckets (bits 2 and 3 of the hash): a view of 16 slots.
        let ordered: Vec<u64> = (0..16).collect();
        built(&ordered, Some(16));
        // Wrapped: buckets 3, 3, then 0 up.
        let mut wrapped = vec![14, 15];
        wrapped.extend(0..14);
        built(&wrapped, Some(16));
        // Out of order after a correct start: a descent in the middle.
        let mut broken: Vec<u64> = (0..16).collect();
        broken.swap(3, 9);
        built(&broken, Some(16));
        // First below last, so no rotation is guessed, but one is needed
        // past a second descent.
        built(
            &[1, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0, 4, 8, 12, 5, 9],
            Some(16),
        );
        // From a dirty table: no order claimed.
        built(&broken, None);
    }
}
