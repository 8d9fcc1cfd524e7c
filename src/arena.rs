//! Blocks for the read views of large maps, carved from 2 MiB regions that
//! the kernel is asked to back with transparent huge pages.
//!
//! Why: a read hit at 1M keys goes directory → shard head → view slot, and
//! the slot is a random place in about 68 MB of views. With 4 KiB pages
//! that is 17,000 pages, far more than the second-level TLB holds (about
//! 1,500 entries), so nearly every hit also walks the page table. In 2 MiB
//! pages the same views are 34 pages, which the TLB holds. Measured before
//! this module existed, by giving the whole heap huge pages
//! (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`), `lookup_cost snapmap 1000000`
//! (40M hits minus none, three rounds): 17.9–22.8 ns per hit with 4 KiB
//! pages, 7.0–13.7 ns with huge pages (`scc::HashIndex`: 18.8–20.4 and
//! 13.7–15.5 ns). The snapshot pieces already live in such regions
//! (`crate::snapshot::frozen::Region`).
//!
//! Which views: those of maps built with `Builder::huge_pages(true)`, only
//! while the process's read views hold at least [`THRESHOLD`] bytes (below
//! it they fit the TLB's reach anyway, and a small map should not cost a
//! 2 MiB huge page), and only views of [`MIN_BLOCK`] to [`MAX_BLOCK`]
//! bytes. Every other view comes from the global allocator. The view
//! records where its block came from (`ReadView`'s header), so that it is
//! freed the same way.
//!
//! Why it is not the default: the kernel backs a huge page when it is
//! first touched, and that fault lands on whichever insert writes the
//! first view into a new region. On the benchmark machine the first few
//! such faults took about 0.2 ms (zeroing 2 MiB) and later ones 5–5.5 ms
//! (the kernel compacting memory to find a free huge page; a scratch loop
//! touching fresh 2 MiB regions, 20 in a row), and growing to 5M keys from
//! two threads, the largest single insert's work went from 0.74–1.9 ms to
//! 5.5–7.5 ms (`cargo bench -p snapmap-benches --bench growth -- growth`,
//! five runs each). Reads of a large map gain, in return: criterion, two
//! rounds alternated, 1M keys, one thread: read hits 26.0/26.5 →
//! 19.1/20.0 ns, the 99 % read mix 39.9/37.3 → 28.2/23.8 ns, updates
//! 316/278 → 275/252 ns (`scc::HashIndex` 21.5–25.5 ns and 26–31 ns,
//! papaya 221–261 ns for updates, same runs). A map that is loaded once
//! and then read, like most configuration, pays the faults once, at load.
//! Memory, too: a region stays while one view in it lives, so a map that
//! grew from empty keeps part of the views it outgrew (1M `u64` keys: 106
//! heap bytes per entry, against 68.1 with the global allocator;
//! `BENCHMARKS.md`, "Heap bytes per entry").
//!
//! How: one size class per block size (a view's layout size: its slot
//! count and its slot type decide it). A class carves blocks from its
//! newest region in address order and keeps freed blocks on a free list,
//! which the next allocation of that class takes first. A region whose
//! blocks are all free again goes back to the global allocator (but one,
//! kept as a spare for the next class that needs a region while the arena
//! is in use), so memory
//! comes back after a map shrinks or goes away, as far as the views still
//! alive let it: a region holding one live view stays. All of it under one mutex: views are made by promotions,
//! splits and merges, not by reads or plain writes.
//!
//! Loom builds and `--cfg snapmap_no_pool` builds (the CI's
//! AddressSanitizer and Miri runs) never use it: every view comes from the
//! global allocator, so that a use after free is reported rather than
//! hidden by a reuse.

use core::alloc::Layout;
use core::ptr::NonNull;
use std::collections::HashMap;

use crate::sync::unmodelled::{AtomicUsize, Mutex, Ordering};

/// Bytes per region, and their alignment.
pub(crate) const REGION: usize = crate::hint::HUGE_PAGE;

/// Live view bytes in the process (from either source) from which new
/// views come from the arena.
const THRESHOLD: usize = 8 << 20;

/// The smallest block the arena serves (a view of 128 `u64 -> u64` slots
/// is about 4.3 KiB).
const MIN_BLOCK: usize = 4 << 10;

/// The largest block the arena serves: at least four per region.
const MAX_BLOCK: usize = REGION / 4;

/// Bytes of read views alive in the process, wherever they came from.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Whether the arena is compiled in.
const ENABLED: bool = !cfg!(any(snapmap_loom, snapmap_no_pool, miri));

