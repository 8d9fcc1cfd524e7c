//! The faces: [`Mirror`] (owns the task), [`MirrorView`] (a cheap,
//! clonable read handle) and [`MirrorSnapshot`] (a snapmap snapshot with
//! the etcd revision it shows).
//!
//! # The (snapshot, etcd revision) pair
//!
//! The mirror's task is the map's only writer. After each batch (one etcd
//! revision, or a full load) it takes the map's snapshot itself and
//! publishes it with the revision in one `ArcSwap` store. Readers load the
//! pair, so the revision they get is by construction the one whose content
//! they see: there is no window in which the map holds revision `n + 1`
//! while the published revision still says `n`, because readers never see
//! the live map's snapshots, only published pairs. The cost is one snapshot
//! build per revision, O(shards changed by it) (see snapmap's
//! `SnapMap::snapshot`), which a reader would otherwise pay on its first
//! look.

use std::sync::Arc;

use arc_swap::ArcSwap;
use snapmap::{SnapMap, Snapshot};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::event::{Counters, Stats};
use crate::{Error, Key, MirrorBuilder};

/// What the task and every view share.
pub(crate) struct Shared<V> {
    /// The mirrored content; written only by the task.
    pub(crate) map: SnapMap<Key, V>,
    /// The last published pair.
    pub(crate) published: ArcSwap<MirrorSnapshot<V>>,
    /// The published etcd revision, for waiters; the sender is the task's,
    /// so waits end with [`Error::Stopped`] once the task is gone.
    pub(crate) revision_rx: watch::Receiver<i64>,
    pub(crate) counters: Counters,
}

/// A consistent view of the mirror: a snapmap [`Snapshot`] and the etcd
/// revision whose content it holds.
///
/// Cheap to clone (an `Arc`), `Send + Sync + 'static`, fine to hold across
/// `.await`.
pub struct MirrorSnapshot<V> {
    pub(crate) snapshot: Snapshot<Key, V>,
    pub(crate) revision: i64,
    pub(crate) diverged_since: Option<i64>,
}

impl<V> Clone for MirrorSnapshot<V> {
    fn clone(&self) -> Self {
        MirrorSnapshot {
            snapshot: self.snapshot.clone(),
            revision: self.revision,
            diverged_since: self.diverged_since,
        }
    }
}

impl<V> MirrorSnapshot<V> {
    /// The etcd revision this snapshot shows: every revision up to it has
    /// been applied (or rejected, see [`diverged_since`](Self::diverged_since)),
    /// none after it.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// `None` when the content is exactly etcd's prefix at
    /// [`revision`](Self::revision) (keys with the prefix stripped, values
    /// decoded). `Some(r)` when a revision was rejected by the decoder
    /// since the last full load, the first such being `r`: the keys that
    /// revision wrote keep their older values (or absence) until a later
    /// revision writes them again or a full load replaces everything.
    pub fn diverged_since(&self) -> Option<i64> {
        self.diverged_since
    }

    /// The content: keys with the prefix stripped.
    pub fn snapshot(&self) -> &Snapshot<Key, V> {
        &self.snapshot
    }

    /// The value of `key` (prefix stripped).
    pub fn get(&self, key: &str) -> Option<&V>
    where
        V: Clone + Send + Sync + 'static,
    {
        self.snapshot.get(key)
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.snapshot.len()
    }

    /// Whether the prefix is empty.
    pub fn is_empty(&self) -> bool {
        self.snapshot.len() == 0
    }
}

impl<V> std::fmt::Debug for MirrorSnapshot<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorSnapshot")
            .field("revision", &self.revision)
            .field("diverged_since", &self.diverged_since)
            .field("len", &self.snapshot.len())
            .finish()
    }
}

/// A read handle on a mirror: clonable, `Send + Sync`, independent of the
/// [`Mirror`]'s lifetime (after the mirror stops it keeps showing the last
/// published state).
pub struct MirrorView<V> {
    pub(crate) shared: Arc<Shared<V>>,
}

