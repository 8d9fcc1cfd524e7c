//! Batches: many writes that snapshots see all together or not at all.
//!
//! A batch runs inside the write gate from its first write to its last (see
//! `crate::gate`), so a snapshot build, which closes the gate, happens
//! wholly before or wholly after it: a configuration reload is
//! all-or-nothing for everyone who reads through snapshots.
//!
//! Plain reads do not use the gate. A `get` (or an iteration) while a batch
//! is being applied sees each of its writes as it lands, like any other
//! concurrent writes; read through a snapshot when you need the
//! all-or-nothing view.

use core::fmt;

/// A list of inserts and removes to apply together with
/// [`SnapMap::apply`](crate::SnapMap::apply).
///
/// ```
/// use snapmap::{Batch, SnapMap};
///
/// let map = SnapMap::new();
/// map.insert("old", 1);
/// let mut reload = Batch::new();
/// reload.insert("new", 2).remove("old");
/// let applied = map.apply(reload);
/// assert_eq!((applied.inserted, applied.removed), (1, 1));
/// assert_eq!(map.snapshot().len(), 1);
/// ```
pub struct Batch<K, V> {
    pub(crate) ops: Vec<BatchOp<K, V>>,
}

/// One write of a [`Batch`].
pub(crate) enum BatchOp<K, V> {
    Insert(K, V),
    Remove(K),
}

impl<K, V> Batch<K, V> {
    /// An empty batch.
    ///
    /// ```
    /// let batch: snapmap::Batch<u8, u8> = snapmap::Batch::new();
    /// assert!(batch.is_empty());
    /// ```
    pub fn new() -> Self {
        Batch { ops: Vec::new() }
    }

    /// An empty batch with room for `capacity` writes.
    ///
    /// ```
    /// let batch: snapmap::Batch<u8, u8> = snapmap::Batch::with_capacity(8);
    /// assert_eq!(batch.len(), 0);
    /// ```
    pub fn with_capacity(capacity: usize) -> Self {
        Batch {
            ops: Vec::with_capacity(capacity),
        }
    }

    /// Adds an insert (it replaces any value the key has when applied).
    ///
    /// ```
    /// let mut batch = snapmap::Batch::new();
    /// batch.insert(1, "a").insert(2, "b");
    /// assert_eq!(batch.len(), 2);
    /// ```
    pub fn insert(&mut self, key: K, value: V) -> &mut Self {
        self.ops.push(BatchOp::Insert(key, value));
        self
    }

    /// Adds a removal.
    ///
    /// ```
    /// let mut batch: snapmap::Batch<u8, u8> = snapmap::Batch::new();
    /// batch.remove(1);
    /// assert_eq!(batch.len(), 1);
    /// ```
    pub fn remove(&mut self, key: K) -> &mut Self {
        self.ops.push(BatchOp::Remove(key));
        self
    }

    /// The number of writes.
    ///
    /// ```
    /// assert_eq!(snapmap::Batch::<u8, u8>::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no writes.
    ///
    /// ```
    /// assert!(snapmap::Batch::<u8, u8>::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

impl<K, V> Default for Batch<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> Extend<(K, V)> for Batch<K, V> {
    /// Adds an insert for each pair.
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        self.ops
            .extend(iter.into_iter().map(|(k, v)| BatchOp::Insert(k, v)));
    }
}

impl<K, V> FromIterator<(K, V)> for Batch<K, V> {
    /// A batch of inserts.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut batch = Batch::new();
        batch.extend(iter);
        batch
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for Batch<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.ops.iter().map(|op| match op {
                BatchOp::Insert(k, v) => format!("insert {k:?} = {v:?}"),
                BatchOp::Remove(k) => format!("remove {k:?}"),
            }))
            .finish()
    }
}

/// What [`SnapMap::apply`](crate::SnapMap::apply) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Applied {
    /// Inserts of keys that were absent.
    pub inserted: usize,
    /// Inserts that replaced a value.
    pub replaced: usize,
    /// Removals of keys that were present.
    pub removed: usize,
    /// Keys whose value was already the one given, left as they were
    /// ([`SnapMap::replace_all`](crate::SnapMap::replace_all) and
    /// [`SnapMap::restore`](crate::SnapMap::restore) only).
    pub unchanged: usize,
}

/// Why [`SnapMap::apply_if`](crate::SnapMap::apply_if) applied nothing:
/// the map was written after the snapshot whose revision it was given
/// (another reload got there first, or any other write did).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RevisionConflict {
    /// The revision the batch was based on.
    pub expected: u64,
    /// The revision of the map's latest snapshot now.
    pub latest: u64,
    /// Whether the map has been written since that latest snapshot (then
    /// no snapshot has its current content yet).
    pub written_since: bool,
}

impl fmt::Display for RevisionConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the map changed after revision {}: its latest snapshot is revision {}",
            self.expected, self.latest
        )?;
        if self.written_since {
            f.write_str(", and it has been written since")?;
        }
        f.write_str("; nothing was applied (take a new snapshot and rebase the batch on it)")
    }
}

impl std::error::Error for RevisionConflict {}
