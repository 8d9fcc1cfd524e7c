//! The read view: a shard's immutable table, read without locks.
//!
//! A [`ReadView`] is Go's `readOnly.m`: a hash table of entries that is
//! never reshaped after it is published (only its entries' value cells
//! change). Writers replace the whole view
//! (promotion, `clear`, compaction) and retire the old one through the
//! epoch; readers load the current view and probe it under a guard.
//!
//! # One allocation, found from one word
//!
//! A view is **one allocation**: a header, then the slots, each holding a
//! key's full hash and **the entry itself** (key, value cell, and room for
//! an inline value: 32 bytes for `u64 -> u64`, so a slot never straddles
//! two cache lines). The shard's view pointer carries, in its low bits, the
//! `amended` flag and the slot count as the shift `s = 64 - log2(slots)`
//! (the allocation is 128-aligned, so seven bits are free; a view has at
//! least eight slots, so `s` is at most 61 and fits in six). A reader
//! therefore gets the slots' address, their number and the flag from **one
//! atomic load**, and its next load is the slot that holds the key, its
//! key and its value: the header is never read on a lookup. The shift
//! gives the home slot in two shifts by one register, `(hash << s) >> s`
//! (the hash's low `log2(slots)` bits).
//!
//! ```text
//!   shard.read:  [ address of the view | amended << 6 | 64 - log2(slots) ]
//!                         |
//!                         v            (128-aligned, one allocation)
//!   ReadView:    [ header (32 B) | slot 0 | slot 1 | ... | slot n-1 | 3 padding slots ]
//!                   slot = { hash: u64, entry: { key: K, cell: *ValueNode }, inline value: V }
//! ```
//!
//! Before issue 12 a hit loaded the view box, then hashbrown's control
//! bytes, then the bucket holding the entry pointer, then the entry; then
//! one slot (hash and entry pointer) and the entry; now it is the slot
//! alone. Go keeps `amended` next to `m` in the `readOnly` struct, and
//! setting it allocates a new `readOnly` sharing `m`; here amending a view
//! is one store of the same pointer with the bit set, with no allocation.
//!
//! The view owns its slots' keys and values, except those of sealed slots
//! (moved into a newer view: see `entry`), and drops them when it is
//! freed. A view is built by moving entries in ([`ReadView::from_entries`]:
//! each is sealed, then its key and value move into the slot), never by
//! sharing them, so that a slot's inline value can be read at the slot's
//! own address.
//!
//! # Probing: Robin Hood, linear, with the hash in the slot
//!
//! A key's home slot is its hash's **low** bits (the directory picks the
//! shard by the top bits, so the low bits still spread a shard's keys).
//! Views are built once, so they are built with Robin Hood insertion: a key
//! displaced further from its home than the slot's occupant takes the slot.
//! (The placement is planned on a list of pointers first: an entry cannot
//! move once in a slot, since its cell may point to its own inline value.)
//! A lookup walks forward from the home slot, compares the stored hash (no
//! key is compared unless the full 64-bit hash matches), and stops at an
//! empty slot or at a slot whose occupant is closer to its own home than
//! the lookup is to its home: the key cannot be further on. At most 80 %
//! of the slots are used, so a hit usually finds its key in the home slot
//! or the next few.
//!
//! The hot path does not walk that loop: it compares the hashes of the
//! four slots from the home slot at once and takes the first match, as the
//! lowest set bit of a mask of the four compares (no branch per slot). The
//! last slot is followed by three empty padding slots, so the four are
//! always in bounds; a key that wrapped around past the last slot is found
//! by the walk. An empty slot carries a hash that no key whose group
//! reaches it can have (its low bits are its position plus half the slot
//! count: [`empty_hash`]), so a match is always an entry. Only a miss, a
//! key displaced four or more slots, or a 64-bit hash collision walks the
//! Robin Hood loop; when no slot of the four matched, the walk starts
//! after them, since the key is not among them.
//!
//! Choosing the match by `if` (the first matching index, or reference, in
//! a loop) compiled to a branch per slot: 0.62 mispredicted branches per
//! hit at 10K keys (callgrind), and 10K hits took twice as long; the mask
//! and its lowest set bit keep it at 0.075.
//!
//! On x86-64 the mask is one SSE2 compare of the four hashes' **low 32
//! bits** (`first_match`: the four 64-bit hashes loaded in two pairs
//! with `movsd` and `movhpd`, their low halves gathered by one `shufps`,
//! then `pcmpeqd` and `movmskps`), where the scalar form took a compare and a
//! `sete` per slot and three `lea`s to merge them. Low bits are enough:
//! an empty slot's hash is below the slot count (at most `2^32`, which a
//! view's build asserts), so its low 32 bits still differ from those of
//! every key whose group reaches it, and a match whose high bits differ
//! fails the key compare and walks from home, as a 64-bit collision does.
//! `lookup_cost snapmap` (callgrind; time: `perf stat` N minus 0 lookups,
//! four rounds alternated, AMD EPYC): 10K keys 68.3 → 62.4 instructions
//! and 8.0–11.3 → 6.2–7.0 ns per hit (medians 8.6 → 6.3); 100K keys
//! 71.9 → 66.0 and 13.2–18.4 → 10.2–12.1 ns (medians 13.7 → 10.4); the
//! same branches and mispredictions (5.25 and 0.075 per hit), so the time
//! is presumably the scalar compares' execution ports (this host has no
//! hardware counters to tell). 1M keys (speculative, below) unchanged.
//! The hashes were first gathered by four 32-bit loads and three unpacks
//! (seven instructions); the pairs and the `shufps` take five: 62.4 →
//! 59.4 instructions per hit at 10K keys, 66.0 → 63.0 at 100K, and
//! 6.27–7.54 → 6.14–7.36 ns at 10K (seven rounds alternated, 100M hits
//! minus none), 10.95–14.28 → 10.21–11.80 ns at 100K (three rounds).
//!
//! # Speculative probing in large maps
//!
//! The branch-free choice makes the key's compare wait for the whole group
//! (four 32-byte slots: two or three cache lines). With a branch on the
//! home slot first, the processor predicts a hit there (most keys sit in
//! their home slot) and compares the key as soon as that one line arrives.
//! In a map that fits in the caches the mispredictions cost more than the
//! wait; in one that does not, the wait is a cache miss. So `find_at`
//! takes a flag: read hits set it when the directory is at least
//! `directory::SPECULATE_DEPTH` deep (2,048 slots, about half a million
//! keys), a compare of a header field the lookup loads anyway; every other
//! lookup uses the branch-free choice. `lookup_cost` at 1M keys, 20M
//! lookups, best of three rounds alternated: 29–31.5 ns per hit with the
//! home-slot branch, 34–40 ns without. With the SSE2 compare
//! (`first_match`) the branch-free choice caught up on the AMD EPYC host:
//! 1M keys, six rounds alternated, 40.5–47.6 ns speculating against
//! 41.1–46.2 ns branch-free (`SPECULATE_DEPTH` raised past any map). The
//! speculation stays: it is no slower there, and the machine that measured
//! its gain was not available to measure it again.
//!
//! # Hash bits for the dirty table
//!
//! The dirty table stays a `hashbrown::HashTable`, which uses the top 7 bits
//! of the hash it is given as its control byte. Dirty tables are therefore
//! given [`table_hash`], the hash rotated by 32 bits, so keys in one shard
//! still differ in their control bytes.