impl<V> Clone for MirrorView<V> {
    fn clone(&self) -> Self {
        MirrorView {
            shared: self.shared.clone(),
        }
    }
}

impl<V> MirrorView<V>
where
    V: Clone + PartialEq + Send + Sync + 'static,
{
    /// The last published state: a snapshot and its etcd revision. One
    /// atomic load and an `Arc` clone.
    pub fn snapshot(&self) -> MirrorSnapshot<V> {
        (**self.shared.published.load()).clone()
    }

    /// The etcd revision of the last published state.
    pub fn revision(&self) -> i64 {
        self.shared.published.load().revision
    }

    /// The value of `key` (prefix stripped) in the last published state.
    pub fn get(&self, key: &str) -> Option<V> {
        self.shared.published.load().snapshot.get(key).cloned()
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.shared.counters.read()
    }

    /// Waits until the mirror has published etcd revision `revision` or a
    /// later one, and returns the published state then. Returns at once if
    /// it already has. [`Error::Stopped`] if the mirror stops first.
    ///
    /// To wait for your own write, pass the revision of its response
    /// header: a put to a key outside the prefix still advances etcd's
    /// revision, but the mirror only learns of revisions under its prefix,
    /// so wait only for revisions that wrote under it.
    pub async fn wait_for_revision(&self, revision: i64) -> Result<MirrorSnapshot<V>, Error> {
        let mut rx = self.shared.revision_rx.clone();
        rx.wait_for(|&published| published >= revision)
            .await
            .map_err(|_| Error::Stopped)?;
        Ok(self.snapshot())
    }
}

/// A running mirror of an etcd prefix: owns the task that follows etcd.
///
/// Build one with [`Mirror::builder`]; stop it with
/// [`shutdown`](Self::shutdown) (awaited: the task has ended when it
/// returns). Dropping it without `shutdown` aborts the task.
pub struct Mirror<V> {
    pub(crate) view: MirrorView<V>,
    pub(crate) shutdown: Option<oneshot::Sender<()>>,
    pub(crate) task: Option<JoinHandle<()>>,
}

impl<V> Mirror<V>
where
    V: Clone + PartialEq + Send + Sync + 'static,
{
    /// A builder for a mirror of `prefix`, whose values `decode` turns
    /// into `V`: it is given the key (prefix stripped) and the value's
    /// bytes.
    pub fn builder(
        prefix: impl Into<Vec<u8>>,
        decode: impl Fn(&str, &[u8]) -> Result<V, crate::DecodeError> + Send + Sync + 'static,
    ) -> MirrorBuilder<V> {
        MirrorBuilder::new(prefix.into(), Arc::new(decode))
    }

    /// A clonable read handle.
    pub fn view(&self) -> MirrorView<V> {
        self.view.clone()
    }

    /// The last published state (see [`MirrorView::snapshot`]).
    pub fn snapshot(&self) -> MirrorSnapshot<V> {
        self.view.snapshot()
    }

    /// The etcd revision of the last published state.
    pub fn revision(&self) -> i64 {
        self.view.revision()
    }

    /// The value of `key` (prefix stripped) in the last published state.
    pub fn get(&self, key: &str) -> Option<V> {
        self.view.get(key)
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.view.stats()
    }

    /// See [`MirrorView::wait_for_revision`].
    pub async fn wait_for_revision(&self, revision: i64) -> Result<MirrorSnapshot<V>, Error> {
        self.view.wait_for_revision(revision).await
    }

    /// Stops the task and waits for it to end. The watch is closed; a
    /// revision being applied is finished first (batches are applied
    /// between awaits, so none is ever half done). Views keep the last
    /// published state.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // The task may have ended already; nothing to tell it then.
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            // The task does not panic on etcd's data; a panic here is the
            // event callback's, re-raised for the caller to see.
            if let Err(error) = task.await {
                if error.is_panic() {
                    std::panic::resume_unwind(error.into_panic());
                }
            }
        }
    }
}

impl<V> Drop for Mirror<V> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl<V> std::fmt::Debug for Mirror<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("stats", &self.view.shared.counters.read())
            .finish()
    }
}
