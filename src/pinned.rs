//! The pinned handle: many operations under one epoch pin, returning
//! references.

use core::cell::Cell;
use core::fmt;
use core::hash::{BuildHasher, Hash};

use equivalent::Equivalent;

use crate::iter::{Iter, Keys, Values};
use crate::map::SnapMap;
use crate::migrate;
use crate::shard::entry::ValueNode;
use crate::shard::{Ctx, Retired, Shard};
use crate::stats::Stripe;
use crate::sync::epoch::{self, Guard};
use crate::twins::{Bug, injected};

/// A map handle that keeps the current thread pinned, from
/// [`SnapMap::pin`].
///
/// References returned by its methods live as long as the handle: values
/// that are replaced or removed meanwhile stay readable until it drops.
/// Read hits through a handle write no shared memory (hits are counted in
/// the handle and added to the map's stats when it drops).
///
/// A handle is neither `Send` nor `Sync` (the pin belongs to one thread):
///
/// ```compile_fail
/// fn assert_send<T: Send>(_: T) {}
/// let map: snapmap::SnapMap<u64, u64> = snapmap::SnapMap::new();
/// assert_send(map.pin());
/// ```
///
/// and references cannot outlive it:
///
/// ```compile_fail
/// let map: snapmap::SnapMap<u64, u64> = snapmap::SnapMap::new();
/// map.insert(1, 1);
/// let value = {
///     let pinned = map.pin();
///     pinned.get(&1).unwrap()
/// }; // `pinned` dropped here while borrowed
/// println!("{value}");
/// ```
///
/// while within its life they are ordinary references:
///
/// ```
/// let map: snapmap::SnapMap<u64, u64> = snapmap::SnapMap::new();
/// map.insert(1, 1);
/// let pinned = map.pin();
/// let value = pinned.get(&1).unwrap();
/// map.insert(1, 2); // replaces the value; `value` stays readable
/// assert_eq!((*value, *pinned.get(&1).unwrap()), (1, 2));
/// ```
pub struct Pinned<'m, K, V, S> {
    map: &'m SnapMap<K, V, S>,
    guard: Guard,
    stripe: &'m Stripe,
    read_hits: Cell<u64>,
}

/// The error of [`Pinned::try_insert`]: the key already had a value.
#[derive(Debug)]
#[non_exhaustive]
pub struct OccupiedError<'a, V> {
    /// The value in the map.
    pub current: &'a V,
    /// The value that was not inserted, handed back.
    pub not_inserted: V,
}

impl<V: fmt::Debug> fmt::Display for OccupiedError<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "key already present with value {:?}; {:?} was not inserted",
            self.current, self.not_inserted
        )
    }
}

impl<V: fmt::Debug> std::error::Error for OccupiedError<'_, V> {}

impl<'m, K, V, S> Pinned<'m, K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher,
{
    #[inline]
    pub(crate) fn new(map: &'m SnapMap<K, V, S>) -> Self {
        Pinned {
            map,
            guard: epoch::pin(),
            stripe: map.stripes.mine(),
            read_hits: Cell::new(0),
        }
    }

    /// One hash per operation: it picks the shard and probes its table.
    #[inline]
    fn hash<Q: ?Sized + Hash>(&self, key: &Q) -> u64 {
        self.map.hasher.hash_one(key)
    }

    /// The shard that holds `hash` now.
    #[inline]
    fn shard(&self, hash: u64) -> &Shard<K, V> {
        self.map.directory.locate(hash, &self.guard)
    }