use core::alloc::Layout;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ptr;

use crate::shard::entry::{Entry, EntryRef, Hashed, InlineEntry};
use crate::sync::Published;
use crate::sync::epoch::Guard;
use crate::twins::{Bug, injected};
use equivalent::Equivalent;

/// A shard's dirty table: entries shared with the read view, each with its
/// key's hash. The table does not own them (see `entry`'s "Reclamation"),
/// so dropping a table is one deallocation, whatever it holds.
pub(crate) type Table<K, V> = hashbrown::HashTable<Hashed<K, V>>;

/// The hash a dirty table is given (see the module docs).
#[inline]
pub(crate) fn table_hash(hash: u64) -> u64 {
    hash.rotate_left(32)
}

/// Rehashes a stored entry from its stored hash: never calls user code.
#[inline]
pub(crate) fn rehash<K, V>(entry: &Hashed<K, V>) -> u64 {
    table_hash(entry.hash)
}

/// Looks `key` up in a dirty table: the table's pointer to its entry.
#[inline]
pub(crate) fn find<'t, K, V, Q>(
    table: &'t Table<K, V>,
    hash: u64,
    key: &Q,
) -> Option<&'t EntryRef<K, V>>
where
    Q: ?Sized + Equivalent<K>,
{
    table
        .find(table_hash(hash), |e| {
            e.hash == hash && key.equivalent(e.key())
        })
        .map(|e| &e.entry)
}

/// One slot of a view: the key's full hash and the entry itself, with
/// room for its inline value (an [`InlineEntry`]). An empty slot's cell
/// says so ([`Entry::is_empty_at`]; its key and value are uninitialised),
/// and its hash is one that no key whose probe reaches it can have
/// ([`empty_hash`]), so a lookup that matches a hash has found an entry.
#[repr(C)]
pub(crate) struct Slot<K, V> {
    hash: u64,
    body: MaybeUninit<InlineEntry<K, V>>,
}

impl<K, V> Slot<K, V> {
    /// The slot's entry (maybe empty: check before reading its key).
    #[inline(always)]
    fn entry_ptr(&self) -> *const Entry<K, V> {
        self.body.as_ptr().cast::<Entry<K, V>>()
    }

    /// Whether the slot, number `at` of a view of `capacity` slots, holds
    /// no entry. The hash is compared first: an occupied slot rarely
    /// carries its position's empty hash, so the cell (an atomic, whose
    /// every load loom counts) is rarely read.
    #[inline(always)]
    fn is_empty(&self, at: usize, capacity: usize) -> bool {
        // SAFETY: a slot of a view we may read (we were given `&self`).
        self.hash == empty_hash(at, capacity) && unsafe { Entry::is_empty_at(self.entry_ptr()) }
    }

    /// The entry, which the caller knows to be there.
    ///
    /// # Safety
    ///
    /// The slot is not empty.
    #[inline(always)]
    unsafe fn entry(&self) -> &Entry<K, V> {
        // SAFETY: occupied slots hold an initialised entry, written before
        // the view was published and never moved.
        unsafe { &*self.entry_ptr() }
    }

