//! Iterators over a pinned map (Go: `Range`).
//!
//! An [`Iter`] walks **hash space** from 0 to `u64::MAX`, one shard at a
//! time. At each step it looks up the shard holding the cursor in the
//! current directory, takes its read view (promoting the dirty table first
//! if the view is amended, as Go's `Range` does), walks that immutable
//! table, and moves the cursor past the shard's hash range. Nothing is
//! copied and, once no shard needs promoting, nothing is allocated and no
//! lock is taken.
//!
//! Walking hash space rather than a list of shards is what keeps the walk
//! exact while shards split and merge under it: every key lives at one
//! hash, every hash is visited once, and entries below the cursor are
//! skipped (after a merge, the merged shard's view also holds the range
//! already walked).

use core::fmt;
use core::iter::FusedIterator;

use crate::directory::Directory;
use crate::shard::Ctx;
use crate::shard::read_view::ViewIter;
use crate::sync::epoch::Guard;

/// An iterator over `(&K, &V)`, from [`Pinned::iter`](crate::Pinned::iter).
pub struct Iter<'p, K, V> {
    directory: &'p Directory<K, V>,
    guard: &'p Guard,
    ctx: Ctx<'p>,
    /// The first hash not walked yet; `None` once the walk is done.
    cursor: Option<u64>,
    /// Entries of `current` below this hash were walked already.
    from: u64,
    /// The last hash to walk (`u64::MAX` but for a parallel walk's range).
    last: u64,
    current: ViewIter<'p, K, V>,
}

impl<'p, K, V> Iter<'p, K, V> {
    pub(crate) fn new(directory: &'p Directory<K, V>, guard: &'p Guard, ctx: Ctx<'p>) -> Self {
        Self::range(directory, guard, ctx, 0, u64::MAX)
    }

    /// A walk of the hashes `first..=last` only (a parallel walk gives each
    /// worker one range; the ranges partition hash space).
    pub(crate) fn range(
        directory: &'p Directory<K, V>,
        guard: &'p Guard,
        ctx: Ctx<'p>,
        first: u64,
        last: u64,
    ) -> Self {
        Iter {
            directory,
            guard,
            ctx,
            cursor: Some(first),
            from: first,
            last,
            current: ViewIter::default(),
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
            if let Some(item) = self.next_in_current() {
                return Some(item);
            }
            let at = self.cursor?;
            let shard = self.directory.locate(at, self.guard);
            // On `Err(Retired)` the shard was split or merged meanwhile: the
            // loop looks the cursor up again.
            if let Ok(view) = shard.view_for_iter(&self.ctx, self.guard) {
                self.from = at;
                let end = shard.hash_range().1;
                self.cursor = end.checked_add(1).filter(|_| end < self.last);
                self.current = view.iter();
            }
        }
    }

    /// The same walk, with each shard that lies wholly inside the range
    /// folded by a loop of its own: no range test and no iterator state
    /// per entry (what `for_each`, `sum` and most adapters call). A shard
    /// that crosses the range's ends (the one holding the cursor after a
    /// merge, or the ends of a parallel walk's range) goes through `next`.
    #[inline]
    fn fold<B, F>(mut self, init: B, mut f: F) -> B
    where
        F: FnMut(B, Self::Item) -> B,
    {
        let mut acc = init;
        loop {
            while let Some(item) = self.next_in_current() {
                acc = f(acc, item);
            }
            let Some(at) = self.cursor else {
                return acc;
            };
            let shard = self.directory.locate(at, self.guard);
            // On `Err(Retired)`, as in `next`.
            if let Ok(view) = shard.view_for_iter(&self.ctx, self.guard) {
                self.from = at;
                let (start, end) = shard.hash_range();
                self.cursor = end.checked_add(1).filter(|_| end < self.last);
                if start == at && end <= self.last {
                    let guard = self.guard;
                    acc = view
                        .iter()
                        .fold(acc, |acc, (_, entry)| match entry.load(guard) {
                            Some(value) => f(acc, (entry.key(), value)),
                            None => acc,
                        });
                } else {
                    self.current = view.iter();
                }
            }
        }
    }
}

impl<'p, K, V> Iter<'p, K, V>
where
    K: Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// The next live entry of the current view inside the range, if any.
    #[inline]
    fn next_in_current(&mut self) -> Option<(&'p K, &'p V)> {
        for (hash, entry) in self.current.by_ref() {
            if hash < self.from || hash > self.last {
                continue;
            }
            if let Some(value) = entry.load(self.guard) {
                return Some((entry.key(), value));
            }
        }
        None
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
            .field("cursor", &self.cursor)
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

    #[inline]
    fn fold<B, F>(self, init: B, mut f: F) -> B
    where
        F: FnMut(B, Self::Item) -> B,
    {
        self.0.fold(init, |acc, (k, _)| f(acc, k))
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

    #[inline]
    fn fold<B, F>(self, init: B, mut f: F) -> B
    where
        F: FnMut(B, Self::Item) -> B,
    {
        self.0.fold(init, |acc, (_, v)| f(acc, v))
    }
}
