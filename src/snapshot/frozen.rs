//! The read side: a built snapshot, immutable from then on.
//!
//! A [`Snapshot`] is an `Arc` of one [`Frozen`] body: the pieces (one per
//! shard of the cut, in hash order), the slot table that maps the top hash
//! bits to a piece, and the hasher. A [`Piece`] is one shard's live entries
//! as a contiguous slice with a small hash index beside it (the layout is
//! drawn in the `snapshot` module docs). Lookups probe one piece; iteration
//! walks the slices. Nothing here changes after the build publishes it, so
//! nothing here synchronises: a snapshot is read like any immutable data.

use core::fmt;
use core::hash::{BuildHasher, Hash};
use core::iter::FusedIterator;

use equivalent::Equivalent;
use hashbrown::HashTable;

use crate::hash::DefaultHashBuilder;
use crate::shard::read_view::table_hash;
use crate::sync::Arc;
use crate::sync::stat_atomic::{AtomicIsize, Ordering as StatOrdering};

/// Bytes held by the live pieces of one map's snapshots.
#[derive(Default)]
pub(crate) struct PieceBytes(AtomicIsize);

impl PieceBytes {
    pub(super) fn add(&self, bytes: isize) {
        // Relaxed: a statistic.
        self.0.fetch_add(bytes, StatOrdering::Relaxed);
    }

    /// The current total.
    pub(crate) fn get(&self) -> usize {
        // Relaxed: a statistic.
        self.0.load(StatOrdering::Relaxed).max(0) as usize
    }
}

/// One shard, frozen.
pub(crate) struct Piece<K, V> {
    pub(super) shard_id: u64,
    pub(super) version: u64,
    pub(super) entries: Box<[(K, V)]>,
    /// `(hash, position in entries)`, hashed by `table_hash`.
    pub(super) index: HashTable<(u64, u32)>,
    pub(super) bytes: usize,
    pub(super) account: Arc<PieceBytes>,
}

impl<K, V> Piece<K, V> {
    fn get<Q: ?Sized + Equivalent<K>>(&self, hash: u64, key: &Q) -> Option<&(K, V)> {
        let (_, i) = self.index.find(table_hash(hash), |&(h, i)| {
            h == hash && key.equivalent(&self.entries[i as usize].0)
        })?;
        Some(&self.entries[*i as usize])
    }
}

impl<K, V> Drop for Piece<K, V> {
    fn drop(&mut self) {
        self.account.add(-(self.bytes as isize));
    }
}

/// The shared body of a snapshot.
pub(crate) struct Frozen<K, V, S> {
    pub(super) pieces: Box<[Arc<Piece<K, V>>]>,
    /// The piece holding each `2^depth` slice of hash space.
    pub(super) slots: Box<[u32]>,
    /// How many top hash bits index `slots` (the directory's depth when the
    /// snapshot was built).
    pub(super) depth: u32,
    pub(super) len: usize,
    /// The write gate's change word at this snapshot's cut (its stamp):
    /// while the word still equals it, nothing has changed since.
    pub(super) stamp: u64,
    pub(super) hasher: S,
}

/// An immutable, consistent copy of a [`SnapMap`](crate::SnapMap), from
/// [`SnapMap::snapshot`](crate::SnapMap::snapshot).
///
/// It is one point in time: every write, and every
/// [batch](crate::SnapMap::apply), is wholly in it or wholly absent. It owns
/// its data (`'static`), is `Send + Sync`, and clones in O(1):
///
/// ```
/// fn assert_static_send_sync<T: Send + Sync + 'static>(_: &T) {}
/// let map = snapmap::SnapMap::new();
/// map.insert("listen".to_string(), "0.0.0.0:80".to_string());
/// let snapshot = map.snapshot();
/// assert_static_send_sync(&snapshot);
/// map.insert("listen".to_string(), "0.0.0.0:8080".to_string());
/// drop(map);
/// // The snapshot outlives the map and still shows the old value.
/// assert_eq!(snapshot.get("listen").map(String::as_str), Some("0.0.0.0:80"));
/// ```
///
/// A snapshot cannot borrow from the map, so nothing about it is tied to
/// the map's lifetime; but its entries are tied to it:
///
/// ```compile_fail
/// let snapshot = snapmap::SnapMap::<u64, u64>::new().snapshot();
/// let value: &u64 = {
///     let copy = snapshot.clone();
///     copy.get(&1).unwrap()
/// }; // `copy` dropped while borrowed
/// println!("{value}");
/// ```
pub struct Snapshot<K, V, S = DefaultHashBuilder> {
    pub(super) frozen: Arc<Frozen<K, V, S>>,
}

impl<K, V, S> Clone for Snapshot<K, V, S> {
    /// Another handle to the same snapshot (an `Arc` clone).
    fn clone(&self) -> Self {
        Snapshot {
            frozen: self.frozen.clone(),
        }
    }
}

