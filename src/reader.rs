//! The reader handle: a thread's cached snapshot, refreshed only when the
//! map has changed (in the spirit of `arc_swap::Cache`).
//!
//! A [`Reader`] holds the last [`Snapshot`] it was given and the snapshot's
//! **stamp**, the write gate's change word at its cut (`crate::gate`, "The
//! change word"). Every access first loads the map's change word and
//! compares it with the stamp:
//!
//! - **equal**: no write has entered the map since the snapshot's cut, so
//!   the snapshot *is* the map's current content. The reader answers from
//!   it: one load of a line that writers only read, a compare, and the
//!   snapshot's own lookup. No reference count is touched, nothing is
//!   written, nothing allocated.
//! - **different**: the reader asks the map for a snapshot
//!   ([`SnapMap::snapshot`](crate::SnapMap::snapshot)), which returns the map's cached one if another
//!   reader already had it built (an `Arc` clone), or builds one (O(changed
//!   shards)), and keeps it.
//!
//! So a reader always answers from a snapshot that was current at the
//! moment of the check: its lookups are linearizable, like the map's own,
//! and several lookups through one [`Reader::snapshot`] borrow see one
//! consistent state (a configuration reload is never seen half done).
//!
//! Where a lookup's instructions go (`lookup_cost snapmap-reader`, 10K
//! keys, 43.3 against 35.2 for `ArcSwap<HashMap>` loaded once per 1,024
//! lookups): the check (four: the map, its change word, the stamp, the
//! branch), the slot table's step (about six), the key stored for the
//! out-of-line rest of the lookup (one), and the handle's fields loaded
//! from memory on every lookup. Those stay in memory because the loop
//! holds the call to [`Reader::refresh`], which writes them; loading the
//! change word `Relaxed` instead of `Acquire` (which would be enough: the
//! snapshot held was synchronised with when it was taken) compiled to the
//! same instructions, so it was not changed.
//!
//! The cost of a refresh is paid by the first reader that reads after a
//! write, not by the writer; a map that is written continuously gives its
//! readers a snapshot build (or at least a snapshot clone) per read, and
//! suits `pin().get` better.

use core::fmt;
use core::hash::{BuildHasher, Hash};

use equivalent::Equivalent;

use crate::raw::RawMap;
use crate::snapshot::Snapshot;
use crate::snapshot::frozen::Slots;

/// A cached snapshot of a [`SnapMap`](crate::SnapMap) that refreshes itself when the map
/// changes, from [`SnapMap::reader`](crate::SnapMap::reader). See the module docs.
///
/// One per thread: the handle is cheap to make and to keep (it holds one
/// snapshot), and it is `Send`, so it can move with a task, but its methods
/// take `&mut self`, so it is not shared.
///
/// ```
/// use std::sync::Arc;
///
/// let map = Arc::new(snapmap::SnapMap::new());
/// map.insert("cert", 1);
/// map.insert("key", 1);
///
/// let reloader = {
///     let map = map.clone();
///     std::thread::spawn(move || {
///         for version in 2..100 {
///             // A reload: both keys change in one batch.
///             map.batch(|b| {
///                 b.insert("cert", version);
///                 b.insert("key", version);
///             });
///         }
///     })
/// };
/// let mut reader = map.reader();
/// for _ in 0..1000 {
///     // One consistent view: never a new "cert" with an old "key".
///     let config = reader.snapshot();
///     assert_eq!(config.get("cert"), config.get("key"));
/// }
/// reloader.join().unwrap();
/// assert_eq!(reader.get("cert"), Some(&99));
/// ```
pub struct Reader<'m, K, V, S> {
    raw: &'m RawMap<K, V, S>,
    snapshot: Snapshot<K, V, S>,
    /// Copied out of `snapshot` at each refresh: its stamp, its slot table
    /// and its hasher. A lookup then goes from the handle to the slot
    /// without loading the snapshot's body first (one dependent load
    /// fewer per lookup; see [`Reader::get`]).
    stamp: u64,
    slots: Slots<K, V>,
    hasher: S,
}

impl<'m, K, V, S> Reader<'m, K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Clone,
{
    pub(crate) fn new(raw: &'m RawMap<K, V, S>) -> Self {
        Self::holding(raw, raw.snapshot())
    }

    /// A handle holding `snapshot`, with its lookup fields copied out.
    fn holding(raw: &'m RawMap<K, V, S>, snapshot: Snapshot<K, V, S>) -> Self {
        Reader {
            raw,
            stamp: snapshot.stamp(),
            slots: snapshot.slots(),
            hasher: snapshot.hasher().clone(),
            snapshot,
        }
    }

    /// Holds `snapshot` from now on (its lookup fields with it).
    fn hold(&mut self, snapshot: Snapshot<K, V, S>) {
        self.stamp = snapshot.stamp();
        self.slots = snapshot.slots();
        self.snapshot = snapshot;
    }

