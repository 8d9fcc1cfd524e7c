//! The read side: a built snapshot, immutable from then on.
//!
//! A [`Snapshot`] is an `Arc` of one [`Frozen`] body: the pieces (one per
//! shard of the cut, in hash order), the slot table that maps the top hash
//! bits to a piece, and the hasher. A [`Piece`] is one shard's live entries
//! as a contiguous slice grouped by bucket, with a 16-byte head per bucket
//! (the layout is drawn in the `snapshot` module docs). Lookups load a head
//! and an entry of one piece; iteration walks the slices. Nothing here changes after the build publishes it, so
//! nothing here synchronises: a snapshot is read like any immutable data.

use core::fmt;
use core::hash::{BuildHasher, Hash};
use core::iter::FusedIterator;

use core::hash::BuildHasherDefault;
use std::collections::HashMap;

use crate::hash::DefaultHashBuilder;
use crate::sync::Arc;
use crate::sync::stat_atomic::{AtomicIsize, Ordering as StatOrdering};

use super::capture::IdHasher;
use equivalent::Equivalent;

/// Bytes held by one map's snapshots: the regions their pieces live in
/// (`held`, what `stats().snapshot_bytes` reports), and the part of them
/// that live pieces use (`live`). Pieces replaced by later builds leave
/// their bytes in their region until its last piece goes; the difference
/// is what a repacking build ([`PieceBytes::should_repack`]) gives back.
#[derive(Default)]
pub(crate) struct PieceBytes {
    held: AtomicIsize,
    live: AtomicIsize,
    /// `held - live` at the last repacking build, or its lowest since.
    dead_at_repack: AtomicIsize,
}

impl PieceBytes {
    fn add_held(&self, bytes: isize) {
        // Relaxed: a statistic (and a heuristic's input).
        self.held.fetch_add(bytes, StatOrdering::Relaxed);
    }

    pub(super) fn add_live(&self, bytes: isize) {
        // Relaxed: as above.
        self.live.fetch_add(bytes, StatOrdering::Relaxed);
    }

    /// The bytes held by the map's snapshots.
    pub(crate) fn get(&self) -> usize {
        // Relaxed: a statistic.
        self.held.load(StatOrdering::Relaxed).max(0) as usize
    }

    /// Whether the next build should copy every piece into a new region,
    /// so that the old regions, mostly pieces replaced since, can go: when
    /// the dead bytes exceed the live ones plus [`REPACK_SLACK`], and have
    /// grown by at least half the live bytes since the last repack (so a
    /// repack, O(live), is paid for by as many bytes copied by the builds
    /// before it, and dead bytes that a user's old snapshot keeps alive do
    /// not make every build repack). Records the repack when it says yes.
    pub(super) fn should_repack(&self) -> bool {
        // Relaxed: a heuristic; the counters are only ever updated by
        // this map's builds and piece drops, and a stale read only moves a
        // repack by one build.
        let held = self.held.load(StatOrdering::Relaxed);
        let live = self.live.load(StatOrdering::Relaxed);
        let dead = held - live;
        let last = self.dead_at_repack.load(StatOrdering::Relaxed);
        let repack = dead > live + REPACK_SLACK && dead - last >= live / 2;
        if repack || dead < last {
            // The dead bytes now, or their lowest since the last repack
            // (what that repack freed shows here): a repack must follow
            // as many new dead bytes. Relaxed: as above; only builds
            // (serialised by the build lock) store it.
            self.dead_at_repack.store(dead, StatOrdering::Relaxed);
        }
        repack
    }
}

/// Dead bytes in snapshot regions tolerated beyond the live ones before a
/// build repacks ([`PieceBytes::should_repack`]).
pub(super) const REPACK_SLACK: isize = 4 << 20;

