//! The read view: a shard's immutable table, read without locks.
//!
//! A [`ReadView`] is Go's `readOnly.m`: a hash table from key to entry that
//! is never modified after it is published. Writers replace the whole view
//! (promotion, `clear`, compaction) and retire the old one through the
//! epoch; readers load the current view and probe it under a guard.
//!
//! # One allocation, found from one word
//!
//! A view is **one allocation**: a header line, then the slots, each the
//! entry's full hash beside the pointer to the entry. The shard's view
//! pointer carries, in its low bits, the `amended` flag and the slot count
//! as the shift `s = 64 - log2(slots)` (the allocation is 128-aligned, so
//! seven bits are free; a view has at least two slots, so `s` is 1 to 63
//! and fits in six). A reader therefore gets the slots' address, their
//! number and the flag from **one atomic load**, and its next load is the
//! slot that holds the key: the header is never read on a lookup. The
//! shift gives the home slot in two shifts by one register,
//! `(hash << s) >> s` (the hash's low `log2(slots)` bits); the log2 the
//! word held before cost four more instructions per hit to turn into a
//! mask.
//!
//! ```text
//!   shard.read:  [ address of the view | amended << 6 | 64 - log2(slots) ]
//!                         |
//!                         v            (128-aligned, one allocation)
//!   ReadView:    [ header: len ..... | slot 0 | slot 1 | ... | slot n-1 ]
//!                                       slot = { hash: u64, entry: *Entry }
//! ```
//!
//! Before this layout a hit loaded the view box, then hashbrown's control
//! bytes, then the bucket holding the entry pointer (three dependent loads,
//! usually three cache misses at 1M keys); now it is one. Go keeps
//! `amended` next to `m` in the `readOnly` struct, and setting it allocates
//! a new `readOnly` sharing `m`; here amending a view is one store of the
//! same pointer with the bit set, with no allocation.
//!
//! # Probing: Robin Hood, linear, with the hash in the slot
//!
//! A key's home slot is its hash's **low** bits (the directory picks the
//! shard by the top bits, so the low bits still spread a shard's keys).
//! Views are built once, so they are built with Robin Hood insertion: a key
//! displaced further from its home than the slot's occupant takes the slot.
//! A lookup walks forward from the home slot, compares the stored hash (no
//! entry is touched unless the full 64-bit hash matches), and stops at an
//! empty slot or at a slot whose occupant is closer to its own home than
//! the lookup is to its home: the key cannot be further on. At most 80 %
//! of the slots are used, so a hit usually finds its key in the home slot
//! or the next few.
//!
//! The hot path does not walk that loop: it compares the hashes of the
//! four slots from the home slot at once, without a branch per slot, and
//! takes the first match (the first three slots are mirrored after the last
//! one, so the four are always in bounds): a conditional move of the
//! matching slot's entry address per slot, then one load of the entry
//! pointer (a read hit in a map of about half a million keys or more
//! chooses with a branch per slot instead: see "Speculative probing"
//! below). Only a miss, a key displaced four or more slots, or a 64-bit
//! hash collision walks the Robin Hood loop; when no slot of the four
//! matched, the walk starts after them (four slots from home), since the
//! key is not among them. Walking it on every hit cost a branch misprediction per lookup
//! (callgrind's branch simulation at 10K keys: 0.87 mispredicted
//! conditional branches per hit, against 0.01 with hashbrown's groups) and
//! made 10K-key hits 2.4× slower than with hashbrown; the group compare
//! brings the mispredictions back to the figures in `docs/ARCHITECTURE.md`.
//!
//! # Speculative probing in large maps
//!
//! How the group's first match is chosen decides how soon the entry's
//! load can start. Without a branch (conditional moves), the entry's
//! address depends on all four compares, so its load waits for the whole
//! group, which spans two cache lines in three groups of four; with a
//! branch per slot, the processor predicts the slot (usually the home
//! slot) and loads its entry at once, and pays a misprediction when the
//! key sits elsewhere. In a map that fits in the caches the
//! mispredictions cost more than the wait; in one that does not, the
//! wait is a cache miss and speculation wins. So `find_at` takes a flag:
//! read hits set it when the directory is at least
//! `directory::SPECULATE_DEPTH` deep (2,048 slots, about half a million
//! keys), a compare of a header field the lookup loads anyway; every other
//! lookup (writes, slow paths) uses the branch-free choice. Measured with
//! `lookup_cost` (best of three runs of 20M lookups minus none, several
//! rounds alternated, same session):
//!
//! | keys | branch-free | branches | adaptive |
//! |---|---|---|---|
//! | 10K | 5.9–6.1 ns | 10.9–11.3 ns | 5.8–6.2 ns |
//! | 30K | 9.1–9.8 ns | 10.1–11.5 ns | |
//! | 100K | 18.0 ns | 20.5–21.9 ns | |
//! | 300K | 21.6–22.7 ns | 21.0–21.8 ns | 20.0–22.0 ns |
//! | 1M | 34.2–38.6 ns (median 36.9) | 28.2–32.2 ns (median 30.7) | 30.6–32.5 ns |
//!
//! Measured and dropped: a prefetch of the home slot's entry before the
//! branch-free choice (1M 32.9–37.4 ns, median 35.7, against 34.2–38.6;
//! 100K 17.4 against 18.0 ns; 3 to 7 more instructions per hit); the same
//! for the first two slots (no faster at 1M, 9.5 ns at 10K); the home slot
//! tested by a branch before the branch-free choice of the other three
//! (11.4 ns at 10K); `core::hint::select_unpredictable` on the entry
//! pointers, which keeps conditional moves and saves the pointer's load
//! (needs Rust 1.88; 1M no faster, 33–46 ns).
//!
//! # Hash bits for the dirty table
//!
//! The dirty table stays a `hashbrown::HashTable`, which uses the top 7 bits
//! of the hash it is given as its control byte. Dirty tables are therefore
//! given [`table_hash`], the hash rotated by 32 bits, so keys in one shard
//! still differ in their control bytes.