impl<K, V, S> Snapshot<K, V, S> {
    /// The number of entries.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, 1);
    /// assert_eq!(map.snapshot().len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.frozen.len
    }

    /// This snapshot's revision: the number of the build that made it,
    /// larger for every later build of the same map. A snapshot returned
    /// again because nothing changed has the same revision. Give it to
    /// [`SnapMap::apply_if`](crate::SnapMap::apply_if) to apply a batch
    /// only if the map is still what this snapshot holds.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, 1);
    /// let a = map.snapshot();
    /// assert_eq!(map.snapshot().revision(), a.revision()); // unchanged
    /// map.insert(1, 2);
    /// assert!(map.snapshot().revision() > a.revision());
    /// ```
    pub fn revision(&self) -> u64 {
        crate::gate::revision_of(self.frozen.stamp)
    }

    /// The write gate's change word at this snapshot's cut (see
    /// `crate::gate`, "The change word").
    #[inline]
    pub(crate) fn stamp(&self) -> u64 {
        self.frozen.stamp
    }

    /// Whether the snapshot has no entries.
    ///
    /// ```
    /// let map: snapmap::SnapMap<u8, u8> = snapmap::SnapMap::new();
    /// assert!(map.snapshot().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.frozen.len == 0
    }

    /// Iterates over the entries: a walk over contiguous slices, with no
    /// allocation and no lock. The order is unspecified.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, 10);
    /// map.insert(2, 20);
    /// let total: i32 = map.snapshot().iter().map(|(_, v)| v).sum();
    /// assert_eq!(total, 30);
    /// ```
    pub fn iter(&self) -> SnapshotIter<'_, K, V> {
        SnapshotIter {
            pieces: self.frozen.pieces.iter(),
            current: [].iter(),
            remaining: self.frozen.len,
        }
    }

    /// Iterates over the keys.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert("k", 1);
    /// assert_eq!(map.snapshot().keys().collect::<Vec<_>>(), [&"k"]);
    /// ```
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &K> + FusedIterator + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// Iterates over the values.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert("k", 1);
    /// assert_eq!(map.snapshot().values().sum::<i32>(), 1);
    /// ```
    pub fn values(&self) -> impl ExactSizeIterator<Item = &V> + FusedIterator + '_ {
        self.iter().map(|(_, v)| v)
    }

    /// Whether two handles are the same snapshot (not just equal contents).
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, 1);
    /// let (a, b) = (map.snapshot(), map.snapshot());
    /// assert!(snapmap::Snapshot::ptr_eq(&a, &b)); // nothing changed in between
    /// ```
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.frozen, &b.frozen)
    }
}

impl<K, V, S: BuildHasher> Snapshot<K, V, S> {
    /// The value for `key`, as of the snapshot.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(String::from("a"), 1);
    /// let snapshot = map.snapshot();
    /// map.insert(String::from("a"), 2);
    /// assert_eq!(snapshot.get("a"), Some(&1));
    /// ```
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        self.get_key_value(key).map(|(_, v)| v)
    }

    /// The stored key and value for `key`.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(String::from("a"), 1);
    /// let snapshot = map.snapshot();
    /// assert_eq!(snapshot.get_key_value("a"), Some((&"a".to_string(), &1)));
    /// ```
    pub fn get_key_value<Q>(&self, key: &Q) -> Option<(&K, &V)>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let hash = self.frozen.hasher.hash_one(key);
        let slot = ((hash >> (63 - self.frozen.depth)) >> 1) as usize;
        let piece = self.frozen.slots[slot] as usize;
        self.frozen.pieces[piece]
            .get(hash, key)
            .map(|(k, v)| (k, v))
    }

    /// Whether `key` is in the snapshot.
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, ());
    /// assert!(map.snapshot().contains_key(&1));
    /// ```
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        self.get(key).is_some()
    }
}

impl<'s, K, V, S> IntoIterator for &'s Snapshot<K, V, S> {
    type Item = (&'s K, &'s V);
    type IntoIter = SnapshotIter<'s, K, V>;

    fn into_iter(self) -> SnapshotIter<'s, K, V> {
        self.iter()
    }
}

impl<K: fmt::Debug, V: fmt::Debug, S> fmt::Debug for Snapshot<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(feature = "serde")]
impl<K: serde::Serialize, V: serde::Serialize, S> serde::Serialize for Snapshot<K, V, S> {
    /// Serialises as a map.
    fn serialize<Ser: serde::Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        serializer.collect_map(self.iter())
    }
}

/// An iterator over a snapshot's entries, from [`Snapshot::iter`].
pub struct SnapshotIter<'s, K, V> {
    pieces: core::slice::Iter<'s, Arc<Piece<K, V>>>,
    current: core::slice::Iter<'s, (K, V)>,
    remaining: usize,
}

impl<'s, K, V> Iterator for SnapshotIter<'s, K, V> {
    type Item = (&'s K, &'s V);

    #[inline]
    fn next(&mut self) -> Option<(&'s K, &'s V)> {
        loop {
            if let Some((k, v)) = self.current.next() {
                self.remaining -= 1;
                return Some((k, v));
            }
            self.current = self.pieces.next()?.entries.iter();
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<K, V> ExactSizeIterator for SnapshotIter<'_, K, V> {}
impl<K, V> FusedIterator for SnapshotIter<'_, K, V> {}

impl<K, V> fmt::Debug for SnapshotIter<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotIter")
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}