/// One allocation holding the heads and entries of the pieces one build
/// copied. Each piece keeps its region alive (an `Arc`); the region is
/// freed when its last piece is dropped.
///
/// Why one region per build rather than two blocks per piece: a lookup in
/// a large snapshot misses the cache on a head and on an entry, and with
/// 4 KiB pages each of those is also a miss in the translation cache (21
/// MB of heads and entries at 1M `u64` keys span 5,000 pages; the
/// second-level TLB holds about 2,000). A region of 2 MiB or more is
/// aligned to 2 MiB and, on Linux, advised with `MADV_HUGEPAGE`, so that
/// where transparent huge pages are enabled (`always` or `madvise`, the
/// common defaults) the whole snapshot sits in a dozen huge pages
/// (`crate::snapshot`, "Huge pages", has the measurements).
pub(crate) struct Region {
    ptr: core::ptr::NonNull<u8>,
    layout: core::alloc::Layout,
    pub(super) account: Arc<PieceBytes>,
}

// SAFETY: a region is raw memory that only its pieces use, through their
// own pointers; the region itself never reads or writes it, it only frees
// it, once, when the last `Arc` goes.
unsafe impl Send for Region {}
// SAFETY: as above: `&Region` gives access to nothing.
unsafe impl Sync for Region {}

impl Region {
    /// Allocates a region of `layout` (its size non-zero), counted in
    /// `account`.
    pub(super) fn new(layout: core::alloc::Layout, account: &Arc<PieceBytes>) -> Arc<Self> {
        let huge = layout.size() >= crate::hint::HUGE_PAGE;
        let layout = if huge {
            layout
                .align_to(crate::hint::HUGE_PAGE)
                .expect("a snapshot region's layout with a 2 MiB alignment")
        } else {
            layout
        };
        debug_assert!(layout.size() > 0);
        // SAFETY: the layout's size is non-zero (a piece has at least two
        // heads).
        let ptr = unsafe { std::alloc::alloc(layout) };
        let Some(ptr) = core::ptr::NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout)
        };
        if huge {
            crate::hint::advise_huge_pages(ptr, layout.size());
        }
        account.add_held(layout.size() as isize);
        Arc::new(Region {
            ptr,
            layout,
            account: account.clone(),
        })
    }

    /// The address `offset` bytes into the region.
    pub(super) fn at(&self, offset: usize) -> *mut u8 {
        debug_assert!(offset <= self.layout.size());
        self.ptr.as_ptr().wrapping_add(offset)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if self.layout.size() >= crate::hint::HUGE_PAGE {
            crate::hint::unadvise_huge_pages(self.ptr, self.layout.size());
        }
        // SAFETY: allocated in `new` with this layout, freed only here.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
        self.account.add_held(-(self.layout.size() as isize));
    }
}

/// One shard, frozen: its live entries in one contiguous slice, grouped
/// by bucket, and one 16-byte head per bucket with the address of the
/// bucket's first entry and the tags of its first entries (the layout is
/// drawn in the `snapshot` module docs).
///
/// A lookup loads the bucket's head, compares its tags with the key's tag
/// (one SSE2 compare on x86-64), and compares the key of the first match
/// (the only one, almost always): a head, then the entry, as a `hashbrown`
/// lookup loads a control group, then the bucket. Iteration walks
/// `entries`.
pub(crate) struct Piece<K, V> {
    /// Bucket `b` holds the entries from `heads[b].first` up to
    /// `heads[b + 1].first`: `buckets + 1` heads, the last one a bound
    /// only, in `region`. They point into `entries`.
    pub(super) heads: core::ptr::NonNull<Head<K, V>>,
    /// The `len` entries, bucket by bucket, in `region`; the piece owns
    /// them (drops them in place).
    pub(super) entries: core::ptr::NonNull<(K, V)>,
    pub(super) len: usize,
    pub(super) mask: u64,
    pub(super) version: u64,
    pub(super) region: Arc<Region>,
}

// SAFETY: the piece owns its entries (in its region, which only it
// uses at those addresses) and the heads point into them; sending or
// sharing the piece sends or shares its entries, as a `Box<[(K, V)]>`
// would.
unsafe impl<K: Send, V: Send> Send for Piece<K, V> {}
// SAFETY: as for `Send`: nothing is written through the heads' pointers.
unsafe impl<K: Sync, V: Sync> Sync for Piece<K, V> {}

