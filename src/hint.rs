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

/// A transparent huge page on x86-64 (and the usual arm64 setting): the
/// size and alignment of the regions that ask for them (snapshot regions,
/// `crate::arena`).
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// Asks the kernel to back `len` bytes at `ptr` (2 MiB-aligned, ours
/// alone) with transparent huge pages. Advice only: where huge pages are
/// disabled or unavailable, nothing changes but the page size.
pub(crate) fn advise_huge_pages(ptr: core::ptr::NonNull<u8>, len: usize) {
    advise(ptr, len, true);
}

/// Takes back [`advise_huge_pages`] before the range goes back to the
/// allocator: the advice belongs to the address range, not to our use of
/// it, and the allocator may hand the range to anything next (without
/// this, a default-configured map grown after a `huge_pages` map was
/// dropped, in the same process, had its largest insert wait 5.5 ms for
/// huge-page faults in three runs of five, against 0.7–0.8 ms). Linux has
/// no "neutral" advice: this one asks for ordinary pages, which is what a
/// range gets anyway where huge pages are only given on request (the
/// `madvise` setting).
pub(crate) fn unadvise_huge_pages(ptr: core::ptr::NonNull<u8>, len: usize) {
    advise(ptr, len, false);
}

/// `madvise` with `MADV_HUGEPAGE` (`huge`) or `MADV_NOHUGEPAGE`.
#[cfg(all(target_os = "linux", not(miri), not(snapmap_loom)))]
fn advise(ptr: core::ptr::NonNull<u8>, len: usize, huge: bool) {
    let advice = if huge {
        libc::MADV_HUGEPAGE
    } else {
        libc::MADV_NOHUGEPAGE
    };
    // SAFETY: the range is one allocation of ours (not yet shared, or about
    // to be freed); either advice changes how its pages are backed, never
    // their content, and fails harmlessly (ignored) if unsupported.
    unsafe {
        libc::madvise(ptr.as_ptr().cast(), len, advice);
    }
}

/// [`advise`] where there is no such advice: nothing.
#[cfg(not(all(target_os = "linux", not(miri), not(snapmap_loom))))]
fn advise(_: core::ptr::NonNull<u8>, _: usize, _: bool) {}