use core::alloc::Layout;
use core::marker::PhantomData;
use core::ptr;

use crate::shard::entry::{Entry, EntryRef, Hashed};
use crate::sync::Published;
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

/// One slot of a view: the entry's full hash and the entry (`None`: empty).
#[repr(C)]
pub(crate) struct Slot<K, V> {
    hash: u64,
    entry: Option<EntryRef<K, V>>,
}

impl<K, V> Clone for Slot<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for Slot<K, V> {}

/// Slots a lookup compares at once, from the key's home slot (four slots,
/// one cache line's worth): a hit is found without a data-dependent branch
/// per slot. The first `GROUP - 1` slots are mirrored after the last one,
/// so a group that starts near the end reads the wrapped slots in bounds.
const GROUP: usize = 4;
const MIRROR: usize = GROUP - 1;

/// The first line of a view's allocation; its address is what the shard
/// publishes (tagged, see the module docs). 16-aligned, so that no slot
/// straddles two cache lines.
#[repr(C, align(16))]
pub(crate) struct ViewHeader<K, V> {
    /// Entries in the view (live, deleted or expunged). Loom checks reads
    /// of it against the view's publication.
    len: Published<usize>,
    _entries: PhantomData<EntryRef<K, V>>,
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

/// The fewest slots a view has: the home-slot shift (`64 - log2`) must
/// not be 64.
const MIN_CAPACITY: usize = 2;

/// Most entries per slot: a view's slots are at most 80 % used.
const MAX_LOAD_NUMERATOR: usize = 4;
const MAX_LOAD_DENOMINATOR: usize = 5;

impl<K, V> ReadView<K, V> {
    /// A view over the entries of `table`, ready to publish (untagged but
    /// for its size: not amended). The table is dropped (it owns no entry).
    pub(crate) fn boxed(table: Table<K, V>) -> *mut ViewHeader<K, V> {
        Self::from_entries(table.iter().copied(), table.len())
    }