/// One bucket's head: the tags of its first [`Head::TAGS`] entries, then
/// the address of its first entry. A bucket's entries beyond the first
/// `TAGS` (a bucket that large is rare: about 1 in 50 at the largest
/// average load, [`BUCKET_LOAD`]) are compared by key without a tag.
///
/// The address, rather than a position, saves a lookup the load of the
/// entries' base and a multiply: the head leads straight to the entry.
#[repr(C, align(16))]
pub(crate) struct Head<K, V> {
    pub(super) tags: [u8; 8],
    pub(super) first: *const (K, V),
}

impl<K, V> Clone for Head<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for Head<K, V> {}

impl<K, V> Head<K, V> {
    /// Tags per head.
    pub(super) const TAGS: usize = 8;

    /// The positions among the bucket's first [`Head::TAGS`] entries
    /// whose tag is `hash`'s ([`tag`]), as a bit set (bit `i` for position
    /// `i`). Unused tag bytes are 0, which no tag is, so they never match.
    #[inline]
    fn matches(&self, hash: u64) -> u32 {
        #[cfg(target_arch = "x86_64")]
        {
            use core::arch::x86_64::{
                __m128i, _mm_cmpeq_epi8, _mm_loadl_epi64, _mm_movemask_epi8, _mm_set1_epi32,
            };
            // The tag in every byte: the hash's bits 24 to 31 by one
            // 32-bit shift (which clears the bits above), copied to every
            // byte by a multiply, the high bits set by an `or` (three
            // instructions, then a 32-bit broadcast), rather than
            // `_mm_set1_epi8`'s byte shuffles (seven, as compiled here).
            let needle = ((((hash as u32) >> 24) * 0x0101_0101) | 0x8080_8080) as i32;
            // SAFETY: SSE2 is part of the x86-64 baseline. The load reads
            // the head's first eight bytes (its tags) and zeroes the upper
            // eight of the register; no tag is 0, so those never match and
            // the mask needs no `and`. `first` is read apart, as a plain
            // load that does not wait for the compare.
            let equal = unsafe {
                let group = _mm_loadl_epi64(core::ptr::from_ref(&self.tags).cast::<__m128i>());
                _mm_movemask_epi8(_mm_cmpeq_epi8(group, _mm_set1_epi32(needle)))
            };
            equal as u32
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let tag = tag(hash);
            let mut equal = 0;
            for (i, &t) in self.tags.iter().enumerate() {
                equal |= u32::from(t == tag) << i;
            }
            equal
        }
    }
}

/// Entries per bucket, on average at most (between half that and that).
pub(super) const BUCKET_LOAD: usize = 4;

/// How far left a hash shifts so that its bucket bits (2 and up) land on
/// a head's byte offset: a lookup masks `hash << HEAD_SHIFT` with the
/// piece's mask in bytes ([`PiecePtr`]), with no multiply by the head's
/// size. A head is 16 bytes on every target (its alignment).
const HEAD_SHIFT: u32 = 4 - BUCKET_BITS_FROM;
const _: () = assert!(size_of::<Head<u64, u64>>() == 1 << (HEAD_SHIFT + BUCKET_BITS_FROM));

/// The lowest hash bit of a piece's bucket number ([`bucket`]).
const BUCKET_BITS_FROM: u32 = 2;

/// Read-view slots per piece bucket: a view slot's entries (those whose
/// home it is) fall in bucket `home / SLOTS_PER_BUCKET` of a piece with
/// `SLOTS_PER_BUCKET` times fewer buckets than the view has slots.
pub(super) const SLOTS_PER_BUCKET: usize = 1 << BUCKET_BITS_FROM;

/// The bucket of `hash` in a piece (before the mask): bits 2 and up. A
/// shard's read view puts a key in the slot of its hash's low bits (its
/// home, or past it) and keeps its entries in order of home, so a piece
/// of `buckets` buckets captured from a view of `4 * buckets` slots gets
/// its entries in bucket order by walking the view, with no sort (the
/// bucket is the home divided by 4: `build`'s `Piece::from_refs`). The top
/// bits chose the shard, so they are the same for every entry of a piece.
#[inline]
pub(super) fn bucket(hash: u64) -> u64 {
    hash >> BUCKET_BITS_FROM
}

