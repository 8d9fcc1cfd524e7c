//! The mirror's task: load, then follow the watch, one batch per revision.
//!
//! # States
//!
//! ```text
//!            start: load at R ──► publish (R)
//!                                   │
//!        ┌──────────────────────────▼───────────────────────────┐
//!        │ watch from applied + 1 (prefix, prev_kv, no fragment) │◄──────────┐
//!        └──────┬─────────────────────┬──────────────────┬──────┘           │
//!     response: │ group events by     │ cancelled with   │ stream error,    │
//!     events    │ mod_revision; per   │ compact_revision │ end, cancel      │
//!               │ revision: decode    │                  │ (other reason)   │
//!               │ all, then one batch │                  ▼                  │
//!               │ (or reject all)     ▼           backoff (50 ms .. 5 s) ───┘
//!               │        resync: load at R' ── fails ──► backoff, load again
//!               ▼           replace_all, publish (R')
//!        publish (rev)
//! ```
//!
//! `applied` is the last etcd revision the mirror has processed (applied,
//! or rejected and skipped). Every watch starts at `applied + 1`, so after
//! any failure the mirror resumes exactly where it stopped: etcd resends
//! every event from that revision on, none before it. Events at or below
//! `applied` are ignored anyway (and counted), so a duplicate could not be
//! applied twice even if etcd sent one.
//!
//! # One revision, one batch
//!
//! etcd sends one revision's events in one watch response unless the watch
//! asks for fragments (this one does not), and one response may hold
//! several revisions in order; the task splits a response into runs of
//! equal `mod_revision`. Each run is decoded completely before anything is
//! written: a value the decoder rejects rejects the whole revision, and
//! nothing of it reaches the map. Otherwise the run is one
//! `SnapMap::apply`, then one published snapshot.
//!
//! # Cancellation
//!
//! The task is a future dropped at an `.await` on shutdown. Batches and
//! publications happen between awaits, so a dropped task never leaves a
//! revision half applied or applied but unpublished.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, Event, WatchClient, WatchOptions};
use snapmap::Batch;
use tokio::sync::watch;

use crate::event::{Counters, LoadReason, MirrorEvent};
use crate::load::load_prefix;
use crate::mirror::{MirrorSnapshot, Shared};
use crate::{DecodeError, Error, Key};

/// The user's decoder: key (prefix stripped) and value bytes to `V`.
pub(crate) type Decode<V> = dyn Fn(&str, &[u8]) -> Result<V, DecodeError> + Send + Sync;

