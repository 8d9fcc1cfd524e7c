//! Mirrors an etcd key prefix into a [`snapmap::SnapMap`]: fleet-wide
//! configuration, where **one etcd revision is one atomic batch**, so no
//! snapshot ever shows half of a transaction.
//!
//! ```no_run
//! # async fn run() -> Result<(), snapmap_etcd::Error> {
//! use snapmap_etcd::{DecodeError, Mirror};
//!
//! let mirror = Mirror::builder("/fleet/config/", |_key: &str, value: &[u8]| {
//!     std::str::from_utf8(value)
//!         .map_err(DecodeError::from_error)?
//!         .parse::<u64>()
//!         .map_err(DecodeError::from_error)
//! })
//! .endpoints(["http://127.0.0.1:2379"])
//! .on_event(|event| eprintln!("{event:?}"))
//! .start()
//! .await?;
//!
//! let config = mirror.snapshot(); // one etcd revision, all of it
//! println!("revision {}: workers = {:?}", config.revision(), config.get("workers"));
//! mirror.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Start and follow
//!
//! [`MirrorBuilder::start`] reads the whole prefix at one revision `R` (a
//! range get in pages, each page at `R`, each bounded in keys and by the
//! client's 4 MiB message limit) and makes it the map's content as one
//! batch (`SnapMap::replace_all`). It then watches the prefix from `R + 1`
//! (without fragments, and by default without previous values, which the
//! mirror does not need and etcd 3.4 makes slow: see
//! [`MirrorBuilder::previous_values`]) on a tokio task. Each watch
//! response is split into runs of equal `mod_revision`, and each run, one
//! etcd revision, becomes one `SnapMap::apply` of a [`snapmap::Batch`] of
//! puts and deletes.
//!
//! # Which revision a snapshot shows
//!
//! The mirror's task is the map's only writer. After every batch it takes
//! the map's snapshot and publishes it together with the etcd revision, in
//! one atomic store; [`Mirror::snapshot`] (and [`MirrorView::snapshot`])
//! load that pair. A [`MirrorSnapshot`]'s [`revision`](MirrorSnapshot::revision)
//! is therefore exactly the revision whose content it holds: nothing
//! (neither a reserved key in the map nor a revision table) has to be kept
//! in step with the map. The price is one snapshot build per revision,
//! which costs O(shards the revision changed). The live map itself is not
//! exposed, so no reader can see a state that was never published.
//!
//! # Faults
//!
//! - **A broken stream, a restarted etcd:** the mirror watches again from
//!   the revision after the last one it applied, after a backoff (50 ms,
//!   doubling to 5 s; reset once a watch is established). etcd resends
//!   every revision from there, so nothing is lost; revisions at or below
//!   the last applied one are ignored, so nothing is applied twice.
//!   Meanwhile readers keep the last published state.
//! - **Compaction:** a watch whose start revision was compacted is
//!   cancelled by etcd; the mirror loads the whole prefix again at the
//!   current revision and applies it as one batch (`replace_all`: only
//!   the keys that differ are written).
//! - **A network that goes silent:** the default connect options enable
//!   HTTP/2 keep-alive, so the watch fails (and resumes) within about 10 s.
//!
//! # Rejected values
//!
//! The decoder runs on every value of a revision before anything is
//! written. If it rejects one (or a key is not UTF-8), **the whole revision
//! is skipped**: none of it is applied, the error goes to the event
//! callback ([`MirrorEvent::Rejected`]) and to the counter
//! [`Stats::rejected_revisions`], and the mirror keeps serving the last
//! good state, then **goes on with the next revision**. Skipping, rather
//! than stopping, keeps every other key current; the cost is that the keys
//! written by the skipped revision keep their older values until a later
//! revision writes them again (a fix of the bad value does) or a full load
//! replaces everything. A snapshot says so:
//! [`MirrorSnapshot::diverged_since`] names the first skipped revision
//! since the last full load (`None`: the content is exactly etcd's prefix
//! at the snapshot's revision).
//!
//! A full load with a rejected value is all or nothing too: at start,
//! `start` returns the error; on a resync, the mirror keeps its content,
//! reports [`MirrorEvent::LoadRejected`] and tries the load again after a
//! backoff, until the value is fixed.
//!
//! # Shutdown
//!
//! [`Mirror::shutdown`] stops the task and waits for it to end; the watch
//! is closed with it. Dropping the [`Mirror`] aborts the task instead.
//! [`MirrorView`]s outlive both and keep showing the last state.
//!
//! # Limits
//!
//! - Keys are [`Key`]s (`Arc<str>`): the etcd key with the prefix
//!   stripped, which must be UTF-8 (a key that is not is rejected like a
//!   bad value). Shared, not `String`, because every snapshot build clones
//!   the keys of the shards it copies: with `String` keys a revision that
//!   changed 1 % of a 1M-key map spent most of its time allocating key
//!   copies (see `benches/commit_to_visible.rs`). Values are cloned the
//!   same way: make a large `V` cheap to clone (an `Arc`).
//! - Revisions are assumed to move forward. An etcd restored from an older
//!   backup (revisions going back) is not detected.
//! - One revision is one watch response, which must fit in
//!   [`MirrorBuilder::max_watch_message`] (256 MiB by default); a larger one
//!   stops the mirror at the revision before it (it keeps retrying).
//! - A mirror follows one prefix with one watch; the decoder runs on the
//!   task, so a slow decoder delays every later revision.

mod builder;
mod error;
mod event;
mod follow;
mod load;
mod mirror;

pub use builder::{DEFAULT_MAX_WATCH_MESSAGE, DEFAULT_PAGE_SIZE, MirrorBuilder};
pub use error::{BoxError, DecodeError, Error};
pub use event::{LoadReason, MirrorEvent, Stats};
pub use mirror::{Mirror, MirrorSnapshot, MirrorView};

/// A key of the mirrored map: the etcd key with the prefix stripped.
/// Look values up with a `&str` (`snapshot.get("workers")`).
pub type Key = std::sync::Arc<str>;

/// The etcd client this crate is built on (for [`MirrorBuilder::client`]
/// and [`MirrorBuilder::connect_options`]).
pub use etcd_client;