/// The tag of `hash`: bits 24 to 30 (disjoint from the bucket bits of
/// any piece below `2^22` buckets, some 16 million entries, and from the
/// shard's top bits while the directory is less than 34 levels deep), with
/// the high bit set, so that no tag is 0, the value of an unused tag byte
/// in a [`Head`]. Overlapping bits would only make tags match more often
/// (a tag match is followed by the key's compare). Bits 32 to 38 until
/// 2026-12-07: the lookup then needed a mask before the multiply that
/// spreads the tag (`Head::matches`): 44.3 → 43.3 instructions per reader
/// lookup at 10K keys.
#[inline]
pub(super) fn tag(hash: u64) -> u8 {
    ((hash as u32) >> 24) as u8 | 0x80
}

impl<K, V> Piece<K, V> {
    /// What a slot holds for this piece.
    pub(super) fn ptr(&self) -> PiecePtr<K, V> {
        PiecePtr {
            heads: self.heads,
            mask: self.mask << (HEAD_SHIFT + BUCKET_BITS_FROM),
        }
    }

    /// The number of entries.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The number of buckets.
    pub(super) fn buckets(&self) -> usize {
        self.mask as usize + 1
    }

    /// The entries, bucket by bucket.
    pub(super) fn entries(&self) -> &[(K, V)] {
        // SAFETY: `len` initialised entries at `entries`, owned by the
        // piece and never written after the build (`Piece::write`).
        unsafe { core::slice::from_raw_parts(self.entries.as_ptr(), self.len) }
    }

    /// The heads, `buckets + 1` of them.
    pub(super) fn heads(&self) -> &[Head<K, V>] {
        // SAFETY: `mask + 2` initialised heads at `heads`, in the region
        // the piece keeps alive, never written after the build.
        unsafe { core::slice::from_raw_parts(self.heads.as_ptr(), self.mask as usize + 2) }
    }

    /// Bytes of its region a piece of `buckets` buckets and `len` entries
    /// uses (its heads and entries).
    pub(super) fn bytes(buckets: usize, len: usize) -> usize {
        size_of::<Head<K, V>>() * (buckets + 1) + size_of::<(K, V)>() * len
    }
}

impl<K, V> Drop for Piece<K, V> {
    fn drop(&mut self) {
        let bytes = Self::bytes(self.mask as usize + 1, self.len);
        self.region.account.add_live(-(bytes as isize));
        // SAFETY: the piece owns its `len` initialised entries; nothing
        // reads them after this (lookups and walks borrow the piece).
        unsafe {
            core::ptr::drop_in_place(core::ptr::slice_from_raw_parts_mut(
                self.entries.as_ptr(),
                self.len,
            ));
        }
    }
}

/// What a lookup needs of a piece that a [`Frozen`] owns in its
/// `pieces`, held in the slot itself: no load of the piece's own header.
pub(super) struct PiecePtr<K, V> {
    heads: core::ptr::NonNull<Head<K, V>>,
    /// The bucket mask in bytes of heads: `(buckets - 1) * 16`.
    mask: u64,
}