    /// A view over `entries` (`len` of them, each once).
    pub(crate) fn from_entries(
        entries: impl IntoIterator<Item = Hashed<K, V>>,
        len: usize,
    ) -> *mut ViewHeader<K, V> {
        let capacity = (len * MAX_LOAD_DENOMINATOR)
            .div_ceil(MAX_LOAD_NUMERATOR)
            .max(MIN_CAPACITY)
            .next_power_of_two();
        let total = capacity + MIRROR;
        let layout = Self::layout(total);
        // SAFETY: the layout has a non-zero size (the header is not empty).
        let base = unsafe { std::alloc::alloc(layout) };
        if base.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        let view = ptr::slice_from_raw_parts_mut(base.cast::<Slot<K, V>>(), total) as *mut Self;
        // SAFETY: `view` points to a fresh allocation of `Self`'s layout
        // for `total` slots; every field is written before any read, and
        // the slots are plain data (no drop glue runs on the
        // uninitialised memory: `write` does not drop).
        unsafe {
            ptr::addr_of_mut!((*view).header).write(ViewHeader {
                len: Published::new(0),
                _entries: PhantomData,
            });
            let slots = ptr::addr_of_mut!((*view).slots).cast::<Slot<K, V>>();
            for i in 0..total {
                slots.add(i).write(Slot {
                    hash: 0,
                    entry: None,
                });
            }
        }
        // SAFETY: initialised above, and not yet shared.
        let view_ref = unsafe { &mut *view };
        let mut count = 0;
        for entry in entries {
            view_ref.insert(entry);
            count += 1;
        }
        debug_assert_eq!(count, len, "a view gets exactly `len` entries");
        // The mirror: slot `capacity + j` repeats slot `j` (wrapped again
        // for the smallest tables).
        for j in 0..MIRROR {
            view_ref.slots[capacity + j] = view_ref.slots[j & (capacity - 1)];
        }
        view_ref.header.len = Published::new(count);
        debug_assert_eq!(
            Layout::for_value(&*view_ref),
            layout,
            "the layout `Box` frees with is the one allocated"
        );
        Self::tag(view, capacity)
    }

    /// The allocation of a view with `total` slots, mirror included (as
    /// `Box` will free it: `repr(C)` puts the slots after the header,
    /// aligned, and pads the whole to the struct's alignment).
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

    /// The number of slots, the mirror not counted (a power of two).
    #[inline]
    fn capacity(&self) -> usize {
        self.slots.len() - MIRROR
    }

    /// Robin Hood insertion of an entry not yet in the view (building
    /// only, before the mirror is written).
    fn insert(&mut self, entry: Hashed<K, V>) {
        let mask = self.capacity() - 1;
        let mut carried = Slot {
            hash: entry.hash,
            entry: Some(entry.entry),
        };
        let mut at = carried.hash as usize & mask;
        let mut distance = 0;
        loop {
            let slot = &mut self.slots[at];
            if slot.entry.is_none() {
                *slot = carried;
                return;
            }
            let theirs = at.wrapping_sub(slot.hash as usize) & mask;
            if theirs < distance {
                core::mem::swap(slot, &mut carried);
                distance = theirs;
            }
            at = (at + 1) & mask;
            distance += 1;
        }
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
            slots: self.slots[..self.capacity()].iter(),
        }
    }

    /// The number of slots a walk by position covers ([`ReadView::at`]).
    #[inline]
    pub(crate) fn positions(&self) -> usize {
        self.capacity()
    }

    /// The hash and entry in slot `at` (below [`ReadView::positions`]),
    /// if the slot holds one.
    #[inline]
    pub(crate) fn at(&self, at: usize) -> Option<(u64, &Entry<K, V>)> {
        self.published();
        let slot = &self.slots[..self.capacity()][at];
        slot.entry.as_deref().map(|entry| (slot.hash, entry))
    }

