//! The standard traits people expect of a map: `Clone`, `PartialEq`/`Eq`
//! (for [`SnapMap`] and [`Snapshot`]) and an owned `IntoIterator` for
//! [`SnapMap`].
//!
//! What each promises about concurrent writers:
//!
//! - **`SnapMap::clone`** and **`SnapMap == SnapMap`** read through a pinned
//!   walk, as `Debug` and `Serialize` do: each shard as of when the walk
//!   reaches it, not one point in time (exact when nobody writes
//!   meanwhile). For one point in time, clone or compare snapshots.
//! - **`Snapshot == Snapshot`** compares two fixed contents: exact.
//! - **`SnapMap::into_iter`** owns the map, so nobody else can write: it
//!   moves every key and value out (no `Clone` needed).

use core::hash::{BuildHasher, Hash};
use core::iter::FusedIterator;

use crate::map::SnapMap;
use crate::snapshot::Snapshot;

impl<K, V, S> Clone for SnapMap<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Clone,
{
    /// A new map with the same options (initial shards, shard capacity,
    /// promotion threshold, `max_shards`), a clone of the hasher, and a
    /// clone of every entry, pre-sized ([`SnapMap::reserve`]) so that
    /// filling it splits no shard.
    ///
    /// The entries come from a pinned walk of `self`: each shard as of
    /// when the walk reaches it (not one point in time while others write;
    /// `SnapMap::from_iter(map.snapshot().iter().map(..))` is). Takes no
    /// lock on `self` beyond iteration's (a shard with new keys pending is
    /// promoted first).
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert("a", 1);
    /// let copy = map.clone();
    /// map.insert("a", 2);
    /// assert_eq!(copy.get("a"), Some(1));
    /// assert_ne!(copy, map);
    /// ```
    fn clone(&self) -> Self {
        let raw = &self.raw;
        let copy = SnapMap::from_parts(
            raw.directory.min_depth,
            raw.directory.max_depth,
            raw.capacity,
            raw.promote_after,
            raw.directory.huge_pages,
            raw.inline_values,
            raw.hasher.clone(),
        );
        copy.reserve(self.len());
        let pinned = self.pin();
        (&copy).extend(pinned.iter().map(|(k, v)| (k.clone(), v.clone())));
        copy
    }
}

impl<K, V, S1, S2> PartialEq<SnapMap<K, V, S2>> for SnapMap<K, V, S1>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: PartialEq + Send + Sync + 'static,
    S1: BuildHasher,
    S2: BuildHasher,
{
    /// Whether both maps hold the same keys with equal values (the hashers
    /// may differ). Walks `self` and looks every key up in `other`, then
    /// counts `other`'s entries: O(len), lock-free on promoted shards.
    ///
    /// Both are pinned walks (shard by shard, see the module docs): exact
    /// when neither map is written meanwhile; compare snapshots for one
    /// point in time.
    ///
    /// ```
    /// let a: snapmap::SnapMap<u32, &str> = [(1, "x"), (2, "y")].into_iter().collect();
    /// let b: snapmap::SnapMap<u32, &str> = [(2, "y"), (1, "x")].into_iter().collect();
    /// assert_eq!(a, b);
    /// b.insert(3, "z");
    /// assert_ne!(a, b);
    /// ```
    fn eq(&self, other: &SnapMap<K, V, S2>) -> bool {
        let (mine, theirs) = (self.pin(), other.pin());
        let mut count = 0usize;
        for (key, value) in mine.iter() {
            count += 1;
            if theirs.get(key) != Some(value) {
                return false;
            }
        }
        count == theirs.iter().count()
    }
}

impl<K, V, S> Eq for SnapMap<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Eq + Send + Sync + 'static,
    S: BuildHasher,
{
}

impl<K, V, S1, S2> PartialEq<Snapshot<K, V, S2>> for Snapshot<K, V, S1>
where
    K: Hash + Eq,
    V: PartialEq,
    S2: BuildHasher,
{
    /// Whether both snapshots hold the same keys with equal values (exact:
    /// both are fixed; the hashers may differ). Compares the lengths, then
    /// walks `self` with a lookup in `other` per entry. (To ask whether two
    /// handles are the same snapshot, in O(1), use [`Snapshot::ptr_eq`].)
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert("a", 1);
    /// let before = map.snapshot();
    /// map.insert("a", 2);
    /// assert_ne!(before, map.snapshot());
    /// map.insert("a", 1);
    /// assert_eq!(before, map.snapshot()); // equal content, another snapshot
    /// ```
    fn eq(&self, other: &Snapshot<K, V, S2>) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .all(|(key, value)| other.get(key) == Some(value))
    }
}

impl<K, V, S> Eq for Snapshot<K, V, S>
where
    K: Hash + Eq,
    V: Eq,
    S: BuildHasher,
{
}

/// The owned iterator of a [`SnapMap`], from its `IntoIterator`: every
/// entry, moved out, in no particular order.
pub struct IntoIter<K, V> {
    entries: std::vec::IntoIter<(K, V)>,
}

impl<K, V, S> IntoIterator for SnapMap<K, V, S> {
    type Item = (K, V);
    type IntoIter = IntoIter<K, V>;

    /// Consumes the map and yields every entry, moved out (no `Clone`).
    ///
    /// The entries are moved into one `Vec` first (the map owns them in
    /// shard tables that must be emptied before the map drops), then
    /// yielded from it: O(len) time and one allocation of `len` pairs.
    /// Nothing else can reach the map, so this is exact and takes no lock.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(String::from("a"), vec![1]);
    /// map.insert(String::from("b"), vec![2]);
    /// let mut entries: Vec<(String, Vec<i32>)> = map.into_iter().collect();
    /// entries.sort();
    /// assert_eq!(entries, [("a".into(), vec![1]), ("b".into(), vec![2])]);
    /// ```
    fn into_iter(mut self) -> IntoIter<K, V> {
        let mut entries = Vec::with_capacity(self.len());
        self.raw.directory.for_each_shard_exclusive(|shard| {
            // SAFETY: we own the map (`self` by value), and every reference
            // it handed out borrowed it, so none is alive. The shards are
            // left empty, so the map's `Drop` after this frees no entry
            // twice.
            unsafe { shard.drain_entries_exclusive(&mut entries) };
        });
        IntoIter {
            entries: entries.into_iter(),
        }
    }
}

impl<K, V> Iterator for IntoIter<K, V> {
    type Item = (K, V);

    #[inline]
    fn next(&mut self) -> Option<(K, V)> {
        self.entries.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl<K, V> ExactSizeIterator for IntoIter<K, V> {}
impl<K, V> FusedIterator for IntoIter<K, V> {}

impl<K: core::fmt::Debug, V: core::fmt::Debug> core::fmt::Debug for IntoIter<K, V> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.entries.as_slice()).finish()
    }
}