    /// The context of one operation. Writers call it inside the gate, so
    /// that it carries the snapshot build they must capture for.
    #[inline]
    fn ctx(&self) -> Ctx<'m> {
        Ctx::new(
            self.map.promote_after,
            self.map.capacity,
            self.stripe,
            self.map.gate.build_epoch(),
        )
    }

    /// Before a write changes `shard`: if a snapshot build's cut has been
    /// taken and the shard not yet captured for it, capture it now (or
    /// wait for the thread capturing it). See `crate::snapshot`, "Copy
    /// before write".
    #[inline]
    fn before_write(&self, shard: &Shard<K, V>, ctx: &Ctx<'_>) {
        if ctx.build != 0 && shard.needs_capture(ctx.build) && !injected(Bug::WriteWithoutCapture) {
            self.map.snapshots.capture(shard, ctx.build, &self.guard);
        }
    }

    /// Records that the content under `hash` changed: bumps the version of
    /// the shard that holds it *now* (a lock-free write may have gone
    /// through a retired shard; see `crate::snapshot`). Inside the gate.
    #[inline]
    fn changed(&self, hash: u64) {
        self.shard(hash).bump_version();
    }

    /// After a write: splits or merges the shard if the write asked for it,
    /// and records the work done.
    #[inline]
    fn after_write(&self, shard: &Shard<K, V>, ctx: &Ctx<'_>) {
        if ctx.wants_split.get() {
            migrate::split(&self.map.directory, shard, ctx, &self.guard);
        } else if ctx.wants_merge.get() {
            migrate::merge_cascade(&self.map.directory, shard, ctx, &self.guard, &|buddy| {
                self.before_write(buddy, ctx);
            });
        }
        // After a merge attempt: a merged shard was compacted by the merge
        // (`compact` skips a retired one), a shard that could not merge (at
        // the minimum shard count, say) still must not hold its removed
        // keys forever.
        if ctx.wants_compact.get() {
            shard.compact(ctx, &self.guard);
        }
        let copied = ctx.copied.get();
        if copied > 0 {
            self.map.stripes.record_copied(copied);
        }
    }

    #[cold]
    fn get_slow<'a, Q>(&'a self, hash: u64, key: &Q, mut shard: &'a Shard<K, V>) -> Option<&'a V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let ctx = self.ctx();
        loop {
            match shard.get_slow(hash, key, &ctx, &self.guard) {
                Ok(found) => return found,
                Err(Retired) => {
                    shard = self.shard(hash);
                    if let Ok(found) = shard.get_fast(hash, key, &self.guard) {
                        return found;
                    }
                }
            }
        }
    }

    /// The map this handle pins.
    ///
    /// ```
    /// let map: snapmap::SnapMap<u8, u8> = snapmap::SnapMap::new();
    /// assert!(std::ptr::eq(map.pin().map(), &map));
    /// ```
    pub fn map(&self) -> &'m SnapMap<K, V, S> {
        self.map
    }

    /// The value for `key` (Go: `Load`). A hit in the read view takes no
    /// lock and writes no shared memory.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, "one");
    /// assert_eq!(map.pin().get(&1), Some(&"one"));
    /// ```
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let hash = self.hash(key);
        let shard = self.shard(hash);
        match shard.get_fast(hash, key, &self.guard) {
            Ok(found) => {
                self.read_hits.set(self.read_hits.get() + 1);
                found
            }
            Err(()) => self.get_slow(hash, key, shard),
        }
    }

    /// Whether `key` is present.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, "one");
    /// assert!(map.pin().contains_key(&1));
    /// ```
    #[inline]
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        self.get(key).is_some()
    }

    /// Stores `value` under `key`, returning the previous value (Go:
    /// `Swap`). Updating an existing key is one CAS and one allocation; a
    /// new key takes the shard lock.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// let pinned = map.pin();
    /// assert_eq!(pinned.insert(1, "a"), None);
    /// assert_eq!(pinned.insert(1, "b"), Some(&"a"));
    /// ```
    pub fn insert(&self, key: K, value: V) -> Option<&V> {
        let hash = self.hash(&key);
        let _gate = self.map.gate.enter();
        let ctx = self.ctx();
        let (mut key, mut node) = (key, ValueNode::boxed(value));
        loop {
            let shard = self.shard(hash);
            self.before_write(shard, &ctx);
            match shard.insert(hash, key, node, &ctx, &self.guard) {
                Ok(previous) => {
                    self.changed(hash);
                    self.after_write(shard, &ctx);
                    return previous;
                }
                Err(retry) => (key, node) = retry,
            }
        }
    }

    /// Returns the value for `key`, storing `value` first if absent (Go:
    /// `LoadOrStore` without the flag).
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// let pinned = map.pin();
    /// assert_eq!(pinned.get_or_insert(1, "a"), &"a");
    /// assert_eq!(pinned.get_or_insert(1, "b"), &"a");
    /// ```
    pub fn get_or_insert(&self, key: K, value: V) -> &V {
        match self.try_insert(key, value) {
            Ok(stored) => stored,
            Err(occupied) => occupied.current,
        }
    }

    /// Returns the value for `key`, storing `make()` first if absent.
    ///
    /// `make` runs without any lock held, and only if the key looked absent;
    /// if another thread stores the key meanwhile, its value wins and the
    /// made value is dropped. If `make` panics, the map is unchanged.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// let pinned = map.pin();
    /// assert_eq!(pinned.get_or_insert_with(1, || "made"), &"made");
    /// assert_eq!(pinned.get_or_insert_with(1, || unreachable!()), &"made");
    /// ```
    pub fn get_or_insert_with(&self, key: K, make: impl FnOnce() -> V) -> &V {
        if let Some(value) = self.get(&key) {
            return value;
        }
        self.get_or_insert(key, make())
    }

    /// Stores `value` only if `key` is absent (Go: `LoadOrStore`):
    /// `Ok(stored)`, or `Err` with the current value and `value` handed back
    /// (Go's `loaded == true`).
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// let pinned = map.pin();
    /// assert_eq!(pinned.try_insert(1, "a").unwrap(), &"a");
    /// let err = pinned.try_insert(1, "b").unwrap_err();
    /// assert_eq!((err.current, err.not_inserted), (&"a", "b"));
    /// ```
    pub fn try_insert(&self, key: K, value: V) -> Result<&V, OccupiedError<'_, V>> {
        let hash = self.hash(&key);
        let _gate = self.map.gate.enter();
        let ctx = self.ctx();
        let (mut key, mut value) = (key, value);
        loop {
            let shard = self.shard(hash);
            self.before_write(shard, &ctx);
            match shard.try_insert(hash, key, value, &ctx, &self.guard) {
                Ok(outcome) => {
                    if outcome.is_ok() {
                        self.changed(hash);
                    }
                    self.after_write(shard, &ctx);
                    return outcome.map_err(|(current, not_inserted)| OccupiedError {
                        current,
                        not_inserted,
                    });
                }
                Err(retry) => (key, value) = retry,
            }
        }
    }

    /// Removes `key`, returning its value (Go: `LoadAndDelete`). The value
    /// stays readable for the handle's life.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, "a");
    /// let pinned = map.pin();
    /// assert_eq!(pinned.remove(&1), Some(&"a"));
    /// assert_eq!(pinned.remove(&1), None);
    /// ```
    pub fn remove<Q>(&self, key: &Q) -> Option<&V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let hash = self.hash(key);
        let _gate = self.map.gate.enter();
        let ctx = self.ctx();
        loop {
            let shard = self.shard(hash);
            self.before_write(shard, &ctx);
            if let Ok(removed) = shard.remove(hash, key, &ctx, &self.guard) {
                if removed.is_some() {
                    self.changed(hash);
                }
                self.after_write(shard, &ctx);
                return removed;
            }
        }
    }

    /// Replaces the value for `key` with `new` if it equals `old` (Go:
    /// `CompareAndSwap`).
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, 10);
    /// let pinned = map.pin();
    /// assert!(pinned.compare_and_swap(&1, &10, 11));
    /// assert_eq!(pinned.get(&1), Some(&11));
    /// ```
    pub fn compare_and_swap<Q>(&self, key: &Q, old: &V, new: V) -> bool
    where
        Q: ?Sized + Hash + Equivalent<K>,
        V: PartialEq,
    {
        let hash = self.hash(key);
        let _gate = self.map.gate.enter();
        let ctx = self.ctx();
        let mut new = new;
        loop {
            let shard = self.shard(hash);
            self.before_write(shard, &ctx);
            match shard.compare_and_swap(hash, key, old, new, &ctx, &self.guard) {
                Ok(swapped) => {
                    if swapped {
                        self.changed(hash);
                    }
                    return swapped;
                }
                Err(retry) => new = retry,
            }
        }
    }

    /// Removes `key` if its value equals `old` (Go: `CompareAndDelete`).
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, 10);
    /// assert!(map.pin().compare_and_delete(&1, &10));
    /// assert!(map.is_empty());
    /// ```
    pub fn compare_and_delete<Q>(&self, key: &Q, old: &V) -> bool
    where
        Q: ?Sized + Hash + Equivalent<K>,
        V: PartialEq,
    {
        let hash = self.hash(key);
        let _gate = self.map.gate.enter();
        let ctx = self.ctx();
        loop {
            let shard = self.shard(hash);
            self.before_write(shard, &ctx);
            if let Ok(deleted) = shard.compare_and_delete(hash, key, old, &ctx, &self.guard) {
                if deleted {
                    self.changed(hash);
                }
                self.after_write(shard, &ctx);
                return deleted;
            }
        }
    }

    /// Replaces an existing value with `f(&current)`; see
    /// [`SnapMap::update`]. Returns the new value.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert("n", 1);
    /// assert_eq!(map.pin().update("n", |n| n * 10), Some(&10));
    /// ```
    pub fn update<Q>(&self, key: &Q, mut f: impl FnMut(&V) -> V) -> Option<&V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let hash = self.hash(key);
        let _gate = self.map.gate.enter();
        let ctx = self.ctx();
        loop {
            let shard = self.shard(hash);
            self.before_write(shard, &ctx);
            if let Ok(updated) = shard.update(hash, key, &mut f, &ctx, &self.guard) {
                if updated.is_some() {
                    self.changed(hash);
                }
                return updated;
            }
        }
    }

    /// Removes every entry (Go: `Clear`); see [`SnapMap::clear`].
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, 1);
    /// map.pin().clear();
    /// assert!(map.is_empty());
    /// ```
    pub fn clear(&self) {
        let _gate = self.map.gate.enter();
        let ctx = self.ctx();
        // Walk hash space shard by shard, as iteration does, so that splits
        // and merges meanwhile neither skip nor repeat a range.
        let mut cursor = Some(0u64);
        while let Some(at) = cursor {
            let shard = self.shard(at);
            self.before_write(shard, &ctx);
            if shard.clear(&ctx, &self.guard).is_ok() {
                cursor = shard.hash_range().1.checked_add(1);
                // An emptied shard merges with an emptied buddy.
                migrate::merge_cascade(&self.map.directory, shard, &ctx, &self.guard, &|buddy| {
                    self.before_write(buddy, &ctx);
                });
            }
        }
        let copied = ctx.copied.get();
        if copied > 0 {
            self.map.stripes.record_copied(copied);
        }
    }

    /// The number of entries; see [`SnapMap::len`].
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, 1);
    /// assert_eq!(map.pin().len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the map is empty; see [`SnapMap::is_empty`].
    ///
    /// ```
    /// let map: snapmap::SnapMap<u8, u8> = snapmap::SnapMap::new();
    /// assert!(map.pin().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Iterates over the entries (Go: `Range`).
    ///
    /// Each key is yielded at most once, and a key present for the whole
    /// walk is yielded exactly once. Shards are walked one at a time, each
    /// as of the moment the walk reaches it (not a snapshot of the whole
    /// map). A shard with keys not yet promoted is promoted first, as Go's
    /// `Range` does; after that, walking allocates nothing and takes no
    /// lock.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// for i in 0..10 {
    ///     map.insert(i, i * i);
    /// }
    /// let pinned = map.pin();
    /// let mut squares: Vec<_> = pinned.iter().map(|(k, v)| (*k, *v)).collect();
    /// squares.sort();
    /// assert_eq!(squares[3], (3, 9));
    /// ```
    pub fn iter(&self) -> Iter<'_, K, V> {
        Iter::new(&self.map.directory, &self.guard, self.ctx())
    }

    /// Iterates over the keys; see [`iter`](Self::iter).
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert("k", 1);
    /// assert_eq!(map.pin().keys().collect::<Vec<_>>(), [&"k"]);
    /// ```
    pub fn keys(&self) -> Keys<'_, K, V> {
        Keys::new(self.iter())
    }

    /// Iterates over the values; see [`iter`](Self::iter).
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert("k", 1);
    /// assert_eq!(map.pin().values().sum::<i32>(), 1);
    /// ```
    pub fn values(&self) -> Values<'_, K, V> {
        Values::new(self.iter())
    }
}

impl<'p, K, V, S> IntoIterator for &'p Pinned<'_, K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher,
{
    type Item = (&'p K, &'p V);
    type IntoIter = Iter<'p, K, V>;

    fn into_iter(self) -> Iter<'p, K, V> {
        self.iter()
    }
}

impl<K, V, S> Drop for Pinned<'_, K, V, S> {
    fn drop(&mut self) {
        let hits = self.read_hits.get();
        if hits != 0 {
            self.stripe.count(crate::stats::Event::ReadHits, hits);
        }
    }
}

impl<K, V, S> fmt::Debug for Pinned<'_, K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static + fmt::Debug,
    V: Send + Sync + 'static + fmt::Debug,
    S: BuildHasher,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}