    /// The slot's key and value, if it holds a live entry: one load of its
    /// cell, which masks to no value for an empty slot as for a deleted
    /// entry, with no test of the slot's hash for emptiness.
    #[inline(always)]
    fn live<'g>(&'g self, guard: &'g Guard) -> Option<(&'g K, &'g V)> {
        // SAFETY: the slot is borrowed for `'g`, as long as `guard` keeps
        // its view alive.
        let value = unsafe { Entry::load_at(self.entry_ptr(), guard) }?;
        // SAFETY: only an occupied slot's cell holds a value.
        Some((unsafe { self.entry() }.key(), value))
    }

    /// The entry, if the slot (number `at` of `capacity`) holds one.
    #[inline(always)]
    fn get(&self, at: usize, capacity: usize) -> Option<&Entry<K, V>> {
        // SAFETY: checked just before.
        (!self.is_empty(at, capacity)).then(|| unsafe { self.entry() })
    }
}

/// The hash an empty slot `at` of a view of `capacity` slots carries: its
/// low bits are `at + capacity / 2` (mod `capacity`). A lookup compares
/// the slots from its key's home `h` to `h + GROUP - 1`, and a key's hash
/// has `h` in its low bits, so it could match only if `at - h`, at most
/// `GROUP - 1`, were `capacity / 2` (mod `capacity`): views have at least
/// `2 * GROUP` slots.
#[inline]
fn empty_hash(at: usize, capacity: usize) -> u64 {
    ((at + capacity / 2) & (capacity - 1)) as u64
}

/// The position in `group` of the first slot whose hash is `hash`, or
/// `GROUP` if none is.
#[inline(always)]
fn first_match<K, V>(group: &[Slot<K, V>; GROUP], hash: u64) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{
            _mm_castpd_ps, _mm_castps_si128, _mm_castsi128_ps, _mm_cmpeq_epi32, _mm_load_sd,
            _mm_loadh_pd, _mm_movemask_ps, _mm_set1_epi32, _mm_shuffle_ps,
        };
        let at = |k: usize| core::ptr::from_ref(&group[k].hash).cast::<f64>();
        // SAFETY: SSE2 is part of the x86-64 baseline. Each load reads one
        // slot's hash (8 bytes, aligned). The hashes pass through `f64`
        // lanes only by moves (no arithmetic), which keep every bit
        // pattern, NaNs included: SSE2 has no integer load of a register's
        // upper half.
        let equal = unsafe {
            let (low, high) = (
                _mm_castpd_ps(_mm_loadh_pd(_mm_load_sd(at(0)), at(1))),
                _mm_castpd_ps(_mm_loadh_pd(_mm_load_sd(at(2)), at(3))),
            );
            // The low 32 bits of the four hashes.
            let hashes = _mm_castps_si128(_mm_shuffle_ps::<0b10_00_10_00>(low, high));
            _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(
                hashes,
                _mm_set1_epi32(hash as u32 as i32),
            )))
        };
        (equal as u32 | 1 << GROUP).trailing_zeros() as usize
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut matches = 1 << GROUP;
        for (k, slot) in group.iter().enumerate() {
            matches |= usize::from(slot.hash == hash) << k;
        }
        matches.trailing_zeros() as usize
    }
}

/// Slots a lookup compares at once, from the key's home slot: a hit is
/// found without a data-dependent branch per slot. `PAD` empty slots
/// follow the last one, so a group that starts near the end reads in
/// bounds; a key that wrapped around to the first slots is found by the
/// walk.
const GROUP: usize = 4;
const PAD: usize = GROUP - 1;

/// The first line of a view's allocation; its address is what the shard
/// publishes (tagged, see the module docs). 32 bytes, so that the slots
/// of a `u64 -> u64` map (32 bytes each) never straddle two cache lines.
#[repr(C, align(32))]
pub(crate) struct ViewHeader<K, V> {
    /// Entries in the view (live, deleted, expunged or sealed). Loom
    /// checks reads of it against the view's publication.
    len: Published<usize>,
    /// Whether the view's block came from `crate::arena` (else from the
    /// global allocator): [`ReadView::free`] gives it back the same way.
    from_arena: bool,
    /// The view owns its slots' keys and values (unless sealed).
    _entries: PhantomData<(K, V)>,
}

/// An immutable table published to lock-free readers: the header, then the
/// slots, in one 128-aligned allocation.
#[repr(C, align(128))]
pub(crate) struct ReadView<K, V> {
    header: ViewHeader<K, V>,
    slots: [Slot<K, V>],
}

/// A view's alignment (`repr(align)` above): the tag bits below it are
/// free in its address.
const VIEW_ALIGN: usize = 128;

/// The low bits of a view pointer: `64 - log2` of the slot count (the
/// shift that keeps a hash's low `log2` bits: `(hash << s) >> s` is the
/// home slot), then `amended`. Slot counts are at least 2, so the shift is
/// 1 to 63 and fits in six bits.
const SHIFT_BITS: usize = 63;
const AMENDED: usize = 64;
const TAG_BITS: usize = 127;