    /// The map's current content, as a snapshot: the cached one if the map
    /// has not changed since it was taken, otherwise a fresh one.
    ///
    /// Like [`SnapMap::snapshot`](crate::SnapMap::snapshot), this panics when called inside a batch or
    /// a write closure of the same map (a refresh would wait for itself).
    #[inline]
    pub fn snapshot(&mut self) -> &Snapshot<K, V, S> {
        if !self.is_current() {
            self.refresh();
        }
        &self.snapshot
    }

    /// The value for `key` in the map's current content (see
    /// [`snapshot`](Self::snapshot)).
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert(1, "a");
    /// let mut reader = map.reader();
    /// assert_eq!(reader.get(&1), Some(&"a"));
    /// map.insert(1, "b");
    /// assert_eq!(reader.get(&1), Some(&"b"));
    /// ```
    ///
    /// The same lookup as [`Snapshot::get`] on [`snapshot`](Self::snapshot),
    /// with the snapshot's slot table, shift and hasher kept in the handle:
    /// the lookup does not load the snapshot's body.
    #[inline]
    pub fn get<Q>(&mut self, key: &Q) -> Option<&V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        if !self.is_current() {
            self.refresh();
        }
        let hash = self.hasher.hash_one(key);
        // SAFETY: `slots` is `self.snapshot`'s (`hold` keeps them
        // together), which lives as long as the borrow of `self`.
        unsafe { self.slots.get(hash, key) }.map(|(_, v)| v)
    }

    /// Whether `key` is in the map's current content.
    #[inline]
    pub fn contains_key<Q>(&mut self, key: &Q) -> bool
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        self.get(key).is_some()
    }

    /// Whether the cached snapshot is still the map's current content (no
    /// write has entered the map since its cut). One load and a compare.
    #[inline]
    pub fn is_current(&self) -> bool {
        self.raw.gate.unchanged_since(self.stamp)
    }

    /// The cached snapshot, as it is: possibly older than the map (no check).
    pub fn cached(&self) -> &Snapshot<K, V, S> {
        &self.snapshot
    }

    /// Replaces the cached snapshot with the map's current one.
    #[cold]
    pub fn refresh(&mut self) {
        self.hold(self.raw.snapshot());
    }

    /// Blocks until the map holds something the cached snapshot does not,
    /// for at most `timeout`, and caches the newer snapshot: `true` if it
    /// did, `false` on timeout (the cache is then unchanged). Returns at
    /// once if the cache is already out of date. See
    /// [`SnapMap::wait_for_change`](crate::SnapMap::wait_for_change).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let map = snapmap::SnapMap::new();
    /// map.insert("limit", 10);
    /// let mut reader = map.reader();
    /// assert!(!reader.wait_for_change_timeout(Duration::from_millis(10)));
    /// map.insert("limit", 20);
    /// assert!(reader.wait_for_change_timeout(Duration::from_secs(10)));
    /// assert_eq!(reader.cached().get("limit"), Some(&20));
    /// ```
    pub fn wait_for_change_timeout(&mut self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now().checked_add(timeout);
        match self.raw.wait_for_change(self.snapshot.revision(), deadline) {
            Some(newer) => {
                self.hold(newer);
                true
            }
            None => false,
        }
    }

    /// Waits (as a future, on any runtime) until the map holds something
    /// the cached snapshot does not, caches the newer snapshot and returns
    /// it. See [`SnapMap::changed`](crate::SnapMap::changed). Not in loom
    /// builds.
    ///
    /// ```
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     struct Unpark(std::thread::Thread);
    /// #     impl std::task::Wake for Unpark {
    /// #         fn wake(self: std::sync::Arc<Self>) { self.0.unpark() }
    /// #     }
    /// #     let waker = std::sync::Arc::new(Unpark(std::thread::current())).into();
    /// #     let mut cx = std::task::Context::from_waker(&waker);
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop {
    /// #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; }
    /// #         std::thread::park();
    /// #     }
    /// # }
    /// let map = snapmap::SnapMap::new();
    /// map.insert("limit", 10);
    /// let mut reader = map.reader();
    /// std::thread::scope(|s| {
    ///     s.spawn(|| map.insert("limit", 20));
    ///     let config = block_on(reader.changed());
    ///     assert_eq!(config.get("limit"), Some(&20));
    /// });
    /// ```
    #[cfg(not(snapmap_loom))]
    #[allow(
        clippy::manual_async_fn,
        reason = "the signature promises `Send`, as `SnapMap::changed`'s does"
    )]
    pub fn changed(&mut self) -> impl Future<Output = &Snapshot<K, V, S>> + Send + '_
    where
        S: Send + Sync,
    {
        async move {
            let newer = self.raw.changed(self.snapshot.revision()).await;
            self.hold(newer);
            &self.snapshot
        }
    }
}

impl<K, V, S: Clone> Clone for Reader<'_, K, V, S> {
    fn clone(&self) -> Self {
        Reader {
            raw: self.raw,
            snapshot: self.snapshot.clone(),
            stamp: self.stamp,
            slots: self.slots,
            hasher: self.hasher.clone(),
        }
    }
}

impl<K, V, S> fmt::Debug for Reader<'_, K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("cached_len", &self.snapshot.len())
            .finish_non_exhaustive()
    }
}
