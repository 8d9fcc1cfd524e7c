//! A per-thread cache of freed small blocks: value nodes and entries that
//! the epoch has finished with are kept for the thread's next allocation
//! of the same size, instead of going back to the system allocator.
//!
//! Why: every update allocates a value node and retires the one it
//! replaced, and the epoch frees retired nodes in bursts (a bag of 64 at a
//! time, up to 8 bags in one collection). glibc's per-thread cache holds 7
//! blocks of a size, so most of a burst overflows into its shared bins,
//! and the next allocations (and the occasional consolidation that a large
//! request triggers) pay for it: about 360 of an update's 780 instructions
//! were `malloc` and `free` (callgrind, 10K keys; ARCHITECTURE §4). A
//! block taken from this cache costs a thread-local access and two loads.
//!
//! What the cache holds, and when:
//!
//! - only blocks whose layout is one of [`CLASSES`] sizes (8 to 64 bytes)
//!   with an alignment of exactly 8 ([`class_of`], decided at compile
//!   time): every block of a class was allocated, by this module or by
//!   `Box`, with that exact layout, so any of them may be freed by either
//!   (`Box::from_raw` or [`free`]);
//! - only blocks the epoch has released (`reclaim::retire`'s closure) or
//!   that were never published: nothing here changes when memory may be
//!   reused, only who reuses it;
//! - at most [`CLASS_BYTES`] (16 KiB) per class and thread; beyond that,
//!   blocks go back to the allocator, and when the thread exits, all of
//!   them do.
//!
//! Loom builds and builds with `--cfg snapmap_no_pool` skip the cache:
//! each block goes straight back to the allocator. The CI runs
//! AddressSanitizer and Miri over the map's tests that way, so that a use
//! after free is reported rather than hidden by a reuse, and runs this
//! module's own tests under both with the cache on.

use core::alloc::Layout;
use core::cell::UnsafeCell;
use core::ptr::NonNull;

/// The block sizes cached: `8 * (class + 1)` bytes.
const CLASSES: usize = 8;

/// Bytes cached per class and thread: 2,048 blocks of 8 bytes, 256 of 64.
/// A collection frees up to 512 retired blocks at once (8 bags of 64), so
/// the smaller classes absorb a whole burst.
const CLASS_BYTES: u32 = 16 * 1024;

/// Whether the cache is in use in this build.
const ENABLED: bool = !cfg!(any(snapmap_loom, snapmap_no_pool));

/// The class of `T`'s layout, if its blocks are cached.
const fn class_of<T>() -> Option<usize> {
    let (size, align) = (size_of::<T>(), align_of::<T>());
    if ENABLED && align == 8 && size > 0 && size % 8 == 0 && size / 8 <= CLASSES {
        Some(size / 8 - 1)
    } else {
        None
    }
}

/// The layout of a block of `class`.
fn layout(class: usize) -> Layout {
    // SAFETY: 8 is a power of two and the size is a small multiple of it.
    unsafe { Layout::from_size_align_unchecked(8 * (class + 1), 8) }
}

/// A free block: its first word links to the next free block of its class.
struct Free {
    next: Option<NonNull<Free>>,
}

/// One thread's cache: a list of free blocks per class.
struct Cache {
    heads: [Option<NonNull<Free>>; CLASSES],
    lens: [u32; CLASSES],
}

