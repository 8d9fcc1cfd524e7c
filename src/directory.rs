//! The directory: which shard a hash belongs to (extendible hashing).
//!
//! Shards are indexed by the **top** bits of the key's hash, as in Go 1.24's
//! swiss maps. The directory is a table of `2^G` slots (`G`, the *global
//! depth*); a shard with *local depth* `d <= G` and prefix `p` holds every
//! hash whose top `d` bits equal `p`, and occupies the `2^(G-d)` consecutive
//! slots starting at `p << (G-d)`:
//!
//! ```text
//!   G = 2          slots: [ 00 ][ 01 ][ 10 ][ 11 ]
//!                            |     |     \     /
//!   shards:               d=2,00 d=2,01  d=1,1
//! ```
//!
//! Splitting one shard (`d -> d+1`) rewrites only its own slots; when
//! `d == G` the table doubles first (pointers only). Merging two buddies
//! (`d -> d-1`) rewrites their slots; when no shard is left at depth `G`
//! the table halves. The procedures are in [`crate::migrate`].
//!
//! # Concurrency
//!
//! - The table pointer is an epoch-protected atomic: doubling and halving
//!   publish a new table (Release) and retire the old one.
//! - Slots are atomic pointers to shard heads (`shard::Head`: the view
//!   word and a pointer to the shard, in a dense block of its own),
//!   updated in place (Release), always under the `resize` lock, which
//!   serialises every change to the directory. A read hit goes slot →
//!   head → view; everything else goes on from the head to the shard.
//! - A reader loads the table (Acquire), then its slot (Acquire), and may
//!   reach a shard that a concurrent split or merge has just retired. That
//!   is fine: a retired shard still answers hits correctly (its entries are
//!   shared with the shards that replaced it) and sends every other
//!   operation back to the directory (see `shard` module docs).
//! - A stale table (one replaced by a doubling) still points only at shards
//!   that are either current or retired, so the same argument applies.
//!
//! # Layout
//!
//! A table is one allocation: a header (depth, the index shift
//! `63 - depth`, slot count), then the slots inline. The directory's
//! atomic points at its start.
//!
//! ```text
//!   Directory.table: AtomicPtr<Header>, a thin pointer to the start
//!        |
//!        v   one allocation: 16 + 8 * 2^G bytes in a normal build
//!        +-----------+-----------+-----------+--------+--------+-----+--------------+
//!        | depth u32 | shift u32 | len = 2^G | slot 0 | slot 1 | ... | slot 2^G - 1 |
//!        +-----------+-----------+-----------+--------+--------+-----+--------------+
//!        |<--------------- Header -------------->|<----- [AtomicPtr<Head>; 2^G] ------->|
//!        offset 0                                offset size_of::<Header>() (16)
//!                                                    |        |                |
//!                                                    v        v                v
//!                                                  head     head             head  (view word, shard)
//! ```
//!
//! [`DirTable`] is a `#[repr(C)]` dynamically sized type: the header
//! followed by a `[AtomicPtr<Head>]`. An `AtomicPtr` cannot hold its fat
//! pointer, so the directory publishes a thin pointer to the header, and a
//! reader rebuilds the `&DirTable` from the slot count it finds there (a
//! read hit indexes the slots without a bounds check, so the count is not
//! even loaded on that path: `DirTable::shard_of`). The depth, the shift
//! and the count are `Published`, like every other datum a reader
//! reaches through a pointer, so loom checks that they were published. The
//! header ends with an empty array of slots, which gives it the slots'
//! alignment, so its size is the offset of slot 0.
//!
//! Nothing is assumed about sizes: under loom the atomics and `Published`
//! are loom's types, not one word each, so `boxed` computes the layout from
//! the types with `Layout::extend` (the `#[repr(C)]` rule), and debug
//! builds check it against `Layout::for_value` of the result. That is the
//! layout `Box` frees a `DirTable` with, so a table is freed by
//! `Box::from_raw`: in the directory's `Drop`, or by the epoch once
//! replaced (`reclaim::retire` takes the unsized pointer as it is); its
//! retired bytes are `16 + 8 * 2^G` in a normal build (`24 + 8 * 2^G`
//! before, for a 24-byte box and a separate slot array).
//!
//! # The hit path
//!
//! `Directory::locate` loads the table pointer, then the depth and the slot
//! count from the header (one line, in parallel), then the slot. Before,
//! the table was a small box (the depth, and a boxed slice's pointer and
//! length) in front of a separate slot array. The chain of dependent loads
//! to the slot is the same length (three: the depth and the array pointer
//! came from the same box, in parallel); what the single allocation saves
//! is one load per hit (the array pointer: the slot's address is now the
//! table's plus the index) and one allocation per table.
//!
//! Dropping the bounds check as well (the index is the hash's top `depth`
//! bits, below `2^depth` by construction, so `get_unchecked` would be
//! sound) was measured and left out. It takes the pinned read hit to 64.2
//! instructions and 16.0 reads, but it makes the inlined `Pinned::get`
//! smaller, which tips LLVM's inliner: in `benches/lookup_cost.rs` the
//! per-operation `SnapMap::get` then stops being inlined into the lookup
//! loop and costs 140.8 instructions instead of 129.8. With the count
//! loaded and the bounds check kept, every path gains and none loses.
//!
//! measured (callgrind instructions and data reads per read hit;
//! `benches/lookup_cost.rs` as `scripts/bench-report.sh` computes them:
//! `valgrind --tool=callgrind --cache-sim=yes lookup_cost <map> <keys>
//! 1000000`, minus the same run with 0 lookups, divided by 1M; one session,
//! before and after this layout; papaya and the `ceiling` (a plain
//! `&hashbrown::HashMap`) for reference, unchanged):
//!
//! | map | keys | instructions before → after | data reads before → after |
//! |---|---:|---:|---:|
//! | `snapmap` (pinned handle) | 10K | 68.2 → 67.2 | 18.0 → 17.0 |
//! | `snapmap` (pinned handle) | 1M | 68.2 → 67.2 | 18.0 → 17.0 |
//! | `snapmap-per-op` (`SnapMap::get`) | 10K | 129.8 → 128.8 | 36.2 → 35.2 |
//! | `snapmap-per-op` (`SnapMap::get`) | 1M | 129.8 → 128.8 | 36.2 → 35.2 |
//! | `papaya` | 10K / 1M | 54.1 / 51.6 | 15.7 / 15.4 |
//! | `ceiling` | 10K / 1M | 35.1 / 35.1 | 4.0 / 4.0 |
//!
//! One instruction and one load less per hit, on every path. Misses in
//! valgrind's simulated L1 per hit: unchanged at 1M keys (6.8), 3.3 → 2.8
//! at 10K (a simulated cache; no timing claim). Criterion, four
//! alternating runs of each build on the shared 2-core machine (noisy):
//! `read_hit_1M/snapmap/1t` 76-105 ns before, 69-81 ns after; `read_hit_1M/
//! snapmap, pin per op/1t` 132-160 ns before, 134-156 ns after (and one
//! run at 328 ns under load). No claim beyond the noise.

