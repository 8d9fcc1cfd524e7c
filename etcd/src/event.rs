//! What the mirror tells its user: events (through the callback given to
//! [`MirrorBuilder::on_event`](crate::MirrorBuilder::on_event)) and
//! counters ([`Stats`]).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::Error;

/// Why the mirror loaded the whole prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadReason {
    /// The first load, in [`MirrorBuilder::start`](crate::MirrorBuilder::start).
    Start,
    /// etcd cancelled the watch because the revision to resume from was
    /// compacted (the field is etcd's oldest revision still kept).
    Compacted(i64),
}

/// One thing that happened in the mirror, given to the event callback.
///
/// The callback runs on the mirror's task, after the change is visible
/// in [`Mirror::snapshot`](crate::Mirror::snapshot) and before
/// [`wait_for_revision`](crate::MirrorView::wait_for_revision) returns for
/// it (so a waiter that wakes for a revision knows its event was
/// reported): keep it short (log, count, send on a channel).
#[derive(Debug)]
#[non_exhaustive]
pub enum MirrorEvent<'a> {
    /// The whole prefix was loaded at `revision` and became the map's
    /// content as one batch (`replace_all`).
    Loaded {
        /// The etcd revision of the load.
        revision: i64,
        /// Why.
        reason: LoadReason,
        /// Keys in the prefix.
        keys: usize,
        /// What the batch changed in the map.
        applied: snapmap::Applied,
        /// From the first range request to the published snapshot.
        elapsed: Duration,
    },
    /// One etcd revision was applied as one batch.
    Applied {
        /// The etcd revision.
        revision: i64,
        /// Its events (puts and deletes) under the prefix.
        events: usize,
        /// What the batch changed in the map.
        applied: snapmap::Applied,
        /// From the watch response's arrival to the published snapshot
        /// (decoding, the batch, the snapshot).
        latency: Duration,
    },
    /// A revision was rejected by the decoder: nothing of it was applied,
    /// and the mirror went on with the next one (see the crate docs,
    /// "Rejected values").
    Rejected {
        /// The etcd revision.
        revision: i64,
        /// The decoder's error, with the key ([`Error::Decode`]).
        error: &'a Error,
    },
    /// A full load (at start, or a resync after compaction) was rejected
    /// by the decoder; the mirror keeps its content and tries again after
    /// `retry_in`.
    LoadRejected {
        /// The error, with the key ([`Error::Decode`]).
        error: &'a Error,
        /// The wait before the next try.
        retry_in: Duration,
    },
    /// The connection or the watch failed; the mirror resumes from the
    /// revision after the last one it applied, after `retry_in`.
    Disconnected {
        /// What failed.
        error: &'a Error,
        /// The wait before the next try (exponential backoff, reset once a
        /// watch is established again).
        retry_in: Duration,
    },
}

/// The mirror's counters, read with [`Mirror::stats`](crate::Mirror::stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The last etcd revision the mirror has applied or skipped (the
    /// revision of its published snapshot).
    pub revision: i64,
    /// Revisions applied as batches.
    pub applied_revisions: u64,
    /// Revisions rejected by the decoder (not applied, skipped).
    pub rejected_revisions: u64,
    /// Full loads rejected by the decoder (start excluded: it returns the
    /// error).
    pub rejected_loads: u64,
    /// Full loads after the start (resyncs after compaction).
    pub resyncs: u64,
    /// Watch or connection failures (each followed by a resume after a
    /// backoff).
    pub disconnects: u64,
    /// Events of revisions at or before the last applied one, ignored
    /// (a resumed watch never sends them; counted to prove it).
    pub duplicates_ignored: u64,
}

/// The counters, updated by the mirror's task only.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) revision: AtomicI64,
    pub(crate) applied_revisions: AtomicU64,
    pub(crate) rejected_revisions: AtomicU64,
    pub(crate) rejected_loads: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    pub(crate) disconnects: AtomicU64,
    pub(crate) duplicates_ignored: AtomicU64,
}

impl Counters {
    /// Adds one to a counter.
    pub(crate) fn bump(counter: &AtomicU64) {
        // Relaxed: a statistic; nothing is published through it.
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads every counter (each on its own: not one point in time).
    pub(crate) fn read(&self) -> Stats {
        // Relaxed: statistics, read one by one.
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            revision: self.revision.load(Ordering::Relaxed),
            applied_revisions: load(&self.applied_revisions),
            rejected_revisions: load(&self.rejected_revisions),
            rejected_loads: load(&self.rejected_loads),
            resyncs: load(&self.resyncs),
            disconnects: load(&self.disconnects),
            duplicates_ignored: load(&self.duplicates_ignored),
        }
    }
}
