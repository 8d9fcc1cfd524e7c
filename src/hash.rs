//! The default hasher.

use core::hash::BuildHasher;
use std::hash::DefaultHasher;

#[cfg(not(snapmap_loom))]
type Inner = std::hash::RandomState;
// Under loom every execution must hash the same way (loom replays
// schedules), so the seed is fixed.
#[cfg(snapmap_loom)]
type Inner = core::hash::BuildHasherDefault<DefaultHasher>;

/// The default [`BuildHasher`]: std's `RandomState` (SipHash-1-3 with a
/// random per-map seed), which resists HashDoS from untrusted keys.
///
/// It is a newtype so that the crate can change the algorithm without
/// breaking your code. For trusted keys, a faster hasher (for example
/// `foldhash` or `ahash`) can be supplied with
/// [`SnapMap::with_hasher`](crate::SnapMap::with_hasher):
///
/// ```
/// use snapmap::SnapMap;
/// use std::hash::{BuildHasherDefault, DefaultHasher};
///
/// // Any `BuildHasher` works; this one is std's, with a fixed seed.
/// let map: SnapMap<u64, u64, BuildHasherDefault<DefaultHasher>> =
///     SnapMap::with_hasher(BuildHasherDefault::default());
/// map.insert(1, 2);
/// assert_eq!(map.get(&1), Some(2));
/// ```
#[derive(Clone, Debug, Default)]
pub struct DefaultHashBuilder(Inner);

impl DefaultHashBuilder {
    /// A new hasher with a fresh random seed.
    pub fn new() -> Self {
        Self::default()
    }
}

impl BuildHasher for DefaultHashBuilder {
    type Hasher = DefaultHasher;

    #[inline]
    fn build_hasher(&self) -> DefaultHasher {
        self.0.build_hasher()
    }
}

/// The top `bits` bits of `hash` (0 when `bits` is 0), the index of its
/// slot in a table of `2^bits` slots: how the directory, a snapshot's slot
/// table and a reload's index of the views all place a hash. Two shifts, so
/// that `bits == 0` needs no branch (a single shift by 64 would overflow).
#[inline(always)]
pub(crate) fn top_bits(hash: u64, bits: u32) -> usize {
    debug_assert!(bits <= 63);
    ((hash >> (63 - bits)) >> 1) as usize
}
