//! Building a map with non-default options: [`Builder::build`].
//!
//! The builder itself, its defaults, limits and validation are in
//! `crate::options` (re-exported here), which does not know the map type;
//! this module is the one step that needs it, turning validated
//! [`Options`] into a [`SnapMap`]. So the map names its builder
//! (`SnapMap::builder`) and the builder's options, and only this module
//! names both.

use core::hash::BuildHasher;

use crate::map::SnapMap;
use crate::options::Options;

pub use crate::options::{
    BuildError, Builder, DEFAULT_MAX_SHARDS, DEFAULT_SHARD_CAPACITY, DEFAULT_SHARDS,
    EMPTY_SHARD_BYTES, MAX_INITIAL_SHARDS, MAX_SHARD_CAPACITY, shards_for_capacity,
};

impl<K, V, S> Builder<K, V, S> {
    /// Builds the map, or says which option is invalid.
    pub fn build(self) -> Result<SnapMap<K, V, S>, BuildError>
    where
        S: BuildHasher,
    {
        let Options {
            shard_bits,
            max_shard_bits,
            shard_capacity,
            promote_after,
            huge_pages,
            inline_values,
            hasher,
        } = self.validate()?;
        Ok(SnapMap::from_parts(
            shard_bits,
            max_shard_bits,
            shard_capacity,
            promote_after,
            huge_pages,
            inline_values,
            hasher,
        ))
    }
}
