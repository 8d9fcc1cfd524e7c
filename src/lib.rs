//! A concurrent, sharded hash map for read-mostly data: configuration
//! caches, routing tables, registries.
//!
//! `snapmap` runs Go's `sync.Map` protocol (Go <= 1.23) **per shard**: each
//! shard keeps an immutable read view that readers probe without locking,
//! and a dirty table, under a mutex, that receives new keys and is promoted
//! to the read view once enough lookups have missed (Go's
//! `misses >= len(dirty)` rule). Replaced views and values are reclaimed
//! through `crossbeam-epoch`.
//!
//! Around that core:
//!
//! - **Shards migrate one at a time.** A shard splits when its dirty table
//!   passes a capacity, and merges with its buddy when both are sparse
//!   (extendible hashing under a directory, as Go 1.24's maps do). No
//!   operation copies more than about two shards' worth of entries, and
//!   memory comes back after deletes. See [`Stats`] for what happened.
//! - **Snapshots.** [`SnapMap::snapshot`] returns a consistent, immutable,
//!   `'static` [`Snapshot`] (Go's `atomic.Value` copy-on-write pattern): the
//!   same one in O(1) if nothing changed, otherwise a new one that copies
//!   only the shards that changed. [`SnapMap::apply`] and [`SnapMap::batch`]
//!   make many writes appear in snapshots all-or-nothing (a configuration
//!   reload).
//! - **Reloads.** Every snapshot has a [revision](Snapshot::revision):
//!   [`SnapMap::apply_if`] applies a batch only if nobody wrote since a
//!   revision, [`SnapMap::replace_all`] and [`SnapMap::restore`] reload the
//!   whole content writing only what differs, and
//!   [`SnapMap::wait_for_change`] (blocking, also with a timeout) and
//!   [`SnapMap::changed`] (a future, on any runtime) wait until the map
//!   passes a revision and return a snapshot that holds the change.
//!
//! How it is built (layout, the cost of a read hit, the write loop, the
//! snapshot protocol, verification) is in `docs/ARCHITECTURE.md`, shipped
//! with the crate; each module's docs go one level deeper.
//!
//! # Lookups and iteration
//!
//! Map-level methods pin for one operation and clone the value out; a
//! pinned handle ([`SnapMap::pin`]) returns references and iterates without
//! allocating.
//!
//! ```
//! use snapmap::SnapMap;
//!
//! let config: SnapMap<String, String> = SnapMap::new();
//! config.insert("listen".into(), "0.0.0.0:8080".into());
//! config.insert("workers".into(), "8".into());
//! assert_eq!(config.get("workers").as_deref(), Some("8"));
//!
//! // A hot path: pin once, then look up without cloning.
//! let pinned = config.pin();
//! assert_eq!(pinned.get("workers").map(String::as_str), Some("8"));
//! for (key, value) in &pinned {
//!     assert!(!key.is_empty() && !value.is_empty());
//! }
//! ```
//!
//! # Snapshots, batches and reloads
//!
//! A configuration reload is the case the crate is built for: readers must
//! never see half of it, a reload that writes little should cost little,
//! two reloaders must not overwrite each other unknowingly, and a bad
//! reload must be undone in one step.
//!
//! ```
//! use snapmap::{Batch, SnapMap};
//!
//! // A routing table: service -> port.
//! let routes: SnapMap<String, u16> = SnapMap::new();
//!
//! // A full reload: the whole new content, applied as one batch that writes
//! // only what differs (unchanged keys are not rewritten, so the shards
//! // holding only those stay shared with the last snapshot).
//! let applied = routes.replace_all([("api".to_string(), 8080), ("web".to_string(), 8081)]);
//! assert_eq!((applied.inserted, applied.unchanged), (2, 0));
//! let applied = routes.replace_all([("api".to_string(), 8080), ("web".to_string(), 8082)]);
//! assert_eq!((applied.replaced, applied.unchanged), (1, 1));
//!
//! // A snapshot: the map at one point in time, owned and immutable
//! // (`Send + Sync + 'static`: hold it across `.await`, send it to a thread).
//! // While nothing changes, taking one is a compare and an `Arc` clone.
//! let v1 = routes.snapshot();
//!
//! // A reader handle (one per thread or task) keeps a snapshot and checks
//! // with one load and a compare whether the map changed, refreshing only then.
//! let mut reader = routes.reader();
//! assert_eq!(reader.get("api"), Some(&8080));
//!
//! // A batch: snapshots and readers see all of it or none of it.
//! routes.batch(|m| {
//!     m.insert("api".to_string(), 9090);
//!     m.remove("web");
//! });
//! assert_eq!(reader.get("api"), Some(&9090)); // refreshed, batch included
//! assert_eq!(reader.get("web"), None);
//! assert_eq!((v1.get("api"), v1.len()), (Some(&8080), 2)); // v1 is unchanged
//!
//! // Optimistic concurrency: a reload based on a snapshot applies only if
//! // nobody wrote since (a compare-and-swap of the whole content).
//! let base = routes.snapshot();
//! let mut add_admin = Batch::new();
//! add_admin.insert("admin".to_string(), 9000);
//! routes.apply_if(base.revision(), add_admin).expect("nobody wrote since `base`");
//!
//! // A second reloader that started from the same snapshot loses, and
//! // applies nothing: it must re-read and retry.
//! let mut stale = Batch::new();
//! stale.remove("api".to_string());
//! let conflict = routes.apply_if(base.revision(), stale).unwrap_err();
//! assert_eq!(conflict.expected, base.revision());
//! assert_eq!(routes.get("api"), Some(9090));
//!
//! // A rollback: `restore` is a `replace_all` with a snapshot's content.
//! routes.restore(&v1);
//! assert_eq!(reader.get("admin"), None);
//! assert_eq!(reader.get("web"), Some(&8082));
//! assert!(reader.snapshot().revision() > base.revision());
//! ```
//!
//! [`SnapMap::wait_for_change`] and [`SnapMap::changed`] let a thread or a
//! task sleep until the map passes a revision (see "Across `.await`" below).
//!
//! # Which map should I use?
//!
//! The figures below come from `BENCHMARKS.md` (shipped with the crate):
//! one run of `scripts/bench-report.sh` (in the repository) on a shared
//! 2-core virtual machine, `u64` keys and values, the same hasher
//! (foldhash) for every map, 1 and 2 threads. Absolute numbers there are
//! not portable; its ratio tables (every peer in the same run) are the
//! reference, and when it is regenerated its figures win over the ones
//! quoted here. Ratios are snapmap's throughput ÷ the other map's (below
//! 1: snapmap is slower).
//!
//! - **snapmap**: read-mostly data that readers need **consistent**
//!   (snapshots, all-or-nothing batches, revisions, waiting for a change)
//!   and that is reloaded now and then, mostly by replacing values. A
//!   snapshot of an unchanged map costs 25 ns (`ArcSwap::load_full`: 22 ns);
//!   after one update to a 1M-key map, 18 µs, where `ArcSwap<HashMap>` and
//!   `RwLock<HashMap>` copy the whole map (16 ms). dashmap, papaya and scc
//!   have no point-in-time view at all. Iterating a snapshot is a slice walk
//!   (1.19× the time of a `Vec<(u64, u64)>` walk), a walk of the live map
//!   1.07× papaya's speed and 1.98× dashmap's. Read hits at 1M keys run at
//!   1.18× papaya and 0.91× `scc::HashIndex` on one thread, 1.05× and 0.90×
//!   on two (each entry sits in its read view's slot: one cache miss past
//!   the shard's head; these ratios move by up to 0.25 between runs). In
//!   the 99 % read / 1 % update mix at 10K keys it runs at 1.24× papaya on
//!   one thread and 1.96× on two, 1.68× and 6.38× dashmap, 0.89× and 1.43×
//!   `scc::HashIndex`.
//! - **`scc::HashIndex` or papaya** when reads must be as fast as possible
//!   in a small map and no consistent view is needed: at 10K keys
//!   snapmap's read hits run at 0.65× `scc::HashIndex` (1.33× papaya), and
//!   the 99/1 mix at 1M keys at 0.86× `scc::HashIndex` and 1.05× papaya on
//!   one thread (0.94× and 1.51× on two); a large map built with
//!   [`Builder::huge_pages`] reads faster (its views in huge pages: read
//!   hits at 1M keys 1.09–1.45× the default's, 0.91–1.43× `scc::HashIndex`
//!   over three runs), at the price of rare multi-millisecond inserts while
//!   it grows and of memory. A read hit costs 63.0
//!   instructions against 35.5 for an unsynchronised `hashbrown` lookup
//!   (callgrind, 100K keys; 71.8 in the report's run, before the group's
//!   hashes were compared by one SSE2 instruction).
//! - **dashmap or `scc::HashMap`** when writes are frequent: they update in
//!   place, where snapmap takes a new value node per update (updates of
//!   existing keys at 1M: 0.13× dashmap, 0.23× `scc::HashMap`, 1.02× papaya
//!   on one thread; 3.74× papaya on two). Workloads that churn new keys are
//!   the read/dirty design's weak spot: 0.09–0.16× the best peer
//!   (conc-map-bench's Exchange and RapidGrow mixes), slower since the read
//!   view holds its entries (a promotion moves every entry). They also hold
//!   less memory: 35.7 heap bytes per `u64 -> u64` entry (dashmap) against
//!   snapmap's 68.1 (papaya: 53.8).
//! - **`ArcSwap<HashMap>`** (copy on write) for small maps that are rarely
//!   written: its reads are as fast as an unsynchronised `HashMap` (snapmap's
//!   read hits run at 0.44× its speed at 1M keys and 0.31× at 10K; a
//!   snapmap [`Reader`], which checks for a change on every lookup, 0.95×
//!   and 0.71×, and 0.83–1.21× an `arc_swap::Cache` checked on every
//!   lookup as the reader is), and a snapshot is one load. Every write
//!   copies the whole map, though: at 10K keys with 1 % updates snapmap is
//!   10× faster on one thread, and at 1M keys one write costs 16 ms. A
//!   reload of 1 % of the keys, on the other hand, is cheaper as a new
//!   `ArcSwap` map than as snapmap's `replace_all` (1.40× its time at 1M
//!   keys in that report, 1.2–1.4× since its diff probes the views
//!   directly; `apply` of the changed keys, 0.50×).
//!
//! `BENCHMARKS.md`'s "Where snapmap loses, and why" lists every workload
//! where a peer won in that run, with the reasons.
//!
//! # Feature flags
//!
//! All off by default; docs.rs documents the crate with all of them.
//!
//! - **`serde`**: `Serialize` for [`SnapMap`] (a map, from a pinned walk:
//!   each shard as of when it is reached) and for [`Snapshot`] (a map, one
//!   point in time); `Deserialize` for [`SnapMap`] (from a map; a repeated
//!   key keeps its last value) and for [`Batch`] (from `{"insert": {key:
//!   value, ...}, "remove": [key, ...]}`, removals first). The module docs
//!   of `src/serde_impls.rs` give the details.
//! - **`metrics`**: [`Stats::publish`] and [`SnapMap::publish_metrics`] set
//!   the counters as gauges and counters of the
//!   [`metrics`](https://docs.rs/metrics) facade, for any exporter
//!   (Prometheus, StatsD); call them periodically (`stats()` walks every
//!   shard), not per request.
//! - **`rayon`**: [`Snapshot::par_iter`] (a rayon `ParallelIterator` over
//!   one point in time, split over the snapshot's pieces) and
//!   [`SnapMap::par_for_each`] (the live map, each worker pinned on its own
//!   ranges of hash space).
//!
//! # Minimum supported Rust version
//!
//! Rust 1.85 (edition 2024 needs it; no dependency, with every feature,
//! declares a higher `rust-version`). What is tested: CI builds, tests and
//! lints the crate on one stable toolchain (1.95); the MSRV is checked
//! against the versions the dependency tree declares (`.ci/run`, from
//! `cargo metadata`) and by clippy's `incompatible_msrv` lint for std APIs,
//! not by building on 1.85.
//!
//! # Go's operations, by their names here
//!
//! | Go `sync.Map` | `snapmap` |
//! |---|---|
//! | `Load` | [`get`](SnapMap::get) |
//! | `Store` / `Swap` | [`insert`](SnapMap::insert) (returns the previous value) |
//! | `LoadOrStore` | [`get_or_insert`](SnapMap::get_or_insert), [`try_insert`](SnapMap::try_insert) (says whether it loaded) |
//! | `LoadOrStore` with a made value | [`get_or_insert_with`](SnapMap::get_or_insert_with) |
//! | `LoadAndDelete` / `Delete` | [`remove`](SnapMap::remove), [`remove_entry`](SnapMap::remove_entry) (with the key) |
//! | `CompareAndSwap` | [`compare_and_swap`](SnapMap::compare_and_swap) |
//! | `CompareAndDelete` | [`compare_and_delete`](SnapMap::compare_and_delete) |
//! | `Range` | [`Pinned::iter`] |
//! | `Range` + `CompareAndDelete` | [`retain`](SnapMap::retain) |
//! | `Clear` | [`clear`](SnapMap::clear) |
//!
//! Beyond Go, as dashmap, papaya and scc offer them: the upsert family
//! ([`compute`](SnapMap::compute), [`update`](SnapMap::update),
//! [`update_or_insert`](SnapMap::update_or_insert),
//! [`update_or_insert_with`](SnapMap::update_or_insert_with)), all
//! linearizable, their closures run without any lock;
//! [`get_key_value`](SnapMap::get_key_value);
//! [`with_capacity`](SnapMap::with_capacity) /
//! [`reserve`](SnapMap::reserve) / [`Builder::capacity`]; `Clone`,
//! `PartialEq`/`Eq` (map and [`Snapshot`]) and an owned `IntoIterator`.
//!
//! | operation | linearizable | shard lock |
//! |---|---|---|
//! | `get`, `get_key_value`, `contains_key` | yes | only for a key still only in dirty |
//! | `insert`, `try_insert`, `get_or_insert(_with)` | yes | for a key not in the read view |
//! | `remove`, `remove_entry`, `compare_and_*`, `update` | yes | only for a key still only in dirty |
//! | `compute`, `update_or_insert(_with)` | yes, at one CAS; the closure may run again | inserting a key not in the read view, or finding one only in dirty |
//! | `retain` | each removal (by identity); not the whole | as iteration (promotes amended shards) |
//! | `clear`, iteration, `Clone`, `==` | per shard | promotes amended shards |
//! | `reserve` | changes no content | each split: one shard and the directory |
//!
//! Methods on [`SnapMap`] pin for one operation and return clones; the
//! handle from [`SnapMap::pin`] returns references that live as long as it.
//!
//! # Consistency
//!
//! - Every single-key operation is **linearizable**: it takes effect at one
//!   instant between its call and its return, and a `get` that starts after
//!   an `insert` returned sees that value or a later one.
//! - Iteration walks one shard at a time, each as of the moment it is
//!   reached. Each key is yielded at most once; a key present for the whole
//!   walk is yielded exactly once; keys inserted or removed during the walk
//!   may or may not appear. It is **not** a snapshot of the whole map.
//! - [`len`](SnapMap::len) is summed from per-thread counters: exact when no
//!   operation is in flight.
//! - [`clear`](SnapMap::clear) clears shard by shard.
//! - A [`Snapshot`] is one point in time: every write, and every batch, is
//!   wholly in it or wholly absent, and a snapshot taken after a write
//!   returned contains it. Plain reads are not batched: a `get` during a
//!   batch sees its writes as they land.
//! - Each map has its own write gate: a write to map `b` from inside
//!   `a.batch(..)` (or an `a.update(..)` closure) is an ordinary write to
//!   `b`, and `b.snapshot()` works there. A snapshot of a map from inside
//!   a write to the same map panics (it would wait for itself; see
//!   [`SnapMap::snapshot`]).
//!
//! # Locking
//!
//! - **Never locks:** `get`/`contains_key` of a key in the read view, or of
//!   an absent key in a shard with no new keys pending; updates and
//!   compare-and-swaps of keys in the read view; removals of keys in the
//!   read view, unless the removal leaves the shard sparse enough to merge
//!   with its buddy (then the merge locks both) or leaves its view holding
//!   more removed keys than live ones (then it compacts the shard, see
//!   Memory); iteration of shards with no new keys pending.
//! - **Takes one shard lock:** storing a key not in the read view; any
//!   operation on a key still only in the dirty table (each such lookup
//!   counts a miss, and after enough misses the shard is promoted and the
//!   key becomes lock-free); iteration of a shard with pending new keys
//!   (it promotes the shard first).
//! - **Costs O(shard):** the first new key after a promotion copies the
//!   shard's read view into a fresh dirty table (Go's `dirtyLocked`). Go
//!   pays this for the whole map; here it is one shard, and shards are
//!   capped ([`Builder::shard_capacity`]). A split or merge of one shard
//!   also costs O(shard), and takes the directory's resize lock briefly;
//!   doubling the directory copies slot pointers only.
//! - **Writers and snapshots:** every write passes a striped *write gate*
//!   (two plain stores and a fence on its own thread's cache line,
//!   a load of one shared word that only the first write after a
//!   snapshot writes: the change word that tells a [`Reader`] whether its
//!   snapshot is still current, and on leaving a load of the count of
//!   threads waiting for a change, [`SnapMap::wait_for_change`]). A
//!   snapshot build closes the gate only for its *cut* (it waits for the
//!   writes in progress and lists the shards); then a writer about to
//!   change a shard the build has not captured yet captures it first, by
//!   pointer (once per shard and build, running no user code), and the
//!   build clones afterwards. Readers never wait, and writers never wait
//!   for threads *holding* snapshots. A batch stays inside the gate for its
//!   whole length, so a snapshot build (and the writers arriving behind
//!   its cut) waits for the batch.
//! - User code runs under a shard lock only as `Eq` during a lookup; the
//!   closures of `update`, `get_or_insert_with`, `compute`,
//!   `update_or_insert(_with)` and `retain` run without locks.
//!
//! # When not to use it
//!
//! - **Write-heavy churn of new keys.** Every new key takes its shard's lock,
//!   every lookup of a not-yet-promoted key takes it again, and each
//!   promotion is followed by a copy of the shard on the next new key. A
//!   workload that mostly inserts fresh keys and removes them (a session
//!   table, a request-id map) pays these costs constantly; a map built for
//!   writes (dashmap, papaya, scc) fits better.
//! - **Keys or values that are not `'static`.** Retired memory is freed by
//!   the global epoch collector, possibly after the map is dropped.
//! - **Large values updated often.** Each update allocates a new value
//!   node and retires the old one; a `Mutex<V>` inside the value may be
//!   cheaper.
//! - **Memory-tight maps of small entries.** Each entry lives in a slot
//!   of its shard's read view, beside its full hash, with room for its
//!   first value inline when `V` is a plain scalar (an integer, a float,
//!   `bool`, `char`, `&'static str`) or a `Copy` type in a map built with
//!   [`Builder::inline_values`] (a replaced value, or any other `V`, gets
//!   its own node, so that updates are one CAS, reads of replaced
//!   values stay safe, and a value changed through `&V`, an atomic or a
//!   `Mutex`, is never copied): 32-byte slots for `u64 -> u64`, at most 80 % full, plus
//!   the dirty table's pointers while new keys are pending: about 68 heap
//!   bytes per `u64 -> u64` entry at 1M entries, against 36 for a
//!   `hashbrown::HashMap` and 54 for papaya
//!   (`cargo bench -p snapmap-benches --bench growth -- memory`).
//!
//! # Memory
//!
//! - A removed key is held (in its entry, in the shard's read view) until
//!   that view is replaced, as in Go. A removal that leaves a view holding
//!   more removed keys than live ones, plus 8, compacts the shard (a dirty
//!   rebuild that expunges them, then a promotion), so a shard that only
//!   removes holds at most about as many removed keys as live ones.
//!   [`Stats::removed_keys_held`] counts them, [`Stats::compactions`] the
//!   compactions. The removed value itself is retired at once.
//! - Replaced views, values, entries and shards are freed through the
//!   epoch once no pinned thread can read them; [`Stats::retired`] shows
//!   what is waiting.
//! - Every initial shard ([`Builder::shards`]) costs up to
//!   [`EMPTY_SHARD_BYTES`]; the builder rejects options past
//!   [`MAX_INITIAL_SHARDS`] and [`MAX_SHARD_CAPACITY`].
//!
//! # Panics in user code
//!
//! A panic in a key's `Hash` or `Eq`, in a value's `PartialEq`, or in a
//! closure passed to [`update`](SnapMap::update),
//! [`get_or_insert_with`](SnapMap::get_or_insert_with),
//! [`compute`](SnapMap::compute) or
//! [`update_or_insert(_with)`](SnapMap::update_or_insert_with) leaves the
//! map unchanged and consistent, and leaks nothing (a panic in
//! [`retain`](SnapMap::retain)'s predicate keeps the removals made before
//! it): the hash is computed before
//! anything is touched, tables rehash from stored hashes, and every value
//! not yet published is owned by a `Box` that unwinding drops.
//!
//! # Across `.await`
//!
//! A [`Pinned`] handle holds a crossbeam-epoch guard, which is `!Send`:
//! the pin is registered on its thread's epoch participant, and unpinning
//! on another thread would corrupt that thread's state. So a future that
//! holds a `Pinned` across an `.await` is not `Send` and a multi-threaded
//! runtime refuses it (the `compile_fail` example on [`Pinned`]). It
//! would also be a bad idea on one thread: a pin held while a task sleeps
//! keeps every value retired meanwhile, in every map, from being freed.
//! That is deliberate; there is no `Send` pinned handle. Instead:
//!
//! - across an `.await`, hold a [`Snapshot`] (`Send + Sync + 'static`, one
//!   point in time, O(1) to take while nothing changes) or clone the values
//!   out with the map-level methods ([`SnapMap::get`] pins per call);
//! - for many reads of the current configuration in a task, keep a
//!   [`Reader`] ([`SnapMap::reader`]): it refreshes its snapshot only when
//!   the map changed, and is `Send`, so it may live in the task;
//! - to wait for a change, `.await` [`SnapMap::changed`];
//! - pin *between* awaits, for a burst of lookups that returns owned data.
//!
//! ```
//! fn assert_send<T: Send>(_: &T) {}
//! let map = snapmap::SnapMap::new();
//! map.insert("k", 1);
//! let task = async {
//!     let snapshot = map.snapshot(); // Send: may live across .await
//!     let mut reader = map.reader(); // Send too
//!     std::future::ready(()).await;
//!     *snapshot.get("k").unwrap() + *reader.get("k").unwrap()
//! };
//! assert_send(&task);
//! ```
//!
//! ```compile_fail
//! fn assert_send<T: Send>(_: &T) {}
//! let map = snapmap::SnapMap::new();
//! map.insert("k", 1);
//! let task = async {
//!     let pinned = map.pin(); // !Send, held across the .await
//!     std::future::ready(()).await;
//!     *pinned.get("k").unwrap()
//! };
//! assert_send(&task);
//! ```
//!
//! # Thread safety
//!
//! `SnapMap<K, V, S>` is `Send` and `Sync` when `K`, `V` and the hasher `S`
//! are `Send + Sync` (the map keeps a copy of `S` in its cached snapshot,
//! which may be read from any thread):
//!
//! ```
//! fn assert_send_sync<T: Send + Sync>() {}
//! assert_send_sync::<snapmap::SnapMap<String, std::sync::Arc<Vec<u8>>>>();
//! ```
//!
//! Values may be changed through `&V` (an `AtomicU64` counter, a
//! `Mutex`): such a value lives in a node of its own and is never copied
//! (only plain scalars, such as `u64`, are stored inline, and `Copy`
//! values where [`Builder::inline_values`] asks for it). **Keys may
//! not**: an entry's key is moved by its bits when its shard migrates,
//! while readers may still hold `&K` to the old copy, so a key type with
//! interior mutability in its own bytes (an atomic field that `Hash` and
//! `Eq` ignore) would lose changes made through `&K`, and a change racing
//! a move is a data race. The map cannot check this (stable Rust cannot
//! ask a type whether it has interior mutability): a known soundness gap,
//! reachable from safe code with such a key type, and not yet closed.
//!
//! A value type that is not `Sync` makes the map not `Sync`:
//!
//! ```compile_fail
//! fn assert_sync<T: Sync>() {}
//! assert_sync::<snapmap::SnapMap<u64, std::cell::Cell<u64>>>();
//! ```
//!
//! and a key that is not `Send` makes it not `Send`:
//!
//! ```compile_fail
//! fn assert_send<T: Send>() {}
//! assert_send::<snapmap::SnapMap<std::rc::Rc<u64>, u64>>();
//! ```
// Without their features, the items of the feature list above do not
// exist: their links go to docs.rs, which documents every feature.
#![cfg_attr(
    not(feature = "metrics"),
    doc = "[`Stats::publish`]: https://docs.rs/snapmap/latest/snapmap/struct.Stats.html#method.publish",
    doc = "[`SnapMap::publish_metrics`]: https://docs.rs/snapmap/latest/snapmap/struct.SnapMap.html#method.publish_metrics"
)]
#![cfg_attr(
    not(feature = "rayon"),
    doc = "[`Snapshot::par_iter`]: https://docs.rs/snapmap/latest/snapmap/struct.Snapshot.html#method.par_iter",
    doc = "[`SnapMap::par_for_each`]: https://docs.rs/snapmap/latest/snapmap/struct.SnapMap.html#method.par_for_each"
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod arena;
mod batch;
mod builder;
mod compute;
mod directory;
mod gate;
mod hash;
mod hint;
mod iter;
mod map;
mod migrate;
mod options;
mod pinned;
mod pool;
mod raw;
#[cfg(feature = "rayon")]
mod rayon_impls;
mod reader;
mod reclaim;
mod reload;
#[cfg(feature = "serde")]
mod serde_impls;
mod shard;
mod slab;
mod snapshot;
mod stats;
mod std_impls;
mod sync;
mod thread;
mod twins;

pub use batch::{Applied, Batch, RevisionConflict};
pub use builder::{
    BuildError, Builder, DEFAULT_MAX_SHARDS, DEFAULT_SHARD_CAPACITY, DEFAULT_SHARDS,
    EMPTY_SHARD_BYTES, MAX_INITIAL_SHARDS, MAX_SHARD_CAPACITY, shards_for_capacity,
};
pub use compute::{Compute, Operation};
pub use hash::DefaultHashBuilder;
pub use iter::{Iter, Keys, Values};
pub use map::SnapMap;
pub use pinned::{OccupiedError, Pinned};
pub use reader::Reader;
pub use snapshot::{Snapshot, SnapshotIter};
pub use stats::{RetiredBytes, Stats, retired_bytes};
pub use std_impls::IntoIter;

/// The trait for looking up a key by another type (re-exported from the
/// `equivalent` crate): `map.get("a")` on a `SnapMap<String, _>`.
pub use equivalent::Equivalent;

/// Hooks for the loom models in `loom-tests/` (loom builds only).
#[cfg(snapmap_loom)]
#[doc(hidden)]
pub mod loom_hooks {
    pub use crate::shard::set_removed_keys_slack;
    pub use crate::twins::{Bug, inject};
}

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
