//! The upsert family's vocabulary: what a [`compute`](crate::SnapMap::compute)
//! closure asks for ([`Operation`]) and what happened ([`Compute`]).
//!
//! # The protocol
//!
//! `compute(key, f)` (papaya's `compute`, Java's `ConcurrentMap.compute`)
//! is one loop in the shard (`Shard::compute`), run as one step of the raw
//! core's write loop:
//!
//! ```text
//!   loop:
//!       entry, current = find key (lock-free in the read view; the shard
//!                        lock only to find a key still only in dirty)
//!       op = f(current)                        no lock held
//!       Insert(v), current Some(old):  CAS old -> v by identity   else retry
//!       Remove,    current Some(old):  CAS old -> deleted         else retry
//!       Insert(v), current None:       LoadOrStore(v)             else retry
//!       Remove,    current None:       Absent
//!       Abort(t):                      Aborted(t)
//! ```
//!
//! Every successful path is one atomic step on the entry's value cell that
//! succeeds only if the cell still holds what `f` saw (the very value, by
//! address, not by `PartialEq`), so the operation is **linearizable** at
//! that step, and `f` may run more than once (once per lost race). A
//! retry changes nothing: a failed step leaves the cell as it was.
//!
//! `update_or_insert` and `update_or_insert_with` are `compute` with an
//! `f` that never removes or aborts; a value meant for an absent key that
//! someone else filled meanwhile is handed back to them (not dropped), so
//! `update_or_insert` can retry with the value it was given.

/// What a [`compute`](crate::SnapMap::compute) closure asks for, given the
/// key's current value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation<V, T> {
    /// Store this value (insert if absent, replace if present).
    Insert(V),
    /// Remove the key (nothing happens if it is absent).
    Remove,
    /// Change nothing, and return this from `compute`.
    Abort(T),
}

/// What [`compute`](crate::SnapMap::compute) did. `V` is `&V` from
/// [`Pinned::compute`](crate::Pinned::compute) and an owned clone from
/// [`SnapMap::compute`](crate::SnapMap::compute).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compute<V, T> {
    /// The key was absent; this value was inserted.
    Inserted(V),
    /// The key's value `old` was replaced by `new`.
    Updated {
        /// The value replaced.
        old: V,
        /// The value stored.
        new: V,
    },
    /// The key was present with this value, and was removed.
    Removed(V),
    /// The closure asked for [`Operation::Remove`] and the key was absent:
    /// nothing changed.
    Absent,
    /// The closure asked for [`Operation::Abort`]: nothing changed.
    Aborted(T),
}

impl<V, T> Compute<V, T> {
    /// Applies `f` to every value the result holds (`cloned()` on a
    /// [`Pinned::compute`](crate::Pinned::compute) result, for example).
    ///
    /// ```
    /// use snapmap::Compute;
    ///
    /// let done: Compute<&u32, ()> = Compute::Updated { old: &1, new: &2 };
    /// assert_eq!(done.map(|v| *v + 10), Compute::Updated { old: 11, new: 12 });
    /// ```
    pub fn map<W>(self, mut f: impl FnMut(V) -> W) -> Compute<W, T> {
        match self {
            Compute::Inserted(v) => Compute::Inserted(f(v)),
            Compute::Updated { old, new } => Compute::Updated {
                old: f(old),
                new: f(new),
            },
            Compute::Removed(v) => Compute::Removed(f(v)),
            Compute::Absent => Compute::Absent,
            Compute::Aborted(t) => Compute::Aborted(t),
        }
    }
}
