//! A map's options: the [`Builder`] that collects them, their defaults and
//! limits, and their validation into [`Options`] (or a [`BuildError`]).
//!
//! Nothing here knows the map type: `Builder::build`, the one step that
//! turns valid options into a `SnapMap`, is in `crate::builder`, so that
//! the map can name its builder without the builder naming the map.

use core::fmt;
use core::marker::PhantomData;

use crate::directory::MAX_DEPTH_LIMIT;
use crate::hash::DefaultHashBuilder;

/// The initial (and minimum) shard count unless the builder says otherwise.
pub const DEFAULT_SHARDS: usize = 16;

/// The number of entries past which a shard's dirty table splits the shard,
/// unless the builder says otherwise. Chosen by measurement (`cargo bench
/// -p snapmap-benches --bench capacity`; the figures are in the `migrate` module's docs): the
/// smallest capacity at which read hits are as fast as with larger shards,
/// so that the work one operation can do stays small.
pub const DEFAULT_SHARD_CAPACITY: usize = 512;

/// The most shards (directory slots) a map may use unless the builder says
/// otherwise: `2^20`, an 8 MiB directory.
pub const DEFAULT_MAX_SHARDS: usize = 1 << 20;

/// The most initial shards [`Builder::shards`] accepts: `2^20`, about
/// 750 MiB of empty shards ([`EMPTY_SHARD_BYTES`] each). Initial shards are
/// allocated at once (the map can still split up to `max_shards` as it
/// grows, allocating shards only as keys arrive).
pub const MAX_INITIAL_SHARDS: usize = 1 << 20;

/// The largest [`Builder::shard_capacity`]: `2^30` entries. A shard's dirty
/// rebuild copies the whole shard, so one operation on a shard that large
/// would copy a billion entries; for a map that should not split, set
/// `max_shards` equal to `shards` instead.
pub const MAX_SHARD_CAPACITY: usize = 1 << 30;

/// Memory of one empty shard (its lock, read view, head and directory
/// slot), the cost of each initial shard of [`Builder::shards`]: an upper
/// bound of both what it asks of the allocator (about 660 bytes in two
/// allocations, the shard and its empty view of eight 32-byte slots and
/// three of padding, plus its 16-byte head from a shared slab; measured in
/// `tests/memory.rs`) and the resident memory of a map of 2^20 empty shards
/// with glibc's malloc (the allocator's headers, the directory's 8-byte
/// slot and memory freed while the map was built but not returned to the
/// system come on top).
pub const EMPTY_SHARD_BYTES: usize = 768;

/// Marks which map a builder builds, without owning anything: invariant in
/// `K`, `V` and `S`, as `SnapMap<K, V, S>` is (it holds them behind
/// atomics), and `Send`, `Sync` and unwind-safe whatever they are (a
/// builder holds no map). Spelled without naming the map type (see the
/// module docs); it is the marker `fn() -> SnapMap<K, V, S>` was.
type BuildsMap<K, V, S> = fn(K, V, S) -> (K, V, S);

/// Options for a [`SnapMap`](crate::SnapMap), from
/// [`SnapMap::builder`](crate::SnapMap::builder).
///
/// Every option is also a test hook: a map with one shard and a promotion
/// threshold of 1 walks through every protocol state in a handful of
/// operations.
///
/// ```
/// use snapmap::SnapMap;
///
/// let map = SnapMap::<String, u32>::builder()
///     .shards(16)
///     .promotion_threshold(8)
///     .build()
///     .expect("valid options");
/// map.insert("a".to_string(), 1);
/// assert_eq!(map.get("a"), Some(1));
///
/// // Invalid options are an error that says what is wrong.
/// let err = SnapMap::<String, u32>::builder().shards(3).build().unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "shard count must be a power of two between 1 and max_shards (1048576), got 3"
/// );
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<K, V, S = DefaultHashBuilder> {
    shards: usize,
    max_shards: usize,
    shard_capacity: usize,
    promotion_threshold: usize,
    capacity: usize,
    huge_pages: bool,
    inline_values: bool,
    hasher: S,
    _map: PhantomData<BuildsMap<K, V, S>>,
}