/// The fewest slots a view has: twice a group, so that no key's group
/// can match an empty slot's hash ([`empty_hash`]).
const MIN_CAPACITY: usize = 2 * GROUP;
/// The most slots a view has (`first_match`'s 32-bit compare).
const MAX_SLOTS: u64 = 1 << 32;

/// Most entries per slot: a view's slots are at most 80 % used.
const MAX_LOAD_NUMERATOR: usize = 4;
const MAX_LOAD_DENOMINATOR: usize = 5;

impl<K, V> ReadView<K, V> {
    /// A view over the entries of `table`, ready to publish (untagged but
    /// for its size: not amended): see [`ReadView::from_entries`].
    pub(crate) fn boxed(table: &Table<K, V>, huge_pages: bool) -> *mut ViewHeader<K, V> {
        Self::from_entries(table.iter().copied(), table.len(), huge_pages)
    }

    /// A view holding `entries` (`len` of them, each once), **moved** into
    /// its slots: each is sealed ([`Entry::seal_locked`]) and its key and
    /// value move into the slot ([`Entry::move_into`]). The sealed
    /// originals no longer own anything: the caller retires those that
    /// live on the heap (an old view's slots go with that view).
    ///
    /// The caller holds the lock of the shard whose tables hold the
    /// entries (or owns them outright), and none is expunged or sealed.
    pub(crate) fn from_entries(
        entries: impl IntoIterator<Item = Hashed<K, V>>,
        len: usize,
        huge_pages: bool,
    ) -> *mut ViewHeader<K, V> {
        let capacity = (len * MAX_LOAD_DENOMINATOR)
            .div_ceil(MAX_LOAD_NUMERATOR)
            .max(MIN_CAPACITY)
            .next_power_of_two();
        // `first_match` compares hashes' low 32 bits, which tell an empty
        // slot's hash (below the slot count) from a key's only up to 2^32
        // slots (128 GiB of 32-byte slots: never reached in practice).
        assert!(
            capacity as u64 <= MAX_SLOTS,
            "a read view of {capacity} slots is more than {MAX_SLOTS}"
        );
        // Where each entry goes, by Robin Hood insertion into a table of
        // plain pointers first: slots cannot be shuffled once they hold
        // entries (an inline value's cell points into its own slot).
        let mut places: Vec<Option<Hashed<K, V>>> = Vec::new();
        if len > 0 {
            places.resize_with(capacity, || None);
        }
        let mask = capacity - 1;
        let mut count = 0;
        for entry in entries {
            Self::place(&mut places, mask, entry);
            count += 1;
        }
        debug_assert_eq!(count, len, "a view gets exactly `len` entries");
        let total = capacity + PAD;
        let layout = Self::layout(total);
        let (base, from_arena) = crate::arena::alloc(layout, huge_pages);
        let base = base.as_ptr();
        let view = ptr::slice_from_raw_parts_mut(base.cast::<Slot<K, V>>(), total) as *mut Self;
        // SAFETY: `view` points to a fresh allocation of `Self`'s layout
        // for `total` slots; every slot's hash and cell are written (and an
        // occupied slot's whole entry) before anything reads it.
        unsafe {
            ptr::addr_of_mut!((*view).header).write(ViewHeader {
                len: Published::new(count),
                from_arena,
                _entries: PhantomData,
            });
            let slots = ptr::addr_of_mut!((*view).slots).cast::<Slot<K, V>>();
            for at in 0..total {
                let slot = slots.add(at);
                let body = ptr::addr_of_mut!((*slot).body).cast::<InlineEntry<K, V>>();
                match places.get(at).copied().flatten() {
                    Some(source) => {
                        ptr::addr_of_mut!((*slot).hash).write(source.hash);
                        let value = source.entry.seal_locked();
                        // SAFETY (of the move): the caller holds the lock
                        // (our contract), the entry was just sealed, once,
                        // and the slot is unshared.
                        source.entry.move_into(value, body);
                    }
                    None => {
                        ptr::addr_of_mut!((*slot).hash).write(empty_hash(at, capacity));
                        Entry::write_empty(body.cast::<Entry<K, V>>());
                    }
                }
            }
        }
        // SAFETY: initialised above, and not yet shared.
        let view_ref = unsafe { &*view };
        debug_assert_eq!(
            Layout::for_value(view_ref),
            layout,
            "the layout `ReadView::free` frees with is the one allocated"
        );
        Self::tag(view, capacity)
    }

    /// Drops the view at `view` (the pointer [`untag`] gives for a word
    /// [`ReadView::from_entries`] made) and frees its block, where it came
    /// from (`crate::arena` or the global allocator).
    ///
    /// # Safety
    ///
    /// The view is freed once, and nothing uses it any more: it was never
    /// published, or it has been unlinked and every reader that could
    /// reach it is gone (the epoch), or the caller owns the map.
    pub(crate) unsafe fn free(view: *mut Self) {
        // SAFETY: the view is alive until the drop below (our contract).
        let (layout, from_arena) =
            unsafe { (Layout::for_value(&*view), (*view).header.from_arena) };
        // SAFETY: dropped once (our contract); its `Drop` drops the keys and
        // values its unsealed slots own.
        unsafe { ptr::drop_in_place(view) };
        // SAFETY: `from_entries` allocated the block with this layout (it
        // checks `Layout::for_value` against it) and recorded its source;
        // freed once.
        unsafe {
            crate::arena::free(
                ptr::NonNull::new_unchecked(view.cast::<u8>()),
                layout,
                from_arena,
            )
        };
    }

