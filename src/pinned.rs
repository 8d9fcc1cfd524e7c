//! The pinned handle: many operations under one epoch pin, returning
//! references.

use core::cell::Cell;
use core::fmt;
use core::hash::{BuildHasher, Hash};

use equivalent::Equivalent;

use crate::compute::{Compute, Operation};
use crate::iter::{Iter, Keys, Values};
use crate::map::SnapMap;
use crate::raw::{RawMap, Written};
use crate::shard::Removal;
use crate::stats::Stripe;
use crate::sync::epoch::{self, Guard};

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
    /// Whether this thread owns `stripe`'s hit counter (`crate::stats`).
    owns_hits: bool,
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

// The two `SnapMap` methods that hand out a `Pinned` live with the handle,
// so that the face modules import each other one way only (`pinned` ->
// `map`).
impl<K, V, S> SnapMap<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher,
{
    /// Pins the current thread and returns a handle whose methods return
    /// references valid for as long as the handle lives.
    ///
    /// Pinning costs a fence; a handle amortises it over many operations,
    /// and read hits through a handle write no shared memory at all. Do not
    /// hold a handle for long periods: memory retired while any handle is
    /// pinned is freed only after it is dropped.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert("k", vec![1, 2, 3]);
    /// let pinned = map.pin();
    /// let v: &Vec<i32> = pinned.get("k").unwrap(); // no clone
    /// assert_eq!(v.len(), 3);
    /// ```
    #[inline]
    pub fn pin(&self) -> Pinned<'_, K, V, S> {
        Pinned::new(self)
    }

    /// Runs `f` as one batch: every write it makes through the handle (or
    /// through the map, from this thread) is all-or-nothing for snapshots.
    ///
    /// If `f` panics, the writes it made so far stay applied and become
    /// visible to snapshots together.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert("from", 100);
    /// map.insert("to", 0);
    /// map.batch(|m| {
    ///     m.update("from", |v| v - 30);
    ///     m.update("to", |v| v + 30);
    /// });
    /// let s = map.snapshot();
    /// assert_eq!((s.get("from"), s.get("to")), (Some(&70), Some(&30)));
    /// ```
    pub fn batch<R>(&self, f: impl FnOnce(&Pinned<'_, K, V, S>) -> R) -> R {
        let _gate = self.raw.enter_batch();
        f(&self.pin())
    }
}

impl<'m, K, V, S> Pinned<'m, K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher,
{
    #[inline]
    pub(crate) fn new(map: &'m SnapMap<K, V, S>) -> Self {
        let (stripe, owns_hits) = map.raw.stripes.mine_for_hits();
        Pinned {
            map,
            guard: epoch::pin(),
            stripe,
            owns_hits,
            read_hits: Cell::new(0),
        }
    }

    /// The handle's epoch guard (for walks the crate builds itself).
    #[cfg(feature = "rayon")]
    pub(crate) fn guard(&self) -> &Guard {
        &self.guard
    }

