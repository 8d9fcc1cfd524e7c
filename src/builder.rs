//! Building a map with non-default options.

use core::fmt;
use core::marker::PhantomData;
use core::hash::BuildHasher;

use crate::directory::MAX_BITS;
use crate::hash::DefaultHashBuilder;
use crate::map::SnapMap;

/// The shard count a map gets unless the builder says otherwise.
pub const DEFAULT_SHARDS: usize = 64;

/// Options for a [`SnapMap`], from [`SnapMap::builder`].
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
///     "shard count must be a power of two between 1 and 65536, got 3"
/// );
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<K, V, S = DefaultHashBuilder> {
    shards: usize,
    promotion_threshold: usize,
    hasher: S,
    _map: PhantomData<fn() -> SnapMap<K, V, S>>,
}

impl<K, V> Builder<K, V, DefaultHashBuilder> {
    pub(crate) fn new() -> Self {
        Builder {
            shards: DEFAULT_SHARDS,
            promotion_threshold: usize::MAX,
            hasher: DefaultHashBuilder::default(),
            _map: PhantomData,
        }
    }
}

impl<K, V, S> Builder<K, V, S> {
    /// The number of shards: a power of two from 1 to 65 536. Default
    /// [`DEFAULT_SHARDS`].
    ///
    /// More shards mean smaller dirty rebuilds and less contention on shard
    /// locks, at about 300 bytes per shard.
    pub fn shards(mut self, count: usize) -> Self {
        self.shards = count;
        self
    }

    /// Promote a shard's dirty table after `misses` slow-path lookups even
    /// if the table holds more entries than that. Must be at least 1.
    ///
    /// Go's rule, the default, promotes when the misses reach the dirty
    /// table's length: the lookups that paid the lock have then paid for the
    /// copy. A small threshold makes new keys lock-free sooner at the cost
    /// of more rebuilds (each new key after a promotion copies the shard).
    pub fn promotion_threshold(mut self, misses: usize) -> Self {
        self.promotion_threshold = misses;
        self
    }

    /// The hasher used to pick shards and probe tables.
    pub fn hasher<S2>(self, hasher: S2) -> Builder<K, V, S2> {
        Builder {
            shards: self.shards,
            promotion_threshold: self.promotion_threshold,
            hasher,
            _map: PhantomData,
        }
    }

    /// Builds the map, or says which option is invalid.
    pub fn build(self) -> Result<SnapMap<K, V, S>, BuildError>
    where
        S: BuildHasher,
    {
        if !self.shards.is_power_of_two() || self.shards > 1 << MAX_BITS {
            return Err(BuildError::ShardCount {
                requested: self.shards,
            });
        }
        if self.promotion_threshold == 0 {
            return Err(BuildError::PromotionThreshold);
        }
        Ok(SnapMap::from_parts(
            self.shards.trailing_zeros(),
            self.promotion_threshold,
            self.hasher,
        ))
    }
}

/// An invalid [`Builder`] option.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// The shard count is not a power of two in `1..=65536`.
    ShardCount {
        /// What was asked for.
        requested: usize,
    },
    /// The promotion threshold is zero.
    PromotionThreshold,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::ShardCount { requested } => write!(
                f,
                "shard count must be a power of two between 1 and {}, got {requested}",
                1usize << MAX_BITS
            ),
            BuildError::PromotionThreshold => {
                f.write_str("promotion threshold must be at least 1 slow-path lookup, got 0")
            }
        }
    }
}

impl std::error::Error for BuildError {}