    /// Robin Hood insertion of `entry` into the plan of a view's slots.
    fn place(places: &mut [Option<Hashed<K, V>>], mask: usize, entry: Hashed<K, V>) {
        let mut carried = entry;
        let mut at = carried.hash as usize & mask;
        let mut distance = 0;
        loop {
            let Some(held) = &mut places[at] else {
                places[at] = Some(carried);
                return;
            };
            let theirs = at.wrapping_sub(held.hash as usize) & mask;
            if theirs < distance {
                core::mem::swap(held, &mut carried);
                distance = theirs;
            }
            at = (at + 1) & mask;
            distance += 1;
        }
    }

    /// The allocation of a view with `total` slots, padding included (as
    /// [`ReadView::free`] will free it, from `Layout::for_value`: `repr(C)`
    /// puts the slots after the header, aligned, and pads the whole to the
    /// struct's alignment).
    fn layout(total: usize) -> Layout {
        let (layout, _) = Layout::new::<ViewHeader<K, V>>()
            .align_to(VIEW_ALIGN)
            .and_then(|header| header.extend(Layout::array::<Slot<K, V>>(total)?))
            .expect("a view's size fits in isize");
        layout.pad_to_align()
    }

    /// The published word for a view: its address with the home-slot
    /// shift of its slot count in the tag bits (not amended).
    fn tag(view: *mut Self, capacity: usize) -> *mut ViewHeader<K, V> {
        const { assert!(VIEW_ALIGN > TAG_BITS && SHIFT_BITS & AMENDED == 0) };
        debug_assert!(capacity >= MIN_CAPACITY && capacity.is_power_of_two());
        let shift = 64 - capacity.trailing_zeros() as usize;
        view.cast::<ViewHeader<K, V>>().map_addr(|a| a | shift)
    }

    /// The number of slots, the padding not counted (a power of two).
    #[inline]
    fn capacity(&self) -> usize {
        self.slots.len() - PAD
    }

    /// Whether `entry` lives in one of this view's slots (by address).
    #[inline]
    pub(crate) fn contains(&self, entry: &Entry<K, V>) -> bool {
        let range = self.slots.as_ptr_range();
        let at = ptr::from_ref(entry).cast::<Slot<K, V>>();
        range.start <= at && at < range.end
    }

    /// Heap bytes of the view (for retirement accounting).
    pub(crate) fn heap_bytes(&self) -> usize {
        Self::layout(self.slots.len()).size()
    }

    /// The number of entries (live, deleted or expunged).
    #[inline]
    pub(crate) fn len(&self) -> usize {
        *self.header.len.get()
    }