use core::alloc::Layout;
use core::marker::PhantomData;
use core::ptr;

use crate::reclaim::retire;
use crate::shard::{Head, Shard};
use crate::stats::RetiredKind;
use crate::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use crate::sync::epoch::Guard;
use crate::sync::{CachePadded, Mutex, Published};

/// The deepest directory the builder accepts (`2^26` slots).
pub(crate) const MAX_DEPTH_LIMIT: u32 = 26;

/// The global depth from which a read hit probes its view speculatively
/// (`ReadView::find_at`, "Speculative probing"): 2,048 directory slots, a
/// map of about half a million keys and more, whose lookups wait on memory
/// rather than on branch mispredictions. Measured on this repository's
/// machine (2 MB of L2 per core): speculation was 17 % faster at 1M keys,
/// even at 300K, and slower below (85 % slower at 10K keys).
pub(crate) const SPECULATE_DEPTH: u32 = 11;

/// The fixed start of every table allocation, and the type of the thin
/// pointer the directory publishes (see "Layout" in the module docs).
///
/// The empty array gives the header the slots' alignment, so its size is
/// exactly the offset of slot 0 in [`DirTable`].
#[repr(C)]
struct Header<K, V> {
    /// The global depth.
    depth: Published<u32>,
    /// `63 - depth`: a slot index is `(hash >> index_shift) >> 1`, the
    /// top `depth` bits (`crate::hash::top_bits`) without computing
    /// `63 - depth` on every lookup. Stored in what was padding.
    index_shift: Published<u32>,
    /// The slot count, `2^depth`: the length of the `DirTable` rebuilt from
    /// a thin pointer. Stored rather than derived: one load from the
    /// header's line costs a hit one instruction, `1 << depth` three.
    len: Published<usize>,
    _slots: [AtomicPtr<Head<K, V>>; 0],
}

