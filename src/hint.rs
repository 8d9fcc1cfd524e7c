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