    /// Whether the view holds no entry.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries, in slot order.
    #[inline]
    pub(crate) fn iter(&self) -> ViewIter<'_, K, V> {
        self.published();
        ViewIter {
            slots: self.slots[..self.capacity()].iter().enumerate(),
            capacity: self.capacity(),
        }
    }

    /// Calls `f` with the hash, key and value of every entry that holds a
    /// value, in slot order (a snapshot's capture: `Shard::for_each_live`).
    /// One load of each slot's cell decides ([`Entry::load_at`]: an empty
    /// slot reads as no value), where [`ReadView::iter`] tests each slot's
    /// hash for emptiness and then loads the cell of an occupied one.
    #[inline]
    pub(crate) fn for_each_value<'g>(
        &'g self,
        guard: &'g Guard,
        mut f: impl FnMut(u64, &'g K, &'g V),
    ) {
        self.published();
        for slot in &self.slots[..self.capacity()] {
            prefetch_ahead(slot);
            if let Some((key, value)) = slot.live(guard) {
                f(slot.hash, key, value);
            }
        }
    }

    /// The number of slots a walk by position covers ([`ReadView::live_at`]).
    #[inline]
    pub(crate) fn positions(&self) -> usize {
        self.capacity()
    }

    /// The hash, key and value in slot `at` (below
    /// [`ReadView::positions`]), if the slot holds a live entry: one load
    /// of the slot's cell, which masks to no value for an empty slot as for
    /// a deleted one (as [`ReadView::for_each_value`] walks), with no test
    /// of the slot's hash for emptiness.
    #[inline]
    pub(crate) fn live_at<'g>(
        &'g self,
        at: usize,
        guard: &'g Guard,
    ) -> Option<(u64, &'g K, &'g V)> {
        self.published();
        let slot = &self.slots[..self.capacity()][at];
        let (key, value) = slot.live(guard)?;
        Some((slot.hash, key, value))
    }

    /// The slot holding `key`, whose hash is `hash`: a plain Robin Hood
    /// walk from its home slot, for a reload, which then reads the slot
    /// again by position ([`ReadView::live_at`]). Lookups take
    /// [`ReadView::find_at`]; a reload probing by `find` (the group of
    /// four compared at once, its entry's slot as the position) ran fewer
    /// instructions (10K keys, 1 % changed: 172 → 167 a key) but slower
    /// (92.7–94.6 → 104.4–105.9 µs, four rounds alternated): the group
    /// waits for all four slots, where the prefetched home slot is
    /// usually the answer. The walk compares a slot's hash before it tests
    /// the slot for emptiness (see `walk`): 2 instructions fewer a key, 2–4
    /// % less time at 10K keys (`src/reload.rs`).
    pub(crate) fn position_of<Q>(&self, hash: u64, key: &Q) -> Option<usize>
    where
        Q: ?Sized + Equivalent<K>,
    {
        self.published();
        let mask = self.capacity() - 1;
        // SAFETY: the slots are this view's, borrowed for as long as `self`,
        // and `mask` is its slot count minus one.
        unsafe {
            Self::walk(
                self.slots.as_ptr(),
                mask,
                hash,
                key,
                hash as usize & mask,
                0,
            )
        }
    }

    /// [`position_of`](Self::position_of) and the value its slot holds
    /// (`None` for a deleted entry), with no second bounds check of the
    /// position: the diff's probe.
    #[inline]
    pub(crate) fn position_and_value<'g, Q>(
        &'g self,
        hash: u64,
        key: &Q,
        guard: &'g Guard,
    ) -> Option<(usize, Option<&'g V>)>
    where
        Q: ?Sized + Equivalent<K>,
    {
        let at = self.position_of(hash, key)?;
        // SAFETY: `at` is a position the walk found, below the slot count,
        // so the slot is one of this view's (borrowed for `'g`, which
        // `guard` keeps alive), and it holds the key's entry.
        let slot = unsafe { &*self.slots.as_ptr().add(at) };
        Some((at, slot.live(guard).map(|(_, value)| value)))
    }

    /// Starts loading the home slot of `hash`, which a
    /// [`position_of`](Self::position_of) a little later will read: a
    /// reload's diff probes the view in its content's order, at random.
    #[inline]
    pub(crate) fn prefetch_home(&self, hash: u64) {
        let home = hash as usize & (self.capacity() - 1);
        crate::hint::prefetch(self.slots.as_ptr().wrapping_add(home));
    }

    /// Under loom: reads the header through its tracked cell, so that a
    /// reader that reached the view without a happens-before edge from its
    /// building is reported. Nothing in normal builds (a lookup must not
    /// touch the header's cache line).
    #[inline(always)]
    fn published(&self) {
        #[cfg(snapmap_loom)]
        let _ = self.header.len.get();
    }

    /// Looks `key` up (see the module docs, "Probing").
    #[inline]
    pub(crate) fn find<Q>(&self, hash: u64, key: &Q) -> Option<&Entry<K, V>>
    where
        Q: ?Sized + Equivalent<K>,
    {
        // The shift of the view word (`tag`): `64 - log2(slots)`.
        let shift = (self.capacity() as u64 - 1).leading_zeros();
        self.find_at(shift, hash, key, false)
    }

    /// [`find`](Self::find) with the view word's home-slot shift in the
    /// low six bits of `shift` (see [`shift`]), which a reader has from the
    /// word: the home slot is cheaper to get from it than from the slot
    /// count. `speculate` chooses how the group's match is taken (module
    /// docs, "Speculative probing"); the answer is the same either way.
    #[inline]
    pub(crate) fn find_at<Q>(
        &self,
        shift: u32,
        hash: u64,
        key: &Q,
        speculate: bool,
    ) -> Option<&Entry<K, V>>
    where
        Q: ?Sized + Equivalent<K>,
    {
        self.published();
        // `hash`'s low `log2(slots)` bits: two shifts by one register. The
        // shift is 1 to 63 (`tag`), and x86-64 shifts by the low six bits
        // of their count, so the mask below costs nothing there.
        let home = ((hash << (shift & 63)) >> (shift & 63)) as usize;
        debug_assert_eq!(home, hash as usize & (self.capacity() - 1));
        // SAFETY: `home + GROUP <= capacity + PAD + 1`, and the slots are
        // `capacity + PAD` long: `home <= capacity - 1`. An array reference
        // (not a slice) tells the compiler all four slots are readable, so
        // it may load every one without a branch.
        let group = unsafe { &*self.slots.as_ptr().add(home).cast::<[Slot<K, V>; GROUP]>() };
        // The first slot whose hash matches (an empty slot's never does:
        // `empty_hash`). Two ways to choose it, which give the same answer
        // (module docs, "Speculative probing"): in a large map
        // (`speculate`), the home slot by a branch first, so the processor
        // predicts it and compares its key before the rest of the group
        // arrives; otherwise without a branch per slot: from the last slot,
        // each match replaces the choice, so the first one wins.
        let first: Option<&Slot<K, V>> = if speculate && group[0].hash == hash {
            Some(&group[0])
        } else {
            // The index of the first match (`GROUP`: none), from a bit
            // mask of the compares: choosing among references or indices
            // by `if`, the compiler branches on each compare.
            group.get(first_match(group, hash))
        };
        let (from, distance) = match first {
            Some(slot) => {
                // SAFETY: an empty slot's hash matches no key probing it.
                let entry = unsafe { slot.entry() };
                if key.equivalent(entry.key()) {
                    return Some(entry);
                }
                // A 64-bit hash collision: walk every slot from home.
                (home, 0)
            }
            // No slot of the group holds the hash: the key is not among
            // them, so the walk resumes after the group, as far from home
            // as the walk from home would be there (`find_probing` goes
            // back to the first slot if the group ran into the padding).
            None => (home + GROUP, GROUP),
        };
        // SAFETY: the slots are this view's, borrowed for as long as
        // `self`, and `shift` is its word's. One call for both cases, given
        // the slots' start and the shift (not `self`, whose slot count the
        // hit path would then compute).
        unsafe { Self::find_probing(self.slots.as_ptr(), shift, hash, key, from, distance) }
    }

    /// The full Robin Hood probe: a miss, a key displaced past its group,
    /// or a 64-bit hash collision. The walk starts at slot `from`
    /// (masked), `distance` slots from the key's home.
    ///
    /// # Safety
    ///
    /// `slots` is the start of a view's slots, which live for `'v`, and
    /// the low six bits of `shift` are that view's home-slot shift (its
    /// word's tag).
    #[cold]
    unsafe fn find_probing<'v, Q>(
        slots: *const Slot<K, V>,
        shift: u32,
        hash: u64,
        key: &Q,
        mut from: usize,
        mut distance: usize,
    ) -> Option<&'v Entry<K, V>>
    where
        Q: ?Sized + Equivalent<K>,
    {
        // The slot count minus one: `log2(slots) = 64 - shift` low bits.
        let mask = (u64::MAX >> (shift & 63)) as usize;
        if from > mask + 1 {
            // The group read padding past the last slot: the slots it
            // stands for (the first ones, where the walk wraps) are next.
            distance -= from - (mask + 1);
            from = mask + 1;
        }
        // SAFETY: `slots` and `mask` are a view's, live for `'v` (our
        // contract); the walk returns one of its occupied positions.
        unsafe {
            let at = Self::walk(slots, mask, hash, key, from, distance)?;
            let slot: &'v Slot<K, V> = &*slots.add(at);
            Some(slot.entry())
        }
    }

    /// The Robin Hood walk for `key`, from slot `from` (masked),
    /// `distance` slots from its home: the position of its slot, if any.
    ///
    /// # Safety
    ///
    /// `slots` is the start of a view's slots, alive for the call, and
    /// `mask` is that view's slot count minus one.
    #[inline]
    unsafe fn walk<Q>(
        slots: *const Slot<K, V>,
        mask: usize,
        hash: u64,
        key: &Q,
        from: usize,
        mut distance: usize,
    ) -> Option<usize>
    where
        Q: ?Sized + Equivalent<K>,
    {
        let mut at = from & mask;
        // Half the slot count (a power of two).
        let half = mask.div_ceil(2);
        loop {
            // SAFETY: `at` is masked by the slot count minus one (the slot
            // count is a power of two), and the view has that many slots
            // from `slots`, alive for the call (our contract).
            let slot = unsafe { &*slots.add(at) };
            if slot.hash == hash {
                // An empty slot's hash has the low bits `at + capacity / 2`
                // (`empty_hash`), the key's `at - distance`: they can be
                // equal only if `distance` is `capacity / 2` (mod
                // `capacity`), so nearer than that the slot is occupied,
                // with no test (a hit at home, the reload's usual case).
                if distance >= half && slot.is_empty(at, mask + 1) {
                    return None;
                }
                // SAFETY: not empty, as just said.
                if key.equivalent(unsafe { slot.entry() }.key()) {
                    return Some(at);
                }
            } else if slot.is_empty(at, mask + 1) {
                return None;
            } else if at.wrapping_sub(slot.hash as usize) & mask < distance {
                // The occupant sits closer to its home than we are to ours:
                // Robin Hood insertion would have put the key here.
                return None;
            }
            at = (at + 1) & mask;
            distance += 1;
        }
    }
}

