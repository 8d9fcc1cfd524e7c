//! Iterators over a pinned map (Go: `Range`).
//!
//! An [`Iter`] walks the shards in directory order. On reaching a shard it
//! takes the shard's read view (promoting the dirty table first if the view
//! is amended, as Go's `Range` does) and walks that immutable table. Nothing
//! is copied and, once no shard needs promoting, nothing is allocated and no
//! lock is taken.

use core::fmt;
use core::iter::FusedIterator;

use hashbrown::hash_table;

use crate::shard::Shard;
use crate::shard::entry::Entry;
use crate::sync::Arc;
use crate::sync::epoch::Guard;

/// An iterator over `(&K, &V)`, from [`Pinned::iter`](crate::Pinned::iter).
pub struct Iter<'p, K, V> {
    shards: core::slice::Iter<'p, Shard<K, V>>,
    current: hash_table::Iter<'p, Arc<Entry<K, V>>>,
    guard: &'p Guard,
}

impl<'p, K, V> Iter<'p, K, V> {
    pub(crate) fn new(shards: &'p [Shard<K, V>], guard: &'p Guard) -> Self {
        Iter {
            shards: shards.iter(),
            current: hash_table::Iter::default(),
            guard,
        }
    }
}

impl<'p, K, V> Iterator for Iter<'p, K, V>
where
    K: Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    type Item = (&'p K, &'p V);

    #[inline]
    fn next(&mut self) -> Option<(&'p K, &'p V)> {
        loop {
            for entry in self.current.by_ref() {
                if let Some(value) = entry.load(self.guard) {
                    return Some((entry.key(), value));
                }
            }
            let shard = self.shards.next()?;
            self.current = shard.view_for_iter(self.guard).table().iter();
        }
    }
}

impl<K, V> FusedIterator for Iter<'_, K, V>
where
    K: Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
}

impl<K, V> fmt::Debug for Iter<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter")
            .field("shards_left", &self.shards.len())
            .finish_non_exhaustive()
    }
}

/// An iterator over keys, from [`Pinned::keys`](crate::Pinned::keys).
#[derive(Debug)]
pub struct Keys<'p, K, V>(Iter<'p, K, V>);

impl<'p, K, V> Keys<'p, K, V> {
    pub(crate) fn new(iter: Iter<'p, K, V>) -> Self {
        Keys(iter)
    }
}

impl<'p, K, V> Iterator for Keys<'p, K, V>
where
    K: Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    type Item = &'p K;

    #[inline]
    fn next(&mut self) -> Option<&'p K> {
        self.0.next().map(|(k, _)| k)
    }
}

/// An iterator over values, from [`Pinned::values`](crate::Pinned::values).
#[derive(Debug)]
pub struct Values<'p, K, V>(Iter<'p, K, V>);

impl<'p, K, V> Values<'p, K, V> {
    pub(crate) fn new(iter: Iter<'p, K, V>) -> Self {
        Values(iter)
    }
}

impl<'p, K, V> Iterator for Values<'p, K, V>
where
    K: Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    type Item = &'p V;

    #[inline]
    fn next(&mut self) -> Option<&'p V> {
        self.0.next().map(|(_, v)| v)
    }
}