impl<K, V> Builder<K, V, DefaultHashBuilder> {
    pub(crate) fn new() -> Self {
        Builder {
            shards: DEFAULT_SHARDS,
            max_shards: DEFAULT_MAX_SHARDS,
            shard_capacity: DEFAULT_SHARD_CAPACITY,
            promotion_threshold: usize::MAX,
            capacity: 0,
            huge_pages: false,
            inline_values: false,
            hasher: DefaultHashBuilder::default(),
            _map: PhantomData,
        }
    }
}

impl<K, V, S> Builder<K, V, S> {
    /// The initial number of shards, which is also the fewest the map
    /// merges down to: a power of two, at most
    /// [`max_shards`](Self::max_shards). Default [`DEFAULT_SHARDS`].
    ///
    /// Shards split as the map grows, so this matters mostly for a map that
    /// takes many concurrent new keys while small (each shard has one lock).
    /// Every initial shard is allocated at once and costs up to
    /// [`EMPTY_SHARD_BYTES`] (measured in `tests/memory.rs`), so at most
    /// [`MAX_INITIAL_SHARDS`] are accepted.
    ///
    /// ```
    /// use snapmap::{MAX_INITIAL_SHARDS, SnapMap};
    ///
    /// let err = SnapMap::<u64, u64>::builder()
    ///     .max_shards(1 << 26)
    ///     .shards(1 << 26)
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     format!("initial shard count must be at most {MAX_INITIAL_SHARDS} (each empty shard costs up to 768 bytes), got 67108864")
    /// );
    /// ```
    pub fn shards(mut self, count: usize) -> Self {
        self.shards = count;
        self
    }

    /// The most shards the map may split into (the directory's size cap): a
    /// power of two from `shards` to `2^26`. Default [`DEFAULT_MAX_SHARDS`].
    ///
    /// It bounds the directory when keys' hashes agree in many top bits (a
    /// weak hasher, or an attacker who knows it): a shard that cannot split
    /// grows past its capacity instead, and its dirty rebuilds cost O(shard).
    pub fn max_shards(mut self, count: usize) -> Self {
        self.max_shards = count;
        self
    }

    /// The number of entries past which a shard's dirty table splits the
    /// shard: from 1 to [`MAX_SHARD_CAPACITY`]. Default
    /// [`DEFAULT_SHARD_CAPACITY`].
    ///
    /// This bounds the work of one operation: a dirty rebuild copies at most
    /// one shard. Two buddy shards merge back when they hold at most a
    /// quarter of it together. Tiny values (say 4) are for tests.
    pub fn shard_capacity(mut self, entries: usize) -> Self {
        self.shard_capacity = entries;
        self
    }

    /// Promote a shard's dirty table after `misses` slow-path lookups even
    /// if the table holds more entries than that. Must be at least 1.
    ///
    /// Go's rule, the default, promotes when the misses reach the dirty
    /// table's length: the lookups that paid the lock have then paid for the
    /// copy. A small threshold makes new keys lock-free sooner at the cost
    /// of more rebuilds (each new key after a promotion copies the shard).
    /// Any value from 1 up is accepted: a threshold above the shard's size
    /// is Go's rule.
    pub fn promotion_threshold(mut self, misses: usize) -> Self {
        self.promotion_threshold = misses;
        self
    }