/// One directory table: the header and, inline after it, `2^depth` slots,
/// in one allocation (see "Layout" in the module docs).
///
/// A dynamically sized type: a `&DirTable` is a (pointer, slot count) pair,
/// and the count is always the header's `len`, `2^depth`.
#[repr(C)]
pub(crate) struct DirTable<K, V> {
    header: Header<K, V>,
    pub(crate) slots: [AtomicPtr<Head<K, V>>],
}

impl<K, V> DirTable<K, V> {
    /// The layout of a table of `len` slots, as `#[repr(C)]` lays out
    /// [`DirTable`]: the header, then the slot array at the header's size
    /// (already a multiple of the slots' alignment), the whole padded to its
    /// alignment. Computed from the slot type, never assumed: under loom an
    /// `AtomicPtr` is not one pointer wide.
    fn layout(len: usize) -> Layout {
        let slots = Layout::array::<AtomicPtr<Head<K, V>>>(len)
            .expect("at most 2^MAX_DEPTH_LIMIT slots fit in memory");
        let (layout, offset) = Layout::new::<Header<K, V>>()
            .extend(slots)
            .expect("at most 2^MAX_DEPTH_LIMIT slots fit in memory");
        debug_assert_eq!(offset, size_of::<Header<K, V>>());
        layout.pad_to_align()
    }

    /// A table of `2^depth` slots filled by `slot(i)` (a shard's head:
    /// [`Shard::head_ptr`]): one allocation, owned by the caller until
    /// published or freed with `Box::from_raw` (or [`Directory`]'s `Drop`).
    pub(crate) fn boxed(depth: u32, mut slot: impl FnMut(usize) -> *mut Head<K, V>) -> *mut Self {
        debug_assert!(depth <= MAX_DEPTH_LIMIT);
        let len = 1usize << depth;
        let layout = Self::layout(len);
        // SAFETY: the layout is not zero-sized (the header alone is not).
        let start = unsafe { std::alloc::alloc(layout) };
        if start.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        let header = start.cast::<Header<K, V>>();
        // SAFETY: `start` is a fresh allocation of `layout`, which begins
        // with a `Header` (offset 0 of a `#[repr(C)]` struct) and is aligned
        // for it.
        unsafe {
            header.write(Header {
                depth: Published::new(depth),
                index_shift: Published::new(63 - depth),
                len: Published::new(len),
                _slots: [],
            });
        }
        let mut filling = Filling::<K, V> {
            start,
            layout,
            written: 0,
            _table: PhantomData,
        };
        // SAFETY: the slot array starts at the header's size (`layout`), is
        // aligned for the slots, and holds `len` of them inside the
        // allocation.
        let first = unsafe { start.add(size_of::<Header<K, V>>()) }.cast::<AtomicPtr<Head<K, V>>>();
        for i in 0..len {
            let head = slot(i);
            // SAFETY: `i < len`, so slot `i` is inside the allocation; each
            // is written once.
            unsafe { first.add(i).write(AtomicPtr::new(head)) };
            filling.written = i + 1;
        }
        core::mem::forget(filling);
        // SAFETY: `header` starts this live allocation, whose header and
        // `len` slots are all initialised (on this thread). The fat pointer
        // carries `len`, and `layout` is what `#[repr(C)]` gives a
        // `DirTable` of `len` slots (checked below in debug builds), so
        // `Box::from_raw` may later free it.
        let table = unsafe { Self::from_header(header) };
        // SAFETY: `table` is initialised, just above.
        let built = unsafe { &*table };
        debug_assert_eq!(Layout::for_value(built), layout, "the compiler's layout");
        debug_assert_eq!(built.slots.as_ptr().cast::<u8>(), first.cast::<u8>());
        debug_assert_eq!(built.slots.len(), len);
        table
    }

