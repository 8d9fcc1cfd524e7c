//! Snapshots: Go's `atomic.Value` copy-on-write idiom without its O(n) cost.
//!
//! A [`Snapshot`] is an immutable copy of the map at one point in time,
//! shared through an `Arc`: `Send + Sync + 'static`, cheap to clone, safe to
//! hold across `.await` or for minutes. It is made of one frozen **piece**
//! per shard: the shard's live entries as one contiguous `Box<[(K, V)]>`,
//! grouped by bucket, with a 16-byte head per bucket beside it, so that
//! iterating a snapshot is a walk over slices and a lookup loads a head,
//! then the entry.
//!
//! ```text
//!   Snapshot ── Arc<Frozen> ── pieces: [Arc<Piece>, ...]           (hash order; they own the data)
//!                               slots:  [(heads, mask); 2^G]  (top G hash bits, G >= 1)
//!   Piece { heads:   [Head { tags: [u8; 8], first: *const (K, V) }; buckets + 1],
//!           entries: [(K, V)]  (bucket 0's, then bucket 1's, ...),
//!           mask, shard id, version }
//!   (the heads and entries of the pieces one build copies: one allocation, the build's
//!    region, every piece's heads first, then every piece's entries in one run, in huge
//!    pages when large: see "Memory" and "Huge pages")
//! ```
//!
//! A lookup indexes `slots` by the top `G` bits of the hash (as the map's
//! directory does; `G` is the directory's depth, but at least 1, so that
//! the index is one shift by a stored `64 - G`). The slot holds what the
//! lookup needs of the piece (its heads and its bucket mask, in bytes of
//! heads), so the piece's own header is not read. Bits 2 and up pick the
//! bucket (a view slot's home divided by 4, so that a piece built from a
//! view of four times its bucket count gets its entries in bucket order
//! by walking the view: see "What a rebuilt shard costs"); its head holds
//! the address of the bucket's first entry and a tag (hash bits 24 to 30,
//! high bit set: `frozen::tag`) for each of its first 8 entries; one
//! SSE2 compare (a byte loop elsewhere) finds the entries whose tag
//! matches, and the key of the first match (the only one, almost always)
//! is compared inline. A second match, a bucket of more than 8 entries
//! (about 1 in 50 at the largest average load of 4) and a miss continue
//! out of line. A head is 16-aligned, so it never straddles a cache line:
//! on a large map a lookup misses the cache on the head and on the entry,
//! as a `hashbrown` lookup does on its control group and its bucket.
//!
//! The head holds the entry's address, not its position, and the slot the
//! mask in bytes, so that a lookup goes from the hash to the head with a
//! shift and a mask, and from the head to the entry with no load of the
//! entries' base: 44.4 instructions per reader lookup at 10K keys
//! (`lookup_cost snapmap-reader`), against 54.3 with 12 tags and a
//! 32-bit position per head and a 24-byte slot (heads, entries, mask);
//! 10K keys 4.78 → 3.95 ns, 1M keys 21.7 → 17.7 ns (best of 3, alternated).
//! The compare loads the head's 8 tag bytes alone (`movq`, the register's
//! upper half zero, which no tag equals) and the first entry's address as
//! a plain load beside it, rather than all 16 bytes into one register and
//! the address out of it after the compare: two instructions fewer on the
//! path to the entry, 10K keys 2.68–2.70 → 2.59–2.63 ns (best of 3, two
//! rounds alternated), the same instruction count.
//! A bucket load of 6 with these heads was slower at 10K keys (4.47–4.67
//! ns against 3.90–3.93): fewer first-level misses (1.43 against 1.65 per
//! lookup) but more first tags that are not the key's and more buckets
//! past their tags, 0.064 mispredicted branches per lookup against 0.013.
//! A bucket load of 8 (heads half as many, the same 8 tags): reader
//! lookups 2.86 → 3.45 ns at 10K keys, 18.2 → 16.0 ns at 1M (200M and 40M
//! lookups minus none, `perf stat` task clock, two rounds alternated): the
//! smaller heads pay at 1M, the buckets past their tags cost more at 10K;
//! not taken. The rest of a lookup inlined and marked cold (so that the key
//! is not stored for the out-of-line call): 44.3 → 43.3 instructions per
//! reader lookup at 10K keys, but 2.82–2.88 → 2.97–3.00 ns (the inlined
//! path took registers, and the handle's fields were reloaded from the
//! stack); not taken.
//!
//! What keeps a reader lookup at 10K keys behind `ArcSwap<HashMap>` (0.71×
//! in the last report) is instructions more than misses: by key count,
//! snapshot lookup against `ArcSwap<HashMap>` (load per 1,024), ns per
//! lookup, 2K keys 2.52 / 2.02 (0.80×, everything in the first-level
//! cache), 5K 2.66 / 2.04, 10K 2.88 / 2.20, 20K 3.04 / 2.30. The slot
//! table's step (about seven instructions: the shift, the slot's two
//! words, the bucket's offset) and the handle's check (four) are what the
//! design adds to a flat table's probe.
//!
//! Tried and dropped (2026-12-06): a flat head table for small snapshots
//! (at most 256 KiB: for each slot, its piece's heads repeated up to the
//! largest piece's bucket count, built by every build), so that a lookup
//! goes from the hash to the head with no load of the slot, and falls
//! back to the slot table after a failed first match. At 10K keys the
//! table was 32 slots of 128 heads (64 KiB); callgrind per reader lookup
//! 44.3 → 50.5 instructions (the table's presence test, its three fields
//! loaded from the handle, and the slot path still beside it), and the
//! saved dependent load did not show in the task clock: 3.55–4.87 against
//! 3.53–5.53 ns (200M lookups minus none, four rounds alternated, a noisy
//! machine that day: `ArcSwap<HashMap>` took 2.55–4.04 ns in the same
//! runs).
//!
//! What one hop is worth, measured instead of built (2026-12-06,
//! `lookup_cost snapmap-reader 10000`, 100M lookups minus none, eight
//! rounds alternated, medians): a reader lookup with one more dependent
//! load of the slot it just read (an `and` with a `black_box` zero, so
//! the address waits for the load) 5.7 → 6.0 ns, +5 %; the same four
//! instructions made independent of the chain (the `and` on the hash)
//! 5.7 → 5.65 ns, no change. So the slot table's hop is worth about 5 %,
//! and a flat table without the slot path's instructions would gain about
//! that much: not the 25 % between the handle and `ArcSwap<HashMap>`.
//! Nor is that gap cache misses: at 1K keys (everything in the first-level
//! cache) the handle ran at 0.71× `ArcSwap<HashMap>`, as at 10K (medians
//! of six rounds: 4.5 against 3.2 ns, and 5.5 against 3.9 ns; callgrind
//! at 10K: 44.3 against 35.2 instructions and 1.80 against 1.33
//! first-level misses per lookup). Doubling or halving the bucket load
//! (`BUCKET_LOAD` 2 and 8: heads twice or half as large) moved the
//! misses (1.91 and 1.63) and not the time beyond the noise.
//!
//! Earlier layouts, measured (`lookup_cost snapmap-reader 1000000`, see
//! BENCHMARKS.md): a piece with a separate `HashTable<(hash, position)>`
//! index (slot → piece index → piece → index control → index bucket →
//! entry) took 48–62 ns per hit at 1M keys, `ArcSwap<HashMap>` 9–13 ns.
//! A `hashbrown::HashTable<(K, V)>` per piece took 16–20 ns, about as fast
//! as the present layout, but made iteration 3.5–4× slower than a `Vec`
//! walk (a table's holes and control bytes; 2.7–3.0 ms against 0.68 ms for
//! 1M entries), where the present layout keeps the slice walk. A separate
//! per-entry tag array with bucket offsets (offsets → tags → entry) was
//! slower than both (23–28 ns: one more dependent load).
//!
//! # Building one: O(1) if nothing changed, O(changed shards) otherwise
//!
//! 1. **Unchanged?** The last snapshot is cached in the map's snapshot cell
//!    (`arc-swap`) with its **stamp**, the write gate's change word at its
//!    cut. If the word still equals the stamp, no write has entered the
//!    gate since (`crate::gate`, "The change word"): the cached snapshot is
//!    returned (an `Arc` clone, no allocation). [`Reader`](crate::Reader)
//!    handles make the same comparison against the snapshot they hold.
//!    The check comes first, before the epoch pin, the stripe lookup and
//!    the nesting check that only a build needs (inside the gate the word
//!    is always marked, so the check never answers there): an unchanged
//!    `snapshot()` 28.0–28.8 → 20.1–20.2 ns, `ArcSwap::load_full` 18.8–19.4
//!    ns in the same runs (criterion `snapshot_1M`, two rounds alternated).
//! 2. **The cut, briefly.** Close the write gate (wait until no write is in
//!    progress), take the list of changed shards, list the shards to
//!    capture (only the changed ones if the layout is the previous
//!    snapshot's, see "Changed shards"; otherwise every current shard),
//!    announce the build's number (`WriteGate::begin_build`, which also
//!    stores the clean change word that becomes the snapshot's stamp) and
//!    reopen the gate. The snapshot will be the map as it was at this
//!    moment. Writers wait only for the writes already in progress and
//!    for the list: no copying, no user code.
//! 3. **Capture, writers running.** For each listed shard, capture it:
//!    reuse the previous snapshot's piece if the shard's id and version are
//!    the same, otherwise copy it. Then assemble the pieces in hash order
//!    (an incremental build copies the previous slot table and puts the
//!    new pieces in their places) and publish.
//!
//! # Changed shards: a snapshot after a few writes costs what they changed
//!
//! Every write, after bumping its shard's version and still inside the
//! gate, puts the shard on the map's list of changed shards the first time
//! in a *cycle* (the time between two cuts; `Shard::list_once` keeps a mark
//! per shard, the last cut's number plus one, so a shard is listed once per
//! cycle and the list needs a lock only then). The cut takes the list with
//! the gate closed, so the list holds every shard changed since the
//! previous cut and none changed after.
//!
//! A build then copies only the listed shards if three things hold: the
//! cached snapshot is the previous cut's (no build failed since, and
//! `forget_snapshot` did not drop it); the directory's **generation**
//! (bumped under its resize lock by every split, merge, doubling and
//! halving) is the one the cached snapshot was laid out for, so the map
//! holds the same shards and no listed shard has been retired; and the
//! list did not outgrow the directory (a map written for long without a
//! snapshot drops its list instead of growing it). Every shard not listed
//! is, at the cut, what the previous snapshot holds of it. Otherwise the
//! build lists every current shard, as the first build does.
//!
//! An incremental build copies the previous slot table (pointers, one
//! `memcpy`), shares the previous snapshot's pieces in chunks of 64 (a
//! chunk with no changed piece is one reference count; the others are
//! copied), and never touches an unchanged shard or piece. A snapshot after
//! one write to a 1M-key map (2,319 shards): 190 µs before the list (every
//! shard's capture mark and every piece's reference count read and
//! written), 18–22 µs with it. The cost is one load on the write path (the
//! shard's mark, on a line the write holds anyway) and a lock per shard per
//! cycle. Loom: the point-in-time model, twin `ChangeNotListed`.
//!
//! # Copy before write
//!
//! A writer that entered the gate after the cut and is about to change a
//! shard that has not been captured for this build captures it first
//! (`Snapshots::capture`; a second thread that wants the same shard waits
//! for the first). So a listed shard never changes before its capture, and
//! every capture is the shard as of the cut. Each shard is captured once
//! per build, by whoever needs it first: the build never re-copies, so its
//! work does not grow with the write rate.
//!
//! A capture copies *pointers* (the hash, key and value of each live
//! entry: `Refs`), not the entries: about a microsecond for a full shard,
//! and no user code. The build clones what they point to after all shards
//! are captured, while writers run freely; the epoch keeps those keys and
//! values alive because the build has been pinned since before its cut
//! (`Refs` explains why that suffices). So a writer never runs `Clone`, and
//! never waits for more than one or two shards' pointer copy (two when a
//! removal merges a shard with its buddy, which must be captured before it
//! is retired).
//!
//! What a rebuilt shard costs (callgrind, 10K `u64` keys in 32 shards, a
//! snapshot after each batch of 100 updates, so every shard is rebuilt):
//! 68 instructions per entry, of which the capture is 25 and the build's
//! placement and clone (`Piece::from_refs`) 37 (46 until the order check
//! moved into the writing pass, below). A shard's read view keeps
//! its entries in order of home slot (Robin Hood), and a piece's bucket is
//! the home divided by 4 (bits 2 and up of the hash), so when the piece
//! has a quarter as many buckets as the view has slots (the usual case:
//! both are powers of two sized for the same count, at 80 % and at 4 per
//! bucket) the capture's walk is already in bucket order, but for the
//! entries at the view's start that wrapped around from its end: the
//! build finds that one rotation (`rotation_start`) and writes heads
//! and entries in one sequential pass (`Piece::from_ordered`), which
//! checks the order as it writes and hands back to the sort if it is
//! broken. Otherwise
//! (a dirty table's entries, or counts that round to other powers of two)
//! it sorts by counting, as every build did until 2026-12-07, when that
//! took 55 instructions per entry and a snapshot 85; medians of 1,000
//! snapshots, five rounds alternated: 54.7–55.6 µs before, 43.9–44.3 µs
//! with the ordered pass. At 1M keys (about 488 entries in views of 1,024
//! slots) the counts round apart and the sort stays; a piece of a quarter
//! of the view's slots there would have doubled its heads (snapshot bytes
//! 40.8 → 48.5 MB) for no time beyond the noise (27–36 ms per snapshot
//! either way), so it was not taken. Before 2026-12-07 the bucket was bits
//! 32 and up and the tag bits 24 to 30; lookups cost the same instructions
//! either way (44.3 per reader lookup at 10K keys, 44.5 at 1M). The
//! capture's walk of a promoted shard's view loads
//! each slot's cell and nothing else (`ReadView::for_each_value`: an
//! empty slot's cell reads as no value); it tested each slot's hash for
//! emptiness first, as a lookup's walk does, until 2026-12-06: 33
//! instructions per entry for the capture, 93 in all, and 93.6–95.5 µs
//! per snapshot against 87.4–88.1 µs now (median of 3,000 builds, four
//! rounds alternated). Merging `from_refs`'s placement and clone loops
//! into one saved 1 instruction per entry and was left as it is. The
//! ordered pass first had a pass of its own that checked the whole order
//! and found the rotation (10 of the 46 instructions per entry); the
//! rotation is now guessed from the first and last entries (a scan only
//! through the wrapped ones) and the order checked by the writing pass
//! (one compare per entry): `apply` of 1 % of 10K keys plus `snapshot()`
//! 81.2 → 73.1 instructions per key, snapshot 43.7–43.9 → 38.6–40.0 µs
//! (median of 2,000, three rounds alternated, AMD EPYC; 1M keys, which
//! sort, unchanged: 26.7–27.7 against 26.6–27.3 ms). Measured and
//! dropped the same day: the capture writing its pointers into room
//! reserved for the view's length, by a count kept in a register, instead
//! of a closure that `push`es (whose out-of-line call to grow keeps the
//! vector's fields in memory, loaded and stored for every entry): 73.1 →
//! 71.4 instructions per key, but 38.1–38.4 → 39.1–39.8 µs per snapshot
//! (four rounds alternated). At 1M keys about 7 % of an `apply` plus
//! `snapshot()` loop is the kernel faulting in and zeroing each build's
//! fresh region (`perf`, 200 reloads); keeping a freed region for the
//! next build would save it at the price of holding a snapshot's worth of
//! memory after it is dropped: not built.
//!
//! This replaces an earlier scheme (copy optimistically while writers run,
//! then re-copy under the closed gate whatever changed meanwhile; do not
//! return to it). Under a writer that changes shards faster than a
//! build copies them, its optimistic passes never converged, and the gate
//! stayed closed for 65-110 ms while most of the map was re-copied
//! (BENCHMARKS.md, "Writers during a storm of snapshots").
//!
//! Shards made by a split or merge after the cut are born captured
//! (`Shard::born_during`): the snapshot uses the listed shards they
//! replaced, which were captured before the split or merge (the writer
//! splitting had captured the shard it wrote; a merge captures both
//! halves); capturing them again would only waste a copy. A capture for a
//! build that has already ended (by a writer that entered during it and
//! arrived late) is dropped.
//!
//! # Why it is one point in time
//!
//! Every write runs inside the gate. The cut closes it, so every write has
//! either completed before the cut (the gate's Release/Acquire hand-off
//! orders it before everything the build reads) or entered after it. A
//! writer that entered after the cut read the build's number (its Acquire
//! read of the gate's `pending` flag synchronises with the Release that
//! reopened it) and captures before changing anything; the capture's
//! Release store of the shard's `captured` mark, read with Acquire by
//! every later writer, orders the copy before their changes. Batches hold
//! the gate for all their writes, so a batch is wholly before the cut or
//! wholly after it.
//!
//! The version (bumped after every change, inside the gate) only decides
//! whether the previous snapshot's piece can be reused. A lock-free write
//! may go through an old view of a shard that a migration is replacing
//! (until the migration seals the entry, the write lands in it and is
//! moved with it); the writer therefore bumps the version of the shard
//! that holds the key *now*, found again after the write.
//!
//! # Memory
//!
//! Pieces are reference counted: a snapshot that shares a piece with a newer
//! one costs nothing extra, and a piece is dropped when the last snapshot
//! holding it is dropped. The pieces one build copies live in one
//! allocation, its **region** (`frozen::Region`), freed when the last of
//! its pieces goes; `stats().snapshot_bytes` reports the bytes of the
//! regions alive. A region that later builds keep a few pieces of (the
//! shards nobody wrote since) holds its other, replaced pieces' bytes
//! too. When those dead bytes exceed the live ones by more than 4 MiB, and
//! have grown by half the live bytes since the last repack, the next build
//! *repacks*: a full build that copies every piece, reused or not, into
//! one new region, so that the old regions can go (the copy, O(live), is
//! paid for by the at least as many bytes copied by the builds before it).
//! What the map's snapshots hold thus stays within about twice the live
//! pieces plus 4 MiB; `tests/memory.rs` checks that eight builds that each
//! leave some pieces behind hold at most three snapshots' worth plus 4 MiB
//! (24 MB for a 3 MB snapshot without the repack).
//!
//! # Huge pages
//!
//! A lookup in a large snapshot misses the cache on a head and on an
//! entry, and with 4 KiB pages each miss is also a miss in the translation
//! cache (the heads and entries of 1M `u64` keys span 21 MB, about 5,000
//! pages, where the second-level TLB holds about 2,000 entries). A region
//! of 2 MiB or more is aligned to 2 MiB and advised with `MADV_HUGEPAGE`
//! on Linux, so that where transparent huge pages are enabled (`always`,
//! or `madvise`: the usual defaults) a snapshot of 1M keys sits in ten
//! huge pages (`/proc/vmstat`'s `thp_fault_alloc` rises by 9 for the
//! `lookup_cost` run below). Elsewhere, or where huge pages are disabled,
//! the advice changes nothing.
//!
//! Measured with `lookup_cost snapmap-reader 1000000` (20M lookups, the
//! time of 20M minus that of none, each the best of three; three rounds,
//! two-piece-blocks build and region build alternated, same session):
//! 14.4–18.9 ns with two blocks per piece, 12.6–14.1 ns with one region
//! per build in huge pages; `ArcSwap<HashMap>` loaded once per 1,024
//! lookups 13.8–14.5 ns in the same rounds. One region without huge pages
//! is no faster than two blocks per piece (scratch prototype of this
//! layout, 1M keys, three rounds: 15.6–17.3 ns two blocks per piece,
//! 15.9–17.3 one region, 12.2–13.7 one region in huge pages, a `hashbrown`
//! table 13.4–16.5): what pays is the page size, not the contiguity. With
//! every allocation of the process in huge pages
//! (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`), `ArcSwap<HashMap>` gains
//! too (about 10–13 → 7.5–8 ns). Below 2 MiB (about 100K keys) a region
//! is an ordinary allocation: at 10K keys a snapshot's 0.2 MB fit in 50
//! pages, and nothing changes.
//!
//! The map itself holds its latest snapshot (that is what lets an unchanged
//! map answer in O(1) and a changed one copy only what changed), so one
//! snapshot's worth stays alive as long as the map, until the next build
//! replaces it or `SnapMap::forget_snapshot` drops it.
//!
//! # Where the code is
//!
//! - `frozen`: the read side, immutable once built: [`Snapshot`],
//!   [`SnapshotIter`], `Frozen` and `Piece` (lookups, iteration, serde).
//! - `capture`: the capture state (`Build`, `Captured`, `Refs`) and
//!   capturing a shard (`take_capture`, [`Snapshots::capture`]).
//! - `build`: the build protocol (the steps above,
//!   [`Snapshots::snapshot`]).
//! - here: [`Snapshots`], the per-map state the other two share.