    /// Pre-sizes the map for `entries` entries: it starts with enough
    /// shards that a bulk load of that many keys does not split its way up
    /// (each initial shard holds about half of
    /// [`shard_capacity`](Self::shard_capacity) at that size; see
    /// [`shards_for_capacity`]). Default 0:
    /// [`shards`](Self::shards) decides alone; otherwise the larger of the
    /// two counts wins.
    ///
    /// Like a `HashMap`'s capacity it is kept: the initial shards are the
    /// fewest the map merges down to, so a map built for a million keys
    /// keeps its shards (up to [`EMPTY_SHARD_BYTES`] each) when emptied.
    ///
    /// A capacity that needs more shards than `max_shards` or
    /// [`MAX_INITIAL_SHARDS`] allows is a [`BuildError::Capacity`] that says
    /// how many it needs:
    ///
    /// ```
    /// use snapmap::SnapMap;
    ///
    /// let map = SnapMap::<u64, u64>::builder().capacity(100_000).build().unwrap();
    /// assert_eq!(map.stats().shards, 512); // 100K / 256 per shard, rounded up to 2^9
    /// for k in 0..100_000 {
    ///     map.insert(k, k);
    /// }
    /// assert_eq!(map.stats().splits, 0);
    ///
    /// let err = SnapMap::<u64, u64>::builder()
    ///     .max_shards(1024)
    ///     .capacity(1 << 20)
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "capacity 1048576 needs 4096 shards of 256 entries (half of shard_capacity 512), \
    ///      more than the limit of 1024 (max_shards, and at most 1048576 initial shards)"
    /// );
    /// ```
    pub fn capacity(mut self, entries: usize) -> Self {
        self.capacity = entries;
        self
    }

    /// Puts the map's read views in memory the kernel is asked to back
    /// with transparent huge pages (2 MiB), once the process's read views
    /// hold 8 MiB or more. Default `false`.
    ///
    /// A read hit in a large map lands on a random slot of its views (about
    /// 68 MB at 1M `u64` keys); with 4 KiB pages nearly every hit also
    /// misses the TLB and walks the page table, with huge pages it does
    /// not: at 1M keys, read hits 1.19–1.45× as fast as the default's
    /// (`BENCHMARKS.md`, the `snapmap (huge_pages)` rows, two runs, 1 and 2
    /// threads; 0.91–1.43× `scc::HashIndex` in the same runs). Two
    /// prices. The kernel's: the first touch of each new 2 MiB region faults
    /// in a whole huge page, which took 0.2 ms on the benchmark machine, and
    /// 5–7.5 ms once the kernel had to compact memory to find one; so a map
    /// that is growing has an insert that waits that long once per 2 MiB of
    /// new views (about 30,000 new `u64` keys). And memory: a region goes
    /// back to the allocator only when no view is left in it, so the views a
    /// growing map outgrew partly stay (1M `u64` keys inserted into an
    /// empty map: 106 heap bytes per entry, against 68.1 by default).
    ///
    /// Linux only (elsewhere, and where transparent huge pages are off, the
    /// views get ordinary pages and the option changes nothing else).
    ///
    /// ```
    /// let map = snapmap::SnapMap::<u64, u64>::builder().huge_pages(true).build().unwrap();
    /// map.insert(1, 2);
    /// assert_eq!(map.get(&1), Some(2));
    /// ```
    pub fn huge_pages(mut self, on: bool) -> Self {
        self.huge_pages = on;
        self
    }

    /// The hasher used to pick shards and probe tables.
    pub fn hasher<S2>(self, hasher: S2) -> Builder<K, V, S2> {
        Builder {
            shards: self.shards,
            max_shards: self.max_shards,
            shard_capacity: self.shard_capacity,
            promotion_threshold: self.promotion_threshold,
            capacity: self.capacity,
            huge_pages: self.huge_pages,
            inline_values: self.inline_values,
            hasher,
            _map: PhantomData,
        }
    }