impl<K, V> Clone for PiecePtr<K, V> {
    #[inline]
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for PiecePtr<K, V> {}

// SAFETY: a `PiecePtr` is a shared reference in raw form to a piece owned
// by the same `Frozen` (an `Arc<Piece>` in its `pieces`), which outlives
// it; sharing or sending it shares the piece, as `&Piece` would, which
// needs `K: Sync` and `V: Sync` (the `Arc`s beside it need the same).
unsafe impl<K: Sync, V: Sync> Send for PiecePtr<K, V> {}
// SAFETY: as for `Send`.
unsafe impl<K: Sync, V: Sync> Sync for PiecePtr<K, V> {}

impl<K, V> PiecePtr<K, V> {
    /// Looks `key` up in the piece.
    ///
    /// The hit on the first tag match is inline; everything else (a
    /// second match, a bucket past its tags, a miss) is in
    /// [`PiecePtr::get_rest`], out of line.
    ///
    /// # Safety
    ///
    /// The piece must be alive for `'a`.
    #[inline]
    unsafe fn get<'a, Q: ?Sized + Equivalent<K>>(self, hash: u64, key: &Q) -> Option<&'a (K, V)> {
        let offset = ((hash << HEAD_SHIFT) & self.mask) as usize;
        // SAFETY: the piece is alive (contract); it has `buckets + 1`
        // heads (the build makes it so), and `offset` is a multiple of the
        // head's size up to `(buckets - 1) * 16`: a head of the piece.
        let at = unsafe { self.heads.byte_add(offset) };
        // SAFETY: as above: a head of a piece alive for `'a`.
        let head = unsafe { at.as_ref() };
        let matches = head.matches(hash);
        if matches != 0 {
            // SAFETY: only the tags of the bucket's entries are non-zero,
            // so the first match is one of its entries: `first` plus its
            // position is inside the piece's `entries`, alive for `'a`.
            let entry = unsafe { &*head.first.add(matches.trailing_zeros() as usize) };
            if key.equivalent(&entry.0) {
                return Some(entry);
            }
        }
        // SAFETY: `at` is a bucket head of a piece alive for `'a` (above).
        unsafe { Self::get_rest(at, matches & matches.wrapping_sub(1), key) }
    }

    /// The rest of a lookup in `head`'s bucket: the tag matches in
    /// `matches` (the first one already compared), then the entries past
    /// the bucket's first [`Head::TAGS`], by key.
    ///
    /// # Safety
    ///
    /// `at` is one of the bucket heads (not the last bound) of a piece
    /// alive for `'a`, with the provenance of the whole head array.
    #[inline(never)]
    unsafe fn get_rest<'a, Q: ?Sized + Equivalent<K>>(
        at: core::ptr::NonNull<Head<K, V>>,
        mut matches: u32,
        key: &Q,
    ) -> Option<&'a (K, V)> {
        // SAFETY: a head of a live piece (contract).
        let head = unsafe { at.read() };
        while matches != 0 {
            // SAFETY: as in `get`: a tagged position of the bucket.
            let entry = unsafe { &*head.first.add(matches.trailing_zeros() as usize) };
            matches &= matches - 1;
            if key.equivalent(&entry.0) {
                return Some(entry);
            }
        }
        if size_of::<(K, V)>() == 0 {
            // Every entry has the same address, so a bucket's length cannot
            // be measured; nor is it needed: a zero-sized key has one value
            // (for lawful `Hash` and `Eq`), so a piece holds at most one
            // entry, under the first tag.
            return None;
        }
        // SAFETY: a bucket head is followed by another (the last one a
        // bound), in the same allocation.
        let end = unsafe { at.add(1).read().first };
        // SAFETY: both point into the same `entries` (the next bucket's
        // first is at or after this one's).
        let len = unsafe { end.offset_from(head.first) } as usize;
        (Head::<K, V>::TAGS..len).find_map(|i| {
            // SAFETY: `i < len`: an entry of this bucket.
            let entry = unsafe { &*head.first.add(i) };
            key.equivalent(&entry.0).then_some(entry)
        })
    }
}

/// Pieces per [`Chunk`].
pub(super) const CHUNK: usize = 64;

/// Up to [`CHUNK`] consecutive pieces (in hash order), shared between
/// snapshots: a build that changes none of them takes the chunk with one
/// reference count, not one per piece.
pub(super) struct Chunk<K, V>(pub(super) Box<[Arc<Piece<K, V>>]>);

/// Shard id → position of its piece, for one layout.
pub(super) type IdIndex = HashMap<u64, u32, BuildHasherDefault<IdHasher>>;

/// A snapshot's pieces, in hash order, with what a later build needs to
/// reuse them: the position of each shard's piece, and the directory
/// generation they were laid out for (`crate::snapshot`, "Changed
/// shards").
pub(crate) struct Pieces<K, V> {
    pub(super) chunks: Box<[Arc<Chunk<K, V>>]>,
    /// Shared by every snapshot of one layout (built by a full build).
    pub(super) index: Arc<IdIndex>,
    /// `Directory::generation` at the cut of the build that laid them out.
    pub(super) generation: u64,
}

impl<K, V> Pieces<K, V> {
    /// The number of pieces (the index has one position per piece).
    pub(super) fn count(&self) -> usize {
        self.index.len()
    }