    /// The table whose allocation starts at `header`: reads the slot count
    /// and rebuilds the fat pointer from the thin one.
    ///
    /// # Safety
    ///
    /// `header` came from [`DirTable::boxed`] (cast to the thin pointer)
    /// and the table is not freed yet; its header is initialised and, for a
    /// reader on another thread, published to it (Acquire on the pointer).
    #[inline]
    unsafe fn from_header(header: *mut Header<K, V>) -> *mut Self {
        // SAFETY: per the contract, `header` points to a live, initialised
        // header.
        let header_ref = unsafe { &*header };
        let len = *header_ref.len.get();
        debug_assert_eq!(len, 1usize << *header_ref.depth.get());
        // The slice's data pointer is the table's start, and its length
        // becomes the slot count of the `DirTable` (same metadata).
        ptr::slice_from_raw_parts_mut(header.cast::<AtomicPtr<Head<K, V>>>(), len) as *mut Self
    }

    /// The global depth.
    #[inline]
    pub(crate) fn depth(&self) -> u32 {
        *self.header.depth.get()
    }

    /// Whether the map is large enough (its global depth at least
    /// [`SPECULATE_DEPTH`]) that a read hit should probe its view
    /// speculatively (`ReadView::find_at`). One compare of a header field
    /// the lookup loads anyway.
    #[inline]
    pub(crate) fn speculates(&self) -> bool {
        *self.header.index_shift.get() <= 63 - SPECULATE_DEPTH
    }

    /// The slot index of `hash`: its top `depth` bits.
    #[inline]
    pub(crate) fn index(&self, hash: u64) -> usize {
        let shift = *self.header.index_shift.get();
        let index = ((hash >> shift) >> 1) as usize;
        debug_assert_eq!(index, crate::hash::top_bits(hash, self.depth()));
        index
    }

    /// The head of the shard that holds `hash` in this table: the slot
    /// [`index`] picks, read without a bounds check (a read hit's path,
    /// which needs nothing of the shard but its head).
    ///
    /// [`index`]: Self::index
    #[inline]
    pub(crate) fn head_of<'g>(&self, hash: u64, _guard: &'g Guard) -> &'g Head<K, V> {
        let index = self.index(hash);
        debug_assert!(index < self.slots.len());
        // SAFETY: `index` is the top `depth` bits of the hash, below
        // `2^depth`, the slot count (`Header::len`, set with the depth when
        // the table was built and never changed).
        let slot = unsafe { self.slots.get_unchecked(index) };
        // Acquire: as in `shard_at`.
        let head = slot.load(Ordering::Acquire);
        // SAFETY: as in `shard_at`: slots are never null; a shard (and its
        // head) is retired through the epoch only after it has left every
        // slot of the current table, and `_guard` was pinned before this
        // load.
        unsafe { &*head }
    }

    /// The shard that holds `hash` in this table (through its head).
    #[inline]
    pub(crate) fn shard_of<'g>(&self, hash: u64, guard: &'g Guard) -> &'g Shard<K, V> {
        self.head_of(hash, guard).shard(guard)
    }

    /// The shard in slot `index`.
    #[inline]
    pub(crate) fn shard_at<'g>(&self, index: usize, guard: &'g Guard) -> &'g Shard<K, V> {
        // Acquire: pairs with the Release store that put the shard's head
        // here (`migrate`), or the table's publication: the head and the
        // shard are initialised.
        let head = self.slots[index].load(Ordering::Acquire);
        // SAFETY: slots are never null; a shard and its head are retired
        // through the epoch only after they have left every slot of the
        // current table, and `guard` was pinned before this load.
        unsafe { &*head }.shard(guard)
    }

    /// Heap bytes of this table: its one allocation, header and slots
    /// (for retirement accounting).
    pub(crate) fn heap_bytes(&self) -> usize {
        size_of_val(self)
    }

    /// The distinct shards, in slot order, as raw pointers (the ones their
    /// `Box` gave: `Shard::boxed`).
    pub(crate) fn distinct(&self) -> impl Iterator<Item = *mut Shard<K, V>> + '_ {
        let mut previous = core::ptr::null_mut();
        self.slots.iter().filter_map(move |slot| {
            // Acquire: pairs with the Release store that put the head in the
            // slot; callers may dereference its shard.
            let head = slot.load(Ordering::Acquire);
            (head != previous).then(|| {
                previous = head;
                // SAFETY: slots are never null and point to the heads of
                // shards the table holds, alive while the caller may use
                // the table.
                unsafe { (*head).shard_ptr() }
            })
        })
    }
}