    /// Checks the options, in the order [`build`](Self::build) reports
    /// them: the first invalid one is the error.
    pub(crate) fn validate(self) -> Result<Options<S>, BuildError> {
        if !self.max_shards.is_power_of_two() || self.max_shards > 1 << MAX_DEPTH_LIMIT {
            return Err(BuildError::MaxShards {
                requested: self.max_shards,
            });
        }
        if !self.shards.is_power_of_two() || self.shards > self.max_shards {
            return Err(BuildError::ShardCount {
                requested: self.shards,
                max_shards: self.max_shards,
            });
        }
        if self.shards > MAX_INITIAL_SHARDS {
            return Err(BuildError::TooManyInitialShards {
                requested: self.shards,
            });
        }
        if self.shard_capacity == 0 || self.shard_capacity > MAX_SHARD_CAPACITY {
            return Err(BuildError::ShardCapacity {
                requested: self.shard_capacity,
            });
        }
        if self.promotion_threshold == 0 {
            return Err(BuildError::PromotionThreshold);
        }
        let limit = self.max_shards.min(MAX_INITIAL_SHARDS);
        let shards = match shards_for_capacity(self.capacity, self.shard_capacity) {
            Some(needed) if needed <= limit => needed.max(self.shards),
            needed => {
                return Err(BuildError::Capacity {
                    requested: self.capacity,
                    shards_needed: needed,
                    entries_per_shard: entries_per_shard(self.shard_capacity),
                    shard_capacity: self.shard_capacity,
                    limit,
                });
            }
        };
        Ok(Options {
            shard_bits: shards.trailing_zeros(),
            max_shard_bits: self.max_shards.trailing_zeros(),
            shard_capacity: self.shard_capacity,
            promote_after: self.promotion_threshold,
            huge_pages: self.huge_pages,
            inline_values: self.inline_values,
            hasher: self.hasher,
        })
    }
}

impl<K, V: Copy, S> Builder<K, V, S> {
    /// Stores each new key's first value in its entry's own allocation
    /// (and, once promoted, in the read view's slot beside the key), as
    /// plain scalars (`u64`, `f64`, `bool`, `&'static str`, ...) always
    /// are: a read hit of a key written once then follows no pointer to a
    /// value node, and a new key is one allocation instead of two. Default
    /// off.
    ///
    /// An inline value is copied, bit by bit, when its entry moves into a
    /// new view (a promotion, split, merge or compaction), while readers
    /// may still hold `&V` into the old copy. That is only right for a
    /// value nobody changes through `&V`; `V: Copy` guarantees it (a `Copy`
    /// type cannot hold an `UnsafeCell`, so no atomic, `Cell` or lock), so
    /// this option exists only for `Copy` values. A value type that needs
    /// no drop but is neither a plain scalar nor built with this option
    /// (a `Copy` struct, an `AtomicU64`, a `Mutex`) lives in a node of its
    /// own, which a move hands over by its pointer. A value that replaces
    /// the first one gets a node either way.
    ///
    /// ```
    /// #[derive(Clone, Copy, Debug, PartialEq)]
    /// struct Limit {
    ///     rate: u32,
    ///     burst: u32,
    /// }
    ///
    /// let map = snapmap::SnapMap::<&str, Limit>::builder()
    ///     .inline_values(true)
    ///     .build()
    ///     .unwrap();
    /// map.insert("tenant-a", Limit { rate: 100, burst: 20 });
    /// assert_eq!(map.get("tenant-a"), Some(Limit { rate: 100, burst: 20 }));
    /// ```
    ///
    /// A value type with interior mutability is not `Copy`, so the option
    /// is not there:
    ///
    /// ```compile_fail
    /// let map = snapmap::SnapMap::<u64, std::sync::atomic::AtomicU64>::builder()
    ///     .inline_values(true);
    /// ```
    pub fn inline_values(mut self, on: bool) -> Self {
        self.inline_values = on;
        self
    }
}

/// The entries each shard of a pre-sized map holds at the size it was
/// sized for: half the shard capacity (at least 1), so that hash-space
/// variance does not split a shard during the bulk load it was sized for.
fn entries_per_shard(shard_capacity: usize) -> usize {
    (shard_capacity / 2).max(1)
}

/// The shards a map needs to hold `entries` entries without splitting:
/// `entries / (shard_capacity / 2)`, rounded up to a power of two (at least
/// 1), or `None` if that overflows `usize`. What
/// [`Builder::capacity`] and `SnapMap::reserve` use.
///
/// ```
/// use snapmap::{DEFAULT_SHARD_CAPACITY, shards_for_capacity};
///
/// assert_eq!(shards_for_capacity(0, DEFAULT_SHARD_CAPACITY), Some(1));
/// assert_eq!(shards_for_capacity(256, DEFAULT_SHARD_CAPACITY), Some(1));
/// assert_eq!(shards_for_capacity(257, DEFAULT_SHARD_CAPACITY), Some(2));
/// assert_eq!(shards_for_capacity(1_000_000, DEFAULT_SHARD_CAPACITY), Some(4096));
/// assert_eq!(shards_for_capacity(usize::MAX, 2), None);
/// ```
pub fn shards_for_capacity(entries: usize, shard_capacity: usize) -> Option<usize> {
    entries
        .div_ceil(entries_per_shard(shard_capacity))
        .max(1)
        .checked_next_power_of_two()
}