    /// The piece at `position` (hash order).
    pub(super) fn at(&self, position: usize) -> &Arc<Piece<K, V>> {
        &self.chunks[position / CHUNK].0[position % CHUNK]
    }

    /// The piece of shard `id`, if this layout has one.
    pub(super) fn of(&self, id: u64) -> Option<&Arc<Piece<K, V>>> {
        self.index.get(&id).map(|&p| self.at(p as usize))
    }

    /// The pieces in hash order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Arc<Piece<K, V>>> {
        self.chunks.iter().flat_map(|chunk| chunk.0.iter())
    }
}

/// The shared body of a snapshot.
pub(crate) struct Frozen<K, V, S> {
    /// The pieces, in hash order; they own what `slots` points to.
    pub(super) pieces: Arc<Pieces<K, V>>,
    /// The piece holding each `2^depth` slice of hash space: a pointer
    /// into `pieces`, so a lookup goes from the hash to the piece in one
    /// load.
    pub(super) slots: Box<[PiecePtr<K, V>]>,
    /// `64 -` how many top hash bits index `slots` (`build::slot_bits` of
    /// the depth): a lookup's slot is `hash >> shift`.
    pub(super) shift: u32,
    /// The directory's depth when the snapshot was built.
    pub(super) depth: u32,
    pub(super) len: usize,
    /// The write gate's change word at this snapshot's cut (its stamp):
    /// while the word still equals it, nothing has changed since.
    pub(super) stamp: u64,
    pub(super) hasher: S,
}

/// An immutable, consistent copy of a [`SnapMap`](crate::SnapMap), from
/// [`SnapMap::snapshot`](crate::SnapMap::snapshot).
///
/// It is one point in time: every write, and every
/// [batch](crate::SnapMap::apply), is wholly in it or wholly absent. It owns
/// its data (`'static`), is `Send + Sync`, and clones in O(1):
///
/// ```
/// fn assert_static_send_sync<T: Send + Sync + 'static>(_: &T) {}
/// let map = snapmap::SnapMap::new();
/// map.insert("listen".to_string(), "0.0.0.0:80".to_string());
/// let snapshot = map.snapshot();
/// assert_static_send_sync(&snapshot);
/// map.insert("listen".to_string(), "0.0.0.0:8080".to_string());
/// drop(map);
/// // The snapshot outlives the map and still shows the old value.
/// assert_eq!(snapshot.get("listen").map(String::as_str), Some("0.0.0.0:80"));
/// ```
///
/// A snapshot cannot borrow from the map, so nothing about it is tied to
/// the map's lifetime; but its entries are tied to it:
///
/// ```compile_fail
/// let snapshot = snapmap::SnapMap::<u64, u64>::new().snapshot();
/// let value: &u64 = {
///     let copy = snapshot.clone();
///     copy.get(&1).unwrap()
/// }; // `copy` dropped while borrowed
/// println!("{value}");
/// ```
pub struct Snapshot<K, V, S = DefaultHashBuilder> {
    pub(super) frozen: Arc<Frozen<K, V, S>>,
}

impl<K, V, S> Clone for Snapshot<K, V, S> {
    /// Another handle to the same snapshot (an `Arc` clone).
    fn clone(&self) -> Self {
        Snapshot {
            frozen: self.frozen.clone(),
        }
    }
}