/// The user's event callback.
pub(crate) type OnEvent = dyn Fn(&MirrorEvent<'_>) + Send + Sync;

/// etcd's event types (mvccpb.Event.EventType).
const PUT: i32 = 0;
const DELETE: i32 = 1;

/// Exponential backoff between tries.
pub(crate) struct Backoff {
    pub(crate) min: Duration,
    pub(crate) max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The wait before the next try; doubles the one after, up to `max`.
    fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// How a watch ended.
enum WatchEnd {
    /// etcd compacted the revision to resume from: load everything again.
    Compacted(i64),
    /// Anything else: resume from `applied + 1` after a backoff.
    Failed(Error),
}

/// The task's state.
pub(crate) struct Follower<V> {
    pub(crate) client: Client,
    /// The client's watch service, with its own message limit (one
    /// revision is one response, however large).
    pub(crate) watch_client: WatchClient,
    pub(crate) prefix: Vec<u8>,
    pub(crate) page_size: i64,
    /// Whether the watch asks for previous values (off by default: see
    /// `MirrorBuilder::previous_values`).
    pub(crate) previous_values: bool,
    pub(crate) decode: Arc<Decode<V>>,
    pub(crate) on_event: Option<Arc<OnEvent>>,
    pub(crate) shared: Arc<Shared<V>>,
    pub(crate) revision_tx: watch::Sender<i64>,
    pub(crate) backoff: Backoff,
    /// The last etcd revision applied or rejected.
    pub(crate) applied: i64,
    /// The first revision rejected since the last full load.
    pub(crate) diverged_since: Option<i64>,
}

impl<V> Follower<V>
where
    V: Clone + PartialEq + Send + Sync + 'static,
{
    /// Follows etcd until the future is dropped.
    pub(crate) async fn run(mut self) {
        let mut resync: Option<i64> = None;
        loop {
            if let Some(compact_revision) = resync {
                match self.load(LoadReason::Compacted(compact_revision)).await {
                    Ok(()) => resync = None,
                    Err(error) => {
                        let retry_in = self.backoff.next_wait();
                        if matches!(error, Error::Decode { .. }) {
                            Counters::bump(&self.shared.counters.rejected_loads);
                            self.emit(&MirrorEvent::LoadRejected {
                                error: &error,
                                retry_in,
                            });
                        } else {
                            Counters::bump(&self.shared.counters.disconnects);
                            self.emit(&MirrorEvent::Disconnected {
                                error: &error,
                                retry_in,
                            });
                        }
                        tokio::time::sleep(retry_in).await;
                        continue;
                    }
                }
            }
            match self.watch().await {
                WatchEnd::Compacted(compact_revision) => resync = Some(compact_revision),
                WatchEnd::Failed(error) => {
                    Counters::bump(&self.shared.counters.disconnects);
                    let retry_in = self.backoff.next_wait();
                    self.emit(&MirrorEvent::Disconnected {
                        error: &error,
                        retry_in,
                    });
                    tokio::time::sleep(retry_in).await;
                }
            }
        }
    }

    /// Loads the whole prefix and makes it the map's content in one batch.
    pub(crate) async fn load(&mut self, reason: LoadReason) -> Result<(), Error> {
        let started = Instant::now();
        let (revision, kvs) = load_prefix(&mut self.client, &self.prefix, self.page_size).await?;
        let mut content = Vec::with_capacity(kvs.len());
        for kv in &kvs {
            let key = self.map_key(kv.key(), revision)?;
            let value = self.decode_value(&key, kv.key(), kv.value(), revision)?;
            content.push((key, value));
        }
        drop(kvs);
        let keys = content.len();
        let applied = self.shared.map.replace_all(content);
        self.applied = revision;
        self.diverged_since = None;
        self.publish();
        if reason != LoadReason::Start {
            Counters::bump(&self.shared.counters.resyncs);
        }
        self.emit(&MirrorEvent::Loaded {
            revision,
            reason,
            keys,
            applied,
            elapsed: started.elapsed(),
        });
        self.wake_waiters();
        Ok(())
    }

    /// One watch, from `applied + 1`, until it ends.
    async fn watch(&mut self) -> WatchEnd {
        let mut options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.applied + 1);
        if self.previous_values {
            options = options.with_prev_key();
        }
        let mut stream = match self
            .watch_client
            .watch(self.prefix.clone(), Some(options))
            .await
        {
            Ok(stream) => stream,
            Err(error) => return WatchEnd::Failed(error.into()),
        };
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => {
                    return WatchEnd::Failed(Error::WatchEnded("etcd closed the stream".into()));
                }
                Err(error) => return WatchEnd::Failed(error.into()),
            };
            if response.canceled() {
                if response.compact_revision() > 0 {
                    return WatchEnd::Compacted(response.compact_revision());
                }
                let reason = match response.cancel_reason() {
                    "" => "cancelled by etcd".to_owned(),
                    reason => format!("cancelled by etcd: {reason}"),
                };
                return WatchEnd::Failed(Error::WatchEnded(reason));
            }
            if response.created() {
                // A watch stands again: the next failure waits the least.
                self.backoff.reset();
            }
            let received = Instant::now();
            if let Err(error) = self.apply_response(response.events(), received) {
                return WatchEnd::Failed(error);
            }
        }
    }

    /// Applies the revisions of one watch response, one batch each. An
    /// error is etcd's (a malformed event): the watch is restarted from
    /// `applied + 1`, and the revision that carried it is asked again.
    fn apply_response(&mut self, events: &[Event], received: Instant) -> Result<(), Error> {
        let mut rest = events;
        while let Some(first) = rest.first() {
            let revision = mod_revision(first)?;
            let mut run = 1;
            while run < rest.len() && mod_revision(&rest[run])? == revision {
                run += 1;
            }
            let (this, next) = rest.split_at(run);
            self.apply_revision(revision, this, received)?;
            rest = next;
        }
        Ok(())
    }

    /// Applies one revision as one batch, or rejects it whole.
    fn apply_revision(
        &mut self,
        revision: i64,
        events: &[Event],
        received: Instant,
    ) -> Result<(), Error> {
        if revision <= self.applied {
            let counter = &self.shared.counters.duplicates_ignored;
            // Relaxed: a statistic.
            counter.fetch_add(events.len() as u64, std::sync::atomic::Ordering::Relaxed);
            return Ok(());
        }
        let batch = match self.decode_revision(revision, events) {
            Ok(batch) => batch,
            Err(error @ Error::Decode { .. }) => {
                // The whole revision is skipped: nothing of it was written.
                self.applied = revision;
                self.diverged_since.get_or_insert(revision);
                Counters::bump(&self.shared.counters.rejected_revisions);
                self.publish();
                self.emit(&MirrorEvent::Rejected {
                    revision,
                    error: &error,
                });
                self.wake_waiters();
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        let applied = self.shared.map.apply(batch);
        self.applied = revision;
        Counters::bump(&self.shared.counters.applied_revisions);
        self.publish();
        self.emit(&MirrorEvent::Applied {
            revision,
            events: events.len(),
            applied,
            latency: received.elapsed(),
        });
        self.wake_waiters();
        Ok(())
    }

    /// Decodes every event of one revision into a batch, or fails.
    fn decode_revision(&self, revision: i64, events: &[Event]) -> Result<Batch<Key, V>, Error> {
        let mut batch = Batch::with_capacity(events.len());
        for event in events {
            let kv = event.kv().ok_or_else(|| {
                Error::Protocol(format!("revision {revision}: an event without a key"))
            })?;
            let key = self.map_key(kv.key(), revision)?;
            match event.0.r#type {
                PUT => {
                    let value = self.decode_value(&key, kv.key(), kv.value(), revision)?;
                    batch.insert(key, value);
                }
                DELETE => {
                    batch.remove(key);
                }
                other => {
                    return Err(Error::Protocol(format!(
                        "revision {revision}: unknown event type {other}"
                    )));
                }
            }
        }
        Ok(batch)
    }

    /// The map's key for an etcd key: the prefix stripped, UTF-8.
    fn map_key(&self, full_key: &[u8], revision: i64) -> Result<Key, Error> {
        let rest = full_key
            .strip_prefix(self.prefix.as_slice())
            .ok_or_else(|| {
                Error::Protocol(format!(
                    "revision {revision}: key \"{}\" is outside the prefix",
                    String::from_utf8_lossy(full_key).escape_debug()
                ))
            })?;
        match std::str::from_utf8(rest) {
            Ok(key) => Ok(Key::from(key)),
            Err(error) => Err(Error::Decode {
                revision,
                key: full_key.to_vec(),
                error: DecodeError::from_error(error),
            }),
        }
    }

    fn decode_value(
        &self,
        key: &str,
        full_key: &[u8],
        value: &[u8],
        revision: i64,
    ) -> Result<V, Error> {
        (self.decode)(key, value).map_err(|error| Error::Decode {
            revision,
            key: full_key.to_vec(),
            error,
        })
    }

    /// Publishes the map's content with `applied` (see `crate::mirror`):
    /// `snapshot()` shows it from here on.
    fn publish(&self) {
        let published = MirrorSnapshot {
            snapshot: self.shared.map.snapshot(),
            revision: self.applied,
            diverged_since: self.diverged_since,
        };
        self.shared.published.store(Arc::new(published));
        // Relaxed: a statistic; readers take the revision from the pair.
        self.shared
            .counters
            .revision
            .store(self.applied, std::sync::atomic::Ordering::Relaxed);
    }

    /// Wakes the waiters of [`MirrorView::wait_for_revision`] for
    /// `applied`; called after `publish` and after the event callback, so
    /// a waiter that wakes finds the pair published and the event
    /// reported.
    ///
    /// [`MirrorView::wait_for_revision`]: crate::MirrorView::wait_for_revision
    fn wake_waiters(&self) {
        self.revision_tx.send_replace(self.applied);
    }

    fn emit(&self, event: &MirrorEvent<'_>) {
        if let Some(on_event) = &self.on_event {
            on_event(event);
        }
    }
}

/// An event's `mod_revision` (its revision).
fn mod_revision(event: &Event) -> Result<i64, Error> {
    event
        .kv()
        .map(|kv| kv.mod_revision())
        .ok_or_else(|| Error::Protocol("an event without a key".into()))
}