/// A builder's options, validated: what a map is made from.
pub(crate) struct Options<S> {
    /// The initial (and minimum) directory depth: `log2(shards)`.
    pub(crate) shard_bits: u32,
    /// The deepest the directory may grow: `log2(max_shards)`.
    pub(crate) max_shard_bits: u32,
    /// A shard whose dirty table passes this many entries splits.
    pub(crate) shard_capacity: usize,
    /// Promote after this many slow-path lookups at most.
    pub(crate) promote_after: usize,
    /// Read views from huge-page regions (`crate::arena`).
    pub(crate) huge_pages: bool,
    /// `Builder::inline_values`.
    pub(crate) inline_values: bool,
    /// The map's hasher.
    pub(crate) hasher: S,
}

/// An invalid [`Builder`] option.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// The shard count is not a power of two in `1..=max_shards`.
    ShardCount {
        /// What was asked for.
        requested: usize,
        /// The `max_shards` in force.
        max_shards: usize,
    },
    /// `max_shards` is not a power of two in `1..=2^26`.
    MaxShards {
        /// What was asked for.
        requested: usize,
    },
    /// More initial shards than [`MAX_INITIAL_SHARDS`].
    TooManyInitialShards {
        /// What was asked for.
        requested: usize,
    },
    /// The shard capacity is not in `1..=MAX_SHARD_CAPACITY`.
    ShardCapacity {
        /// What was asked for.
        requested: usize,
    },
    /// The promotion threshold is zero.
    PromotionThreshold,
    /// The [capacity](Builder::capacity) needs more initial shards than
    /// `max_shards` or [`MAX_INITIAL_SHARDS`] allow.
    Capacity {
        /// What was asked for.
        requested: usize,
        /// The shards it needs ([`shards_for_capacity`]); `None` if that
        /// count overflows `usize`.
        shards_needed: Option<usize>,
        /// The entries each shard holds at that size.
        entries_per_shard: usize,
        /// The shard capacity in force.
        shard_capacity: usize,
        /// The most initial shards allowed: `min(max_shards,
        /// MAX_INITIAL_SHARDS)`.
        limit: usize,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::ShardCount {
                requested,
                max_shards,
            } => write!(
                f,
                "shard count must be a power of two between 1 and max_shards ({max_shards}), got {requested}"
            ),
            BuildError::MaxShards { requested } => write!(
                f,
                "max_shards must be a power of two between 1 and {}, got {requested}",
                1usize << MAX_DEPTH_LIMIT
            ),
            BuildError::TooManyInitialShards { requested } => write!(
                f,
                "initial shard count must be at most {MAX_INITIAL_SHARDS} (each empty shard costs \
                 up to {EMPTY_SHARD_BYTES} bytes), got {requested}"
            ),
            BuildError::ShardCapacity { requested } => write!(
                f,
                "shard capacity must be between 1 and {MAX_SHARD_CAPACITY} entries, got {requested}"
            ),
            BuildError::PromotionThreshold => {
                f.write_str("promotion threshold must be at least 1 slow-path lookup, got 0")
            }
            BuildError::Capacity {
                requested,
                shards_needed,
                entries_per_shard,
                shard_capacity,
                limit,
            } => {
                write!(f, "capacity {requested} needs ")?;
                match shards_needed {
                    Some(needed) => write!(f, "{needed} shards")?,
                    None => f.write_str("more than 2^63 shards")?,
                }
                write!(
                    f,
                    " of {entries_per_shard} entries (half of shard_capacity {shard_capacity}), \
                     more than the limit of {limit} (max_shards, and at most {MAX_INITIAL_SHARDS} \
                     initial shards)"
                )
            }
        }
    }
}

impl std::error::Error for BuildError {}