impl<K, V, S> Snapshot<K, V, S> {
    /// The number of entries.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, 1);
    /// assert_eq!(map.snapshot().len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.frozen.len
    }

    /// This snapshot's revision: the number of the build that made it,
    /// larger for every later build of the same map. A snapshot returned
    /// again because nothing changed has the same revision. Give it to
    /// [`SnapMap::apply_if`](crate::SnapMap::apply_if) to apply a batch
    /// only if the map is still what this snapshot holds.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, 1);
    /// let a = map.snapshot();
    /// assert_eq!(map.snapshot().revision(), a.revision()); // unchanged
    /// map.insert(1, 2);
    /// assert!(map.snapshot().revision() > a.revision());
    /// ```
    pub fn revision(&self) -> u64 {
        crate::gate::revision_of(self.frozen.stamp)
    }

    /// The write gate's change word at this snapshot's cut (see
    /// `crate::gate`, "The change word").
    #[inline]
    pub(crate) fn stamp(&self) -> u64 {
        self.frozen.stamp
    }

    /// Whether the snapshot has no entries.
    ///
    /// ```
    /// let map: snapmap::SnapMap<u8, u8> = snapmap::SnapMap::new();
    /// assert!(map.snapshot().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.frozen.len == 0
    }

    /// Iterates over the entries: a walk over contiguous slices, with no
    /// allocation and no lock. The order is unspecified.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, 10);
    /// map.insert(2, 20);
    /// let total: i32 = map.snapshot().iter().map(|(_, v)| v).sum();
    /// assert_eq!(total, 30);
    /// ```
    pub fn iter(&self) -> SnapshotIter<'_, K, V> {
        SnapshotIter {
            chunks: self.frozen.pieces.chunks.iter(),
            pieces: [].iter(),
            current: [].iter(),
            remaining: self.frozen.len,
        }
    }

    /// Iterates over the keys.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert("k", 1);
    /// assert_eq!(map.snapshot().keys().collect::<Vec<_>>(), [&"k"]);
    /// ```
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &K> + FusedIterator + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// Iterates over the values.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert("k", 1);
    /// assert_eq!(map.snapshot().values().sum::<i32>(), 1);
    /// ```
    pub fn values(&self) -> impl ExactSizeIterator<Item = &V> + FusedIterator + '_ {
        self.iter().map(|(_, v)| v)
    }

    /// The pieces' entries, one slice per piece, in hash order (parallel
    /// iteration splits them).
    #[cfg(feature = "rayon")]
    pub(crate) fn slices(&self) -> impl Iterator<Item = &[(K, V)]> {
        self.frozen.pieces.iter().map(|piece| piece.entries())
    }

    /// Whether two handles are the same snapshot (not just equal contents).
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, 1);
    /// let (a, b) = (map.snapshot(), map.snapshot());
    /// assert!(snapmap::Snapshot::ptr_eq(&a, &b)); // nothing changed in between
    /// ```
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.frozen, &b.frozen)
    }
}

/// What a lookup in one snapshot needs, copied out of it: its slot table
/// and the shift that indexes it. A [`Reader`](crate::Reader) keeps one
/// beside its snapshot, so that its lookups go from the hash to the slot
/// without first loading the snapshot's body (one dependent load fewer).
pub(crate) struct Slots<K, V> {
    slots: core::ptr::NonNull<PiecePtr<K, V>>,
    shift: u32,
}

impl<K, V> Clone for Slots<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for Slots<K, V> {}

// SAFETY: a `Slots` points into a `Frozen`'s slot table, as the `Arc` of
// the snapshot it came from does; sharing or sending it shares that
// snapshot's entries, which needs `K: Sync` and `V: Sync` (as the pieces'
// `Arc`s do).
unsafe impl<K: Sync, V: Sync> Send for Slots<K, V> {}
// SAFETY: as for `Send`.
unsafe impl<K: Sync, V: Sync> Sync for Slots<K, V> {}

impl<K, V> Slots<K, V> {
    /// Looks up `key`, whose hash (by the snapshot's hasher) is `hash`.
    ///
    /// # Safety
    ///
    /// The snapshot this came from ([`Snapshot::slots`]) is alive for
    /// `'a`.
    #[inline]
    pub(crate) unsafe fn get<'a, Q>(self, hash: u64, key: &Q) -> Option<&'a (K, V)>
    where
        Q: ?Sized + Equivalent<K>,
    {
        debug_assert!((1..64).contains(&self.shift));
        let slot = (hash >> self.shift) as usize;
        // SAFETY: the slot table has `2^(64 - shift)` elements (the build
        // makes it so) and `slot` < `2^(64 - shift)`; it and the pieces its
        // pointers reach live as long as the snapshot (our contract).
        unsafe { self.slots.add(slot).read().get(hash, key) }
    }
}