mod build;
mod capture;
pub(crate) mod frozen;

pub(crate) use frozen::{Frozen, PieceBytes};
pub use frozen::{Snapshot, SnapshotIter};

use crate::shard::Shard;
use crate::sync::{Arc, SnapshotCell};
use capture::Build;

/// The map's snapshot machinery: the cell with the latest snapshot, the
/// lock that makes builds take turns (it holds the last build number), the
/// build in progress, and the byte account.
pub(crate) struct Snapshots<K, V, S> {
    cell: SnapshotCell<Frozen<K, V, S>>,
    builder: crate::sync::Mutex<u64>,
    build: crate::sync::Mutex<Option<Build<K, V>>>,
    /// The shards changed since the last cut ("Changed shards").
    changed: crate::sync::Mutex<ChangeList<K, V>>,
    pub(crate) bytes: Arc<PieceBytes>,
}

/// The shards changed since the last cut, each once.
pub(super) struct ChangeList<K, V> {
    pub(super) shards: Vec<ShardPtr<K, V>>,
    /// The list grew past the directory's size (a map that is written and
    /// split for a long time without a snapshot) and was dropped: the next
    /// build copies every shard.
    pub(super) overflowed: bool,
}

/// A shard on the list of changed shards. Dereferenced only by a build
/// that has found the directory's generation unchanged since the previous
/// cut: then no shard has been retired since the previous cut, so every
/// listed shard was live at this cut, and the build, pinned since before
/// it, keeps it alive ("Changed shards").
pub(super) struct ShardPtr<K, V>(pub(super) *const Shard<K, V>);