/// One size class.
struct Class {
    /// Block size: a multiple of the blocks' alignment.
    size: usize,
    /// Freed blocks, taken before carving new ones.
    free: Vec<NonNull<u8>>,
    /// The region being carved and the offset of its next block.
    carving: Option<(NonNull<u8>, usize)>,
    /// Per region of the class (by its address): the region's pointer and
    /// the number of its blocks handed out and not freed.
    live: HashMap<usize, (NonNull<u8>, usize)>,
}

struct Arena {
    classes: Vec<Class>,
    /// One region with no block in use, kept for the next class that needs
    /// a region (so that a class whose last view comes and goes does not
    /// allocate, advise and fault in 2 MiB each time).
    spare: Option<NonNull<u8>>,
}

// SAFETY: the pointers are to blocks of regions the arena owns; they are
// only handed out or taken back under the mutex.
unsafe impl Send for Arena {}

static ARENA: Mutex<Arena> = Mutex::new(Arena {
    classes: Vec::new(),
    spare: None,
});

fn arena() -> std::sync::MutexGuard<'static, Arena> {
    // The arena's state is whole between statements that could panic (a
    // `Vec` or `HashMap` that fails to grow aborts rather than unwinds).
    ARENA
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn region_layout() -> Layout {
    Layout::from_size_align(REGION, REGION).expect("a region's layout is valid")
}

/// A block for a view of `layout`, and whether it came from the arena
/// (`false`: from the global allocator), which it may only when the view's
/// map asked for `huge_pages`. Counts the view's bytes as live.
pub(crate) fn alloc(layout: Layout, huge_pages: bool) -> (NonNull<u8>, bool) {
    // Blocks sit `size` apart from a region's start: a padded layout whose
    // alignment divides the region's keeps every one aligned.
    debug_assert!(layout.size() % layout.align() == 0 && REGION % layout.align() == 0);
    // Relaxed (here and below): a heuristic's input; it orders nothing.
    let before = LIVE.fetch_add(layout.size(), Ordering::Relaxed);
    if ENABLED
        && huge_pages
        && before >= THRESHOLD
        && (MIN_BLOCK..=MAX_BLOCK).contains(&layout.size())
    {
        return (alloc_block(layout.size()), true);
    }
    // SAFETY: a view's layout is never zero-sized (its header is not).
    let block = unsafe { std::alloc::alloc(layout) };
    let Some(block) = NonNull::new(block) else {
        std::alloc::handle_alloc_error(layout)
    };
    (block, false)
}

/// Frees a block [`alloc`] gave for `layout`, with the `from_arena` it
/// returned.
///
/// # Safety
///
/// `block` came from [`alloc`] with this `layout`, which said
/// `from_arena`; it is freed once, and nothing uses it any more.
pub(crate) unsafe fn free(block: NonNull<u8>, layout: Layout, from_arena: bool) {
    // Relaxed: as in `alloc`.
    LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    if from_arena {
        free_block(block, layout.size());
    } else {
        // SAFETY: allocated by the global allocator with `layout` (our
        // contract), freed once.
        unsafe { std::alloc::dealloc(block.as_ptr(), layout) };
    }
}

fn alloc_block(size: usize) -> NonNull<u8> {
    let mut guard = arena();
    let arena = &mut *guard;
    let class = match arena.classes.iter().position(|c| c.size == size) {
        Some(at) => &mut arena.classes[at],
        None => {
            arena.classes.push(Class {
                size,
                free: Vec::new(),
                carving: None,
                live: HashMap::new(),
            });
            arena.classes.last_mut().expect("just pushed")
        }
    };
    let block = match class.free.pop() {
        Some(block) => block,
        None => {
            let (region, offset) = match class.carving {
                Some((region, offset)) if offset + size <= REGION => (region, offset),
                _ => (arena.spare.take().unwrap_or_else(new_region), 0),
            };
            class.carving = Some((region, offset + size));
            // SAFETY: `offset + size <= REGION`: inside the region.
            unsafe { region.add(offset) }
        }
    };
    let at = region_of(block);
    // A block carved just now (its region is being carved, and listed from
    // its first block on), or one freed before, whose region is listed: a
    // region leaves `live` only with all its blocks free, and its blocks
    // leave the free list with it.
    let entry = class.live.entry(at).or_insert_with(|| {
        let (region, _) = class.carving.expect("a new region is being carved");
        debug_assert_eq!(region.as_ptr().addr(), at);
        (region, 0)
    });
    entry.1 += 1;
    block
}