impl Drop for Cache {
    fn drop(&mut self) {
        for class in 0..CLASSES {
            let mut next = self.heads[class].take();
            while let Some(block) = next {
                // SAFETY: every block in a list is a free block of `class`,
                // allocated with `layout(class)` and owned by the list.
                unsafe {
                    next = block.as_ref().next;
                    std::alloc::dealloc(block.as_ptr().cast(), layout(class));
                }
                #[cfg(all(test, not(any(snapmap_loom, snapmap_no_pool))))]
                // Relaxed: a test counter.
                tests::RELEASED_AT_EXIT.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

// A std thread-local in every build, not `crate::sync::thread_local`:
// loom builds never reach it (the cache is off there, `ENABLED`), and
// freeing a block into it is an allocator's step, not a protocol step.
std::thread_local! {
    static CACHE: UnsafeCell<Cache> = const {
        UnsafeCell::new(Cache {
            heads: [None; CLASSES],
            lens: [0; CLASSES],
        })
    };
}

/// Starts loading the cache line of the block the next allocation of
/// this class will take. Blocks come back from the epoch long after they
/// were last touched, so the next `boxed` would otherwise miss the cache
/// twice in a row on it (reading its link, then writing the value), with
/// nothing else to overlap: at 1M keys an update's other misses (the view
/// slot, the entry, the old value) come before it and the value's CAS
/// waits for it.
#[inline(always)]
fn prefetch(block: Option<NonNull<Free>>) {
    if let Some(block) = block {
        crate::hint::prefetch(block.as_ptr());
    }
}

/// Moves `value` into a block of its own: a cached one if the thread has
/// one of its class, otherwise a new one. Free it with [`free`] or with
/// `Box::from_raw`.
#[inline]
pub(crate) fn boxed<T>(value: T) -> *mut T {
    let Some(class) = (const { class_of::<T>() }) else {
        return Box::into_raw(Box::new(value));
    };
    let cached = CACHE
        .try_with(|cache| {
            // SAFETY: the cache is this thread's, and no other borrow of it
            // is live (every access is one of these short closures, which
            // call nothing that could reach the cache again).
            let cache = unsafe { &mut *cache.get() };
            let block = cache.heads[class]?;
            // SAFETY: a free block of this class, owned by the list.
            let next = unsafe { block.as_ref().next };
            cache.heads[class] = next;
            cache.lens[class] -= 1;
            prefetch(next);
            Some(block)
        })
        .ok()
        .flatten();
    match cached {
        Some(block) => {
            let ptr = block.as_ptr().cast::<T>();
            // SAFETY: the block has `T`'s exact layout (its class) and is
            // ours now; writing initialises it.
            unsafe { ptr.write(value) };
            ptr
        }
        None => Box::into_raw(Box::new(value)),
    }
}

/// Drops the `T` at `ptr` and frees its block (into the thread's cache if
/// there is room).
///
/// # Safety
///
/// `ptr` came from [`boxed`] or `Box::into_raw`, nothing else uses it, and
/// it is freed once.
#[inline]
pub(crate) unsafe fn free<T>(ptr: *mut T) {
    let Some(class) = (const { class_of::<T>() }) else {
        // SAFETY: forwarded from our caller.
        drop(unsafe { Box::from_raw(ptr) });
        return;
    };
    // SAFETY: forwarded from our caller: the value is ours to drop.
    unsafe { core::ptr::drop_in_place(ptr) };
    let block = ptr.cast::<Free>();
    let kept = CACHE
        .try_with(|cache| {
            // SAFETY: as in `boxed`.
            let cache = unsafe { &mut *cache.get() };
            if cache.lens[class] >= CLASS_BYTES / (8 * (class as u32 + 1)) {
                return false;
            }
            // SAFETY: the block is ours, at least 8 bytes and 8-aligned (its
            // class), and holds nothing now: it becomes a list link.
            unsafe {
                block.write(Free {
                    next: cache.heads[class],
                });
                cache.heads[class] = Some(NonNull::new_unchecked(block));
            }
            cache.lens[class] += 1;
            true
        })
        .unwrap_or(false);
    if !kept {
        // SAFETY: allocated with `T`'s layout, which is `layout(class)`.
        unsafe { std::alloc::dealloc(block.cast(), layout(class)) };
    }
}

#[cfg(all(test, not(any(snapmap_loom, snapmap_no_pool))))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Blocks freed by a cache's `Drop` (a thread's exit), in any thread.
    pub(super) static RELEASED_AT_EXIT: AtomicUsize = AtomicUsize::new(0);

    /// The cached blocks of `class` on this thread.
    fn cached(class: usize) -> u32 {
        // SAFETY: as in `boxed`: a short access on this thread.
        CACHE.with(|cache| unsafe { (*cache.get()).lens[class] })
    }

    #[test]
    fn a_freed_block_is_the_next_allocation_of_its_size() {
        let a = boxed(1u64);
        // SAFETY: from `boxed`, freed once.
        unsafe { free(a) };
        assert_eq!(cached(0), 1);
        // Another class does not take it.
        let other = boxed([7u64; 3]);
        assert_eq!(cached(0), 1);
        let b = boxed(2u64);
        assert_eq!(a, b, "the freed 8-byte block was not reused");
        assert_eq!(cached(0), 0);
        // SAFETY: from `boxed`, read while ours, freed once (`Box` may free
        // a cached block: it has `u64`'s layout).
        unsafe {
            assert_eq!(*b, 2);
            drop(Box::from_raw(b));
            assert_eq!(*other, [7; 3]);
            free(other);
        }
    }

    #[test]
    fn a_class_keeps_at_most_its_bytes() {
        let blocks: Vec<*mut [u64; 4]> = (0..1000).map(|i| boxed([i; 4])).collect();
        for &p in &blocks {
            // SAFETY: from `boxed`, each freed once.
            unsafe { free(p) };
        }
        assert_eq!(cached(3), CLASS_BYTES / 32);
        let again: Vec<*mut [u64; 4]> = (0..1000).map(|i| boxed([i; 4])).collect();
        assert_eq!(cached(3), 0);
        let reused = again.iter().filter(|p| blocks.contains(p)).count();
        assert!(
            reused >= (CLASS_BYTES / 32) as usize,
            "{reused} blocks reused"
        );
        for &p in &again {
            // SAFETY: from `boxed`, each freed once.
            unsafe { free(p) };
        }
    }

    #[test]
    fn values_are_dropped_once_and_unsupported_layouts_bypass_the_cache() {
        struct Counted(Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                // Relaxed: a test counter, read after the drops on this thread.
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let drops = Arc::new(AtomicUsize::new(0));
        assert_eq!(const { class_of::<Counted>() }, Some(0));
        for _ in 0..100 {
            let p = boxed(Counted(drops.clone()));
            // SAFETY: from `boxed`, freed once.
            unsafe { free(p) };
        }
        // Relaxed: the drops ran on this thread.
        assert_eq!(drops.load(Ordering::Relaxed), 100);
        assert_eq!(Arc::strong_count(&drops), 1);
        // Not cached: zero-sized, alignment 4 or 16, larger than 64 bytes.
        assert_eq!(const { class_of::<()>() }, None);
        assert_eq!(const { class_of::<[u32; 4]>() }, None);
        assert_eq!(const { class_of::<u128>() }, None);
        assert_eq!(const { class_of::<[u64; 9]>() }, None);
        let big = boxed([1u64; 9]);
        // SAFETY: from `boxed` (a plain `Box` here), freed once.
        unsafe { free(big) };
    }

    #[test]
    fn a_thread_frees_its_cache_when_it_exits() {
        // Relaxed: a counter; `join` below orders the thread's exit before
        // the second load.
        let before = RELEASED_AT_EXIT.load(Ordering::Relaxed);
        std::thread::spawn(|| {
            let blocks: Vec<*mut u64> = (0..10).map(boxed).collect();
            for p in blocks {
                // SAFETY: from `boxed`, each freed once.
                unsafe { free(p) };
            }
            assert_eq!(cached(0), 10);
        })
        .join()
        .unwrap();
        // Relaxed: after `join`, as above.
        assert!(RELEASED_AT_EXIT.load(Ordering::Relaxed) - before >= 10);
    }
}