// SAFETY: a `ShardPtr` is a shared reference in raw form (see its docs for
// when it is used); sending or sharing it shares the shard, which needs
// what `&Shard` needs: `K` and `V` `Send + Sync` (the shard's own bounds).
unsafe impl<K: Send + Sync, V: Send + Sync> Send for ShardPtr<K, V> {}
// SAFETY: as for `Send`.
unsafe impl<K: Send + Sync, V: Send + Sync> Sync for ShardPtr<K, V> {}

impl<K, V, S> Snapshots<K, V, S> {
    pub(crate) fn new() -> Self {
        Snapshots {
            cell: SnapshotCell::new(),
            builder: crate::sync::Mutex::new(0),
            build: crate::sync::Mutex::new(None),
            changed: crate::sync::Mutex::new(ChangeList {
                shards: Vec::new(),
                overflowed: false,
            }),
            bytes: Arc::new(PieceBytes::default()),
        }
    }

    /// Puts `shard` on the list of changed shards (once per cycle: the
    /// caller checked `Shard::list_once`). Inside the write gate. A list
    /// longer than `slots` (the directory's slot count: more than the map
    /// has shards) is dropped instead of growing.
    #[cold]
    pub(crate) fn note_changed(&self, shard: &Shard<K, V>, slots: usize) {
        let mut list = self.changed.lock();
        if list.overflowed {
            return;
        }
        if list.shards.len() >= slots {
            list.shards = Vec::new();
            list.overflowed = true;
            return;
        }
        list.shards.push(ShardPtr(shard));
    }

    /// Drops the map's reference to its latest snapshot.
    pub(crate) fn forget(&self) {
        let _one_builder = self.builder.lock();
        self.cell.clear();
    }
}