fn free_block(block: NonNull<u8>, size: usize) {
    let mut guard = arena();
    let arena = &mut *guard;
    let class = arena
        .classes
        .iter_mut()
        .find(|c| c.size == size)
        .expect("a block from the arena belongs to its size's class");
    let at = region_of(block);
    let (region, live) = class
        .live
        .get_mut(&at)
        .expect("a block from the arena belongs to a region of its class");
    *live -= 1;
    let region = *region;
    if *live > 0 {
        class.free.push(block);
        return;
    }
    // Every block of this region is free: forget its blocks (and stop
    // carving it), then keep it as the spare or give it back.
    class.live.remove(&at);
    class.free.retain(|b| region_of(*b) != at);
    if class.carving.is_some_and(|(r, _)| r == region) {
        class.carving = None;
    }
    // Relaxed: a heuristic's input, as in `alloc`.
    let in_use = LIVE.load(Ordering::Relaxed) >= THRESHOLD;
    if in_use && arena.spare.is_none() {
        arena.spare = Some(region);
        return;
    }
    // The arena is idle (the process's views are below the threshold):
    // the spare goes too.
    let spare = if in_use { None } else { arena.spare.take() };
    for region in core::iter::once(region).chain(spare) {
        crate::hint::unadvise_huge_pages(region, REGION);
        // SAFETY: allocated by `new_region` with this layout; none of its
        // blocks is in use or listed (the spare's were dropped from the
        // lists when it became the spare), and each is freed once: this one
        // left `live` above (a region is listed once), the spare left
        // `spare`.
        unsafe { std::alloc::dealloc(region.as_ptr(), region_layout()) };
    }
}

fn new_region() -> NonNull<u8> {
    let layout = region_layout();
    // SAFETY: the layout is not zero-sized.
    let region = unsafe { std::alloc::alloc(layout) };
    let Some(region) = NonNull::new(region) else {
        std::alloc::handle_alloc_error(layout)
    };
    crate::hint::advise_huge_pages(region, REGION);
    region
}

/// The address of the region holding `block`.
fn region_of(block: NonNull<u8>) -> usize {
    block.as_ptr().addr() & !(REGION - 1)
}

#[cfg(all(test, not(any(snapmap_loom, snapmap_no_pool, miri))))]
mod tests {
    use super::{REGION, alloc, alloc_block, arena, free, free_block, region_of};
    use core::alloc::Layout;

    /// Block size used only by these tests (so no other class interferes):
    /// 41 lines of 128 bytes, 399 blocks to a region.
    const SIZE: usize = 41 * 128;

    /// The number of regions the test class holds blocks of.
    fn regions() -> usize {
        let arena = arena();
        arena
            .classes
            .iter()
            .find(|c| c.size == SIZE)
            .map_or(0, |c| c.live.len())
    }

    /// Blocks are distinct while held, aligned, inside one region each,
    /// and hold what is written to them; the regions go back once every
    /// block is free.
    #[test]
    fn blocks_are_distinct_and_regions_come_back() {
        let per_region = REGION / SIZE;
        let count = per_region * 2 + 7;
        let blocks: Vec<_> = (0..count).map(|_| alloc_block(SIZE)).collect();
        let mut addresses: Vec<usize> = blocks.iter().map(|b| b.as_ptr().addr()).collect();
        assert!(addresses.iter().all(|a| a % 128 == 0));
        assert!(
            addresses
                .iter()
                .all(|&a| a + SIZE <= (a & !(REGION - 1)) + REGION),
            "a block crosses its region's end"
        );
        addresses.sort_unstable();
        addresses.dedup();
        assert_eq!(addresses.len(), count, "a block handed out twice");
        assert_eq!(regions(), 3);
        for (i, b) in blocks.iter().enumerate() {
            // SAFETY: a block of `SIZE` bytes, ours until freed.
            unsafe { b.as_ptr().cast::<u64>().write(i as u64) };
        }
        for (i, b) in blocks.iter().enumerate() {
            // SAFETY: written just above.
            assert_eq!(unsafe { b.as_ptr().cast::<u64>().read() }, i as u64);
        }
        // Free the first region's blocks: that region goes, the others stay.
        let first = region_of(blocks[0]);
        let (gone, kept): (Vec<_>, Vec<_>) =
            blocks.into_iter().partition(|b| region_of(*b) == first);
        for b in gone {
            free_block(b, SIZE);
        }
        assert_eq!(regions(), 2);
        // A freed block of a remaining region is taken before a new one.
        let one = kept[0];
        free_block(one, SIZE);
        let again = alloc_block(SIZE);
        assert_eq!(again, one, "the freed block is reused first");
        free_block(again, SIZE);
        for b in kept.into_iter().skip(1) {
            free_block(b, SIZE);
        }
        assert_eq!(regions(), 0, "every region comes back");
    }

    /// Views too small for the arena come from the global allocator.
    #[test]
    fn small_views_use_the_global_allocator() {
        let layout = Layout::from_size_align(1024, 128).expect("valid");
        let (block, from_arena) = alloc(layout, true);
        assert!(!from_arena);
        // SAFETY: allocated just above with this layout, freed once.
        unsafe { free(block, layout, from_arena) };
    }
}