impl<K, V> Drop for ReadView<K, V> {
    /// Drops the keys and values the view owns: those of its occupied
    /// slots that were not sealed (a sealed slot's were moved to a newer
    /// view, and `Entry`'s drop leaves them).
    fn drop(&mut self) {
        if self.is_empty() {
            return;
        }
        let capacity = self.capacity();
        for (at, slot) in self.slots[..capacity].iter_mut().enumerate() {
            if slot.hash == empty_hash(at, capacity) {
                // SAFETY: a slot of the view we are dropping (`&mut`).
                if unsafe { Entry::<K, V>::is_empty_exclusive(slot.body.as_mut_ptr().cast()) } {
                    continue;
                }
            }
            if injected(Bug::DropSealedKey) {
                // SAFETY: none; the broken twin of the reclamation model:
                // drops the key of a sealed slot too, which its copy owns.
                unsafe { slot.entry().drop_key_even_if_sealed() };
                continue;
            }
            // SAFETY: an occupied slot holds an initialised entry, dropped
            // once, here (the view is being freed; `Entry`'s drop leaves a
            // sealed entry's key and value to its copy).
            unsafe { ptr::drop_in_place(slot.body.as_mut_ptr().cast::<Entry<K, V>>()) };
        }
    }
}

impl<K, V> ReadView<K, V> {
    /// The broken twin `Bug::FreeEntryWithoutEpoch`: drops the entries the
    /// view owns at once, and seals them so that its own drop, later,
    /// leaves them.
    ///
    /// # Safety
    ///
    /// None: only the twin calls it, for loom to report the early drop.
    pub(crate) unsafe fn drop_entries_now(&self) {
        let capacity = self.capacity();
        for (at, slot) in self.slots[..capacity].iter().enumerate() {
            if let Some(entry) = slot.get(at, capacity) {
                if !entry.is_moved() {
                    // SAFETY: none (see above).
                    unsafe { entry.drop_key_even_if_sealed() };
                    entry.seal_for_twin();
                }
            }
        }
    }
}

