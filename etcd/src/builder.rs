//! [`MirrorBuilder`]: where to connect, what to mirror, how to report.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use etcd_client::{Client, ConnectOptions};
use snapmap::SnapMap;
use tokio::sync::{oneshot, watch};

use crate::event::{Counters, LoadReason, MirrorEvent};
use crate::follow::{Backoff, Decode, Follower, OnEvent};
use crate::mirror::{MirrorSnapshot, MirrorView, Shared};
use crate::{Error, Key, Mirror};

/// Keys per page of the full load (each page is also bounded by the
/// client's 4 MiB message limit: see `crate::load`).
///
/// Large, because etcd 3.4 walks every key from a page's first to the end
/// of the range to answer it (it counts them), whatever the limit: a page
/// costs O(keys left), so the load costs O(n² / page size). Loading 1M keys
/// took 79.7 s in pages of 1,000.
pub const DEFAULT_PAGE_SIZE: i64 = 10_000;

/// The largest watch response the mirror accepts by default: 256 MiB.
/// One etcd revision arrives in one response (fragments are off, so that
/// a revision is never split), and a revision can be large (a delete of
/// the whole prefix lists every key, twice with previous values).
pub const DEFAULT_MAX_WATCH_MESSAGE: usize = 256 << 20;

/// Configures and starts a [`Mirror`]; made by [`Mirror::builder`].
pub struct MirrorBuilder<V> {
    prefix: Vec<u8>,
    decode: Arc<Decode<V>>,
    endpoints: Vec<String>,
    connect_options: Option<ConnectOptions>,
    client: Option<Client>,
    page_size: i64,
    max_watch_message: usize,
    previous_values: bool,
    backoff: (Duration, Duration),
    on_event: Option<Arc<OnEvent>>,
    map: Option<SnapMap<Key, V>>,
}

impl<V> MirrorBuilder<V>
where
    V: Clone + PartialEq + Send + Sync + 'static,
{
    pub(crate) fn new(prefix: Vec<u8>, decode: Arc<Decode<V>>) -> Self {
        MirrorBuilder {
            prefix,
            decode,
            endpoints: vec!["http://127.0.0.1:2379".into()],
            connect_options: None,
            client: None,
            page_size: DEFAULT_PAGE_SIZE,
            max_watch_message: DEFAULT_MAX_WATCH_MESSAGE,
            previous_values: false,
            backoff: (Duration::from_millis(50), Duration::from_secs(5)),
            on_event: None,
            map: None,
        }
    }

    /// The etcd endpoints (default `http://127.0.0.1:2379`).
    pub fn endpoints<E: Into<String>>(mut self, endpoints: impl IntoIterator<Item = E>) -> Self {
        self.endpoints = endpoints.into_iter().map(Into::into).collect();
        self
    }

    /// The client's connection options. The default sets HTTP/2 keep-alive
    /// (every 5 s, 5 s timeout, also while idle), so a silent network
    /// failure ends the watch within about 10 s, and `require_leader`, so
    /// a member cut off from its cluster cancels the watch instead of
    /// going quiet.
    pub fn connect_options(mut self, options: ConnectOptions) -> Self {
        self.connect_options = Some(options);
        self
    }

    /// Uses this client instead of connecting (endpoints and connect
    /// options are then ignored).
    pub fn client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Keys per page of a full load (default [`DEFAULT_PAGE_SIZE`]).
    pub fn page_size(mut self, keys: i64) -> Self {
        self.page_size = keys.max(1);
        self
    }

    /// The largest watch response accepted, in bytes (default
    /// [`DEFAULT_MAX_WATCH_MESSAGE`]). A revision larger than this cannot
    /// be received: the watch fails on it, again after every resume, and
    /// the mirror stays at the revision before it (reported as
    /// [`MirrorEvent::Disconnected`]).
    pub fn max_watch_message(mut self, bytes: usize) -> Self {
        self.max_watch_message = bytes;
        self
    }

    /// Whether the watch asks etcd for each event's previous value
    /// (`prev_kv`; default off). The mirror does not need them: a put
    /// carries its new value and a delete its key. They cost: etcd 3.4
    /// reads each previous value with a range of its own before it sends
    /// the response, which made a 100-put revision visible 42.7 ms after
    /// its commit instead of 2.7 ms (p50, `benches/commit_to_visible.rs`,
    /// 10K keys), and they double a large revision's response.
    pub fn previous_values(mut self, on: bool) -> Self {
        self.previous_values = on;
        self
    }

    /// The backoff after a failure: `min` first, doubling up to `max`
    /// (default 50 ms to 5 s); back to `min` once a watch is established.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = (min, max.max(min));
        self
    }

    /// A callback for every load, applied revision, rejected revision and
    /// failure (see [`MirrorEvent`]). It runs on the mirror's task: keep it
    /// short, and do not panic in it (a panic stops the mirror; `shutdown`
    /// re-raises it).
    pub fn on_event(mut self, f: impl Fn(&MirrorEvent<'_>) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(f));
        self
    }

    /// The map to fill (to set snapmap's builder options, such as its
    /// capacity); it should be empty, and nothing else should write to it.
    pub fn map(mut self, map: SnapMap<Key, V>) -> Self {
        self.map = Some(map);
        self
    }

    /// Connects, loads the prefix (one batch) and starts following it on a
    /// task of the current tokio runtime.
    ///
    /// Fails, leaving no task behind, if etcd cannot be reached or a value
    /// of the first load is rejected by the decoder: the caller decides
    /// whether to retry.
    pub async fn start(self) -> Result<Mirror<V>, Error> {
        let client = match self.client {
            Some(client) => client,
            None => {
                let options = self.connect_options.unwrap_or_else(|| {
                    ConnectOptions::new()
                        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
                        .with_keep_alive_while_idle(true)
                        .with_connect_timeout(Duration::from_secs(5))
                        .with_require_leader(true)
                });
                Client::connect(&self.endpoints, Some(options)).await?
            }
        };
        let map = self.map.unwrap_or_default();
        let empty = MirrorSnapshot {
            snapshot: map.snapshot(),
            revision: 0,
            diverged_since: None,
        };
        let (revision_tx, revision_rx) = watch::channel(0);
        let shared = Arc::new(Shared {
            map,
            published: ArcSwap::from_pointee(empty),
            revision_rx,
            counters: Counters::default(),
        });
        let watch_client = client
            .watch_client()
            .max_decoding_message_size(self.max_watch_message);
        let mut follower = Follower {
            client,
            watch_client,
            prefix: self.prefix,
            page_size: self.page_size,
            previous_values: self.previous_values,
            decode: self.decode,
            on_event: self.on_event,
            shared: shared.clone(),
            revision_tx,
            backoff: Backoff::new(self.backoff.0, self.backoff.1),
            applied: 0,
            diverged_since: None,
        };
        follower.load(LoadReason::Start).await?;
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tokio::select! {
                // Either a shutdown or a dropped Mirror (the sender gone).
                _ = shutdown_rx => {}
                () = follower.run() => {}
            }
        });
        Ok(Mirror {
            view: MirrorView { shared },
            shutdown: Some(shutdown_tx),
            task: Some(task),
        })
    }
}
