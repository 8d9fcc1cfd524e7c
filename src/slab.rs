//! Dense blocks for shard heads: the one word a read hit loads from a
//! shard (its view word), kept apart from the shard and packed with the
//! other shards' heads.
//!
//! Why: a read hit goes directory slot → shard head → view slot → entry.
//! When the head was the first line of the shard's own 256-byte, 128-aligned
//! allocation, the heads of a 1M-key map (about 2,300 shards) spread over
//! 300 KB of lines that held nothing else a lookup needs, and the random
//! lookups' view slots and entries pushed them out of the 2 MB second-level
//! cache: the hop to the head was a miss of its own. Packed 16 bytes apart
//! (four to a line), the same heads take 37 KB and stay cached. A scratch
//! prototype of the read path (same directory, same views and entries, only
//! where the head lives) measured it before the change: 1M keys, best of
//! three runs of 20M lookups, three rounds alternated: 45.1–51.3 ns with
//! the head in the shard's allocation, 38.5–40.7 ns with heads from this
//! slab.
//!
//! A head is allocated when its shard is made (a split, a merge, the map's
//! construction) and freed when the shard is freed: after the epoch, for a
//! retired shard, so a reader that reached the head through a directory
//! slot is done with it before it is reused. Blocks come from chunks of
//! [`CHUNK`] blocks that are never returned to the system; a freed block
//! goes on a free list, and the next head of any map in the process takes
//! it. What the process keeps is therefore at most 16 bytes per shard
//! alive at its peak (a 1M-key map: about 37 KB), against at least 296
//! bytes per shard that do come back.
//!
//! Loom builds, `--cfg snapmap_no_pool` builds (the CI's AddressSanitizer
//! and Miri runs) and heads whose layout is larger than a block (loom's
//! atomics are) allocate each head with the global allocator, so that a
//! use after free is reported rather than hidden by a reuse. The slab's
//! own tests run with it on.

use core::alloc::Layout;
use core::ptr::NonNull;

use crate::sync::unmodelled::Mutex;

/// Bytes per block (and their alignment): two pointers.
const BLOCK: usize = 16;

/// Blocks per chunk: 4 KiB of heads, allocated at once.
const CHUNK: usize = 256;

/// Whether `T` is served from the slab in this build.
const fn slab_serves<T>() -> bool {
    !cfg!(any(snapmap_loom, snapmap_no_pool))
        && size_of::<T>() <= BLOCK
        && align_of::<T>() <= BLOCK
        && size_of::<T>() > 0
}

/// Free blocks. A raw pointer is not `Send`; the list only holds
/// addresses of blocks nobody uses, handed out under the mutex.
struct FreeList(Vec<NonNull<u8>>);

// SAFETY: the pointers are to unused blocks of leaked chunks, valid for
// the whole process and owned by whoever pops them (under the mutex).
unsafe impl Send for FreeList {}

static FREE: Mutex<FreeList> = Mutex::new(FreeList(Vec::new()));

fn free_list() -> std::sync::MutexGuard<'static, FreeList> {
    // A `Vec` push or pop leaves the list whole if it panics.
    FREE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A block holding `value`, owned by the caller until [`free`].
pub(crate) fn alloc<T>(value: T) -> NonNull<T> {
    if !slab_serves::<T>() {
        return NonNull::from(Box::leak(Box::new(value)));
    }
    let block = {
        let mut free = free_list();
        match free.0.pop() {
            Some(block) => block,
            None => {
                let layout = Layout::from_size_align(BLOCK * CHUNK, BLOCK)
                    .expect("a chunk's layout is valid");
                // SAFETY: the layout is not zero-sized.
                let chunk = unsafe { std::alloc::alloc(layout) };
                let Some(chunk) = NonNull::new(chunk) else {
                    std::alloc::handle_alloc_error(layout)
                };
                // Pushed from the end, so that pops hand out blocks in
                // address order: the heads of shards made one after another
                // share lines.
                free.0.reserve(CHUNK);
                for i in (1..CHUNK).rev() {
                    // SAFETY: `i * BLOCK` is inside the chunk.
                    free.0.push(unsafe { chunk.add(i * BLOCK) });
                }
                chunk
            }
        }
    };
    let block = block.cast::<T>();
    // SAFETY: the block is `BLOCK` bytes, aligned to `BLOCK`, unused (it
    // came off the free list or a fresh chunk), and `T` fits
    // (`slab_serves`).
    unsafe { block.write(value) };
    block
}

/// Drops the value in `block` and frees the block.
///
/// # Safety
///
/// `block` came from [`alloc`] of the same `T`, is freed once, and
/// nothing uses it any more.
pub(crate) unsafe fn free<T>(block: NonNull<T>) {
    if !slab_serves::<T>() {
        // SAFETY: `alloc` made it with `Box` (same `T`), freed once.
        drop(unsafe { Box::from_raw(block.as_ptr()) });
        return;
    }
    // SAFETY: the block holds a `T` written by `alloc`, dropped once.
    unsafe { block.drop_in_place() };
    free_list().0.push(block.cast());
}

#[cfg(all(test, not(any(snapmap_loom, snapmap_no_pool))))]
mod tests {
    use super::{BLOCK, alloc, free};

    /// Blocks are distinct while held, aligned, and reused once freed.
    #[test]
    fn blocks_are_distinct_aligned_and_reused() {
        let blocks: Vec<_> = (0..600u64).map(|i| alloc([i, !i])).collect();
        let mut addresses: Vec<usize> = blocks.iter().map(|b| b.as_ptr().addr()).collect();
        assert!(addresses.iter().all(|a| a % BLOCK == 0));
        addresses.sort_unstable();
        addresses.dedup();
        assert_eq!(addresses.len(), 600, "a block handed out twice");
        for (i, b) in blocks.iter().enumerate() {
            // SAFETY: written by `alloc` above, not freed yet.
            assert_eq!(unsafe { b.read() }, [i as u64, !(i as u64)]);
        }
        for b in blocks {
            // SAFETY: each was allocated above and is freed once.
            unsafe { free(b) };
        }
        // Other tests may take some of the freed blocks meanwhile (and free
        // others), but not all 600 in this moment: the next 600 include
        // blocks freed above.
        let again: Vec<_> = (0..600u64).map(|i| alloc([i, i])).collect();
        let reused = again
            .iter()
            .filter(|b| addresses.binary_search(&b.as_ptr().addr()).is_ok())
            .count();
        assert!(reused > 0, "no freed block was reused");
        for b in again {
            // SAFETY: allocated just above, freed once.
            unsafe { free(b) };
        }
    }

    /// A value that needs dropping is dropped by `free`.
    #[test]
    fn free_drops_the_value() {
        let counted = std::sync::Arc::new(());
        let block = alloc(std::sync::Arc::clone(&counted));
        assert_eq!(std::sync::Arc::strong_count(&counted), 2);
        // SAFETY: allocated above, freed once.
        unsafe { free(block) };
        assert_eq!(std::sync::Arc::strong_count(&counted), 1);
    }
}