/// How many slots ahead of itself a walk of a view asks for (2 KiB of
/// `u64 -> u64` slots). A view is a few dozen KiB in a block of its own,
/// and the hardware's stream prefetcher stops at every 4 KiB page, so a
/// walk without this waits on memory at the start of each page: a pass
/// over 1M entries took 13.7-14.5 ms without, 9.3-9.8 ms with 64 slots
/// ahead (10.5-11.1 with 32, 9.5-10.0 with 128; papaya 8.5-10.5 in the
/// same runs; `ARCHITECTURE.md` §3, "Iteration").
const PREFETCH_AHEAD: usize = 64;

/// Starts loading the slot [`PREFETCH_AHEAD`] slots after `slot`, which
/// a walk of its view will want soon. Past the view's end it asks for
/// memory the walk will not read, which costs a load and nothing else.
#[inline(always)]
fn prefetch_ahead<K, V>(slot: &Slot<K, V>) {
    // `wrapping_add`: the address may lie past the view's allocation.
    crate::hint::prefetch(ptr::from_ref(slot).wrapping_add(PREFETCH_AHEAD));
}

/// The entries of a view, from [`ReadView::iter`].
pub(crate) struct ViewIter<'v, K, V> {
    slots: core::iter::Enumerate<core::slice::Iter<'v, Slot<K, V>>>,
    capacity: usize,
}

impl<K, V> Default for ViewIter<'_, K, V> {
    fn default() -> Self {
        ViewIter {
            slots: [].iter().enumerate(),
            capacity: MIN_CAPACITY,
        }
    }
}

impl<'v, K, V> Iterator for ViewIter<'v, K, V> {
    /// An entry and its key's hash (from the slot: the entry holds none).
    type Item = (u64, &'v Entry<K, V>);

    #[inline]
    fn next(&mut self) -> Option<(u64, &'v Entry<K, V>)> {
        let capacity = self.capacity;
        self.slots.by_ref().find_map(|(at, slot)| {
            prefetch_ahead(slot);
            slot.get(at, capacity).map(|entry| (slot.hash, entry))
        })
    }

    #[inline]
    fn fold<B, F>(self, init: B, mut f: F) -> B
    where
        F: FnMut(B, Self::Item) -> B,
    {
        let capacity = self.capacity;
        self.slots.fold(init, |acc, (at, slot)| {
            prefetch_ahead(slot);
            match slot.get(at, capacity) {
                Some(entry) => f(acc, (slot.hash, entry)),
                None => acc,
            }
        })
    }
}

impl<'v, K, V> ViewIter<'v, K, V> {
    /// The entries with their hashes, as table pointers (for a rebuild,
    /// split or merge).
    #[inline]
    pub(crate) fn hashed(self) -> impl Iterator<Item = Hashed<K, V>> + 'v
    where
        K: 'v,
        V: 'v,
    {
        self.map(|(hash, entry)| Hashed {
            hash,
            entry: EntryRef::to(entry),
        })
    }
}

/// Splits a tagged view pointer into the view (a pointer carrying its slot
/// count) and the amended flag.
#[inline]
pub(crate) fn untag<K, V>(tagged: *mut ViewHeader<K, V>) -> (*mut ReadView<K, V>, bool) {
    let tag = tagged.addr() & TAG_BITS;
    let total = (1usize << (64 - (tag & SHIFT_BITS))) + PAD;
    let base = tagged.map_addr(|a| a & !TAG_BITS);
    (
        ptr::slice_from_raw_parts_mut(base.cast::<Slot<K, V>>(), total) as *mut ReadView<K, V>,
        tag & AMENDED != 0,
    )
}

/// The home-slot shift of the view of the published word `tagged`,
/// `64 - log2(slots)`, for [`ReadView::find_at`] (cheaper for a reader
/// than decoding the slot count into a mask: about four instructions). It
/// is in the low six bits of the result; the bits above are the word's
/// (its users mask the shift, which x86-64 shifts do for free, so it is
/// not masked here).
#[inline]
pub(crate) fn shift<K, V>(tagged: *mut ViewHeader<K, V>) -> u32 {
    const { assert!(SHIFT_BITS == 63) };
    tagged.addr() as u32
}

/// A published view word with the amended bit set (derived from the word
/// itself, so the pointer keeps the allocation's provenance).
#[inline]
pub(crate) fn with_amended<K, V>(tagged: *mut ViewHeader<K, V>) -> *mut ViewHeader<K, V> {
    tagged.map_addr(|a| a | AMENDED)
}