/// State kept under the directory's resize lock, changed by the split,
/// merge, doubling and halving procedures (`crate::migrate`).
pub(crate) struct Resize {
    /// How many distinct shards sit at the global depth (the directory can
    /// halve when none does).
    pub(crate) at_global_depth: usize,
}

/// Scope guard of [`DirTable::boxed`]: if a `slot(i)` closure panics, drops
/// what was written (the header and `written` slots) and frees the
/// allocation, instead of leaking it.
struct Filling<K, V> {
    start: *mut u8,
    layout: Layout,
    written: usize,
    _table: PhantomData<Header<K, V>>,
}

impl<K, V> Drop for Filling<K, V> {
    fn drop(&mut self) {
        let first = self
            .start
            .wrapping_add(size_of::<Header<K, V>>())
            .cast::<AtomicPtr<Head<K, V>>>();
        // SAFETY: `boxed` wrote the header and the first `written` slots of
        // this allocation of `layout`, and forgets the guard once every slot
        // is written; nothing else refers to the allocation yet.
        unsafe {
            ptr::drop_in_place(ptr::slice_from_raw_parts_mut(first, self.written));
            ptr::drop_in_place(self.start.cast::<Header<K, V>>());
            std::alloc::dealloc(self.start, self.layout);
        }
    }
}

/// The directory. See the module docs.
pub(crate) struct Directory<K, V> {
    /// The current table, as a thin pointer to its start (a `DirTable` is
    /// unsized; its slot count is in its header).
    table: CachePadded<AtomicPtr<Header<K, V>>>,
    /// Serialises splits, merges, doubling and halving.
    pub(crate) resize: Mutex<Resize>,
    /// Bumped by every change of which shards the directory holds (a split
    /// or merge repointing slots, a table doubled or halved), under the
    /// resize lock. A snapshot build compares it with the previous build's
    /// to know whether the previous snapshot's layout still fits.
    generation: AtomicU64,
    /// Shards never merge below this depth (the initial shard count).
    pub(crate) min_depth: u32,
    /// Shards never split beyond this depth (the builder's shard limit).
    pub(crate) max_depth: u32,
    /// The builder's `huge_pages`: every shard's views come from
    /// `crate::arena` (the shards carry it too, for their migrations).
    pub(crate) huge_pages: bool,
    /// The directory owns its shards (through raw pointers): this makes the
    /// map `Send`/`Sync` exactly when a shard is, i.e. when `K` and `V` are.
    _owns: PhantomData<Box<Shard<K, V>>>,
}

impl<K, V> Directory<K, V> {
    /// `2^depth` empty shards, each at local depth `depth`.
    pub(crate) fn new(depth: u32, max_depth: u32, huge_pages: bool) -> Self {
        debug_assert!(depth <= max_depth && max_depth <= MAX_DEPTH_LIMIT);
        let table = DirTable::<K, V>::boxed(depth, |i| {
            let shard = Shard::with_entries(depth, i as u64, Vec::new(), 0, huge_pages).boxed();
            // SAFETY: just built, and owned by the table from here.
            unsafe { (*shard).head_ptr() }
        });
        Directory {
            table: CachePadded::new(AtomicPtr::new(table.cast())),
            resize: Mutex::new(Resize {
                at_global_depth: 1 << depth,
            }),
            min_depth: depth,
            max_depth,
            huge_pages,
            generation: AtomicU64::new(0),
            _owns: PhantomData,
        }
    }