    /// The slot holding `key`, whose hash is `hash`: a plain Robin Hood
    /// walk from its home slot, for a reload, which then reads the slot
    /// again by position ([`ReadView::at`]). Lookups take
    /// [`ReadView::find_at`].
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
        // SAFETY: `home + GROUP <= capacity + MIRROR + 1`, and the slots
        // are `capacity + MIRROR` long: `home <= capacity - 1`. An array
        // reference (not a slice) tells the compiler all four slots are
        // readable, so it may load every one without a branch.
        let group = unsafe { &*self.slots.as_ptr().add(home).cast::<[Slot<K, V>; GROUP]>() };
        // The entry of the first slot whose hash matches. Two ways to
        // choose it, which give the same answer (see the module docs,
        // "Speculative probing"): in a large map (`speculate`), by the
        // slot's entry pointer itself, which the compiler turns into a
        // branch per slot, so the processor predicts the slot and starts
        // loading its entry before the compares (and the group's second
        // cache line) arrive; otherwise without a branch per slot: from the
        // last slot, each match replaces the choice, so the first one wins
        // (a conditional move of the entry's address each, then one load).
        // Either way a hit nearly always finds its key within `GROUP` of
        // its home at 80 % load.
        let first: Option<&Entry<K, V>> = if speculate {
            let mut first: Option<EntryRef<K, V>> = None;
            for slot in group.iter().rev() {
                if slot.hash == hash {
                    first = slot.entry;
                }
            }
            // SAFETY: the pointer was read from this view's slots, and the
            // view is borrowed for as long as `self` (its entries outlive
            // it: see `entry`'s "Reclamation").
            first.map(|entry| unsafe { entry.get() })
        } else {
            let mut first: &Option<EntryRef<K, V>> = const { &None };
            for slot in group.iter().rev() {
                first = if slot.hash == hash {
                    &slot.entry
                } else {
                    first
                };
            }
            first.as_deref()
        };
        let (from, distance) = match first {
            Some(entry) => {
                if key.equivalent(entry.key()) {
                    return Some(entry);
                }
                // A 64-bit hash collision: walk every slot from home.
                (home, 0)
            }
            // No slot of the group holds the hash (or the first that does
            // is empty, for a hash of 0, and the key could only have been
            // before it): the key is not among them, so the walk resumes
            // after the group, as far from home as the walk from home
            // would be there.
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
        from: usize,
        distance: usize,
    ) -> Option<&'v Entry<K, V>>
    where
        Q: ?Sized + Equivalent<K>,
    {
        // The slot count minus one: `log2(slots) = 64 - shift` low bits.
        let mask = (u64::MAX >> (shift & 63)) as usize;
        // SAFETY: `slots` and `mask` are a view's, live for `'v` (our
        // contract); the walk returns one of its positions.
        unsafe {
            let at = Self::walk(slots, mask, hash, key, from, distance)?;
            let slot: &'v Slot<K, V> = &*slots.add(at);
            slot.entry.as_deref()
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
        loop {
            // SAFETY: `at` is masked by the slot count minus one (the slot
            // count is a power of two), and the view has that many slots
            // from `slots`, alive for the call (our contract).
            let slot = unsafe { &*slots.add(at) };
            let entry = slot.entry.as_ref()?;
            if slot.hash == hash {
                let entry: &Entry<K, V> = entry;
                if key.equivalent(entry.key()) {
                    return Some(at);
                }
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

/// The entries of a view, from [`ReadView::iter`].
pub(crate) struct ViewIter<'v, K, V> {
    slots: core::slice::Iter<'v, Slot<K, V>>,
}

impl<K, V> Default for ViewIter<'_, K, V> {
    fn default() -> Self {
        ViewIter { slots: [].iter() }
    }
}

impl<'v, K, V> Iterator for ViewIter<'v, K, V> {
    /// An entry and its key's hash (from the slot: the entry holds none).
    type Item = (u64, &'v EntryRef<K, V>);

    #[inline]
    fn next(&mut self) -> Option<(u64, &'v EntryRef<K, V>)> {
        self.slots
            .by_ref()
            .find_map(|slot| slot.entry.as_ref().map(|entry| (slot.hash, entry)))
    }

    #[inline]
    fn fold<B, F>(self, init: B, mut f: F) -> B
    where
        F: FnMut(B, Self::Item) -> B,
    {
        self.slots
            .fold(init, |acc, slot| match slot.entry.as_ref() {
                Some(entry) => f(acc, (slot.hash, entry)),
                None => acc,
            })
    }
}

impl<'v, K, V> ViewIter<'v, K, V> {
    /// The entries with their hashes, copied out (for a rebuild, split or
    /// merge).
    #[inline]
    pub(crate) fn hashed(self) -> impl Iterator<Item = Hashed<K, V>> + 'v
    where
        K: 'v,
        V: 'v,
    {
        self.map(|(hash, &entry)| Hashed { hash, entry })
    }
}

/// Splits a tagged view pointer into the view (a pointer carrying its slot
/// count) and the amended flag.
#[inline]
pub(crate) fn untag<K, V>(tagged: *mut ViewHeader<K, V>) -> (*mut ReadView<K, V>, bool) {
    let tag = tagged.addr() & TAG_BITS;
    let total = (1usize << (64 - (tag & SHIFT_BITS))) + MIRROR;
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
