//! Hints to the processor that change no result, only timing.

/// Starts loading the cache line at `p` into the first-level cache.
///
/// Any address is allowed, also one past the end of an allocation or
/// dangling: a prefetch reads nothing the program sees and never faults.
/// Callers that compute the address ahead of where they are use
/// `wrapping_add`, so the computation itself is defined too. A no-op on
/// targets other than x86-64, and under Miri.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: SSE is part of the x86-64 baseline, and a prefetch reads
    // nothing the program sees and never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = p;
}

/// Asks the kernel to back `len` bytes at `ptr` (2 MiB-aligned, ours
/// alone) with transparent huge pages. Advice only: where huge pages are
/// disabled or unavailable, nothing changes but the page size.
#[cfg(all(target_os = "linux", not(miri), not(snapmap_loom)))]
pub(crate) fn advise_huge_pages(ptr: core::ptr::NonNull<u8>, len: usize) {
    // SAFETY: the range is one allocation of ours, not yet shared;
    // `madvise` with `MADV_HUGEPAGE` changes how its pages are backed,
    // never their content, and fails harmlessly (ignored) if unsupported.
    unsafe {
        libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_HUGEPAGE);
    }
}

/// [`advise_huge_pages`] where there is no such advice: nothing.
#[cfg(not(all(target_os = "linux", not(miri), not(snapmap_loom))))]
pub(crate) fn advise_huge_pages(_: core::ptr::NonNull<u8>, _: usize) {}

/// Takes back [`advise_huge_pages`] before the range goes back to the
/// allocator: the advice belongs to the address range, not to our use of
/// it, and the allocator may hand the range to anything next (without
/// this, a default-configured map grown after a `huge_pages` map was
/// dropped, in the same process, had its largest insert wait 5.5 ms for
/// huge-page faults in three runs of five, against 0.7–0.8 ms). Linux has
/// no "neutral" advice: this one asks for ordinary pages, which is what a
/// range gets anyway where huge pages are only given on request (the
/// `madvise` setting).
#[cfg(all(target_os = "linux", not(miri), not(snapmap_loom)))]
pub(crate) fn unadvise_huge_pages(ptr: core::ptr::NonNull<u8>, len: usize) {
    // SAFETY: as in `advise_huge_pages`: one allocation of ours, about to
    // be freed; the advice changes how its pages are backed, not content.
    unsafe {
        libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_NOHUGEPAGE);
    }
}

/// [`unadvise_huge_pages`] where there is no such advice: nothing.
#[cfg(not(all(target_os = "linux", not(miri), not(snapmap_loom))))]
pub(crate) fn unadvise_huge_pages(_: core::ptr::NonNull<u8>, _: usize) {}