    /// The raw core (`crate::raw`), which does the work of every method.
    #[inline]
    fn raw(&self) -> &'m RawMap<K, V, S> {
        &self.map.raw
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
        let raw = self.raw();
        let (found, hit) = raw.get(raw.hash(key), key, &self.guard, self.stripe);
        if hit {
            self.read_hits.set(self.read_hits.get() + 1);
        }
        found
    }

    /// The stored key and the value for `key` (the stored key may differ
    /// from the one looked up: `String` against `&str`, or a key whose `Eq`
    /// ignores some fields). Linearizable; a read-view hit takes no lock,
    /// as [`get`](Self::get).
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(String::from("one"), 1);
    /// let pinned = map.pin();
    /// let (key, value): (&String, &i32) = pinned.get_key_value("one").unwrap();
    /// assert_eq!((key.as_str(), *value), ("one", 1));
    /// ```
    #[inline]
    pub fn get_key_value<Q>(&self, key: &Q) -> Option<(&K, &V)>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let raw = self.raw();
        let guard = &self.guard;
        let (found, hit) = raw.get_with(raw.hash(key), key, guard, self.stripe, |entry, guard| {
            entry.load(guard).map(|value| (entry.key(), value))
        });
        if hit {
            self.read_hits.set(self.read_hits.get() + 1);
        }
        found
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
        let raw = self.raw();
        raw.insert(raw.hash(&key), key, value, &self.guard, self.stripe)
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
        let raw = self.raw();
        let hash = raw.hash(&key);
        let guard = &self.guard;
        let outcome = raw.write(
            hash,
            guard,
            self.stripe,
            (key, value),
            |shard, (key, value), ctx| {
                let outcome = shard.try_insert(hash, key, value, ctx, guard)?;
                let stored = outcome.is_ok();
                Ok(Written::new(outcome, stored))
            },
        );
        outcome.map_err(|(current, _key, not_inserted)| OccupiedError {
            current,
            not_inserted,
        })
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
        self.remove_entry(key).map(|(_, value)| value)
    }

    /// Removes `key`, returning the key and value it held (Go:
    /// `LoadAndDelete`, with the stored key). Both stay readable for the
    /// handle's life.
    ///
    /// Linearizable. Lock-free for a key in the read view; takes the shard
    /// lock for a key still only in the dirty table.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(String::from("a"), 1);
    /// let pinned = map.pin();
    /// assert_eq!(pinned.remove_entry("a"), Some((&String::from("a"), &1)));
    /// assert_eq!(pinned.remove_entry("a"), None);
    /// ```
    pub fn remove_entry<Q>(&self, key: &Q) -> Option<(&K, &V)>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let raw = self.raw();
        raw.remove(raw.hash(key), key, &self.guard, self.stripe)
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
        let raw = self.raw();
        let hash = raw.hash(key);
        let guard = &self.guard;
        raw.write(hash, guard, self.stripe, new, |shard, new, ctx| {
            let swapped = shard.compare_and_swap(hash, key, old, new, ctx, guard)?;
            Ok(Written::new(swapped, swapped))
        })
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
        let raw = self.raw();
        let hash = raw.hash(key);
        let guard = &self.guard;
        raw.write(hash, guard, self.stripe, (), |shard, (), ctx| {
            let deleted = shard
                .compare_and_delete(hash, key, old, ctx, guard)
                .map_err(|_| ())?;
            Ok(Written::new(deleted, deleted))
        })
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
        let raw = self.raw();
        let hash = raw.hash(key);
        let guard = &self.guard;
        raw.write(hash, guard, self.stripe, (), |shard, (), ctx| {
            let updated = shard
                .update(hash, key, &mut f, ctx, guard)
                .map_err(|_| ())?;
            Ok(Written::new(updated, updated.is_some()))
        })
    }

    /// Inserts, updates or removes `key` in one linearizable step, as
    /// `decide` says given the current value; see [`SnapMap::compute`].
    /// The values in the result live as long as the handle.
    ///
    /// ```
    /// use snapmap::{Compute, Operation};
    ///
    /// let map = snapmap::SnapMap::new();
    /// let pinned = map.pin();
    /// let add_one = |current: Option<&u32>| Operation::<u32, ()>::Insert(current.map_or(1, |n| n + 1));
    /// assert_eq!(pinned.compute("hits", add_one), Compute::Inserted(&1));
    /// assert_eq!(pinned.compute("hits", add_one), Compute::Updated { old: &1, new: &2 });
    /// ```
    pub fn compute<T>(
        &self,
        key: K,
        mut decide: impl FnMut(Option<&V>) -> Operation<V, T>,
    ) -> Compute<&V, T> {
        self.compute_with(key, &mut |current| decide(current), &mut drop)
    }

    /// [`compute`](Self::compute) with `unused`, which gets back a value
    /// `decide` meant for an absent key that another thread filled first
    /// (`decide` then runs again on that thread's value).
    fn compute_with<'p, T>(
        &'p self,
        key: K,
        decide: &mut impl FnMut(Option<&'p V>) -> Operation<V, T>,
        unused: &mut impl FnMut(V),
    ) -> Compute<&'p V, T> {
        let raw = self.raw();
        let hash = raw.hash(&key);
        let guard = &self.guard;
        raw.write(hash, guard, self.stripe, key, |shard, key, ctx| {
            let done = shard.compute(hash, key, decide, unused, ctx, guard)?;
            let changed = !matches!(done, Compute::Absent | Compute::Aborted(_));
            Ok(Written::new(done, changed))
        })
    }

    /// Replaces the value of `key` with `update(&current)`, or inserts
    /// `value` if the key is absent, and returns the value stored; see
    /// [`SnapMap::update_or_insert`].
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// let pinned = map.pin();
    /// assert_eq!(pinned.update_or_insert("n", |n| n + 1, 1), &1);
    /// assert_eq!(pinned.update_or_insert("n", |n| n + 1, 1), &2);
    /// ```
    pub fn update_or_insert(&self, key: K, mut update: impl FnMut(&V) -> V, value: V) -> &V {
        // The value goes back into the slot when another thread fills the
        // key first, and `update` then runs on that thread's value.
        let slot = Cell::new(Some(value));
        let done = self.compute_with(
            key,
            &mut |current| {
                Operation::<V, core::convert::Infallible>::Insert(match current {
                    Some(current) => update(current),
                    None => slot
                        .take()
                        .expect("the value is handed back on a lost race"),
                })
            },
            &mut |back| slot.set(Some(back)),
        );
        match done {
            Compute::Inserted(new) | Compute::Updated { new, .. } => new,
            Compute::Removed(_) | Compute::Absent | Compute::Aborted(_) => {
                unreachable!("update_or_insert only inserts")
            }
        }
    }

    /// Replaces the value of `key` with `update(&current)`, or inserts
    /// `make()` if the key is absent, and returns the value stored; see
    /// [`SnapMap::update_or_insert_with`]. `make` runs at most once.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// let pinned = map.pin();
    /// assert_eq!(pinned.update_or_insert_with("n", |n| n + 1, || 1), &1);
    /// assert_eq!(pinned.update_or_insert_with("n", |n| n + 1, || unreachable!()), &2);
    /// ```
    pub fn update_or_insert_with(
        &self,
        key: K,
        mut update: impl FnMut(&V) -> V,
        make: impl FnOnce() -> V,
    ) -> &V {
        let slot = Cell::new(None);
        let mut make = Some(make);
        let done = self.compute_with(
            key,
            &mut |current| {
                Operation::<V, core::convert::Infallible>::Insert(match current {
                    Some(current) => update(current),
                    None => slot.take().unwrap_or_else(|| {
                        (make.take().expect("made once; handed back on a lost race"))()
                    }),
                })
            },
            &mut |back| slot.set(Some(back)),
        );
        match done {
            Compute::Inserted(new) | Compute::Updated { new, .. } => new,
            Compute::Removed(_) | Compute::Absent | Compute::Aborted(_) => {
                unreachable!("update_or_insert_with only inserts")
            }
        }
    }

    /// Keeps only the entries for which `keep` returns true; see
    /// [`SnapMap::retain`].
    ///
    /// ```
    /// let map: snapmap::SnapMap<u32, u32> = (0..10).map(|i| (i, i)).collect();
    /// let pinned = map.pin();
    /// pinned.retain(|_, v| v % 2 == 0);
    /// assert_eq!(pinned.len(), 5);
    /// ```
    pub fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        let raw = self.raw();
        let guard = &self.guard;
        for (key, seen) in self.iter() {
            let mut seen = seen;
            while !keep(key, seen) {
                let hash = raw.hash(key);
                let removal = raw.write(hash, guard, self.stripe, (), |shard, (), ctx| {
                    let removal = shard
                        .remove_if_same(hash, key, key, seen, ctx, guard)
                        .map_err(|_| ())?;
                    let removed = matches!(removal, Removal::Removed);
                    Ok(Written::new(removal, removed))
                });
                match removal {
                    // Moved, not written: the predicate sees the same
                    // value again, at its new address.
                    Removal::Moved(current) => seen = current,
                    Removal::Removed | Removal::Kept => break,
                }
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
        self.raw().clear(&self.guard, self.stripe);
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
        let raw = self.raw();
        Iter::new(&raw.directory, &self.guard, raw.ctx(self.stripe))
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
            self.stripe.count_hits(hits, self.owns_hits);
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