impl<K, V, S> Snapshot<K, V, S> {
    /// The snapshot's slot table and shift, for a caller that keeps the
    /// snapshot alive (a [`Reader`](crate::Reader)).
    pub(crate) fn slots(&self) -> Slots<K, V> {
        Slots {
            slots: core::ptr::NonNull::from(&*self.frozen.slots).cast(),
            shift: self.frozen.shift,
        }
    }

    /// The hasher the snapshot's lookups hash with.
    pub(crate) fn hasher(&self) -> &S {
        &self.frozen.hasher
    }
}

impl<K, V, S: BuildHasher> Snapshot<K, V, S> {
    /// The value for `key`, as of the snapshot.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(String::from("a"), 1);
    /// let snapshot = map.snapshot();
    /// map.insert(String::from("a"), 2);
    /// assert_eq!(snapshot.get("a"), Some(&1));
    /// ```
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        self.get_key_value(key).map(|(_, v)| v)
    }

    /// The stored key and value for `key`.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(String::from("a"), 1);
    /// let snapshot = map.snapshot();
    /// assert_eq!(snapshot.get_key_value("a"), Some((&"a".to_string(), &1)));
    /// ```
    #[inline]
    pub fn get_key_value<Q>(&self, key: &Q) -> Option<(&K, &V)>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let hash = self.frozen.hasher.hash_one(key);
        // SAFETY: the slot table is this snapshot's, alive as long as `self`
        // is borrowed.
        unsafe { self.slots().get(hash, key) }.map(|(k, v)| (k, v))
    }

    /// Whether `key` is in the snapshot.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, ());
    /// assert!(map.snapshot().contains_key(&1));
    /// ```
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        self.get(key).is_some()
    }
}

impl<'s, K, V, S> IntoIterator for &'s Snapshot<K, V, S> {
    type Item = (&'s K, &'s V);
    type IntoIter = SnapshotIter<'s, K, V>;

    fn into_iter(self) -> SnapshotIter<'s, K, V> {
        self.iter()
    }
}

impl<K: fmt::Debug, V: fmt::Debug, S> fmt::Debug for Snapshot<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(feature = "serde")]
impl<K: serde::Serialize, V: serde::Serialize, S> serde::Serialize for Snapshot<K, V, S> {
    /// Serialises as a map.
    fn serialize<Ser: serde::Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        serializer.collect_map(self.iter())
    }
}

/// An iterator over a snapshot's entries, from [`Snapshot::iter`].
pub struct SnapshotIter<'s, K, V> {
    chunks: core::slice::Iter<'s, Arc<Chunk<K, V>>>,
    pieces: core::slice::Iter<'s, Arc<Piece<K, V>>>,
    current: core::slice::Iter<'s, (K, V)>,
    remaining: usize,
}

impl<'s, K, V> Iterator for SnapshotIter<'s, K, V> {
    type Item = (&'s K, &'s V);

    #[inline]
    fn next(&mut self) -> Option<(&'s K, &'s V)> {
        loop {
            if let Some((k, v)) = self.current.next() {
                self.remaining -= 1;
                return Some((k, v));
            }
            match self.pieces.next() {
                Some(piece) => self.current = piece.entries().iter(),
                None => self.pieces = self.chunks.next()?.0.iter(),
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }

    /// A walk with no per-entry bookkeeping: each piece's slice is folded
    /// by the slice's own loop (what `for_each`, `sum` and most adapters
    /// call).
    #[inline]
    fn fold<B, F>(self, init: B, mut f: F) -> B
    where
        F: FnMut(B, Self::Item) -> B,
    {
        let mut acc = self.current.fold(init, |acc, (k, v)| f(acc, (k, v)));
        for piece in self
            .pieces
            .chain(self.chunks.flat_map(|chunk| chunk.0.iter()))
        {
            acc = piece
                .entries()
                .iter()
                .fold(acc, |acc, (k, v)| f(acc, (k, v)));
        }
        acc
    }
}

impl<K, V> ExactSizeIterator for SnapshotIter<'_, K, V> {}
impl<K, V> FusedIterator for SnapshotIter<'_, K, V> {}

impl<K, V> fmt::Debug for SnapshotIter<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotIter")
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}