    /// See the `generation` field. Read by a snapshot's cut, with the
    /// write gate closed.
    pub(crate) fn generation(&self) -> u64 {
        // Relaxed: every change happens inside a write, inside the gate;
        // the gate's Release exit and the cut's Acquire wait order it
        // before this load.
        self.generation.load(Ordering::Relaxed)
    }

    /// Records a change of which shards the directory holds. The caller
    /// holds the resize lock.
    pub(crate) fn bump_generation(&self) {
        // Relaxed: as in `generation`; serialised by the resize lock, so a
        // load and a store lose nothing.
        let next = self.generation.load(Ordering::Relaxed) + 1;
        // Relaxed: as above.
        self.generation.store(next, Ordering::Relaxed);
    }

    /// The current table.
    #[inline]
    pub(crate) fn table<'g>(&self, _guard: &'g Guard) -> &'g DirTable<K, V> {
        // Acquire: pairs with the Release in `publish_table` (or the
        // directory's construction): the table's depth and slots are visible.
        let header = self.table.load(Ordering::Acquire);
        // SAFETY: never null, made by `DirTable::boxed`; a table is retired
        // through the epoch only after being replaced, and `_guard` was
        // pinned before this load, so it is live for `'g`.
        unsafe { &*DirTable::from_header(header) }
    }

    /// The shard that holds `hash` now (it may be retired a moment later;
    /// see the module docs).
    #[inline]
    pub(crate) fn locate<'g>(&self, hash: u64, guard: &'g Guard) -> &'g Shard<K, V> {
        let table = self.table(guard);
        table.shard_of(hash, guard)
    }

    /// The current table, for a caller that has exclusive access.
    fn table_exclusive(&mut self) -> &mut DirTable<K, V> {
        // Relaxed: `&mut self` is exclusive.
        let header = self.table.load(Ordering::Relaxed);
        // SAFETY: never null, made by `DirTable::boxed` and live (only
        // replaced tables are retired); `&mut self` excludes every other
        // access.
        unsafe { &mut *DirTable::from_header(header) }
    }

    /// Calls `f` on every distinct shard, with exclusive access (the map's
    /// `Drop`).
    pub(crate) fn for_each_shard_exclusive(&mut self, mut f: impl FnMut(&mut Shard<K, V>)) {
        for shard in self.table_exclusive().distinct() {
            // SAFETY: `&mut self` is exclusive, and each distinct pointer is a
            // live shard owned by the current table.
            f(unsafe { &mut *shard });
        }
    }
}

impl<K, V> Directory<K, V>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Replaces the table with `new` (from [`DirTable::boxed`]) and retires
    /// the old one. The caller holds the resize lock.
    pub(crate) fn publish_table<'g>(
        &self,
        new: *mut DirTable<K, V>,
        guard: &'g Guard,
    ) -> &'g DirTable<K, V> {
        // Release: publishes the new table's depth and slots (and, through
        // them, the shards) to `table`'s Acquire load. Swapped under the
        // resize lock, so the old pointer needs no Acquire.
        let old = self.table.swap(new.cast(), Ordering::Release);
        self.bump_generation();
        // SAFETY: the old table is live: we hold the resize lock, and only
        // its holder retires tables.
        let old = unsafe { DirTable::from_header(old) };
        // SAFETY: the old table is live (above).
        let bytes = unsafe { &*old }.heap_bytes();
        // SAFETY: the old table is unlinked; readers pinned before now may
        // still hold it and the epoch waits for them. Retired once, by the
        // lock holder, through the pointer `DirTable::boxed` made (its
        // layout is the one `Box` frees a `DirTable` with).
        unsafe { retire(guard, old, RetiredKind::Directory, bytes) };
        // SAFETY: `new` is the current table, retired only after being
        // replaced, and `guard` is pinned.
        unsafe { &*new }
    }
}

impl<K, V> Drop for Directory<K, V> {
    fn drop(&mut self) {
        let table = core::ptr::from_mut(self.table_exclusive());
        // SAFETY: exclusive access; the current table owns its distinct
        // shards (retired ones went to the epoch), each freed once here, and
        // then the table itself, with the layout `DirTable::boxed` gave it.
        unsafe {
            for shard in (*table).distinct() {
                drop(Box::from_raw(shard));
            }
            drop(Box::from_raw(table));
        }
    }
}
